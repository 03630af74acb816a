#!/usr/bin/env bash
# Create .venv (if missing) and install facegen_rt into it, building facegen_rt._C.
#   scripts/setup.sh          runtime install
#   scripts/setup.sh --test   plus the test tools (pytest, triton for the interpreter,
#                             selenium, and Debian's chromium + chromium-driver for the
#                             browser test of the drag editor, if missing)
# torch==2.13.0 goes in first: an unpinned torch would pull a multi-GB CUDA build,
# and the C++ extension builds against the torch already in the venv
# (--no-build-isolation), so it must be there before the package.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip --disable-pip-version-check -q"
$PIP install torch==2.13.0
$PIP install "setuptools>=68" wheel
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
$PIP install --no-build-isolation -e ".${extras}"

if [ "${1:-}" = "--test" ] && ! { command -v chromium && command -v chromedriver; } >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing chromium and chromium-driver (Debian) for the browser test"
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
