// Fused weight-norm gradient + Adagrad/RMSprop/SGDM/Adam step + update clip for one weight-normalised layer,
// as an XLA CPU FFI custom call. What it computes, and why, is in cl_sweep/training/kernels/__init__.py.
//
// Per element of a member's [in, out] weight v (s = sum_in v and beta: per output unit; lr, hp: per member):
//   dv  = g - (v - s * inv_m) * beta                  the weight-norm gradient (cl_sweep.training.ops), mu = s / m
//   acc = dv * dv + acc                               Adagrad (optax.scale_by_rss)
//   acc = (1 - hp) * (dv * dv) + hp * acc             RMSprop (optax.scale_by_rms), hp = decay
//   acc = hp * acc + dv                               SGDM (optax.trace), hp = momentum; u = (-lr) * acc
//   u   = (-lr) * (rsqrt(acc + eps) * dv)             Adagrad and RMSprop; Adagrad: 0 where acc <= 0
//   v   = v + clip(u, -clip, clip)                    optax.clip, when clip > 0
// Adam (ClSweepFusedAdam: two states, mu and nu, and the bias corrections bc1 = 1 - b1^t, bc2 = 1 - b2^t
// per member, 1 without bias correction; optax.scale_by_adam with eps_root = 0):
//   mu  = (1 - b1) * dv + b1 * mu,  nu = (1 - b2) * (dv * dv) + b2 * nu   (XLA contracts the decay's product)
//   u   = (-lr) * ((mu * (1 / bc1)) / (sqrt(nu * (1 / bc2)) + eps)), then the clip as above
// (optax divides by bc1 and bc2, and XLA multiplies by their reciprocals, computed once per member:
// one division per element instead of three, which bound Adam's loop: 0.25 -> 0.20 ms per member at
// 784 x 1000 on an AMD EPYC family 25 model 17, where this is XLA's program bit for bit.)
// The arithmetic follows what XLA:CPU emits for the same optax chain operation by operation
// (same roundings, same fused multiply-adds, the same rsqrt: the hardware estimate refined by one
// Newton step) on the CPU it was written for, where the result is bit-identical to the unfused
// program; on others XLA contracts other multiply-adds and the engine proves the two agree within a
// stated tolerance before using the kernel (engine.fused_update_verified).
//
// The sparse variants (ClSweepSparse*) take x_c [B, in] and d [B, out] in place of g = x_c^T d and
// build g themselves, 8 rows at a time, from d's non-zero entries only (SparseGrad): for Top-K and
// LWTA, where 5-7 % of d is non-zero, that is a small fraction of the dense product's work, and g is
// never written to memory. Each entry of g is then a sum over the examples in a different order
// than the GEMM's, so the engine proves these too within the same tolerance
// (engine.sparse_update_verified). A d that is not sparse gives the right numbers, slowly.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#if !defined(__AVX__) || !defined(__FMA__)
#error "the fused update mirrors XLA:CPU's AVX code: build it with -march=native on a CPU with AVX and FMA"
#endif
#include <immintrin.h>

#include "parallel.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

enum Kind { kAdagrad = 0, kRmsprop = 1, kSgdm = 2 };

// XLA:CPU's f32 rsqrt on AVX targets: the 12-bit hardware estimate, one Newton-Raphson step
// h = (x*y)*y - 1, y' = (-y/2)*h + y, kept where x is +normal (or NaN); the bare estimate
// elsewhere (zero, subnormal, negative, infinite).
inline __m256 Rsqrt(__m256 x) {
  const __m256 y = _mm256_rsqrt_ps(x);
  const __m256 r2 = _mm256_mul_ps(x, y);
  const __m256 half_y = _mm256_mul_ps(y, _mm256_set1_ps(-0.5f));
  const __m256 h = _mm256_fmadd_ps(r2, y, _mm256_set1_ps(-1.0f));
  const __m256 refined = _mm256_fmadd_ps(half_y, h, y);
  // refine where x is NaN or FLT_MIN <= x < +inf: "not less than FLT_MIN" and "not +inf", both
  // true for a NaN (unordered predicates)
  const __m256 refine = _mm256_and_ps(_mm256_cmp_ps(x, _mm256_set1_ps(1.17549435e-38f), _CMP_NLT_UQ),
                                      _mm256_cmp_ps(x, _mm256_set1_ps(INFINITY), _CMP_NEQ_UQ));
  return _mm256_blendv_ps(y, refined, refine);
}

