#!/usr/bin/env bash
# One-step set-up on a fresh Debian/Ubuntu machine (Python >= 3.10, no GPU needed):
#   - a virtual environment in .venv (reused if present),
#   - CPU torch 2.13.0 (set LATENTGEO_TORCH to another pip spec, e.g. a CUDA build, if you want one),
#   - latentgeo with its extras (never torchvision; 'all' includes OpenMM for `tps alanine-full` and its tests),
#   - the Fashion-MNIST IDX files via apt where apt is usable.
#   - with --test: also Debian's chromium, for the test that renders the HTML report in a headless browser.
# Idempotent: a second run only checks that everything is in place.
set -euo pipefail
WITH_TEST=0
for a in "$@"; do
  case "$a" in
    --test) WITH_TEST=1 ;;
    *) echo "error: unknown option '$a'; use --test or nothing" >&2; exit 2 ;;
  esac
done
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
  # word-split on purpose: LATENTGEO_TORCH may carry pip options (e.g. an --index-url for a CUDA build)
  # shellcheck disable=SC2086
  $VPIP install -q ${LATENTGEO_TORCH:-torch==2.13.0}
  $VPIP install -q -e ".[all]"
  if .venv/bin/python -m pip show torchvision >/dev/null 2>&1; then
    echo "error: torchvision got installed; it replaces CPU torch. Remove it: .venv/bin/pip uninstall -y torchvision" >&2
    exit 2
  fi
  echo "$want" > "$stamp"
fi
SUDO=""; [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo -n"
apt_install() {  # apt_install PKG: quiet, tolerant of a stale package list; returns non-zero if it cannot
  command -v apt-get >/dev/null 2>&1 || return 1
  $SUDO apt-get install -y -q "$1" >/dev/null 2>&1 \
    || { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q "$1" >/dev/null 2>&1; }
}
# Fashion-MNIST (optional; the embedded default dataset, scikit-learn digits, needs nothing).
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && [ -z "${LATENTGEO_DATA:-}" ]; then
  apt_install dataset-fashion-mnist \
    || echo "note: could not install Fashion-MNIST with apt; run 'sudo apt-get install -y dataset-fashion-mnist' or point LATENTGEO_DATA at a folder with its IDX files (the default dataset, digits, needs nothing)." >&2
fi
if [ "$WITH_TEST" = 1 ] && ! command -v chromium >/dev/null 2>&1; then
  apt_install chromium \
    || echo "note: could not install chromium with apt; the browser test of the HTML report will be skipped." >&2
fi
