#!/usr/bin/env bash
# Create a virtualenv for nnU-Net v2 and install the pinned release from PyPI into it.
# Usage: bench/peers/nnunet_setup.sh [VENV_DIR]        (default /tmp/nnunet-venv)
#
# torch: by default the venv sees the system site-packages, so nnU-Net runs on exactly the torch build toothseg uses
# (2.14.1 here; the pip constraint file in /etc/xdg/pip caps it, and torch 2.14.1 from PyPI would pull ~3 GB of CUDA
# wheels). Everything nnU-Net itself needs (nnunetv2, acvl-utils, dynamic-network-architectures, batchgenerators(v2),
# SimpleITK, ...) is installed inside the venv, which shadows the system packages; the system is never modified.
# NNUNET_ISOLATED=1 makes a fully isolated venv instead (torch from /opt/wheels' CPU wheel if present, else PyPI).
set -euo pipefail
VENV="${1:-/tmp/nnunet-venv}"
NNUNET_VERSION="${NNUNET_VERSION:-2.8.1}"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  if [ "${NNUNET_ISOLATED:-0}" = 1 ]; then
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet "torch<=2.14.1"
  else
    "$PY" -m venv --system-site-packages "$VENV"
  fi
fi
"$VENV/bin/python" -m pip install --quiet "nnunetv2==${NNUNET_VERSION}" 2>&1 | grep -v "is ignored: it is neither" || true

"$VENV/bin/python" - <<'PY'
import sys, importlib.metadata as md
print("python", sys.version.split()[0])
for p in ("nnunetv2", "torch", "numpy", "SimpleITK", "batchgenerators", "batchgeneratorsv2",
          "dynamic-network-architectures", "acvl-utils"):
    try:
        print(f"{p:32s}", md.version(p))
    except md.PackageNotFoundError:
        print(f"{p:32s}", "MISSING")
import torch, nnunetv2
print("torch", torch.__version__, "threads", torch.get_num_threads(), "cuda", torch.cuda.is_available())
print("nnunetv2 at", nnunetv2.__file__)
PY
for cmd in nnUNetv2_plan_and_preprocess nnUNetv2_train nnUNetv2_predict; do
  [ -x "$VENV/bin/$cmd" ] || { echo "missing $VENV/bin/$cmd" >&2; exit 1; }
done
echo "nnU-Net venv ready: $VENV"
