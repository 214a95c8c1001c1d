// ktsa/metrics/special.hpp: the special functions behind the intervals.
//
//   normal_cdf, normal_quantile                       ktsa/metrics/normal.hpp
//   regularized_incomplete_beta[_complement],
//   inverse_regularized_incomplete_beta[_complement]  ktsa/metrics/incomplete_beta.hpp
//
// Written here (no Boost, no Rmath) so the library stays dependency-free; the
// accuracy each one was tested to is in docs/metrics.md.
#pragma once

#include "ktsa/metrics/incomplete_beta.hpp"
#include "ktsa/metrics/normal.hpp"
