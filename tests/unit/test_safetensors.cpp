// safetensors reader and writer: hand-made files from the format description, the header of a
// file written by the reference implementation, round trips, and hostile files each expecting
// one specific Errc at one byte offset.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "lowbit/io/safetensors.hpp"
#include "support/raw.hpp"

namespace {

using lowbit::Errc;
using lowbit::Status;
using namespace lowbit::io;

// A file from a header text (not padded unless the text is) and `data` bytes 0, 1, 2, ...
std::vector<std::uint8_t> make_file(const std::string& header, std::size_t data) {
  std::vector<std::uint8_t> f(8 + header.size() + data);
  const std::uint64_t n = header.size();
  for (int i = 0; i < 8; ++i)
    f[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(n >> (8 * i));
  std::memcpy(f.data() + 8, header.data(), header.size());
  for (std::size_t i = 0; i < data; ++i)
    f[8 + header.size() + i] = static_cast<std::uint8_t>(i * 7 + 1);
  return f;
}

Status parse_status(const std::vector<std::uint8_t>& f) {
  return parse_safetensors(ByteSpan(f)).status();
}

void check_error(const Status& s, Errc code, std::int64_t index) {
  CAPTURE(s.message());
  CAPTURE(lowbit::errc_name(s.code()));
  CHECK(s.code() == code);
  CHECK(s.index() == index);
}

// One tensor entry: "name":{"dtype":..,"shape":[..],"data_offsets":[b,e]}.
std::string entry(const std::string& name, const std::string& dtype, const std::string& shape,
                  std::uint64_t b, std::uint64_t e) {
  return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":[" + shape +
         "],\"data_offsets\":[" + std::to_string(b) + "," + std::to_string(e) + "]}";
}

struct Written {
  std::vector<std::uint8_t> bytes;
  std::vector<std::vector<std::uint8_t>> data;  // per tensor, add order
};

// A writer's file with every dtype, scalars, empty tensors and awkward strings.
Written sample(SafetensorsWriter::Order order) {
  SafetensorsWriter w(order);
  REQUIRE(w.add_metadata("format", "pt").ok());
  REQUIRE(w.add_metadata("quote\"back\\slash", "tab\tnl\n\x01 caf\xc3\xa9 \xf0\x9f\x98\x80").ok());
  Written out;
  const SafetensorsDtype dtypes[] = {
      SafetensorsDtype::kBool,    SafetensorsDtype::kU8,      SafetensorsDtype::kI8,
      SafetensorsDtype::kF8_E5M2, SafetensorsDtype::kF8_E4M3, SafetensorsDtype::kI16,
      SafetensorsDtype::kU16,     SafetensorsDtype::kF16,     SafetensorsDtype::kBF16,
      SafetensorsDtype::kI32,     SafetensorsDtype::kU32,     SafetensorsDtype::kF32,
      SafetensorsDtype::kF64,     SafetensorsDtype::kI64,     SafetensorsDtype::kU64};
  int k = 0;
  for (SafetensorsDtype d : dtypes) {
    const std::int64_t shape[] = {2, 3 + k % 2};
    const std::string name =
        std::string("t.") + safetensors_dtype_name(d) + (k % 3 == 0 ? "\xc3\xa9" : "");
    REQUIRE(w.add_tensor(name, d, shape, 2).ok());
    std::vector<std::uint8_t> bytes(static_cast<std::size_t>(w.tensor_bytes(w.tensor_count() - 1)));
    for (std::size_t i = 0; i < bytes.size(); ++i)
      bytes[i] = d == SafetensorsDtype::kBool ? static_cast<std::uint8_t>(i & 1)
                                              : static_cast<std::uint8_t>(i * 13 + k);
    out.data.push_back(bytes);
    ++k;
  }
  const std::int64_t empty_shape[] = {0, 5};
  REQUIRE(w.add_tensor("empty", SafetensorsDtype::kF32, empty_shape, 2).ok());
  out.data.emplace_back();
  REQUIRE(w.add_tensor("scalar", SafetensorsDtype::kF64, nullptr, 0).ok());
  out.data.push_back(std::vector<std::uint8_t>{0, 0, 0, 0, 0, 0, 0xF0, 0x3F});  // 1.0
  std::vector<const void*> ptrs;
  for (const auto& d : out.data) ptrs.push_back(d.data());
  VectorSink sink{&out.bytes};
  REQUIRE(w.write(sink, ptrs.data()).ok());
  return out;
}

// Rewrites a parsed file with a writer in `order`, streaming tensor by tensor.
std::vector<std::uint8_t> rewrite(const SafetensorsFile& f, SafetensorsWriter::Order order) {
  SafetensorsWriter w(order);
  REQUIRE(w.copy_metadata_from(f).ok());
  std::vector<std::uint8_t> out;
  VectorSink sink{&out};
  REQUIRE(w.write_header(sink).ok());
  for (std::size_t k = 0; k < w.tensor_count(); ++k) {
    const SafetensorsTensor& t = f.tensors()[w.tensor_at(k)];
    REQUIRE(w.write_tensor_data(sink, t.data.data, t.data.size).ok());
  }
  REQUIRE(w.finish().ok());
  return out;
}

}  // namespace

TEST_CASE("safetensors: a hand-made file from the format description parses") {
  // The reference's documentation example: a 2x2 I32 tensor, header not padded.
  const std::string header = R"({"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}})";
  REQUIRE(header.size() == 60);
  const std::vector<std::uint8_t> f = make_file(header, 16);
  lowbit::Result<SafetensorsFile> st = parse_safetensors(ByteSpan(f));
  REQUIRE(st);
  CHECK(st->header_bytes() == 60);
  CHECK(st->data_offset() == 68);
  REQUIRE(st->tensors().size() == 1);
  const SafetensorsTensor& t = st->tensors()[0];
  CHECK(t.name == "test");
  CHECK(t.dtype == SafetensorsDtype::kI32);
  CHECK(t.shape == std::vector<std::int64_t>{2, 2});
  CHECK(t.elements == 4);
  CHECK(t.begin == 0);
  CHECK(t.end == 16);
  CHECK(t.data.data == f.data() + 68);
  CHECK(t.data.size == 16);
  CHECK(t.entry_offset == 9);
  CHECK(st->find("test") == &t);
  CHECK(st->find("nope") == nullptr);
  CHECK(st->metadata().empty());

  // The writer emits the same header, padded with spaces to a multiple of 8 as the reference does.
  SafetensorsWriter w;
  const std::int64_t shape[] = {2, 2};
  REQUIRE(w.add_tensor("test", SafetensorsDtype::kI32, shape, 2).ok());
  lowbit::Result<std::vector<std::uint8_t>> h = w.header();
  REQUIRE(h);
  const std::vector<std::uint8_t> expect = make_file(header + "    ", 0);
  CHECK(*h == expect);

  // Whitespace anywhere JSON allows it, unknown fields, and a metadata map.
  const std::string loose =
      "{\n \"__metadata__\" : { \"a\" : \"b\" } ,\"x\" : { \"extra\" : [1, {\"y\": null}], "
      "\"data_offsets\" : [ 0 , 2 ],"
      " \"shape\" : [ 1 ] , \"dtype\" : \"BF16\" } }\t\r\n   ";
  const std::vector<std::uint8_t> g = make_file(loose, 2);
  lowbit::Result<SafetensorsFile> sg = parse_safetensors(ByteSpan(g));
  REQUIRE(sg);
  REQUIRE(sg->metadata().size() == 1);
  CHECK(sg->metadata()[0].key == "a");
  CHECK(*sg->find_metadata("a") == "b");
  CHECK(sg->find_metadata("b") == nullptr);
  CHECK(sg->tensors()[0].dtype == SafetensorsDtype::kBF16);
  CHECK(sg->tensors()[0].shape == std::vector<std::int64_t>{1});
}

