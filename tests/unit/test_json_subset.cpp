// The bounded JSON pull parser behind safetensors headers: the RFC 8259 grammar, string
// decoding, integers, limits, and one specific Errc (and byte offset) for each kind of bad text.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "lowbit/detail/json_subset.hpp"

namespace {

using lowbit::Errc;
using lowbit::Status;
using lowbit::detail::JsonCursor;
using lowbit::detail::JsonLimits;
using lowbit::detail::JsonType;
using lowbit::detail::validate_json;

// The decoded string value of the whole text, or the error.
lowbit::Result<std::string> decode(std::string_view text) {
  JsonCursor c(text);
  std::string out;
  LOWBIT_TRY(c.read_string(&out));
  LOWBIT_TRY(c.finish());
  return out;
}

lowbit::Result<std::int64_t> integer(std::string_view text) {
  JsonCursor c(text);
  lowbit::Result<std::int64_t> v = c.read_integer();
  if (!v) return v;
  LOWBIT_TRY(c.finish());
  return v;
}

void check_error(const Status& s, Errc code, std::int64_t index) {
  CAPTURE(s.message());
  CHECK(s.code() == code);
  CHECK(s.index() == index);
}

}  // namespace

TEST_CASE("json: valid texts validate") {
  const char* valid[] = {
      "{}",
      "[]",
      "0",
      "-0",
      "\"\"",
      "true",
      "false",
      "null",
      " \t\r\n{ } \n",
      R"({"a":[1,-2,3.5e+3,0.25,1E-2,-0.0e0,true,false,null,"x"],"b":{"c":{}}})",
      R"([[[]],[{}],{"":""}])",
      "\"\\u00e9\\ud83d\\ude00\\/\"",
      "\"caf\xc3\xa9 \xf0\x9f\x98\x80\"",
  };
  for (const char* text : valid) {
    CAPTURE(text);
    CHECK(validate_json(text).ok());
  }
}

TEST_CASE("json: strings decode escapes, \\u and surrogate pairs to UTF-8") {
  CHECK(*decode(R"("\"\\\/\b\f\n\r\t")") == "\"\\/\b\f\n\r\t");
  CHECK(*decode(R"("\u0041\u00e9\u20AC")") == "A\xc3\xa9\xe2\x82\xac");  // A é €
  CHECK(*decode(R"("\ud83d\ude00")") == "\xf0\x9f\x98\x80");             // U+1F600
  CHECK(*decode(R"("\uDBFF\uDFFF")") == "\xf4\x8f\xbf\xbf");             // U+10FFFF
  CHECK(*decode("\"raw \xe2\x82\xac and \xf0\x9f\x98\x80\"") ==
        "raw \xe2\x82\xac and \xf0\x9f\x98\x80");
  const lowbit::Result<std::string> nul = decode(R"("a\u0000b")");
  REQUIRE(nul);
  CHECK(*nul == std::string("a\0b", 3));
  CHECK(*decode("\"\"") == "");
}

TEST_CASE("json: malformed strings are kCorrupt at the offending byte") {
  check_error(decode(R"("\ud83d")").status(), Errc::kCorrupt, 1);  // lone high surrogate
  check_error(decode(R"("\ud83dx")").status(), Errc::kCorrupt, 1);
  check_error(decode(R"("\ud83d\u0041")").status(), Errc::kCorrupt, 1);  // high + non-low
  check_error(decode(R"("\ud83d\ue000")").status(), Errc::kCorrupt, 1);
  check_error(decode(R"("\ud83d\ud83d")").status(), Errc::kCorrupt, 1);
  check_error(decode(R"("ab\ude00")").status(), Errc::kCorrupt, 3);  // lone low surrogate
  check_error(decode(R"("\u12g4")").status(), Errc::kCorrupt, 5);    // bad hex digit
  check_error(decode(R"("\x")").status(), Errc::kCorrupt, 2);        // unknown escape
  check_error(decode("\"a\tb\"").status(), Errc::kCorrupt, 2);       // raw control characters
  check_error(decode(std::string("\"ab\0\"", 5)).status(), Errc::kCorrupt, 3);
  check_error(decode("\"\x1f\"").status(), Errc::kCorrupt, 1);
  CHECK(*decode("\" ~\"") == " ~");
  CHECK(decode("\"a\x7f\"").has_value());  // DEL needs no escape
  // Invalid UTF-8: overlong, encoded surrogate, past U+10FFFF, stray continuation, cut sequence.
  check_error(decode("\"a\xc0\x80\"").status(), Errc::kCorrupt, 2);
  check_error(decode("\"\xe0\x80\xaf\"").status(), Errc::kCorrupt, 1);
  check_error(decode("\"\xed\xa0\x80\"").status(), Errc::kCorrupt, 1);
  check_error(decode("\"\xf4\x90\x80\x80\"").status(), Errc::kCorrupt, 1);
  check_error(decode("\"\xf5\x80\x80\x80\"").status(), Errc::kCorrupt, 1);
  check_error(decode("\"ab\x80\"").status(), Errc::kCorrupt, 3);
  check_error(decode("\"\xe2\x82\"").status(), Errc::kCorrupt, 1);
}