// The weight-norm gradient dv = g - (v - s * inv_m) * beta of 8 elements. XLA fuses the mean's
// multiply into the weight-norm gradient's loop. In that loop's unrolled body (32 elements a trip)
// LLVM contracts v - s * (1/m) into one FMA; in its 8-wide remainder it does not.
template <bool kContractMean>
inline __m256 Dv8(const float* g, __m256 vv, const float* colsum, const float* beta, __m256 inv_m) {
  const __m256 centred = kContractMean ? _mm256_fnmadd_ps(_mm256_loadu_ps(colsum), inv_m, vv)
                                       : _mm256_sub_ps(vv, _mm256_mul_ps(_mm256_loadu_ps(colsum), inv_m));
  return _mm256_fnmadd_ps(centred, _mm256_loadu_ps(beta), _mm256_loadu_ps(g));
}

// v + clip(s * (-lr)) stored to v_out. llvm.maximum / llvm.minimum keep a NaN; vmaxps / vminps
// return their second operand when either is NaN, so u goes second. (Ties are between equal
// values: the clip is positive.) Without the clip, XLA contracts the learning-rate product and
// the add into one FMA.
template <bool kClip>
inline void Apply8(__m256 s, __m256 vv, __m256 neg_lr, __m256 clip, __m256 neg_clip, float* v_out) {
  if constexpr (kClip) {
    const __m256 c = _mm256_min_ps(clip, _mm256_max_ps(neg_clip, _mm256_mul_ps(s, neg_lr)));
    _mm256_storeu_ps(v_out, _mm256_add_ps(vv, c));
  } else {
    _mm256_storeu_ps(v_out, _mm256_fmadd_ps(s, neg_lr, vv));
  }
}

// Runs run(p, r0, r1) for every member p over row blocks of its [in, out] weight on the pool. Each
// element is independent: splitting rows over threads changes no result.
template <typename Run>
void ForRowBlocks(ffi::ThreadPool& pool, int64_t threads, int64_t members, int64_t in, Run run) {
  const int64_t n_blocks = std::max<int64_t>(1, std::min({threads, pool.num_threads(), in}));
  cl_sweep::ParallelFor(pool, n_blocks, [&](int64_t b) {
    for (int64_t p = 0; p < members; ++p) run(p, in * b / n_blocks, in * (b + 1) / n_blocks);
  });
}

template <int kKind, bool kClip, bool kContractMean>
inline void Update8(const float* g, const float* v, const float* acc, const float* colsum, const float* beta,
                    __m256 inv_m, __m256 neg_lr, __m256 hp, __m256 one_minus_hp, __m256 eps, __m256 clip,
                    __m256 neg_clip, float* v_out, float* acc_out) {
  const __m256 vv = _mm256_loadu_ps(v);
  const __m256 dv = Dv8<kContractMean>(g, vv, colsum, beta, inv_m);
  __m256 a, s;  // s: the update before the learning rate
  if constexpr (kKind == kAdagrad) {
    a = _mm256_fmadd_ps(dv, dv, _mm256_loadu_ps(acc));
    const __m256 inv = _mm256_and_ps(Rsqrt(_mm256_add_ps(a, eps)),
                                     _mm256_cmp_ps(a, _mm256_setzero_ps(), _CMP_GT_OQ));
    s = _mm256_mul_ps(inv, dv);
  } else if constexpr (kKind == kRmsprop) {
    a = _mm256_fmadd_ps(one_minus_hp, _mm256_mul_ps(dv, dv), _mm256_mul_ps(hp, _mm256_loadu_ps(acc)));
    s = _mm256_mul_ps(dv, Rsqrt(_mm256_add_ps(a, eps)));
  } else {  // SGDM: the momentum trace is the update
    a = _mm256_fmadd_ps(hp, _mm256_loadu_ps(acc), dv);
    s = a;
  }
  _mm256_storeu_ps(acc_out, a);
  Apply8<kClip>(s, vv, neg_lr, clip, neg_clip, v_out);
}

