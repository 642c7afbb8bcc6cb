#!/usr/bin/env bash
# redis-py (pinned in requirements.txt) in a private venv, against a fresh tidewire
# per test module.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
.venv/bin/python -m pytest -q tests
