// lowbit/format/packed_matrix.hpp: lowbit's own file layout for one quantized matrix, versioned,
// so a QuantizedTensor can be saved, shipped and memory-mapped without a conversion step.
//
// All integers little-endian. Every section starts at a multiple of 64 bytes from the start of
// the buffer (a cache line, and enough for any SIMD load), so a mapped file is used in place.
//
//   offset  size  field
//   0       4     magic "LBPM"
//   4       2     version = 1
//   6       1     bits: 1..8
//   7       1     scheme: 0 Asymmetric, 1 Symmetric, 2 SymmetricRestricted
//   8       1     granularity: 0 PerTensor, 1 PerChannel<0>, 2 PerChannel<1>, 3 PerGroup
//   9       1     scale type: 0 = float32 (the only one in version 1)
//   10      2     reserved, 0
//   12      4     header bytes = 64
//   16      8     rows (int64)
//   24      8     cols (int64)
//   32      8     group size (int64; 0 unless PerGroup)
//   40      8     codes offset      codes: rows*cols codes, row-major, format/packed.hpp's dense
//                                          layout at `bits` bits each (packed_bytes(bits, n))
//   48      8     scales offset     scales: one float32 per parameter block, row-major grid
//   56      8     zero points offset  (Asymmetric only; 0 otherwise) one `bits`-bit unsigned code
//                                   per block, densely packed like the codes. Symmetric schemes
//                                   have zero point 0 and store none.
//   ...           sections, each at a 64-byte multiple, in the order codes, scales, zero points;
//                 the buffer ends where the last section ends.
//
// Reading treats the bytes as hostile: every field is range-checked, sizes are overflow-checked,
// sections must lie inside the buffer, in order and without overlap, scales must be positive and
// finite, zero points inside the code range. Errors: kTruncated (buffer ends early), kCorrupt
// (fields contradict each other), kUnsupported (another version or scale type), kOverflow; the
// Status index is the byte offset of the field at fault.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "lowbit/format/packed.hpp"
#include "lowbit/quantized_tensor.hpp"

namespace lowbit {

enum class PackedScheme : std::uint8_t { kAsymmetric = 0, kSymmetric = 1, kSymmetricRestricted = 2 };
enum class PackedGranularity : std::uint8_t {
  kPerTensor = 0,
  kPerRow = 1,     // PerChannel<0>
  kPerColumn = 2,  // PerChannel<1>
  kPerGroup = 3,   // PerGroup<G> along the columns
};

// What a packed-matrix buffer holds, validated; pointers point into the caller's buffer.
struct PackedMatrixView {
  int bits = 0;
  PackedScheme scheme = PackedScheme::kAsymmetric;
  PackedGranularity granularity = PackedGranularity::kPerTensor;
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  std::int64_t group_size = 0;
  std::int64_t param_rows = 0;
  std::int64_t param_cols = 0;
  const std::uint8_t* codes = nullptr;        // packed_bytes(bits, rows * cols) bytes
  const std::uint8_t* scales = nullptr;       // param_rows * param_cols float32, maybe unaligned
  const std::uint8_t* zero_points = nullptr;  // packed bits-bit codes, or nullptr (symmetric)
};

namespace detail {

constexpr std::size_t kPackedHeaderBytes = 64;
constexpr std::size_t kPackedAlignment = 64;

template <class Symmetry>
constexpr PackedScheme packed_scheme() noexcept {
  if (std::is_same<Symmetry, Asymmetric>::value) return PackedScheme::kAsymmetric;
  if (std::is_same<Symmetry, Symmetric>::value) return PackedScheme::kSymmetric;
  return PackedScheme::kSymmetricRestricted;
}

template <class Granularity>
struct packed_granularity;
template <>
struct packed_granularity<PerTensor> {
  static constexpr PackedGranularity kValue = PackedGranularity::kPerTensor;
};
template <>
struct packed_granularity<PerChannel<0>> {
  static constexpr PackedGranularity kValue = PackedGranularity::kPerRow;
};
template <>
struct packed_granularity<PerChannel<1>> {
  static constexpr PackedGranularity kValue = PackedGranularity::kPerColumn;
};
template <std::int64_t Size>
struct packed_granularity<PerGroup<Size>> {
  static constexpr PackedGranularity kValue = PackedGranularity::kPerGroup;
};

inline std::size_t align_up(std::size_t n) noexcept {
  return (n + kPackedAlignment - 1) / kPackedAlignment * kPackedAlignment;
}

template <class T>
void store_le(std::uint8_t* out, T value) noexcept {
  for (std::size_t i = 0; i < sizeof(T); ++i)
    out[i] = static_cast<std::uint8_t>(static_cast<std::uint64_t>(value) >> (8 * i));
}
template <class T>
T load_le(const std::uint8_t* in) noexcept {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < sizeof(T); ++i) v |= static_cast<std::uint64_t>(in[i]) << (8 * i);
  return static_cast<T>(v);
}

// Sizes of the three sections for a shape; false when they overflow.
struct PackedSections {
  std::size_t codes, scales, zero_points;
};
inline bool packed_sections(int bits, bool has_zero_points, std::int64_t rows, std::int64_t cols,
                            std::int64_t params, PackedSections* out) noexcept {
  if (rows > std::numeric_limits<std::int64_t>::max() / cols) return false;
  const Result<std::size_t> codes = checked_packed_bytes(bits, rows * cols);
  const Result<std::size_t> zps = checked_packed_bytes(bits, has_zero_points ? params : 0);
  if (!codes || !zps) return false;
  if (static_cast<std::uint64_t>(params) > std::numeric_limits<std::size_t>::max() / 8) return false;
  *out = {*codes, static_cast<std::size_t>(params) * sizeof(float), *zps};
  return true;
}

}  // namespace detail