TEST_CASE("safetensors: the writer reproduces the header the reference implementation wrote") {
  // tests/data/safetensors/tinylm_header.bin: the first 8 + N bytes of tinylm's model.safetensors
  // (57 float32 tensors, 19,418,072 bytes in all, see tests/data/README.md). Its data section is
  // replaced here by zeros of the same length.
  const std::vector<std::uint8_t> header = lowbit_test::load_bytes("safetensors/tinylm_header.bin");
  REQUIRE(header.size() == 6104);
  std::vector<std::uint8_t> file(19418072, 0);
  std::memcpy(file.data(), header.data(), header.size());
  lowbit::Result<SafetensorsFile> st = parse_safetensors(ByteSpan(file));
  REQUIRE(st);
  CHECK(st->header_bytes() == 6096);
  CHECK(st->tensors().size() == 57);
  REQUIRE(st->metadata().size() == 1);
  CHECK(*st->find_metadata("format") == "pt");
  const SafetensorsTensor* lm = st->find("lm_head.weight");
  REQUIRE(lm != nullptr);
  CHECK(lm->dtype == SafetensorsDtype::kF32);
  CHECK(lm->shape == std::vector<std::int64_t>{256, 256});
  CHECK(lm->begin == 0);
  CHECK(lm->end == 262144);
  const SafetensorsTensor* down = st->find("model.layers.2.mlp.down_proj.weight");
  REQUIRE(down != nullptr);
  CHECK(down->shape == std::vector<std::int64_t>{256, 768});
  CHECK(down->end - down->begin == 256 * 768 * 4);
  const SafetensorsTensor* norm = st->find("model.norm.weight");
  REQUIRE(norm != nullptr);
  CHECK(norm->shape == std::vector<std::int64_t>{256});

  for (SafetensorsWriter::Order order :
       {SafetensorsWriter::Order::kReference, SafetensorsWriter::Order::kGiven}) {
    SafetensorsWriter w(order);
    REQUIRE(w.copy_metadata_from(*st).ok());
    lowbit::Result<std::vector<std::uint8_t>> h = w.header();
    REQUIRE(h);
    CHECK(*h == header);
  }
}

