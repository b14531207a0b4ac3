// GGUF reader and writer: a file assembled byte by byte from the format description, round trips
// of every value type and every ggml tensor type, the type table against lowbit's block structs,
// and hostile files, each expecting one specific Errc at one byte offset.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "lowbit/format/ggml.hpp"
#include "lowbit/io/gguf.hpp"

namespace {

using lowbit::Errc;
using lowbit::Status;
using namespace lowbit::io;

// Little-endian bytes, assembled by hand (independently of the writer under test).
struct Bytes {
  std::vector<std::uint8_t> b;
  Bytes& u8(std::uint8_t v) {
    b.push_back(v);
    return *this;
  }
  Bytes& le(std::uint64_t v, int n) {
    for (int i = 0; i < n; ++i) b.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
    return *this;
  }
  Bytes& u32(std::uint32_t v) { return le(v, 4); }
  Bytes& u64(std::uint64_t v) { return le(v, 8); }
  Bytes& raw(std::string_view s) {
    b.insert(b.end(), s.begin(), s.end());
    return *this;
  }
  Bytes& str(std::string_view s) { return u64(s.size()).raw(s); }
  Bytes& zeros(std::size_t n) {
    b.insert(b.end(), n, 0);
    return *this;
  }
  Bytes& pad(std::size_t alignment) {
    return zeros((alignment - b.size() % alignment) % alignment);
  }
  std::int64_t at() const { return static_cast<std::int64_t>(b.size()); }
  // GGUF v3 fixed header.
  static Bytes header(std::uint64_t tensors, std::uint64_t kvs, std::uint32_t version = 3) {
    Bytes h;
    h.raw("GGUF").u32(version).u64(tensors).u64(kvs);
    return h;
  }
  Bytes& info(std::string_view name, std::vector<std::uint64_t> ne, std::uint32_t type,
              std::uint64_t offset) {
    str(name).u32(static_cast<std::uint32_t>(ne.size()));
    for (std::uint64_t e : ne) u64(e);
    return u32(type).u64(offset);
  }
};

Status parse_status(const Bytes& f) { return parse_gguf(ByteSpan(f.b)).status(); }

void check_error(const Status& s, Errc code, std::int64_t index) {
  CAPTURE(s.message());
  CAPTURE(lowbit::errc_name(s.code()));
  CHECK(s.code() == code);
  CHECK(s.index() == index);
}

std::uint32_t id(GgmlType t) { return static_cast<std::uint32_t>(t); }

// The file of the first test case, assembled by hand from the format description.
Bytes oracle_file() {
  Bytes f = Bytes::header(2, 3);
  f.str("general.architecture").u32(8).str("llama");
  f.str("llama.block_count").u32(4).u32(6);
  f.str("tokenizer.ggml.tokens").u32(9).u32(8).u64(3).str("a").str("<0x0A>").str("\xe2\x96\x81the");
  f.info("token_embd.weight", {4, 3}, 0, 0);      // f32: 48 bytes, padded to 64
  f.info("blk.0.attn_q.weight", {32, 2}, 8, 64);  // q8_0: 2 blocks of 34 bytes
  f.pad(32);
  for (int i = 0; i < 48; ++i) f.u8(static_cast<std::uint8_t>(i));
  f.zeros(16);
  for (int i = 0; i < 68; ++i) f.u8(static_cast<std::uint8_t>(200 - i));
  f.pad(32);
  return f;
}

std::vector<std::uint8_t> pattern(std::size_t n, std::uint32_t seed) {
  std::vector<std::uint8_t> v(n);
  std::uint32_t x = seed * 2654435761u + 1;
  for (std::uint8_t& b : v) {
    x = x * 1664525u + 1013904223u;
    b = static_cast<std::uint8_t>(x >> 24);
  }
  return v;
}

struct Sample {
  std::vector<std::uint8_t> bytes;
  std::vector<std::vector<std::uint8_t>> data;
};

// A writer's file with every value type and many tensor types. `alignment` 0 keeps the default.
Sample sample_file(std::uint32_t alignment) {
  GgufWriter w;
  REQUIRE(w.add("general.architecture", GgufValue::string("test")).ok());
  if (alignment != 0) REQUIRE(w.add(kGgufAlignmentKey, GgufValue::u32(alignment)).ok());
  REQUIRE(w.add("v.u8", GgufValue::u8(250)).ok());
  REQUIRE(w.add("v.i8", GgufValue::i8(-5)).ok());
  REQUIRE(w.add("v.u16", GgufValue::u16(65535)).ok());
  REQUIRE(w.add("v.i16", GgufValue::i16(-32768)).ok());
  REQUIRE(w.add("v.u32", GgufValue::u32(4000000000u)).ok());
  REQUIRE(w.add("v.i32", GgufValue::i32(-2000000000)).ok());
  REQUIRE(w.add("v.f32", GgufValue::f32(-0.1f)).ok());
  REQUIRE(w.add("v.bool", GgufValue::boolean(true)).ok());
  REQUIRE(w.add("v.string", GgufValue::string(std::string_view("caf\xc3\xa9\0\xff", 7))).ok());
  REQUIRE(w.add("v.u64", GgufValue::u64(std::numeric_limits<std::uint64_t>::max())).ok());
  REQUIRE(w.add("v.i64", GgufValue::i64(std::numeric_limits<std::int64_t>::min())).ok());
  REQUIRE(w.add("v.f64", GgufValue::f64(3.141592653589793)).ok());
  REQUIRE(w.add("v.empty_string", GgufValue::string("")).ok());
  // Arrays of every element type.
  const GgufValue scalars[] = {GgufValue::u8(1),     GgufValue::i8(-1),         GgufValue::u16(2),
                               GgufValue::i16(-2),   GgufValue::u32(3),         GgufValue::i32(-3),
                               GgufValue::f32(0.5f), GgufValue::boolean(false), GgufValue::u64(4),
                               GgufValue::i64(-4),   GgufValue::f64(-0.25)};
  for (const GgufValue& s : scalars) {
    GgufArrayBuilder a(s.type());
    for (int i = 0; i < 3; ++i) REQUIRE(a.push(s).ok());
    REQUIRE(w.add("a." + std::to_string(static_cast<int>(s.type())), a.value()).ok());
  }
  GgufArrayBuilder strings(GgufType::kString);
  for (const char* s : {"", "x", "\xe2\x96\x81the", "<0x0A>"})
    REQUIRE(strings.push(GgufValue::string(s)).ok());
  REQUIRE(w.add("a.strings", strings.value()).ok());
  GgufArrayBuilder empty(GgufType::kU32);
  REQUIRE(w.add("a.empty", empty.value()).ok());
  // Nested: [["a", "b"], [], ["c"]] and one level deeper.
  GgufArrayBuilder ab(GgufType::kString), none(GgufType::kString), c(GgufType::kString);
  REQUIRE(ab.push(GgufValue::string("a")).ok());
  REQUIRE(ab.push(GgufValue::string("b")).ok());
  REQUIRE(c.push(GgufValue::string("c")).ok());
  GgufArrayBuilder nested(GgufType::kArray);
  REQUIRE(nested.push(ab.value()).ok());
  REQUIRE(nested.push(none.value()).ok());
  REQUIRE(nested.push(c.value()).ok());
  REQUIRE(w.add("a.nested", nested.value()).ok());
  GgufArrayBuilder deeper(GgufType::kArray);
  REQUIRE(deeper.push(nested.value()).ok());
  REQUIRE(deeper.push(nested.value()).ok());
  REQUIRE(w.add("a.deeper", deeper.value()).ok());

  struct T {
    const char* name;
    GgmlType type;
    std::vector<std::int64_t> ne;
  };
  const T tensors[] = {
      {"f32", GgmlType::kF32, {7}},
      {"f16", GgmlType::kF16, {3, 2}},
      {"bf16", GgmlType::kBF16, {2, 2, 2}},
      {"q4_0", GgmlType::kQ4_0, {64, 2}},
      {"q4_1", GgmlType::kQ4_1, {32}},
      {"q5_0", GgmlType::kQ5_0, {32}},
      {"q5_1", GgmlType::kQ5_1, {32}},
      {"q8_0", GgmlType::kQ8_0, {96}},
      {"q8_1", GgmlType::kQ8_1, {32}},
      {"q2_K", GgmlType::kQ2_K, {256}},
      {"q3_K", GgmlType::kQ3_K, {256}},
      {"q4_K", GgmlType::kQ4_K, {256, 2}},
      {"q5_K", GgmlType::kQ5_K, {256}},
      {"q6_K", GgmlType::kQ6_K, {256}},
      {"q8_K", GgmlType::kQ8_K, {256}},
      {"iq4_nl", GgmlType::kIQ4_NL, {32, 3}},
      {"iq4_xs", GgmlType::kIQ4_XS, {256}},
      {"tq1_0", GgmlType::kTQ1_0, {256}},
      {"tq2_0", GgmlType::kTQ2_0, {256}},
      {"empty", GgmlType::kF32, {0, 4}},
      {"i8", GgmlType::kI8, {5}},
      {"i16", GgmlType::kI16, {5}},
      {"i32", GgmlType::kI32, {5}},
      {"i64", GgmlType::kI64, {5}},
      {"f64", GgmlType::kF64, {5}},
      {"mxfp4", GgmlType::kMXFP4, {32}},
      {"iq2_xxs", GgmlType::kIQ2_XXS, {256}},
      {"scalar", GgmlType::kF32, {}},
      {"four_dims", GgmlType::kF32, {2, 1, 3, 1}},
  };
  Sample s;
  std::uint32_t seed = 1;
  for (const T& t : tensors) {
    REQUIRE(w.add_tensor(t.name, id(t.type), t.ne.data(), static_cast<std::uint32_t>(t.ne.size()))
                .ok());
    s.data.push_back(
        pattern(static_cast<std::size_t>(w.tensor_bytes(w.tensor_count() - 1)), seed++));
  }
  std::vector<const void*> ptrs;
  for (const auto& d : s.data) ptrs.push_back(d.data());
  VectorSink sink{&s.bytes};
  REQUIRE(w.write(sink, ptrs.data()).ok());
  CHECK(s.bytes.size() == w.total_bytes());
  return s;
}

// Rewrites a parsed file, streaming tensor by tensor in `chunk`-byte pieces.
std::vector<std::uint8_t> rewrite(const GgufFile& f, std::size_t chunk) {
  GgufWriter w;
  REQUIRE(w.copy_metadata_from(f).ok());
  std::vector<std::uint8_t> out;
  VectorSink sink{&out};
  REQUIRE(w.write_header(sink).ok());
  CHECK(out.size() == w.header_bytes());
  for (const GgufTensorInfo& t : f.tensors()) {
    for (std::size_t i = 0; i < t.data.size; i += chunk) {
      const std::size_t n = t.data.size - i < chunk ? t.data.size - i : chunk;
      REQUIRE(w.write_tensor_data(sink, t.data.data + i, n).ok());
    }
  }
  REQUIRE(w.finish().ok());
  return out;
}

std::vector<std::string> strings_of(const GgufValue& v) {
  std::vector<std::string> out;
  lowbit::Result<GgufArray> a = v.to_array();
  REQUIRE(a);
  for (GgufValue e : *a) out.emplace_back(*e.to_string());
  return out;
}

template <class Block>
void check_table_entry() {
  using Traits = lowbit::ggml::FormatTraits<Block>;
  CAPTURE(Traits::kName);
  const GgmlTypeInfo* info = ggml_type_info(Traits::kGgmlType);
  REQUIRE(info != nullptr);
  CHECK(std::string(info->name) == Traits::kName);
  CHECK(info->block_size == Traits::kBlockSize);
  CHECK(info->block_bytes == static_cast<std::int64_t>(sizeof(Block)));
}

}  // namespace

