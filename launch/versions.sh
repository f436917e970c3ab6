# shellcheck shell=bash disable=SC2034
# The one place where Shoestring's pinned dependencies are named. Sourced by launch/setup (and,
# through launch/common.sh, by every launch script); not meant to be run.
#
# To move to another LibTorch: change SHOESTRING_TORCH_VERSION / _LOCAL and the wheel's sha256
# below (pip prints it: `python3 -m pip hash torch-*.whl`). The dependency folder is keyed by
# version, so clones on the old pin keep working from the old folder.

# PyPI's torch wheel, from which we use only torch/{lib,include,share} (LibTorch + its CMake package).
SHOESTRING_TORCH_VERSION=2.11.0
SHOESTRING_TORCH_LOCAL=cu130            # the wheel's local version tag: 2.11.0+cu130
SHOESTRING_TORCH_WHEEL_PYTHON=3.12      # any CPython tag works: only the C++ parts are used
SHOESTRING_TORCH_WHEEL_PLATFORM=manylinux_2_28_x86_64
SHOESTRING_TORCH_WHEEL_SHA256=0f68f4ac6d95d12e896c3b7a912b5871619542ec54d3649cf48cc1edd4dd2756

# Debian 12 packages that the build, the tests and the launcher need. The CUDA toolkit (nvcc, NCCL)
# is not among them: it comes preinstalled on the project's GPU machines.
SHOESTRING_DEB_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git unzip python3
  libopenmpi-dev openmpi-bin
  libhdf5-dev
  libyaml-cpp-dev
  libboost-program-options-dev
  libgtest-dev
  libsentencepiece-dev
  fortunes fortunes-min   # the default training corpus (launch/prepare_corpus, docs/data.md)
  clang libclang-rt-14-dev  # libFuzzer targets of the data readers (tests/data/fuzz)
)
# Needed only to download the wheel (never with --offline); installed when `python3 -m pip` is missing.
SHOESTRING_DEB_PIP_PACKAGES=(python3-pip)
