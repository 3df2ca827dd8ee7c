"""ArrayEncoder: a column of equal-shape arrays (image pixels, embeddings) as a 2-D matrix."""

# SPDX-License-Identifier: BSD-3-Clause

from numbers import Number

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from .._compat import StrOptions, _fit_context
from ._base import RawItemEncoderMixin

__all__ = ["ArrayEncoder"]

_BLOCK = 4096  # rows flattened between two progress updates


def _as_vector(value):
    if isinstance(value, (str, bytes, dict)) or isinstance(value, Number):
        raise TypeError(f"expected an array or a sequence of numbers, got {type(value).__name__}")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not a numeric array ({exc})") from None
    if arr.ndim == 0:
        raise TypeError("expected an array, got a scalar")
    return arr


def _check_array(value, shape):
    """The item as a float64 array of ``shape`` (any shape when None)."""
    arr = _as_vector(value)
    if shape is not None and arr.shape != shape:
        raise ValueError(f"expected an array of shape {shape}, got shape {arr.shape}")
    return arr


class ArrayEncoder(RawItemEncoderMixin, TransformerMixin, BaseEstimator):
    """Flatten a column of equal-shape numeric arrays into one feature row per item.

    Each row holds one array (for instance an 8x8 image or a precomputed embedding); the output
    row is the array flattened in C order. The shape is learnt at ``fit``; an array of another
    shape at ``transform`` is an error. Missing rows (``None``, ``NaN``, an empty array) give a
    row of NaN, which the fusion estimators treat as a missing modality.

    Parameters
    ----------
    on_error : {"raise", "missing"}, default="raise"
        What a bad item (not numeric, wrong shape, a string...) does: raise an error naming the
        row and the value, or count as a missing modality.

    verbose : int, default=0
        ``verbose > 0`` shows a progress bar on stderr while flattening (as does
        ``skfusion.set_config(show_progress=True)``); never inside joblib or Dask workers, and
        ``TQDM_DISABLE=1`` silences it.

    Attributes
    ----------
    item_shape_ : tuple of int
        Shape of each array seen at fit.

    n_features_out_ : int
        Number of output columns (the product of ``item_shape_``).

    See Also
    --------
    skfusion.encoders.AudioEncoder : Audio features of a column of clips.

    Examples
    --------
    >>> import numpy as np
    >>> from skfusion.encoders import ArrayEncoder
    >>> column = [np.eye(2), None, np.ones((2, 2))]
    >>> ArrayEncoder().fit_transform(column)
    array([[ 1.,  0.,  0.,  1.],
           [nan, nan, nan, nan],
           [ 1.,  1.,  1.,  1.]], dtype=float32)
    """

    _accepts_strings = False  # arrays only

    _parameter_constraints: dict = {
        "on_error": [StrOptions({"raise", "missing"})],
        "verbose": ["verbose"],
    }

    def __init__(self, *, on_error="raise", verbose=0):
        self.on_error = on_error
        self.verbose = verbose

    def _check_item(self, value):
        return _check_array(value, self.item_shape_)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Record the shape of the arrays (all present items must share it).

        Parameters
        ----------
        X : array-like of shape (n_samples,)
            A column of arrays.
        y : None
            Ignored.

        Returns
        -------
        self : ArrayEncoder
            The fitted encoder.
        """
        arrays = self._column(X, check_item=lambda value: _check_array(value, None)).items
        if not arrays:
            raise ValueError("ArrayEncoder.fit needs at least one non-missing array.")
        shape = arrays[0].shape
        self._column(X, check_item=lambda value: _check_array(value, shape))  # all alike
        self.item_shape_ = shape
        self.n_features_out_ = int(np.prod(shape))
        return self

    def _encode_items(self, arrays, bar):
        rows = np.empty((len(arrays), self.n_features_out_), dtype=np.float32)
        for start in range(0, len(arrays), _BLOCK):
            block = arrays[start : start + _BLOCK]
            rows[start : start + len(block)] = [a.reshape(-1) for a in block]
            bar.update(len(block))
        return rows
