// ktsa/dist/mpi.hpp: the reducer over MPI (link ktsa::mpi; needs <mpi.h>).
//
// Uses the communicator the caller gives (MPI_COMM_WORLD, a data-parallel or
// tensor-parallel sub-communicator); ktsa never initialises, duplicates or
// frees it. MPI_Allreduce / MPI_Bcast in place, blocking. Tested with
// Debian 12's OpenMPI 4.1. Not included by ktsa/ktsa.hpp.
#pragma once

#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "ktsa/core/errors.hpp"
#include "ktsa/dist/reducer.hpp"

namespace ktsa::dist {

class mpi_reducer {
 public:
  /// `comm` must stay valid while the reducer is used. MPI must be initialised.
  explicit mpi_reducer(MPI_Comm comm) : comm_(comm) {
    int initialised = 0;
    MPI_Initialized(&initialised);
    if (!initialised)
      throw ktsa::invalid_argument(
          "ktsa: mpi_reducer: MPI is not initialised (call MPI_Init first)");
    check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
    check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
  }

  int rank() const { return rank_; }
  int size() const { return size_; }
  MPI_Comm comm() const { return comm_; }

  void all_reduce(double* data, std::size_t n, reduce_op op) {
    all_reduce_impl(data, n, MPI_DOUBLE, op);
  }
  void all_reduce(std::int64_t* data, std::size_t n, reduce_op op) {
    all_reduce_impl(data, n, MPI_INT64_T, op);
  }
  void broadcast(double* data, std::size_t n, int root) { bcast_impl(data, n, MPI_DOUBLE, root); }
  void broadcast(std::int64_t* data, std::size_t n, int root) {
    bcast_impl(data, n, MPI_INT64_T, root);
  }

 private:
  static void check(int rc, const char* what) {
    if (rc == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, text, &len);
    throw std::runtime_error(std::string("ktsa: ") + what + " failed: " + std::string(text, len));
  }
  // MPI counts are int: long arrays go in chunks.
  template <class F>
  static void chunked(std::size_t n, F f) {
    constexpr std::size_t kMax = static_cast<std::size_t>(INT_MAX);
    for (std::size_t off = 0; off < n; off += kMax)
      f(off, static_cast<int>(std::min(kMax, n - off)));
  }
  template <class T>
  void all_reduce_impl(T* data, std::size_t n, MPI_Datatype type, reduce_op op) {
    const MPI_Op mop = op == reduce_op::sum ? MPI_SUM : MPI_MAX;
    chunked(n, [&](std::size_t off, int count) {
      check(MPI_Allreduce(MPI_IN_PLACE, data + off, count, type, mop, comm_), "MPI_Allreduce");
    });
  }
  template <class T>
  void bcast_impl(T* data, std::size_t n, MPI_Datatype type, int root) {
    chunked(n, [&](std::size_t off, int count) {
      check(MPI_Bcast(data + off, count, type, root, comm_), "MPI_Bcast");
    });
  }

  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
};

}  // namespace ktsa::dist
