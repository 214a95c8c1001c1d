# Builds the ktsa PyTorch extension against the installed torch:
#   python3 setup.py build_ext --inplace        (or: pip install .)
# KTSA_INCLUDE_DIR points at ktsa's include/ (default: this repository's).
import ctypes.util
import os

from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

here = os.path.dirname(os.path.abspath(__file__))
include = os.environ.get("KTSA_INCLUDE_DIR", os.path.join(here, "..", "..", "include"))

# The fused head's default GEMM is oneDNN (Debian libdnnl-dev) when its header
# is found; link it then, else build without it (Eigen or the plain loops).
dnnl = ctypes.util.find_library("dnnl") is not None and os.path.exists(
    "/usr/include/oneapi/dnnl/dnnl.h")

setup(
    name="ktsa_torch_ext",
    version="0.1.0",
    ext_modules=[
        CppExtension(
            "ktsa_torch_ext",
            [os.path.join(here, "ktsa_ext.cpp")],
            include_dirs=[include, os.path.join(here, "..", "libtorch_kto")],
            # ktsa is C++17 (torch 1.13 passes c++14 first). GCC 12's avx512fintrin.h
            # (`__m512 __Y = __Y;` in _mm512_undefined_ps) trips -Wuninitialized in
            # every inlined AVX-512 intrinsic under Python's -O2 -Wall flags: ~1800
            # false positives per build, silenced here only.
            extra_compile_args=["-O2", "-std=c++17", "-Wno-uninitialized",
                                "-Wno-maybe-uninitialized"],
            libraries=["dnnl"] if dnnl else [],
            define_macros=[] if dnnl else [("KTSA_NO_ONEDNN", None)],
        )
    ],
    cmdclass={"build_ext": BuildExtension},
)
