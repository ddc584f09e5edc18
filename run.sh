#!/usr/bin/env bash
# Quick start for dpm-flair. Usage:
#   ./run.sh demo [dpm-demo options]   install, then replay a generated accelerated FLAIR dataset with the shipped model
#   ./run.sh test [pytest options]     install, then run the test suite
# Each command installs what it needs: Debian packages with apt-get (as root, or through sudo) and a Python virtual
# environment in .venv (git-ignored). Re-running skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")"

DEBIAN_PACKAGES=(python3-venv ismrmrd-tools dicom3tools orthanc dcmtk bart)
TORCH_SPEC="torch==2.13.0"   # the CPU build on our CI disk; any torch in setup.py's range works

install_debian() {
    local missing=()
    for pkg in "${DEBIAN_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "[run.sh] installing Debian packages: ${missing[*]}"
    # Orthanc's package would start a system service; tests start their own instance instead.
    $sudo env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
}

install_python() {
    local stamp=".venv/.installed-$(cat setup.py | sha256sum | cut -c1-16)"
    [ -f "$stamp" ] && return 0
    echo "[run.sh] creating .venv and installing the package"
    [ -x .venv/bin/python ] || python3 -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "$TORCH_SPEC"
    .venv/bin/python -m pip install -q -e ".[test]"
    rm -f .venv/.installed-*
    touch "$stamp"
}

command="${1:-}"
shift || true
case "$command" in
    demo)
        install_debian
        install_python
        exec .venv/bin/dpm-demo "$@"
        ;;
    test)
        install_debian
        install_python
        # The tests run gadget and server processes beside pytest: one OpenMP thread each keeps 2 cores from being
        # oversubscribed (two torch threads on a busy core ran 30x slower here) and keeps numerics identical across
        # them.
        export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
        exec .venv/bin/python -m pytest -q "$@" tests
        ;;
    *)
        echo "usage: ./run.sh demo|test [options]" >&2
        exit 2
        ;;
esac