// The bytes of `t` in the layout above.
template <class Q>
Result<std::vector<std::uint8_t>> write_packed_matrix(const QuantizedTensor<Q>& t) {
  static_assert(!Q::granularity::kDynamic,
                "write_packed_matrix: PerToken parameters are computed at run time and not stored");
  constexpr bool kAsym = !Q::symmetry::kSymmetric;
  const QuantParams& p = t.params();
  if (!kAsym) {
    for (std::int64_t i = 0; i < p.size(); ++i)
      if (p.zero_point[static_cast<std::size_t>(i)] != 0)
        return Status(Errc::kUnsupported, "symmetric tensor with a nonzero zero point", i);
  }
  detail::PackedSections sizes{};
  if (!detail::packed_sections(Q::kBits, kAsym, t.rows(), t.cols(), p.size(), &sizes))
    return Status(Errc::kOverflow, "packed matrix size overflows");
  const std::size_t codes_at = detail::kPackedHeaderBytes;
  const std::size_t scales_at = detail::align_up(codes_at + sizes.codes);
  const std::size_t zps_at = kAsym ? detail::align_up(scales_at + sizes.scales) : 0;
  const std::size_t end = kAsym ? zps_at + sizes.zero_points : scales_at + sizes.scales;

  std::vector<std::uint8_t> out(end, 0);
  std::uint8_t* h = out.data();
  std::memcpy(h, "LBPM", 4);
  detail::store_le<std::uint16_t>(h + 4, 1);
  h[6] = static_cast<std::uint8_t>(Q::kBits);
  h[7] = static_cast<std::uint8_t>(detail::packed_scheme<typename Q::symmetry>());
  h[8] = static_cast<std::uint8_t>(detail::packed_granularity<typename Q::granularity>::kValue);
  h[9] = 0;
  detail::store_le<std::uint32_t>(h + 12, detail::kPackedHeaderBytes);
  detail::store_le<std::int64_t>(h + 16, t.rows());
  detail::store_le<std::int64_t>(h + 24, t.cols());
  std::int64_t group = 0;
  if (detail::packed_granularity<typename Q::granularity>::kValue == PackedGranularity::kPerGroup)
    group = t.cols() / param_grid(t.granularity(), t.rows(), t.cols()).cols;
  detail::store_le<std::int64_t>(h + 32, group);
  detail::store_le<std::uint64_t>(h + 40, codes_at);
  detail::store_le<std::uint64_t>(h + 48, scales_at);
  detail::store_le<std::uint64_t>(h + 56, zps_at);
  std::memcpy(h + codes_at, t.packed().data(), sizes.codes);
  for (std::int64_t i = 0; i < p.size(); ++i) {
    std::uint32_t bits;
    std::memcpy(&bits, &p.scale[static_cast<std::size_t>(i)], 4);
    detail::store_le<std::uint32_t>(h + scales_at + 4 * static_cast<std::size_t>(i), bits);
  }
  if (kAsym) {
    std::vector<std::uint8_t> zps(static_cast<std::size_t>(p.size()));
    for (std::size_t i = 0; i < zps.size(); ++i) zps[i] = static_cast<std::uint8_t>(p.zero_point[i]);
    LOWBIT_TRY(pack_codes(Q::kBits, zps.data(), p.size(), h + zps_at, sizes.zero_points));
  }
  return out;
}

