// Splitting a kernel's independent work over XLA's intra-op thread pool.
#ifndef CL_SWEEP_KERNELS_PARALLEL_H_
#define CL_SWEEP_KERNELS_PARALLEL_H_

#include <atomic>
#include <cstdint>
#include <memory>

#include "xla/ffi/api/ffi.h"

namespace cl_sweep {

// Runs work(b) for every block b in [0, n_blocks), on this thread and on helpers from XLA's pool.
// Blocks are claimed from a shared counter, so this thread never waits for a helper that has not
// started (it takes that block itself): a busy pool costs speed, never a deadlock. A helper that
// starts late finds nothing left and touches nothing of the finished call.
template <typename Work>
void ParallelFor(xla::ffi::ThreadPool& pool, int64_t n_blocks, const Work& work) {
  struct Shared {
    std::atomic<int64_t> next{0}, done{0};
  };
  auto shared = std::make_shared<Shared>();
  auto claim = [shared, n_blocks](const Work* w) {
    for (int64_t b; (b = shared->next.fetch_add(1)) < n_blocks;) {
      (*w)(b);
      shared->done.fetch_add(1, std::memory_order_release);
    }
  };
  for (int64_t t = 1; t < n_blocks; ++t) pool.Schedule([claim, &work] { claim(&work); });
  claim(&work);
  while (shared->done.load(std::memory_order_acquire) < n_blocks) {
  }
}

}  // namespace cl_sweep

#endif  // CL_SWEEP_KERNELS_PARALLEL_H_
