// One data-parallel KTO step over MPI, and a vocab-sharded log-prob:
//   mpirun -np 2 build/release/examples/distributed/ktsa_dist_data_parallel
#include <mpi.h>

#include <cstdio>
#include <vector>

#include "ktsa/dist/mpi.hpp"
#include "ktsa/ktsa.hpp"

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  {
    using namespace ktsa;
    dist::mpi_reducer red(MPI_COMM_WORLD);  // or the trainer's data-parallel communicator
    const int rank = red.rank();
    loss::config cfg;
    dist::require_same_config(red, cfg);  // a clear error on every rank if one differs

    // This rank's slice of the batch (a trainer scores its own examples).
    std::vector<double> policy{-10.5 - rank, -20.25}, reference{-11.0 - rank, -19.0};
    std::vector<unsigned char> desirable{1, 0};
    std::vector<double> kl_policy{-12.0 + 0.5 * rank, -18.0}, kl_reference{-12.5, -18.2};

    // z0 from every rank's KL pairs (count-weighted): bitwise the same everywhere.
    const double z0 =
        dist::batch_kl_reference_point(red, make_view(kl_policy), make_view(kl_reference));
    std::vector<double> grad(policy.size());
    const loss::loss_result local =
        loss::kto_loss(exec::host{}, make_view(policy), make_view(reference), make_view(desirable),
                       z0, cfg, vector_view<double>{}, make_view(grad));
    // The loss over every rank's examples; scale grad, then sum-all-reduce it.
    const dist::global_loss_result total =
        dist::global_loss(red, local.loss, static_cast<index_t>(policy.size()));
    for (double& g : grad) g *= total.grad_scale;
    red.all_reduce(grad.data(), grad.size(), dist::reduce_op::sum);  // your model's gradients
    const loss::batch_metrics m = dist::all_reduce_metrics(red, local.metrics);

    // Tensor parallel: this rank holds vocabulary columns [begin, end).
    const index_t B = 1, T = 2, V = 6;
    const dist::vocab_shard shard = dist::even_shard(V, rank, red.size());
    std::vector<float> logits(static_cast<std::size_t>(B * T * shard.size()));
    for (index_t i = 0; i < B * T; ++i)
      for (index_t j = shard.begin; j < shard.end; ++j)
        logits[static_cast<std::size_t>(i * shard.size() + j - shard.begin)] = 0.5f * j - i;
    std::vector<std::int64_t> labels{1, V - 1};  // global token ids, the same on every rank
    std::vector<double> seq(B);
    dist::sharded_sequence_logprob_forward(exec::host{}, red, shard,
                                           make_view(logits.data(), B, T, shard.size()),
                                           make_view(labels.data(), B, T), make_view(seq));

    if (rank == 0)
      std::printf("ranks %d  z0 %.6f  loss %.6f  rewards/chosen %.4f (%lld chosen)  logp %.6f\n",
                  red.size(), z0, total.loss, m.rewards_chosen(),
                  static_cast<long long>(m.chosen_count), seq[0]);
  }
  MPI_Finalize();
}
