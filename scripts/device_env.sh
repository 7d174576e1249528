# Sourced by the device scripts: makes ale-py, gymnasium, pyzmq and zstandard importable. On the bare GPU
# image they come from the carried wheels in .whl/ (scripts/fetch_device_wheels.sh); where they are
# installed already (a dry run on the development machine) the wheels are not used.
wheel_install=(python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site)
if [ "${REHEARSAL:-0}" = 1 ]; then  # the install's flags must exist in this pip; the wheel list must be well formed
  help=$(python3 -m pip install --help) || exit 1
  for flag in "${wheel_install[@]:4}"; do
    [[ "$flag" != -* ]] || grep -q -- "$flag" <<<"$help" || { echo "device_env: pip has no $flag"; exit 1; }
  done
  bash -n scripts/fetch_device_wheels.sh || exit 1
fi
if ! python3 -c "import ale_py, gymnasium, zmq, zstandard" 2>/dev/null; then
  "${wheel_install[@]}" .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH} || exit 1
fi
