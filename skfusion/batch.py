"""Batch scoring: :class:`BatchPredictor` (one model per process, any DataFrame engine), its
resumable file-to-file scoring (:meth:`BatchPredictor.predict_files`, what ``skfusion predict``
runs) and :func:`predict_dask`.

A :class:`BatchPredictor` holds a model *path* and scoring options, never the model: it is small
to pickle, so engines that ship the function to their workers (Dask, Spark's ``mapInPandas``,
Ray's ``map_batches``) send a few hundred bytes per task, and each worker process loads and
verifies the model once, on first use, through a per-process cache (:func:`model_cache_info`).
"""

# SPDX-License-Identifier: BSD-3-Clause

import csv
import glob
import io
import json
import logging
import os
import re
import shutil
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from numbers import Integral

import numpy as np
import pandas as pd

from .io import load

__all__ = ["BatchPredictor", "clear_model_cache", "model_cache_info", "predict_dask"]

METHODS = ("predict", "predict_proba", "transform")
MANIFEST = "_manifest.json"
_MANIFEST_VERSION = 1
_PARQUET = (".parquet", ".pq")
_CSV = (".csv", ".csv.gz", ".csv.bz2", ".csv.zst", ".tsv")
_JSONL = (".jsonl", ".ndjson", ".json", ".jsonl.gz", ".ndjson.gz")

# predict_files reports here (a resumed run, the summary, rows with an unreadable item); the
# ``skfusion predict`` command shows these records on stderr.
logger = logging.getLogger(__name__)
_MAX_MODELS = 4  # models kept per process (least recently used dropped)

_models = OrderedDict()
_models_lock = threading.Lock()
_stats = {"loads": 0}


def model_cache_info():
    """What this process's model cache holds and how often it deserialised a model.

    Returns
    -------
    info : dict
        ``loads``: models deserialised by this process so far (one per distinct model file
        and settings, however many tasks or calls used it); ``models``: paths held now.

    Examples
    --------
    >>> from skfusion.batch import model_cache_info
    >>> sorted(model_cache_info())
    ['loads', 'models']
    """
    with _models_lock:
        return {"loads": _stats["loads"], "models": [key[1] for key in _models]}


def clear_model_cache():
    """Drop the models this process's :class:`BatchPredictor` objects loaded.

    Examples
    --------
    >>> from skfusion.batch import clear_model_cache, model_cache_info
    >>> clear_model_cache()
    >>> model_cache_info()["models"]
    []
    """
    with _models_lock:
        _models.clear()


def _iter_encoders(model):
    """skfusion encoders anywhere in a fitted model (fitted clones and the spec's templates)."""
    from sklearn.base import BaseEstimator

    from .encoders._base import RawItemEncoderMixin

    seen, stack = set(), [model]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, RawItemEncoderMixin):
            yield obj
        if isinstance(obj, (list, tuple)):
            stack.extend(obj)
        elif isinstance(obj, dict):
            stack.extend(obj.values())
        elif hasattr(obj, "__dict__") and (
            isinstance(obj, BaseEstimator) or type(obj).__module__.startswith("skfusion.")
        ):
            stack.extend(vars(obj).values())


def _configure(model, device, on_error):
    """Set ``device`` / ``on_error`` on every skfusion encoder of a fitted model.

    ``set_params`` on a fitted fusion estimator changes its modality spec, not the fitted
    encoders it scores with, so the encoders are reached directly.
    """
    changes = {"device": device, "on_error": on_error}
    changes = {key: value for key, value in changes.items() if value is not None}
    if not changes:
        return
    for encoder in _iter_encoders(model):
        params = encoder.get_params(deep=False)
        own = {key: value for key, value in changes.items() if key in params}
        if own:
            encoder.set_params(**own)


def _cached_model(path, sha256, trusted, device, on_error):
    stat = os.stat(path)
    key = (os.getpid(), path, sha256, trusted, stat.st_size, stat.st_mtime_ns, device, on_error)
    with _models_lock:  # one lock: threads of a worker wait for the one load
        model = _models.get(key)
        if model is not None:
            _models.move_to_end(key)
            return model
        model = load(path, sha256=sha256, trusted=list(trusted) if trusted else None)
        _configure(model, device, on_error)
        _stats["loads"] += 1
        _models[key] = model
        while len(_models) > _MAX_MODELS:
            _models.popitem(last=False)
        return model


# --- rows that an encoder with on_error="missing" turned into a missing modality ---
_collector = threading.local()
_patch_lock = threading.Lock()
_patched = {}  # id(model) -> [users, encoders]


class _Counting:
    """Stands in for an encoder's ``transform``/``transform_sequence`` while a predictor runs:
    notes the rows whose item was present but came back missing (an unreadable file)."""

    def __init__(self, inner, sequence):
        self.inner = inner
        self.sequence = sequence

    def __call__(self, X, *args, **kwargs):
        out = self.inner(X, *args, **kwargs)
        rows = getattr(_collector, "rows", None)
        if rows is not None:
            _note_lost_rows(X, out, self.sequence, rows)
        return out


def _note_lost_rows(X, out, sequence, rows):
    from ._utils import missing_mask_1d
    from .encoders._base import column_values

    try:
        values, labels = column_values(X, "encoder")
        if sequence:
            lost = ~np.asarray(out[1]).any(axis=1)
        else:
            block = out.to_numpy() if hasattr(out, "to_numpy") else np.asarray(out)
            if block.dtype.kind != "f" or block.ndim != 2 or block.shape[1] == 0:
                return
            lost = np.isnan(block).all(axis=1)
        failed = np.flatnonzero(lost & ~missing_mask_1d(values))
    except (TypeError, ValueError):  # an output this check does not understand: count nothing
        return
    names = labels if labels is not None else range(len(values))
    rows.update(names[i] for i in failed)


