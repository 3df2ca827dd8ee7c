"""The modality contract shared by every fusion estimator.

A modality is a ``(name, transformer, columns)`` triple, as in
:class:`~sklearn.compose.ColumnTransformer`. A scalar ``columns`` (one column name or position)
hands the transformer a 1-D array (a raw modality: text, file paths, arrays); a list, slice,
boolean mask or callable hands it a 2-D frame (tabular columns). This module validates the spec,
routes columns, detects rows where a modality is missing and fits/transforms the modality
transformers on the rows where their modality is present.
"""

# SPDX-License-Identifier: BSD-3-Clause

import functools
import inspect
import numbers
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.base import clone
from sklearn.pipeline import Pipeline
from sklearn.utils import get_tags
from sklearn.utils.validation import (
    check_array,
    check_consistent_length,
    column_or_1d,
    validate_data,
)

from .._compat import _BaseComposition
from .._parallel import Parallel, delayed
from .._progress import progress_requested
from .._utils import is_missing_item, missing_mask_1d
from ..encoders._base import RawItemEncoderMixin
from ..exceptions import EncodingError
from ..storage._cache import cached_transform

__all__ = []

_SPECIAL = ("drop", "passthrough")


@dataclass
class _Modality:
    """A validated modality: its name, (unfitted) transformer, spec and resolved columns."""

    name: str
    transformer: object
    columns: object
    positions: list  # integer positions into X's columns
    names: list  # column names (strings) or None for arrays without names
    is_1d: bool


def _is_scalar_column(columns):
    return isinstance(columns, (str, numbers.Integral)) and not isinstance(columns, bool)


def is_stateless(transformer):
    """Whether ``transformer.fit`` learns nothing from the data.

    True for skfusion's pretrained encoders (class attribute ``_skfusion_stateless``), for
    transformers whose sklearn tags say ``requires_fit=False`` and for pipelines made only of
    those. Late fusion encodes such a modality once instead of once per fold.
    """
    if isinstance(transformer, str):
        return transformer in _SPECIAL
    if isinstance(transformer, Pipeline):
        return all(is_stateless(step) for _, step in transformer.steps if step is not None)
    if getattr(transformer, "_skfusion_stateless", False):
        return True
    try:
        return not get_tags(transformer).requires_fit
    except Exception:  # pragma: no cover - estimators with broken tags
        return False


