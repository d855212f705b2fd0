#!/usr/bin/env bash
# Make vLLM's built-in `suffix` speculative method usable in the active virtual environment.
#
# vLLM imports `arctic_inference.suffix_decoding.SuffixDecodingCache` for it. PyPI has arctic-inference only as an
# sdist whose isolated build pulls a CUDA torch (minutes, GBs) and compiles CUDA ops. The suffix tree itself is a
# small C++/nanobind extension with no torch or CUDA in it, so this script builds just that from the pinned sdist
# and installs it as a local wheel named arctic-inference (version 0.3.0+specplug). A wheel, not copied files or a
# .pth: pip then knows it is there (`pip show`, `pip uninstall`, a later real install replaces it cleanly).
# The wheel holds only arctic_inference/__init__.py and arctic_inference/suffix_decoding/ (cache.py + _C): none of
# Arctic's vLLM patches and none of its `vllm.general_plugins` entry point, which would patch vLLM in every process.
#
# Idempotent: exits at once when the import already works. Safe under CI=true with no stdin. Progress lines start
# with "[specplug] suffix:". On failure: one line saying what failed, then a non-zero exit.
# Environment: VIRTUAL_ENV (the venv to install into; default: the python3 on PATH, which must be a venv),
# SPECPLUG_ARCTIC_SDIST (a local arctic_inference-0.3.0.tar.gz to use instead of downloading it).
set -euo pipefail

VERSION="0.3.0"
SDIST_SHA256="7f22e3e1b1071c6061c0d6951be17c0fb50b08d06d6e543144c8f52faba60a36"
NANOBIND_PIN="nanobind==2.9.2" # the version the sdist's own build-system pins
LOCAL_VERSION="$VERSION+specplug"
IMPORT_CHECK="from arctic_inference.suffix_decoding import SuffixDecodingCache"
export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1

say() { echo "[specplug] suffix: $*" >&2; }

if [ -n "${VIRTUAL_ENV:-}" ]; then PY="$VIRTUAL_ENV/bin/python"; else PY="$(command -v python3 || true)"; fi
if [ -z "$PY" ] || ! "$PY" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)' 2>/dev/null; then
  say "FAILED: no active virtual environment (activate one or set VIRTUAL_ENV); the 'suffix' bench arm will be listed as unavailable"
  exit 1
fi
VENV="$("$PY" -c 'import sys; print(sys.prefix)')"

if "$PY" -c "$IMPORT_CHECK" 2>/dev/null; then
  say "arctic_inference suffix extension already importable in $VENV"
  exit 0
fi

LOG="$VENV/.specplug-suffix.log"
: >"$LOG"
fail() {
  say "FAILED: $1 (log: $LOG); the 'suffix' bench arm will be listed as unavailable"
  exit 1
}
# Two ensure-venv runs at once must not build twice into the same venv.
exec 9>"$VENV/.specplug-suffix.lock"
flock 9 2>/dev/null || true
if "$PY" -c "$IMPORT_CHECK" 2>/dev/null; then
  say "arctic_inference suffix extension already importable in $VENV"
  exit 0
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
TOOLS="$WORK/tools" # build-only Python packages (nanobind): kept out of the venv
started=$SECONDS

# 1. The sdist, pinned by hash. --no-build-isolation: pip still prepares the sdist's metadata, and in an isolated
#    build environment that means installing its build requirements (a CUDA torch, 6+ minutes, then failing here);
#    without isolation it runs the sdist's setup.py egg_info with the venv's own setuptools and torch (seconds).
if [ -n "${SPECPLUG_ARCTIC_SDIST:-}" ]; then
  say "using sdist $SPECPLUG_ARCTIC_SDIST"
  cp "$SPECPLUG_ARCTIC_SDIST" "$WORK/" || fail "cannot read SPECPLUG_ARCTIC_SDIST=$SPECPLUG_ARCTIC_SDIST"
else
  say "downloading the arctic-inference==$VERSION sdist"
  if ! "$PY" -c 'import setuptools' 2>/dev/null; then
    "$PY" -m pip install -q --target "$TOOLS" setuptools >>"$LOG" 2>&1 || fail "pip could not install setuptools"
  fi
  echo "arctic-inference==$VERSION --hash=sha256:$SDIST_SHA256" >"$WORK/req.txt"
  PYTHONPATH="$TOOLS${PYTHONPATH:+:$PYTHONPATH}" timeout 600 "$PY" -m pip download -q --no-deps --no-binary :all: \
    --no-build-isolation --require-hashes -r "$WORK/req.txt" -d "$WORK" >>"$LOG" 2>&1 ||
    fail "pip could not download the arctic-inference==$VERSION sdist"
fi
sdist="$(ls "$WORK"/arctic_inference-"$VERSION".tar.gz 2>/dev/null || true)"
[ -n "$sdist" ] || fail "no arctic_inference-$VERSION.tar.gz in the download"
echo "$SDIST_SHA256  $sdist" | sha256sum -c --status || fail "the sdist's sha256 is not the pinned one"
tar -xzf "$sdist" -C "$WORK" || fail "cannot unpack $sdist"
SRC="$WORK/arctic_inference-$VERSION"
[ -f "$SRC/csrc/suffix_decoding/CMakeLists.txt" ] || fail "the sdist has no csrc/suffix_decoding/CMakeLists.txt"