@contextmanager
def _counting_lost_rows(model):
    """Collect, for this thread, the rows whose items became missing (``on_error="missing"``).

    Yields the set of row labels (positions in the frame the model was given). The encoders'
    methods are wrapped only while some thread scores with the model.
    """
    rows = set()
    with _patch_lock:
        entry = _patched.get(id(model))
        if entry is None:
            encoders = [e for e in _iter_encoders(model) if getattr(e, "on_error", "") == "missing"]
            for encoder in encoders:
                for name in ("transform", "transform_sequence"):
                    if hasattr(encoder, name):
                        wrapper = _Counting(getattr(encoder, name), name == "transform_sequence")
                        encoder.__dict__[name] = wrapper
            entry = _patched[id(model)] = [0, encoders]
        entry[0] += 1
    _collector.rows = rows
    try:
        yield rows
    finally:
        _collector.rows = None
        with _patch_lock:
            entry[0] -= 1
            if entry[0] == 0:
                for encoder in entry[1]:
                    encoder.__dict__.pop("transform", None)
                    encoder.__dict__.pop("transform_sequence", None)
                del _patched[id(model)]


_NOT_A_NUMBER = re.compile(r"could not convert string to float: (.+)$", re.S)


def _find_bad_value(X, exc):
    """(column, position) of the text value that ``exc`` ("could not convert string to float:
    'forty-two'", numpy's message) is about, in the text columns of X; None if not found."""
    match = _NOT_A_NUMBER.search(str(exc))
    if match is None:
        return None
    shown = match.group(1).strip()
    for column in X.columns:
        values = X[column]
        if values.dtype.kind in "biufcmM":
            continue
        for position, value in enumerate(values):
            if isinstance(value, str) and repr(value) == shown:
                return column, position
    return None


class _BadValueError(ValueError):
    """A text value where the model reads numbers: names its column, row and value."""

    def __init__(self, column, value, position, label, cause):
        self.column, self.value, self.label, self.cause = column, value, label, cause
        if hasattr(label, "item"):
            label = label.item()
        where = f"row {position}" if label == position else f"row {position} (index {label!r})"
        super().__init__(self._message(where))

    def _message(self, where):
        return (
            f"column {self.column!r} holds {self.value!r} at {where}, which the model cannot "
            f"read as a number ({self.cause})."
        )

    def at(self, where):
        """The same error, the row named as ``where`` (its place in the input files)."""
        return ValueError(self._message(where))