TEST_CASE("safetensors: write -> read -> write is byte-identical, in both orders") {
  for (SafetensorsWriter::Order order :
       {SafetensorsWriter::Order::kReference, SafetensorsWriter::Order::kGiven}) {
    CAPTURE(static_cast<int>(order));
    const Written w = sample(order);
    CHECK((w.bytes[0] | w.bytes[1] << 8) % 8 == 0);
    lowbit::Result<SafetensorsFile> st = parse_safetensors(ByteSpan(w.bytes));
    REQUIRE(st);
    REQUIRE(st->tensors().size() == w.data.size());
    CHECK(st->metadata().size() == 2);
    CHECK(*st->find_metadata("quote\"back\\slash") == "tab\tnl\n\x01 caf\xc3\xa9 \xf0\x9f\x98\x80");
    // Every tensor's bytes come back, found by name.
    std::size_t total = 0;
    for (const SafetensorsTensor& t : st->tensors()) {
      CAPTURE(t.name);
      CHECK(t.end - t.begin == t.data.size);
      total += t.data.size;
    }
    CHECK(total == w.bytes.size() - st->data_offset());
    const SafetensorsTensor* scalar = st->find("scalar");
    REQUIRE(scalar != nullptr);
    CHECK(scalar->shape.empty());
    CHECK(scalar->elements == 1);
    REQUIRE(scalar->data.size == 8);
    double one = 0;
    std::memcpy(&one, scalar->data.data, 8);
    CHECK(one == 1.0);
    const SafetensorsTensor* empty = st->find("empty");
    REQUIRE(empty != nullptr);
    CHECK(empty->elements == 0);
    CHECK(empty->data.size == 0);
    const SafetensorsTensor* bf = st->find("t.BF16");
    REQUIRE(bf != nullptr);
    CHECK(bf->shape == std::vector<std::int64_t>{2, 3});
    CHECK(std::vector<std::uint8_t>(bf->data.begin(), bf->data.end()) == w.data[8]);
    if (order == SafetensorsWriter::Order::kReference) {
      // Descending alignment: the 8-byte dtypes first, then names in byte order within a dtype.
      CHECK(st->tensors()[0].dtype == SafetensorsDtype::kU64);
      CHECK(st->tensors()[1].dtype == SafetensorsDtype::kI64);
      CHECK(st->tensors()[2].name == "scalar");
      CHECK(st->tensors()[3].name == "t.F64\xc3\xa9");
      CHECK(st->tensors().back().dtype == SafetensorsDtype::kBool);
    } else {
      CHECK(st->tensors()[0].dtype == SafetensorsDtype::kBool);
      CHECK(st->tensors().back().name == "scalar");
    }
    CHECK(rewrite(*st, order) == w.bytes);
  }
  // Rewriting the given-order file in the reference's order gives the reference-ordered file.
  const Written given = sample(SafetensorsWriter::Order::kGiven);
  lowbit::Result<SafetensorsFile> st = parse_safetensors(ByteSpan(given.bytes));
  REQUIRE(st);
  CHECK(rewrite(*st, SafetensorsWriter::Order::kReference) ==
        sample(SafetensorsWriter::Order::kReference).bytes);
}

