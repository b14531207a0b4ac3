// lowbit/io/ggml_types.hpp: the size of every ggml tensor type, by the id GGUF stores.
//
// A GGUF tensor info names its element type by ggml's `enum ggml_type` value. ggml stores a row
// of ne[0] elements as ne[0] / block_size blocks of block_bytes each (a plain type such as f32 is
// a "block" of one element), so a tensor of ne[0] x ne[1] x ne[2] x ne[3] elements occupies
//
//   bytes = (ne[0] / block_size) * block_bytes * ne[1] * ne[2] * ne[3]
//
// and ne[0] must be a multiple of block_size: a row never ends inside a block. The reader uses
// this to bound each tensor's data range; nothing here decodes blocks (format/ggml/ does).
//
//   id  name     block  bytes      id  name     block  bytes      id  name     block  bytes
//    0  f32          1      4      13  q5_K       256    176      24  i8           1      1
//    1  f16          1      2      14  q6_K       256    210      25  i16          1      2
//    2  q4_0        32     18      15  q8_K       256    292      26  i32          1      4
//    3  q4_1        32     20      16  iq2_xxs    256     66      27  i64          1      8
//    6  q5_0        32     22      17  iq2_xs     256     74      28  f64          1      8
//    7  q5_1        32     24      18  iq3_xxs    256     98      29  iq1_m      256     56
//    8  q8_0        32     34      19  iq1_s      256     50      30  bf16         1      2
//    9  q8_1        32     36      20  iq4_nl      32     18      34  tq1_0      256     54
//   10  q2_K       256     84      21  iq3_s      256    110      35  tq2_0      256     66
//   11  q3_K       256    110      22  iq2_s      256     82      39  mxfp4       32     17
//   12  q4_K       256    144      23  iq4_xs     256    136
//
// Ids 4, 5 (q4_2, q4_3) and 31..33, 36..38 (repacked layouts) were removed from ggml and never
// appear in GGUF files; they and every id past 39 are unknown here (kUnsupported). Block sizes
// and bytes are those of ggml's block structs (ggml-common.h); the test checks the ones lowbit
// also implements against sizeof of lowbit's own block structs in format/ggml/.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>

#include "lowbit/status.hpp"

