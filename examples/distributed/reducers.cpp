// The reducers of ktsa/dist/, one function each; docs/distributed.md and the
// README quote these lines (a test checks they match).
#include <mpi.h>

#include <cstdint>
#include <cstdio>
#include <type_traits>
#include <vector>

#include "ktsa/dist/mpi.hpp"
#include "ktsa/ktsa.hpp"
#if defined(KTSA_EXAMPLE_NCCL)
#include "ktsa/dist/nccl.hpp"
#endif

using namespace ktsa;

double z0_over_mpi(const loss::kl_partial& mine) {
  dist::mpi_reducer red(MPI_COMM_WORLD);  // the caller's communicator
  return dist::reference_point(red, mine);
}

#if defined(KTSA_EXAMPLE_NCCL)
double z0_over_nccl(ncclComm_t comm, cudaStream_t stream, const loss::kl_partial& mine) {
  dist::nccl_reducer red(comm, stream);  // the caller's communicator and stream
  return dist::reference_point(red, mine);
}
#endif

double z0_over_any_callable(int rank, int size, const loss::kl_partial& mine) {
  // A trainer's own all-reduce (torch.distributed, Gloo, ...): f(T*, n, op), T = double, int64.
  auto all_reduce = [](auto* data, std::size_t n, dist::reduce_op op) {
    using T = std::remove_pointer_t<decltype(data)>;
    MPI_Allreduce(MPI_IN_PLACE, data, static_cast<int>(n),
                  std::is_same_v<T, double> ? MPI_DOUBLE : MPI_INT64_T,
                  op == dist::reduce_op::sum ? MPI_SUM : MPI_MAX, MPI_COMM_WORLD);
  };
  auto red = dist::make_callable_reducer(rank, size, all_reduce);
  return dist::reference_point(red, mine);
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  const loss::kl_partial mine{0.5 * (rank + 1), 1 + rank % 2};
  const double a = z0_over_mpi(mine), b = z0_over_any_callable(rank, size, mine);
  if (rank == 0) std::printf("z0 over MPI %.17g, over a callable %.17g\n", a, b);
  MPI_Finalize();
  return a == b ? 0 : 1;
}