class BatchPredictor:
    """Score pandas DataFrames with a saved model, loaded once per process.

    The predictor keeps the model's path, not the model: pickled into a Dask task, a Spark
    ``mapInPandas`` function or a Ray actor it weighs a few hundred bytes, and each process
    loads the file once (:func:`skfusion.load`, with the same hash and type checks), on first
    use. Calling it on a DataFrame returns the output DataFrame: the ``id_columns`` first
    (copied from the input), then ``prediction`` (``method="predict"``), ``proba_<class>``
    per class (``"predict_proba"``) or the model's output feature names (``"transform"``).
    The output keeps the input's index, and a 0-row input gives a 0-row output without calling
    the model.

    Read more in the :ref:`User Guide <batch_scoring>`.

    Parameters
    ----------
    model_path : str or path-like
        A ``.skops`` or ``.joblib`` file saved by :func:`skfusion.dump`.
    method : {"predict", "predict_proba", "transform"}, default="predict"
        The model's method to call.
    id_columns : str or list of str, default=None
        Input columns copied to the output, first (row identifiers).
    keep_columns : bool, default=False
        Also copy every other input column to the output, after the id columns.
    batch_size : int, default=1000
        Rows per call of the model's method (``None``: the whole DataFrame at once). Bounds
        the memory used while scoring a large DataFrame or partition.
    sha256 : str, default=None
        Expected SHA-256 of the model file (see :func:`skfusion.load`).
    trusted : list of str, default=None
        Extra types to trust in a ``.skops`` file (see :func:`skfusion.load`).
    device : str, default=None
        Set ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"auto"``) on the model's skfusion
        encoders; ``None`` keeps theirs.
    on_error : {"raise", "missing"}, default=None
        Set ``on_error`` on the model's skfusion encoders: ``"missing"`` scores a row whose
        image or audio file cannot be read as if that modality were missing. ``None`` keeps
        theirs.

    Attributes
    ----------
    model_ : estimator
        The model, from this process's cache (loaded on first access).
    input_columns : list of str or None
        The columns the model reads (its ``feature_names_in_``), or None when it was fitted
        without column names.
    output_columns : list of str
        The columns the model's method adds to the output.

    See Also
    --------
    predict_dask : This predictor over the partitions of a Dask DataFrame.
    skfusion.load : How the model file is checked and loaded.

    Examples
    --------
    >>> import os, tempfile
    >>> import pandas as pd
    >>> from sklearn.linear_model import LogisticRegression
    >>> import skfusion
    >>> from skfusion.batch import BatchPredictor
    >>> X = pd.DataFrame({"id": [10, 11, 12, 13], "x": [0.0, 0.2, 0.8, 1.0]})
    >>> model = LogisticRegression().fit(X[["x"]], [0, 0, 1, 1])
    >>> tmp = tempfile.mkdtemp()
    >>> _ = skfusion.dump(model, os.path.join(tmp, "model.skops"))
    >>> predictor = BatchPredictor(os.path.join(tmp, "model.skops"),
    ...                            method="predict_proba", id_columns="id")
    >>> predictor(X).round(2)
       id  proba_0  proba_1
    0  10     0.58     0.42
    1  11     0.55     0.45
    2  12     0.45     0.55
    3  13     0.42     0.58
    >>> predictor(X.iloc[:0]).dtypes.to_dict()
    {'id': dtype('int64'), 'proba_0': dtype('float64'), 'proba_1': dtype('float64')}
    """

    def __init__(
        self,
        model_path,
        *,
        method="predict",
        id_columns=None,
        keep_columns=False,
        batch_size=1000,
        sha256=None,
        trusted=None,
        device=None,
        on_error=None,
    ):
        if method not in METHODS:
            raise ValueError(f"method must be one of {list(METHODS)}; got {method!r}.")
        if batch_size is not None and (
            not isinstance(batch_size, Integral) or isinstance(batch_size, bool) or batch_size < 1
        ):
            raise ValueError(f"batch_size must be a positive int or None; got {batch_size!r}.")
        if on_error not in (None, "raise", "missing"):
            raise ValueError(f"on_error must be None, 'raise' or 'missing'; got {on_error!r}.")
        if isinstance(id_columns, str):
            id_columns = [id_columns]
        self.model_path = os.path.abspath(os.fspath(model_path))
        self.method = method
        self.id_columns = list(id_columns or [])
        self.keep_columns = bool(keep_columns)
        self.batch_size = batch_size
        self.sha256 = sha256
        self.trusted = tuple(trusted) if trusted else None
        self.device = device
        self.on_error = on_error

    def __repr__(self):
        return (
            f"BatchPredictor({self.model_path!r}, method={self.method!r}, "
            f"id_columns={self.id_columns!r})"
        )

    def __dask_tokenize__(self):
        return (type(self).__name__, self.model_path, self.method, tuple(self.id_columns),
                self.keep_columns, self.batch_size, self.sha256, self.trusted, self.device,
                self.on_error)

    # --- the model ---
    @property
    def model_(self):
        """The model, loaded (and verified) once per process."""
        return _cached_model(
            self.model_path, self.sha256, self.trusted, self.device, self.on_error
        )

    @property
    def input_columns(self):
        """The columns the model reads (``feature_names_in_``), or None."""
        names = getattr(self.model_, "feature_names_in_", None)
        return None if names is None else [str(c) for c in names]

    def _output_spec(self):
        """(column names, numpy dtypes) that the method adds, known without calling it."""
        model = self.model_
        if not hasattr(model, self.method):
            raise ValueError(f"the model ({type(model).__name__}) has no method {self.method!r}.")
        classes = getattr(model, "classes_", None)
        if self.method == "predict":
            is_labels = isinstance(classes, np.ndarray) and classes.ndim == 1
            dtype = classes.dtype if is_labels else np.dtype(np.float64)
            return ["prediction"], [dtype]
        if self.method == "predict_proba":
            if not (isinstance(classes, np.ndarray) and classes.ndim == 1):
                raise ValueError("method='predict_proba' needs a classifier with one output.")
            return [f"proba_{c}" for c in classes], [np.dtype(np.float64)] * len(classes)
        try:
            names = [str(n) for n in model.get_feature_names_out()]
        except Exception as exc:
            raise ValueError(
                "method='transform' needs a model whose get_feature_names_out() names its "
                f"output columns ({type(exc).__name__}: {exc})."
            ) from exc
        return names, [np.dtype(np.float64)] * len(names)

    @property
    def output_columns(self):
        """The columns the model's method adds to the output."""
        return self._output_spec()[0]

    # --- frames ---
    def _passthrough(self, input_columns):
        """The input columns copied to the output, in order: the ids, then the kept ones."""
        input_columns = list(input_columns)
        missing = [c for c in self.id_columns if c not in input_columns]
        if missing:
            raise ValueError(
                f"the input has no id column {missing[0]!r}; it has columns {input_columns!r}."
            )
        columns = list(self.id_columns)
        if self.keep_columns:
            columns += [c for c in input_columns if c not in self.id_columns]
        clash = sorted(set(map(str, columns)) & set(self.output_columns))
        if clash:
            raise ValueError(
                f"input column {clash[0]!r} has the name of an output column; rename it."
            )
        return columns

    def output_meta(self, X=None):
        """The output's columns and dtypes, as an empty DataFrame (Dask's ``meta``).

        Nothing is scored: the dtypes come from the model (its ``classes_``, output names)
        and from ``X`` for the id and kept columns.

        Parameters
        ----------
        X : DataFrame, default=None
            Any frame with the input's columns and dtypes (a Dask DataFrame's ``_meta``, or
            ``df.head(0)``). Needed when there are id or kept columns.

        Returns
        -------
        meta : DataFrame
            0 rows, the output's columns and dtypes, and ``X``'s index type.
        """
        names, dtypes = self._output_spec()
        columns = {name: np.empty(0, dtype=dtype) for name, dtype in zip(names, dtypes)}
        if X is None:
            if self.id_columns or self.keep_columns:
                raise ValueError("output_meta needs X to know the id columns' dtypes.")
            return pd.DataFrame(columns, index=pd.RangeIndex(0))
        kept = X.iloc[:0][self._passthrough(X.columns)]
        return pd.concat([kept, pd.DataFrame(columns, index=kept.index)], axis=1)

    def _model_input(self, X):
        names = self.input_columns
        if names is None:
            return X
        present = set(X.columns)
        missing = [c for c in names if c not in present]
        if missing:
            more = f" (and {missing[1:]!r})" if len(missing) > 1 else ""
            raise ValueError(
                f"the input has no column {missing[0]!r}{more}, which the model needs; it has "
                f"columns {list(X.columns)!r}."
            )
        return X[names]

    def _predictions(self, X):
        """The method's output columns for X (index kept), and how many rows lost a modality
        to an unreadable item (``on_error="missing"``)."""
        names, dtypes = self._output_spec()
        if len(X) == 0:
            empty = {name: np.empty(0, dtype=dtype) for name, dtype in zip(names, dtypes)}
            return pd.DataFrame(empty, index=X.index), 0
        model = self.model_
        Xm = self._model_input(X)
        step = self.batch_size or len(Xm)
        blocks, n_lost = [], 0
        for start in range(0, len(Xm), step):
            part = Xm.iloc[start : start + step]
            with _counting_lost_rows(model) as lost:
                try:
                    out = getattr(model, self.method)(part)
                except ValueError as exc:
                    bad = _find_bad_value(part, exc)
                    if bad is None:
                        raise
                    column, position = bad
                    raise _BadValueError(
                        column, part[column].iloc[position], start + position,
                        X.index[start + position], exc,
                    ) from exc
            n_lost += len(lost)
            if hasattr(out, "toarray"):
                out = out.toarray()
            out = out.to_numpy() if hasattr(out, "to_numpy") else np.asarray(out)
            blocks.append(out.reshape(len(part), -1))
        values = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
        if values.shape[1] != len(names):
            raise ValueError(
                f"the model's {self.method} returned {values.shape[1]} columns, but "
                f"{len(names)} ({names[:3]}...) were expected; multi-output models are not "
                "supported."
            )
        data = {name: values[:, j].astype(dtype, copy=False)
                for j, (name, dtype) in enumerate(zip(names, dtypes))}
        return pd.DataFrame(data, index=X.index), n_lost

    def __call__(self, X):
        """Score one DataFrame.

        Parameters
        ----------
        X : DataFrame
            The rows to score: the model's columns, plus the id columns.

        Returns
        -------
        out : DataFrame
            Id (and kept) columns, then the method's columns; ``X``'s index.
        """
        if not isinstance(X, pd.DataFrame):
            raise TypeError(f"BatchPredictor scores a pandas DataFrame; got {type(X).__name__}.")
        kept = X[self._passthrough(X.columns)]
        predictions, _ = self._predictions(X)
        out = pd.concat(
            [kept.reset_index(drop=True), predictions.reset_index(drop=True)], axis=1
        )
        out.index = X.index
        return out

    def iter_predict(self, frames):
        """Score an iterator of DataFrames, one output DataFrame per input one.

        The shape Spark's ``DataFrame.mapInPandas`` expects: ``sdf.mapInPandas(
        predictor.iter_predict, schema=...)``.

        Parameters
        ----------
        frames : iterable of DataFrame
            Input batches.

        Yields
        ------
        out : DataFrame
            The output of each batch, in order.
        """
        for frame in frames:
            yield self(frame)

    def predict_files(
        self, inputs, output, *, chunk_size=10_000, overwrite=False, resume=False, cache=False,
        progress=False,
    ):
        """Score files into a folder of part files, in chunks, resumably: ``skfusion predict``.

        ``inputs`` is read in chunks of ``chunk_size`` rows, never whole (only the model's
        columns and the id and kept ones); each chunk is scored and written as one numbered part
        file in ``output`` (a folder, ``NAME.parquet`` or ``NAME.csv``), followed by a manifest
        (``_manifest.json``) listing the complete parts. Everything is written in
        ``OUTPUT.partial``, renamed to ``output`` after the last part: ``output`` only ever
        exists whole. After a crash or a kill, the same call with ``resume=True`` keeps the
        listed parts and goes on from the next chunk: every input row is in the output once,
        and the output equals that of an uninterrupted run. A lock file beside the output
        (``.NAME.parquet.lock``) stops two runs from writing the same output at once.

        No signal handler is installed: a ``SIGTERM`` ends the process as Python's default
        handler does (the parts already listed are kept for ``resume=True``). The
        ``skfusion predict`` command turns ``SIGTERM`` into a ``KeyboardInterrupt``, as Ctrl-C.

        Read more in the :ref:`User Guide <batch_scoring>`.

        Parameters
        ----------
        inputs : str or path-like
            A Parquet, CSV (``.csv``, ``.csv.gz``, ``.tsv``, ...) or JSONL file, a folder of
            Parquet files (read recursively in name order; names starting with ``_`` or ``.``
            skipped) or a glob of Parquet files.
        output : str or path-like
            The output folder, ``NAME.parquet`` or ``NAME.csv``: the format of its parts.
        chunk_size : int, default=10000
            Rows read, scored and written per part file (``batch_size`` bounds the rows per
            call of the model).
        overwrite : bool, default=False
            Replace an existing ``output`` (once the new one is whole) or interrupted run.
        resume : bool, default=False
            Continue an interrupted run (the same model file, inputs, method, columns, chunk
            size and format) from its last complete part; nothing is done when ``output`` is
            already this run's finished output.
        cache : bool, default=False
            Use the embedding cache (off by default: a batch's rows are mostly distinct).
        progress : bool, default=False
            Draw a progress bar (tqdm) on stderr.

        Returns
        -------
        summary : dict
            ``output`` (the folder), ``rows`` (rows in the output), ``parts`` (part files),
            ``scored_rows`` (rows scored by this call: fewer after ``resume=True``),
            ``lost_rows`` (rows scored with a modality missing because an item could not be
            read, ``on_error="missing"``) and ``seconds`` (time spent scoring).

        Raises
        ------
        FileExistsError
            ``output`` exists (without ``overwrite`` or ``resume``), or an interrupted run is
            there (without ``overwrite`` or ``resume``), or another run holds the lock.
        ValueError
            An input that cannot be read or scored: a missing column, a value of the wrong type
            (the message names its column, row and value), an unknown format, or a
            ``resume=True`` with other settings than the interrupted run's.

        See Also
        --------
        predict_dask : Score a Dask DataFrame, partition by partition.

        Notes
        -----
        Messages go to the ``skfusion.batch`` logger: a resumed run and the summary at level
        ``INFO``, rows with an unreadable item at ``WARNING``.

        Examples
        --------
        >>> import os, tempfile
        >>> import pandas as pd
        >>> from sklearn.linear_model import LogisticRegression
        >>> import skfusion
        >>> from skfusion.batch import BatchPredictor
        >>> tmp = tempfile.mkdtemp()
        >>> X = pd.DataFrame({"id": range(6), "x": [0.0, 0.1, 0.2, 0.8, 0.9, 1.0]})
        >>> X.to_csv(os.path.join(tmp, "new.csv"), index=False)
        >>> model = LogisticRegression().fit(X[["x"]], [0, 0, 0, 1, 1, 1])
        >>> _ = skfusion.dump(model, os.path.join(tmp, "model.skops"))
        >>> predictor = BatchPredictor(os.path.join(tmp, "model.skops"), id_columns="id")
        >>> summary = predictor.predict_files(os.path.join(tmp, "new.csv"),
        ...                                   os.path.join(tmp, "scores.parquet"), chunk_size=4)
        >>> summary["rows"], summary["parts"]
        (6, 2)
        >>> sorted(os.listdir(os.path.join(tmp, "scores.parquet")))
        ['_manifest.json', 'part-000000.parquet', 'part-000001.parquet']
        >>> pd.read_parquet(os.path.join(tmp, "scores.parquet"))["prediction"].tolist()
        [0, 0, 0, 1, 1, 1]
        """
        return _predict_files(
            self, inputs, output, chunk_size=chunk_size, overwrite=overwrite, resume=resume,
            cache=cache, progress=progress,
        )


