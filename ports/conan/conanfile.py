# Conan 2 recipe for ktsa (header-only). Options switch the adapters'
# dependencies on; the CMake package ktsa provides is used as is (config files
# under share/ktsa, the layout ports/ktsa and tests/consumer test).
import os

from conan import ConanFile
from conan.tools.cmake import CMake, CMakeToolchain, cmake_layout
from conan.tools.files import copy


class KtsaConan(ConanFile):
    name = "ktsa"
    version = "0.1.0"
    description = "Header-only C++17 prospect-theoretic alignment (KTO, KTSA) losses and kernels"
    topics = ("header-only", "kto", "alignment", "llm")
    package_type = "header-library"
    settings = "os", "arch", "compiler", "build_type"
    options = {"eigen": [True, False], "xtensor": [True, False], "dlpack": [True, False],
               "cuda": [True, False]}
    default_options = {"eigen": False, "xtensor": False, "dlpack": False, "cuda": False}
    no_copy_source = True

    def export_sources(self):
        # The recipe lives in ports/conan/: the sources are two levels up.
        root = os.path.join(self.recipe_folder, "..", "..")
        for pattern in ("include/*", "cmake/*", "CMakeLists.txt", "README.md"):
            copy(self, pattern, root, self.export_sources_folder)

    def layout(self):
        cmake_layout(self)

    def requirements(self):
        if self.options.eigen:
            self.requires("eigen/3.4.0")
        if self.options.xtensor:
            self.requires("xtensor/0.24.7")
        if self.options.dlpack:
            self.requires("dlpack/0.8")

    def package_id(self):
        # Headers only: one package for every setting (options still count).
        self.info.settings.clear()

    def generate(self):
        tc = CMakeToolchain(self)
        tc.variables["KTSA_BUILD_TESTS"] = False
        tc.variables["KTSA_BUILD_EXAMPLES"] = False
        tc.variables["KTSA_BUILD_BENCHMARKS"] = False
        tc.variables["KTSA_ENABLE_CUDA"] = False
        tc.variables["KTSA_INSTALL"] = True
        tc.variables["KTSA_INSTALL_CMAKEDIR"] = "share/ktsa"
        tc.generate()

    def build(self):
        cmake = CMake(self)
        cmake.configure()

    def package(self):
        cmake = CMake(self)
        cmake.install()
        copy(self, "README.md", self.source_folder, os.path.join(self.package_folder, "licenses"))

    def package_info(self):
        # Consumers use ktsa's own config files (share/ktsa), not generated ones.
        self.cpp_info.set_property("cmake_find_mode", "none")
        self.cpp_info.builddirs.append(os.path.join("share", "ktsa"))
        self.cpp_info.bindirs = []
        self.cpp_info.libdirs = []
        if self.settings.os in ("Linux", "FreeBSD"):
            self.cpp_info.system_libs = ["pthread"]
