"""Every name skfusion takes from a dependency's private or version-dependent API, in one place.

As imbalanced-learn's ``imblearn/utils/fixes.py`` and skrub's ``_sklearn_compat.py``: the rest
of skfusion imports these names from here, never from their private homes, so that when a
dependency moves or changes one of them, this module is the only one to adapt, and the
minimum-versions leg of ``.ci/run`` (which installs the floors of ``pyproject.toml``) tells
whether the floors still hold.

What differs between the supported versions, and how it is bridged:

- numpy < 2 has no array-API ``concat`` / ``permute_dims``, which the numpy forward pass of
  :class:`~skfusion.AttentionFusionClassifier` calls: :data:`xp_numpy` is numpy itself on
  numpy 2, and scikit-learn's vendored ``array_api_compat.numpy`` wrapper on numpy 1.x.
- scikit-learn < 1.8 is not supported: 1.6 has no ``sklearn.utils._repr_html``, no vendored
  ``array_api_compat`` and no ``with_config_and_warning_filters`` in ``sklearn.utils.parallel``;
  1.7 drops the index of a 1-D Series under ``set_output(transform="pandas")``. The floor is
  1.8 (see the CHANGELOG).

The rest are scikit-learn's private helpers, unchanged from 1.8 to 1.9, that skfusion's
meta-estimators use as scikit-learn's own do.

``xp_numpy`` and ``xp_torch`` are resolved on first use (``xp_torch`` imports torch), so
importing this module stays as light as importing scikit-learn.
"""

# SPDX-License-Identifier: BSD-3-Clause

import numpy as np
from sklearn.base import _fit_context
from sklearn.utils import _safe_indexing
from sklearn.utils._metadata_requests import _raise_for_params, _routing_enabled
from sklearn.utils._optional_dependencies import check_matplotlib_support
from sklearn.utils._param_validation import (
    HasMethods,
    Interval,
    InvalidParameterError,
    StrOptions,
    validate_params,
)
from sklearn.utils._repr_html.estimator import _VisualBlock
from sklearn.utils._user_interface import _print_elapsed_time
from sklearn.utils.metaestimators import _BaseComposition
from sklearn.utils.validation import _check_sample_weight, _estimator_has

__all__ = [
    "HasMethods",
    "Interval",
    "InvalidParameterError",
    "NUMPY_2",
    "StrOptions",
    "_BaseComposition",
    "_VisualBlock",
    "_check_sample_weight",
    "_estimator_has",
    "_fit_context",
    "_print_elapsed_time",
    "_raise_for_params",
    "_routing_enabled",
    "_safe_indexing",
    "check_matplotlib_support",
    "validate_params",
]

NUMPY_2 = int(np.__version__.split(".")[0]) >= 2


def _xp_numpy():
    if NUMPY_2:
        return np
    from sklearn.externals.array_api_compat import numpy as xp

    return xp


def _xp_torch():
    from sklearn.externals.array_api_compat import torch as xp

    return xp


_LAZY = {"xp_numpy": _xp_numpy, "xp_torch": _xp_torch}


def __getattr__(name):
    """``xp_numpy`` (numpy as an array-API namespace) and ``xp_torch`` (torch's), on first use.

    ``from skfusion._compat import xp_torch`` imports torch; nothing else here does.
    """
    if name in _LAZY:
        value = _LAZY[name]()
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
