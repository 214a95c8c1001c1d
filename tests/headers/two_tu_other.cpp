// The second user of ktsa in tests/headers/two_tu_main.cpp's program.
#include "ktsa/ktsa.hpp"

double other_unit_loss() {
  std::vector<double> policy{-10.0, -12.0}, reference{-10.5, -11.0};
  std::vector<unsigned char> desirable{1, 0};
  return ktsa::loss::kto_loss(ktsa::exec::host{}, ktsa::make_view(policy),
                              ktsa::make_view(reference), ktsa::make_view(desirable), 0.0,
                              ktsa::loss::config{}, ktsa::vector_view<double>{},
                              ktsa::vector_view<double>{})
      .loss;
}

const void* other_unit_threshold_address() {
  return &ktsa::kernels::detail::stream_threshold_bytes();
}
