"""skfusion._compat: the one home of the names skfusion takes from its dependencies' private or
version-dependent APIs. These tests also run in the minimum-versions leg of ``.ci/run``."""

# SPDX-License-Identifier: BSD-3-Clause

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np

from skfusion import _compat
from skfusion.fusion._attention_net import as_float64, forward, init_params

PACKAGE = Path(_compat.__file__).resolve().parent


def _private_imports(path):
    """``(line, statement)`` of each import of a private scikit-learn module or name."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            parts = node.module.split(".")
            names = [alias.name for alias in node.names]
            private_module = any(p.startswith("_") for p in parts[1:]) or "externals" in parts
            private_name = any(n.startswith("_") for n in names)
            if parts[0] == "sklearn" and (private_module or private_name):
                found.append((node.lineno, f"from {node.module} import {', '.join(names)}"))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "sklearn" and any(p.startswith("_") for p in parts[1:]):
                    found.append((node.lineno, f"import {alias.name}"))
    return found


def test_private_sklearn_names_are_imported_only_in_compat():
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {statement}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "_compat.py"
        for line, statement in _private_imports(path)
    ]
    assert offenders == [], "import these from skfusion._compat:\n" + "\n".join(offenders)


def test_numpy_namespace_runs_the_attention_forward_pass():
    # AttentionFusion's predict runs this numpy forward pass (no torch); it calls the array-API
    # functions concat and permute_dims, which numpy 1.x does not have
    rng = np.random.default_rng(0)
    layout = [(1, 3), (2, 4)]  # a pooled vector as one token, another as two tokens
    params = as_float64(init_params(rng, layout, d_model=8, n_layers=2, d_ff=16, n_out=3))
    n = 5
    inputs = [rng.standard_normal((n, 3)), rng.standard_normal((n, 4))]
    present = np.array([[1, 1], [1, 0], [0, 1], [1, 1], [1, 1]], dtype=np.float64)
    valid = [present[:, :1].copy(), np.repeat(present[:, 1:], 2, axis=1)]
    logits, attention = forward(
        params, inputs, valid, present, n_heads=2, n_layers=2, xp=_compat.xp_numpy,
        keep_attention=True,
    )
    assert isinstance(logits, np.ndarray) and logits.shape == (n, 3)
    assert np.isfinite(logits).all()
    assert len(attention) == 2
    # on numpy 1.x the array-API wrapper calls numpy's own functions: the same numbers, to the
    # bit, as numpy's names for concat and permute_dims give
    np.testing.assert_array_equal(logits, _forward_by_hand(params, inputs, valid, present))
    if _compat.NUMPY_2:
        assert _compat.xp_numpy is np


def _forward_by_hand(params, inputs, valid, present):
    """The forward pass with numpy 1.x's names for concat and permute_dims."""

    class Namespace:
        def __getattr__(self, name):
            return getattr(np, name)

        concat = staticmethod(np.concatenate)
        permute_dims = staticmethod(np.transpose)

    return forward(params, inputs, valid, present, n_heads=2, n_layers=2, xp=Namespace())[0]


def test_importing_compat_imports_no_torch():
    code = (
        "import sys, skfusion._compat as c; "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "c.xp_numpy; assert 'torch' not in sys.modules, 'torch imported by xp_numpy'"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