# --------------------------------------------------------------------------- files to files
class OptionNames:
    """An error whose message names options of :meth:`BatchPredictor.predict_files`: the
    template's ``{overwrite}`` and ``{resume}`` read ``overwrite=True`` and ``resume=True``
    here; ``skfusion predict`` names them as its flags (:meth:`for_options`)."""

    def __init__(self, template):
        self.template = template
        super().__init__(self.for_options("overwrite=True", "resume=True"))

    def for_options(self, overwrite, resume):
        return self.template.format(overwrite=overwrite, resume=resume)


class _OutputExistsError(OptionNames, FileExistsError):
    pass


class _ResumeError(OptionNames, ValueError):
    pass


def _has_suffix(path, suffixes):
    return path.lower().endswith(suffixes)


def _input_files(spec):
    """(format, sorted list of files) of INPUT: a file, a folder or a glob of Parquet files."""
    if os.path.isdir(spec):
        files = [
            path for path in glob.glob(os.path.join(spec, "**", "*"), recursive=True)
            if os.path.isfile(path) and _has_suffix(path, _PARQUET)
            and not os.path.basename(path).startswith((".", "_"))
        ]
        if not files:
            raise ValueError(f"the input folder {spec} holds no .parquet files.")
        return "parquet", sorted(files)
    if os.path.isfile(spec):
        if _has_suffix(spec, _PARQUET):
            return "parquet", [spec]
        if _has_suffix(spec, _CSV):
            return "csv", [spec]
        if _has_suffix(spec, _JSONL):
            return "jsonl", [spec]
        raise ValueError(
            f"cannot tell the format of the input {spec} from its extension: use .parquet, "
            ".csv or .jsonl."
        )
    if glob.has_magic(spec):
        files = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
        if not files:
            raise FileNotFoundError(f"no file matches the input pattern {spec}.")
        other = [p for p in files if not _has_suffix(p, _PARQUET)]
        if other:
            raise ValueError(
                f"a glob input must match .parquet files only; it also matches {other[0]}."
            )
        return "parquet", files
    raise FileNotFoundError(f"the input {spec} does not exist.")


