// Status and Result<T>: values, errors, moves, and LOWBIT_TRY propagation.
#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <vector>

#include "lowbit/status.hpp"

namespace {

lowbit::Status fails_at(std::int64_t i) { return {lowbit::Errc::kNonFinite, "bad value", i}; }

lowbit::Result<int> half_of(int x) {
  if (x % 2 != 0) return lowbit::Status(lowbit::Errc::kInvalidArgument, "odd");
  return x / 2;
}

lowbit::Status chain(int x, int* out) {
  LOWBIT_TRY(half_of(x));
  LOWBIT_TRY(x > 100 ? fails_at(x) : lowbit::Status{});
  *out = *half_of(x);
  return {};
}

}  // namespace

TEST_CASE("Status carries code, static message and index") {
  const lowbit::Status ok;
  CHECK(ok.ok());
  CHECK(ok.code() == lowbit::Errc::kOk);
  const lowbit::Status bad = fails_at(42);
  CHECK_FALSE(bad.ok());
  CHECK_FALSE(static_cast<bool>(bad));
  CHECK(bad.code() == lowbit::Errc::kNonFinite);
  CHECK(bad.index() == 42);
  CHECK(std::string(bad.message()) == "bad value");
  CHECK(std::string(lowbit::errc_name(bad.code())) == "non-finite");
}

TEST_CASE("Result holds a value or an error") {
  lowbit::Result<int> a = half_of(8);
  REQUIRE(a);
  CHECK(*a == 4);
  CHECK(a.status().ok());
  lowbit::Result<int> b = half_of(7);
  CHECK_FALSE(b);
  CHECK(b.status().code() == lowbit::Errc::kInvalidArgument);
}

TEST_CASE("Result with a non-trivial type copies, moves and destroys its value once") {
  auto counter = std::make_shared<int>(0);
  {
    lowbit::Result<std::shared_ptr<int>> r = counter;
    CHECK(counter.use_count() == 2);
    lowbit::Result<std::shared_ptr<int>> copy = r;
    CHECK(counter.use_count() == 3);
    lowbit::Result<std::shared_ptr<int>> moved = std::move(copy);
    CHECK(counter.use_count() == 3);
    moved = lowbit::Result<std::shared_ptr<int>>(lowbit::Status(lowbit::Errc::kEmpty, "gone"));
    CHECK(counter.use_count() == 2);
    CHECK(moved.status().code() == lowbit::Errc::kEmpty);
    lowbit::Result<std::vector<int>> v = std::vector<int>{1, 2, 3};
    CHECK(v->size() == 3);
  }
  CHECK(counter.use_count() == 1);
}

TEST_CASE("LOWBIT_TRY returns the first error") {
  int out = 0;
  CHECK(chain(10, &out));
  CHECK(out == 5);
  CHECK(chain(7, &out).code() == lowbit::Errc::kInvalidArgument);
  const lowbit::Status s = chain(200, &out);
  CHECK(s.code() == lowbit::Errc::kNonFinite);
  CHECK(s.index() == 200);
}
