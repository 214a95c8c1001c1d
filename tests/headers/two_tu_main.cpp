// Two translation units use the same ktsa functions (inline and template
// code, function-local statics such as the SIMD level and the stream
// threshold): the program must link without duplicate symbols, and both units
// must see the same state.
#include <cstdio>

#include "ktsa/ktsa.hpp"

double other_unit_loss();
const void* other_unit_threshold_address();

int main() {
  std::vector<double> policy{-10.0, -12.0}, reference{-10.5, -11.0};
  std::vector<unsigned char> desirable{1, 0};
  const double here =
      ktsa::loss::kto_loss(ktsa::exec::host{}, ktsa::make_view(policy), ktsa::make_view(reference),
                           ktsa::make_view(desirable), 0.0, ktsa::loss::config{},
                           ktsa::vector_view<double>{}, ktsa::vector_view<double>{})
          .loss;
  const double there = other_unit_loss();
  // One function-local static for the whole program, not one per unit.
  const void* threshold_here = &ktsa::kernels::detail::stream_threshold_bytes();
  std::printf("two units: loss %.17g and %.17g, one threshold: %s\n", here, there,
              threshold_here == other_unit_threshold_address() ? "yes" : "no");
  return here == there && threshold_here == other_unit_threshold_address() ? 0 : 1;
}