TEST_CASE("gguf: the type table agrees with lowbit's ggml block structs") {
  using namespace lowbit::ggml;
  check_table_entry<lowbit::Half>();
  check_table_entry<lowbit::BFloat16>();
  check_table_entry<BlockQ2_K>();
  check_table_entry<BlockQ3_K>();
  check_table_entry<BlockQ4_K>();
  check_table_entry<BlockQ5_K>();
  check_table_entry<BlockQ6_K>();
  check_table_entry<BlockQ8_K>();
  check_table_entry<BlockIQ4_NL>();
  check_table_entry<BlockIQ4_XS>();
  check_table_entry<BlockTQ1_0>();
  check_table_entry<BlockTQ2_0>();
  // The rest from the size formulas of ggml-common.h's static_asserts (half = 2 bytes, QK_K = 256).
  constexpr std::int64_t h = 2, K = 256;
  struct Expected {
    GgmlType type;
    std::int64_t block, bytes;
  };
  const Expected formulas[] = {
      {GgmlType::kF32, 1, 4},
      {GgmlType::kQ4_0, 32, h + 32 / 2},
      {GgmlType::kQ4_1, 32, 2 * h + 32 / 2},
      {GgmlType::kQ5_0, 32, h + 4 + 32 / 2},
      {GgmlType::kQ5_1, 32, 2 * h + 4 + 32 / 2},
      {GgmlType::kQ8_0, 32, h + 32},
      {GgmlType::kQ8_1, 32, 2 * h + 32},
      {GgmlType::kIQ2_XXS, K, h + K / 8 * 2},
      {GgmlType::kIQ2_XS, K, h + K / 8 * 2 + K / 32},
      {GgmlType::kIQ3_XXS, K, h + 3 * (K / 8)},
      {GgmlType::kIQ1_S, K, h + K / 8 + K / 16},
      {GgmlType::kIQ3_S, K, h + 13 * (K / 32) + K / 64},
      {GgmlType::kIQ2_S, K, h + K / 4 + K / 16},
      {GgmlType::kI8, 1, 1},
      {GgmlType::kI16, 1, 2},
      {GgmlType::kI32, 1, 4},
      {GgmlType::kI64, 1, 8},
      {GgmlType::kF64, 1, 8},
      {GgmlType::kIQ1_M, K, K / 8 + K / 16 + K / 32},
      {GgmlType::kMXFP4, 32, 1 + 32 / 2},
  };
  for (const Expected& e : formulas) {
    const GgmlTypeInfo* info = ggml_type_info(e.type);
    REQUIRE(info != nullptr);
    CAPTURE(info->name);
    CHECK(info->block_size == e.block);
    CHECK(info->block_bytes == e.bytes);
  }
  for (std::uint32_t unknown :
       {4u, 5u, 31u, 32u, 33u, 36u, 37u, 38u, 40u, 41u, 1000u, 0xFFFFFFFFu}) {
    CAPTURE(unknown);
    CHECK(ggml_type_info(unknown) == nullptr);
  }
  const std::int64_t ne[] = {64, 3};
  lowbit::Result<GgmlTensorSize> q4 = ggml_tensor_size(id(GgmlType::kQ4_0), ne, 2);
  REQUIRE(q4);
  CHECK(q4->elements == 192);
  CHECK(q4->bytes == 6 * 18);
  CHECK(ggml_tensor_size(4, ne, 2).status().code() == Errc::kUnsupported);
  const std::int64_t odd[] = {48, 3};
  CHECK(ggml_tensor_size(id(GgmlType::kQ4_0), odd, 2).status().code() == Errc::kIndivisible);
}

