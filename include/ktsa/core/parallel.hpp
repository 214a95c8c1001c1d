// ktsa/core/parallel.hpp: a fixed-partition parallel loop over [0, n).
//
// The range is cut into `threads` contiguous chunks of (almost) equal size;
// chunk 0 runs on the calling thread. Each index is handled by exactly one
// chunk, so per-index results never depend on the thread count. If bodies
// throw, the exception of the lowest-numbered chunk is rethrown, which is the
// error at the lowest index when each chunk stops at its first error: the
// reported error does not depend on the thread count either.
//
// A worker that cannot start (std::thread throws, e.g. exec::host{2000} under
// an address-space limit) is not an error: its chunk, and every later one, run
// on the calling thread after chunk 0, so the results are the same as with all
// threads (the partition does not change), only slower. Threads that did start
// are always joined.
#pragma once

#include <algorithm>
#include <atomic>
#include <exception>
#include <thread>
#include <vector>

#include "ktsa/core/exec.hpp"
#include "ktsa/core/view.hpp"

namespace ktsa::detail {

/// Test hook: called before each worker thread is started with the chunk
/// index; returning false makes that start fail as if std::thread had thrown.
/// nullptr (the default) starts every thread.
using thread_start_hook_fn = bool (*)(index_t chunk);
inline std::atomic<thread_start_hook_fn>& thread_start_hook() {
  static std::atomic<thread_start_hook_fn> hook{nullptr};
  return hook;
}

/// Calls body(begin, end) on disjoint chunks covering [0, n). `min_per_thread`
/// keeps tiny loops on one thread, where spawning would cost more than it saves.
template <class Body>
void parallel_chunks(const exec::host& ex, index_t n, index_t min_per_thread, Body&& body) {
  if (n <= 0) return;
  const index_t by_size = std::max<index_t>(1, n / std::max<index_t>(1, min_per_thread));
  const index_t threads = std::min<index_t>(ex.resolved_threads(), std::min(n, by_size));
  if (threads <= 1) {
    body(index_t{0}, n);
    return;
  }
  std::vector<std::exception_ptr> errors(static_cast<size_t>(threads));
  std::vector<std::thread> workers;
  workers.reserve(static_cast<size_t>(threads - 1));
  auto run_chunk = [&](index_t c) {
    const index_t begin = n * c / threads, end = n * (c + 1) / threads;
    try {
      body(begin, end);
    } catch (...) {
      errors[static_cast<size_t>(c)] = std::current_exception();
    }
  };
  // Chunks [1, started] run on workers; the rest, if a start fails, here.
  index_t started = 0;
  for (index_t c = 1; c < threads; ++c) {
    const thread_start_hook_fn hook = thread_start_hook().load(std::memory_order_relaxed);
    if (hook != nullptr && !hook(c)) break;
    try {
      workers.emplace_back(run_chunk, c);
    } catch (...) {  // std::system_error (resources) or std::bad_alloc
      break;
    }
    started = c;
  }
  run_chunk(0);
  for (index_t c = started + 1; c < threads; ++c) run_chunk(c);
  for (auto& w : workers) w.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace ktsa::detail
