// tests/support/oracle.hpp: loading reference arrays inside doctest cases.
#pragma once

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "support/npy.hpp"

namespace lowbit_test {

#ifndef LOWBIT_TEST_DATA_DIR
#error "LOWBIT_TEST_DATA_DIR must name the tests/data directory"
#endif

inline std::string data_path(const std::string& relative) {
  return std::string(LOWBIT_TEST_DATA_DIR) + "/" + relative;
}

// Loads tests/data/<relative>; `error` says why when it fails.
inline Npy load_npy(const std::string& relative) { return load_npy_file(data_path(relative)); }

// Loads tests/data/<relative> as T, failing the current test case if the file is missing or bad.
template <class T>
std::vector<T> load(const std::string& relative, std::vector<std::int64_t>* shape = nullptr) {
  const Npy npy = load_npy(relative);
  INFO("loading ", relative, ": ", npy.error);
  REQUIRE(npy.error.empty());
  if (shape != nullptr) *shape = npy.shape;
  return npy.as<T>();
}

}  // namespace lowbit_test
