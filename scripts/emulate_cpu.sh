#!/usr/bin/env bash
# Run a command as if this machine had another x86 CPU, to check convae where
# no such machine is at hand. qemu-user runs .venv's Python, and every Python
# it starts (sys.executable), with the emulated CPU's CPUID; /proc/cpuinfo
# shows that CPU (in a mount namespace of the command's own); g++ takes
# -march=native to mean it; Theano's caches live in a HOME of its own. An
# instruction the CPU lacks stops the process (SIGILL: FMA on the Sandy
# Bridge, AVX-512 on the Zen 3, as tried), so what passes here runs there.
# Speeds under emulation say nothing about the real CPU: measure on one.
#
#   zen3         AMD EPYC Milan (Zen 3): AVX2 and FMA, no AVX-512
#   sandybridge  Intel Sandy Bridge: AVX, no AVX2, FMA or AVX-512
#
# Usage: bash scripts/emulate_cpu.sh zen3 python -m pytest tests
# ("python" is .venv's, emulated). Needs root (the mount namespace) and
# .venv (scripts/setup.sh); installs qemu-user 10 or newer with apt-get if it
# is missing (on Debian bookworm from bookworm-backports, which it adds).
set -euo pipefail
cd "$(dirname "$0")/.."

which=${1:-}
case "$which" in
zen3)
    # qemu's EPYC-Milan without the features its emulator lacks (it would
    # warn about each on every start); OpenBLAS reads it as a Zen.
    cpu=EPYC-Milan-v1,-3dnowprefetch,-amd-ssbd,-amd-stibp,-clzero,-fsrm,-fxsr-opt
    cpu=$cpu,-ibpb,-ibrs,-invpcid,-misalignsse,-nrip-save,-osvw,-pcid
    cpu=$cpu,-perfctr-core,-rdpid,-rdseed,-sha-ni,-topoext,-wbnoinvd,-xsavec
    cpu=$cpu,-xsaveerptr,-xsaves
    march=znver3 vendor=AuthenticAMD family=25 model=1
    name="AMD EPYC-Milan Processor (emulated by qemu-user)"
    lacks='avx512[a-z0-9_]*|amx[a-z0-9_]*|avx_vnni' ;;
sandybridge)
    cpu=SandyBridge,-tsc-deadline,-x2apic
    march=sandybridge vendor=GenuineIntel family=6 model=42
    name="Intel Xeon E312xx (Sandy Bridge, emulated by qemu-user)"
    lacks='avx2|fma|f16c|bmi1|bmi2|movbe|avx512[a-z0-9_]*|amx[a-z0-9_]*|avx_vnni|vaes|vpclmulqdq|gfni' ;;
*)
    echo "usage: bash scripts/emulate_cpu.sh zen3|sandybridge COMMAND [ARGS...]" >&2
    exit 2 ;;
esac
shift
[ $# -gt 0 ] || { echo "emulate_cpu: no command given" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "emulate_cpu: needs root (a mount namespace for /proc/cpuinfo)" >&2; exit 1; }
[ -x .venv/bin/python ] || { echo "emulate_cpu: no .venv: run bash scripts/setup.sh first" >&2; exit 1; }
# qemu 7.2 (Debian bookworm's) computes some AVX2 code wrong: numpy's own
# vector tanh, for one, gave tanh(2.0) = -inf; 10.0 gets it right.
qemu_ok() {
    local major
    major=$(qemu-x86_64 --version 2>/dev/null | sed -n 's/.*version \([0-9]*\)\..*/\1/p')
    [ "${major:-0}" -ge 10 ]
}
if ! qemu_ok; then
    echo "emulate_cpu: installing qemu-user 10 or newer with apt-get" >&2
    suite=()
    if grep -qs 'VERSION_CODENAME=bookworm' /etc/os-release; then
        echo "deb http://deb.debian.org/debian bookworm-backports main" \
            > /etc/apt/sources.list.d/bookworm-backports.list
        suite=(-t bookworm-backports)
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${suite[@]}" qemu-user >/dev/null
    qemu_ok || { echo "emulate_cpu: could not install qemu-user 10 or newer" >&2; exit 1; }
fi

# A venv whose python is the real interpreter under qemu, named (argv[0]) as
# itself so that sys.executable, and so every child Python, is emulated too.
root="${TMPDIR:-/tmp}/convae-emulated-$which"
mkdir -p "$root/home" "$root/venv/bin" "$root/bin"
cp .venv/pyvenv.cfg "$root/venv/"
ln -sfn "$PWD/.venv/lib" "$root/venv/lib"
cat > "$root/venv/bin/python" <<EOF
#!/bin/sh
exec "$(command -v qemu-x86_64)" -cpu $cpu -0 "\$0" "$(readlink -f .venv/bin/python)" "\$@"
EOF
chmod +x "$root/venv/bin/python"

# g++ runs natively, where -march=native would mean this machine's CPU. The
# real one: run under this script, PATH starts with a wrapper of this kind.
gxx=$(PATH=$(tr ':' '\n' <<<"$PATH" | grep -v '/convae-emulated-[^/]*/bin$' | paste -sd:) \
      command -v g++)
cat > "$root/bin/g++" <<EOF
#!/bin/sh
for arg; do
    shift
    case "\$arg" in -march=native) arg=-march=$march ;; -mtune=native) arg=-mtune=$march ;; esac
    set -- "\$@" "\$arg"
done
exec "$gxx" "\$@"
EOF
chmod +x "$root/bin/g++"

# This machine's /proc/cpuinfo, made to name the emulated CPU and to lack
# the vector features it lacks. Replaced only if it changed: run under this
# script, /proc/cpuinfo is this very file, and bound where it is.
sed -E -e "s/^(vendor_id\s*:).*/\1 $vendor/" -e "s/^(cpu family\s*:).*/\1 $family/" \
       -e "s/^(model\s*:).*/\1 $model/" -e "s/^(model name\s*:).*/\1 $name/" \
       -e "/^flags/{s/ ($lacks)\b//g}" /proc/cpuinfo > "$root/cpuinfo.new"
cmp -s "$root/cpuinfo.new" "$root/cpuinfo" && rm "$root/cpuinfo.new" \
    || mv "$root/cpuinfo.new" "$root/cpuinfo"

[ "$1" = python ] && set -- "$root/venv/bin/python" "${@:2}"
export HOME="$root/home" PATH="$root/bin:$PATH"
exec unshare --mount -- bash -c 'mount --bind "$0" /proc/cpuinfo && exec "$@"' "$root/cpuinfo" "$@"
