#!/usr/bin/env bash
# The main job on a fresh machine: install, then run SemanticLens on the embedded demo world
# (offline). Results go to ./demo-lens-store; a second run loads them in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh runtime
semlens demo --store ./demo-lens-store "$@"