class BaseFusion(_BaseComposition):
    """Validation, column routing and presence masks for estimators over a modality spec."""

    _required_parameters = ["modalities"]

    # --- nested parameters: ``text__batch_size`` reaches the "text" modality's transformer ---
    @property
    def _transformers(self):
        try:
            return [(name, trans) for name, trans, _ in self.modalities]
        except (TypeError, ValueError):
            return []

    @_transformers.setter
    def _transformers(self, value):
        self.modalities = [
            (name, trans, spec[2]) for (name, trans), spec in zip(value, self.modalities)
        ]

    def get_params(self, deep=True):
        """Get parameters, including each modality transformer's as ``<name>__<param>``.

        Parameters
        ----------
        deep : bool, default=True
            If True, also return the parameters of the modality transformers.

        Returns
        -------
        params : dict
            Parameter names mapped to their values.
        """
        return self._get_params("_transformers", deep=deep)

    def set_params(self, **params):
        """Set parameters, including ``<name>__<param>`` of modality transformers.

        Parameters
        ----------
        **params : dict
            Estimator parameters.

        Returns
        -------
        self : object
            This estimator.
        """
        self._set_params("_transformers", **params)
        return self

    # --- validation ---
    def _validate_modality_spec(self):
        """Check the spec's shape, names and transformers (no data needed)."""
        spec = self.modalities
        if not isinstance(spec, (list, tuple)) or len(spec) == 0:
            raise ValueError(
                "modalities must be a non-empty list of (name, transformer, columns) triples; "
                f"got {spec!r}."
            )
        seen = set()
        params = set(self._get_param_names())
        for i, item in enumerate(spec):
            if not isinstance(item, tuple) or len(item) != 3:
                raise ValueError(
                    f"modalities[{i}] must be a (name, transformer, columns) triple; got {item!r}."
                )
            name, trans, columns = item
            if not isinstance(name, str) or not name:
                raise ValueError(
                    f"modalities[{i}] has an invalid name {name!r}: use a non-empty str."
                )
            if "__" in name:
                raise ValueError(
                    f"Modality name {name!r} contains '__', which is reserved for nested "
                    "parameters and output feature names."
                )
            if name in seen:
                raise ValueError(f"Modality name {name!r} is used twice; names must be unique.")
            if name in params:
                raise ValueError(
                    f"Modality name {name!r} conflicts with the constructor argument {name!r}."
                )
            seen.add(name)
            if isinstance(trans, str):
                if trans not in _SPECIAL:
                    raise ValueError(
                        f"Modality {name!r}: transformer must be an estimator with fit and "
                        f"transform, 'passthrough' or 'drop'; got {trans!r}."
                    )
            elif not (
                (hasattr(trans, "fit") or hasattr(trans, "fit_transform"))
                and (hasattr(trans, "transform") or hasattr(trans, "fit_transform"))
                and hasattr(trans, "transform")
            ):
                raise TypeError(
                    f"Modality {name!r}: transformer {trans!r} (type {type(trans).__name__}) "
                    "does not implement fit and transform."
                )
            if columns is None or (
                isinstance(columns, (list, tuple, np.ndarray)) and len(columns) == 0
            ):
                raise ValueError(f"Modality {name!r} selects no columns ({columns!r}).")
        if all(isinstance(t, str) and t == "drop" for _, t, _ in spec):
            raise ValueError("Every modality is 'drop': nothing is left to fuse.")

    def _check_X(self, X, *, reset):
        """Validate X and return it as a DataFrame or a 2-D ndarray."""
        if isinstance(X, pd.Series):
            raise ValueError(
                "X must be 2-D: a DataFrame with one column per modality (or a 2-D array); "
                "got a Series. Use X.to_frame() for a single column."
            )
        if isinstance(X, pd.DataFrame):
            if X.shape[0] == 0:
                raise ValueError(
                    f"Found array with 0 sample(s) (shape={X.shape}) while a minimum of 1 is "
                    "required."
                )
            names_in = None if reset else getattr(self, "feature_names_in_", None)
            if names_in is not None:
                # Columns by name, as ColumnTransformer: extra and reordered columns are fine.
                self._check_columns_present(X)
                if not np.array_equal(np.asarray(X.columns, dtype=object), names_in):
                    X = X.reindex(columns=names_in)
            X = validate_data(self, X, reset=reset, skip_check_array=True)
            return X
        return validate_data(
            self, X, reset=reset, dtype=None, ensure_all_finite=False, accept_sparse=False
        )

    def _check_y(self, X, y):
        """Validate a supervised target: present, 1-D, as long as X."""
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None."
            )
        y = check_array(y, ensure_2d=False, dtype=None, ensure_all_finite=True, input_name="y")
        y = column_or_1d(y, warn=True)
        check_consistent_length(X, y)
        return y

    def _check_columns_present(self, X):
        cols = set(X.columns)
        for mod in self._active_modalities():
            missing = [c for c in (mod.names or []) if c not in cols]
            if missing:
                raise ValueError(
                    f"X has no column {missing[0]!r}, which modality {mod.name!r} uses. "
                    f"X has columns {list(X.columns)!r}."
                )

    def _resolve_columns(self, name, columns, X):
        """Integer positions and names of ``columns`` in X, with clear errors."""
        is_df = isinstance(X, pd.DataFrame)
        n_cols = X.shape[1]
        all_names = list(X.columns) if is_df else None
        if callable(columns):
            columns = columns(X)
            if _is_scalar_column(columns):
                columns = [columns]
        is_1d = _is_scalar_column(columns)
        items = [columns] if is_1d else columns
        if isinstance(items, slice):
            positions = list(range(n_cols))[items]
        else:
            items = (
                list(np.asarray(items).tolist()) if isinstance(items, np.ndarray) else list(items)
            )
            if items and all(isinstance(c, (bool, np.bool_)) for c in items):
                if len(items) != n_cols:
                    raise ValueError(
                        f"Modality {name!r}: boolean column mask has {len(items)} entries but X "
                        f"has {n_cols} columns."
                    )
                positions = [i for i, keep in enumerate(items) if keep]
            else:
                positions = []
                for c in items:
                    if isinstance(c, str):
                        if not is_df:
                            raise ValueError(
                                f"Modality {name!r} selects column {c!r} by name, but X is an "
                                "array without column names; pass a DataFrame or use integer "
                                "positions."
                            )
                        if c not in all_names:
                            raise ValueError(
                                f"Modality {name!r} refers to column {c!r}, which is not in X. "
                                f"X has columns {all_names!r}."
                            )
                        positions.append(all_names.index(c))
                    elif isinstance(c, numbers.Integral) and not isinstance(c, bool):
                        if not -n_cols <= c < n_cols:
                            raise ValueError(
                                f"Modality {name!r} refers to column position {c}, but X has "
                                f"only {n_cols} columns."
                            )
                        positions.append(int(c) % n_cols)
                    else:
                        raise ValueError(
                            f"Modality {name!r}: invalid column selector {c!r}; use column "
                            "names, integer positions, a slice, a boolean mask or a callable."
                        )
        if not positions:
            raise ValueError(f"Modality {name!r} selects no columns of X.")
        names = [str(all_names[p]) for p in positions] if is_df else None
        return positions, names, is_1d

    def _build_modalities(self, X):
        """Validate the spec against X (at fit) and store the resolved modalities."""
        self._validate_modality_spec()
        self._modalities = []
        for name, trans, columns in self.modalities:
            positions, names, is_1d = self._resolve_columns(name, columns, X)
            self._modalities.append(_Modality(name, trans, columns, positions, names, is_1d))
        return self._modalities

    # --- routing ---
    @staticmethod
    def _select(X, mod):
        """The modality's input: a 1-D array for a scalar column, else a 2-D frame/array."""
        if isinstance(X, pd.DataFrame):
            if mod.is_1d:
                return X.iloc[:, mod.positions[0]].to_numpy()
            return X.iloc[:, mod.positions]
        if mod.is_1d:
            return X[:, mod.positions[0]]
        return X[:, mod.positions]

    @staticmethod
    def _presence(Xm, is_1d):
        """Boolean mask: rows where the modality is present (not None/NaN/empty)."""
        if is_1d:
            return ~missing_mask_1d(Xm)
        if isinstance(Xm, pd.DataFrame):
            values = Xm.to_numpy()
        else:
            values = np.asarray(Xm)
        if values.dtype.kind in "fc":
            return ~np.isnan(values).all(axis=1)
        if values.dtype.kind in "iub":
            return np.ones(values.shape[0], dtype=bool)
        missing = np.vectorize(is_missing_item, otypes=[bool])(values)
        return ~missing.all(axis=1)

    @staticmethod
    def _take(Xm, rows):
        if isinstance(Xm, (pd.DataFrame, pd.Series)):
            return Xm.iloc[rows]
        return Xm[rows]

    def _modality_rows(self, X, mod):
        """A modality's input restricted to its present rows, and the presence mask."""
        Xm = self._select(X, mod)
        present = self._presence(Xm, mod.is_1d)
        rows = np.flatnonzero(present)
        Xm = self._take(Xm, rows)
        if mod.is_1d and _names_rows(mod.transformer):
            # A Series indexed by row position in X: whatever subset of it an encoder ends
            # up with (rows the cache has not seen, a CV fold), its EncodingError carries
            # the position in X as the label, and `fusion_rows` names the user's row.
            Xm = pd.Series(Xm, index=rows, copy=False)
        return Xm, present

    def _active_modalities(self):
        return [
            m for m in self._modalities if not (isinstance(m.transformer, str)
                                                and m.transformer == "drop")
        ]

    def _fit_each(self, X, y, func, *, params=None, extra=None, prefit=False):
        """The per-modality loop of every fusion estimator's ``fit``.

        For each modality that is not ``"drop"``: select its columns, find its present rows,
        clone its transformer (unless ``prefit``), restrict ``y`` and the row-aligned
        ``params[name]`` to those rows, and run
        ``func(mod, transformer, X_present, y_present, present, params, **extra[name])`` with
        joblib (``n_jobs`` modalities at a time, threads preferred: the encoders release the
        GIL). An EncodingError names the user's row. Returns ``[(mod, present, result)]``.
        """
        params, extra = params or {}, extra or {}
        active = self._active_modalities()
        jobs, masks = [], []
        n = X.shape[0]
        for i, mod in enumerate(active):
            Xm, present = self._modality_rows(X, mod)
            if not present.any():
                raise ValueError(
                    f"Modality {mod.name!r} is missing (None/NaN/empty) in every one of the {n} "
                    "rows passed to fit; there is nothing to learn from."
                )
            trans = mod.transformer
            if not (prefit or isinstance(trans, str)):
                trans = clone(trans)
            y_m = None if y is None else _take_y(y, present)
            p_m = {k: take_rows(v, present) for k, v in params.get(mod.name, {}).items()}
            work = self._in_rows(func, X, mod)
            work = _timed(work, self, f"({i + 1} of {len(active)}) fitting {mod.name} on "
                                      f"{int(present.sum())} rows")
            work = _with_progress(work, self)
            jobs.append(delayed(work)(mod, trans, Xm, y_m, present, p_m,
                                      **extra.get(mod.name, {})))
            masks.append(present)
        results = Parallel(n_jobs=getattr(self, "n_jobs", None), prefer="threads")(jobs)
        return list(zip(active, masks, results))

    def _encode(self, X):
        """Validate X like ``predict`` and run every fitted modality transformer once.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Raw input with the columns used during fit.

        Returns
        -------
        encoded : EncodedModalities
            The encoded rows of every fitted modality and their presence.
        """
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self)
        X = self._check_X(X, reset=False)
        return self._encode_checked(X)

    def _encode_checked(self, X):
        encoders = self._encoders
        jobs, masks = [], []
        for i, enc in enumerate(encoders):
            Xm, present = self._modality_rows(X, enc.mod)
            work = self._in_rows(_encode_one, X, enc.mod)
            work = _timed(work, self, f"({i + 1} of {len(encoders)}) encoding {enc.name} on "
                                      f"{int(present.sum())} rows")
            work = _with_progress(work, self)
            jobs.append(delayed(work)(enc.transformer, Xm, enc.name, enc.sequence))
            masks.append(present)
        outs = Parallel(n_jobs=getattr(self, "n_jobs", None), prefer="threads")(jobs)
        blocks = []
        presence = np.ones((X.shape[0], len(encoders)), dtype=bool)
        for j, (enc, present, out) in enumerate(zip(encoders, masks, outs)):
            got = _block_width(out, enc.sequence)
            if got is not None and got != enc.width:
                raise ValueError(
                    f"Modality {enc.name!r}: transformer returned {got} features, but "
                    f"{enc.width} at fit time."
                )
            presence[:, j] = encoded_presence(out, present)
            blocks.append(scatter_rows(out, present, enc.width, sequence=enc.sequence))
        return EncodedModalities([e.name for e in encoders], blocks, presence)

    @staticmethod
    def _encoded_from_fit(fitted):
        """``(encoders, EncodedModalities)`` from ``_fit_each`` results ``(trans, out, seq)``."""
        encoders, blocks, presence = [], [], []
        for mod, present, (trans, out, seq) in fitted:
            width = _block_width(out, seq)
            encoders.append(_Encoder(mod, trans, width, seq))
            presence.append(encoded_presence(out, present))
            blocks.append(scatter_rows(out, present, width, sequence=seq))
        return encoders, EncodedModalities(
            [e.name for e in encoders], blocks, np.column_stack(presence)
        )

    def _check_encoded(self, encoded, methods, method):
        if method not in methods:
            raise ValueError(
                f"{type(self).__name__} supports method in {sorted(methods)!r}; got {method!r}."
            )
        names = tuple(e.name for e in self._encoders)
        if not isinstance(encoded, EncodedModalities) or encoded.names != names:
            raise ValueError(
                f"encoded must be an EncodedModalities of the modalities {list(names)!r}, as "
                "returned by this estimator's _encode."
            )

    def _visual_modalities(self, heads=None):
        """``_VisualBlock`` of the modalities side by side (name, columns, transformer)."""
        from .._compat import _VisualBlock

        if hasattr(self, "_encoders"):
            items = [(e.name, e.transformer, e.mod.columns) for e in self._encoders]
        else:
            try:
                items = [(n, t, c) for n, t, c in self.modalities]
            except (TypeError, ValueError):
                items = []
        if not items:
            return _VisualBlock("single", self, names=type(self).__name__)
        if heads is not None:
            items = [(n, heads(n, t), c) for n, t, c in items]
        names, transformers, columns = zip(*items)
        details = [_columns_text(c) for c in columns]
        return _VisualBlock("parallel", list(transformers), names=list(names),
                            name_details=details)

    def _rows_named(self, X, mod):
        """Context naming an EncodingError of modality ``mod`` by its row in X."""
        return fusion_rows(X, mod.name, mod.columns)

    def _in_rows(self, func, X, mod):
        """``func`` wrapped for a (possibly process) worker: its EncodingError names X's row."""
        index = X.index if isinstance(X, pd.DataFrame) else None
        return functools.partial(_call_in_rows, func, index, _modality_text(mod.name, mod.columns))