def _text_lines(path):
    """The lines of a text input file, decompressed as pyarrow reads it."""
    import pyarrow as pa

    stream = pa.input_stream(path, compression="detect")
    return io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline="")


def _json_kind(value):
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    kinds = {str: "string", list: "array", dict: "object", type(None): "null"}
    return kinds.get(type(value), type(value).__name__)


class _Source:
    """Streams the rows of the input files as Arrow record batches of the chosen columns."""

    def __init__(self, fmt, files):
        import pyarrow as pa

        self.fmt = fmt
        self.files = files
        self._pa = pa
        self._types = {}
        if fmt == "parquet":
            import pyarrow.parquet as pq

            self.schema = pq.read_schema(files[0])
            self.rows_per_file = [pq.ParquetFile(f).metadata.num_rows for f in files]
            self.total_rows = sum(self.rows_per_file)
        else:
            self.columns = []
            self.schema = self._open_checked(files[0], 0).schema
            # a column that is empty in the first block is typed "null": read it as text
            self._types = {f.name: pa.string() for f in self.schema if pa.types.is_null(f.type)}
            if self._types:
                self.schema = self._open_checked(files[0], 0).schema
            self.rows_per_file = None
            self.total_rows = None
        self.columns = list(self.schema.names)

    def _delimiter(self, path):
        return "\t" if _has_suffix(path, (".tsv",)) else ","

    def _open_text(self, path):
        pa = self._pa
        if self.fmt == "csv":
            import pyarrow.csv as pcsv

            return pcsv.open_csv(
                path,
                read_options=pcsv.ReadOptions(block_size=8 << 20),
                parse_options=pcsv.ParseOptions(
                    delimiter=self._delimiter(path), newlines_in_values=True
                ),
                # an empty field is a missing value, as pandas reads it
                convert_options=pcsv.ConvertOptions(
                    column_types=self._types, strings_can_be_null=True
                ),
            )
        import pyarrow.json as pjson

        explicit = None
        if self._types:
            explicit = pa.schema([
                pa.field(f.name, self._types.get(f.name, f.type)) for f in self.schema
            ])
        return pjson.open_json(
            path,
            read_options=pjson.ReadOptions(block_size=8 << 20),
            parse_options=pjson.ParseOptions(
                explicit_schema=explicit, unexpected_field_behavior="infer"
            ),
        )

    def check_columns(self, needed):
        for path in self.files[1:] if self.fmt == "parquet" else []:
            import pyarrow.parquet as pq

            names = set(pq.read_schema(path).names)
            missing = [c for c in needed if c not in names]
            if missing:
                raise ValueError(f"the input file {path} has no column {missing[0]!r}.")

    # --- where a row is, for error messages ---
    def where(self, row):
        """How a message names the input's row ``row`` (0-based over all the input files):
        the row, with its line in a CSV or JSONL file, or its file and row in that file."""
        if self.fmt != "parquet":
            line = self._line(self.files[0], row)
            return f"row {row} (line {line} of {self.files[0]})" if line else f"row {row}"
        if len(self.files) == 1:
            return f"row {row}"
        for path, rows in zip(self.files, self.rows_per_file):
            if row < rows:
                return f"row {row} of the input (row {row} of {path})"
            row -= rows
        return f"row {row}"  # pragma: no cover

    def _records(self, path):
        """(0-based data row, first line, record) of a CSV or JSONL file, in order."""
        with _text_lines(path) as fh:
            if self.fmt == "csv":
                reader = csv.reader(fh, delimiter=self._delimiter(path))
                next(reader, None)  # the header
                line = reader.line_num
                for row, record in enumerate(reader):
                    yield row, line + 1, record
                    line = reader.line_num
            else:
                row = 0
                for line, text in enumerate(fh, start=1):
                    if text.strip():
                        yield row, line, text
                        row += 1

    def _line(self, path, row):
        """The line (1-based, as an editor counts) where data row ``row`` starts, or None."""
        try:
            for i, line, _ in self._records(path):
                if i == row:
                    return line
        except (OSError, csv.Error, ValueError):
            return None
        return None

    def conversion_error(self, path, rows_before, exc):
        """A ValueError naming the column, row and value of a value that is not of its
        column's type, for pyarrow's ``exc`` raised after ``rows_before`` rows of ``path``;
        None when ``exc`` is not that or the value is not found."""
        text = str(exc)
        column = value = expected = None
        if self.fmt == "csv":
            match = re.search(r"CSV column #(\d+): CSV conversion error to (.+?): "
                              r"invalid value '(.*)'", text, re.S)
            if match and int(match.group(1)) < len(self.columns):
                position, expected, value = int(match.group(1)), match.group(2), match.group(3)
                column = self.columns[position]

                def found(record):
                    return len(record) > position and record[position] == value
        else:
            match = re.search(r"Column\(/(.+?)\) changed from (\w+) to (\w+)", text)
            if match:
                column, expected, kind = match.groups()

                def found(record):
                    try:
                        item = json.loads(record)
                    except ValueError:
                        return False
                    return isinstance(item, dict) and column in item and (
                        _json_kind(item[column]) == kind
                    )
        if column is None:
            return None
        try:
            for row, line, record in self._records(path):
                if row >= rows_before and found(record):
                    if self.fmt != "csv":
                        value = json.loads(record)[column]
                    return ValueError(
                        f"column {column!r} holds {value!r} at row {row} (line {line} of "
                        f"{path}), which is not a value of the column's type, {expected} "
                        "(inferred from the file's first rows): fix the value."
                    )
        except (OSError, csv.Error, ValueError):
            return None
        return None

    def _read_error(self, path, rows, exc):
        error = self.conversion_error(path, rows, exc)
        if error is None:
            return ValueError(f"cannot read the input file {path}: {exc}")
        return error

    def _open_checked(self, path, rows):
        """:meth:`_open_text`, its errors (pyarrow reads the first block) named."""
        try:
            return self._open_text(path)
        except self._pa.ArrowInvalid as exc:
            raise self._read_error(path, rows, exc) from exc

    def _text_batches(self, path):
        reader = self._open_checked(path, 0)
        rows = 0
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except self._pa.ArrowInvalid as exc:
                raise self._read_error(path, rows, exc) from exc
            rows += batch.num_rows
            yield batch

    def batches(self, columns, skip, batch_rows):
        """Record batches of ``columns``, starting after the first ``skip`` rows."""
        pa = self._pa
        target = pa.schema([self.schema.field(c) for c in columns])
        for path in self.files:
            if self.fmt == "parquet":
                import pyarrow.parquet as pq

                handle = pq.ParquetFile(path, buffer_size=1 << 20, pre_buffer=False)
                meta = handle.metadata
                if skip >= meta.num_rows:
                    skip -= meta.num_rows
                    continue
                groups = []
                for g in range(meta.num_row_groups):
                    rows = meta.row_group(g).num_rows
                    if skip >= rows and not groups:
                        skip -= rows
                        continue
                    groups.append(g)
                stream = handle.iter_batches(
                    batch_size=batch_rows, row_groups=groups, columns=columns, use_threads=False
                )
            else:
                stream = (batch.select(columns) for batch in self._text_batches(path))
            for batch in stream:
                if skip:
                    if skip >= batch.num_rows:
                        skip -= batch.num_rows
                        continue
                    batch = batch.slice(skip)
                    skip = 0
                if batch.schema != target:
                    try:
                        batch = batch.cast(target)
                    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                        raise ValueError(
                            f"the input file {path} has columns of other types than the first "
                            f"file ({exc})."
                        ) from exc
                yield batch


