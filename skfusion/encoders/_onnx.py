"""OnnxEncoder: any ONNX model as a scikit-learn transformer of a raw-item column."""

# SPDX-License-Identifier: BSD-3-Clause

import os
from collections.abc import Mapping
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from .._compat import Interval, StrOptions, _fit_context
from ..storage._hashing import file_digest, sha256_hex
from ..runtime._session import clear_session
from ._base import RawItemEncoderMixin, raise_encoding_error

__all__ = ["OnnxEncoder"]

_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def _default_preprocess(items):
    """Stack the items (numbers, vectors or arrays of one shape) into one float32 array."""
    return np.stack([np.asarray(item, dtype=np.float32) for item in items])


def _callable_digest(func):
    """Identify a callable by its code (not its address), for the fingerprint."""
    if func is None:
        return "default"
    code = getattr(func, "__code__", None)
    name = f"{getattr(func, '__module__', '')}.{getattr(func, '__qualname__', repr(func))}"
    if code is None:
        return f"{name}:{func!r}"
    digest = sha256_hex(code.co_code + repr(code.co_consts).encode())[:16]
    return f"{name}:{digest}"


class _SetupError(ValueError):
    """A mismatch between preprocess and the model: not the fault of one item."""


class _ModelRunError(ValueError):
    """ONNX Runtime rejected a batch."""