def _names_rows(transformer):
    """Whether a modality's transformer is (or starts with) one of skfusion's encoders."""
    if isinstance(transformer, Pipeline):
        return bool(transformer.steps) and _names_rows(transformer.steps[0][1])
    return isinstance(transformer, RawItemEncoderMixin)


def _modality_text(name, columns):
    return f"modality {name!r} (column {columns!r})"


def _columns_text(columns):
    if callable(columns):
        return getattr(columns, "__name__", repr(columns))
    if isinstance(columns, np.ndarray):
        columns = columns.tolist()
    return repr(columns)


def _timed(func, est, message):
    """``func`` wrapped to print ``message`` and its duration when ``est.verbose > 0``."""
    if not getattr(est, "verbose", 0):
        return func
    return functools.partial(_call_timed, func, type(est).__name__, message)


def _call_timed(func, source, message, *args, **kwargs):
    from .._compat import _print_elapsed_time

    with _print_elapsed_time(source, message):
        return func(*args, **kwargs)


def _with_progress(func, est):
    """With the estimator's ``verbose > 0``, ``func`` runs inside ``progress_requested``, in
    the thread that runs it, so the encoders inside draw their bars (none in pool workers)."""
    verbose = getattr(est, "verbose", 0)
    if not verbose:
        return func
    return functools.partial(_call_with_progress, func, verbose)


