#!/usr/bin/env bash
# Install everything semlens_widgets needs on a fresh machine (idempotent, offline-safe apart from
# the package registries). Usage: bash scripts/setup.sh [runtime|dev]
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-dev}"
PY="${PYTHON:-python3}"

# Python package (editable) with its dependencies. torch/torchvision come from PyPI.
if [ "$what" = "dev" ]; then
  "$PY" -m pip install --disable-pip-version-check -q -e ".[dev]"
else
  "$PY" -m pip install --disable-pip-version-check -q -e .
fi

# Debian's Chromium for the browser tests (playwright cannot download its own browsers offline).
if [ "$what" = "dev" ] && [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = "0" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
  else
    echo "setup: /usr/bin/chromium missing and not root: browser tests will be skipped" >&2
  fi
fi
