#!/usr/bin/env bash
# Build the dreamzero_msgs interface package with plain CMake straight into a venv prefix, so no
# setup.bash has to be sourced afterwards (environment.md section 2, "2a'").
# Robots with a full ROS 2 install use colcon in ros2_ws/ instead.
# Usage: scripts/build_msgs.sh VENV_DIR
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
venv="$(cd "${1:?usage: $0 VENV_DIR}" && pwd)"
export AMENT_PREFIX_PATH="$venv"              # G2: rosidl typesupport lookup needs it
export PATH="$venv/bin:$PATH"                 # CMake finds ament packages through PATH prefixes
build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
cmake -S "$here/dreamzero_msgs" -B "$build" -DCMAKE_INSTALL_PREFIX="$venv" \
  -DCMAKE_PREFIX_PATH="$venv" -DPython3_EXECUTABLE="$venv/bin/python" -DBUILD_TESTING=OFF >"$build/configure.log" \
  || { cat "$build/configure.log"; exit 1; }
cmake --build "$build" -j"$(nproc)" >"$build/build.log" || { tail -50 "$build/build.log"; exit 1; }
cmake --install "$build" >/dev/null
"$venv/bin/python" -c "from dreamzero_msgs.msg import ActionChunk; from dreamzero_msgs.srv import SetControlMode"