def _call_with_progress(func, verbose, *args, **kwargs):
    with progress_requested(verbose):
        return func(*args, **kwargs)


def _call_in_rows(func, index, modality, *args, **kwargs):
    try:
        return func(*args, **kwargs)
    except EncodingError as exc:
        raise exc._in_fusion_rows(index, modality) from exc


@contextmanager
def fusion_rows(X, name, columns):
    """Re-raise an EncodingError with its row named in the fusion estimator's X.

    Parameters
    ----------
    X : DataFrame or ndarray
        The X the user passed (its index labels are named).
    name, columns : str, object
        The modality and its columns, named in the message.
    """
    try:
        yield
    except EncodingError as exc:
        index = X.index if isinstance(X, pd.DataFrame) else None
        raise exc._in_fusion_rows(index, _modality_text(name, columns)) from exc


def _as_2d_output(Xt, name):
    """Transformer output as a 2-D float array or sparse matrix."""
    if sparse.issparse(Xt):
        return Xt.tocsr()
    if hasattr(Xt, "to_numpy"):
        Xt = Xt.to_numpy()
    Xt = np.asarray(Xt)
    if Xt.ndim == 1:
        Xt = Xt.reshape(-1, 1)
    if Xt.ndim != 2:
        raise ValueError(
            f"Modality {name!r}: its transformer returned an array with {Xt.ndim} dimensions; "
            "a 2-D (n_samples, n_features) output is required."
        )
    try:
        return Xt.astype(np.float64, copy=False) if Xt.dtype.kind not in "f" else Xt
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"Modality {name!r}: its transformer returned non-numeric values ({exc}). Use a "
            "transformer that outputs numbers (an encoder, or e.g. OneHotEncoder for categories)."
        ) from exc


