#!/usr/bin/env bash
# Rewrite the build-box paths baked into the ROS 2 wheels' exported CMake files (environment.md G3).
# The wheels were built under /opt/python/cp311-cp311; CMake consumers of the message packages
# (our dreamzero_msgs build) fail with "includes non-existent path" until they point at this venv.
# Idempotent; re-run after installing more ros-* message wheels.
# Usage: scripts/fix_ros_wheel_cmake_paths.sh VENV_DIR
set -euo pipefail
venv="$(cd "${1:?usage: $0 VENV_DIR}" && pwd)"
py="$venv/bin/python"
pyinc="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
npinc="$("$py" -c 'import numpy; print(numpy.get_include())')"
# grep exits 1 once every file is fixed; that is success here.
{ grep -rlZ '/opt/python/cp311-cp311' "$venv/share" || true; } | xargs -0 -r sed -i \
  -e "s#/opt/python/cp311-cp311/include/python3.11#${pyinc}#g" \
  -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#${npinc}#g" \
  -e "s#/opt/python/cp311-cp311#${venv}#g"
