"""Shared plumbing of skfusion's encoders: the transform template and its helpers.

:class:`RawItemEncoderMixin` holds the one ``transform`` every encoder runs (column values,
missing items, the embedding cache, scatter back into all rows) around two hooks that an
encoder writes: ``_check_item`` (is one raw item usable, and its cleaned form) and
``_encode_items`` (the rows of a batch of present items).
"""

# SPDX-License-Identifier: BSD-3-Clause

import contextlib
from typing import NamedTuple

import numpy as np
import pandas as pd
from sklearn.base import TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .._progress import progress
from .._utils import is_missing_item
from ..exceptions import EncodingError
from ..storage import cached_encode

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


def pad_sequences(n, pieces, dim, length=1):
    """Stack variable-length sequences into ``transform_sequence``'s (values, mask).

    ``pieces`` holds ``(row, array of shape (length, dim))`` pairs. Rows without a piece are
    missing: NaN values and an all-False mask. Padding positions are 0 and masked out.
    ``length`` is the number of positions when there is no piece at all.
    """
    pieces = list(pieces)
    T = max([seq.shape[0] for _, seq in pieces], default=length)
    values = np.zeros((n, T, dim), dtype=np.float32)
    mask = np.zeros((n, T), dtype=bool)
    missing = np.ones(n, dtype=bool)
    for row, seq in pieces:
        values[row, : seq.shape[0]] = seq
        mask[row, : seq.shape[0]] = True
        missing[row] = False
    values[missing] = np.nan
    return values, mask


class Column(NamedTuple):
    """One column as an encoder sees it (see :meth:`RawItemEncoderMixin._column`)."""

    values: np.ndarray  # every row's raw value (1-D object array)
    labels: object  # the row labels of a pandas input, else None
    present: np.ndarray  # positions of the rows whose item is to be encoded
    items: list  # those items, as ``_check_item`` cleaned them

    @property
    def n(self):
        return len(self.values)

    @contextlib.contextmanager
    def naming_rows(self):
        """An :class:`EncodingError` raised for ``items[i]`` is re-raised for its row in X.

        The error then names the row's position and index label in the X the encoder was
        given, and its raw value as the user gave it (not the cleaned item).
        """
        try:
            yield
        except EncodingError as exc:
            error = exc.relocated(self.present, self.labels)
            if error is not exc:  # not yet in the user's rows: name the raw value too
                error = EncodingError(
                    error.encoder, error.position, error.reason,
                    short_repr(self.values[error.position]), label=error.label,
                    modality=error.modality,
                )
            raise error from exc


