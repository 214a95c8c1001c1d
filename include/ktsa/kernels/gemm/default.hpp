// ktsa/kernels/gemm/default.hpp: the GEMM provider the fused linear head uses
// when the caller names none.
//
// By measurement (docs/fused_linear.md: Intel Xeon 2-vCPU VM, AVX-512, the
// three GEMMs of a chunk at V = 32000, H = 512), oneDNN's sgemm ran 4-5x
// faster than OpenBLAS 0.3.21 and 2-10x faster than Eigen 3.4, so it is the
// default wherever its header is found (Debian libdnnl-dev, which
// scripts/install-deps.sh installs). Calling the fused head with the default
// provider then needs oneDNN at link time (CMake: ktsa::fused_linear). Without
// oneDNN, Eigen (header-only) is used when <Eigen/Core> is on the include
// path, else the plain loop. Define KTSA_FUSED_LINEAR_GEMM to a provider type
// to choose another default, or pass a provider to each call.
#pragma once

#include "ktsa/kernels/gemm.hpp"

#if defined(KTSA_FUSED_LINEAR_GEMM)
namespace ktsa::kernels::gemm {
using default_provider = KTSA_FUSED_LINEAR_GEMM;
}
#elif !defined(KTSA_NO_ONEDNN) && __has_include(<oneapi/dnnl/dnnl.h>)
#include "ktsa/kernels/gemm/onednn.hpp"
namespace ktsa::kernels::gemm {
using default_provider = onednn;
}
#elif __has_include(<Eigen/Core>)
#include "ktsa/kernels/gemm/eigen.hpp"
namespace ktsa::kernels::gemm {
using default_provider = eigen;
}
#else
namespace ktsa::kernels::gemm {
using default_provider = naive;
}
#endif
