# Sourced by the device scripts: makes ale-py, gymnasium, pyzmq and zstandard importable. On the bare GPU
# image they come from the carried wheels in .whl/ (scripts/fetch_device_wheels.sh); where they are
# installed already (a dry run on the development machine) the wheels are not used.
if ! python3 -c "import ale_py, gymnasium, zmq, zstandard" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH} || exit 1
fi
