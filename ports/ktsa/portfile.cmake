# ktsa is header-only: one release configure, the headers and the CMake
# package (config files straight into share/ktsa), pkg-config file, usage.
set(VCPKG_BUILD_TYPE release)

vcpkg_from_github(
  OUT_SOURCE_PATH SOURCE_PATH
  REPO ktsa/ktsa
  REF "v${VERSION}"
  SHA512 0  # set when a release is tagged
  HEAD_REF main
)

vcpkg_cmake_configure(
  SOURCE_PATH "${SOURCE_PATH}"
  OPTIONS
    -DKTSA_BUILD_TESTS=OFF
    -DKTSA_BUILD_EXAMPLES=OFF
    -DKTSA_BUILD_BENCHMARKS=OFF
    -DKTSA_ENABLE_CUDA=OFF
    -DKTSA_INSTALL=ON
    -DKTSA_INSTALL_CMAKEDIR=share/ktsa
)
vcpkg_cmake_install()
vcpkg_cmake_config_fixup(PACKAGE_NAME ktsa CONFIG_PATH share/ktsa)
vcpkg_fixup_pkgconfig()

# Header-only: nothing under lib/ but what the fixups moved away.
file(REMOVE_RECURSE "${CURRENT_PACKAGES_DIR}/lib" "${CURRENT_PACKAGES_DIR}/debug")

file(INSTALL "${CMAKE_CURRENT_LIST_DIR}/usage" DESTINATION "${CURRENT_PACKAGES_DIR}/share/${PORT}")
vcpkg_install_copyright(FILE_LIST "${SOURCE_PATH}/README.md")
