"""Batch scoring: :class:`BatchPredictor` (one model per process, any DataFrame engine) and
:func:`predict_dask`.

A :class:`BatchPredictor` holds a model *path* and scoring options, never the model: it is small
to pickle, so engines that ship the function to their workers (Dask, Spark's ``mapInPandas``,
Ray's ``map_batches``) send a few hundred bytes per task, and each worker process loads and
verifies the model once, on first use, through a per-process cache (:func:`model_cache_info`).
"""

# SPDX-License-Identifier: BSD-3-Clause

import os
import threading
from collections import OrderedDict
from contextlib import contextmanager
from numbers import Integral

import numpy as np
import pandas as pd

from .io import load

__all__ = ["BatchPredictor", "clear_model_cache", "model_cache_info", "predict_dask"]

METHODS = ("predict", "predict_proba", "transform")
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
                out = getattr(model, self.method)(part)
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
    method, id_columns, keep_columns, batch_size, trusted, device, on_error
        As in :class:`BatchPredictor`.
    sha256 : str, default=None
        Expected SHA-256 of the model file; ``None`` uses the client's copy's hash.

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
