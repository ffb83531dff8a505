#!/usr/bin/env bash
# Installs the local model runtime (llama-cpp-python) built portably into the given Python.
#
# llama-cpp-python builds llama.cpp from source, and by default tunes it to the building CPU
# (GGML_NATIVE): a wheel built on one machine can crash with SIGSEGV/SIGILL on another. pip
# caches built wheels by version only, so such a wheel is reused silently. We therefore build
# with GGML_NATIVE=OFF into a wheel folder of our own, keyed by version, build flags and
# architecture, and install from there; pip's own cache is never consulted for this package.
#
# x86-64 builds target the common baseline (SSE4.2, AVX, AVX2, FMA, F16C); on a CPU without
# AVX2 they fall back to SSE only. arm64 builds use llama.cpp's generic armv8 flags.
# CADENZA_LLAMA_CMAKE_ARGS overrides the flags (for a GPU build, say).
set -euo pipefail
python=${1:-.venv/bin/python}
version=0.3.36

args="-DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
if [ "$(uname -m)" = "x86_64" ] && ! grep -qw avx2 /proc/cpuinfo 2>/dev/null; then
  args="$args -DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF -DGGML_BMI2=OFF"
fi
args=${CADENZA_LLAMA_CMAKE_ARGS:-$args}

key=$(printf '%s|%s|%s|%s' "$version" "$args" "$(uname -m)" "$("$python" -c 'import sys; print(sys.implementation.cache_tag)')" | sha256sum | cut -c1-16)
wheels="${CADENZA_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cadenza/wheels}/llama-cpp-python-$key"

installed=$("$python" -c 'import json, importlib.metadata as m
try:
    d = m.distribution("llama-cpp-python")
    print(d.version + "|" + ((d.read_text("cadenza_build.txt") or "").splitlines() or [""])[0])
except m.PackageNotFoundError:
    print("")' 2>/dev/null || true)
if [ "$installed" = "$version|$key" ]; then
  exit 0
fi

if ! ls "$wheels"/llama_cpp_python-"$version"-*.whl >/dev/null 2>&1; then
  echo "building llama-cpp-python $version portably ($args); a few minutes, once" >&2
  tmp=$(mktemp -d)
  CMAKE_ARGS="$args" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$python" -m pip wheel --quiet --no-cache-dir --no-deps --no-binary llama-cpp-python \
    -w "$tmp" "llama-cpp-python==$version"
  # Mark the wheel so 'cadenza doctor' and this script can tell a portable build from a
  # native one: a small file in its .dist-info.
  "$python" - "$tmp" "$key" "$args" <<'PY'
import pathlib, sys, zipfile, hashlib, base64
folder, key, args = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
(wheel,) = folder.glob("llama_cpp_python-*.whl")
with zipfile.ZipFile(wheel) as zf:
    names = zf.namelist()
    info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/RECORD"))
    entries = {n: zf.read(n) for n in names}
marker = f"{info}/cadenza_build.txt"
body = f"{key}\n{args}\n".encode()
entries[marker] = body
digest = base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b"=").decode()
record = f"{info}/RECORD"
entries[record] = entries[record].rstrip(b"\n") + f"\n{marker},sha256={digest},{len(body)}\n".encode()
with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
    for name, data in entries.items():
        zf.writestr(name, data)
PY
  mkdir -p "$wheels"
  mv "$tmp"/*.whl "$wheels"/
  rm -rf "$tmp"
fi
"$python" -m pip install --quiet "numpy>=1.20" "typing-extensions>=4.5" "diskcache>=5.6.1" "jinja2>=2.11.3"
"$python" -m pip install --quiet --force-reinstall --no-deps --no-index --find-links "$wheels" \
  "llama-cpp-python==$version"