// One member: rows [r0, r1) of its [in, out] weight.
template <int kKind, bool kClip>
void UpdateRows(const float* g, const float* v, const float* acc, const float* colsum, const float* beta,
                float inv_m, float lr, float hp, float eps, float clip, int64_t r0, int64_t r1, int64_t out,
                float* v_out, float* acc_out) {
  const __m256 inv_m8 = _mm256_set1_ps(inv_m), neg_lr8 = _mm256_set1_ps(lr * -1.0f), hp8 = _mm256_set1_ps(hp),
               om8 = _mm256_set1_ps(1.0f - hp), eps8 = _mm256_set1_ps(eps), clip8 = _mm256_set1_ps(clip),
               neg_clip8 = _mm256_set1_ps(-clip);
  const int64_t unrolled = out - out % 32;  // out % 8 == 0 is checked by the caller
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t o = r * out;
    int64_t j = 0;
    for (; j < unrolled; j += 8)
      Update8<kKind, kClip, true>(g + o + j, v + o + j, acc + o + j, colsum + j, beta + j, inv_m8, neg_lr8, hp8,
                                  om8, eps8, clip8, neg_clip8, v_out + o + j, acc_out + o + j);
    for (; j < out; j += 8)
      Update8<kKind, kClip, false>(g + o + j, v + o + j, acc + o + j, colsum + j, beta + j, inv_m8, neg_lr8, hp8,
                                   om8, eps8, clip8, neg_clip8, v_out + o + j, acc_out + o + j);
  }
}

// The weights' shape: [members..., in, out].
struct Shape {
  int64_t in = 0, out = 0, members = 0;
};

// Checks one update's operands against the weights v: each of `like_v` (the gradient, the optimizer
// states) shaped as v, colsum and beta one row of units per member, lr one value and hp `hp_width`
// values per member, and a unit count the 8-wide loops cover. `what` names the kernel in the error.
ffi::Error CheckShapes(const char* what, const ffi::Buffer<ffi::F32>& v,
                       std::initializer_list<const ffi::Buffer<ffi::F32>*> like_v, const ffi::Buffer<ffi::F32>& colsum,
                       const ffi::Buffer<ffi::F32>& beta, const ffi::Buffer<ffi::F32>& lr,
                       const ffi::Buffer<ffi::F32>& hp, int64_t hp_width, Shape& s) {
  auto dims = v.dimensions();
  if (dims.size() < 2) return ffi::Error::InvalidArgument(std::string(what) + ": weights must be at least 2-D");
  s.in = dims[dims.size() - 2];
  s.out = dims[dims.size() - 1];
  s.members = s.in * s.out ? v.element_count() / (s.in * s.out) : 0;
  bool ok = lr.element_count() == s.members && hp.element_count() == hp_width * s.members &&
            colsum.element_count() == s.members * s.out && beta.element_count() == s.members * s.out;
  for (const auto* b : like_v) ok = ok && b->element_count() == v.element_count();
  if (!ok) return ffi::Error::InvalidArgument(std::string(what) + ": operand shapes do not match the weights");
  if (s.out % 8 != 0)
    return ffi::Error::InvalidArgument(std::string(what) + ": the number of units must be a multiple of 8");
  return ffi::Error::Success();
}