TEST_CASE("json: integers are int64; fractions, exponents and bad grammar are refused") {
  CHECK(*integer("0") == 0);
  CHECK(*integer("-0") == 0);
  CHECK(*integer(" 42 ") == 42);
  CHECK(*integer("9223372036854775807") == INT64_MAX);
  CHECK(*integer("-9223372036854775808") == INT64_MIN);
  check_error(integer("9223372036854775808").status(), Errc::kOverflow, 0);
  check_error(integer("-9223372036854775809").status(), Errc::kOverflow, 0);
  check_error(integer("  18446744073709551616").status(), Errc::kOverflow, 2);
  check_error(integer("99999999999999999999999999").status(), Errc::kOverflow, 0);
  check_error(integer("1.0").status(), Errc::kCorrupt, 0);
  check_error(integer("1e3").status(), Errc::kCorrupt, 0);
  check_error(integer("\"1\"").status(), Errc::kCorrupt, 0);
  check_error(integer("01").status(), Errc::kCorrupt, 1);
  {
    // The integer itself is refused, not just the byte after it.
    JsonCursor c("[01]");
    REQUIRE(c.begin_array().ok());
    REQUIRE(*c.next_element());
    check_error(c.read_integer().status(), Errc::kCorrupt, 2);
  }
  check_error(integer("+1").status(), Errc::kCorrupt, 0);
  check_error(integer(".5").status(), Errc::kCorrupt, 0);
  check_error(integer("-x").status(), Errc::kCorrupt, 1);
  check_error(integer("1.x").status(), Errc::kCorrupt, 2);
  check_error(integer("1e+").status(), Errc::kTruncated, 3);
  check_error(integer("-").status(), Errc::kTruncated, 1);
  check_error(integer("12 3").status(), Errc::kCorrupt, 3);
  // Big or fractional numbers are still valid JSON where no integer is required.
  CHECK(validate_json("[1e400, 123456789012345678901234567890, -0.5]").ok());
}

TEST_CASE("json: structural errors are one Errc at the offending byte") {
  struct Case {
    const char* text;
    Errc code;
    std::int64_t index;
  };
  const Case cases[] = {
      {"[1,]", Errc::kCorrupt, 3},           {"{\"a\":1,}", Errc::kCorrupt, 7},
      {"{\"a\" 1}", Errc::kCorrupt, 5},      {"{a:1}", Errc::kCorrupt, 1},
      {"[1 2]", Errc::kCorrupt, 3},          {"{\"a\":1 \"b\":2}", Errc::kCorrupt, 7},
      {"{} x", Errc::kCorrupt, 3},           {"{}{}", Errc::kCorrupt, 2},
      {"[tru]", Errc::kCorrupt, 4},          {"[,1]", Errc::kCorrupt, 1},
      {"{\"a\":}", Errc::kCorrupt, 5},       {"'a'", Errc::kCorrupt, 0},
      {"\xef\xbb\xbf{}", Errc::kCorrupt, 0},  // a byte-order mark is not JSON
      {"[1]]", Errc::kCorrupt, 3},           {"}", Errc::kCorrupt, 0},
      {"nul", Errc::kTruncated, 3},  // a prefix of null: the text ended
      {"[1,", Errc::kTruncated, 3},          {"{\"a\"", Errc::kTruncated, 4},
  };
  for (const Case& c : cases) {
    CAPTURE(c.text);
    check_error(validate_json(c.text), c.code, c.index);
  }
}

TEST_CASE("json: every proper prefix of a document is kTruncated at its end") {
  const std::string doc =
      R"({"a":[1,-20,{"b":"x\u00e9\ud83d\ude00\n"}],"c":true,"d":null,"e":false,"f":-1.5e-3,"g":{}})";
  REQUIRE(validate_json(doc).ok());
  for (std::size_t len = 0; len < doc.size(); ++len) {
    CAPTURE(len);
    check_error(validate_json(std::string_view(doc.data(), len)), Errc::kTruncated,
                static_cast<std::int64_t>(len));
  }
}

