// ktsa/dist/nccl.hpp: the reducer over NCCL (link ktsa::nccl; needs <nccl.h>
// and the CUDA runtime; compiles with a host compiler).
//
// Uses the communicator and stream the caller gives; ktsa never creates or
// destroys them. The reducer concept's arrays are host arrays: each call
// copies them into a device staging buffer, runs ncclAllReduce / ncclBroadcast
// on the stream, copies back and synchronises the stream (the values are
// needed on the host: z0, delta, metrics, the sharded kernels' merges). The
// staging buffer is allocated on first use and grown when needed (cudaMalloc
// of the largest array seen so far; freed by the destructor): the one
// allocation ktsa makes here. device_all_reduce works on device arrays in
// place without copies or synchronisation.
// Not included by ktsa/ktsa.hpp. Compiled in CI; run only where a GPU is.
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "ktsa/dist/reducer.hpp"

namespace ktsa::dist {

class nccl_reducer {
 public:
  nccl_reducer(ncclComm_t comm, cudaStream_t stream) : comm_(comm), stream_(stream) {
    check(ncclCommUserRank(comm_, &rank_), "ncclCommUserRank");
    check(ncclCommCount(comm_, &size_), "ncclCommCount");
  }
  nccl_reducer(const nccl_reducer&) = delete;
  nccl_reducer& operator=(const nccl_reducer&) = delete;
  ~nccl_reducer() {
    if (staging_ != nullptr) cudaFree(staging_);
  }

  int rank() const { return rank_; }
  int size() const { return size_; }
  ncclComm_t comm() const { return comm_; }
  cudaStream_t stream() const { return stream_; }

  void all_reduce(double* data, std::size_t n, reduce_op op) {
    host_collective(data, n, ncclFloat64, op, -1);
  }
  void all_reduce(std::int64_t* data, std::size_t n, reduce_op op) {
    host_collective(data, n, ncclInt64, op, -1);
  }
  void broadcast(double* data, std::size_t n, int root) {
    host_collective(data, n, ncclFloat64, reduce_op::sum, root);
  }
  void broadcast(std::int64_t* data, std::size_t n, int root) {
    host_collective(data, n, ncclInt64, reduce_op::sum, root);
  }

  /// In place on device memory, asynchronous on the reducer's stream.
  template <class T>
  void device_all_reduce(T* device_data, std::size_t n, reduce_op op) {
    check(ncclAllReduce(device_data, device_data, n, type_of<T>(), nccl_op(op), comm_, stream_),
          "ncclAllReduce");
  }

 private:
  template <class T>
  static ncclDataType_t type_of() {
    static_assert(
        std::is_same_v<T, double> || std::is_same_v<T, std::int64_t> || std::is_same_v<T, float>,
        "device_all_reduce carries double, float or std::int64_t");
    if constexpr (std::is_same_v<T, double>) return ncclFloat64;
    if constexpr (std::is_same_v<T, float>) return ncclFloat32;
    return ncclInt64;
  }
  static ncclRedOp_t nccl_op(reduce_op op) { return op == reduce_op::sum ? ncclSum : ncclMax; }
  static void check(ncclResult_t rc, const char* what) {
    if (rc != ncclSuccess)
      throw std::runtime_error(std::string("ktsa: ") + what + " failed: " + ncclGetErrorString(rc));
  }
  static void check(cudaError_t rc, const char* what) {
    if (rc != cudaSuccess)
      throw std::runtime_error(std::string("ktsa: ") + what + " failed: " + cudaGetErrorString(rc));
  }
  void reserve(std::size_t bytes) {
    if (bytes <= staging_bytes_) return;
    if (staging_ != nullptr) check(cudaFree(staging_), "cudaFree");
    staging_ = nullptr;
    staging_bytes_ = 0;
    check(cudaMalloc(&staging_, bytes), "cudaMalloc (nccl_reducer staging)");
    staging_bytes_ = bytes;
  }
  /// root < 0: all-reduce with op; else broadcast from root.
  void host_collective(void* data, std::size_t n, ncclDataType_t type, reduce_op op, int root) {
    if (n == 0) return;
    const std::size_t bytes = n * 8;  // double and int64 alike
    reserve(bytes);
    check(cudaMemcpyAsync(staging_, data, bytes, cudaMemcpyHostToDevice, stream_),
          "cudaMemcpyAsync");
    if (root < 0)
      check(ncclAllReduce(staging_, staging_, n, type, nccl_op(op), comm_, stream_),
            "ncclAllReduce");
    else
      check(ncclBroadcast(staging_, staging_, n, type, root, comm_, stream_), "ncclBroadcast");
    check(cudaMemcpyAsync(data, staging_, bytes, cudaMemcpyDeviceToHost, stream_),
          "cudaMemcpyAsync");
    check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  }

  ncclComm_t comm_;
  cudaStream_t stream_;
  int rank_ = 0, size_ = 1;
  void* staging_ = nullptr;
  std::size_t staging_bytes_ = 0;
};

}  // namespace ktsa::dist
