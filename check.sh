#!/usr/bin/env bash
# The static checks CI runs (tests/test_checks.py calls this script): lint, format, types, layers.
# Run from anywhere after `bash setup.sh --test`; exits non-zero on the first failing check.
set -euo pipefail
cd "$(dirname "$0")"
bin=.venv/bin
"$bin/ruff" check .
"$bin/ruff" format --check .
"$bin/mypy"
"$bin/python" tests/import_graph.py >/dev/null  # no cycle, no upward import, late imports explained
