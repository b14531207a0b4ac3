// lowbit/format/ggml/detail/k_search.hpp: the scale searches behind ggml's K-quants (internal).
//
// ggml's super-block quantizers (q2_K ... q6_K, ggml-quants.c) do not simply divide by the largest
// value: each sub-block of 16 or 32 values runs a small search for the scale (and for the
// asymmetric formats the min) that minimises a weighted error, and the per-sub-block scales are
// then themselves quantized to 4 or 6 bits by a second search. Four searches cover every type:
//
//   fit_min_scale_grid     asymmetric x ~ scale*q - m, q in [0, nmax]: tries nstep+1 trial
//                          inverse scales (nmax + rmin + k*rdelta)/(max - min) and, for the codes
//                          each one gives, solves the 2x2 weighted least-squares system for
//                          (scale, min); keeps the lowest weighted error (squared or absolute).
//                          ggml: make_qkx2_quants (reference q2_K/q4_K/q5_K) and
//                          make_qkx3_quants (importance paths); see below why one function does.
//   fit_symmetric_grid     symmetric x ~ scale*(q - nmax), q in [0, 2*nmax): 19 trial scales
//                          around nmax/max, each refit by weighted least squares
//                          scale = sum(w*x*l)/sum(w*l*l); keeps the best sum(w*x*l)^2/sum(w*l*l)
//                          (the error reduction). ggml: make_qx_quants with rmse_type 1.
//   fit_symmetric_coordinate  symmetric, weights x^2: one rounding at -nmax/max, then up to five
//                          sweeps that move single codes to where the current fit puts them
//                          whenever that raises sum(w*x*l)^2/sum(w*l*l). ggml: make_q3_quants.
//   fit_positive_scale     non-negative inputs (the sub-block scales and mins), q in [0, nmax]:
//                          9 trial scales by weighted MSE, then the coordinate sweeps above.
//                          ggml: make_qp_quants.
//
// Bit-exactness with ggml's files is the point of this header, so the float32 arithmetic keeps
// ggml's operation order exactly (a*b*c is (a*b)*c, sums run from index 0 up) and nothing may be
// contracted into an FMA: build with -ffp-contract=off (or for a target without FMA) when the
// bytes must match. Rounding is ggml's nearest_int: add 1.5*2^23 and read the low mantissa bits,
// which rounds half to even for |v| <= 2^22 - 1. It is written here on the bit pattern, so it is
// defined for any float (NaN and huge values give meaningless but deterministic integers, as in
// ggml) and never a float-to-int conversion that could overflow.
//
// Deliberate differences from ggml c392e509, none reachable with finite inputs of sane range:
//   * make_qkx2_quants and make_qkx3_quants differ only in a default for null weights that no
//     K-quant uses, so one function serves both. Its trial codes clamp the product to [0, nmax]
//     before rounding, where ggml rounds first and clamps after (later ggml versions adopted the
//     clamp-first form in make_qkx3_quants): the two agree for every product below 2^22, and the
//     clamp-first form keeps NaN and huge products out of the rounding.
//   * fit_positive_scale returns 0 where ggml computes 0/0 (NaN) when every weight is zero, which
//     only an all-zero importance block can cause; fit_symmetric_coordinate guards the same
//     division, which cannot be 0/0 once a group passed the all-zero test.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace lowbit {
namespace ggml {
namespace detail {

// ggml's threshold below which a group counts as all zero (GROUP_MAX_EPS).
constexpr float kGroupMaxEps = 1e-15f;

// ggml's nearest_int: round half to even through the 1.5*2^23 magic constant (see header).
inline int nearest_int_magic(float v) noexcept {
  const float shifted = v + 12582912.0f;
  std::uint32_t bits;
  std::memcpy(&bits, &shifted, sizeof bits);
  return static_cast<int>(bits & 0x007FFFFFu) - 0x00400000;
}

// Weighted least-squares fit of x ~ scale*L + min with L in [0, nmax] and min <= 0, by a grid of
// trial inverse scales (make_qkx2_quants / make_qkx3_quants). Writes the codes to L (n <= 32),
// stores -min (>= 0, the value ggml keeps in its "mins") to *neg_min and returns the scale.
// use_abs_error selects the weighted absolute error instead of the squared one.
inline float fit_min_scale_grid(int n, int nmax, const float* x, const float* w, std::uint8_t* L,
                                float* neg_min, float rmin, float rdelta, int nstep,
                                bool use_abs_error) noexcept {
  float lo = x[0];
  float hi = x[0];
  float sum_w = w[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < lo) lo = x[i];
    if (x[i] > hi) hi = x[i];
    sum_w += w[i];
    sum_x += w[i] * x[i];
  }
  if (lo > 0) lo = 0;  // the min is subtracted, so it never exceeds zero
  if (hi == lo) {      // a constant non-positive group: all codes 0, the min carries it
    for (int i = 0; i < n; ++i) L[i] = 0;
    *neg_min = -lo;
    return 0.0f;
  }
  const float fnmax = static_cast<float>(nmax);
  // Codes for one trial: clamp the product to [0, nmax] before rounding (see header).
  const auto code = [fnmax](float v) noexcept -> int {
    return v > 0 ? nearest_int_magic(v < fnmax ? v : fnmax) : 0;
  };
  float inv = fnmax / (hi - lo);
  float scale = 1 / inv;
  float best_error = 0;
  for (int i = 0; i < n; ++i) {
    L[i] = static_cast<std::uint8_t>(code(inv * (x[i] - lo)));
    float diff = scale * L[i] + lo - x[i];
    diff = use_abs_error ? std::fabs(diff) : diff * diff;
    best_error += w[i] * diff;
  }
  if (nstep < 1) {
    *neg_min = -lo;
    return scale;
  }
  std::uint8_t trial[32];
  for (int step = 0; step <= nstep; ++step) {
    // lo is the best min so far, as in ggml: later trials start from the improved fit.
    inv = (rmin + rdelta * static_cast<float>(step) + fnmax) / (hi - lo);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      const int l = code(inv * (x[i] - lo));
      trial[i] = static_cast<std::uint8_t>(l);
      const float fl = static_cast<float>(l);
      sum_l += w[i] * fl;
      sum_l2 += w[i] * fl * fl;
      sum_xl += w[i] * fl * x[i];
    }
    const float det = sum_w * sum_l2 - sum_l * sum_l;
    if (det > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
      if (this_min > 0) {  // a positive min is not representable: refit the scale alone
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float error = 0;
      for (int i = 0; i < n; ++i) {
        float diff = this_scale * trial[i] + this_min - x[i];
        diff = use_abs_error ? std::fabs(diff) : diff * diff;
        error += w[i] * diff;
      }
      if (error < best_error) {
        for (int i = 0; i < n; ++i) L[i] = trial[i];
        best_error = error;
        scale = this_scale;
        lo = this_min;
      }
    }
  }
  *neg_min = -lo;
  return scale;
}

// Symmetric weighted fit x ~ scale*(L - nmax), L in [0, 2*nmax) (make_qx_quants, rmse_type 1):
// weights w, or x^2 when w is null. Returns the scale (0 for an all-zero group, with L = 0).
inline float fit_symmetric_grid(int n, int nmax, const float* x, std::int8_t* L,
                                const float* w) noexcept {
  float max = 0;
  float amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {  // first of equal magnitudes wins, and its sign fixes the scale's sign
      amax = ax;
      max = x[i];
    }
  }
  if (amax < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.0f;
  }
  const float fnmax = static_cast<float>(nmax);
  const auto clamp = [nmax](int l) noexcept {
    return l < -nmax ? -nmax : (l > nmax - 1 ? nmax - 1 : l);
  };
  const auto weight = [w, x](int i) noexcept { return w != nullptr ? w[i] : x[i] * x[i]; };
  float inv = static_cast<float>(-nmax) / max;
  float sumlx = 0;
  float suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = clamp(nearest_int_magic(inv * x[i]));
    L[i] = static_cast<std::int8_t>(l + nmax);
    const float wi = weight(i);
    const float fl = static_cast<float>(l);
    sumlx += wi * x[i] * fl;
    suml2 += wi * fl * fl;
  }
  float scale = suml2 != 0 ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int step = -9; step <= 9; ++step) {
    if (step == 0) continue;
    inv = -(fnmax + 0.1f * static_cast<float>(step)) / max;
    sumlx = 0;
    suml2 = 0;
    for (int i = 0; i < n; ++i) {
      const float fl = static_cast<float>(clamp(nearest_int_magic(inv * x[i])));
      const float wi = weight(i);
      sumlx += wi * x[i] * fl;
      suml2 += wi * fl * fl;
    }
    // sumlx^2/suml2 is the error reduction of the refit scale; compare without dividing.
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i)
        L[i] = static_cast<std::int8_t>(clamp(nearest_int_magic(inv * x[i])) + nmax);
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// Symmetric fit with weights x^2 refined code by code (make_qx_quants' sibling make_q3_quants,
// do_rmse = true). L in [0, 2*nmax); returns the scale of x ~ scale*(L - nmax).
inline float fit_symmetric_coordinate(int n, int nmax, const float* x, std::int8_t* L) noexcept {
  float max = 0;
  float amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.0f;
  }
  const auto clamp = [nmax](int l) noexcept {
    return l < -nmax ? -nmax : (l > nmax - 1 ? nmax - 1 : l);
  };
  const float inv = static_cast<float>(-nmax) / max;
  float sumlx = 0;
  float suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = clamp(nearest_int_magic(inv * x[i]));
    L[i] = static_cast<std::int8_t>(l);
    const float wi = x[i] * x[i];
    const float fl = static_cast<float>(l);
    sumlx += wi * x[i] * fl;
    suml2 += wi * fl * fl;
  }
  for (int sweep = 0; sweep < 5; ++sweep) {
    int changed = 0;
    for (int i = 0; i < n; ++i) {
      // The fit without element i, then the code that fit would give it.
      const float wi = x[i] * x[i];
      const float li = static_cast<float>(L[i]);
      float slx = sumlx - wi * x[i] * li;
      if (slx > 0) {
        float sl2 = suml2 - wi * li * li;
        const int new_l = clamp(nearest_int_magic(x[i] * sl2 / slx));
        if (new_l != L[i]) {
          const float fl = static_cast<float>(new_l);
          slx += wi * x[i] * fl;
          sl2 += wi * fl * fl;
          if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = static_cast<std::int8_t>(new_l);
            sumlx = slx;
            suml2 = sl2;
            ++changed;
          }
        }
      }
    }
    if (changed == 0) break;
  }
  for (int i = 0; i < n; ++i) L[i] = static_cast<std::int8_t>(L[i] + nmax);
  return suml2 > 0 ? sumlx / suml2 : 0.0f;
}