TEST_CASE("gguf: a file assembled from the format description parses, and the writer rebuilds it") {
  const Bytes f = oracle_file();
  REQUIRE(f.b.size() == 480);
  lowbit::Result<GgufFile> g = parse_gguf(ByteSpan(f.b));
  REQUIRE(g);
  CHECK(g->version() == 3);
  CHECK(g->alignment() == 32);
  CHECK(g->data_offset() == 320);  // a 300-byte header, padded
  REQUIRE(g->kvs().size() == 3);
  CHECK(g->kvs()[0].key == "general.architecture");
  CHECK(g->kvs()[0].offset == 24);
  CHECK(*g->kvs()[0].value.to_string() == "llama");
  const GgufKv* blocks = g->find_kv("llama.block_count");
  REQUIRE(blocks != nullptr);
  CHECK(blocks->value.type() == GgufType::kU32);
  CHECK(*blocks->value.to_u64() == 6);
  CHECK(*blocks->value.to_i64() == 6);
  CHECK(blocks->value.to_string().status().code() == Errc::kInvalidArgument);
  CHECK(g->find_kv("llama.block") == nullptr);
  const GgufKv* tokens = g->find_kv("tokenizer.ggml.tokens");
  REQUIRE(tokens != nullptr);
  CHECK(strings_of(tokens->value) == std::vector<std::string>{"a", "<0x0A>", "\xe2\x96\x81the"});
  lowbit::Result<GgufArray> arr = tokens->value.to_array();
  REQUIRE(arr);
  CHECK(arr->element_type() == GgufType::kString);
  CHECK(arr->size() == 3);
  CHECK(*arr->at(2)->to_string() == "\xe2\x96\x81the");
  CHECK(arr->at(3).status().code() == Errc::kInvalidArgument);

  REQUIRE(g->tensors().size() == 2);
  const GgufTensorInfo& e = g->tensors()[0];
  CHECK(e.name == "token_embd.weight");
  CHECK(e.type == 0);
  CHECK(e.n_dims == 2);
  CHECK(e.ne[0] == 4);
  CHECK(e.ne[1] == 3);
  CHECK(e.ne[2] == 1);
  CHECK(e.elements == 12);
  CHECK(e.bytes == 48);
  CHECK(e.offset == 0);
  CHECK(e.data.data == f.b.data() + 320);
  CHECK(e.data.data[47] == 47);
  const GgufTensorInfo* q = g->find_tensor("blk.0.attn_q.weight");
  REQUIRE(q != nullptr);
  CHECK(q->type == 8);
  CHECK(q->bytes == 68);
  CHECK(q->offset == 64);
  CHECK(q->data.data == f.b.data() + 384);
  CHECK(q->data.data[0] == 200);
  CHECK(g->find_tensor("blk.0") == nullptr);

  // The writer lays the same content out byte for byte as the description says.
  GgufWriter w;
  REQUIRE(w.add("general.architecture", GgufValue::string("llama")).ok());
  REQUIRE(w.add("llama.block_count", GgufValue::u32(6)).ok());
  GgufArrayBuilder toks(GgufType::kString);
  for (const char* s : {"a", "<0x0A>", "\xe2\x96\x81the"})
    REQUIRE(toks.push(GgufValue::string(s)).ok());
  REQUIRE(w.add("tokenizer.ggml.tokens", toks.value()).ok());
  const std::int64_t ne_e[] = {4, 3}, ne_q[] = {32, 2};
  REQUIRE(w.add_tensor("token_embd.weight", 0, ne_e, 2).ok());
  REQUIRE(w.add_tensor("blk.0.attn_q.weight", 8, ne_q, 2).ok());
  CHECK(w.header_bytes() == 320);
  CHECK(w.tensor_offset(1) == 64);
  CHECK(w.total_bytes() == 480);
  std::vector<std::uint8_t> out;
  VectorSink sink{&out};
  const void* data[] = {e.data.data, q->data.data};
  REQUIRE(w.write(sink, data).ok());
  CHECK(out == f.b);
}

