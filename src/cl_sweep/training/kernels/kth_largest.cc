// The k-th largest value of each row and the index lax.top_k reports for it, as an XLA CPU FFI call.
// (cl_sweep.training.ops.kth_largest documents the semantics; cl_sweep/training/kernels/__init__.py how it is built.)
//
// Exact: a radix select on order-preserving integer keys (IEEE-754 totalOrder, as lax.top_k),
// one byte at a time from the most significant, each pass over the candidates that still share
// the chosen prefix. Ties: lax.top_k ranks bitwise-equal values by lower index first, so the k-th
// element is the (k - #strictly larger)-th occurrence of the k-th value in index order.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "parallel.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

inline uint32_t OrderedKey(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  // negatives: flip all bits (larger magnitude sorts lower); non-negatives: set the sign bit
  return bits ^ ((bits >> 31) ? 0xFFFFFFFFu : 0x80000000u);
}

inline float KeyToFloat(uint32_t t) {
  const uint32_t bits = (t >> 31) ? (t ^ 0x80000000u) : ~t;
  float x;
  std::memcpy(&x, &bits, 4);
  return x;
}

// One row: the k-th largest key and the index of its k-th ranked occurrence (-1 when k is out of
// range: the value is then what the bitwise search of cl_sweep.training.ops returns, a NaN).
void SelectRow(const float* x, int64_t h, int32_t k, std::vector<uint32_t>& keys, std::vector<uint32_t>& cand,
               float* value, int32_t* index) {
  if (k < 1 || k > h) {  // the largest t with count(keys >= t) >= k: all ones for k < 1, zero for k > h
    *value = KeyToFloat(k < 1 ? 0xFFFFFFFFu : 0u);
    *index = -1;
    return;
  }
  keys.resize(h);
  for (int64_t i = 0; i < h; ++i) keys[i] = OrderedKey(x[i]);
  const uint32_t* src = keys.data();
  int64_t n = h;
  uint32_t prefix = 0;
  int64_t r = k;  // rank wanted among the current candidates
  for (int shift = 24; shift >= 0; shift -= 8) {
    uint32_t hist[256] = {};
    for (int64_t i = 0; i < n; ++i) ++hist[(src[i] >> shift) & 0xFF];
    int d = 255;
    for (; d > 0 && hist[d] < r; --d) r -= hist[d];
    prefix |= static_cast<uint32_t>(d) << shift;
    if (shift == 0) break;
    // keep the candidates with this byte (in place once they live in cand)
    cand.resize(std::max<int64_t>(cand.size(), hist[d]));
    int64_t m = 0;
    for (int64_t i = 0; i < n; ++i)
      if (((src[i] >> shift) & 0xFF) == static_cast<uint32_t>(d)) cand[m++] = src[i];
    src = cand.data();
    n = m;
  }
  *value = KeyToFloat(prefix);
  // r is now the wanted rank among the elements equal to prefix, which lax.top_k orders by index
  for (int64_t i = 0; i < h; ++i)
    if (keys[i] == prefix && --r == 0) {
      *index = static_cast<int32_t>(i);
      return;
    }
  *index = -1;  // unreachable
}

ffi::Error KthLargestImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::S32> k,
                          ffi::ResultBuffer<ffi::F32> value, ffi::ResultBuffer<ffi::S32> index, int64_t threads) {
  auto dims = x.dimensions();
  if (dims.size() == 0) return ffi::Error::InvalidArgument("kth_largest: x must have at least one dimension");
  const int64_t h = dims.back();
  const int64_t rows = h ? x.element_count() / h : 0;
  if (k.element_count() != rows || value->element_count() != rows || index->element_count() != rows)
    return ffi::Error::InvalidArgument("kth_largest: k and the outputs must have one entry per row of x");
  const float* xs = x.typed_data();
  const int32_t* ks = k.typed_data();
  float* vs = value->typed_data();
  int32_t* is = index->typed_data();
  auto run = [=](int64_t r0, int64_t r1) {
    std::vector<uint32_t> keys, cand;
    for (int64_t r = r0; r < r1; ++r) SelectRow(xs + r * h, h, ks[r], keys, cand, vs + r, is + r);
  };
  // Rows are independent: splitting them over threads changes no result.
  const int64_t n_blocks = std::max<int64_t>(1, std::min({threads, pool.num_threads(), rows / 16}));
  cl_sweep::ParallelFor(pool, n_blocks, [&](int64_t b) { run(rows * b / n_blocks, rows * (b + 1) / n_blocks); });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(ClSweepKthLargest, KthLargestImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>()
                                  .Attr<int64_t>("threads"));
