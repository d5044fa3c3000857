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
echo "== pytest (tests/ and notebooks/ under nbval)"
python3 -m pytest -q --timeout 900 --nbval-lax tests notebooks "$@"