TEST_CASE("gguf: write -> read -> write is byte-identical for every value and tensor type") {
  for (std::uint32_t alignment : {0u, 64u, 1u, 4096u}) {
    CAPTURE(alignment);
    const Sample s = sample_file(alignment);
    lowbit::Result<GgufFile> g = parse_gguf(ByteSpan(s.bytes));
    REQUIRE(g);
    const std::uint32_t align = alignment == 0 ? 32 : alignment;
    CHECK(g->alignment() == align);
    CHECK(g->data_offset() % align == 0);
    REQUIRE(g->tensors().size() == s.data.size());
    for (std::size_t i = 0; i < s.data.size(); ++i) {
      const GgufTensorInfo& t = g->tensors()[i];
      CAPTURE(t.name);
      CHECK(t.offset % align == 0);
      CHECK(t.data.data == s.bytes.data() + g->data_offset() + t.offset);
      CHECK(std::vector<std::uint8_t>(t.data.begin(), t.data.end()) == s.data[i]);
    }
    const GgufTensorInfo* four = g->find_tensor("four_dims");
    REQUIRE(four != nullptr);
    CHECK(four->n_dims == 4);  // trailing 1s as written
    CHECK(four->elements == 6);
    const GgufTensorInfo* scalar = g->find_tensor("scalar");
    REQUIRE(scalar != nullptr);
    CHECK(scalar->n_dims == 0);
    CHECK(scalar->elements == 1);
    CHECK(scalar->bytes == 4);
    const GgufTensorInfo* empty = g->find_tensor("empty");
    REQUIRE(empty != nullptr);
    CHECK(empty->elements == 0);
    CHECK(empty->bytes == 0);
    CHECK(g->find_tensor("q4_K")->bytes == 2 * 144);
    CHECK(g->find_tensor("q8_0")->bytes == 3 * 34);
    CHECK(g->find_tensor("iq4_nl")->bytes == 3 * 18);

    // Scalars, exactly.
    auto kv = [&](const char* key) -> GgufValue {
      const GgufKv* p = g->find_kv(key);
      REQUIRE(p != nullptr);
      return p->value;
    };
    CHECK(*kv("v.u8").to_u64() == 250);
    CHECK(*kv("v.i8").to_i64() == -5);
    CHECK(*kv("v.u16").to_u64() == 65535);
    CHECK(*kv("v.i16").to_i64() == -32768);
    CHECK(*kv("v.u32").to_u64() == 4000000000u);
    CHECK(*kv("v.i32").to_i64() == -2000000000);
    CHECK(*kv("v.f32").to_f64() == static_cast<double>(-0.1f));
    CHECK(kv("v.f32").scalar_bits() == 0xBDCCCCCDu);
    CHECK(*kv("v.bool").to_bool());
    CHECK(*kv("v.string").to_string() == std::string_view("caf\xc3\xa9\0\xff", 7));
    CHECK(*kv("v.u64").to_u64() == std::numeric_limits<std::uint64_t>::max());
    CHECK(kv("v.u64").to_i64().status().code() == Errc::kOverflow);
    CHECK(*kv("v.i64").to_i64() == std::numeric_limits<std::int64_t>::min());
    CHECK(kv("v.i64").to_u64().status().code() == Errc::kInvalidArgument);
    CHECK(*kv("v.f64").to_f64() == 3.141592653589793);
    CHECK(kv("v.f64").to_bool().status().code() == Errc::kInvalidArgument);
    CHECK(kv("v.empty_string").to_string()->empty());
    // Arrays of each scalar type: three copies of the element.
    for (int t : {0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 12}) {
      const std::string key = "a." + std::to_string(t);
      CAPTURE(key);
      lowbit::Result<GgufArray> a = kv(key.c_str()).to_array();
      REQUIRE(a);
      CHECK(static_cast<int>(a->element_type()) == t);
      CHECK(a->size() == 3);
      CHECK(a->payload().size ==
            3 * lowbit::io::detail::gguf_scalar_bytes(static_cast<std::uint32_t>(t)));
      int n = 0;
      for (GgufValue e : *a) {
        CHECK(static_cast<int>(e.type()) == t);
        CHECK(e.scalar_bits() == a->at(0)->scalar_bits());
        ++n;
      }
      CHECK(n == 3);
    }
    CHECK(*(*kv("a.6").to_array()).at(1)->to_f64() == 0.5);
    CHECK(*(*kv("a.1").to_array()).at(2)->to_i64() == -1);
    CHECK(strings_of(kv("a.strings")) ==
          std::vector<std::string>{"", "x", "\xe2\x96\x81the", "<0x0A>"});
    CHECK(kv("a.empty").to_array()->empty());
    CHECK(kv("a.empty").to_array()->begin() == kv("a.empty").to_array()->end());
    lowbit::Result<GgufArray> nested = kv("a.nested").to_array();
    REQUIRE(nested);
    CHECK(nested->element_type() == GgufType::kArray);
    REQUIRE(nested->size() == 3);
    CHECK(strings_of(*nested->at(0)) == std::vector<std::string>{"a", "b"});
    CHECK(strings_of(*nested->at(1)).empty());
    CHECK(strings_of(*nested->at(2)) == std::vector<std::string>{"c"});
    lowbit::Result<GgufArray> deeper = kv("a.deeper").to_array();
    REQUIRE(deeper);
    for (GgufValue inner : *deeper) {
      lowbit::Result<GgufArray> in = inner.to_array();
      REQUIRE(in);
      CHECK(in->size() == 3);
      CHECK(strings_of(*in->at(2)) == std::vector<std::string>{"c"});
    }

    for (std::size_t chunk : {std::size_t{1} << 20, std::size_t{7}})
      CHECK(rewrite(*g, chunk) == s.bytes);
  }
}

