# shellcheck shell=bash disable=SC2034
# The one place where Shoestring's pinned dependencies are named. Sourced by launch/setup (and,
# through launch/common.sh, by every launch script); not meant to be run.
#
# To move to another LibTorch: change SHOESTRING_TORCH_VERSION / _LOCAL and the wheels' sha256
# below (pip prints one: `python3 -m pip hash torch-*.whl`; `pip install --dry-run --report`
# lists them without downloading), and the NVIDIA wheels to the new torch's pins (its METADATA's
# Requires-Dist). The dependency folder is keyed by version, so clones on the old pin keep
# working from the old folder.

# PyPI's torch wheel. It is unpacked whole: torch/{lib,include,share} is the LibTorch we build
# against, and the rest is Python's torch (tests/reference/, bench/), so both are one build. The
# wheel's Python extension is specific to the CPython version, so setup takes the wheel for the
# local python3 and keys the unpacked folder by it; a python3 without a wheel here gets the
# fallback's, for its C++ parts only.
SHOESTRING_TORCH_VERSION=2.11.0
SHOESTRING_TORCH_LOCAL=cu130            # the wheel's local version tag: 2.11.0+cu130
SHOESTRING_TORCH_WHEEL_PLATFORM=manylinux_2_28_x86_64
SHOESTRING_TORCH_WHEEL_FALLBACK_PYTHON=3.12
# sha256 of torch-<version>-cpXY-cpXY-<platform>.whl, by CPython version.
declare -gA SHOESTRING_TORCH_WHEEL_SHA256=(
  [3.10]=1b32ceda909818a03b112006709b02be1877240c31750a8d9c6b7bf5f2d8a6e5
  [3.11]=7aa2f9bbc6d4595ba72138026b2074be1233186150e9292865e04b7a63b8c67a
  [3.12]=0f68f4ac6d95d12e896c3b7a912b5871619542ec54d3649cf48cc1edd4dd2756
  [3.13]=cc89b9b173d9adfab59fd227f0ab5e5516d9a52b658ae41d64e59d2e55a418db
  [3.14]=4dc8b3809469b6c30b411bb8c4cad3828efd26236153d9beb6a3ec500f211a60
)
# What Python's torch needs besides the wheel to import and train on CPU, unpacked beside it (file
# sha256). torch's own pins for the three NVIDIA libraries, which its CUDA extension links and
# which CPU machines lack (the rest of CUDA comes from /usr/local/cuda); and the pure-Python
# modules that `import torch` loads (torch's other requirements are imported lazily, by features
# we do not use).
SHOESTRING_PY_WHEELS=(
  "nvidia_cusparselt_cu13-0.8.0-py3-none-manylinux2014_x86_64.whl 25e30a8a7323935d4ad0340b95a0b69926eee755767e8e0b1cf8dd85b197d3fd"
  "nvidia_nvshmem_cu13-3.4.5-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl 290f0a2ee94c9f3687a02502f3b9299a9f9fe826e6d0287ee18482e78d495b80"
  "nvidia_cufile-1.15.1.6-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl 08a3ecefae5a01c7f5117351c64f17c7c62efa5fffdbe24fc7d298da19cd0b44"
  "typing_extensions-4.15.0-py3-none-any.whl f0fa19c6845758ab08074a0cfa8b7aecb71c999ca73d62883bc25cc018c4e548"
  "sympy-1.14.0-py3-none-any.whl e091cc3e99d2141a0ba2847328f5479b05d94a6635cb96148ccb3f34671bd8f5"
  "mpmath-1.3.0-py3-none-any.whl a0b2b9fe80bbcd81a6647ff13108738cfb482d481d826cc0e02f5b35e5c88d2c"
)
# Library folders (inside the unpacked folder) that Python's torch needs on LD_LIBRARY_PATH.
SHOESTRING_PY_LIB_DIRS=(nvidia/cusparselt/lib nvidia/cu13/lib nvidia/nvshmem/lib)

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
  gnuplot-nox  # `shoestring sweep report` plots (docs/sweeps.md)
)
# Needed only to download the wheel (never with --offline); installed when `python3 -m pip` is missing.
SHOESTRING_DEB_PIP_PACKAGES=(python3-pip)