// Validates a buffer and returns views into it. The buffer must outlive the view.
inline Result<PackedMatrixView> parse_packed_matrix(const std::uint8_t* data,
                                                    std::size_t size) noexcept {
  using detail::load_le;
  if (data == nullptr && size > 0) return Status(Errc::kInvalidArgument, "null buffer");
  if (size < detail::kPackedHeaderBytes)
    return Status(Errc::kTruncated, "packed matrix: header truncated", static_cast<std::int64_t>(size));
  if (std::memcmp(data, "LBPM", 4) != 0)
    return Status(Errc::kCorrupt, "packed matrix: bad magic", 0);
  if (load_le<std::uint16_t>(data + 4) != 1)
    return Status(Errc::kUnsupported, "packed matrix: unknown version", 4);
  PackedMatrixView v;
  v.bits = data[6];
  if (v.bits < 1 || v.bits > 8) return Status(Errc::kCorrupt, "packed matrix: bits not in 1..8", 6);
  if (data[7] > 2) return Status(Errc::kCorrupt, "packed matrix: unknown scheme", 7);
  v.scheme = static_cast<PackedScheme>(data[7]);
  if (data[8] > 3) return Status(Errc::kCorrupt, "packed matrix: unknown granularity", 8);
  v.granularity = static_cast<PackedGranularity>(data[8]);
  if (data[9] != 0) return Status(Errc::kUnsupported, "packed matrix: unknown scale type", 9);
  if (data[10] != 0 || data[11] != 0)
    return Status(Errc::kCorrupt, "packed matrix: reserved bytes are not zero", 10);
  if (load_le<std::uint32_t>(data + 12) != detail::kPackedHeaderBytes)
    return Status(Errc::kCorrupt, "packed matrix: header size is not 64", 12);
  v.rows = load_le<std::int64_t>(data + 16);
  v.cols = load_le<std::int64_t>(data + 24);
  v.group_size = load_le<std::int64_t>(data + 32);
  if (v.rows <= 0) return Status(Errc::kCorrupt, "packed matrix: rows not positive", 16);
  if (v.cols <= 0) return Status(Errc::kCorrupt, "packed matrix: cols not positive", 24);
  // Every later product (parameter count, code count) is at most rows * cols.
  if (v.rows > std::numeric_limits<std::int64_t>::max() / v.cols)
    return Status(Errc::kOverflow, "packed matrix: rows * cols overflows", 16);
  const bool per_group = v.granularity == PackedGranularity::kPerGroup;
  if (per_group ? (v.group_size <= 0 || v.cols % v.group_size != 0) : v.group_size != 0)
    return Status(Errc::kCorrupt, "packed matrix: group size does not fit the granularity", 32);
  switch (v.granularity) {
    case PackedGranularity::kPerTensor: v.param_rows = 1; v.param_cols = 1; break;
    case PackedGranularity::kPerRow: v.param_rows = v.rows; v.param_cols = 1; break;
    case PackedGranularity::kPerColumn: v.param_rows = 1; v.param_cols = v.cols; break;
    case PackedGranularity::kPerGroup: v.param_rows = v.rows; v.param_cols = v.cols / v.group_size; break;
  }
  const bool asym = v.scheme == PackedScheme::kAsymmetric;
  detail::PackedSections sizes{};
  if (!detail::packed_sections(v.bits, asym, v.rows, v.cols, v.param_rows * v.param_cols, &sizes))
    return Status(Errc::kOverflow, "packed matrix: section sizes overflow", 16);
  const std::uint64_t codes_at = load_le<std::uint64_t>(data + 40);
  const std::uint64_t scales_at = load_le<std::uint64_t>(data + 48);
  const std::uint64_t zps_at = load_le<std::uint64_t>(data + 56);
  // Each section: 64-byte aligned, after the previous one's end, inside the buffer.
  auto place = [&](std::uint64_t at, std::uint64_t after, std::size_t bytes, std::int64_t field,
                   const std::uint8_t** out) -> Status {
    if (at % detail::kPackedAlignment != 0)
      return {Errc::kCorrupt, "packed matrix: section offset not 64-byte aligned", field};
    if (at < after) return {Errc::kCorrupt, "packed matrix: sections overlap or are out of order", field};
    if (at > size || bytes > size - at)
      return {Errc::kTruncated, "packed matrix: section extends past the buffer", field};
    *out = data + at;
    return {};
  };
  LOWBIT_TRY(place(codes_at, detail::kPackedHeaderBytes, sizes.codes, 40, &v.codes));
  LOWBIT_TRY(place(scales_at, codes_at + sizes.codes, sizes.scales, 48, &v.scales));
  if (asym) {
    LOWBIT_TRY(place(zps_at, scales_at + sizes.scales, sizes.zero_points, 56, &v.zero_points));
  } else if (zps_at != 0) {
    return Status(Errc::kCorrupt, "packed matrix: symmetric scheme with a zero-point section", 56);
  }
  for (std::int64_t i = 0; i < v.param_rows * v.param_cols; ++i) {
    std::uint32_t bits = load_le<std::uint32_t>(v.scales + 4 * i);
    float s;
    std::memcpy(&s, &bits, 4);
    if (!(s > 0.0f) || !std::isfinite(s) || !std::isfinite(1.0f / s))
      return Status(Errc::kCorrupt, "packed matrix: scale not positive and finite",
                    static_cast<std::int64_t>(scales_at) + 4 * i);
  }
  return v;
}

