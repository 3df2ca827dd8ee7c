"""Pooling of token (or frame) sequences into one vector per row, with a padding mask."""

# SPDX-License-Identifier: BSD-3-Clause

import numpy as np

__all__ = ["POOLING_MODES", "l2_normalize", "pool_sequence"]

POOLING_MODES = ("mean", "cls", "max", "mean_sqrt_len")


def pool_sequence(values, mask, mode="mean"):
    """Pool ``values`` of shape (n, T, d) over T, ignoring padded positions.

    Parameters
    ----------
    values : ndarray of shape (n, T, d)
        Token or frame embeddings.
    mask : ndarray of shape (n, T)
        Non-zero / True for real positions, 0 / False for padding.
    mode : {"mean", "cls", "max", "mean_sqrt_len"}, default="mean"
        ``"mean"``: average of the real positions; ``"cls"``: the first position; ``"max"``:
        element-wise maximum of the real positions; ``"mean_sqrt_len"``: sum divided by the
        square root of the number of real positions (sentence-transformers' modes).

    Returns
    -------
    pooled : ndarray of shape (n, d), dtype float32
        One vector per row; a row with no real position gives zeros (``"max"``: zeros too).

    Examples
    --------
    >>> import numpy as np
    >>> from skfusion.runtime import pool_sequence
    >>> values = np.array([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]], dtype=np.float32)
    >>> mask = np.array([[1, 1, 0]])
    >>> pool_sequence(values, mask, "mean")
    array([[2., 3.]], dtype=float32)
    >>> pool_sequence(values, mask, "max")
    array([[3., 4.]], dtype=float32)
    """
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 3:
        raise ValueError(f"values must have 3 dimensions (n, T, d), got shape {values.shape}")
    if mask is None:
        mask = np.ones(values.shape[:2], dtype=np.float32)
    weights = np.asarray(mask, dtype=np.float32)
    if weights.shape != values.shape[:2]:
        raise ValueError(f"mask shape {weights.shape} does not match values {values.shape[:2]}")
    if mode == "cls":
        return np.ascontiguousarray(values[:, 0, :])
    counts = weights.sum(axis=1, keepdims=True)
    if mode == "max":
        filled = np.where(weights[..., None] > 0, values, -np.inf)
        pooled = filled.max(axis=1)
        return np.where(counts > 0, pooled, 0.0).astype(np.float32)
    summed = np.einsum("ntd,nt->nd", values, weights)
    if mode == "mean":
        return (summed / np.maximum(counts, 1e-9)).astype(np.float32)
    if mode == "mean_sqrt_len":
        return (summed / np.sqrt(np.maximum(counts, 1e-9))).astype(np.float32)
    raise ValueError(f"pooling mode {mode!r} is not one of {POOLING_MODES}")


def l2_normalize(rows):
    """Scale each row to unit L2 norm (zero rows stay zero).

    Parameters
    ----------
    rows : ndarray of shape (n, d)
        Vectors.

    Returns
    -------
    normalized : ndarray of shape (n, d), dtype float32
        Unit-norm rows.

    Examples
    --------
    >>> import numpy as np
    >>> from skfusion.runtime import l2_normalize
    >>> l2_normalize(np.array([[3.0, 4.0]]))
    array([[0.6, 0.8]], dtype=float32)
    """
    rows = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return (rows / np.maximum(norms, 1e-12)).astype(np.float32)
