#!/usr/bin/env bash
# Set up everything convae needs, on a fresh Debian/Ubuntu machine or an old one:
#  1. OpenBLAS from the distribution (libopenblas-dev), which Theano links for
#     its BLAS calls and gemm-based convolutions, g++ if there is none (Theano
#     compiles every op with it), a Debian Python's headers (python3.X-dev:
#     Theano compiles against them) and venv (python3.X-venv) if they are
#     missing, and Fashion-MNIST
#     (dataset-fashion-mnist, 30 MB) for --dataset fashion;
#  2. a virtual environment in .venv with requirements.txt and convae itself,
#     made with CPython 3.9 to 3.11 (Theano 1.0.5 needs numpy < 1.24, whose
#     wheels stop at 3.11): $PYTHON, else one on PATH, else (a machine whose
#     only Python is newer, as Ubuntu 24.04's 3.12 or Debian 13's 3.13) a
#     CPython 3.11 that uv installs (uv from PATH, or from PyPI into .venv-uv).
#  3. where a copy of MNIST lies beside the clone (../shared/data/mnist, as on
#     this project's machines, which reach no download mirror), links to it
#     in convae's per-user cache, where convae-train looks when given no
#     --data-dir or CONVAE_DATA_DIR; elsewhere convae downloads MNIST there on
#     first use. convae checks every file against its SHA-256 either way.
# Safe to run again: it only does what is missing or out of date.
# `bash scripts/setup.sh --which-python` prints the interpreter it would use.
set -euo pipefail
cd "$(dirname "$0")/.."

supported() {  # is $1 a CPython 3.9 to 3.11?
    "$1" -c 'import sys; sys.exit(not (3, 9) <= sys.version_info[:2] <= (3, 11))' \
        >/dev/null 2>&1
}

find_uv() {  # prints a uv to use: on PATH, or installed from PyPI into .venv-uv
    if command -v uv >/dev/null 2>&1; then
        command -v uv
        return 0
    fi
    if [ -x .venv-uv/bin/uv ] || { command -v python3 >/dev/null 2>&1 &&
            python3 -m venv .venv-uv >/dev/null 2>&1 &&
            .venv-uv/bin/python -m pip install -q --disable-pip-version-check uv >&2; }; then
        echo .venv-uv/bin/uv
        return 0
    fi
    rm -rf .venv-uv
    return 1
}

find_python() {  # prints the interpreter for .venv, or says how to get one
    local candidate uv
    if [ -n "${PYTHON:-}" ]; then  # the user's choice, or nothing
        if command -v "$PYTHON" >/dev/null 2>&1 && supported "$PYTHON"; then
            command -v "$PYTHON"
            return 0
        fi
        echo "setup: PYTHON=$PYTHON is not a CPython 3.9 to 3.11 that runs here" \
             "(Theano 1.0.5 needs numpy < 1.24); set PYTHON to one, or unset it" >&2
        return 1
    fi
    for candidate in python3.11 python3.10 python3.9 python3; do
        if command -v "$candidate" >/dev/null 2>&1 && supported "$candidate"; then
            command -v "$candidate"
            return 0
        fi
    done
    if uv=$(find_uv) && "$uv" python install 3.11 >&2 &&
       candidate=$("$uv" python find 3.11) && supported "$candidate"; then
        echo "$candidate"
        return 0
    fi
    echo "setup: convae needs CPython 3.9 to 3.11 (Theano 1.0.5 needs numpy < 1.24)" \
         "and found none, nor could uv install one. Get one with:" \
         "sudo apt-get install pipx && pipx install uv && ~/.local/bin/uv python install 3.11" \
         "(then run this again), or set PYTHON=/path/to/python3.11" >&2
    return 1
}

case "$*" in
    "") ;;
    --which-python) find_python; exit ;;
    *) echo "usage: bash scripts/setup.sh [--which-python]" >&2; exit 2 ;;
esac

# A .venv whose Python is gone (upgrading a pyenv or distribution Python can
# remove the interpreter its links lead to) runs nothing: make it anew.
if [ -L .venv/bin/python ] && [ ! -e .venv/bin/python ]; then
    echo "setup: .venv's Python is gone (.venv/bin/python leads to" \
         "$(readlink -m .venv/bin/python), which no longer exists): making .venv anew" >&2
    rm -rf .venv