TEST_CASE("safetensors: streaming in chunks equals writing at once") {
  const Written w = sample(SafetensorsWriter::Order::kReference);
  SafetensorsWriter s(SafetensorsWriter::Order::kReference);
  lowbit::Result<SafetensorsFile> st = parse_safetensors(ByteSpan(w.bytes));
  REQUIRE(st);
  REQUIRE(s.copy_metadata_from(*st).ok());
  std::vector<std::uint8_t> out;
  VectorSink sink{&out};
  CHECK(s.write_tensor_data(sink, "x", 1).code() == Errc::kInvalidArgument);  // before the header
  CHECK(s.finish().code() == Errc::kInvalidArgument);
  REQUIRE(s.write_header(sink).ok());
  CHECK(s.write_header(sink).code() == Errc::kInvalidArgument);
  CHECK(s.add_metadata("late", "x").code() == Errc::kInvalidArgument);
  const std::int64_t one[] = {1};
  CHECK(s.add_tensor("late", SafetensorsDtype::kU8, one, 1).code() == Errc::kInvalidArgument);
  for (std::size_t k = 0; k < s.tensor_count(); ++k) {
    const SafetensorsTensor& t = st->tensors()[s.tensor_at(k)];
    if (t.data.size > 3) {
      // More than the tensor holds is refused and writes nothing.
      std::vector<std::uint8_t> too_many(t.data.size + 1, 0);
      CHECK(s.write_tensor_data(sink, too_many.data(), too_many.size()).code() ==
            Errc::kInvalidArgument);
    }
    for (std::size_t i = 0; i < t.data.size; i += 3) {
      const std::size_t n = t.data.size - i < 3 ? t.data.size - i : 3;
      REQUIRE(s.write_tensor_data(sink, t.data.data + i, n).ok());
    }
    if (k + 1 < s.tensor_count()) CHECK(s.finish().code() == Errc::kInvalidArgument);
  }
  CHECK(s.finish().ok());
  CHECK(s.write_tensor_data(sink, "x", 1).code() == Errc::kInvalidArgument);
  CHECK(out == w.bytes);
}

TEST_CASE("safetensors: every proper prefix of a valid file is kTruncated") {
  const Written w = sample(SafetensorsWriter::Order::kReference);
  const std::size_t header_end = 8 + static_cast<std::size_t>(w.bytes[0] | w.bytes[1] << 8);
  for (std::size_t len = 0; len < w.bytes.size(); ++len) {
    CAPTURE(len);
    const Status s = parse_safetensors(ByteSpan(w.bytes.data(), len)).status();
    CHECK(s.code() == Errc::kTruncated);
    // Before the header is complete the length field is at fault; after, the data's end.
    CHECK(s.index() == (len < header_end ? 0 : static_cast<std::int64_t>(len)));
  }
  CHECK(parse_safetensors(ByteSpan(w.bytes)).has_value());
  CHECK(parse_safetensors(ByteSpan()).status().code() == Errc::kTruncated);
}

