// lowbit/io/mapped_file.hpp: the bytes a file reader parses, from a memory map or from the caller.
//
// The GGUF and safetensors readers (io/gguf.hpp, io/safetensors.hpp) parse a ByteSpan: a pointer
// and a length the caller guarantees readable. The tensors they return are views into those
// bytes, so a model file is used in place: map it, parse it, hand the views to the kernels, and
// keep the MappedFile alive as long as any view. Tests and fuzzers pass spans of their own buffers
// through exactly the same code.
//
// MappedFile::open maps a file read-only (POSIX mmap, MAP_PRIVATE). Pages are read on first
// touch, so parsing the header of a 10 GB model reads a few kilobytes. Where mmap does not exist
// it falls back to MappedFile::load, which reads the whole file into memory (also available
// everywhere, for files on a pipe or a file system that cannot map). A mapped file that another
// process truncates under us raises SIGBUS on the next touch of a lost page; no parser can
// prevent that, so map only files you do not expect to change.
//
// Failures are values: kIo when the system refuses to open, stat, map or read (or the path is not
// a regular file), kOverflow when the file is larger than the address space.
//
// The writers go the other way through a Sink, any type with
// `Status write(const std::uint8_t*, std::size_t)`: VectorSink appends to a std::vector,
// FileSink writes to a stdio stream (a short write is kIo); your own can hash, compress or send.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "lowbit/status.hpp"

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#define LOWBIT_IO_HAS_MMAP 1
#else
#define LOWBIT_IO_HAS_MMAP 0
#endif

namespace lowbit {
namespace detail {

// Little-endian loads and stores of unsigned integers on any host (both file formats are
// little-endian). Byte by byte, so unaligned addresses are fine; compilers fuse the loop.
template <class T>
inline T le_load(const std::uint8_t* p) noexcept {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < sizeof(T); ++i) v |= static_cast<std::uint64_t>(p[i]) << (8 * i);
  return static_cast<T>(v);
}
template <class T>
inline void le_store(std::uint8_t* p, T value) noexcept {
  const std::uint64_t v = static_cast<std::uint64_t>(value);
  for (std::size_t i = 0; i < sizeof(T); ++i) p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}

}  // namespace detail

namespace io {

// Read-only bytes owned by someone else: [data, data + size).
struct ByteSpan {
  const std::uint8_t* data = nullptr;
  std::size_t size = 0;

  constexpr ByteSpan() noexcept = default;
  constexpr ByteSpan(const std::uint8_t* bytes, std::size_t count) noexcept
      : data(bytes), size(count) {}
  ByteSpan(const std::vector<std::uint8_t>& bytes) noexcept
      : data(bytes.data()), size(bytes.size()) {}

  constexpr bool empty() const noexcept { return size == 0; }
  constexpr const std::uint8_t* begin() const noexcept { return data; }
  constexpr const std::uint8_t* end() const noexcept { return data + size; }
};

// Writers emit through a Sink: any type with `Status write(const std::uint8_t*, std::size_t)`.
// Appends bytes to a vector.
struct VectorSink {
  std::vector<std::uint8_t>* out;
  Status write(const std::uint8_t* data, std::size_t n) {
    out->insert(out->end(), data, data + n);
    return {};
  }
};

// Writes to a stdio stream; a short write is kIo.
struct FileSink {
  std::FILE* file;
  Status write(const std::uint8_t* data, std::size_t n) noexcept {
    if (n != 0 && std::fwrite(data, 1, n, file) != n)
      return Status(Errc::kIo, "file sink: write failed");
    return {};
  }
};

// The bytes of a file, mapped or loaded; move-only, releases them on destruction.
class MappedFile {
 public:
  // Maps `path` read-only (POSIX), or loads it where mmap does not exist.
  static Result<MappedFile> open(const std::string& path) {
#if LOWBIT_IO_HAS_MMAP
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return Status(Errc::kIo, "mapped file: cannot open for reading");
    struct stat st;
    if (::fstat(fd, &st) != 0) {
      ::close(fd);
      return Status(Errc::kIo, "mapped file: cannot stat");
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      return Status(Errc::kIo, "mapped file: not a regular file");
    }
    if (st.st_size < 0 ||
        static_cast<std::uint64_t>(st.st_size) > std::numeric_limits<std::size_t>::max()) {
      ::close(fd);
      return Status(Errc::kOverflow, "mapped file: larger than the address space");
    }
    MappedFile file;
    file.size_ = static_cast<std::size_t>(st.st_size);
    if (file.size_ == 0) {  // mmap refuses length 0; an empty file is an empty span
      ::close(fd);
      return file;
    }
    void* base = ::mmap(nullptr, file.size_, PROT_READ, MAP_PRIVATE, fd, 0);
    ::close(fd);  // the mapping keeps its own reference to the file
    if (base == MAP_FAILED) return Status(Errc::kIo, "mapped file: mmap failed");
    file.map_ = base;
    file.data_ = static_cast<const std::uint8_t*>(base);
    return file;
#else
    return load(path);
#endif
  }

  // Reads all of `path` into memory owned by the returned object.
  static Result<MappedFile> load(const std::string& path) {
    std::FILE* f = std::fopen(path.c_str(), "rb");
    if (f == nullptr) return Status(Errc::kIo, "mapped file: cannot open for reading");
    MappedFile file;
    // Chunks rather than a size from the file system: works on pipes, and a file that grows or
    // shrinks while we read cannot make us trust a stale length.
    constexpr std::size_t kChunk = 1 << 16;
    for (;;) {
      const std::size_t old = file.owned_.size();
      file.owned_.resize(old + kChunk);
      const std::size_t got = std::fread(file.owned_.data() + old, 1, kChunk, f);
      file.owned_.resize(old + got);
      if (got < kChunk) break;
    }
    const bool failed = std::ferror(f) != 0;
    std::fclose(f);
    if (failed) return Status(Errc::kIo, "mapped file: read failed");
    file.owned_.shrink_to_fit();
    file.data_ = file.owned_.data();
    file.size_ = file.owned_.size();
    return file;
  }

  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  MappedFile(MappedFile&& other) noexcept { take(other); }
  MappedFile& operator=(MappedFile&& other) noexcept {
    if (this != &other) {
      release();
      take(other);
    }
    return *this;
  }
  ~MappedFile() { release(); }

  const std::uint8_t* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  ByteSpan bytes() const noexcept { return ByteSpan(data_, size_); }
  // True when the bytes are a memory map (open() on POSIX), false when they were read.
  bool is_mapped() const noexcept { return map_ != nullptr; }

 private:
  MappedFile() = default;

  void take(MappedFile& other) noexcept {
    owned_ = std::move(other.owned_);
    map_ = other.map_;
    size_ = other.size_;
    data_ = map_ != nullptr ? static_cast<const std::uint8_t*>(map_) : owned_.data();
    other.map_ = nullptr;
    other.data_ = nullptr;
    other.size_ = 0;
  }
  void release() noexcept {
#if LOWBIT_IO_HAS_MMAP
    if (map_ != nullptr) ::munmap(map_, size_);
#endif
    map_ = nullptr;
    data_ = nullptr;
    size_ = 0;
    owned_.clear();
  }

  const std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
  void* map_ = nullptr;
  std::vector<std::uint8_t> owned_;
};

}  // namespace io
}  // namespace lowbit
