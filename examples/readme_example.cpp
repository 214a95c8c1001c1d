#include <cstdio>
#include <ktsa/ktsa.hpp>
#include <vector>

int main() {
  using namespace ktsa;
  std::vector<double> policy{-10.5, -20.25, -7.0, -15.0}, reference{-11.0, -19.0, -7.5, -14.0};
  std::vector<unsigned char> desirable{1, 0, 1, 0};  // purchase = 1, abandon = 0
  // z0 from mismatched pairs (prompt i with completion i-1, TRL's), scored by both models.
  std::vector<double> kl_policy{-12.0, -18.0, -9.0, -16.0}, kl_reference{-12.5, -18.2, -8.0, -16.5};
  const double z0 = loss::batch_kl_reference_point(make_view(kl_policy), make_view(kl_reference));

  std::vector<double> per_example(4), grad(4);  // grad = d loss / d policy log-prob
  loss::config cfg;                             // beta 0.1, weights 1, variant kto
  const loss::loss_result out =
      loss::kto_loss(exec::host{}, make_view(policy), make_view(reference), make_view(desirable),
                     z0, cfg, make_view(per_example), make_view(grad));
  std::printf("z0 %.6f  loss %.6f  rewards/chosen %.4f\n", z0, out.loss,
              out.metrics.rewards_chosen());
}