// Reads a buffer written for quantizer Q back into a QuantizedTensor<Q> (copying it out of the
// buffer). A buffer written for another width, scheme or granularity is kInvalidArgument.
template <class Q>
Result<QuantizedTensor<Q>> read_packed_matrix(const std::uint8_t* data, std::size_t size,
                                              const typename Q::granularity& g = {}) {
  Result<PackedMatrixView> v = parse_packed_matrix(data, size);
  if (!v) return v.status();
  constexpr bool kAsym = !Q::symmetry::kSymmetric;
  if (v->bits != Q::kBits || v->scheme != detail::packed_scheme<typename Q::symmetry>() ||
      v->granularity != detail::packed_granularity<typename Q::granularity>::kValue)
    return Status(Errc::kInvalidArgument, "packed matrix was written for another quantizer");
  typename Q::granularity granularity = g;
  if constexpr (std::is_same<typename Q::granularity, PerGroup<kDynamicGroup>>::value)
    granularity.group_size = v->group_size;
  const BlockShape grid = param_grid(granularity, v->rows, v->cols);
  if (!granularity.check(v->rows, v->cols).ok() || grid.rows != v->param_rows ||
      grid.cols != v->param_cols)
    return Status(Errc::kInvalidArgument, "packed matrix has another group size");
  const std::int64_t n = v->param_rows * v->param_cols;
  QuantParams params(v->param_rows, v->param_cols);
  for (std::int64_t i = 0; i < n; ++i) {
    const std::uint32_t bits = detail::load_le<std::uint32_t>(v->scales + 4 * i);
    std::memcpy(&params.scale[static_cast<std::size_t>(i)], &bits, 4);
  }
  if (kAsym) {
    std::vector<std::uint8_t> zps(static_cast<std::size_t>(n));
    LOWBIT_TRY(unpack_codes(Q::kBits, v->zero_points, packed_bytes(Q::kBits, n), n, zps.data()));
    for (std::int64_t i = 0; i < n; ++i)
      params.zero_point[static_cast<std::size_t>(i)] = zps[static_cast<std::size_t>(i)];
  }
  const std::size_t code_bytes = packed_bytes(Q::kBits, v->rows * v->cols);
  std::vector<std::uint8_t> packed(v->codes, v->codes + code_bytes);
  return QuantizedTensor<Q>::from_parts(v->rows, v->cols, std::move(packed), std::move(params),
                                        granularity);
}

}  // namespace lowbit
