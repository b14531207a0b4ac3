// Writes the seed corpora of the fuzz targets into tests/fuzz/corpus/<target>/: small valid
// files that reach every parser path (all GGUF value types, nested arrays, every ggml and
// safetensors type, empty and scalar tensors, custom alignment, loose JSON) and a few edge cases.
// Run from the repository root after changing a format; the outputs are committed.
//
//   g++ -std=c++17 -Iinclude tests/fuzz/make_corpus.cpp -o /tmp/make_corpus && /tmp/make_corpus
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "lowbit/io/gguf.hpp"
#include "lowbit/io/safetensors.hpp"

namespace {

using namespace lowbit::io;

void check(const lowbit::Status& s, const char* what) {
  if (!s.ok()) {
    std::fprintf(stderr, "%s: %s\n", what, s.message());
    std::exit(1);
  }
}

void save(const std::string& path, const std::vector<std::uint8_t>& bytes) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) {
    std::fprintf(stderr, "cannot write %s (run from the repository root)\n", path.c_str());
    std::exit(1);
  }
  FileSink sink{f};
  check(sink.write(bytes.data(), bytes.size()), path.c_str());
  std::fclose(f);
}
void save(const std::string& path, const std::string& text) {
  save(path, std::vector<std::uint8_t>(text.begin(), text.end()));
}

std::vector<std::uint8_t> pattern(std::size_t n, unsigned seed) {
  std::vector<std::uint8_t> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::uint8_t>(i * 37 + seed * 11);
  return v;
}

// Writes a GGUF file whose tensors hold pattern bytes.
std::vector<std::uint8_t> finish_gguf(GgufWriter& w) {
  std::vector<std::vector<std::uint8_t>> data;
  std::vector<const void*> ptrs;
  for (std::size_t i = 0; i < w.tensor_count(); ++i)
    data.push_back(pattern(static_cast<std::size_t>(w.tensor_bytes(i)), static_cast<unsigned>(i)));
  for (const auto& d : data) ptrs.push_back(d.data());
  std::vector<std::uint8_t> out;
  VectorSink sink{&out};
  check(w.write(sink, ptrs.data()), "gguf write");
  check(parse_gguf(ByteSpan(out)).status(), "gguf parse");
  return out;
}

void add_tensor(GgufWriter& w, const char* name, GgmlType type, std::vector<std::int64_t> ne) {
  check(w.add_tensor(name, static_cast<std::uint32_t>(type), ne.data(),
                     static_cast<std::uint32_t>(ne.size())),
        name);
}