def _passthrough(Xm, name):
    values = Xm.to_numpy() if hasattr(Xm, "to_numpy") else np.asarray(Xm)
    if values.ndim == 1:
        values = values.reshape(-1, 1)
    try:
        return values.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"Modality {name!r} is 'passthrough' but its columns are not numeric ({exc})."
        ) from exc


def encoded_presence(block, present):
    """``present`` less the rows that the transformer returned as all-NaN.

    An encoder with ``on_error="missing"`` turns a bad item into a NaN row: from then on the
    row is missing that modality, exactly as if the item had been None. ``block`` holds the
    present rows' outputs (or ``(values, mask)`` token sequences, whose missing rows have an
    all-False mask).
    """
    if block is None or sparse.issparse(block):
        return present
    if isinstance(block, tuple):
        lost = ~np.asarray(block[1]).any(axis=1)
    elif block.shape[1] == 0 or block.dtype.kind != "f":
        return present
    else:
        lost = np.isnan(block).all(axis=1)
    if not lost.any():
        return present
    present = present.copy()
    present[np.flatnonzero(present)[lost]] = False
    return present


def scatter_rows(block, present, n_features=None, fill=np.nan, *, sequence=False):
    """Place the rows of ``block`` (the present rows) into an (n, d) matrix.

    Absent rows get ``fill`` (a scalar or a row of ``d`` values; NaN by default). Sparse
    blocks get all-zero rows for absent rows instead, and ``(values, mask)`` token sequences
    (``sequence=True``) zero tokens with an all-False mask. ``block=None`` (no present row)
    needs ``n_features``.
    """
    n = present.shape[0]
    if sequence:
        return _scatter_sequence(block, present, n_features)
    if block is None:
        block = np.empty((0, n_features))
    if sparse.issparse(block):
        idx = np.flatnonzero(present)
        S = sparse.csr_matrix((np.ones(idx.size), (idx, np.arange(idx.size))), shape=(n, idx.size))
        return (S @ block).tocsr()
    out = np.empty((n, block.shape[1]), dtype=np.float64)
    out[~present] = fill
    out[present] = block
    return out


