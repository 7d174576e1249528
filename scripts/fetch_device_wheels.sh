#!/usr/bin/env bash
# Run on a machine with a network, before a GPU check on one without: downloads into .whl/ (git-ignored)
# the Python 3.12 x86_64 wheels a bare GPU image lacks (ale-py, gymnasium and their needs, pyzmq, zstandard).
# Copy .whl/ into the repo's folder on the GPU machine, then run "bash scripts/device_session.sh" there
# (see its header); scripts/device_env.sh installs the wheels from it without a network.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_31_x86_64
      --platform manylinux_2_34_x86_64 --platform any)
for pkg in ale-py==0.12.1 gymnasium==1.4.0 pyzmq==27.3.0 zstandard==0.25.0 farama-notifications cloudpickle; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${plat[@]}" -d .whl "$pkg"
done
ls -la .whl