def _chunks(batches, size):
    """Arrow tables of exactly ``size`` rows (the last may be shorter) from record batches."""
    import pyarrow as pa

    pending, rows = [], 0
    for batch in batches:
        while batch.num_rows:
            take = min(size - rows, batch.num_rows)
            pending.append(batch.slice(0, take))
            rows += take
            batch = batch.slice(take)
            if rows == size:
                yield pa.Table.from_batches(pending)
                pending, rows = [], 0
    if rows:
        yield pa.Table.from_batches(pending)


def _arrow_type(dtype):
    import pyarrow as pa

    if dtype == np.dtype(object):
        return pa.string()
    return pa.from_numpy_dtype(dtype)


def _write_manifest(folder, manifest):
    from .storage._files import write_atomic

    data = json.dumps(manifest, indent=1).encode()
    write_atomic(os.path.join(folder, MANIFEST), data, private=False)


def _read_manifest(folder):
    try:
        with open(os.path.join(folder, MANIFEST), encoding="utf-8") as fh:
            manifest = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("skfusion_predict") != _MANIFEST_VERSION:
        return None
    return manifest


_SAME_RUN = ("model_sha256", "inputs", "method", "columns", "chunk_size", "format")


def _differences(old, new):
    return [key for key in _SAME_RUN if old.get(key) != new.get(key)]


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def _prepare_partial(partial, plan, overwrite, resume):
    """Make ``partial`` ready and return its manifest (parts already done kept on resume)."""
    if os.path.lexists(partial) and not resume:
        if not overwrite:
            raise _OutputExistsError(
                f"{partial} holds an interrupted run: continue it with {{resume}}, or start "
                "again with {overwrite}."
            )
        _remove(partial)
    manifest = _read_manifest(partial) if os.path.isdir(partial) else None
    if manifest is not None:
        changed = _differences(manifest, plan)
        if changed:
            raise _ResumeError(
                f"cannot resume {partial}: its {', '.join(changed)} differ from this run's; "
                "rerun with {overwrite} to start again."
            )
        parts = []
        for part in manifest["parts"]:  # keep the listed parts while their files exist
            if not os.path.isfile(os.path.join(partial, part["file"])):
                break
            parts.append(part)
        manifest["parts"] = parts
        listed = {part["file"] for part in parts} | {MANIFEST}
        for name in os.listdir(partial):  # parts written after the last manifest, temp files
            if name not in listed:
                _remove(os.path.join(partial, name))
    else:
        if os.path.lexists(partial):
            _remove(partial)  # a run killed before its first manifest: nothing to keep
        os.makedirs(partial)
        manifest = dict(plan, parts=[], complete=False)
    manifest["complete"] = False
    _write_manifest(partial, manifest)
    return manifest


