// tests/support/status.hpp: doctest helpers for lowbit's Status and Result, which print the
// status's message, code and index when a call that must succeed does not.
#pragma once

#include <doctest/doctest.h>

#include <string>
#include <utility>

#include "lowbit/status.hpp"

namespace lowbit_test {

// The value of a Result that must hold one; the test stops with the Status otherwise.
template <class T>
T value_of(lowbit::Result<T> r) {
  INFO("status: ", std::string(r.status().message()), " (",
       std::string(lowbit::errc_name(r.status().code())), ", index ", r.status().index(), ")");
  REQUIRE(r.has_value());
  return std::move(*r);
}

inline void require_ok(lowbit::Status s) {
  INFO("status: ", std::string(s.message()), " (", std::string(lowbit::errc_name(s.code())),
       ", index ", s.index(), ")");
  REQUIRE(s.ok());
}

}  // namespace lowbit_test
