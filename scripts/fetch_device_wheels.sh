#!/usr/bin/env bash
# Run on the development machine before a GPU device call: downloads, into .whl/ (git-ignored), the
# Python 3.12 x86_64 wheels the device image lacks (ale-py, gymnasium and their needs, pyzmq, zstandard).
# Then: device run with carry [".whl"] and command "bash scripts/device_session.sh" (see its header).
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
