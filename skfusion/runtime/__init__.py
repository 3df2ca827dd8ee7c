"""ONNX Runtime plumbing shared by skfusion's encoders: sessions and the model store.

Nothing here imports onnxruntime at import time; it is imported when a session is built.

Sessions
--------
``resolve_providers(device="auto") -> list[str]``
    ``"auto"`` → ``["CUDAExecutionProvider", "CPUExecutionProvider"]`` when the installed
    onnxruntime exposes CUDA and ``CUDA_VISIBLE_DEVICES`` does not hide every GPU, else
    ``["CPUExecutionProvider"]``; ``"cpu"``; ``"cuda"`` / ``"cuda:N"`` (``RuntimeError`` when
    onnxruntime has no CUDA provider). Other strings give ``ValueError``.
``make_session(model_bytes, *, device="auto", intra_op_num_threads=None) -> InferenceSession``
    Graph optimisation ``ORT_ENABLE_ALL``, sequential execution, the CPU provider as fallback.
    ``model_bytes`` may also be a path. Corrupt or non-ONNX bytes raise ``ValueError``; a CUDA
    device ORT cannot use raises ``RuntimeError``. Threads default to
    ``default_intra_op_threads()``: ``OMP_NUM_THREADS`` when set (joblib's loky workers get
    ``cpu_count // n_jobs`` there), else 1 inside a worker process (loky, multiprocessing), else
    every CPU the process may run on. With fewer threads than CPUs, spin-waiting is turned off.
``LazySession(model_bytes, device="auto", intra_op_num_threads=None)``
    Picklable holder: ``.session`` (built on first access, thread-safe, dropped by
    ``__getstate__``), ``.run(output_names, feeds)``, ``.input_names``, ``.output_names``,
    ``.model_bytes``, ``.device``. On the CUDA provider ``.run`` goes through ``run_session``.
``lazy_session(owner, model_bytes, *, device, intra_op_num_threads, disabled_optimizers,
expected_sha256, check) -> LazySession`` (private, ``skfusion.runtime._session``)
    The one lazy-session helper of every ONNX encoder: the owner's session for a key of every
    setting that shapes it (SHA-256 of the bytes, providers, device, threads, disabled
    optimisers), rebuilt when any of them changes (``set_params`` after fit takes effect),
    thread-safe, never pickled; ``expected_sha256`` refuses bytes that differ from the hash
    recorded at fit. ``resolve_device`` lives in ``skfusion.runtime._device``.
``run_session(session, output_names, feeds, device_id=0) -> list[ndarray]``
    CUDA sessions: an IOBinding (host inputs bound with ``bind_cpu_input``, the requested
    outputs allocated on the GPU and copied back once); others: ``session.run``.
    ``uses_io_binding(session)`` says which.
``float16_model(model_bytes) -> bytes``
    The model in float16 with float32 inputs and outputs (``onnxruntime.transformers``'
    converter, ``keep_io_types=True``); the CPU provider runs it too.

Model store
-----------
``model_store_dir() -> pathlib.Path``
    ``$SKFUSION_HOME/models`` or ``~/.cache/skfusion/models`` (``$XDG_CACHE_HOME`` respected).
``store_entry(key: str, build: callable -> bytes | None = None, *, timeout=600) -> (bytes, str)``
    The verified entry and its SHA-256 (encoders put that hash in their fingerprint). Entry
    file ``<sha256(key)>.bin`` with its SHA-256 recorded in ``<sha256(key)>.bin.sha256``,
    checked on every read: an entry that does not match is rebuilt with a ``UserWarning``
    naming the file, or, without ``build``, refused with ``ModelStoreIntegrityError``. Atomic
    writes (temp file + ``os.replace``); one process builds while concurrent ones wait on an OS
    file lock (released when its holder dies); an unwritable store builds in memory with a
    ``RuntimeWarning``. Put a content hash of the source and every export setting in ``key``.
``store_get_or_create(key: str, build: callable -> bytes) -> bytes``
    ``store_entry(key, build)[0]``.
``file_lock(path, *, timeout=-1) -> filelock.FileLock``
    The one inter-process lock of skfusion (store and cache): an OS lock, file mode 0600.
``content_hash(*parts) -> str``
    SHA-256 of bytes / str / file (``pathlib.Path``) parts, for building keys. Every content
    hash of skfusion goes through ``skfusion.runtime._hashing``.

Pooling
-------
``pool_sequence(values, mask, mode="mean")``
    (n, T, d) → (n, d) over the unmasked positions; modes ``"mean"``, ``"cls"``, ``"max"``,
    ``"mean_sqrt_len"``. ``l2_normalize(rows)`` scales rows to unit norm. The same pooling in
    ONNX nodes, appended to a text graph as its output ``sentence_embedding``, is
    ``skfusion.runtime._bert.add_sentence_pooling``.

Export (private, ``skfusion.runtime._export``)
----------------------------------------------
Reading a sentence-transformers folder, its content hash, the torch → ONNX export of its
transformer (output ``token_embeddings``) and int8 quantisation: every float MatMul weight
per output channel, activations per token (the same quantiser as the fused BERT graph of
``skfusion.runtime._bert``, so a row's int8 output never depends on its batch); used by
:class:`skfusion.encoders.TextEncoder`.

Embedding cache
---------------
``cached_transform(transformer, X)`` / ``cached_encode(encoder, items, encode)``
    Rows keyed by the encoder's ``_skfusion_fingerprint()`` (see ``estimator_fingerprint``) and
    a content hash of each raw item; in-memory LRU layer plus optional on-disk layer
    (``skfusion.set_config(cache_dir=...)``) whose rows carry a checksum, dtype and shape and
    are recomputed when they do not verify, bounded by ``cache_disk_max_bytes`` (LRU).
    ``cache_info()``, ``cache_clear(disk=False)``.
"""

# SPDX-License-Identifier: BSD-3-Clause

from ._cache import (
    CacheInfo,
    cache_clear,
    cache_info,
    cached_encode,
    cached_transform,
    estimator_fingerprint,
)
from ._pooling import l2_normalize, pool_sequence
from ._session import (
    LazySession,
    default_intra_op_threads,
    float16_model,
    make_session,
    resolve_providers,
    run_session,
    uses_io_binding,
)
from ._store import (
    ModelStoreIntegrityError,
    content_hash,
    file_lock,
    model_store_dir,
    store_entry,
    store_get_or_create,
    store_path,
)

__all__ = [
    "CacheInfo",
    "LazySession",
    "ModelStoreIntegrityError",
    "cache_clear",
    "cache_info",
    "cached_encode",
    "cached_transform",
    "content_hash",
    "default_intra_op_threads",
    "l2_normalize",
    "estimator_fingerprint",
    "file_lock",
    "float16_model",
    "make_session",
    "model_store_dir",
    "pool_sequence",
    "resolve_providers",
    "run_session",
    "store_entry",
    "store_get_or_create",
    "store_path",
    "uses_io_binding",
]