TEST_CASE("gguf: quantized blocks go in and come back through zero-copy views") {
  using Traits = lowbit::ggml::FormatTraits<lowbit::ggml::BlockQ4_K>;
  std::vector<float> x(512);
  for (std::size_t i = 0; i < x.size(); ++i)
    x[i] = std::sin(0.37f * static_cast<float>(i)) * (1.0f + 0.01f * static_cast<float>(i));
  std::vector<lowbit::ggml::BlockQ4_K> blocks(2);
  REQUIRE(Traits::quantize_reference(x.data(), 512, blocks.data()).ok());
  GgufWriter w;
  const std::int64_t ne[] = {256, 2};
  REQUIRE(w.add_tensor("w", Traits::kGgmlType, ne, 2).ok());
  REQUIRE(w.tensor_bytes(0) == sizeof(lowbit::ggml::BlockQ4_K) * 2);
  std::vector<std::uint8_t> file;
  VectorSink sink{&file};
  const void* data[] = {blocks.data()};
  REQUIRE(w.write(sink, data).ok());
  lowbit::Result<GgufFile> g = parse_gguf(ByteSpan(file));
  REQUIRE(g);
  const GgufTensorInfo* t = g->find_tensor("w");
  REQUIRE(t != nullptr);
  std::vector<lowbit::ggml::BlockQ4_K> back(2);
  std::memcpy(back.data(), t->data.data, t->data.size);
  std::vector<float> y0(512), y1(512);
  REQUIRE(Traits::dequantize(blocks.data(), 512, y0.data()).ok());
  REQUIRE(Traits::dequantize(back.data(), 512, y1.data()).ok());
  CHECK(std::memcmp(y0.data(), y1.data(), 512 * sizeof(float)) == 0);
}

TEST_CASE("gguf: every proper prefix of a valid file is kTruncated") {
  const Bytes oracle = oracle_file();
  const Sample s = sample_file(64);
  for (const std::vector<std::uint8_t>* f : {&oracle.b, &s.bytes}) {
    for (std::size_t len = 0; len < f->size(); ++len) {
      CAPTURE(len);
      const Status st = parse_gguf(ByteSpan(f->data(), len)).status();
      CAPTURE(st.message());
      CHECK(st.code() == Errc::kTruncated);
      CHECK(st.index() >= 0);
      CHECK(st.index() <= static_cast<std::int64_t>(len));
    }
    CHECK(parse_gguf(ByteSpan(*f)).has_value());
  }
}

