#!/usr/bin/env bash
# Set up everything convae needs, on a fresh Debian/Ubuntu machine or an old one:
#  1. OpenBLAS from the distribution (libopenblas-dev), which Theano links for
#     its BLAS calls and gemm-based convolutions, and Fashion-MNIST
#     (dataset-fashion-mnist, 30 MB) for --dataset fashion;
#  2. a virtual environment in .venv with requirements.txt and convae itself.
# Safe to run again: it only does what is missing or out of date.
set -euo pipefail
cd "$(dirname "$0")/.."

have_openblas() {  # the same places convae/runtime/openblas.py looks
    local f
    for f in /usr/lib/*/libopenblas.so /usr/lib/libopenblas.so \
             /usr/lib64/libopenblas.so /usr/local/lib/libopenblas.so; do
        [ -e "$f" ] && return 0
    done
    return 1
}

packages=""
have_openblas || packages="libopenblas-dev"
[ -d /usr/share/datasets/fashion-mnist ] || packages="$packages dataset-fashion-mnist"
if [ -n "$packages" ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "setup: installing$packages with apt-get" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $packages >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    python=""
    for candidate in "${PYTHON:-}" python3.11 python3.10 python3.9 python3; do
        if [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 &&
           "$candidate" -c 'import sys; sys.exit(not (3, 9) <= sys.version_info[:2] <= (3, 11))'; then
            python=$candidate
            break
        fi
    done
    if [ -z "$python" ]; then
        echo "setup: convae needs CPython 3.9 to 3.11 (Theano 1.0.5 needs numpy < 1.24); none found. Set PYTHON=/path/to/python3.11" >&2
        exit 1
    fi
    "$python" -m venv .venv
fi

wanted=$(cat requirements.txt setup.py | sha256sum | cut -d' ' -f1)
if [ "$(cat .venv/.installed 2>/dev/null)" != "$wanted" ]; then
    pip=".venv/bin/python -m pip install -q --disable-pip-version-check"
    $pip -r requirements.txt
    $pip --no-deps -e .
    echo "$wanted" > .venv/.installed
fi
