#!/usr/bin/env bash
# Install the reference implementation (stable-audio-tools 0.0.20) for bench/bench_models.py into bench/.ref-site,
# isolated from the project's .venv: no dependencies resolved (torch stays the venv's), only the extra modules its
# autoencoder, DiT and conditioner modules import. Idempotent: does nothing when the import already works.
# The bench runs it with PYTHONPATH=bench/.ref-site in a subprocess only; bench/.ref-site is not committed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SITE=bench/.ref-site
check() {
  PYTHONPATH=$SITE ENABLE_TORCH_COMPILE=0 "$PY" -c "
import stable_audio_tools.models.autoencoders, stable_audio_tools.models.dit
import stable_audio_tools.models.diffusion, stable_audio_tools.models.conditioners" >/dev/null 2>&1
}
if check; then echo "reference already installed in $SITE"; exit 0; fi
mkdir -p "$SITE"
# pip resolves nothing (--no-deps) and never touches the venv (--target); the pins are what stable-audio-tools
# 0.0.20 declares where it pins (alias-free-torch), else the current release.
"$PY" -m pip install -q --no-deps --ignore-requires-python --upgrade --target "$SITE" \
  stable-audio-tools==0.0.20 alias-free-torch==0.0.6 torchsde==0.2.6 trampoline==0.1.2 einops-exts==0.0.4 \
  PyWavelets==1.9.0
check || { echo "stable_audio_tools still fails to import from $SITE" >&2; exit 1; }
echo "reference installed in $SITE"