class OnnxEncoder(RawItemEncoderMixin, TransformerMixin, BaseEstimator):
    """Run any ONNX model on a column of raw items: one feature vector per row.

    A ``preprocess`` callable turns a batch of raw items (texts, paths, arrays, ...) into the
    model's inputs; the chosen output is pooled to one vector per row when it is a sequence
    ``(n, T, d)`` or a feature map ``(n, C, H, W)``. The model runs on ONNX Runtime (CUDA when
    available, see :func:`skfusion.runtime.resolve_providers`), and the fitted encoder keeps
    the model bytes, so a persisted encoder scores anywhere without the original file. Missing
    rows (``None``, ``NaN``, empty values) give NaN rows.

    Read more in the :ref:`User Guide <runtime>`.

    Parameters
    ----------
    model : str, path-like or bytes
        An ``.onnx`` file or the serialized model.

    preprocess : callable, default=None
        ``preprocess(items) -> ndarray or dict of str to ndarray``, called on a list of the
        non-missing items of a batch. One array feeds the model's single input (or the input
        named by ``input_names``); a dict feeds inputs by name. Arrays are cast to the input's
        dtype. ``None`` stacks the items (numbers, vectors or equal-shape arrays) as float32.
        A ``TypeError``/``ValueError`` raised for a batch is traced back to the bad item, which
        raises an error naming its row (or, with ``on_error="missing"``, becomes missing).
        Give a module-level function when the encoder is to be pickled.

    input_names : str or dict, default=None
        A str: the model input that a single array feeds. A dict: maps the keys returned by
        ``preprocess`` to model input names (keys not in it keep their name).

    output_name : str or int, default=0
        The model output to use, by name or position.

    pooling : {"mean", "cls", "max", "flatten"}, default="mean"
        How a sequence output ``(n, T, d)`` (or an NCHW feature map ``(n, C, H, W)``, read as
        ``H*W`` positions of ``C`` channels) becomes one row: mean, first position, element-wise
        max over the real positions (see ``mask_key``), or ``"flatten"``: every position kept,
        one after the other. 2-D outputs are used as they are.

    mask_key : str, default=None
        Key of the ``preprocess`` dict holding the padding mask ``(n, T)`` (non-zero = real
        position) used by pooling and ``transform_sequence``. ``None`` uses
        ``"attention_mask"`` when the dict has it, else every position is real.

    batch_size : int, default=32
        Items per model call.

    device : str, default="auto"
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; see
        :func:`skfusion.runtime.resolve_providers`.

    intra_op_num_threads : int, default=None
        ONNX Runtime threads; ``None`` uses
        :func:`skfusion.runtime.default_intra_op_threads`.

    on_error : {"raise", "missing"}, default="raise"
        What an item that ``preprocess`` rejects does: raise an error naming the row and value,
        or count as a missing modality.

    verbose : int, default=0
        ``verbose > 0`` shows a progress bar (rows encoded, rate, time left) on stderr while
        encoding, as does ``skfusion.set_config(show_progress=True)``; never inside joblib or
        Dask workers, and ``TQDM_DISABLE=1`` silences it.

    Attributes
    ----------
    model_bytes_ : bytes
        The ONNX model.

    model_sha256_ : str
        SHA-256 of ``model_bytes_`` at fit: part of the embedding-cache fingerprint, and checked
        against the bytes before a session is built (an error naming the encoder when they
        differ).

    output_name_ : str
        The name of the output used.

    input_names_ : list of str
        The model's input names.

    n_features_out_ : int
        Length of each output row.

    See Also
    --------
    skfusion.encoders.TextEncoder : Sentence embeddings on ONNX Runtime.
    skfusion.runtime.LazySession : The pickle-safe session holder used here.

    Examples
    --------
    A model that doubles its input (built with ``onnx.helper``):

    >>> import numpy as np
    >>> from onnx import TensorProto, helper
    >>> from skfusion.encoders import OnnxEncoder
    >>> x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])
    >>> y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])
    >>> two = helper.make_tensor("two", TensorProto.FLOAT, [1], [2.0])
    >>> graph = helper.make_graph([helper.make_node("Mul", ["x", "two"], ["y"])],
    ...                           "double", [x], [y], [two])
    >>> model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    >>> model.ir_version = 8
    >>> encoder = OnnxEncoder(model.SerializeToString(), device="cpu")
    >>> encoder.fit_transform([[1.0, 2.0], None, np.array([0.5, 0.0])])
    array([[ 2.,  4.],
           [nan, nan],
           [ 1.,  0.]], dtype=float32)
    """

    _parameter_constraints: dict = {
        "model": [str, os.PathLike, bytes],
        "preprocess": [callable, None],
        "input_names": [str, Mapping, None],
        "output_name": [str, Interval(Integral, 0, None, closed="left")],
        "pooling": [StrOptions({"mean", "cls", "max", "flatten"})],
        "mask_key": [str, None],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str],
        "intra_op_num_threads": [Interval(Integral, 1, None, closed="left"), None],
        "on_error": [StrOptions({"raise", "missing"})],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        model,
        *,
        preprocess=None,
        input_names=None,
        output_name=0,
        pooling="mean",
        mask_key=None,
        batch_size=32,
        device="auto",
        intra_op_num_threads=None,
        on_error="raise",
        verbose=0,
    ):
        self.model = model
        self.preprocess = preprocess
        self.input_names = input_names
        self.output_name = output_name
        self.pooling = pooling
        self.mask_key = mask_key
        self.batch_size = batch_size
        self.device = device
        self.intra_op_num_threads = intra_op_num_threads
        self.on_error = on_error
        self.verbose = verbose

    # --- session ---
    def _lazy_session(self):
        """The keyed lazy session (bytes' SHA-256, device, threads; checked against fit's)."""
        from ..runtime._session import lazy_session

        return lazy_session(
            self,
            self.model_bytes_,
            device=self.device,
            intra_op_num_threads=self.intra_op_num_threads,
            expected_sha256=getattr(self, "model_sha256_", None),
        )

    def _skfusion_fingerprint(self):
        """A string that identifies this encoder's output (for the embedding cache).

        Returns
        -------
        fingerprint : str
            Digest of the class, output-affecting parameters, model content and the code of
            ``preprocess``.
        """
        from ..storage import estimator_fingerprint

        # fitted: the SHA-256 of the bytes that run (recorded at fit, checked before a session
        # is built); unfitted: the model file or bytes given, hashed by content
        sha = getattr(self, "model_sha256_", None)
        if sha is None and hasattr(self, "model_bytes_"):  # pickled by an older skfusion
            sha = sha256_hex(self.model_bytes_)
        elif sha is None and isinstance(self.model, bytes):
            sha = sha256_hex(self.model)
        elif sha is None and os.path.isfile(self.model):
            sha = file_digest(self.model).hex()  # memoised by the file's size and time
        return estimator_fingerprint(
            self,
            ignore=(
                "model",
                "preprocess",
                "batch_size",
                "device",
                "intra_op_num_threads",
                "on_error",
                "verbose",
            ),
            model=None if sha is not None else self.model,
            extra=(_callable_digest(self.preprocess), f"onnx-sha256={sha}"),
        )

    # --- fit ---
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Load the model, pick the output and find the output size; nothing is learnt from X.

        Parameters
        ----------
        X : array-like of shape (n_samples,)
            Raw items; the first non-missing ones are run once when the output size is not
            fixed by the model.
        y : None
            Ignored.

        Returns
        -------
        self : OnnxEncoder
            The fitted encoder.
        """
        from ..runtime import make_session

        if isinstance(self.model, (str, os.PathLike)):
            with open(self.model, "rb") as fh:
                model_bytes = fh.read()
        else:
            model_bytes = bytes(self.model)
        session = make_session(model_bytes, device="cpu", intra_op_num_threads=1)  # validates
        outputs = session.get_outputs()
        names = [o.name for o in outputs]
        if isinstance(self.output_name, str):
            if self.output_name not in names:
                raise ValueError(
                    f"the model has no output {self.output_name!r}; outputs: {names}"
                )
            out = outputs[names.index(self.output_name)]
        else:
            if self.output_name >= len(outputs):
                raise ValueError(
                    f"output_name={self.output_name} but the model has outputs {names}"
                )
            out = outputs[self.output_name]
        clear_session(self)
        self.model_bytes_ = model_bytes
        self.model_sha256_ = sha256_hex(model_bytes)
        self.output_name_ = out.name
        self.input_names_ = [i.name for i in session.get_inputs()]
        self._input_types = {i.name: i.type for i in session.get_inputs()}
        dim = self._static_dim(out.shape)
        if dim is None:
            column = self._column(X)
            if not column.items:
                raise ValueError(
                    "OnnxEncoder cannot find the output size: the model does not fix it and X "
                    "has no non-missing item to run."
                )
            with column.naming_rows():
                pieces = [self._pool(out, mask) for _, out, mask in self._run_batches(
                    column.items[:2]
                )]
            if not pieces:
                raise ValueError("OnnxEncoder cannot find the output size: every item was bad.")
            dim = pieces[0].shape[1]
        self.n_features_out_ = int(dim)
        return self

    def _static_dim(self, shape):
        if not shape or not all(isinstance(s, Integral) for s in shape[1:]):
            return None
        if len(shape) == 2:
            return shape[1]
        if self.pooling == "flatten":
            return int(np.prod(shape[1:]))
        if len(shape) == 3:
            return shape[2]
        if len(shape) == 4:
            return shape[1]
        return None

    # --- batches ---
    def _call_preprocess(self, items):
        func = self.preprocess if self.preprocess is not None else _default_preprocess
        return func(items)

    def _feeds(self, prepared):
        """Model feeds and the padding mask (or None) from what ``preprocess`` returned."""
        if isinstance(prepared, Mapping):
            mapping = self.input_names if isinstance(self.input_names, Mapping) else {}
            feeds = {mapping.get(k, k): v for k, v in prepared.items()}
            key = self.mask_key or "attention_mask"
            mask = prepared.get(key)
            if mask is None and self.mask_key is not None:
                raise _SetupError(f"preprocess returned no {self.mask_key!r} (mask_key)")
        else:
            if isinstance(self.input_names, str):
                name = self.input_names
            elif len(self.input_names_) == 1:
                name = self.input_names_[0]
            else:
                raise _SetupError(
                    f"preprocess returned one array but the model takes inputs "
                    f"{self.input_names_}; return a dict or set input_names."
                )
            feeds, mask = {name: prepared}, None
        unknown = sorted(set(feeds) - set(self.input_names_))
        if unknown:
            raise _SetupError(
                f"preprocess gave {unknown}, which the model does not take (inputs "
                f"{self.input_names_}); map them with input_names."
            )
        types = getattr(self, "_input_types", {})
        for name, value in feeds.items():
            dtype = _ORT_DTYPES.get(types.get(name))
            feeds[name] = np.ascontiguousarray(value, dtype=dtype)
        return feeds, (None if mask is None else np.asarray(mask))

    def _run_one(self, lazy, items, positions):
        """Preprocess and run one batch: (positions, raw output, mask)."""
        feeds, mask = self._feeds(self._call_preprocess(items))
        try:
            (out,) = lazy.run([self.output_name_], feeds)
        except Exception as exc:  # ORT's own exception types
            raise _ModelRunError(f"the ONNX model failed: {str(exc).strip()[:400]}") from exc
        if out.shape[0] != len(items):
            raise _SetupError(
                f"the model output {self.output_name_!r} has {out.shape[0]} rows for a "
                f"batch of {len(items)} items"
            )
        return positions, np.asarray(out), mask

    def _run_batches(self, items, bar=None):
        """Yield (positions in ``items``, raw output, mask) per batch.

        When a batch fails (``preprocess`` or the model rejects it), its items run one by one
        so that the error names the bad row, or (``on_error="missing"``) only that row is lost.
        """
        lazy = self._lazy_session()
        for start in range(0, len(items), self.batch_size):
            batch = items[start : start + self.batch_size]
            positions = np.arange(start, start + len(batch))
            try:
                result = self._run_one(lazy, batch, positions)
            except _SetupError:
                raise
            except (TypeError, ValueError):
                result = None
            if bar is not None:
                bar.update(len(batch))
            if result is not None:
                yield result
                continue
            for j, item in enumerate(batch):
                try:
                    result = self._run_one(lazy, [item], positions[j : j + 1])
                except _SetupError:
                    raise
                except (TypeError, ValueError) as exc:
                    if self.on_error == "missing":
                        continue
                    raise_encoding_error(self, positions[j], None, str(exc), item, exc)
                yield result

    @staticmethod
    def _as_sequence(out, mask):
        if out.ndim == 4:  # NCHW feature map: H*W positions of C channels
            n, c = out.shape[:2]
            return out.reshape(n, c, -1).transpose(0, 2, 1), None
        if mask is not None and mask.shape != out.shape[:2]:
            mask = None  # the mask does not describe this output's positions
        return out, mask

    def _pool(self, out, mask):
        from ..runtime import pool_sequence

        if out.ndim <= 2:
            return out.reshape(out.shape[0], -1).astype(np.float32, copy=False)
        if self.pooling == "flatten" or out.ndim > 4:
            return out.reshape(out.shape[0], -1).astype(np.float32, copy=False)
        values, mask = self._as_sequence(out, mask)
        return pool_sequence(values, mask, self.pooling)

    # --- the hooks of RawItemEncoderMixin's template ---
    def _encode_items(self, items, bar):
        dim = self.n_features_out_
        out = np.full((len(items), dim), np.nan, dtype=np.float32)
        for kept, raw, mask in self._run_batches(items, bar):
            rows = self._pool(raw, mask)
            if rows.shape[1] != dim:
                raise ValueError(f"the model gave {rows.shape[1]} features, expected {dim}")
            out[kept] = rows
        return out

    def transform_sequence(self, X):
        """The output as a sequence per row, padded to the longest, and its mask.

        Needs a sequence output ``(n, T, d)`` or an NCHW feature map ``(n, C, H, W)`` (then
        ``T = H * W`` and ``d = C``).

        Parameters
        ----------
        X : array-like of shape (n_samples,)
            Raw items.

        Returns
        -------
        values : ndarray of shape (n_samples, T, d), dtype float32
            Padding positions are 0 and missing rows are NaN.
        mask : ndarray of shape (n_samples, T), dtype bool
            True for real positions; all False for a missing row.
        """
        self._check_fitted()
        return self._encode_column_sequences(X)

    def _encode_item_sequences(self, items, bar):
        sequences = [None] * len(items)  # None: an item left out (on_error="missing")
        for kept, out, mask in list(self._run_batches(items, bar)):
            if out.ndim not in (3, 4):
                raise ValueError(
                    f"transform_sequence needs a sequence output (n, T, d) or (n, C, H, W); "
                    f"{self.output_name_!r} has shape {out.shape}"
                )
            values, mask = self._as_sequence(out, mask)
            for j, pos in enumerate(kept):
                length = int(np.count_nonzero(mask[j])) if mask is not None else values.shape[1]
                keep = mask[j] != 0 if mask is not None else slice(None)
                sequences[pos] = values[j][keep][:length]
        return sequences