def _parts(n):
    return f"{n} part" if n == 1 else f"{n} parts"


def _summary(output, manifest, scored, seconds):
    return {
        "output": output,
        "rows": int(manifest.get("rows", 0)),
        "parts": len(manifest["parts"]),
        "scored_rows": scored,
        "lost_rows": sum(part["lost_rows"] for part in manifest["parts"]),
        "seconds": seconds,
    }


def _predict_files(predictor, inputs, output, *, chunk_size, overwrite, resume, cache,
                   progress):
    """:meth:`BatchPredictor.predict_files`."""
    import pyarrow as pa
    from filelock import Timeout

    from ._config import config_context
    from .io import check_sha256
    from .storage._files import file_lock
    from .storage._hashing import file_sha256

    if not isinstance(chunk_size, Integral) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int; got {chunk_size!r}.")
    if overwrite and resume:
        raise ValueError("overwrite=True and resume=True exclude each other.")
    shown = os.fspath(output)
    output = os.path.abspath(shown.rstrip("/\\"))
    if _has_suffix(output, _PARQUET):
        out_format = "parquet"
    elif output.lower().endswith(".csv"):
        out_format = "csv"
    else:
        raise ValueError(
            f"cannot tell the output format of {shown} from its extension: use NAME.parquet "
            "or NAME.csv (a folder of part files is written there)."
        )
    partial = output + ".partial"
    if os.path.lexists(output) and not (overwrite or resume):
        raise _OutputExistsError(f"the output {shown} exists; pass {{overwrite}} to replace it.")
    if not os.path.isfile(predictor.model_path):
        raise FileNotFoundError(f"the model file {predictor.model_path} does not exist.")
    fmt, files = _input_files(os.fspath(inputs))
    digest = file_sha256(predictor.model_path)
    check_sha256(predictor.model_path, digest, predictor.sha256)  # sha256=, else the sidecar
    predictor = BatchPredictor(
        predictor.model_path, method=predictor.method, id_columns=predictor.id_columns,
        keep_columns=predictor.keep_columns, batch_size=predictor.batch_size,
        sha256=digest,  # what was hashed here is what gets loaded
        trusted=predictor.trusted, device=predictor.device, on_error=predictor.on_error,
    )
    source = _Source(fmt, files)
    model_columns = predictor.input_columns
    missing = [c for c in (model_columns or []) if c not in source.columns]
    if missing:
        more = f" (and {missing[1:]!r})" if len(missing) > 1 else ""
        raise ValueError(
            f"the input has no column {missing[0]!r}{more}, which the model needs; it has "
            f"columns {source.columns!r}."
        )
    passthrough = predictor._passthrough(source.columns)
    model_columns = model_columns if model_columns is not None else list(source.columns)
    read = list(dict.fromkeys(passthrough + model_columns))
    source.check_columns(read)
    names, dtypes = predictor._output_spec()
    plan = {
        "skfusion_predict": _MANIFEST_VERSION,
        "model_sha256": digest,
        "inputs": [
            {"path": os.path.abspath(f), "size": os.path.getsize(f),
             "mtime_ns": os.stat(f).st_mtime_ns}
            for f in files
        ],
        "method": predictor.method,
        "columns": passthrough + names,
        "chunk_size": chunk_size,
        "format": out_format,
    }
    schema = pa.schema(
        [source.schema.field(c) for c in passthrough]
        + [pa.field(n, _arrow_type(d)) for n, d in zip(names, dtypes)]
    )

    os.makedirs(os.path.dirname(output), exist_ok=True)
    lock_path = os.path.join(os.path.dirname(output), "." + os.path.basename(output) + ".lock")
    lock = file_lock(lock_path)  # skfusion's one inter-process lock
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise FileExistsError(
            f"another run is writing {shown} (it holds the lock {lock_path})."
        ) from None
    try:
        if os.path.lexists(output):
            done = _read_manifest(output) if os.path.isdir(output) else None
            if resume and done is not None and done.get("complete") and not _differences(
                done, plan
            ):
                logger.info("%s is already complete (%d rows).", shown, done["rows"])
                return _summary(output, done, 0, 0.0)
            if not overwrite:
                raise _OutputExistsError(
                    f"the output {shown} exists and is not this run's finished output; "
                    "pass {overwrite} to replace it."
                )
        manifest = _prepare_partial(partial, plan, overwrite, resume)
        with config_context(cache=bool(cache)):
            scored, seconds = _score(
                predictor, source, read, passthrough, schema, manifest, partial, chunk_size,
                progress,
            )
        if os.path.lexists(output):
            _remove(output)  # overwrite: the old output goes only once the new one is whole
        os.replace(partial, output)
    finally:
        lock.release()
        try:
            os.remove(lock_path)
        except OSError:
            pass
    summary = _summary(output, manifest, scored, seconds)
    rate = f", {scored / seconds:,.0f} rows/s" if scored and seconds > 0 else ""
    logger.info(
        "%d rows in %s -> %s (%d scored in %.1f s%s).", summary["rows"],
        _parts(summary["parts"]), shown, scored, seconds, rate,
    )
    if summary["lost_rows"]:
        logger.warning(
            "%d rows had an unreadable item (image or audio file) and were scored with that "
            "modality missing.", summary["lost_rows"],
        )
    return summary