def _scatter_sequence(block, present, width):
    n = present.shape[0]
    if block is None:
        return np.zeros((n, 1, width), dtype=np.float32), np.zeros((n, 1), dtype=bool)
    values, mask = block
    if present.all():
        return values, mask
    full = np.zeros((n,) + values.shape[1:], dtype=np.float32)
    full_mask = np.zeros((n, values.shape[1]), dtype=bool)
    full[present] = values
    full_mask[present] = mask
    return full, full_mask


def densify(block):
    """A dense ndarray of ``block`` (sparse matrices made dense, others as they are)."""
    return block.toarray() if sparse.issparse(block) else block


def weighted_nanmean(values, weights=None):
    """Column means of ``values`` ignoring NaN, weighted by ``weights`` (rows) when given.

    A weight of 2 counts as a repeated row. Columns without a (weighted) value give NaN.
    """
    if weights is None:
        with np.errstate(all="ignore"):
            return np.nanmean(values, axis=0) if values.shape[0] else np.zeros(values.shape[1])
    weights = np.asarray(weights, dtype=np.float64)
    ok = ~np.isnan(values)
    with np.errstate(all="ignore"):
        return np.where(ok, values, 0.0).T @ weights / (ok * weights[:, None]).sum(axis=0)


def encode_classes(est, y):
    """Classifier targets as codes 0..n_classes-1; sets ``classes_`` and ``_label_encoder``."""
    from sklearn.preprocessing import LabelEncoder
    from sklearn.utils.multiclass import check_classification_targets

    check_classification_targets(y)
    est._label_encoder = LabelEncoder().fit(y)
    est.classes_ = est._label_encoder.classes_
    if len(est.classes_) < 2:
        raise ValueError(
            f"The target has only one class ({est.classes_[0]!r}); a classifier needs at "
            "least two."
        )
    return est._label_encoder.transform(y)


def numeric_target(y):
    """A regression target as float64, with a clear error when it is not numeric."""
    try:
        return np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"The regression target must be numeric ({exc}).") from exc


# --- sample_weight with metadata routing off ------------------------------------------------

_ROUTE_HINT = (
    "Use an estimator whose fit takes sample_weight, or route the weights instead: "
    "sklearn.set_config(enable_metadata_routing=True), then "
    "set_fit_request(sample_weight=True) on the estimators that should get them (the others "
    "get none)."
)


def _weight_key(estimator):
    """The ``fit`` keyword that carries ``sample_weight`` to ``estimator`` with routing off.

    ``"sample_weight"`` when its ``fit`` names it or takes ``**kwargs`` (a meta-estimator
    passes them on, as :class:`~sklearn.ensemble.StackingClassifier` lets it);
    ``"<last step>__sample_weight"`` for a Pipeline whose last step takes them (how
    :meth:`sklearn.pipeline.Pipeline.fit` takes step parameters); None when it cannot.
    """
    if isinstance(estimator, Pipeline):
        name, last = estimator.steps[-1]
        key = None if last is None or isinstance(last, str) else _weight_key(last)
        return None if key is None else f"{name}__{key}"
    try:
        params = inspect.signature(estimator.fit).parameters
    except (AttributeError, TypeError, ValueError):
        return None
    if "sample_weight" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return "sample_weight"
    return None


def _estimator_text(estimator):
    if isinstance(estimator, Pipeline):
        last = estimator.steps[-1][1]
        inner = last if isinstance(last, str) or last is None else _estimator_text(last)
        return f"Pipeline ending in {inner}"
    return type(estimator).__name__


