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
import numbers
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.base import clone
from sklearn.pipeline import Pipeline
from sklearn.utils import get_tags
from sklearn.utils.metaestimators import _BaseComposition
from sklearn.utils.parallel import Parallel, delayed
from sklearn.utils.validation import (
    check_array,
    check_consistent_length,
    column_or_1d,
    validate_data,
)

from .._utils import is_missing_item, missing_mask_1d
from ..encoders._base import RawItemEncoderMixin
from ..exceptions import EncodingError
from ..runtime._cache import cached_transform

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


class _BaseFusion(_BaseComposition):
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
            if not reset and getattr(self, "feature_names_in_", None) is not None:
                self._check_columns_present(X)
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
        cols = set(map(str, X.columns))
        for mod in self._modalities:
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

    def _modality_inputs(self, X):
        """Per modality: (input restricted to present rows, presence mask)."""
        out = []
        for mod in self._modalities:
            if isinstance(mod.transformer, str) and mod.transformer == "drop":
                out.append((None, None))
                continue
            Xm = self._select(X, mod)
            present = self._presence(Xm, mod.is_1d)
            rows = np.flatnonzero(present)
            Xm = self._take(Xm, rows)
            if mod.is_1d and _names_rows(mod.transformer):
                # A Series indexed by row position in X: whatever subset of it an encoder ends
                # up with (rows the cache has not seen, a CV fold), its EncodingError carries
                # the position in X as the label, and `fusion_rows` names the user's row.
                Xm = pd.Series(Xm, index=rows, copy=False)
            out.append((Xm, present))
        return out

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


def _fit_transform_one(transformer, Xm, y, name):
    """Clone-free helper run in a worker: fit on the present rows and transform them."""
    if isinstance(transformer, str):  # passthrough
        return transformer, _passthrough(Xm, name)
    if hasattr(transformer, "_skfusion_fingerprint"):  # rows through the embedding cache
        transformer.fit(Xm, y)
        return transformer, _as_2d_output(cached_transform(transformer, Xm), name)
    if y is not None:
        Xt = (
            transformer.fit_transform(Xm, y)
            if hasattr(transformer, "fit_transform")
            else (transformer.fit(Xm, y).transform(Xm))
        )
    else:
        Xt = (
            transformer.fit_transform(Xm)
            if hasattr(transformer, "fit_transform")
            else (transformer.fit(Xm).transform(Xm))
        )
    return transformer, _as_2d_output(Xt, name)


def _transform_one(transformer, Xm, name):
    if isinstance(transformer, str):
        return _passthrough(Xm, name)
    if Xm.shape[0] == 0:
        return None
    return _as_2d_output(cached_transform(transformer, Xm), name)


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


def scatter_rows(block, present, n_features=None):
    """Place the rows of ``block`` (the present rows) into an (n, d) matrix; absent rows NaN.

    Sparse blocks get all-zero rows for absent rows instead of NaN.
    """
    n = present.shape[0]
    if block is None:
        return np.full((n, n_features), np.nan)
    if sparse.issparse(block):
        idx = np.flatnonzero(present)
        S = sparse.csr_matrix((np.ones(idx.size), (idx, np.arange(idx.size))), shape=(n, idx.size))
        return (S @ block).tocsr()
    out = np.full((n, block.shape[1]), np.nan, dtype=np.float64)
    out[present] = block
    return out


def fit_transform_modalities(fusion, X, y=None, *, n_jobs=None):
    """Fit a clone of each modality transformer on its present rows; return fitted + outputs.

    Returns
    -------
    fitted : list of (name, fitted transformer or str, columns)
    blocks : list of (n_samples, d) arrays/sparse matrices (absent rows NaN) or None for drop
    presence : (n_samples, n_modalities) bool array
    """
    inputs = fusion._modality_inputs(X)
    n = X.shape[0]
    jobs = []
    for mod, (Xm, present) in zip(fusion._modalities, inputs):
        if Xm is None:
            continue
        if not present.any():
            raise ValueError(
                f"Modality {mod.name!r} is missing (None/NaN/empty) in every one of the {n} rows "
                "passed to fit; there is nothing to learn from."
            )
        trans = mod.transformer if isinstance(mod.transformer, str) else clone(mod.transformer)
        y_m = None if y is None else _take_y(y, present)
        jobs.append(delayed(fusion._in_rows(_fit_transform_one, X, mod))(trans, Xm, y_m, mod.name))
    results = iter(Parallel(n_jobs=n_jobs)(jobs))
    fitted, blocks, presence = [], [], np.ones((n, len(fusion._modalities)), dtype=bool)
    for j, (mod, (Xm, present)) in enumerate(zip(fusion._modalities, inputs)):
        if Xm is None:
            fitted.append((mod.name, "drop", mod.columns))
            blocks.append(None)
            continue
        trans, block = next(results)
        presence[:, j] = encoded_presence(block, present)
        fitted.append((mod.name, trans, mod.columns))
        blocks.append(scatter_rows(block, present))
    return fitted, blocks, presence


def transform_modalities(fusion, X, fitted, widths, *, n_jobs=None):
    """Transform X with fitted modality transformers (present rows only); absent rows NaN."""
    inputs = fusion._modality_inputs(X)
    jobs, slots = [], []
    for j, ((name, trans, _), (Xm, present)) in enumerate(zip(fitted, inputs)):
        if Xm is None:
            continue
        transform_one = fusion._in_rows(_transform_one, X, fusion._modalities[j])
        jobs.append(delayed(transform_one)(trans, Xm, name))
        slots.append(j)
    results = Parallel(n_jobs=n_jobs)(jobs)
    n = X.shape[0]
    blocks = [None] * len(fitted)
    presence = np.ones((n, len(fitted)), dtype=bool)
    for j, block in zip(slots, results):
        present = inputs[j][1]
        presence[:, j] = encoded_presence(block, present)
        if block is not None and block.shape[1] != widths[j]:
            raise ValueError(
                f"Modality {fitted[j][0]!r}: transformer returned {block.shape[1]} features, "
                f"but {widths[j]} at fit time."
            )
        blocks[j] = scatter_rows(block, present, widths[j])
    return blocks, presence


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
