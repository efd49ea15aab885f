#!/usr/bin/env bash
# The project's test command (README): the whole suite, headless.
set -euo pipefail
cd "$(dirname "$0")/.."
export QT_QPA_PLATFORM="${QT_QPA_PLATFORM:-offscreen}"
exec python3 -m pytest "$@"
