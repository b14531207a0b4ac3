// tests/support/npy.hpp: a minimal reader for the NumPy .npy files in tests/data.
//
// Support for tests and examples only (not part of lowbit's public surface): version 1.0/2.0
// headers, little-endian, C order, the dtypes the reference vectors use. Any other file yields an
// error string, which fails the test or example that loads it, loudly.
#pragma once

#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "lowbit/numeric.hpp"

namespace lowbit_test {

struct Npy {
  std::string dtype;  // e.g. "<f4", "|u1"
  std::vector<std::int64_t> shape;
  std::vector<unsigned char> bytes;
  std::string error;  // empty when the load succeeded

  std::int64_t size() const {
    std::int64_t n = 1;
    for (std::int64_t d : shape) n *= d;
    return n;
  }

  // Every element converted to T (float, double or an integer type).
  template <class T>
  std::vector<T> as() const {
    const std::int64_t n = size();
    std::vector<T> out(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) out[static_cast<std::size_t>(i)] = static_cast<T>(at(i));
    return out;
  }

  double at(std::int64_t i) const {
    const unsigned char* p = bytes.data();
    const char kind = dtype.size() >= 2 ? dtype[1] : '?';
    const std::string width = dtype.size() >= 3 ? dtype.substr(2) : "";
    auto load = [&](auto tag) {
      decltype(tag) v;
      std::memcpy(&v, p + i * static_cast<std::int64_t>(sizeof v), sizeof v);
      return v;
    };
    if (kind == 'f' && width == "4") return load(float{});
    if (kind == 'f' && width == "8") return load(double{});
    if (kind == 'f' && width == "2") return lowbit::to_float(lowbit::Half{load(std::uint16_t{})});
    if (kind == 'i' && width == "1") return load(std::int8_t{});
    if (kind == 'u' && width == "1") return load(std::uint8_t{});
    if (kind == 'i' && width == "4") return load(std::int32_t{});
    if (kind == 'i' && width == "8") return static_cast<double>(load(std::int64_t{}));
    if (kind == 'u' && width == "4") return load(std::uint32_t{});
    return 0.0;
  }
};

inline std::size_t dtype_width(const std::string& dtype) {
  return dtype.size() >= 3 ? static_cast<std::size_t>(std::stoul(dtype.substr(2))) : 0;
}

// Loads the .npy file at `path`. On failure, `error` says why and the arrays are empty.
inline Npy load_npy_file(const std::string& path) {
  Npy out;
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    out.error = "cannot open " + path;
    return out;
  }
  std::vector<unsigned char> all((std::istreambuf_iterator<char>(file)),
                                 std::istreambuf_iterator<char>());
  if (all.size() < 10 || std::memcmp(all.data(), "\x93NUMPY", 6) != 0) {
    out.error = "not an npy file";
    return out;
  }
  std::size_t header_len = 0, header_start = 0;
  if (all[6] == 1) {
    header_len = all[8] | (all[9] << 8);
    header_start = 10;
  } else {
    header_len = all[8] | (all[9] << 8) | (all[10] << 16) | (static_cast<std::size_t>(all[11]) << 24);
    header_start = 12;
  }
  const std::string header(all.begin() + header_start, all.begin() + header_start + header_len);
  auto field = [&](const std::string& key) {
    const std::size_t k = header.find("'" + key + "'");
    return k == std::string::npos ? std::string::npos : header.find(':', k) + 1;
  };
  std::size_t d = header.find('\'', field("descr")) + 1;
  out.dtype = header.substr(d, header.find('\'', d) - d);
  if (header.find("True", field("fortran_order")) == field("fortran_order") + 1) {
    out.error = "fortran order unsupported";
    return out;
  }
  std::size_t s = header.find('(', field("shape")) + 1;
  std::string dims = header.substr(s, header.find(')', s) - s);
  std::stringstream ss(dims);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.find_first_not_of(' ') != std::string::npos) out.shape.push_back(std::stoll(item));
  }
  const std::size_t payload = static_cast<std::size_t>(out.size()) * dtype_width(out.dtype);
  if (all.size() < header_start + header_len + payload) {
    out.error = "npy payload truncated";
    out.shape.clear();
    return out;
  }
  out.bytes.assign(all.begin() + header_start + header_len,
                   all.begin() + header_start + header_len + payload);
  return out;
}

}  // namespace lowbit_test
