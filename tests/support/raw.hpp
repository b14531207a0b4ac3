// tests/support/raw.hpp: loading headerless binary reference files inside doctest cases.
//
// The ggml oracles are raw little-endian dumps: `.f32` files are float32 arrays, `.bin` files are
// rows of blocks. Paths are relative to tests/data (LOWBIT_TEST_DATA_DIR); a file that does not
// open, or a .f32 file whose size is not a multiple of 4, fails the current test case.
#pragma once

#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#ifndef LOWBIT_TEST_DATA_DIR
#error "LOWBIT_TEST_DATA_DIR must name the tests/data directory"
#endif

namespace lowbit_test {

// Every byte of tests/data/<relative>.
inline std::vector<std::uint8_t> load_bytes(const std::string& relative) {
  const std::string path = std::string(LOWBIT_TEST_DATA_DIR) + "/" + relative;
  std::ifstream file(path, std::ios::binary);
  INFO("opening ", path);
  REQUIRE(file.good());
  return std::vector<std::uint8_t>(std::istreambuf_iterator<char>(file),
                                   std::istreambuf_iterator<char>());
}

// tests/data/<relative> as float32 values (host byte order, little-endian on every target we run).
inline std::vector<float> load_f32(const std::string& relative) {
  const std::vector<std::uint8_t> bytes = load_bytes(relative);
  INFO("reading ", relative, " as float32");
  REQUIRE(bytes.size() % sizeof(float) == 0);
  std::vector<float> values(bytes.size() / sizeof(float));
  if (!bytes.empty()) std::memcpy(values.data(), bytes.data(), bytes.size());
  return values;
}

}  // namespace lowbit_test