// Quantizes non-negative values x (sub-block scales or mins) to L in [0, nmax] with weights w,
// x ~ scale*L (make_qp_quants); returns the scale (0 when max(x) is 0, with L = 0). Unlike the
// other searches there is no kGroupMaxEps threshold here at ggml c392e509 (later ggml added
// one): scales around 1e-20 still get codes, and the oracle bytes for such inputs pin that.
// Codes are kept in bytes exactly as ggml does, so a negative input (not expected from the
// searches above for finite data) wraps the same way it does there.
inline float fit_positive_scale(int n, int nmax, const float* x, std::uint8_t* L,
                                const float* w) noexcept {
  float max = 0;
  for (int i = 0; i < n; ++i) max = max > x[i] ? max : x[i];
  if (max == 0) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.0f;
  }
  const float fnmax = static_cast<float>(nmax);
  const auto cap = [nmax](int l) noexcept { return l < nmax ? l : nmax; };
  float inv = fnmax / max;
  for (int i = 0; i < n; ++i) L[i] = static_cast<std::uint8_t>(nearest_int_magic(inv * x[i]));
  const float scale = 1 / inv;
  float best_mse = 0;
  for (int i = 0; i < n; ++i) {
    const float diff = x[i] - scale * L[i];
    best_mse += w[i] * diff * diff;
  }
  for (int step = -4; step <= 4; ++step) {
    if (step == 0) continue;
    const float inv_step = (0.1f * static_cast<float>(step) + fnmax) / max;
    const float scale_step = 1 / inv_step;
    float mse = 0;
    for (int i = 0; i < n; ++i) {
      const int l = cap(nearest_int_magic(inv_step * x[i]));
      const float diff = x[i] - scale_step * static_cast<float>(l);
      mse += w[i] * diff * diff;
    }
    if (mse < best_mse) {
      best_mse = mse;
      inv = inv_step;
    }
  }
  float sumlx = 0;
  float suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = cap(nearest_int_magic(inv * x[i]));
    L[i] = static_cast<std::uint8_t>(l);
    const float fl = static_cast<float>(l);  // the sums use the integer, the sweeps the byte
    sumlx += w[i] * x[i] * fl;
    suml2 += w[i] * fl * fl;
  }
  for (int sweep = 0; sweep < 5; ++sweep) {
    int changed = 0;
    for (int i = 0; i < n; ++i) {
      const float li = static_cast<float>(L[i]);
      float slx = sumlx - w[i] * x[i] * li;
      float sl2 = suml2 - w[i] * li * li;
      if (slx > 0 && sl2 > 0) {
        const int new_l = cap(nearest_int_magic(x[i] * sl2 / slx));
        if (new_l != L[i]) {
          const float fl = static_cast<float>(new_l);
          slx += w[i] * x[i] * fl;
          sl2 += w[i] * fl * fl;
          if (slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = static_cast<std::uint8_t>(new_l);
            sumlx = slx;
            suml2 = sl2;
            ++changed;
          }
        }
      }
    }
    if (changed == 0) break;
  }
  return suml2 > 0 ? sumlx / suml2 : 0.0f;
}

}  // namespace detail
}  // namespace ggml
}  // namespace lowbit