template <int kKind>
ffi::Error FusedUpdateImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> g, ffi::Buffer<ffi::F32> v,
                           ffi::Buffer<ffi::F32> acc, ffi::Buffer<ffi::F32> colsum, ffi::Buffer<ffi::F32> beta,
                           ffi::Buffer<ffi::F32> lr, ffi::Buffer<ffi::F32> hp,
                           ffi::ResultBuffer<ffi::F32> v_out, ffi::ResultBuffer<ffi::F32> acc_out,
                           float inv_m, float eps, float clip, int64_t threads) {
  Shape sh;
  if (auto e = CheckShapes("fused_update", v, {&g, &acc}, colsum, beta, lr, hp, 1, sh); e.failure()) return e;
  const int64_t in = sh.in, out = sh.out, members = sh.members;
  auto rows = clip > 0.0f ? UpdateRows<kKind, true> : UpdateRows<kKind, false>;
  auto run = [&](int64_t p, int64_t r0, int64_t r1) {
    const int64_t base = p * in * out;
    rows(g.typed_data() + base, v.typed_data() + base, acc.typed_data() + base, colsum.typed_data() + p * out,
         beta.typed_data() + p * out, inv_m, lr.typed_data()[p], hp.typed_data()[p], eps, clip, r0, r1, out,
         v_out->typed_data() + base, acc_out->typed_data() + base);
  };
  ForRowBlocks(pool, threads, members, in, run);
  return ffi::Error::Success();
}

// Adam, one member: rows [r0, r1) of its [in, out] weight (the same centring and clip as Update8).
template <bool kClip, bool kContractMean>
inline void Adam8(const float* g, const float* v, const float* mu, const float* nu, const float* colsum,
                  const float* beta, __m256 inv_m, __m256 neg_lr, __m256 b1, __m256 om_b1, __m256 b2, __m256 om_b2,
                  __m256 bc1, __m256 bc2, __m256 eps, __m256 clip, __m256 neg_clip, float* v_out, float* mu_out,
                  float* nu_out) {
  const __m256 vv = _mm256_loadu_ps(v);
  const __m256 dv = Dv8<kContractMean>(g, vv, colsum, beta, inv_m);
  const __m256 m = _mm256_fmadd_ps(b1, _mm256_loadu_ps(mu), _mm256_mul_ps(om_b1, dv));
  const __m256 n = _mm256_fmadd_ps(b2, _mm256_loadu_ps(nu), _mm256_mul_ps(om_b2, _mm256_mul_ps(dv, dv)));
  _mm256_storeu_ps(mu_out, m);
  _mm256_storeu_ps(nu_out, n);
  // bc1, bc2 arrive as their reciprocals: one division per element instead of three
  const __m256 denom = _mm256_add_ps(_mm256_sqrt_ps(_mm256_mul_ps(n, bc2)), eps);
  const __m256 s = _mm256_div_ps(_mm256_mul_ps(m, bc1), denom);
  Apply8<kClip>(s, vv, neg_lr, clip, neg_clip, v_out);
}

template <bool kClip>
void AdamRows(const float* g, const float* v, const float* mu, const float* nu, const float* colsum, const float* beta,
              float inv_m, float lr, float b1, float b2, float bc1, float bc2, float eps, float clip, int64_t r0,
              int64_t r1, int64_t out, float* v_out, float* mu_out, float* nu_out) {
  const __m256 inv_m8 = _mm256_set1_ps(inv_m), neg_lr8 = _mm256_set1_ps(lr * -1.0f), b18 = _mm256_set1_ps(b1),
               om_b18 = _mm256_set1_ps(1.0f - b1), b28 = _mm256_set1_ps(b2), om_b28 = _mm256_set1_ps(1.0f - b2),
               bc18 = _mm256_set1_ps(1.0f / bc1), bc28 = _mm256_set1_ps(1.0f / bc2), eps8 = _mm256_set1_ps(eps),
               clip8 = _mm256_set1_ps(clip), neg_clip8 = _mm256_set1_ps(-clip);
  const int64_t unrolled = out - out % 32;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t o = r * out;
    int64_t j = 0;
    for (; j < unrolled; j += 8)
      Adam8<kClip, true>(g + o + j, v + o + j, mu + o + j, nu + o + j, colsum + j, beta + j, inv_m8, neg_lr8, b18,
                         om_b18, b28, om_b28, bc18, bc28, eps8, clip8, neg_clip8, v_out + o + j, mu_out + o + j,
                         nu_out + o + j);
    for (; j < out; j += 8)
      Adam8<kClip, false>(g + o + j, v + o + j, mu + o + j, nu + o + j, colsum + j, beta + j, inv_m8, neg_lr8, b18,
                          om_b18, b28, om_b28, bc18, bc28, eps8, clip8, neg_clip8, v_out + o + j, mu_out + o + j,
                          nu_out + o + j);
  }
}