def _score(predictor, source, read, passthrough, schema, manifest, partial, chunk_size,
           progress):
    """Score the chunks not yet in ``manifest`` into ``partial``; (rows scored, seconds)."""
    import pyarrow as pa

    from .storage._files import write_atomic

    parts = manifest["parts"]
    done = sum(part["rows"] for part in parts)
    if parts:
        logger.info("resuming after %d rows already scored in %s.", done, _parts(len(parts)))
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=source.total_rows, initial=done, unit="rows", unit_scale=True,
                   desc="scoring", dynamic_ncols=True)
    else:
        bar = None
    started = time.perf_counter()
    scored = 0
    suffix = ".parquet" if manifest["format"] == "parquet" else ".csv"
    try:
        batch_rows = min(chunk_size, 65_536)
        for chunk in _chunks(source.batches(read, done, batch_rows), chunk_size):
            # plain columns: a pandas index stored in the file is not restored as the index
            frame = chunk.to_pandas(ignore_metadata=True)
            frame.index = range(done, done + len(frame))  # errors name the input's row number
            try:
                predictions, lost = predictor._predictions(frame)
            except _BadValueError as exc:
                raise exc.at(source.where(exc.label)) from exc.__cause__
            arrays = [chunk.column(c) for c in passthrough] + [
                pa.array(predictions[name].to_numpy(), type=schema.field(name).type)
                for name in predictions.columns
            ]
            table = pa.Table.from_arrays(arrays, schema=schema)
            name = f"part-{len(parts):06d}{suffix}"
            write_atomic(
                os.path.join(partial, name), lambda fh: _write_table(table, fh, suffix),
                private=False,
            )
            parts.append({"file": name, "rows": table.num_rows, "lost_rows": int(lost)})
            done += table.num_rows
            scored += table.num_rows
            manifest["rows"] = done
            _write_manifest(partial, manifest)
            if bar is not None:
                bar.update(table.num_rows)
    finally:
        if bar is not None:
            bar.close()
    if not parts:  # an empty input still gives a readable output: one part with no rows
        name = f"part-000000{suffix}"
        empty = schema.empty_table()
        write_atomic(
            os.path.join(partial, name), lambda fh: _write_table(empty, fh, suffix),
            private=False,
        )
        parts.append({"file": name, "rows": 0, "lost_rows": 0})
    manifest["rows"] = done
    manifest["complete"] = True
    _write_manifest(partial, manifest)
    return scored, time.perf_counter() - started


def _write_table(table, fh, suffix):
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, fh)
    else:
        import pyarrow.csv as pcsv

        pcsv.write_csv(table, fh)


def predict_dask(
    model_path,
    ddf,
    *,
    method="predict",
    id_columns=None,
    keep_columns=False,
    batch_size=1000,
    sha256=None,
    trusted=None,
    device=None,
    on_error=None,
):
    """Score a Dask DataFrame with a saved model: one :class:`BatchPredictor` per partition.

    The result has the input's partitions, divisions and row order. Each worker process loads
    the model once (every task carries only the predictor: a path and options), after checking
    the file's SHA-256 against ``sha256``; when ``sha256`` is None the client hashes the file
    once here, so that every worker scores with exactly the file the client saw. The output's
    dtypes come from :meth:`BatchPredictor.output_meta`: Dask never calls the model on fake
    rows.

    Read more in the :ref:`User Guide <batch_scoring>`.

    Parameters
    ----------
    model_path : str or path-like
        A ``.skops`` or ``.joblib`` file, at the same path on every worker (a shared or
        copied file).
    ddf : dask.dataframe.DataFrame
        The rows to score.
    method : {"predict", "predict_proba", "transform"}, default="predict"
        As in :class:`BatchPredictor`.
    id_columns : str or list of str, default=None
        As in :class:`BatchPredictor`.
    keep_columns : bool, default=False
        As in :class:`BatchPredictor`.
    batch_size : int, default=1000
        As in :class:`BatchPredictor`.
    sha256 : str, default=None
        Expected SHA-256 of the model file; ``None`` uses the client's copy's hash.
    trusted : list of str, default=None
        As in :class:`BatchPredictor`.
    device : str, default=None
        As in :class:`BatchPredictor`.
    on_error : {"raise", "missing"}, default=None
        As in :class:`BatchPredictor`.

    Returns
    -------
    scores : dask.dataframe.DataFrame
        Lazy; the output of :class:`BatchPredictor` for each partition.

    Examples
    --------
    >>> import os, tempfile
    >>> import dask.dataframe as dd
    >>> import pandas as pd
    >>> from sklearn.linear_model import LogisticRegression
    >>> import skfusion
    >>> from skfusion.batch import predict_dask
    >>> X = pd.DataFrame({"id": range(6), "x": [0.0, 0.1, 0.2, 0.8, 0.9, 1.0]})
    >>> path = os.path.join(tempfile.mkdtemp(), "model.skops")
    >>> _ = skfusion.dump(LogisticRegression().fit(X[["x"]], [0, 0, 0, 1, 1, 1]), path)
    >>> scores = predict_dask(path, dd.from_pandas(X, npartitions=2), id_columns="id")
    >>> scores.npartitions
    2
    >>> scores.compute(scheduler="sync")["prediction"].tolist()
    [0, 0, 0, 1, 1, 1]
    """
    from .storage._hashing import file_sha256

    try:
        import dask.dataframe  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"predict_dask needs dask ({exc}); install it with `pip install skfusion[dask]`."
        ) from exc
    if sha256 is None:
        sha256 = file_sha256(model_path)
    predictor = BatchPredictor(
        model_path,
        method=method,
        id_columns=id_columns,
        keep_columns=keep_columns,
        batch_size=batch_size,
        sha256=sha256,
        trusted=trusted,
        device=device,
        on_error=on_error,
    )
    meta = predictor.output_meta(ddf._meta)
    return ddf.map_partitions(predictor, meta=meta)