void gguf_corpus(const std::string& dir) {
  {  // every value type, nested arrays, two small tensors
    GgufWriter w;
    check(w.add("general.architecture", GgufValue::string("llama")), "kv");
    check(w.add("u8", GgufValue::u8(7)), "kv");
    check(w.add("i8", GgufValue::i8(-7)), "kv");
    check(w.add("u16", GgufValue::u16(700)), "kv");
    check(w.add("i16", GgufValue::i16(-700)), "kv");
    check(w.add("u32", GgufValue::u32(70000)), "kv");
    check(w.add("i32", GgufValue::i32(-70000)), "kv");
    check(w.add("f32", GgufValue::f32(1e-5f)), "kv");
    check(w.add("bool", GgufValue::boolean(true)), "kv");
    check(w.add("str", GgufValue::string("caf\xc3\xa9")), "kv");
    check(w.add("u64", GgufValue::u64(1)), "kv");
    check(w.add("i64", GgufValue::i64(-1)), "kv");
    check(w.add("f64", GgufValue::f64(10000.0)), "kv");
    GgufArrayBuilder tokens(GgufType::kString), scores(GgufType::kF32), flags(GgufType::kBool);
    for (const char* t : {"<s>",
                          "\xe2\x96\x81"
                          "a",
                          "<0x0A>"})
      check(tokens.push(GgufValue::string(t)), "arr");
    for (float s : {0.0f, -1.5f, 2.0f}) check(scores.push(GgufValue::f32(s)), "arr");
    for (bool b : {true, false}) check(flags.push(GgufValue::boolean(b)), "arr");
    check(w.add("tokenizer.ggml.tokens", tokens.value()), "kv");
    check(w.add("tokenizer.ggml.scores", scores.value()), "kv");
    check(w.add("flags", flags.value()), "kv");
    GgufArrayBuilder inner(GgufType::kString), outer(GgufType::kArray), empty(GgufType::kI64);
    check(inner.push(GgufValue::string("x")), "arr");
    check(outer.push(inner.value()), "arr");
    check(outer.push(GgufArrayBuilder(GgufType::kString).value()), "arr");
    check(w.add("nested", outer.value()), "kv");
    check(w.add("empty", empty.value()), "kv");
    add_tensor(w, "token_embd.weight", GgmlType::kF32, {4, 2});
    add_tensor(w, "blk.0.attn_q.weight", GgmlType::kQ8_0, {32, 2});
    save(dir + "/all_value_types.gguf", finish_gguf(w));
  }
  {  // one tensor of every type, smallest shape
    GgufWriter w;
    const GgmlType types[] = {
        GgmlType::kF32,     GgmlType::kF16,    GgmlType::kQ4_0,    GgmlType::kQ4_1,
        GgmlType::kQ5_0,    GgmlType::kQ5_1,   GgmlType::kQ8_0,    GgmlType::kQ8_1,
        GgmlType::kQ2_K,    GgmlType::kQ3_K,   GgmlType::kQ4_K,    GgmlType::kQ5_K,
        GgmlType::kQ6_K,    GgmlType::kQ8_K,   GgmlType::kIQ2_XXS, GgmlType::kIQ2_XS,
        GgmlType::kIQ3_XXS, GgmlType::kIQ1_S,  GgmlType::kIQ4_NL,  GgmlType::kIQ3_S,
        GgmlType::kIQ2_S,   GgmlType::kIQ4_XS, GgmlType::kI8,      GgmlType::kI16,
        GgmlType::kI32,     GgmlType::kI64,    GgmlType::kF64,     GgmlType::kIQ1_M,
        GgmlType::kBF16,    GgmlType::kTQ1_0,  GgmlType::kTQ2_0,   GgmlType::kMXFP4};
    for (GgmlType t : types) {
      const GgmlTypeInfo* info = ggml_type_info(t);
      add_tensor(w, info->name, t, {info->block_size});
    }
    save(dir + "/tensor_types.gguf", finish_gguf(w));
  }
  {  // alignment 64, empty, scalar and 4-d tensors
    GgufWriter w;
    check(w.add(kGgufAlignmentKey, GgufValue::u32(64)), "kv");
    add_tensor(w, "empty", GgmlType::kF32, {0, 3});
    add_tensor(w, "scalar", GgmlType::kF32, {});
    add_tensor(w, "four", GgmlType::kF16, {2, 1, 2, 1});
    add_tensor(w, "after_empty", GgmlType::kI8, {3});
    save(dir + "/alignment_64.gguf", finish_gguf(w));
  }
  {  // no tensors, no padding; and the same as version 2
    GgufWriter w;
    check(w.add("general.name", GgufValue::string("none")), "kv");
    std::vector<std::uint8_t> f = finish_gguf(w);
    while (f.size() > 0 && f.back() == 0)
      f.pop_back();  // ggml's reader wants no header padding here
    save(dir + "/no_tensors.gguf", f);
    f[4] = 2;
    save(dir + "/version2.gguf", f);
  }
}

std::vector<std::uint8_t> raw_safetensors(const std::string& header, std::size_t data) {
  std::vector<std::uint8_t> f(8);
  for (int i = 0; i < 8; ++i)
    f[static_cast<std::size_t>(i)] =
        static_cast<std::uint8_t>(static_cast<std::uint64_t>(header.size()) >> (8 * i));
  f.insert(f.end(), header.begin(), header.end());
  const std::vector<std::uint8_t> d = pattern(data, 3);
  f.insert(f.end(), d.begin(), d.end());
  check(parse_safetensors(ByteSpan(f)).status(), "safetensors parse");
  return f;
}

