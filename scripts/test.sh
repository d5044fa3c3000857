#!/usr/bin/env bash
# The whole test suite on a fresh machine: set-up, JS bundle check, unit/integration/browser
# tests and the tutorial notebooks (nbval). Usage: bash scripts/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev

# The committed JS bundle must be what a fresh build of js/ produces (users never need node).
if [ -f js/package.json ]; then
  echo "== checking that semlens_widgets/static matches a fresh build of js/"
  (cd js && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build)
  if [ -n "$(git status --porcelain -- semlens_widgets/static)" ]; then
    git status --porcelain -- semlens_widgets/static
    git --no-pager diff --stat -- semlens_widgets/static
    echo "FAIL: the committed bundle differs from a fresh build: run 'cd js && npm run build' and commit" >&2
    exit 1
  fi
fi

mkdir -p artifacts/screenshots
# One demo store for the whole run: the first browser test fills it (tests/_jlab.py,
# filled_demo_store), the other browser tests, the marimo test and the notebooks (nbval, whose
# store is notebooks/demo-lens-store) load it instead of computing the demo lens again.
mkdir -p artifacts/demo-lens-store
if [ ! -e notebooks/demo-lens-store ] && [ ! -L notebooks/demo-lens-store ]; then
  ln -s ../artifacts/demo-lens-store notebooks/demo-lens-store
fi
echo "== pytest (tests/ and notebooks/ under nbval)"
python3 -m pytest -q --timeout 900 --durations=20 --nbval-lax tests notebooks "$@"
