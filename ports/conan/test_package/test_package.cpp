// Conan's test_package: one KTO loss against its formula.
#include <cmath>
#include <cstdio>
#include <vector>

#include <ktsa/loss/kto.hpp>

int main() {
  std::vector<double> policy{-10.0, -12.0}, reference{-10.5, -11.0};
  std::vector<unsigned char> desirable{1, 0};
  const auto r =
      ktsa::loss::kto_loss(ktsa::exec::host{}, ktsa::make_view(policy), ktsa::make_view(reference),
                           ktsa::make_view(desirable), 0.0, ktsa::loss::config{},
                           ktsa::vector_view<double>{}, ktsa::vector_view<double>{});
  auto s = [](double x) { return 1.0 / (1.0 + std::exp(-x)); };
  const double expected = 0.5 * ((1.0 - s(0.05)) + (1.0 - s(0.1)));
  std::printf("ktsa %s: loss %.17g\n", KTSA_VERSION_STRING, r.loss);
  return std::abs(r.loss - expected) < 1e-15 ? 0 : 1;
}
