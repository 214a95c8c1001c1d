// ktsa/cuda/kto.cuh: the KTO-family batch loss, its gradient and metrics, and
// the batch-KL reference point z0, on a CUDA stream.
//
// The per-example formula is loss::example<double> from ktsa/loss/kto.hpp,
// the very function the host loop calls, so both backends compute the same
// numbers; only the order of the batch sums differs (a fixed tree here).
// Batches are small (one number per example), so one block of 256 threads
// does the work: each thread walks a fixed, strided subset of the examples and
// the partial sums are combined in a fixed tree (deterministic, no atomics).
//
// Differences from the host kto_loss:
//   - inputs and outputs are device vectors; the batch loss and metrics go to
//     a device_loss_result that read_result copies to the host (it
//     synchronizes the stream), so nothing waits for the GPU by default;
//   - z0 is a host double or a device pointer (e.g. written by the device
//     batch_kl_reference_point below) so the whole step stays on the device;
//   - non-finite log-probs are recorded in ex.status (the loss is then NaN)
//     instead of thrown;
//   - for variant::bco, cfg.bco_order as on the host: before_loss (default,
//     TRL's) computes delta on the device from bco_state's mean and count at
//     enqueue time and the batch's own reward sum (bco_running_mean::folded,
//     the host's formula); after_loss and none use bco_state->mean(). The host
//     state is updated by read_result(ex, result, bco_state) (never for none,
//     nor for a variant other than bco), so call read_result between two bco
//     steps on the same state.
#pragma once

#include <cuda_runtime.h>

#include <limits>
#include <type_traits>

#include "ktsa/cuda/common.cuh"
#include "ktsa/loss/kto.hpp"
#include "ktsa/loss/reference_point.hpp"

