// lowbit/status.hpp: errors as values, for code built with or without exceptions.
//
// lowbit throws nothing. Every function that can fail on its input returns a `Status` or a
// `Result<T>`, both [[nodiscard]]:
//
//   lowbit::Result<lowbit::QuantParams> p = W4::compute_params(weights);
//   if (!p) return p.status();          // e.g. {Errc::kNonFinite, "input is NaN or Inf", index 8191}
//   use(*p);
//
// A Status never allocates: its message is a string literal with static storage, and the offending
// element index or byte offset travels beside it as an integer. This keeps Status trivially copyable
// and usable on the error path of a server that must not allocate after a failure.
//
// Misuse that the caller could have avoided by reading the contract (calling value() on an error)
// is not input validation: it traps, even in release builds, instead of returning garbage.
#pragma once

#include <cstdint>
#include <new>
#include <type_traits>
#include <utility>

#include "lowbit/detail/assert.hpp"

namespace lowbit {

// Canonical error codes. Each names what is wrong with the input, not where it was detected.
enum class Errc : std::uint8_t {
  kOk = 0,
  kInvalidArgument,   // a parameter outside its documented domain (negative size, bad axis, ...)
  kEmpty,             // a tensor with zero elements where data is required
  kShapeMismatch,     // two shapes that must agree do not
  kIndivisible,       // a group or block size does not divide the dimension it tiles
  kNonFinite,         // NaN or Inf in data that must be finite
  kOutOfRange,        // a finite value whose magnitude the format cannot represent
  kNotCalibrated,     // parameters requested before any data was observed
  kNumericalIssue,    // an algorithm failed numerically (e.g. a Cholesky factorisation)
  kTruncated,         // a file or buffer ends before the data it announces
  kCorrupt,           // a file or buffer contradicts itself (bad offsets, lengths, magic)
  kUnsupported,       // a valid request lowbit does not implement (unknown type, version)
  kOverflow,          // a size computation would overflow 64 bits
  kIo,                // the operating system refused a read, write or map
};

// A printable name for each code, for logs and test failure messages.
constexpr const char* errc_name(Errc code) noexcept {
  switch (code) {
    case Errc::kOk: return "ok";
    case Errc::kInvalidArgument: return "invalid argument";
    case Errc::kEmpty: return "empty";
    case Errc::kShapeMismatch: return "shape mismatch";
    case Errc::kIndivisible: return "indivisible";
    case Errc::kNonFinite: return "non-finite";
    case Errc::kOutOfRange: return "out of range";
    case Errc::kNotCalibrated: return "not calibrated";
    case Errc::kNumericalIssue: return "numerical issue";
    case Errc::kTruncated: return "truncated";
    case Errc::kCorrupt: return "corrupt";
    case Errc::kUnsupported: return "unsupported";
    case Errc::kOverflow: return "overflow";
    case Errc::kIo: return "i/o error";
  }
  return "unknown";
}

class [[nodiscard]] Status {
 public:
  // -1 says "no index applies"; otherwise the flat element index or byte offset of the culprit.
  static constexpr std::int64_t kNoIndex = -1;

  constexpr Status() noexcept = default;
  // `message` must have static storage duration: Status keeps the pointer, never a copy.
  constexpr Status(Errc code, const char* message, std::int64_t index = kNoIndex) noexcept
      : code_(code), message_(message), index_(index) {}

  static constexpr Status ok_status() noexcept { return Status(); }

  constexpr bool ok() const noexcept { return code_ == Errc::kOk; }
  constexpr explicit operator bool() const noexcept { return ok(); }
  constexpr Errc code() const noexcept { return code_; }
  constexpr const char* message() const noexcept { return message_; }
  constexpr std::int64_t index() const noexcept { return index_; }

