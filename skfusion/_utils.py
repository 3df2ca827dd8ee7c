"""Small helpers shared across skfusion: optional imports, missing-value detection, workers."""

# SPDX-License-Identifier: BSD-3-Clause

import importlib
import multiprocessing
import numbers

import numpy as np

__all__ = [
    "import_optional_dependency",
    "in_worker_process",
    "is_missing_item",
    "missing_mask_1d",
]

_WORKER_PROCESS_PREFIXES = ("LokyProcess", "ForkPoolWorker", "SpawnPoolWorker", "Dask")

_INSTALL_HINTS = {
    "torch": "torch==2.13.0",
    "sentence_transformers": "sentence-transformers",
    "librosa": "librosa",
    "onnxruntime": "onnxruntime",
    "onnx": "onnx",
    "tokenizers": "tokenizers",
    "soundfile": "soundfile",
    "PIL": "pillow",
}


def import_optional_dependency(name, *, purpose=None):
    """Import ``name`` or raise an ImportError that says which package to install.

    Parameters
    ----------
    name : str
        Module name, e.g. ``"sentence_transformers"``.
    purpose : str, default=None
        What the module is needed for, added to the error message.

    Returns
    -------
    module : module
        The imported module.
    """
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        package = _INSTALL_HINTS.get(name, name)
        why = f" for {purpose}" if purpose else ""
        raise ImportError(
            f"skfusion needs the package {package!r}{why}, but importing {name!r} failed "
            f"({exc}). Install it with `pip install {package}`."
        ) from exc


def is_missing_item(value):
    """True for the values that mean "this row has no such modality".

    ``None``, float NaN, ``pandas.NA``/``NaT``, an empty or blank string, empty bytes and an
    empty array or sequence are missing.
    """
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() == ""
    if isinstance(value, (bytes, bytearray)):
        return len(value) == 0
    if isinstance(value, numbers.Number):
        try:
            return bool(np.isnan(value))
        except TypeError:  # pragma: no cover - exotic numbers
            return False
    if isinstance(value, np.ndarray):
        return value.size == 0
    if isinstance(value, (list, tuple)):
        return len(value) == 0
    try:
        import pandas as pd

        if value is pd.NA or value is pd.NaT:
            return True
    except ImportError:  # pragma: no cover
        pass
    return False


def missing_mask_1d(values):
    """Boolean mask of missing items in a 1-D sequence of raw items."""
    values = values.to_numpy() if hasattr(values, "to_numpy") else values
    if isinstance(values, np.ndarray) and values.dtype.kind in "fc":
        return np.isnan(values)
    if isinstance(values, np.ndarray) and values.dtype.kind in "iub":
        return np.zeros(values.shape[0], dtype=bool)
    return np.fromiter((is_missing_item(v) for v in values), dtype=bool, count=len(values))


def in_worker_process():
    """Whether this process is a worker of a parallel pool.

    True in a child process (``multiprocessing.parent_process()`` is set: joblib's loky
    workers, ``multiprocessing`` pools, ``ProcessPoolExecutor``, Dask's nanny-started workers)
    and in a process whose name is a pool worker's (``LokyProcess``, ``ForkPoolWorker``,
    ``SpawnPoolWorker``, ``Dask...``). Such workers get one ONNX Runtime thread by default and
    draw no progress bars.

    Returns
    -------
    worker : bool
        True inside a worker process.

    Examples
    --------
    >>> from skfusion._utils import in_worker_process
    >>> in_worker_process()
    False
    """
    if multiprocessing.parent_process() is not None:
        return True
    return multiprocessing.current_process().name.startswith(_WORKER_PROCESS_PREFIXES)