def weight_params(estimator, sample_weight, *, owner, role):
    """``fit`` keyword arguments that give ``estimator`` the weights, with routing off.

    ``{}`` without weights. Otherwise the weights reach ``estimator.fit`` (a Pipeline's last
    step), or a TypeError names the estimator that cannot take them and says how to route
    them, as ``sklearn.ensemble``'s stacking does: weights are never dropped silently.

    Parameters
    ----------
    estimator : estimator
        The estimator about to be fitted.
    sample_weight : array-like of shape (n_samples,) or None
        The weights.
    owner : str
        The estimator whose ``fit`` got the weights, named in the error.
    role : str
        What ``estimator`` is to ``owner`` ("the final estimator"...), named in the error.

    Returns
    -------
    params : dict
        ``{key: sample_weight}`` for ``estimator.fit``, or ``{}``.
    """
    if sample_weight is None:
        return {}
    key = _weight_key(estimator)
    if key is None:
        raise TypeError(
            f"{owner}.fit got sample_weight, but {_estimator_text(estimator)} ({role}) does "
            f"not take sample_weight in its fit, so the weights cannot reach it. {_ROUTE_HINT}"
        )
    return {key: sample_weight}


# --- the per-modality engine ------------------------------------------------------------------


class EncodedModalities:
    """Every fitted modality's encoded rows for one ``X``, with their presence mask.

    What :meth:`BaseFusion._encode` returns and every fusion estimator's ``_predict_encoded``
    takes: the output of the per-modality transformers, before the strategy's own head, so
    that the head can be rerun on modified encodings (a modality dropped, a modality's rows
    permuted) without encoding again. Objects are never modified: :meth:`take`,
    :meth:`permute` and :meth:`drop` return new ones (sharing unchanged blocks).

    Parameters
    ----------
    names : sequence of str
        The fitted modality names, in order (``"drop"`` modalities excluded).
    blocks : list
        Per modality, its encoded rows for all ``n_samples`` rows: an ndarray or sparse matrix
        of shape (n_samples, d), or a ``(values, mask)`` pair of token sequences. Rows where
        the modality is absent hold filler (NaN, zeros or an all-False mask).
    presence : ndarray of shape (n_samples, n_modalities), dtype bool
        Whether each modality is present in each row.

    Attributes
    ----------
    n_samples : int
        Number of rows.

    Examples
    --------
    >>> import numpy as np
    >>> from skfusion.fusion._base import EncodedModalities
    >>> enc = EncodedModalities(["a", "b"], [np.eye(3), np.ones((3, 2))], np.ones((3, 2), bool))
    >>> enc.drop("b").presence[:, 1].tolist()
    [False, False, False]
    >>> enc.permute("a", [2, 0, 1]).blocks[0][0].tolist()
    [0.0, 0.0, 1.0]
    >>> enc.take([0, 2]).n_samples
    2
    """

    def __init__(self, names, blocks, presence):
        self.names = tuple(names)
        self.blocks = list(blocks)
        self.presence = np.asarray(presence, dtype=bool)
        if len(self.blocks) != len(self.names) or self.presence.shape[1:] != (len(self.names),):
            raise ValueError(
                f"EncodedModalities: {len(self.names)} names, {len(self.blocks)} blocks and a "
                f"presence mask of shape {self.presence.shape} do not match."
            )
        self.n_samples = self.presence.shape[0]

    def __repr__(self):
        return f"EncodedModalities(names={self.names!r}, n_samples={self.n_samples})"

    def _index(self, name):
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(
                f"No modality {name!r}; the encoded modalities are {list(self.names)!r}."
            ) from None

    def take(self, rows):
        """Select (or reorder, or repeat) rows of every modality.

        Parameters
        ----------
        rows : array-like of int or bool
            Row positions, or a boolean mask of length ``n_samples``.

        Returns
        -------
        encoded : EncodedModalities
            A new object with those rows.
        """
        rows = _as_rows(rows, self.n_samples)
        return EncodedModalities(
            self.names, [_take_block(b, rows) for b in self.blocks], self.presence[rows]
        )

    def permute(self, name, perm):
        """Reorder one modality's rows (its block and its presence column together).

        Parameters
        ----------
        name : str
            The modality.
        perm : array-like of int of shape (n_samples,)
            Row ``i`` of the result holds that modality's row ``perm[i]``.

        Returns
        -------
        encoded : EncodedModalities
            A new object; the other modalities are unchanged.
        """
        j = self._index(name)
        perm = _as_rows(perm, self.n_samples)
        if perm.shape[0] != self.n_samples:
            raise ValueError(
                f"perm has {perm.shape[0]} entries, but there are {self.n_samples} rows."
            )
        blocks = list(self.blocks)
        blocks[j] = _take_block(blocks[j], perm)
        presence = self.presence.copy()
        presence[:, j] = self.presence[perm, j]
        return EncodedModalities(self.names, blocks, presence)

    def drop(self, name):
        """Make one modality absent in every row.

        The estimator then takes its own missing-modality path, exactly as if that modality's
        column(s) were None in every row.

        Parameters
        ----------
        name : str
            The modality.

        Returns
        -------
        encoded : EncodedModalities
            A new object.
        """
        j = self._index(name)
        presence = self.presence.copy()
        presence[:, j] = False
        return EncodedModalities(self.names, self.blocks, presence)