 private:
  Errc code_ = Errc::kOk;
  const char* message_ = "ok";
  std::int64_t index_ = kNoIndex;
};

static_assert(std::is_trivially_copyable<Status>::value, "Status must stay trivially copyable");

// A value or the Status saying why there is none. Modelled on std::expected (C++23), reduced to
// what lowbit needs, and without exceptions: value() on an error traps.
template <class T>
class [[nodiscard]] Result {
  static_assert(!std::is_reference<T>::value, "Result<T>: T must not be a reference");
  static_assert(!std::is_same<std::decay_t<T>, Status>::value,
                "Result<Status> is meaningless: return a Status");

 public:
  using value_type = T;

  // Implicit from a value and from an error Status, so `return value;` and `return status;` work.
  Result(const T& value) : status_(), has_value_(true) { new (&storage_) T(value); }
  Result(T&& value) noexcept(std::is_nothrow_move_constructible<T>::value)
      : status_(), has_value_(true) {
    new (&storage_) T(std::move(value));
  }
  Result(Status status) noexcept : status_(status), has_value_(false) {
    // An ok Status carries no value; turning it into a Result is a caller bug, caught here.
    LOWBIT_CHECK(!status.ok(), "Result<T> constructed from an ok Status without a value");
  }

  Result(const Result& other) : status_(other.status_), has_value_(other.has_value_) {
    if (has_value_) new (&storage_) T(*other.ptr());
  }
  Result(Result&& other) noexcept(std::is_nothrow_move_constructible<T>::value)
      : status_(other.status_), has_value_(other.has_value_) {
    if (has_value_) new (&storage_) T(std::move(*other.ptr()));
  }
  Result& operator=(const Result& other) {
    if (this != &other) {
      reset();
      status_ = other.status_;
      if (other.has_value_) {
        new (&storage_) T(*other.ptr());
        has_value_ = true;
      }
    }
    return *this;
  }
  Result& operator=(Result&& other) noexcept(std::is_nothrow_move_constructible<T>::value) {
    if (this != &other) {
      reset();
      status_ = other.status_;
      if (other.has_value_) {
        new (&storage_) T(std::move(*other.ptr()));
        has_value_ = true;
      }
    }
    return *this;
  }
  ~Result() { reset(); }

  bool has_value() const noexcept { return has_value_; }
  explicit operator bool() const noexcept { return has_value_; }
  // The error, or an ok Status when there is a value.
  Status status() const noexcept { return status_; }

  T& value() & {
    LOWBIT_CHECK(has_value_, "Result<T>::value() called on an error; test the Result first");
    return *ptr();
  }
  const T& value() const& {
    LOWBIT_CHECK(has_value_, "Result<T>::value() called on an error; test the Result first");
    return *ptr();
  }
  T&& value() && {
    LOWBIT_CHECK(has_value_, "Result<T>::value() called on an error; test the Result first");
    return std::move(*ptr());
  }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  void reset() noexcept {
    if (has_value_) {
      ptr()->~T();
      has_value_ = false;
    }
  }
  T* ptr() noexcept { return std::launder(reinterpret_cast<T*>(&storage_)); }
  const T* ptr() const noexcept { return std::launder(reinterpret_cast<const T*>(&storage_)); }

  Status status_;
  bool has_value_;
  alignas(T) unsigned char storage_[sizeof(T)];
};

namespace detail {
inline Status status_of(const Status& s) noexcept { return s; }
template <class T>
Status status_of(const Result<T>& r) noexcept {
  return r.status();
}
}  // namespace detail

}  // namespace lowbit

// Evaluates `expr` (a Status or a Result) and returns its Status from the enclosing function when it
// is an error. The only macro in the public surface: return-on-error has no function equivalent.
#define LOWBIT_TRY(expr)                                                                \
  do {                                                                                  \
    const ::lowbit::Status lowbit_try_status_ = ::lowbit::detail::status_of((expr));    \
    if (!lowbit_try_status_.ok()) return lowbit_try_status_;                            \
  } while (false)