# 2. nanobind, for the build only.
say "installing $NANOBIND_PIN for the build (temporary, not into the venv)"
"$PY" -m pip install -q --target "$TOOLS" "$NANOBIND_PIN" >>"$LOG" 2>&1 || fail "pip could not install $NANOBIND_PIN"
export PYTHONPATH="$TOOLS${PYTHONPATH:+:$PYTHONPATH}"

# 3. The suffix-tree extension alone (C++20, about a minute on 2 cores).
command -v cmake >/dev/null || fail "cmake is not installed (apt-get install cmake)"
command -v c++ >/dev/null || fail "no C++ compiler (apt-get install g++)"
say "building the suffix-tree extension with cmake (about a minute)"
timeout 600 cmake -S "$SRC/csrc/suffix_decoding" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release \
  -DPython_EXECUTABLE="$PY" -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$WORK/out" >>"$LOG" 2>&1 ||
  fail "cmake could not configure csrc/suffix_decoding"
timeout 900 cmake --build "$WORK/build" -j "$(nproc)" >>"$LOG" 2>&1 || fail "the C++ build of the suffix-tree extension failed"
ext="$(ls "$WORK"/out/_C.*.so 2>/dev/null | head -n 1 || true)"
[ -n "$ext" ] || fail "the build produced no _C extension module"

# 4. A wheel with only the pieces vLLM imports, installed by pip (stdlib only: no wheel/setuptools needed).
say "packaging arctic-inference $LOCAL_VERSION (suffix decoding only) as a wheel"
whl="$("$PY" - "$SRC" "$ext" "$WORK/dist" "$LOCAL_VERSION" 2>>"$LOG" <<'PY'
import base64, hashlib, pathlib, sys, sysconfig, zipfile

src, ext, dist, version = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3]), sys.argv[4]
pkg = src / "arctic_inference"
py = f"cp{sys.version_info.major}{sys.version_info.minor}"
tag = f"{py}-{py}-" + sysconfig.get_platform().replace("-", "_").replace(".", "_")
info = f"arctic_inference-{version}.dist-info"
files = {
    "arctic_inference/__init__.py": (pkg / "__init__.py").read_bytes(),
    "arctic_inference/suffix_decoding/__init__.py": (pkg / "suffix_decoding" / "__init__.py").read_bytes(),
    "arctic_inference/suffix_decoding/cache.py": (pkg / "suffix_decoding" / "cache.py").read_bytes(),
    f"arctic_inference/suffix_decoding/{ext.name}": ext.read_bytes(),
    f"{info}/LICENSE": (src / "LICENSE").read_bytes(),
    f"{info}/METADATA": (
        "Metadata-Version: 2.1\nName: arctic-inference\n"
        f"Version: {version}\n"
        "Summary: Snowflake Arctic Inference, suffix decoding only: built from the 0.3.0 sdist by specplug's "
        "scripts/install-suffix.sh\nLicense: Apache-2.0\nRequires-Dist: numpy\n"
    ).encode(),
    f"{info}/WHEEL": f"Wheel-Version: 1.0\nGenerator: specplug-install-suffix\nRoot-Is-Purelib: false\nTag: {tag}\n".encode(),
    f"{info}/top_level.txt": b"arctic_inference\n",
}
def digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
record = "".join(f"{name},{digest(data)},{len(data)}\n" for name, data in files.items()) + f"{info}/RECORD,,\n"
files[f"{info}/RECORD"] = record.encode()
dist.mkdir(parents=True, exist_ok=True)
out = dist / f"arctic_inference-{version}-{tag}.whl"
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
    for name, data in files.items():
        zf.writestr(zipfile.ZipInfo(name, date_time=(2025, 1, 1, 0, 0, 0)), data, zipfile.ZIP_DEFLATED)
print(out)
PY
)" || fail "could not package the wheel"
"$PY" -m pip install -q --no-deps --no-index --force-reinstall "$whl" >>"$LOG" 2>&1 || fail "pip could not install $whl"

# 5. The real check: vLLM's import, and one speculation through the native tree.
"$PY" - >>"$LOG" 2>&1 <<'PY' || fail "the installed extension does not import or does not speculate"
import numpy as np
from arctic_inference.suffix_decoding import SuffixDecodingCache

cache = SuffixDecodingCache(max_tree_depth=8, max_cached_requests=4)
cache.start_request("r", np.array([1, 2, 3, 4, 5, 1, 2, 3], dtype=np.int32))
cache.add_active_response("r", [4])
draft = cache.speculate("r", np.array([1, 2, 3, 4], dtype=np.int32), max_spec_tokens=4)
assert draft.token_ids[:1] == [5], draft
PY
say "installed arctic-inference $LOCAL_VERSION (suffix decoding only) into $VENV in $((SECONDS - started)) s"
