#!/usr/bin/env bash
# The test suite with the rANS extension built under AddressSanitizer and UndefinedBehaviorSanitizer.
#
#   bash tests/fuzz/asan_suite.sh [PYTEST ARGS ...]      # default: the whole suite, -x -q
#
# The repository is cloned (its committed state) into a work folder (ASAN_WORK, default a
# temporary one), the extension (models/_rans.c) rebuilt there with clang -fsanitize=address,undefined, and pytest
# runs in that copy, first on PYTHONPATH, with the ASan runtime preloaded into Python (which is not itself
# instrumented: every allocation is still tracked by the preloaded allocator, and every access
# of the extension is checked). Subprocesses the tests start inherit both. A report of either
# sanitizer aborts the run with its stack (exit non-zero); the script first checks that the
# instrumented extension is the one imported.
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${ASAN_WORK:-$(mktemp -d)}
py=${PYTHON:-python}
cc=${CC_FUZZ:-clang}
shared=$($py -c 'from lae_vbr.paths import shared_dir; print(shared_dir().resolve())')
rm -rf "$work/repo"
git clone -q --no-local . "$work/repo"
cd "$work/repo"
work="$work/repo"
suffix=$($py -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
include=$($py -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
ext="$work/src/lae_vbr/models/_rans$suffix"
$cc -shared -fPIC -g -O1 -std=c99 -fno-omit-frame-pointer \
    -fsanitize=address,undefined -fno-sanitize-recover=undefined \
    -I"$include" src/lae_vbr/models/_rans.c -o "$ext"
export LAE_VBR_SHARED="${LAE_VBR_SHARED:-$shared}"
runtime=$($cc -print-file-name=libclang_rt.asan-x86_64.so)
export LD_PRELOAD="$runtime"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:print_stacktrace=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export PYTHONPATH="$work/src${PYTHONPATH:+:$PYTHONPATH}"
loaded=$($py -c 'import lae_vbr.models._rans as r; print(r.__file__)')
if [[ "$loaded" != "$ext" ]]; then
    echo "asan_suite: imported $loaded, not the instrumented $ext" >&2
    exit 1
fi
nm -D "$ext" | grep -q __asan_report || { echo "asan_suite: $ext is not instrumented" >&2; exit 1; }
echo "asan_suite: $ext (ASan + UBSan) with $runtime preloaded"
if [[ $# -eq 0 ]]; then
    set -- -x -q tests
fi
# ASan's allocator replaces glibc's malloc, whose settings for freed memory (lae_vbr.heap) this
# test measures: it cannot hold under ASan and says nothing about the extension.
$py -m pytest -p no:cacheprovider \
    --deselect tests/test_heap.py::test_freed_maps_are_reused_without_page_faults "$@"
