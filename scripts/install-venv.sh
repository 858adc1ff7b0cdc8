#!/usr/bin/env bash
# Create the project's virtual environment with the PyPI packages the tests,
# the demo and the bench need. torch 2.13.0 is the CPU build.
set -euo pipefail
venv=${1:-.venv}
py=${PYTHON_SYS:-python3}

if [ ! -x "$venv/bin/python" ]; then
    "$py" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -r requirements-dev.txt