class RawItemEncoderMixin(TransformerMixin):
    """What skfusion's encoders share: one column of raw items in, a float32 matrix out.

    ``transform`` is written once, here: the column's values
    (:func:`column_values`), its missing and bad items (:func:`split_missing` with the
    encoder's ``_check_item``), the present items through the embedding cache
    (:func:`skfusion.storage.cached_encode`, when the encoder has a ``_skfusion_fingerprint``)
    into the encoder's ``_encode_items``, then one row per row of X: NaN for a missing item.
    A progress count (``verbose``) spans the call, and an :class:`EncodingError` raised for
    an item names its row and raw value in X. ``_encode_column_sequences`` does the same for
    the ``transform_sequence`` of the encoders that have one.

    An encoder writes the hooks:

    - ``_check_item(value)``: the cleaned item, or ``TypeError``/``ValueError`` for a bad
      one (cheap: files are read by ``_encode_items``);
    - ``_encode_items(items, bar)``: an array of shape ``(len(items), n_features_out_)``,
      calling ``bar.update(k)`` as it goes. A bad item gives a NaN row with
      ``on_error="missing"``, else an :class:`EncodingError` for its position in ``items``
      (see :func:`raise_encoding_error`);
    - for ``transform_sequence``: ``_encode_item_sequences(items, bar)`` (one ``(length, d)``
      array per item, or None for a bad item left out) and ``_empty_sequence_shape()``
      (``(length, d)`` of the output when no item is present).

    It also sets the sklearn tags of a 1-D raw-item transformer (strings when
    ``_accepts_strings``, NaN/None as missing items) and names the outputs ``"0"`` ...
    ``"<n_features_out_ - 1>"``, which the fusion estimators prefix with the modality name
    (``"text__0"``). A ``TransformerMixin`` itself (so that ``set_output`` wraps the
    ``transform`` defined here); goes left of ``TransformerMixin`` in the bases.
    """

    _skfusion_stateless = True  # fit learns nothing from the data
    _accepts_strings = True

    # --- hooks ---
    def _check_item(self, value):
        """The cleaned item, or ``TypeError``/``ValueError`` for a bad one."""
        return value

    def _encode_items(self, items, bar):
        """Rows of shape ``(len(items), n_features_out_)`` for present, checked items."""
        raise NotImplementedError

    def _encode_item_sequences(self, items, bar):
        """One ``(length, d)`` float array per item (None for a bad item left out)."""
        raise NotImplementedError

    def _empty_sequence_shape(self):
        """``(length, d)`` of ``transform_sequence`` when no item is present."""
        return 1, self.n_features_out_

    def _check_fitted(self):
        check_is_fitted(self)

    # --- the template ---
    def _column(self, X, check_item=None):
        """The :class:`Column` of X: values, labels, present rows and their checked items.

        A bad item raises an :class:`EncodingError` naming its row and value, or
        (``on_error="missing"``) is left out of the present rows.
        """
        name = type(self).__name__
        values, labels = column_values(X, name)
        present, items = split_missing(
            values, labels, check_item or self._check_item, self.on_error, name
        )
        return Column(values, labels, present, items)

    def _encode_column(self, X):
        """``transform``'s rows: cached encode of the present items, NaN for the others."""
        column = self._column(X)
        width = self.n_features_out_
        if not column.items:
            return scatter(column.n, column.present, None, width)
        with progress(len(column.items), type(self).__name__, self.verbose) as bar:
            with column.naming_rows():
                # the embedding cache passes only the items it has not seen to the encoder
                rows = cached_encode(self, column.items, lambda it: self._encode_items(it, bar))
        return scatter(column.n, column.present, rows, width)

    def _encode_column_sequences(self, X):
        """``transform_sequence``'s (values, mask): one sequence per present item, padded."""
        column = self._column(X)
        sequences = []
        if column.items:
            with progress(len(column.items), type(self).__name__, self.verbose) as bar:
                with column.naming_rows():
                    sequences = self._encode_item_sequences(column.items, bar)
        pieces = [
            (row, seq) for row, seq in zip(column.present, sequences) if seq is not None
        ]
        length, dim = self._empty_sequence_shape() if not pieces else (1, pieces[0][1].shape[1])
        return pad_sequences(column.n, pieces, dim, length)

    def transform(self, X):
        """Encode each item; missing rows (and bad ones, with ``on_error="missing"``) give NaN.

        Parameters
        ----------
        X : array-like of shape (n_samples,)
            One column of raw items: a list, Series, 1-D array or one-column DataFrame.

        Returns
        -------
        X_out : ndarray of shape (n_samples, ``n_features_out_``), dtype float32
            One row per item.
        """
        self._check_fitted()
        return self._encode_column(X)

    def get_feature_names_out(self, input_features=None):
        """Output names ``"0"`` ... ``"<n_features_out_ - 1>"``.

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
        return np.asarray([str(i) for i in range(self.n_features_out_)], dtype=object)

    def __getstate__(self):
        # a copy: on Python >= 3.11 BaseEstimator's state is the live __dict__ itself, which
        # the encoders' own __getstate__ would otherwise strip of its runtime objects.
        # ONNX sessions are not on the encoder (skfusion.runtime._session.lazy_session).
        return dict(super().__getstate__())

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.one_d_array = True
        tags.input_tags.string = self._accepts_strings
        tags.input_tags.allow_nan = True
        tags.transformer_tags.preserves_dtype = []
        return tags