fi

# A .venv made earlier with another Python (say 3.12) cannot take Theano: say
# so before any work, rather than let pip fail on numpy at the end.
if [ -x .venv/bin/python ] && ! supported .venv/bin/python; then
    echo "setup: .venv runs a Python other than CPython 3.9 to 3.11 (Theano 1.0.5" \
         "needs numpy < 1.24); remove it (rm -rf .venv) and run this again" >&2
    exit 1
fi

include_dir() {  # where $1 keeps its C headers (a venv's are its base Python's)
    "$1" -c 'import sysconfig; print(sysconfig.get_paths()["include"])'
}

# The Python for .venv: Theano compiles every op against its headers (Python.h).
if [ -x .venv/bin/python ]; then
    python=.venv/bin/python
else
    python=$(find_python)
fi
headers=$(include_dir "$python")

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
command -v g++ >/dev/null 2>&1 || packages="$packages g++"  # Theano compiles with it
[ -d /usr/share/datasets/fashion-mnist ] || packages="$packages dataset-fashion-mnist"
# A Debian (or Ubuntu) Python, python3.X, keeps its headers in python3.X-dev
# and venv's ensurepip in python3.X-venv.
debian_python=""
case "$headers" in /usr/include/python3.*) debian_python=${headers#/usr/include/} ;; esac
if [ ! -e "$headers/Python.h" ]; then
    if [ -z "$debian_python" ]; then
        echo "setup: $python has no C headers ($headers/Python.h), which Theano" \
             "compiles every op against; install them, or set PYTHON to a CPython" \
             "3.9 to 3.11 that has them" >&2
        exit 1
    fi
    packages="$packages $debian_python-dev"
fi
if [ ! -x .venv/bin/python ] && [ -n "$debian_python" ] &&
        ! "$python" -c 'import ensurepip' >/dev/null 2>&1; then
    packages="$packages $debian_python-venv"
fi
if [ -n "$packages" ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    if [ -n "$sudo" ] && ! command -v sudo >/dev/null 2>&1; then
        echo "setup: installing$packages takes root, and there is no sudo: run this" \
             "as root, or have them installed (apt-get install$packages)" >&2
        exit 1
    fi
    echo "setup: installing$packages with apt-get" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $packages >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi

wanted=$(cat requirements.txt setup.py | sha256sum | cut -d' ' -f1)
if [ "$(cat .venv/.installed 2>/dev/null)" != "$wanted" ]; then
    # A .venv whose making was cut short (Ctrl-C while venv ran ensurepip)
    # has no pip yet.
    .venv/bin/python -c 'import pip' >/dev/null 2>&1 || .venv/bin/python -m ensurepip >/dev/null
    pip=".venv/bin/python -m pip install -q --disable-pip-version-check"
    $pip -r requirements.txt
    $pip --no-deps -e .
    echo "$wanted" > .venv/.installed
fi

# MNIST from beside the clone, into the cache data.default_data_dir reads
# ($XDG_CACHE_HOME where absolute, as the XDG spec has it, else ~/.cache).
shared=../shared/data/mnist
if [ -d "$shared" ]; then
    cache=${XDG_CACHE_HOME:-}
    case "$cache" in /*) ;; *) cache=$HOME/.cache ;; esac
    cache=$cache/convae/mnist
    linked=0
    for file in train-images-idx3-ubyte train-labels-idx1-ubyte \
                t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
        [ -e "$cache/$file.gz" ] || [ -e "$cache/$file" ] && continue
        for name in "$file.gz" "$file"; do
            [ -f "$shared/$name" ] || continue
            # Best effort: a home that cannot be written only leaves the link out.
            if mkdir -p "$cache" 2>/dev/null &&
                    ln -sfn "$(readlink -f "$shared/$name")" "$cache/$name" 2>/dev/null; then
                linked=$((linked + 1))
            fi
            break
        done
    done
    [ "$linked" -eq 0 ] || echo "setup: MNIST from $shared linked into $cache ($linked files)" >&2
fi
