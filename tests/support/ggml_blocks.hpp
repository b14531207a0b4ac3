// Test support: ggml block arrays to and from raw bytes (the oracle files hold rows of blocks
// end to end). memcpy, because file bytes need not be aligned for the block structs.
#pragma once

#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <vector>

namespace lowbit_test {

template <class Block>
std::vector<Block> blocks_from(const std::vector<std::uint8_t>& bytes) {
  REQUIRE(bytes.size() % sizeof(Block) == 0);
  std::vector<Block> blocks(bytes.size() / sizeof(Block));
  if (!bytes.empty()) std::memcpy(blocks.data(), bytes.data(), bytes.size());
  return blocks;
}

template <class Block>
std::vector<std::uint8_t> bytes_of(const std::vector<Block>& blocks) {
  std::vector<std::uint8_t> bytes(blocks.size() * sizeof(Block));
  if (!bytes.empty()) std::memcpy(bytes.data(), blocks.data(), bytes.size());
  return bytes;
}

}  // namespace lowbit_test