TEST_CASE("safetensors: hostile lengths, offsets and sizes") {
  const std::string one = entry("a", "F32", "2,2", 0, 16);
  // The reference's attack 1: a header length far past the file.
  {
    std::vector<std::uint8_t> f = make_file("{" + one + "}", 16);
    f[0] = 0xE8;  // 1000
    f[1] = 0x03;
    check_error(parse_status(f), Errc::kTruncated, 0);
    for (int i = 0; i < 8; ++i) f[static_cast<std::size_t>(i)] = 0xFF;  // 2^64 - 1
    check_error(parse_status(f), Errc::kTruncated, 0);
  }
  // A header over the 100 MB cap, even when the file is that long.
  {
    std::vector<std::uint8_t> f(8 + kSafetensorsMaxHeaderBytes + 8, ' ');
    const std::uint64_t n = kSafetensorsMaxHeaderBytes + 1;
    for (int i = 0; i < 8; ++i)
      f[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(n >> (8 * i));
    f[8] = '{';
    check_error(parse_status(f), Errc::kUnsupported, 0);
  }
  check_error(parse_status(make_file("", 0)), Errc::kCorrupt, 8);
  check_error(parse_status(make_file(" {" + one + "}", 16)), Errc::kCorrupt, 8);
  check_error(parse_status(make_file("[" + one + "]", 16)), Errc::kCorrupt, 8);
  // Offsets past the end of the data section, and a begin far away (a gap from 0).
  {
    const std::vector<std::uint8_t> f =
        make_file("{" + one + "," + entry("b", "F32", "4", 16, 32) + "}", 16);
    check_error(parse_status(f), Errc::kTruncated, static_cast<std::int64_t>(f.size()));
  }
  check_error(
      parse_status(make_file(
          "{" + entry("a", "U8", "1", 4611686018427387904ull, 4611686018427387905ull) + "}", 1)),
      Errc::kCorrupt, 9);
  // Overlap, gap, trailing bytes, size mismatch, end before begin.
  const std::string h_overlap = "{" + one + "," + entry("b", "F32", "4", 8, 24) + "}";
  check_error(parse_status(make_file(h_overlap, 24)), Errc::kCorrupt,
              8 + 1 + static_cast<std::int64_t>(one.size()) + 1);
  const std::string h_alias = "{" + one + "," + entry("b", "F32", "2,2", 0, 16) + "}";
  check_error(parse_status(make_file(h_alias, 16)), Errc::kCorrupt,
              8 + 1 + static_cast<std::int64_t>(one.size()) + 1);
  const std::string h_gap = "{" + one + "," + entry("b", "F32", "4", 20, 36) + "}";
  check_error(parse_status(make_file(h_gap, 36)), Errc::kCorrupt,
              8 + 1 + static_cast<std::int64_t>(one.size()) + 1);
  check_error(parse_status(make_file("{" + one + "}", 17)), Errc::kCorrupt,
              8 + 2 + static_cast<std::int64_t>(one.size()) + 16);
  check_error(parse_status(make_file("{" + entry("a", "F32", "2,2", 0, 12) + "}", 12)),
              Errc::kCorrupt, 9);
  check_error(parse_status(make_file("{" + entry("a", "F32", "2,2", 16, 0) + "}", 16)),
              Errc::kCorrupt, 9);
  check_error(parse_status(make_file("{" + entry("a", "F16", "3", 0, 4) + "}", 4)), Errc::kCorrupt,
              9);
  // Element counts and byte sizes that overflow 64 bits; an integer outside int64.
  check_error(
      parse_status(make_file("{" + entry("a", "U8", "4294967296,4294967296", 0, 0) + "}", 0)),
      Errc::kOverflow, 9);
  check_error(
      parse_status(make_file("{" + entry("a", "F32", "4611686018427387904,2", 0, 0) + "}", 0)),
      Errc::kOverflow, 9);
  check_error(
      parse_status(make_file("{" + entry("a", "F64", "2305843009213693952", 0, 0) + "}", 0)),
      Errc::kOverflow, 9);
  check_error(
      parse_status(make_file("{" + entry("a", "F64", "4294967296,4294967296,0", 0, 0) + "}", 0)),
      Errc::kOverflow, 9);
  const std::string big =
      R"({"a":{"dtype":"U8","shape":[9223372036854775808],"data_offsets":[0,1]}})";
  check_error(parse_status(make_file(big, 1)), Errc::kOverflow, 8 + 28);
  // A zero extent anywhere makes an empty tensor, which stores nothing.
  CHECK(parse_status(make_file("{" + entry("a", "F64", "0,4294967296", 0, 0) + "}", 0)).ok());
  check_error(parse_status(make_file("{" + entry("a", "U8", "-1", 0, 0) + "}", 0)), Errc::kCorrupt,
              8 + 28);
}

TEST_CASE("safetensors: hostile header contents") {
  const std::string one = entry("a", "F32", "2,2", 0, 16);
  struct Case {
    std::string header;
    Errc code;
    std::int64_t index;  // file offset
  };
  const Case cases[] = {
      // Unknown and sub-byte dtypes, wrong JSON types.
      {"{" + entry("a", "F4", "2,2", 0, 16) + "}", Errc::kUnsupported, 8 + 14},
      {"{" + entry("a", "C64", "2,2", 0, 16) + "}", Errc::kUnsupported, 8 + 14},
      {"{" + entry("a", "f32", "2,2", 0, 16) + "}", Errc::kUnsupported, 8 + 14},
      {R"({"a":{"dtype":4,"shape":[2,2],"data_offsets":[0,16]}})", Errc::kCorrupt, 8 + 14},
      {R"({"a":{"dtype":"F32","shape":4,"data_offsets":[0,16]}})", Errc::kCorrupt, 8 + 28},
      {R"({"a":{"dtype":"F32","shape":[2,2.0],"data_offsets":[0,16]}})", Errc::kCorrupt, 8 + 31},
      {R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16,32]}})", Errc::kCorrupt, 8 + 49},
      {R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[16]}})", Errc::kCorrupt, 8 + 49},
      {R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,-16]}})", Errc::kCorrupt, 8 + 52},
      {R"({"a":[]})", Errc::kCorrupt, 8 + 5},
      // Missing and repeated fields, duplicate names and keys.
      {R"({"a":{"dtype":"F32","shape":[2,2]}})", Errc::kCorrupt, 9},
      {R"({"a":{"dtype":"F32","dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})", Errc::kCorrupt,
       8 + 20},
      {R"({"a":{"dtype":"F32","shape":[2,2],"shape":[4],"data_offsets":[0,16]}})", Errc::kCorrupt,
       8 + 34},
      {"{" + one + "," + one + "}", Errc::kCorrupt, 8 + 2 + static_cast<std::int64_t>(one.size())},
      {R"({"__metadata__":{"k":"v","k":"w"},)" + one + "}", Errc::kCorrupt, 8 + 25},
      {R"({"__metadata__":{},"__metadata__":{},)" + one + "}", Errc::kCorrupt, 8 + 19},
      {R"({"__metadata__":{"k":1},)" + one + "}", Errc::kCorrupt, 8 + 21},
      {R"({"__metadata__":["k"],)" + one + "}", Errc::kCorrupt, 8 + 16},
      // Names that look alike after decoding are the same name.
      {"{" + one + "," + entry("\\u0061", "F32", "2,2", 16, 32) + "}", Errc::kCorrupt,
       8 + 2 + static_cast<std::int64_t>(one.size())},
      // Invalid UTF-8 and escapes in names.
      {"{" + entry("a\xff", "F32", "2,2", 0, 16) + "}", Errc::kCorrupt, 8 + 3},
      {"{" + entry("\\ud800", "F32", "2,2", 0, 16) + "}", Errc::kCorrupt, 8 + 2},
      {"{" + entry("a\\q", "F32", "2,2", 0, 16) + "}", Errc::kCorrupt, 8 + 4},
      // Bad JSON around the entries; padding other than whitespace.
      {"{" + one + ",}", Errc::kCorrupt, 8 + 2 + static_cast<std::int64_t>(one.size())},
      {"{" + one, Errc::kTruncated, 8 + 1 + static_cast<std::int64_t>(one.size())},
      {"{" + one + "}" + std::string(3, '\0'), Errc::kCorrupt,
       8 + 2 + static_cast<std::int64_t>(one.size())},
      {"{" + one + "}x", Errc::kCorrupt, 8 + 2 + static_cast<std::int64_t>(one.size())},
  };
  for (const Case& c : cases) {
    CAPTURE(c.header);
    check_error(parse_status(make_file(c.header, 16)), c.code, c.index);
  }
  // Deep nesting inside an ignored field: refused at the limit, not recursed into.
  const std::string deep = R"({"a":{"x":)" + std::string(100, '[') + std::string(100, ']') +
                           R"(,"dtype":"U8","shape":[1],"data_offsets":[0,1]}})";
  check_error(parse_status(make_file(deep, 1)), Errc::kUnsupported, 8 + 10 + 62);
  const std::string shallow = R"({"a":{"x":)" + std::string(62, '[') + std::string(62, ']') +
                              R"(,"dtype":"U8","shape":[1],"data_offsets":[0,1]}})";
  CHECK(parse_status(make_file(shallow, 1)).ok());
}

