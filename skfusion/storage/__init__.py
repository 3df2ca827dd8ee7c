"""Storage: the verified model store and the embedding cache.

Nothing here needs ONNX Runtime. The model store keeps exported models (ONNX bytes) under a
content-addressed, verified name (:func:`model_store_dir`); the embedding cache keeps encoded
rows keyed by an encoder's fingerprint and each raw item's content, in memory and optionally
on disk (``skfusion.set_config(cache_dir=...)``). Both are optional: a folder that cannot be
written (a read-only home, a full disk) gives a ``RuntimeWarning`` naming it, and the work goes
on in memory. Read more in :ref:`embedding_cache`.

The internals (hashing of bytes, files and values, atomic writes, OS file locks, store
entries) live in the private modules ``_hashing``, ``_files``, ``_store`` and ``_cache``.
"""

# SPDX-License-Identifier: BSD-3-Clause

from ._cache import CacheInfo, cache_clear, cache_info, cached_encode, estimator_fingerprint
from ._store import model_store_dir

__all__ = [
    "CacheInfo",
    "cache_clear",
    "cache_info",
    "cached_encode",
    "estimator_fingerprint",
    "model_store_dir",
]