TEST_CASE("json: nesting is bounded without recursion, size is bounded") {
  auto nested = [](int depth) {
    return std::string(static_cast<std::size_t>(depth), '[') +
           std::string(static_cast<std::size_t>(depth), ']');
  };
  CHECK(validate_json(nested(64)).ok());
  check_error(validate_json(nested(65)), Errc::kUnsupported, 64);
  // Far deeper than any stack would survive with recursion: refused at the limit, in O(limit).
  check_error(validate_json(std::string(1000000, '[')), Errc::kUnsupported, 64);
  std::string objects;
  for (int i = 0; i < 70; ++i) objects += "{\"k\":";
  check_error(validate_json(objects), Errc::kUnsupported, 64 * 5);

  JsonLimits tight;
  tight.max_depth = 3;
  CHECK(validate_json("[[[]]]", tight).ok());
  check_error(validate_json("[[[[]]]]", tight), Errc::kUnsupported, 3);
  tight.max_bytes = 5;
  CHECK(validate_json("[1,2]", tight).ok());
  check_error(validate_json("[1,23]", tight), Errc::kUnsupported, 5);
  // A limit above the cursor's fixed state array is clamped to it.
  JsonLimits huge;
  huge.max_depth = 1 << 30;
  CHECK(validate_json(nested(lowbit::detail::kJsonDepthCap), huge).ok());
  check_error(validate_json(nested(lowbit::detail::kJsonDepthCap + 1), huge), Errc::kUnsupported,
              lowbit::detail::kJsonDepthCap);
}

TEST_CASE("json: walking a schema with the cursor") {
  const std::string text =
      R"( {"name" : "w\u0031", "shape": [2, 3], "skip": {"deep": [[{}], "x", 1.5]}, "flag": false} )";
  JsonCursor c(text);
  REQUIRE(c.begin_object().ok());
  std::string key, name;
  std::vector<std::int64_t> shape;
  bool flag = true;
  std::vector<std::size_t> key_offsets;
  for (;;) {
    lowbit::Result<bool> more = c.next_member(&key);
    REQUIRE(more);
    if (!*more) break;
    key_offsets.push_back(c.key_offset());
    if (key == "name") {
      REQUIRE(*c.peek() == JsonType::kString);
      REQUIRE(c.read_string(&name).ok());
    } else if (key == "shape") {
      REQUIRE(c.begin_array().ok());
      for (;;) {
        lowbit::Result<bool> next = c.next_element();
        REQUIRE(next);
        if (!*next) break;
        shape.push_back(*c.read_integer());
      }
    } else if (key == "flag") {
      flag = *c.read_bool();
    } else {
      REQUIRE(c.skip_value().ok());
    }
  }
  CHECK(c.finish().ok());
  CHECK(name == "w1");
  CHECK(shape == std::vector<std::int64_t>{2, 3});
  CHECK_FALSE(flag);
  CHECK(key_offsets == std::vector<std::size_t>{2, 22, 39, 75});
  CHECK(c.depth() == 0);
}

TEST_CASE("json: protocol misuse and type mismatches; errors are sticky") {
  {
    JsonCursor c("{}");
    check_error(c.next_member(nullptr).status(), Errc::kInvalidArgument, 0);
  }
  {
    JsonCursor c("{\"a\":1}");
    REQUIRE(c.begin_object().ok());
    check_error(c.next_element().status(), Errc::kInvalidArgument, 1);
    // Sticky: the first error is what every later call returns.
    check_error(c.begin_array(), Errc::kInvalidArgument, 1);
    check_error(c.finish(), Errc::kInvalidArgument, 1);
  }
  {
    JsonCursor c("[1]");
    REQUIRE(c.begin_array().ok());
    check_error(c.finish(), Errc::kInvalidArgument, 1);
  }
  check_error(JsonCursor("[]").begin_object(), Errc::kCorrupt, 0);
  check_error(JsonCursor("{}").begin_array(), Errc::kCorrupt, 0);
  check_error(JsonCursor(" 1").read_string(nullptr), Errc::kCorrupt, 1);
  check_error(JsonCursor("null").read_bool().status(), Errc::kCorrupt, 0);
  check_error(JsonCursor("true").read_null(), Errc::kCorrupt, 0);
  check_error(JsonCursor("").peek().status(), Errc::kTruncated, 0);
  check_error(JsonCursor("  ").peek().status(), Errc::kTruncated, 2);
  check_error(JsonCursor("@").peek().status(), Errc::kCorrupt, 0);
}