TEST_CASE("gguf: hostile headers and metadata") {
  // Magic and version.
  {
    Bytes f = oracle_file();
    f.b[3] = 'G';
    check_error(parse_status(f), Errc::kCorrupt, 0);
    for (std::uint32_t v : {0u, 1u, 4u, 0x03000000u}) {  // the last: a big-endian file
      CAPTURE(v);
      Bytes g = oracle_file();
      for (int i = 0; i < 4; ++i)
        g.b[4 + static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(v >> (8 * i));
      check_error(parse_status(g), Errc::kUnsupported, 4);
    }
    Bytes v2 = oracle_file();
    v2.b[4] = 2;  // version 2 has the same layout
    lowbit::Result<GgufFile> g2 = parse_gguf(ByteSpan(v2.b));
    REQUIRE(g2);
    CHECK(g2->version() == 2);
  }
  // Counts the file cannot hold: refused before any allocation.
  check_error(parse_status(Bytes::header(std::uint64_t{1} << 63, 0).zeros(64)), Errc::kTruncated,
              8);
  check_error(parse_status(Bytes::header(0, std::uint64_t{1} << 40).zeros(64)), Errc::kTruncated,
              16);
  check_error(parse_status(Bytes::header(3, 0).zeros(74)), Errc::kTruncated, 8);  // 25 bytes each
  check_error(parse_status(Bytes::header(0, 0)), Errc::kOk, -1);
  // Key lengths: past the end, empty, over 65535, invalid UTF-8.
  check_error(parse_status(Bytes::header(0, 1).u64(~std::uint64_t{0}).u32(4).u32(1)),
              Errc::kTruncated, 24);
  check_error(parse_status(Bytes::header(0, 1).u64(100).raw("abc").u32(4).u32(1)), Errc::kTruncated,
              24);
  check_error(parse_status(Bytes::header(0, 1).str("").u32(4).u32(1)), Errc::kCorrupt, 24);
  check_error(parse_status(Bytes::header(0, 1).str(std::string(65536, 'k')).u32(4).u32(1)),
              Errc::kCorrupt, 24);
  CHECK(parse_status(Bytes::header(0, 1).str(std::string(65535, 'k')).u32(4).u32(1)).ok());
  check_error(parse_status(Bytes::header(0, 1).str("ab\xff").u32(4).u32(1)), Errc::kCorrupt, 34);
  check_error(parse_status(Bytes::header(0, 1).str("a\xc0\xaf").u32(4).u32(1)), Errc::kCorrupt, 33);
  check_error(parse_status(Bytes::header(0, 1).str("\xed\xa0\x80").u32(4).u32(1)), Errc::kCorrupt,
              32);
  // Value types and values.
  check_error(parse_status(Bytes::header(0, 1).str("k").u32(13).u32(1)), Errc::kUnsupported, 33);
  check_error(parse_status(Bytes::header(0, 1).str("k").u32(0xFFFFFFFF).u32(1)), Errc::kUnsupported,
              33);
  check_error(parse_status(Bytes::header(0, 1).str("k").u32(7).u8(2)), Errc::kCorrupt, 37);
  CHECK(parse_status(Bytes::header(0, 1).str("k").u32(7).u8(1)).ok());
  check_error(parse_status(Bytes::header(0, 1).str("k").u32(10).u32(1)), Errc::kTruncated, 37);
  check_error(parse_status(Bytes::header(0, 1).str("k").u32(8).u64(1000).raw("short")),
              Errc::kTruncated, 37);
  // Arrays: huge counts of each kind, unknown element types, bad bools.
  check_error(parse_status(
                  Bytes::header(0, 1).str("k").u32(9).u32(4).u64(std::uint64_t{1} << 60).zeros(16)),
              Errc::kTruncated, 41);
  check_error(
      parse_status(Bytes::header(0, 1).str("k").u32(9).u32(8).u64(~std::uint64_t{0}).zeros(16)),
      Errc::kTruncated, 41);
  check_error(parse_status(Bytes::header(0, 1).str("k").u32(9).u32(9).u64(1000000).zeros(64)),
              Errc::kTruncated, 41);
  check_error(
      parse_status(Bytes::header(0, 1).str("k").u32(9).u32(8).u64(2).str("a").u64(50).raw("b")),
      Errc::kTruncated, 58);
  check_error(parse_status(Bytes::header(0, 1).str("k").u32(9).u32(13).u64(0)), Errc::kUnsupported,
              37);
  check_error(
      parse_status(Bytes::header(0, 1).str("k").u32(9).u32(7).u64(4).u8(1).u8(0).u8(3).u8(1)),
      Errc::kCorrupt, 51);
  // Nesting: 8 levels of arrays are allowed, 9 are not.
  for (int levels : {8, 9}) {
    CAPTURE(levels);
    Bytes f = Bytes::header(0, 1).str("k").u32(9);
    for (int i = 1; i < levels; ++i) f.u32(9).u64(1);
    f.u32(4).u64(1).u32(7);
    if (levels == 8) {
      lowbit::Result<GgufFile> g = parse_gguf(ByteSpan(f.b));
      REQUIRE(g);
      GgufValue v = g->kvs()[0].value;
      for (int i = 1; i < levels; ++i) v = *v.to_array()->at(0);
      CHECK(*v.to_array()->at(0)->to_u64() == 7);
    } else {
      check_error(parse_status(f), Errc::kUnsupported, 37 + 8 * 12);
    }
  }
  // Duplicate keys, also after other keys; general.alignment of the wrong type or value.
  check_error(
      parse_status(
          Bytes::header(0, 3).str("a").u32(0).u8(1).str("b").u32(0).u8(1).str("a").u32(0).u8(1)),
      Errc::kCorrupt, 24 + 2 * 14);
  check_error(parse_status(Bytes::header(0, 1).str(kGgufAlignmentKey).u32(10).u64(32)),
              Errc::kCorrupt, 24);
  for (std::uint32_t bad : {0u, 48u, 0xFFFFFFFFu}) {
    CAPTURE(bad);
    check_error(parse_status(Bytes::header(0, 1).str(kGgufAlignmentKey).u32(4).u32(bad)),
                Errc::kCorrupt, 24);
  }
  lowbit::Result<GgufFile> a =
      parse_gguf(ByteSpan(Bytes::header(0, 1).str(kGgufAlignmentKey).u32(4).u32(1u << 31).b));
  REQUIRE(a);
  CHECK(a->alignment() == 1u << 31);
}

TEST_CASE("gguf: hostile tensor infos and data ranges") {
  // One f32 tensor of `ne` at `offset`, with `data` bytes after the aligned header.
  auto one = [](std::string_view name, std::vector<std::uint64_t> ne, std::uint32_t type,
                std::uint64_t offset, std::size_t data) {
    Bytes f = Bytes::header(1, 0);
    f.info(name, std::move(ne), type, offset);
    f.pad(32);
    f.zeros(data);
    return f;
  };
  CHECK(parse_status(one("t", {4}, 0, 0, 32)).ok());
  check_error(parse_status(one("", {4}, 0, 0, 32)), Errc::kCorrupt, 24);
  check_error(parse_status(one(std::string(65, 'n'), {4}, 0, 0, 32)), Errc::kCorrupt, 24);
  CHECK(parse_status(one(std::string(64, 'n'), {4}, 0, 0, 32)).ok());
  check_error(parse_status(one("t\xc3", {4}, 0, 0, 32)), Errc::kCorrupt, 33);
  // Dimensions: too many, an extent past int64, products past int64 (elements or bytes).
  check_error(parse_status(one("t", {1, 1, 1, 1, 1}, 0, 0, 32)), Errc::kCorrupt, 33);
  check_error(parse_status(one("t", {std::uint64_t{1} << 63}, 0, 0, 32)), Errc::kOverflow, 37);
  check_error(parse_status(one("t", {4, ~std::uint64_t{0}}, 0, 0, 32)), Errc::kOverflow, 45);
  check_error(parse_status(one("t", {std::uint64_t{1} << 32, std::uint64_t{1} << 32}, 24, 0, 32)),
              Errc::kOverflow, 33);
  check_error(
      parse_status(one("t", {2, 2, std::uint64_t{1} << 31, std::uint64_t{1} << 31}, 24, 0, 32)),
      Errc::kOverflow, 33);
  check_error(parse_status(one("t", {std::uint64_t{1} << 62}, 0, 0, 32)), Errc::kOverflow,
              33);  // 2^64 bytes
  check_error(parse_status(one("t", {std::uint64_t{1} << 61, 2}, 28, 0, 32)), Errc::kOverflow, 33);
  // An empty tensor with huge other extents holds nothing, but its strides must still fit.
  CHECK(parse_status(one("t", {0, std::uint64_t{1} << 40}, 0, 0, 0)).ok());
  check_error(parse_status(one("t", {0, std::uint64_t{1} << 40, std::uint64_t{1} << 40}, 0, 0, 0)),
              Errc::kOverflow, 33);
  // Types: removed, unknown, or a row that is not a whole number of blocks.
  for (std::uint32_t type : {4u, 31u, 36u, 40u, 0x80000000u, 0xFFFFFFFFu}) {
    CAPTURE(type);
    check_error(parse_status(one("t", {32}, type, 0, 32)), Errc::kUnsupported, 45);
  }
  check_error(parse_status(one("t", {33}, id(GgmlType::kQ4_0), 0, 64)), Errc::kCorrupt, 33);
  check_error(parse_status(one("t", {128, 2}, id(GgmlType::kQ4_K), 0, 288)), Errc::kCorrupt, 33);
  CHECK(parse_status(one("t", {256, 2}, id(GgmlType::kQ4_K), 0, 288)).ok());
  // Offsets: misaligned, past the end, data past the end, padding missing.
  check_error(parse_status(one("t", {4}, 0, 4, 64)), Errc::kCorrupt, 49);
  check_error(parse_status(one("t", {4}, 0, 64, 64)), Errc::kTruncated, 49);
  check_error(parse_status(one("t", {4}, 0, std::uint64_t{1} << 63, 64)), Errc::kTruncated, 49);
  check_error(parse_status(one("t", {4}, 0, ~std::uint64_t{0} & ~std::uint64_t{31}, 64)),
              Errc::kTruncated, 49);
  check_error(parse_status(one("t", {16}, 0, 0, 48)), Errc::kTruncated, 49);
  check_error(parse_status(one("t", {4}, 0, 0, 16)), Errc::kTruncated, 80);  // padding cut short
  // The header padding itself missing.
  check_error(parse_status(Bytes::header(1, 0).info("t", {0}, 0, 0)), Errc::kTruncated, 57);
  // Two tensors: overlapping, aliased, duplicate names; adjacent and empty ones are fine.
  auto two = [](std::string_view second, std::uint64_t n0, std::uint64_t n1, std::uint64_t off1,
                std::size_t data) {
    Bytes f = Bytes::header(2, 0);
    f.info("a", {n0}, 0, 0);
    f.info(second, {n1}, 0, off1);
    f.pad(32);
    f.zeros(data);
    return f;
  };
  CHECK(parse_status(two("b", 8, 8, 32, 64)).ok());
  CHECK(parse_status(two("b", 8, 0, 32, 64)).ok());
  CHECK(parse_status(two("b", 0, 8, 0, 32)).ok());  // an empty tensor shares its neighbour's offset
  check_error(parse_status(two("b", 16, 16, 32, 96)), Errc::kCorrupt, 82);
  check_error(parse_status(two("b", 8, 8, 0, 64)), Errc::kCorrupt, 82);
  check_error(parse_status(two("a", 8, 8, 32, 64)), Errc::kCorrupt, 57);
  // Order in the file does not matter, only overlap.
  Bytes reversed = Bytes::header(2, 0);
  reversed.info("a", {8}, 0, 32).info("b", {8}, 0, 0).pad(32).zeros(64);
  CHECK(parse_status(reversed).ok());
  Bytes reversed_overlap = Bytes::header(2, 0);
  reversed_overlap.info("a", {8}, 0, 32).info("b", {16}, 0, 0).pad(32).zeros(64);
  check_error(parse_status(reversed_overlap), Errc::kCorrupt, 49);
  // With no tensors the header needs no padding (ggml's reader does not ask for it).
  CHECK(parse_status(Bytes::header(0, 1).str("k").u32(0).u8(1)).ok());
}

TEST_CASE("gguf: writer refuses bad input and misuse") {
  GgufWriter w;
  CHECK(w.add("k", GgufValue::u8(1)).ok());
  CHECK(w.add("k", GgufValue::u8(1)).code() == Errc::kInvalidArgument);
  CHECK(w.add("", GgufValue::u8(1)).code() == Errc::kInvalidArgument);
  CHECK(w.add("bad\xff", GgufValue::u8(1)).code() == Errc::kInvalidArgument);
  CHECK(w.add(std::string(65536, 'k'), GgufValue::u8(1)).code() == Errc::kInvalidArgument);
  CHECK(w.add(kGgufAlignmentKey, GgufValue::u64(32)).code() == Errc::kInvalidArgument);
  CHECK(w.add(kGgufAlignmentKey, GgufValue::u32(48)).code() == Errc::kInvalidArgument);
  CHECK(w.add(kGgufAlignmentKey, GgufValue::u32(0)).code() == Errc::kInvalidArgument);
  CHECK(w.alignment() == 32);
  const std::int64_t ne[] = {32, 2};  // q4_0: two blocks of 18 bytes
  CHECK(w.add_tensor("t", id(GgmlType::kQ4_0), ne, 2).ok());
  CHECK(w.add_tensor("t", id(GgmlType::kQ4_0), ne, 2).code() == Errc::kInvalidArgument);
  CHECK(w.add_tensor("", id(GgmlType::kQ4_0), ne, 2).code() == Errc::kInvalidArgument);
  CHECK(w.add_tensor(std::string(65, 'n'), id(GgmlType::kQ4_0), ne, 2).code() ==
        Errc::kInvalidArgument);
  CHECK(w.add_tensor("u", 4, ne, 2).code() == Errc::kUnsupported);
  CHECK(w.add_tensor("u", id(GgmlType::kQ4_K), ne, 2).code() == Errc::kIndivisible);
  CHECK(w.add_tensor("u", id(GgmlType::kF32), ne, 5).code() == Errc::kInvalidArgument);
  CHECK(w.add_tensor("u", id(GgmlType::kF32), nullptr, 2).code() == Errc::kInvalidArgument);
  const std::int64_t negative[] = {4, -1};
  CHECK(w.add_tensor("u", id(GgmlType::kF32), negative, 2).code() == Errc::kInvalidArgument);
  const std::int64_t huge[] = {std::int64_t{1} << 62, 2};
  CHECK(w.add_tensor("u", id(GgmlType::kF32), huge, 2).code() == Errc::kOverflow);
  CHECK(w.tensor_count() == 1);
  CHECK(w.add(kGgufAlignmentKey, GgufValue::u32(16)).ok());  // may come after the tensors
  CHECK(w.alignment() == 16);

  std::vector<std::uint8_t> out;
  VectorSink sink{&out};
  std::vector<std::uint8_t> data(36, 7);
  CHECK(w.write_tensor_data(sink, data.data(), 1).code() ==
        Errc::kInvalidArgument);  // before the header
  REQUIRE(w.write_header(sink).ok());
  CHECK(out.size() % 16 == 0);
  CHECK(w.write_header(sink).code() == Errc::kInvalidArgument);
  CHECK(w.add("late", GgufValue::u8(1)).code() == Errc::kInvalidArgument);
  CHECK(w.add_tensor("late", id(GgmlType::kF32), ne, 1).code() == Errc::kInvalidArgument);
  CHECK(w.write_tensor_data(sink, nullptr, 4).code() == Errc::kInvalidArgument);
  std::vector<std::uint8_t> too_many(37, 0);
  CHECK(w.write_tensor_data(sink, too_many.data(), too_many.size()).code() ==
        Errc::kInvalidArgument);
  CHECK(w.finish().code() == Errc::kInvalidArgument);
  REQUIRE(w.write_tensor_data(sink, data.data(), 20).ok());
  REQUIRE(w.write_tensor_data(sink, data.data(), 16).ok());
  CHECK(w.finish().ok());
  CHECK(w.write_tensor_data(sink, data.data(), 1).code() == Errc::kInvalidArgument);
  CHECK(out.size() == w.total_bytes());
  lowbit::Result<GgufFile> g = parse_gguf(ByteSpan(out));
  REQUIRE(g);
  CHECK(g->alignment() == 16);
  CHECK(g->tensors()[0].bytes == 36);

  // Array builders: element type mismatch, nesting past the limit.
  GgufArrayBuilder u32s(GgufType::kU32);
  CHECK(u32s.push(GgufValue::u16(1)).code() == Errc::kInvalidArgument);
  CHECK(u32s.push(GgufValue::u32(1)).ok());
  CHECK(u32s.size() == 1);
  GgufArrayBuilder bad(static_cast<GgufType>(13));
  CHECK(bad.push(GgufValue::u8(1)).code() == Errc::kInvalidArgument);
  std::vector<GgufArrayBuilder> levels;
  levels.emplace_back(GgufType::kU8);
  REQUIRE(levels.back().push(GgufValue::u8(1)).ok());
  for (int depth = 2; depth <= kGgufMaxArrayDepth; ++depth) {
    levels.emplace_back(GgufType::kArray);
    REQUIRE(levels.back().push(levels[levels.size() - 2].value()).ok());
  }
  GgufArrayBuilder too_deep(GgufType::kArray);
  CHECK(too_deep.push(levels.back().value()).code() == Errc::kInvalidArgument);
  GgufWriter deep;
  REQUIRE(deep.add("deep", levels.back().value()).ok());
  std::vector<std::uint8_t> deep_file;
  VectorSink deep_sink{&deep_file};
  REQUIRE(deep.write(deep_sink, nullptr).ok());
  lowbit::Result<GgufFile> deep_parsed = parse_gguf(ByteSpan(deep_file));
  REQUIRE(deep_parsed);
  GgufValue v = deep_parsed->kvs()[0].value;
  for (int depth = kGgufMaxArrayDepth; depth > 1; --depth) v = *v.to_array()->at(0);
  CHECK(*v.to_array()->at(0)->to_u64() == 1);
}

TEST_CASE("gguf: a file written to disk maps and parses") {
  const Sample s = sample_file(0);
  lowbit::Result<GgufFile> parsed = parse_gguf(ByteSpan(s.bytes));
  REQUIRE(parsed);
  char name[64];
  std::snprintf(name, sizeof name, "/tmp/lowbit_gguf_test_%p.gguf", static_cast<const void*>(&s));
  std::FILE* file = std::fopen(name, "wb");
  REQUIRE(file != nullptr);
  GgufWriter w;
  REQUIRE(w.copy_metadata_from(*parsed).ok());
  FileSink sink{file};
  REQUIRE(w.write_header(sink).ok());
  for (const GgufTensorInfo& t : parsed->tensors())
    REQUIRE(w.write_tensor_data(sink, t.data.data, t.data.size).ok());
  REQUIRE(w.finish().ok());
  std::fclose(file);
  lowbit::Result<MappedFile> m = MappedFile::open(name);
  REQUIRE(m);
  lowbit::Result<GgufFile> g = parse_gguf(m->bytes());
  REQUIRE(g);
  CHECK(rewrite(*g, 4096) == s.bytes);
  // Mapped data sections are aligned in memory too: the map is page-aligned.
  for (const GgufTensorInfo& t : g->tensors())
    CHECK(reinterpret_cast<std::uintptr_t>(t.data.data) % g->alignment() == 0);
  std::remove(name);
}