std::vector<std::uint8_t> finish_safetensors(SafetensorsWriter& w) {
  std::vector<std::vector<std::uint8_t>> data;
  std::vector<const void*> ptrs;
  for (std::size_t i = 0; i < w.tensor_count(); ++i)
    data.push_back(pattern(static_cast<std::size_t>(w.tensor_bytes(i)), static_cast<unsigned>(i)));
  for (const auto& d : data) ptrs.push_back(d.data());
  std::vector<std::uint8_t> out;
  VectorSink sink{&out};
  check(w.write(sink, ptrs.data()), "safetensors write");
  check(parse_safetensors(ByteSpan(out)).status(), "safetensors parse");
  return out;
}

void safetensors_corpus(const std::string& dir, const std::string& json_dir) {
  const std::string doc = R"({"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}})";
  save(dir + "/doc_example.safetensors", raw_safetensors(doc, 16));
  save(json_dir + "/doc_example.json", doc);
  {
    SafetensorsWriter w;
    check(w.add_metadata("format", "pt"), "meta");
    check(w.add_metadata("esc\"\\\n\x01", "\xf0\x9f\x98\x80"), "meta");
    const SafetensorsDtype all[] = {
        SafetensorsDtype::kBool,    SafetensorsDtype::kU8,      SafetensorsDtype::kI8,
        SafetensorsDtype::kF8_E5M2, SafetensorsDtype::kF8_E4M3, SafetensorsDtype::kI16,
        SafetensorsDtype::kU16,     SafetensorsDtype::kF16,     SafetensorsDtype::kBF16,
        SafetensorsDtype::kI32,     SafetensorsDtype::kU32,     SafetensorsDtype::kF32,
        SafetensorsDtype::kF64,     SafetensorsDtype::kI64,     SafetensorsDtype::kU64};
    for (SafetensorsDtype d : all) {
      const std::int64_t shape[] = {2, 1};
      check(w.add_tensor(std::string("w.") + safetensors_dtype_name(d), d, shape, 2), "tensor");
    }
    const std::int64_t empty[] = {0, 4};
    check(w.add_tensor("empty", SafetensorsDtype::kF32, empty, 2), "tensor");
    check(w.add_tensor("scalar", SafetensorsDtype::kF64, nullptr, 0), "tensor");
    const std::vector<std::uint8_t> f = finish_safetensors(w);
    save(dir + "/all_dtypes.safetensors", f);
    const std::uint64_t n = f[0] | static_cast<std::uint64_t>(f[1]) << 8;
    save(json_dir + "/all_dtypes_header.json",
         std::vector<std::uint8_t>(f.begin() + 8, f.begin() + 8 + static_cast<long>(n)));
  }
  const std::string loose =
      "{ \"__metadata__\" : { \"k\" : \"v\\u00e9\" } ,\n \"n\\u0061me\\ud83d\\ude00\" : { "
      "\"extra\" : [1.5e3, {\"x\": null}, true],"
      " \"data_offsets\" : [ 0 , 4 ], \"shape\" : [ 2 ] , \"dtype\" : \"BF16\" } }\t\r\n   ";
  save(dir + "/loose_json.safetensors", raw_safetensors(loose, 4));
  save(json_dir + "/loose.json", loose);
  save(dir + "/no_tensors.safetensors", raw_safetensors("{}      ", 0));
}

void json_corpus(const std::string& dir) {
  save(dir + "/escapes.json",
       R"(["\"\\\/\b\f\n\r\t", "\u0041\u00e9\u20ac\ud83d\ude00", "raw \u00e9 é 😀", ""])");
  save(dir + "/numbers.json",
       "[0, -0, 42, -9223372036854775808, 9223372036854775807, 1.5, -2e-3, 1E+400, 0.0]");
  save(dir + "/literals.json", "{\"t\": true, \"f\": false, \"n\": null, \"e\": {}, \"a\": []}");
  save(dir + "/nested.json", std::string(15, '[') + "{\"k\":[1]}" + std::string(15, ']'));
  save(dir + "/too_deep.json", std::string(17, '[') + std::string(17, ']'));
  save(dir + "/truncated.json", "{\"a\": [1, 2, {\"b\": \"\\ud83d");
}

}  // namespace

int main() {
  const std::string root = "tests/fuzz/corpus";
  gguf_corpus(root + "/gguf");
  safetensors_corpus(root + "/safetensors", root + "/json_subset");
  json_corpus(root + "/json_subset");
  std::printf("corpus written under %s\n", root.c_str());
  return 0;
}
