// MatrixView: layouts, sub-views, and validation of hostile shapes.
#include <doctest/doctest.h>

#include <cstdint>
#include <limits>
#include <vector>

#include "lowbit/tensor_view.hpp"

TEST_CASE("row-major, column-major and strided views address the same logical matrix") {
  // The 2x3 matrix [[0 1 2] [3 4 5]] in three layouts.
  const float rm[] = {0, 1, 2, 3, 4, 5};
  const float cm[] = {0, 3, 1, 4, 2, 5};
  const float padded[] = {0, 1, 2, -1, 3, 4, 5, -1};
  const auto a = lowbit::row_major(rm, 2, 3);
  const auto b = lowbit::col_major(cm, 2, 3);
  const auto c = lowbit::strided_rows(padded, 2, 3, 4);
  for (std::int64_t r = 0; r < 2; ++r) {
    for (std::int64_t col = 0; col < 3; ++col) {
      CHECK(a(r, col) == static_cast<float>(r * 3 + col));
      CHECK(b(r, col) == a(r, col));
      CHECK(c(r, col) == a(r, col));
      CHECK(a.flat(r * 3 + col) == a(r, col));
    }
  }
  CHECK(a.transposed()(2, 1) == 5.0f);
  CHECK(a.col_block(1, 2)(1, 0) == 4.0f);
  CHECK(c.row_block(1, 1)(0, 2) == 5.0f);
  CHECK(a.validate());
  CHECK(b.validate());
  CHECK(c.validate());
}

TEST_CASE("mutable views convert to const views") {
  std::vector<float> v(6, 1.0f);
  lowbit::MatrixView<float> m = lowbit::row_major(v.data(), 2, 3);
  lowbit::MatrixView<const float> cm = m;
  m(1, 2) = 7.0f;
  CHECK(cm(1, 2) == 7.0f);
}

TEST_CASE("validate rejects negative extents, null data and offsets that overflow") {
  const float x = 0;
  constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
  CHECK(lowbit::MatrixView<const float>(&x, -1, 2, 2, 1).validate().code() ==
        lowbit::Errc::kInvalidArgument);
  CHECK(lowbit::MatrixView<const float>(&x, 1, 2, -2, 1).validate().code() ==
        lowbit::Errc::kInvalidArgument);
  CHECK(lowbit::MatrixView<const float>(nullptr, 2, 2, 2, 1).validate().code() ==
        lowbit::Errc::kInvalidArgument);
  CHECK(lowbit::MatrixView<const float>(nullptr, 0, 5, 5, 1).validate().ok());  // empty is valid
  CHECK(lowbit::MatrixView<const float>(&x, kMax, 2, 2, 1).validate().code() ==
        lowbit::Errc::kOverflow);
  CHECK(lowbit::MatrixView<const float>(&x, 3, 3, kMax / 2, 1).validate().code() ==
        lowbit::Errc::kOverflow);
  // Each offset fits on its own; their sum does not.
  CHECK(lowbit::MatrixView<const float>(&x, 3, 3, kMax / 3 + 1, kMax / 3 + 1).validate().code() ==
        lowbit::Errc::kOverflow);
}
