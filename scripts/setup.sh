#!/usr/bin/env bash
# One-step set-up on a fresh Debian/Ubuntu machine (Python >= 3.10, no GPU needed):
#   - a virtual environment in .venv (reused if present),
#   - CPU torch 2.13.0 (set LATENTGEO_TORCH to another pip spec, e.g. a CUDA build, if you want one),
#   - latentgeo with its extras (never torchvision),
#   - the Fashion-MNIST IDX files via apt where apt is usable.
# Idempotent: a second run only checks that everything is in place.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPIP=".venv/bin/python -m pip"
stamp=.venv/.latentgeo-setup
want="$(cat pyproject.toml scripts/setup.sh | md5sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  $VPIP install -q --upgrade pip >/dev/null 2>&1 || true
  $VPIP install -q "${LATENTGEO_TORCH:-torch==2.13.0}"
  $VPIP install -q -e ".[all]"
  if .venv/bin/python -m pip show torchvision >/dev/null 2>&1; then
    echo "error: torchvision got installed; it replaces CPU torch. Remove it: .venv/bin/pip uninstall -y torchvision" >&2
    exit 2
  fi
  echo "$want" > "$stamp"
fi
# Fashion-MNIST (optional; the embedded default dataset, scikit-learn digits, needs nothing).
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && [ -z "${LATENTGEO_DATA:-}" ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo -n"
    ( $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
      || { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; } ) \
      || echo "note: could not install Fashion-MNIST with apt; run 'sudo apt-get install -y dataset-fashion-mnist' or point LATENTGEO_DATA at a folder with its IDX files." >&2
  else
    echo "note: Fashion-MNIST not found; install Debian's dataset-fashion-mnist or point LATENTGEO_DATA at its IDX files." >&2
  fi
fi