namespace lowbit {
namespace io {

// ggml's type ids; the enumerators keep ggml's names.
// clang-format off
enum class GgmlType : std::uint32_t {
  kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ4_1 = 3, kQ5_0 = 6, kQ5_1 = 7, kQ8_0 = 8, kQ8_1 = 9,
  kQ2_K = 10, kQ3_K = 11, kQ4_K = 12, kQ5_K = 13, kQ6_K = 14, kQ8_K = 15,
  kIQ2_XXS = 16, kIQ2_XS = 17, kIQ3_XXS = 18, kIQ1_S = 19, kIQ4_NL = 20, kIQ3_S = 21,
  kIQ2_S = 22, kIQ4_XS = 23, kI8 = 24, kI16 = 25, kI32 = 26, kI64 = 27, kF64 = 28,
  kIQ1_M = 29, kBF16 = 30, kTQ1_0 = 34, kTQ2_0 = 35, kMXFP4 = 39,
};
// clang-format on

struct GgmlTypeInfo {
  const char* name;          // ggml's type name; nullptr for an unknown id
  std::int64_t block_size;   // elements per block; 0 for an unknown id
  std::int64_t block_bytes;  // bytes per block
};

namespace detail {
constexpr std::uint32_t kGgmlTypeCount = 40;  // ids 0..39
// clang-format off
constexpr GgmlTypeInfo kGgmlTypeTable[kGgmlTypeCount] = {
    {"f32", 1, 4},        {"f16", 1, 2},        {"q4_0", 32, 18},     {"q4_1", 32, 20},
    {nullptr, 0, 0},      {nullptr, 0, 0},      {"q5_0", 32, 22},     {"q5_1", 32, 24},
    {"q8_0", 32, 34},     {"q8_1", 32, 36},     {"q2_K", 256, 84},    {"q3_K", 256, 110},
    {"q4_K", 256, 144},   {"q5_K", 256, 176},   {"q6_K", 256, 210},   {"q8_K", 256, 292},
    {"iq2_xxs", 256, 66}, {"iq2_xs", 256, 74},  {"iq3_xxs", 256, 98}, {"iq1_s", 256, 50},
    {"iq4_nl", 32, 18},   {"iq3_s", 256, 110},  {"iq2_s", 256, 82},   {"iq4_xs", 256, 136},
    {"i8", 1, 1},         {"i16", 1, 2},        {"i32", 1, 4},        {"i64", 1, 8},
    {"f64", 1, 8},        {"iq1_m", 256, 56},   {"bf16", 1, 2},       {nullptr, 0, 0},
    {nullptr, 0, 0},      {nullptr, 0, 0},      {"tq1_0", 256, 54},   {"tq2_0", 256, 66},
    {nullptr, 0, 0},      {nullptr, 0, 0},      {nullptr, 0, 0},      {"mxfp4", 32, 17},
};
// clang-format on
}  // namespace detail

// The block geometry of type `id`, or nullptr when lowbit does not know the id.
constexpr const GgmlTypeInfo* ggml_type_info(std::uint32_t id) noexcept {
  return id < detail::kGgmlTypeCount && detail::kGgmlTypeTable[id].block_size != 0
             ? &detail::kGgmlTypeTable[id]
             : nullptr;
}
constexpr const GgmlTypeInfo* ggml_type_info(GgmlType type) noexcept {
  return ggml_type_info(static_cast<std::uint32_t>(type));
}

// Spot checks against ggml-common.h's static_asserts (the test checks every entry lowbit has a
// block struct for).
static_assert(ggml_type_info(GgmlType::kQ4_K)->block_bytes == 2 * 2 + 12 + 256 / 2, "q4_K");
static_assert(ggml_type_info(GgmlType::kQ8_K)->block_bytes == 4 + 256 + 256 / 16 * 2, "q8_K");
static_assert(ggml_type_info(GgmlType::kTQ1_0)->block_bytes ==
                  2 + 256 / 64 + (256 - 4 * 256 / 64) / 5,
              "tq1_0");
static_assert(ggml_type_info(GgmlType::kIQ3_S)->block_bytes == 2 + 13 * (256 / 32) + 256 / 64,
              "iq3_s");
static_assert(ggml_type_info(4) == nullptr && ggml_type_info(40) == nullptr, "unknown ids");

// Elements and bytes of a tensor with `n_dims` extents `ne` (ne[0] is the row, ggml order).
struct GgmlTensorSize {
  std::int64_t elements = 0;
  std::uint64_t bytes = 0;
};

// Validates a shape for type `id` and returns its size. kUnsupported for an unknown id;
// kInvalidArgument for more than 4 dimensions or a negative extent; kIndivisible when ne[0] is
// not a multiple of the block size; kOverflow when the element count or byte size exceeds
// int64 (extents of 0 count as 1 in that check, so every stride of the tensor is representable
// even when it holds no elements). The Status index is the dimension at fault.
inline Result<GgmlTensorSize> ggml_tensor_size(std::uint32_t id, const std::int64_t* ne,
                                               std::uint32_t n_dims) noexcept {
  const GgmlTypeInfo* info = ggml_type_info(id);
  if (info == nullptr) return Status(Errc::kUnsupported, "ggml: unknown tensor type");
  if (n_dims > 4) return Status(Errc::kInvalidArgument, "ggml: more than 4 dimensions");
  constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
  std::int64_t bound = 1;  // the product with zero extents taken as 1
  bool empty = false;
  for (std::uint32_t d = 0; d < n_dims; ++d) {
    if (ne[d] < 0) return Status(Errc::kInvalidArgument, "ggml: negative extent", d);
    if (ne[d] == 0) {
      empty = true;
      continue;
    }
    if (bound > kMax / ne[d])
      return Status(Errc::kOverflow, "ggml: element count overflows int64", d);
    bound *= ne[d];
  }
  const std::int64_t row = n_dims == 0 ? 1 : ne[0];
  if (row % info->block_size != 0)
    return Status(Errc::kIndivisible, "ggml: row length is not a multiple of the block size", 0);
  // bytes = bound / block_size * block_bytes (exact: block_size divides the row, so the bound).
  const std::int64_t blocks = bound / info->block_size;
  if (blocks > kMax / info->block_bytes)
    return Status(Errc::kOverflow, "ggml: byte size overflows int64", 0);
  GgmlTensorSize size;
  size.elements = empty ? 0 : bound;
  size.bytes = empty ? 0 : static_cast<std::uint64_t>(blocks * info->block_bytes);
  return size;
}

}  // namespace io
}  // namespace lowbit