TEST_CASE("safetensors: writer refuses bad input") {
  SafetensorsWriter w;
  const std::int64_t shape[] = {2, 3};
  REQUIRE(w.add_tensor("a", SafetensorsDtype::kF16, shape, 2).ok());
  CHECK(w.tensor_bytes(0) == 12);
  CHECK(w.add_tensor("a", SafetensorsDtype::kF16, shape, 2).code() == Errc::kInvalidArgument);
  CHECK(w.add_tensor("__metadata__", SafetensorsDtype::kF16, shape, 2).code() ==
        Errc::kInvalidArgument);
  CHECK(w.add_tensor("bad\xc3", SafetensorsDtype::kF16, shape, 2).code() == Errc::kInvalidArgument);
  CHECK(w.add_tensor("n", SafetensorsDtype::kF16, nullptr, 2).code() == Errc::kInvalidArgument);
  const std::int64_t negative[] = {2, -1};
  CHECK(w.add_tensor("n", SafetensorsDtype::kF16, negative, 2).code() == Errc::kInvalidArgument);
  const std::int64_t huge[] = {INT64_MAX / 2 + 1, 1};
  CHECK(w.add_tensor("h", SafetensorsDtype::kF16, huge, 2).code() == Errc::kOverflow);
  const std::int64_t product[] = {1ll << 32, 1ll << 32};
  CHECK(w.add_tensor("p", SafetensorsDtype::kU8, product, 2).code() == Errc::kOverflow);
  CHECK(w.add_metadata("k", "v").ok());
  CHECK(w.add_metadata("k", "w").code() == Errc::kInvalidArgument);
  CHECK(w.add_metadata("k2", "\xed\xa0\x80").code() == Errc::kInvalidArgument);
  CHECK(w.tensor_count() == 1);
}