// hp: [members, 4] rows of (b1, b2, bc1, bc2).
ffi::Error FusedAdamImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> g, ffi::Buffer<ffi::F32> v,
                         ffi::Buffer<ffi::F32> mu, ffi::Buffer<ffi::F32> nu, ffi::Buffer<ffi::F32> colsum,
                         ffi::Buffer<ffi::F32> beta, ffi::Buffer<ffi::F32> lr, ffi::Buffer<ffi::F32> hp,
                         ffi::ResultBuffer<ffi::F32> v_out, ffi::ResultBuffer<ffi::F32> mu_out,
                         ffi::ResultBuffer<ffi::F32> nu_out, float inv_m, float eps, float clip, int64_t threads) {
  Shape sh;
  if (auto e = CheckShapes("fused_adam", v, {&g, &mu, &nu}, colsum, beta, lr, hp, 4, sh); e.failure()) return e;
  const int64_t in = sh.in, out = sh.out, members = sh.members;
  auto rows = clip > 0.0f ? AdamRows<true> : AdamRows<false>;
  auto run = [&](int64_t p, int64_t r0, int64_t r1) {
    const int64_t base = p * in * out;
    const float* h = hp.typed_data() + 4 * p;
    rows(g.typed_data() + base, v.typed_data() + base, mu.typed_data() + base, nu.typed_data() + base,
         colsum.typed_data() + p * out, beta.typed_data() + p * out, inv_m, lr.typed_data()[p], h[0], h[1], h[2], h[3],
         eps, clip, r0, r1, out, v_out->typed_data() + base, mu_out->typed_data() + base, nu_out->typed_data() + base);
  };
  ForRowBlocks(pool, threads, members, in, run);
  return ffi::Error::Success();
}

// ---- The sparse weight gradient ----------------------------------------------------------------

// One member's d [batch, out] by unit: for unit j, the examples b (ascending) with d[b, j] != 0
// (a NaN counts as non-zero) and those entries.
struct SparseColumns {
  std::vector<int32_t> start;  // [out + 1]: unit j's entries are [start[j], start[j + 1])
  std::vector<int32_t> example;
  std::vector<float> value;
};

// Calls visit(b, j) for every non-zero d[b, j], b ascending, then j ascending (out % 8 == 0).
template <typename Visit>
inline void ForNonZero(const float* d, int64_t batch, int64_t out, Visit visit) {
  for (int64_t b = 0; b < batch; ++b) {
    const float* row = d + b * out;
    for (int64_t j = 0; j < out; j += 8) {
      unsigned m = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(row + j), _mm256_setzero_ps(), _CMP_NEQ_UQ));
      for (; m; m &= m - 1) visit(b, j + __builtin_ctz(m));
    }
  }
}

void BuildColumns(const float* d, int64_t batch, int64_t out, SparseColumns& c) {
  c.start.assign(out + 1, 0);
  ForNonZero(d, batch, out, [&](int64_t, int64_t j) { ++c.start[j + 1]; });
  for (int64_t j = 0; j < out; ++j) c.start[j + 1] += c.start[j];
  c.example.resize(c.start[out]);
  c.value.resize(c.start[out]);
  std::vector<int32_t> next(c.start.begin(), c.start.end() - 1);
  ForNonZero(d, batch, out, [&](int64_t b, int64_t j) {
    const int32_t k = next[j]++;
    c.example[k] = static_cast<int32_t>(b);
    c.value[k] = d[b * out + j];
  });
}

