"""Print the declared minimum versions of skfusion's core dependencies as pip pins.

Reads ``[project] dependencies`` in pyproject.toml and turns each ``name>=X`` floor into
``name==X``, so that the minimum-versions leg of ``.ci/run`` installs exactly what
pyproject.toml promises to support, and cannot drift from it.
"""

# SPDX-License-Identifier: BSD-3-Clause

import re
import sys
import tomllib
from pathlib import Path


def pins(pyproject):
    """The ``name==floor`` pins of the core dependencies declared in ``pyproject``."""
    with open(pyproject, "rb") as f:
        dependencies = tomllib.load(f)["project"]["dependencies"]
    result = []
    for requirement in dependencies:
        match = re.fullmatch(
            r"\s*([A-Za-z0-9_.\[\]-]+)\s*>=\s*([0-9][0-9.]*)\s*(,.*)?", requirement
        )
        if match is None:
            raise SystemExit(f"{pyproject}: no '>=' floor in dependency {requirement!r}")
        result.append(f"{match.group(1)}=={match.group(2)}")
    return result


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[1]
    print("\n".join(pins(sys.argv[1] if len(sys.argv) > 1 else root / "pyproject.toml")))