namespace ktsa::loss {

/// The batch loss and the metrics' sums and counts, in device memory.
struct device_loss_result {
  double loss;  ///< mean of the per-example losses
  double kl;    ///< the shift used: z0 (delta for bco, 0 for apo_zero_unpaired = kto_zero)
  double chosen_reward_sum, rejected_reward_sum, chosen_logp_sum, rejected_logp_sum;
  double reward_sum;  ///< sum of beta r over the batch (what bco's running mean needs)
  long long chosen_count, rejected_count;
  int fold_bco;  ///< 1 when read_result should fold reward_sum into the bco state
};

namespace cuda_detail {

using ::ktsa::cuda::status;
using namespace ::ktsa::cuda::detail;

inline constexpr int kto_threads = 256;

struct kto_params {
  variant kind;
  double beta, wd, wu, gamma;
  double shift;             ///< z0 or delta when z0_device is null or unused
  const double* z0_device;  ///< device z0 (kto, kto_log_sigmoid, ktsa), or null
  int bco_before;           ///< bco with bco_update::before_loss: delta includes the batch
  int fold_bco;             ///< bco with an order other than none
  double bco_mean;          ///< the host state's mean and count at enqueue time
  index_t bco_count;
};

/// Fixed-order in-block sum of kto_threads values (tree over shared memory).
template <class V>
__device__ V block_sum(V v, V* sh) {
  sh[threadIdx.x] = v;
  __syncthreads();
  for (int s = kto_threads / 2; s > 0; s >>= 1) {
    if (static_cast<int>(threadIdx.x) < s) sh[threadIdx.x] += sh[threadIdx.x + s];
    __syncthreads();
  }
  const V r = sh[0];
  __syncthreads();
  return r;
}

/// Records a non-finite log-prob of example i in the status, keyed 2 i for the
/// policy and 2 i + 1 for the reference (the decoder below splits the key).
__device__ inline void report_nonfinite_logps(status* st, index_t i, double policy,
                                              double reference) {
  if (!math::isfinite(policy))
    report(st, &status::finite_key, static_cast<unsigned long long>(i) * 2ull);
  if (!math::isfinite(reference))
    report(st, &status::finite_key, static_cast<unsigned long long>(i) * 2ull + 1ull);
}

/// One block: reads 3 numbers per example, writes up to 2 per example and the
/// batch result once: the minimum.
template <class P, class R, class F, class Lo, class Gr>
__global__ void __launch_bounds__(kto_threads)
    kto_kernel(vector_view<const P> policy, vector_view<const R> reference,
               vector_view<const F> desirable, kto_params prm, vector_view<Lo> per_example,
               vector_view<Gr> grad, device_loss_result* out, status* st) {
  __shared__ double shd[kto_threads];
  __shared__ long long shl[kto_threads];
  const index_t n = policy.extent(0);
  double shift = prm.shift;
  if (prm.z0_device != nullptr &&
      (prm.kind == variant::kto || prm.kind == variant::kto_log_sigmoid ||
       prm.kind == variant::ktsa))
    shift = *prm.z0_device;
  const double inv_n = 1.0 / static_cast<double>(n);
  double batch_reward_sum = 0;
  if (prm.bco_before) {
    // TRL's order: fold this batch's rewards into the mean before the loss.
    double rs = 0;
    for (index_t i = threadIdx.x; i < n; i += kto_threads)
      rs += prm.beta * (static_cast<double>(policy[i]) - static_cast<double>(reference[i]));
    batch_reward_sum = block_sum(rs, shd);
    shift = bco_running_mean::folded(prm.bco_mean, prm.bco_count, batch_reward_sum, n);
  }
  double loss = 0, cr = 0, rr = 0, cl = 0, rl = 0;
  long long cc = 0, rc = 0;
  for (index_t i = threadIdx.x; i < n; i += kto_threads) {
    const double pol = static_cast<double>(policy[i]), ref = static_cast<double>(reference[i]);
    report_nonfinite_logps(st, i, pol, ref);
    const double r = pol - ref;
    const bool d = static_cast<bool>(desirable[i]);
    const example_loss<double> e =
        example<double>(prm.kind, r, d, shift, prm.beta, prm.wd, prm.wu, prm.gamma);
    loss += e.loss;
    if (per_example.data() != nullptr) per_example[i] = static_cast<Lo>(e.loss);
    if (grad.data() != nullptr) grad[i] = static_cast<Gr>(e.dloss_dr * inv_n);
    const double reward = prm.beta * r;
    if (d) {
      cr += reward;
      cl += pol;
      ++cc;
    } else {
      rr += reward;
      rl += pol;
      ++rc;
    }
  }
  loss = block_sum(loss, shd);
  cr = block_sum(cr, shd);
  rr = block_sum(rr, shd);
  cl = block_sum(cl, shd);
  rl = block_sum(rl, shd);
  cc = block_sum(cc, shl);
  rc = block_sum(rc, shl);
  if (threadIdx.x == 0 && out != nullptr) {
    out->loss = loss * inv_n;
    out->kl = shift;
    out->chosen_reward_sum = cr;
    out->rejected_reward_sum = rr;
    out->chosen_logp_sum = cl;
    out->rejected_logp_sum = rl;
    // before_loss folds the very sum delta was computed from
    out->reward_sum = prm.bco_before ? batch_reward_sum : cr + rr;
    out->chosen_count = cc;
    out->rejected_count = rc;
    out->fold_bco = prm.fold_bco;
  }
}

/// z0 = max(0, mean(policy - reference)) over the KL pairs, on the device.
template <class P, class R>
__global__ void __launch_bounds__(kto_threads)
    reference_point_kernel(vector_view<const P> policy, vector_view<const R> reference, double* z0,
                           status* st) {
  __shared__ double shd[kto_threads];
  const index_t n = policy.extent(0);
  double sum = 0;
  for (index_t i = threadIdx.x; i < n; i += kto_threads) {
    const double p = static_cast<double>(policy[i]), r = static_cast<double>(reference[i]);
    report_nonfinite_logps(st, i, p, r);
    sum += p - r;
  }
  sum = block_sum(sum, shd);
  if (threadIdx.x == 0) {
    const double mean = sum / static_cast<double>(n);
    *z0 = mean > 0.0 ? mean : (mean != mean ? mean : 0.0);  // NaN stays NaN
  }
}

/// Decodes a vector operation's non-finite key (index * 2 + tensor).
template <class P, class R>
__global__ void finalize_vectors_kernel(status* s, int op_id, vector_view<const P> a,
                                        vector_view<const R> b) {
  if (s->code != ::ktsa::cuda::status_ok || s->finite_key == ::ktsa::cuda::no_key) return;
  const index_t i = static_cast<index_t>(s->finite_key >> 1);
  const int tensor = static_cast<int>(s->finite_key & 1u);
  s->finite_batch = i;
  s->finite_position = -1;
  s->finite_column = -1;
  s->finite_tensor = tensor;
  s->finite_value = tensor == 0 ? static_cast<double>(a[i]) : static_cast<double>(b[i]);
  s->code = ::ktsa::cuda::status_non_finite;
  s->op = op_id;
}

template <class P, class R>
void finalize_vectors(const exec::cuda& ex, ::ktsa::cuda::op o, vector_view<const P> a,
                      vector_view<const R> b) {
  if (ex.status == nullptr) return;
  finalize_vectors_kernel<P, R><<<1, 1, 0, ex.stream>>>(ex.status, static_cast<int>(o), a, b);
  check_launch("finalize_vectors_kernel");
}

template <class P, class R, class F, class L, class G>
void kto_launch(const exec::cuda& ex, vector_view<P> policy_logps, vector_view<R> reference_logps,
                vector_view<F> desirable, double z0, const double* z0_device, const config& cfg,
                vector_view<L> per_example_loss, vector_view<G> grad, device_loss_result* result,
                const bco_running_mean* bco_state) {
  static_assert(!std::is_const_v<L> && !std::is_const_v<G>, "outputs must be writable");
  ::ktsa::loss::detail::validate_kto_inputs(policy_logps, reference_logps, desirable, z0, cfg,
                                            per_example_loss, grad, bco_state);
  kto_params prm{cfg.kind,
                 cfg.beta,
                 cfg.desirable_weight,
                 cfg.undesirable_weight,
                 cfg.gamma,
                 z0,
                 z0_device,
                 0,
                 0,
                 0.0,
                 0};
  if (cfg.kind == variant::bco) {
    if (cfg.bco_order != bco_update::none)  // read_result's update must not overflow
      ktsa::detail::require(
          policy_logps.extent(0) <= std::numeric_limits<index_t>::max() - bco_state->count(),
          "bco_state.count", bco_state->count(), "would overflow int64 with this batch");
    prm.shift = bco_state->mean();
    prm.bco_before = cfg.bco_order == bco_update::before_loss;
    prm.fold_bco = cfg.bco_order != bco_update::none;
    prm.bco_mean = bco_state->mean();
    prm.bco_count = bco_state->count();
  }
  if (cfg.kind == variant::apo_zero_unpaired) prm.shift = 0;  // = kto_zero
  using PP = std::remove_cv_t<P>;
  using RR = std::remove_cv_t<R>;
  const vector_view<const PP> pol(policy_logps);
  const vector_view<const RR> ref(reference_logps);
  kto_kernel<PP, RR, std::remove_cv_t<F>, L, G><<<1, kto_threads, 0, ex.stream>>>(
      pol, ref, vector_view<const std::remove_cv_t<F>>(desirable), prm, per_example_loss, grad,
      result, ex.status);
  check_launch("kto_kernel");
  finalize_vectors(ex, ::ktsa::cuda::op::kto_loss, pol, ref);
}

}  // namespace cuda_detail

/// CUDA kto_loss with a host z0: see the host overload and this file's comment.
/// `result` (device memory) receives the batch loss and metrics; may be null.
template <class P, class R, class F, class L, class G>
void kto_loss(const exec::cuda& ex, vector_view<P> policy_logps, vector_view<R> reference_logps,
              vector_view<F> desirable, double z0, const config& cfg,
              vector_view<L> per_example_loss, vector_view<G> grad, device_loss_result* result,
              const bco_running_mean* bco_state = nullptr) {
  cuda_detail::kto_launch(ex, policy_logps, reference_logps, desirable, z0, nullptr, cfg,
                          per_example_loss, grad, result, bco_state);
}

/// CUDA kto_loss with z0 read on the device from `z0_device` (ignored by
/// apo_zero_unpaired (= kto_zero) and bco), e.g. the output of the device
/// batch_kl_reference_point: the step then never waits for the host.
template <class P, class R, class F, class L, class G>
void kto_loss(const exec::cuda& ex, vector_view<P> policy_logps, vector_view<R> reference_logps,
              vector_view<F> desirable, const double* z0_device, const config& cfg,
              vector_view<L> per_example_loss, vector_view<G> grad, device_loss_result* result,
              const bco_running_mean* bco_state = nullptr) {
  cuda_detail::kto_launch(ex, policy_logps, reference_logps, desirable, 0.0, z0_device, cfg,
                          per_example_loss, grad, result, bco_state);
}

/// Copies a device_loss_result to the host as a loss_result. SYNCHRONIZES
/// ex.stream. With bco_state and a bco step whose order is not none, folds
/// the step's rewards into the running mean (the host kto_loss's update);
/// when they are not finite (a non-finite log-prob, see ex.status) it throws
/// invalid_argument from bco_running_mean::update and leaves the state unchanged.
inline loss_result read_result(const exec::cuda& ex, const device_loss_result* result,
                               bco_running_mean* bco_state = nullptr) {
  device_loss_result h{};
  ::ktsa::cuda::detail::check(
      cudaMemcpyAsync(&h, result, sizeof(h), cudaMemcpyDeviceToHost, ex.stream),
      "read_result (cudaMemcpyAsync)");
  ::ktsa::cuda::detail::check(cudaStreamSynchronize(ex.stream),
                              "read_result (cudaStreamSynchronize)");
  loss_result r;
  r.loss = h.loss;
  r.metrics.kl = h.kl;
  r.metrics.chosen_reward_sum = h.chosen_reward_sum;
  r.metrics.rejected_reward_sum = h.rejected_reward_sum;
  r.metrics.chosen_logp_sum = h.chosen_logp_sum;
  r.metrics.rejected_logp_sum = h.rejected_logp_sum;
  r.metrics.chosen_count = h.chosen_count;
  r.metrics.rejected_count = h.rejected_count;
  if (bco_state != nullptr && h.fold_bco != 0)
    bco_state->update(h.reward_sum, h.chosen_count + h.rejected_count);
  return r;
}

/// z0 = max(0, mean(kl_policy - kl_reference)) over the mismatched pairs,
/// written to the device double *z0_out (asynchronous).
template <class P, class R>
void batch_kl_reference_point(const exec::cuda& ex, vector_view<P> kl_policy_logps,
                              vector_view<R> kl_reference_logps, double* z0_out) {
  ktsa::detail::require_same_length("kl_policy_logps", kl_policy_logps.extent(0),
                                    "kl_reference_logps", kl_reference_logps.extent(0));
  ktsa::detail::require(kl_policy_logps.extent(0) > 0, "kl pair count", kl_policy_logps.extent(0),
                        "the batch has no KL pairs to estimate z0 from");
  if (z0_out == nullptr) ktsa::detail::fail_argument("z0_out", "null", "needs a device double");
  using PP = std::remove_cv_t<P>;
  using RR = std::remove_cv_t<R>;
  const vector_view<const PP> pol(kl_policy_logps);
  const vector_view<const RR> ref(kl_reference_logps);
  cuda_detail::reference_point_kernel<PP, RR>
      <<<1, cuda_detail::kto_threads, 0, ex.stream>>>(pol, ref, z0_out, ex.status);
  ::ktsa::cuda::detail::check_launch("reference_point_kernel");
  cuda_detail::finalize_vectors(ex, ::ktsa::cuda::op::reference_point, pol, ref);
}

}  // namespace ktsa::loss
