#!/usr/bin/env bash
# Install everything semlens_widgets needs on a fresh machine (idempotent, offline-safe apart from
# the package registries). Usage: bash scripts/setup.sh [runtime|dev|notebook]
#   runtime   the package (what `semlens demo` needs)
#   notebook  + JupyterLab and marimo, to open notebooks/
#   dev       + everything the tests need (includes notebook), and Debian's Chromium
#
# torch: PyPI's torch wheels for Linux bring the CUDA libraries (a ~6 GB environment). On a machine
# without an NVIDIA GPU (no `nvidia-smi`) torch and torchvision come from PyTorch's CPU index
# (~1 GB) instead. That index is asked once with a 10 s timeout: unreachable (an offline mirror,
# a firewall), the install falls back to PyPI and nothing else changes. A torch that is already
# installed is kept. Override: SLW_TORCH_INDEX=<url> (any index), SLW_TORCH_INDEX=pypi (PyPI).
# SLW_SETUP_DRY_RUN=1 prints the pip commands instead of running them (tests/test_wheel.py).
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-dev}"
PY="${PYTHON:-python3}"
PIP=("$PY" -m pip install --disable-pip-version-check -q)
if [ "${SLW_SETUP_DRY_RUN:-0}" = "1" ]; then
  PIP=(echo "dry-run:" pip install)
fi

case "$what" in
  runtime) extra="" ;;
  notebook) extra="[notebook]" ;;
  dev) extra="[dev]" ;;
  *) echo "setup: unknown target '$what'; accepted: runtime, notebook, dev" >&2; exit 2 ;;
esac

cpu_torch() {
  # 0 when torch + torchvision were installed from the CPU index; 1 to let pip take them from PyPI
  if "$PY" -c "import torch, torchvision" >/dev/null 2>&1; then
    return 1  # already installed (whatever build): keep it
  fi
  if command -v nvidia-smi >/dev/null 2>&1; then
    return 1  # an NVIDIA GPU: PyPI's CUDA build is the one to use
  fi
  local index="${SLW_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
  if [ "$index" = "pypi" ]; then
    return 1
  fi
  if ! "$PY" - "$index" <<'EOF' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(sys.argv[1].rstrip("/") + "/torch/", timeout=10).close()
EOF
  then
    echo "setup: no GPU, but PyTorch's CPU index ($index) is unreachable: torch comes from PyPI (with CUDA libraries, ~6 GB)" >&2
    return 1
  fi
  echo "setup: no NVIDIA GPU (no nvidia-smi): torch + torchvision from PyTorch's CPU index ($index)"
  if "${PIP[@]}" --timeout 30 torch torchvision --index-url "$index"; then
    return 0
  fi
  echo "setup: the CPU build could not be installed from $index: torch comes from PyPI" >&2
  return 1
}

cpu_torch || true

# Python package (editable) with its dependencies (torch from PyPI unless installed above).
"${PIP[@]}" -e ".${extra}"

# Debian's Chromium for the browser tests (playwright cannot download its own browsers offline).
if [ "$what" = "dev" ] && [ ! -x /usr/bin/chromium ] && [ "${SLW_SETUP_DRY_RUN:-0}" != "1" ]; then
  if [ "$(id -u)" = "0" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
  else
    echo "setup: /usr/bin/chromium missing and not root: browser tests will be skipped" >&2
  fi
fi