// Transposes 8 vectors in place: afterwards r[q][u] is what r[u][q] was.
inline void Transpose8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// Rows [r0, r0 + rows) of g = x_c^T d (rows <= 8) into tile [rows, out]. x_c: [batch, in]. Unit j's
// 8 entries are one register, summed over its examples in order from zero (one FMA per non-zero
// entry of d); eight units' registers are then transposed into eight rows of the tile.
void SparseGrad(const float* xc, int64_t in, const SparseColumns& c, int64_t out, int64_t r0, int64_t rows,
                float* tile) {
  alignas(32) static const int32_t kLanes[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  const __m256i mask = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kLanes + 8 - rows));
  const float* x0 = xc + r0;
  for (int64_t j = 0; j < out; j += 8) {
    __m256 r[8];
    for (int u = 0; u < 8; ++u) {
      __m256 a = _mm256_setzero_ps();
      for (int32_t k = c.start[j + u], e = c.start[j + u + 1]; k < e; ++k) {
        const float* x = x0 + static_cast<int64_t>(c.example[k]) * in;
        const __m256 xv = rows == 8 ? _mm256_loadu_ps(x) : _mm256_maskload_ps(x, mask);
        a = _mm256_fmadd_ps(_mm256_set1_ps(c.value[k]), xv, a);
      }
      r[u] = a;
    }
    Transpose8(r);
    for (int64_t q = 0; q < rows; ++q) _mm256_storeu_ps(tile + q * out + j, r[q]);
  }
}

// The sparse variants' shared part. x_c: [members, batch, in], d: [members, batch, out] (checked against
// the weights' shape). Builds each member's SparseColumns, then, over blocks of whole 8-row groups of
// every member's [in, out] weight on the pool, builds each group's rows of g into a tile and calls
// update(p, r, n, tile): member p's rows [r, r + n) (n <= 8), tile [n, out].
template <typename Update>
ffi::Error ForSparseRowGroups(ffi::ThreadPool& pool, int64_t threads, const char* what, ffi::Buffer<ffi::F32>& xc,
                              ffi::Buffer<ffi::F32>& d, const Shape& sh, Update update) {
  const int64_t in = sh.in, out = sh.out, members = sh.members;
  auto dims = d.dimensions();
  const int64_t batch = dims.size() >= 2 ? dims[dims.size() - 2] : 0;
  if (dims.size() < 2 || dims[dims.size() - 1] != out || xc.element_count() != members * batch * in ||
      d.element_count() != members * batch * out)
    return ffi::Error::InvalidArgument(std::string(what) + ": x_c and d do not match the weights");
  std::vector<SparseColumns> cols(members);
  for (int64_t p = 0; p < members; ++p) BuildColumns(d.typed_data() + p * batch * out, batch, out, cols[p]);
  const int64_t groups = (in + 7) / 8;
  const int64_t n_blocks = std::max<int64_t>(1, std::min({threads, pool.num_threads(), groups}));
  cl_sweep::ParallelFor(pool, n_blocks, [&](int64_t b) {
    std::vector<float> tile(8 * out);
    const int64_t r0 = std::min(in, 8 * (groups * b / n_blocks)), r1 = std::min(in, 8 * (groups * (b + 1) / n_blocks));
    for (int64_t p = 0; p < members; ++p) {
      for (int64_t r = r0; r < r1; r += 8) {
        const int64_t n = std::min<int64_t>(8, r1 - r);
        SparseGrad(xc.typed_data() + p * batch * in, in, cols[p], out, r, n, tile.data());
        update(p, r, n, tile.data());
      }
    }
  });
  return ffi::Error::Success();
}

// The sparse variants: g built by SparseGrad 8 rows at a time, then the same row updates as above
// (on the tile's rows: every weight-shaped pointer offset to the group's first row).
template <int kKind>
ffi::Error SparseUpdateImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> xc, ffi::Buffer<ffi::F32> d,
                            ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::F32> acc, ffi::Buffer<ffi::F32> colsum,
                            ffi::Buffer<ffi::F32> beta, ffi::Buffer<ffi::F32> lr, ffi::Buffer<ffi::F32> hp,
                            ffi::ResultBuffer<ffi::F32> v_out, ffi::ResultBuffer<ffi::F32> acc_out, float inv_m,
                            float eps, float clip, int64_t threads) {
  Shape sh;
  if (auto e = CheckShapes("sparse_update", v, {&acc}, colsum, beta, lr, hp, 1, sh); e.failure()) return e;
  auto rows = clip > 0.0f ? UpdateRows<kKind, true> : UpdateRows<kKind, false>;
  const int64_t out = sh.out;
  return ForSparseRowGroups(pool, threads, "sparse_update", xc, d, sh, [&](int64_t p, int64_t r, int64_t n, const float* tile) {
    const int64_t o = (p * sh.in + r) * out;
    rows(tile, v.typed_data() + o, acc.typed_data() + o, colsum.typed_data() + p * out, beta.typed_data() + p * out,
         inv_m, lr.typed_data()[p], hp.typed_data()[p], eps, clip, 0, n, out, v_out->typed_data() + o,
         acc_out->typed_data() + o);
  });
}

