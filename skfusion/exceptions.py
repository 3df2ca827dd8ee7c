"""Exceptions raised by skfusion."""

# SPDX-License-Identifier: BSD-3-Clause

__all__ = [
    "EncodingError",
    "ModelBytesMismatchError",
    "ModelFileError",
    "ModelStoreIntegrityError",
    "UntrustedTypesError",
]


class EncodingError(ValueError):
    """A raw item could not be encoded; the message names the row and the value.

    The row is named as the user passed it: its position in the X given to ``transform`` or
    to the fusion estimator, and its index label when that X was a pandas object. Encoders
    often run on a subset of the user's rows (the rows where a modality is present, the rows
    the embedding cache has not seen, a cross-validation fold); the code that made the subset
    maps the error back with :meth:`relocated`.

    Parameters
    ----------
    encoder : str
        Class name of the encoder.
    position : int
        Position of the bad item in the X the encoder was given.
    reason : str
        What is wrong with the item.
    value : str
        A short ``repr`` of the item.
    label : object, default=None
        The item's index label, or None when X had no index.
    modality : str, default=None
        The modality (and its column), when a fusion estimator was encoding it.

    Attributes
    ----------
    encoder, position, reason, value, label, modality
        As given.

    Examples
    --------
    >>> from skfusion.exceptions import EncodingError
    >>> print(EncodingError("TextEncoder", 3, "expected a string, got int", "7", label=303))
    TextEncoder cannot encode row 3 (index 303): expected a string, got int (value 7).
    Fix the value, or pass on_error='missing' to treat bad items as a missing modality.
    """

    def __init__(self, encoder, position, reason, value, *, label=None, modality=None):
        self.encoder = encoder
        self.position = int(position)
        self.reason = reason
        self.value = value
        self.label = label
        self.modality = modality
        self._in_user_rows = False
        super().__init__(self._message())

    def _message(self):
        where = f" of {self.modality}" if self.modality else ""
        return (
            f"{self.encoder} cannot encode {_row_text(self.position, self.label)}{where}: "
            f"{self.reason} (value {self.value}). Fix the value, or pass on_error='missing' to "
            "treat bad items as a missing modality."
        )

    def __reduce__(self):  # joblib's process workers send errors back pickled
        return (
            _rebuild,
            (self.encoder, self.position, self.reason, self.value, self.label, self.modality,
             self._in_user_rows),
        )

    def relocated(self, positions, labels=None):
        """The same error with its row named in a larger X.

        Parameters
        ----------
        positions : array-like of int
            ``positions[i]`` is the position, in the larger X, of row ``i`` of the subset the
            encoder was given.
        labels : sequence or None, default=None
            The larger X's index labels; None keeps the label the error has.

        Returns
        -------
        error : EncodingError
            A new error (raise it ``from`` this one).
        """
        if self._in_user_rows:
            return self
        position = int(positions[self.position])
        label = self.label if labels is None else labels[position]
        return EncodingError(
            self.encoder, position, self.reason, self.value, label=label, modality=self.modality
        )

    def _in_fusion_rows(self, index, modality):
        """The error named in a fusion estimator's X (used by :mod:`skfusion.fusion`).

        Fusion estimators give an encoder its column as a Series indexed by the row positions
        in their own X, so the label the encoder reports *is* that position, whatever subset of
        rows (present rows, rows the cache has not seen, a fold) the encoder was given.
        ``index`` is the user's index (None for an array) and ``modality`` names the modality.
        """
        if self._in_user_rows:
            return self
        position = self.label if self.label is not None else self.position
        label = None if index is None else index[int(position)]
        error = EncodingError(
            self.encoder, position, self.reason, self.value, label=label, modality=modality
        )
        error._in_user_rows = True
        return error


def _rebuild(encoder, position, reason, value, label, modality, in_user_rows):
    error = EncodingError(encoder, position, reason, value, label=label, modality=modality)
    error._in_user_rows = in_user_rows
    return error


def _row_text(i, label):
    """How a message names row ``i``: its position, and its index label when that differs."""
    if label is None:
        return f"row {i}"
    if hasattr(label, "item"):  # numpy scalars print as np.int64(11) otherwise
        label = label.item()
    return f"row {i}" if label == i else f"row {i} (index {label!r})"


class ModelFileError(ValueError):
    """A model file cannot be loaded.

    The file is corrupt, not the format its extension says, or its SHA-256 differs from the
    expected one.

    Examples
    --------
    >>> from skfusion.exceptions import ModelFileError
    >>> issubclass(ModelFileError, ValueError)
    True
    """


class UntrustedTypesError(ModelFileError):
    """A ``.skops`` file holds types that are not trusted; nothing was loaded.

    Parameters
    ----------
    path : str
        The file.
    types : list of str
        The untrusted types, by their full names.

    Attributes
    ----------
    types : list of str
        The untrusted types.

    Examples
    --------
    >>> from skfusion.exceptions import UntrustedTypesError
    >>> print(UntrustedTypesError("m.skops", ["mymodule.MyScaler"]))
    m.skops holds types that skfusion does not trust by default: ['mymodule.MyScaler']. ...
    """

    def __init__(self, path, types):
        self.types = list(types)
        super().__init__(
            f"{path} holds types that skfusion does not trust by default: {self.types!r}. "
            "Loading builds these types, so check that you know them; then allow them with "
            f"skfusion.load(path, trusted={self.types!r}) or `skfusion predict ... --trust "
            f"{' --trust '.join(self.types)}`."
        )


class ModelBytesMismatchError(ValueError):
    """The ONNX bytes an encoder carries are not the ones whose SHA-256 it recorded at fit.

    Examples
    --------
    >>> from skfusion.exceptions import ModelBytesMismatchError
    >>> issubclass(ModelBytesMismatchError, ValueError)
    True
    """


class ModelStoreIntegrityError(RuntimeError):
    """A model store entry does not verify and the caller cannot rebuild it.

    Raised by the model store (:mod:`skfusion.storage`) without a builder when the entry does
    not match the SHA-256 recorded when it was written (or has no record). The message names
    the file.

    Examples
    --------
    >>> from skfusion.exceptions import ModelStoreIntegrityError
    >>> issubclass(ModelStoreIntegrityError, RuntimeError)
    True
    """