TEST_CASE("safetensors: mapped and loaded files parse the same") {
  const Written w = sample(SafetensorsWriter::Order::kReference);
  char name[64];
  std::snprintf(name, sizeof name, "/tmp/lowbit_st_test_%p.safetensors",
                static_cast<const void*>(&w));
  std::FILE* file = std::fopen(name, "wb");
  REQUIRE(file != nullptr);
  FileSink sink{file};
  REQUIRE(sink.write(w.bytes.data(), w.bytes.size()).ok());
  std::fclose(file);
  for (bool map : {true, false}) {
    lowbit::Result<MappedFile> m = map ? MappedFile::open(name) : MappedFile::load(name);
    REQUIRE(m);
    CHECK(m->is_mapped() == (map && LOWBIT_IO_HAS_MMAP));
    REQUIRE(m->size() == w.bytes.size());
    CHECK(std::memcmp(m->data(), w.bytes.data(), w.bytes.size()) == 0);
    MappedFile moved = std::move(*m);
    lowbit::Result<SafetensorsFile> st = parse_safetensors(moved.bytes());
    REQUIRE(st);
    CHECK(rewrite(*st, SafetensorsWriter::Order::kReference) == w.bytes);
  }
  std::remove(name);
  CHECK(MappedFile::open(name).status().code() == lowbit::Errc::kIo);
  CHECK(MappedFile::load(name).status().code() == lowbit::Errc::kIo);
  CHECK(MappedFile::open("/").status().code() == lowbit::Errc::kIo);
  // An empty file maps to an empty span, which is a truncated safetensors file.
  file = std::fopen(name, "wb");
  REQUIRE(file != nullptr);
  std::fclose(file);
  lowbit::Result<MappedFile> empty = MappedFile::open(name);
  REQUIRE(empty);
  CHECK(empty->size() == 0);
  CHECK(parse_safetensors(empty->bytes()).status().code() == Errc::kTruncated);
  std::remove(name);
}
