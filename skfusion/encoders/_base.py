"""Shared plumbing of skfusion's encoders: 1-D input checks, missing rows, NaN outputs."""

# SPDX-License-Identifier: BSD-3-Clause

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_is_fitted

from .._utils import is_missing_item
from ..exceptions import EncodingError

__all__ = ["EncodingError"]


def short_repr(value, limit=80):
    """``repr(value)`` cut to ``limit`` characters (for error messages)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def raise_encoding_error(encoder, row, labels, reason, value, cause=None):
    """Raise the :class:`EncodingError` of ``row`` (a position in the X the encoder got)."""
    label = None if labels is None else labels[row]
    raise EncodingError(
        type(encoder).__name__ if not isinstance(encoder, str) else encoder,
        row, reason, short_repr(value), label=label,
    ) from cause


def column_values(X, encoder_name):
    """Return (values as a 1-D object array, row labels) from a 1-D input or a 1-column 2-D one."""
    labels = None
    if isinstance(X, pd.DataFrame):
        if X.shape[1] != 1:
            raise ValueError(
                f"{encoder_name} encodes one column; got a DataFrame with {X.shape[1]} columns "
                f"{list(X.columns)!r}. Give each column its own modality."
            )
        X = X.iloc[:, 0]
    if isinstance(X, pd.Series):
        labels = X.index
        values = np.empty(len(X), dtype=object)
        for i, item in enumerate(X.tolist()):
            values[i] = item
    elif isinstance(X, (str, bytes)):
        raise ValueError(
            f"{encoder_name} expects a 1-D sequence of items, got a single {type(X).__name__}; "
            "wrap it in a list."
        )
    else:
        if isinstance(X, np.ndarray) and X.ndim == 2:
            if X.shape[1] != 1:
                raise ValueError(
                    f"{encoder_name} encodes one column; got a 2-D array with {X.shape[1]} "
                    "columns. Give each column its own modality."
                )
            X = X[:, 0]
        items = list(X)
        values = np.empty(len(items), dtype=object)
        for i, item in enumerate(items):  # element-wise: items may be arrays themselves
            values[i] = item
    return values, labels


def split_missing(values, labels, check_item, on_error, encoder_name):
    """Sort items into present (checked) ones and missing ones.

    ``check_item(value)`` returns the cleaned item or raises ``TypeError``/``ValueError`` for a
    bad one. Returns ``(present_indices, cleaned_items)``.
    """
    present, items = [], []
    for i, value in enumerate(values):
        if is_missing_item(value):
            continue
        try:
            items.append(check_item(value))
        except (TypeError, ValueError) as exc:
            if on_error == "missing":
                continue
            raise_encoding_error(encoder_name, i, labels, str(exc), value, exc)
        present.append(i)
    return np.asarray(present, dtype=np.intp), items


def scatter(n, present, rows, dim, dtype=np.float32):
    """An (n, dim) array with ``rows`` at ``present`` and NaN elsewhere."""
    out = np.full((n, dim), np.nan, dtype=dtype)
    if len(present):
        out[present] = rows
    return out


def pad_sequences(n, pieces, dim):
    """Stack variable-length sequences into ``transform_sequence``'s (values, mask).

    ``pieces`` holds ``(row, array of shape (length, dim))`` pairs. Rows without a piece are
    missing: NaN values and an all-False mask. Padding positions are 0 and masked out.
    """
    pieces = list(pieces)
    T = max([seq.shape[0] for _, seq in pieces], default=1)
    values = np.zeros((n, T, dim), dtype=np.float32)
    mask = np.zeros((n, T), dtype=bool)
    missing = np.ones(n, dtype=bool)
    for row, seq in pieces:
        values[row, : seq.shape[0]] = seq
        mask[row, : seq.shape[0]] = True
        missing[row] = False
    values[missing] = np.nan
    return values, mask


class RawItemEncoderMixin:
    """What skfusion's encoders share: one column of raw items in, a float32 matrix out.

    Sets the sklearn tags of a 1-D raw-item transformer (strings when ``_accepts_strings``,
    NaN/None as missing items) and names the outputs ``"0"`` ... ``"<embedding_dim_ - 1>"``,
    which the fusion estimators prefix with the modality name (``"text__0"``). Goes left of
    ``TransformerMixin`` in the bases.
    """

    _skfusion_stateless = True  # fit learns nothing from the data
    _accepts_strings = True

    def get_feature_names_out(self, input_features=None):
        """Output names ``"0"`` ... ``"<embedding_dim_ - 1>"``.

        Fusion estimators prefix them with the modality name (``"text__0"``).

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Ignored.

        Returns
        -------
        feature_names_out : ndarray of str objects
            The output dimension names.
        """
        check_is_fitted(self)
        return np.asarray([str(i) for i in range(self.embedding_dim_)], dtype=object)

    def __getstate__(self):
        # a copy: on Python >= 3.11 BaseEstimator's state is the live __dict__ itself, which
        # the encoders' own __getstate__ would otherwise strip of its runtime objects.
        # The ONNX session slot (skfusion.runtime._session.lazy_session) pickles empty anyway;
        # leaving it out keeps pickles and .skops files free of runtime objects.
        state = dict(super().__getstate__())
        state.pop("_session_slot", None)
        return state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.one_d_array = True
        tags.input_tags.string = self._accepts_strings
        tags.input_tags.allow_nan = True
        tags.transformer_tags.preserves_dtype = []
        return tags