def _as_rows(rows, n):
    rows = np.asarray(rows)
    if rows.dtype == bool:
        if rows.shape != (n,):
            raise ValueError(f"A boolean row mask needs {n} entries; got shape {rows.shape}.")
        return np.flatnonzero(rows)
    return rows.astype(np.intp, copy=False)


def _take_block(block, rows):
    if isinstance(block, tuple):
        return tuple(np.asarray(part)[rows] for part in block)
    return block[rows]


@dataclass
class _Encoder:
    """A fitted modality of the engine: what ``_encode`` runs on its present rows."""

    mod: _Modality
    transformer: object  # fitted transformer or "passthrough"
    width: int
    sequence: bool = False

    @property
    def name(self):
        return self.mod.name


def take_rows(value, mask):
    """Row-aligned metadata (``sample_weight``, ...) restricted to ``mask``; others as is."""
    if value is None or np.isscalar(value) or isinstance(value, (dict, str)):
        return value
    try:
        n = len(value)
    except TypeError:
        return value
    if n != mask.shape[0]:
        return value
    rows = np.flatnonzero(mask) if mask.dtype == bool else mask
    if hasattr(value, "iloc"):
        return value.iloc[rows]
    if sparse.issparse(value):
        return value[rows]
    return np.asarray(value)[rows]


def _fit_encode_one(mod, trans, Xm, y, present, params, *, sequence=False):
    """Fit one modality's transformer on its present rows; return it and their encoding."""
    if sequence:
        trans = trans.fit(Xm, y, **params) if y is not None else trans.fit(Xm, **params)
        return trans, _sequence_of(trans, Xm)
    if isinstance(trans, str):  # passthrough
        return trans, _passthrough(Xm, mod.name)
    if getattr(trans, "_skfusion_cross_fitted", False):
        # a supervised encoder whose training rows are cross-fitted (each from a model that
        # did not see it, as TargetEncoder's): its fit_transform, never the cache
        return trans, _as_2d_output(trans.fit_transform(Xm, y, **params), mod.name)
    if hasattr(trans, "_skfusion_fingerprint"):  # rows through the embedding cache
        trans.fit(Xm, y, **params)
        return trans, _as_2d_output(cached_transform(trans, Xm), mod.name)
    args = (Xm,) if y is None else (Xm, y)
    if hasattr(trans, "fit_transform"):
        Xt = trans.fit_transform(*args, **params)
    else:
        Xt = trans.fit(*args, **params).transform(Xm)
    return trans, _as_2d_output(Xt, mod.name)


def _sequence_of(trans, Xm):
    values, mask = trans.transform_sequence(Xm)
    return np.asarray(values, dtype=np.float32), np.asarray(mask, dtype=bool)


def _encode_one(trans, Xm, name, sequence):
    """Encode the present rows of one modality with its fitted transformer (None if none)."""
    if isinstance(trans, str):
        return _passthrough(Xm, name)
    if Xm.shape[0] == 0:
        return None
    if sequence:
        return _sequence_of(trans, Xm)
    return _as_2d_output(cached_transform(trans, Xm), name)


def _block_width(out, sequence):
    if out is None:
        return None
    return out[0].shape[-1] if sequence else out.shape[1]


def _take_y(y, mask):
    if hasattr(y, "iloc"):
        return y.iloc[np.flatnonzero(mask)]
    return np.asarray(y)[mask]


def modality_feature_names(name, transformer, columns_names, width):
    """Output feature names of one modality, prefixed ``<name>__``."""
    names = None
    if isinstance(transformer, str):
        names = columns_names
    elif hasattr(transformer, "get_feature_names_out"):
        try:
            names = transformer.get_feature_names_out(columns_names)
        except Exception:
            try:
                names = transformer.get_feature_names_out()
            except Exception:
                names = None
    if names is None or len(names) != width:
        names = [str(i) for i in range(width)]
    return [f"{name}__{f}" for f in names]