ffi::Error SparseAdamImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> xc, ffi::Buffer<ffi::F32> d,
                          ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::F32> mu, ffi::Buffer<ffi::F32> nu,
                          ffi::Buffer<ffi::F32> colsum, ffi::Buffer<ffi::F32> beta, ffi::Buffer<ffi::F32> lr,
                          ffi::Buffer<ffi::F32> hp, ffi::ResultBuffer<ffi::F32> v_out, ffi::ResultBuffer<ffi::F32> mu_out,
                          ffi::ResultBuffer<ffi::F32> nu_out, float inv_m, float eps, float clip, int64_t threads) {
  Shape sh;
  if (auto e = CheckShapes("sparse_adam", v, {&mu, &nu}, colsum, beta, lr, hp, 4, sh); e.failure()) return e;
  auto rows = clip > 0.0f ? AdamRows<true> : AdamRows<false>;
  const int64_t out = sh.out;
  return ForSparseRowGroups(pool, threads, "sparse_adam", xc, d, sh, [&](int64_t p, int64_t r, int64_t n, const float* tile) {
    const int64_t o = (p * sh.in + r) * out;
    const float* h = hp.typed_data() + 4 * p;
    rows(tile, v.typed_data() + o, mu.typed_data() + o, nu.typed_data() + o, colsum.typed_data() + p * out,
         beta.typed_data() + p * out, inv_m, lr.typed_data()[p], h[0], h[1], h[2], h[3], eps, clip, 0, n, out,
         v_out->typed_data() + o, mu_out->typed_data() + o, nu_out->typed_data() + o);
  });
}

// The FFI binding of an update: the thread pool, kArgs float32 buffers, kRets float32 results, and the
// attributes every update takes.
template <int kArgs, int kRets, typename Binding>
auto UpdateBinding(Binding b) {
  if constexpr (kArgs > 0) {
    return UpdateBinding<kArgs - 1, kRets>(std::move(b).template Arg<ffi::Buffer<ffi::F32>>());
  } else if constexpr (kRets > 0) {
    return UpdateBinding<0, kRets - 1>(std::move(b).template Ret<ffi::Buffer<ffi::F32>>());
  } else {
    return std::move(b).template Attr<float>("inv_m").template Attr<float>("eps").template Attr<float>("clip").template Attr<int64_t>(
        "threads");
  }
}

template <int kArgs, int kRets>
auto UpdateBinding() {
  return UpdateBinding<kArgs, kRets>(ffi::Ffi::Bind().Ctx<ffi::ThreadPool>());
}

}  // namespace

// Dense: g, v, the state(s), colsum, beta, lr, hp -> v and the state(s). Sparse: x_c and d in place of g.
XLA_FFI_DEFINE_HANDLER_SYMBOL(ClSweepFusedAdagrad, FusedUpdateImpl<kAdagrad>, (UpdateBinding<7, 2>()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(ClSweepFusedRmsprop, FusedUpdateImpl<kRmsprop>, (UpdateBinding<7, 2>()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(ClSweepFusedSgdm, FusedUpdateImpl<kSgdm>, (UpdateBinding<7, 2>()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(ClSweepFusedAdam, FusedAdamImpl, (UpdateBinding<8, 3>()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(ClSweepSparseAdagrad, SparseUpdateImpl<kAdagrad>, (UpdateBinding<8, 2>()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(ClSweepSparseRmsprop, SparseUpdateImpl<kRmsprop>, (UpdateBinding<8, 2>()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(ClSweepSparseSgdm, SparseUpdateImpl<kSgdm>, (UpdateBinding<8, 2>()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(ClSweepSparseAdam, SparseAdamImpl, (UpdateBinding<9, 3>()));
