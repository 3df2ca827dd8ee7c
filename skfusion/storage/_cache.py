"""Content-addressed embedding cache: encode each raw item once per encoder configuration.

A row of an encoder's output is identified by two things: the encoder's *fingerprint* (its
class, the parameters that change its output and a content hash of its model, returned by the
encoder's ``_skfusion_fingerprint()``) and a *content hash of the raw item* (the text's bytes,
a file's bytes when the items are paths, an array's dtype, shape and bytes, raw bytes). The
cache maps that pair to the output row, so that cross-validation folds, grid-search candidates,
``clone``-d encoders and refits reuse the rows computed once, and any change of parameter or
model (a different fingerprint) never returns stale rows.

Two layers:

* an in-memory layer per process, bounded by ``cache_max_bytes`` (least recently used rows are
  evicted);
* an optional on-disk layer (``cache_dir``), shared by every process that uses the same folder
  (joblib's loky workers, dask workers, several notebooks). Each encoder configuration has its
  own folder, named by a digest of its fingerprint. Each row is one small file holding the row
  (``.npy`` format: dtype, shape, values) and a SHA-256 of the row bound to its key; the folder
  records the dtype and shape of its rows. A row that does not verify (changed values, another
  item's row, a wrong shape, a torn write) is deleted, recomputed and rewritten: it is never
  served nor copied into memory. Rows are written to a temporary name and renamed into place
  (:func:`os.replace`); files are created 0600 and folders 0700. While one process computes the
  missing rows of an encoder, it holds an OS file lock (``filelock``) on that encoder's folder:
  another process asking for the same rows waits and then reads them, so each item is encoded
  once even by concurrent workers, and a killed holder never blocks the next one. Rows are
  computed and stored in chunks of 256, so an interrupted encode keeps its finished chunks.
  The layer is bounded by ``cache_disk_max_bytes`` (4 GiB by default): when it grows past the
  bound, the least recently used rows (by file time, refreshed on every hit) are deleted, with
  the temporary files that killed writers left behind more than an hour ago. The cache is
  optional: when its folder cannot be created or written (a read-only home, a full disk), a
  ``RuntimeWarning`` names the folder and the error, and the call goes on with the memory
  layer alone (the rows already stored stay whole; a later call resumes from them).

Configure it with :func:`skfusion.set_config` (``cache``, ``cache_dir``, ``cache_max_bytes``,
``cache_disk_max_bytes``) or the environment (``SKFUSION_CACHE=0``, ``SKFUSION_CACHE_DIR``,
``SKFUSION_CACHE_MAX_BYTES``, ``SKFUSION_CACHE_DISK_MAX_BYTES``); inspect it with
:func:`cache_info`; empty it with :func:`cache_clear`.
"""

# SPDX-License-Identifier: BSD-3-Clause

import io
import json
import numbers
import os
import shutil
import sys
import threading
import time
from collections import OrderedDict, namedtuple
from contextlib import ExitStack, contextmanager

import numpy as np

from .._config import get_config
from .._progress import progress
from .._utils import is_missing_item
from ..exceptions import EncodingError
from ._hashing import (
    UnhashableValueError,
    file_digest,
    new_hash,
    sha256_hex,
    tree_hash,
    value_hash,
)
from ._files import (
    file_lock,
    makedirs_private,
    remove_orphan_temps,
    warn_in_memory,
    write_atomic,
)

__all__ = [
    "CacheInfo",
    "cache_clear",
    "cache_info",
    "cached_encode",
    "cached_transform",
    "estimator_fingerprint",
]

# bump when the key or file format changes (v3: fingerprints hash values, not their repr)
_LAYOUT = "embeddings-v3"
# items computed (and stored) per call, so progress shows and an interrupt keeps the done part
_CHUNK = 256
_MAGIC = b"SKFROW2\0"  # row file: magic, SHA-256 of (key, npy bytes), npy bytes
_ROW_SUFFIX = ".row"
_META = "meta.json"  # per folder: the fingerprint, and the dtype and shape of its rows
_REPORT_EVERY = 8 * _CHUNK  # verbose progress lines every this many computed rows
_SWEEP_TARGET = 0.9  # an eviction sweep brings the layer down to this fraction of its bound
_USAGE = "usage.json"  # the last sweep's measure of the layer, shared by processes
_MEASURE_TTL_S = 600.0  # a process trusts another's measure this long instead of sweeping

CacheInfo = namedtuple(
    "CacheInfo",
    [
        "hits",
        "misses",
        "memory_hits",
        "disk_hits",
        "rows",
        "bytes",
        "max_bytes",
        "cache_dir",
        "enabled",
    ],
)
CacheInfo.__doc__ = """Statistics of the embedding cache in this process (see :func:`cache_info`).

Parameters
----------
hits : int
    Rows served from the cache: ``memory_hits + disk_hits``.
misses : int
    Rows computed by an encoder.
memory_hits : int
    Rows served from the in-memory layer.
disk_hits : int
    Rows served from the on-disk layer.
rows : int
    Rows held in the in-memory layer.
bytes : int
    Size of the in-memory layer.
max_bytes : int
    Budget of the in-memory layer.
cache_dir : str or None
    The on-disk layer (None when off).
enabled : bool
    Whether the cache is on.

Examples
--------
>>> from skfusion.storage import cache_info
>>> sorted(cache_info()._fields)[:3]
['bytes', 'cache_dir', 'disk_hits']
"""


# --------------------------------------------------------------------------------------------
# content hashes
# --------------------------------------------------------------------------------------------
def estimator_fingerprint(estimator, *, ignore=(), model=None, extra=None):
    """A fingerprint of an encoder's output: class, output-affecting parameters, model content.

    Encoders implement ``_skfusion_fingerprint()`` with it, which switches the embedding cache
    on for them. Two encoders with the same fingerprint must give the same output row for the
    same item.

    Values are hashed by what they hold, never by how they print (see
    :func:`~skfusion.storage._hashing.value_hash`): arrays by dtype, shape and every byte,
    floats by their exact value and type (``0.1 + 0.2`` is not ``0.3``, ``np.float32(0.1)``
    is not ``0.1``), estimator parameters by their class and ``get_params(deep=False)``,
    recursively, and functions by their code, defaults and closure values. The same
    configuration gives the same fingerprint in every process and run.

    Parameters
    ----------
    estimator : estimator
        The encoder.
    ignore : iterable of str, default=()
        Parameters that do not change the output (``batch_size``, ``verbose``, ``on_error``,
        the model's path when ``model`` gives its content...).
    model : str, path-like, bytes or None, default=None
        The model: an existing file or folder is hashed by content (memoised by file size and
        time), bytes (e.g. ONNX bytes) are hashed, any other value (a model name, a tuple of
        export settings...) is hashed by value.
    extra : object, default=None
        Anything else that identifies the output (e.g. a library version), hashed by value.

    Returns
    -------
    fingerprint : str or None
        64 hexadecimal digits; None when a parameter, ``model`` or ``extra`` cannot be hashed
        by content (it cannot be pickled, e.g. a lock): the encoder's rows are then not cached.

    Notes
    -----
    An estimator given as a parameter counts by its parameters, not by what it learnt: an
    encoder that uses a parameter's *fitted* state as it is (a prefitted model) must pass what
    identifies that state in ``extra``.

    Examples
    --------
    >>> from sklearn.preprocessing import Normalizer
    >>> from skfusion.storage import estimator_fingerprint
    >>> estimator_fingerprint(Normalizer()) == estimator_fingerprint(Normalizer())
    True
    >>> estimator_fingerprint(Normalizer()) == estimator_fingerprint(Normalizer(norm="l1"))
    False
    """
    ignore = set(ignore)
    cls = type(estimator)
    params = estimator.get_params(deep=False) if hasattr(estimator, "get_params") else {}
    state = {
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "params": {key: value for key, value in params.items() if key not in ignore},
    }
    if model is not None:
        if isinstance(model, (bytes, bytearray, memoryview)):
            state["model"] = ("bytes-sha256", sha256_hex(model))
        elif isinstance(model, (str, os.PathLike)) and os.path.exists(os.fspath(model)):
            state["model"] = ("content-sha256", tree_hash(model))
        else:
            state["model"] = ("value", model)
    if extra is not None:
        state["extra"] = extra
    try:
        digest = value_hash(state)
    except UnhashableValueError:
        return None
    return sha256_hex(f"skfusion-fingerprint\0{digest}".encode())


def _item_key(fingerprint, item, paths):
    """Digest of (fingerprint, item), or None when the item cannot be hashed safely."""
    h = new_hash(fingerprint.encode("utf-8", "surrogatepass") + b"\0")
    if isinstance(item, str):
        if paths:
            if not os.path.isfile(item):
                return None  # missing file: the result may change once it exists
            h.update(b"file\0" + file_digest(item))
        else:
            h.update(b"str\0" + item.encode("utf-8", "surrogatepass"))
    elif isinstance(item, os.PathLike):
        path = os.fspath(item)
        if not isinstance(path, str) or not os.path.isfile(path):
            return None
        h.update(b"file\0" + file_digest(path))
    elif isinstance(item, (bytes, bytearray, memoryview)):
        h.update(b"bytes\0")
        h.update(item)
    elif isinstance(item, (bool, np.bool_, numbers.Number)):
        h.update(f"num\0{type(item).__name__}:{item!r}".encode())
    elif hasattr(item, "tobytes") and hasattr(item, "mode") and hasattr(item, "size"):
        h.update(f"image\0{item.mode}:{item.size}\0".encode())  # a PIL image
        h.update(item.tobytes())
    else:
        if not isinstance(item, np.ndarray):
            if not isinstance(item, (list, tuple)) and not hasattr(item, "__array__"):
                return None
            try:
                item = np.asarray(item)
            except (TypeError, ValueError):
                return None
        if item.dtype.hasobject:
            return None
        item = np.ascontiguousarray(item)
        h.update(f"array\0{item.dtype.str}:{item.shape}\0".encode())
        h.update(item.data)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# the two layers
# --------------------------------------------------------------------------------------------
class _MemoryLayer:
    """Rows by key, least recently used first, within a bytes budget."""

    def __init__(self):
        self._rows = OrderedDict()
        self.nbytes = 0
        self._lock = threading.Lock()

    def get_many(self, keys):
        found = {}
        with self._lock:
            for key in keys:
                row = self._rows.get(key)
                if row is not None:
                    self._rows.move_to_end(key)
                    found[key] = row
        return found

    def put_many(self, pairs, max_bytes):
        with self._lock:
            for key, row in pairs:
                if row.nbytes > max_bytes:
                    continue
                old = self._rows.pop(key, None)
                if old is not None:
                    self.nbytes -= old.nbytes
                self._rows[key] = row
                self.nbytes += row.nbytes
            self._evict(max_bytes)

    def _evict(self, max_bytes):
        while self.nbytes > max_bytes and self._rows:
            _, row = self._rows.popitem(last=False)
            self.nbytes -= row.nbytes

    def clear(self):
        with self._lock:
            self._rows.clear()
            self.nbytes = 0

    def __len__(self):
        return len(self._rows)


def _row_bytes(key, row):
    """A row file's content: magic, SHA-256 of (key, npy bytes), then the ``.npy`` bytes
    (which hold the dtype and shape)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(row), allow_pickle=False)
    payload = buffer.getvalue()
    return _MAGIC + new_hash(key.encode("ascii") + b"\0" + payload).digest() + payload


def _parse_row(key, data):
    """The row in a row file's content, or None when it does not verify."""
    head = len(_MAGIC) + 32
    if len(data) <= head or not data.startswith(_MAGIC):
        return None
    payload = data[head:]
    if new_hash(key.encode("ascii") + b"\0" + payload).digest() != data[len(_MAGIC) : head]:
        return None  # changed values, another item's row, a torn write
    try:
        return np.load(io.BytesIO(payload), allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None


class _DiskLayer:
    """One verified row file per item under ``<cache_dir>/embeddings-v3/<digest>/``.

    ``<digest>`` is a hex digest of the fingerprint, so every encoder configuration has its
    own folder (and lock), and the name is valid on every file system.
    """

    def __init__(self, cache_dir, fingerprint, max_bytes):
        self.cache_dir = cache_dir
        self.root = os.path.join(os.path.abspath(cache_dir), _LAYOUT)
        self.folder = os.path.join(self.root, sha256_hex(fingerprint.encode())[:32])
        self.fingerprint = fingerprint
        self.max_bytes = max_bytes
        self.rejected = 0  # rows that did not verify, deleted (and recomputed by the caller)
        self._spec = None

    def _path(self, key):
        return os.path.join(self.folder, key[:2], key + _ROW_SUFFIX)

    def _read_spec(self):
        """``(dtype, shape)`` recorded for this folder's rows, or None."""
        try:
            with open(os.path.join(self.folder, _META), encoding="utf-8") as f:
                meta = json.load(f)
            return np.dtype(meta["dtype"]).str, tuple(int(d) for d in meta["shape"])
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def get_many(self, keys):
        found = {}
        spec = self._read_spec()
        for key in keys:
            path = self._path(key)
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError:
                data = b""
            row = _parse_row(key, data)
            if row is None or (spec is not None and (row.dtype.str, row.shape) != spec):
                # does not verify: never served, recomputed and rewritten by the caller
                self.rejected += 1
                _remove_quietly(path)
                continue
            try:
                os.utime(path)  # least recently used eviction goes by this time
            except OSError:
                pass
            found[key] = row
        return found

    def put_many(self, pairs):
        if not pairs:
            return
        spec = (pairs[0][1].dtype.str, pairs[0][1].shape)
        if self._spec != spec:
            if self._read_spec() != spec:  # the encoder's rows are the truth
                meta = {"fingerprint": self.fingerprint, "dtype": spec[0], "shape": spec[1]}
                write_atomic(
                    os.path.join(self.folder, _META), json.dumps(meta).encode(), fsync=False
                )
            self._spec = spec
        written = 0
        for key, row in pairs:
            path = self._path(key)
            makedirs_private(os.path.dirname(path))
            data = _row_bytes(key, row)
            write_atomic(path, data, fsync=False)
            written += len(data)
        _account(self.root, written, self.max_bytes)

    def unavailable(self, exc):
        """Warn that this layer cannot be written (``exc``); the caller goes on without it."""
        warn_in_memory(
            "embedding cache",
            self.cache_dir,
            exc,
            "this call goes on without the disk layer (its rows are computed and kept in "
            "memory; the rows already on disk are whole). Free space or set cache_dir to a "
            "writable folder to cache rows on disk.",
            stacklevel=3,
        )

    @contextmanager
    def lock(self):
        """Exclusive lock on this fingerprint's folder across processes (an OS lock: released
        when its holder dies)."""
        makedirs_private(self.folder)
        _account(self.root, 0, self.max_bytes)  # the first use in a process sweeps
        with file_lock(os.path.join(self.folder, ".lock")):
            yield


_usage = {}  # disk layer root -> bytes estimated in use (a sweep measures it)
_usage_lock = threading.Lock()


def _account(root, written, max_bytes):
    """Add ``written`` bytes to the estimate of ``root``'s size; sweep when it is unknown (the
    first use in this process, and no other process measured it recently) or over
    ``max_bytes``."""
    with _usage_lock:
        used = _usage.get(root)
        if used is None:
            used = _usage[root] = _recent_measure(root)
        if used is not None:
            used += written
            _usage[root] = used
    if used is None or used > max_bytes:
        _sweep(root, max_bytes)


def _recent_measure(root):
    """The size the last sweep (of any process) measured, when it is less than ``_MEASURE_TTL_S``
    old; else None."""
    try:
        with open(os.path.join(root, _USAGE), encoding="utf-8") as f:
            measure = json.load(f)
        if 0 <= time.time() - float(measure["time"]) < _MEASURE_TTL_S:
            return int(measure["bytes"])
    except (OSError, ValueError, TypeError, KeyError):
        pass
    return None


def _sweep(root, max_bytes, *, now=None):
    """Delete orphan temporary files, then the least recently used rows until the layer
    holds at most ``_SWEEP_TARGET * max_bytes`` (when it holds more than ``max_bytes``).

    One process sweeps at a time; the others skip. Deleting a row another process is about to
    read is harmless: it finds no row and recomputes it.
    """
    from filelock import Timeout

    now = time.time() if now is None else now
    try:
        with file_lock(os.path.join(root, ".sweep.lock"), timeout=0):
            rows = []
            for folder in _subfolders(root):
                remove_orphan_temps(folder, now=now)
                for sub in _subfolders(folder):
                    remove_orphan_temps(sub, now=now)
                    for entry in _entries(sub):
                        if entry.name.endswith(_ROW_SUFFIX):
                            try:
                                st = entry.stat(follow_symlinks=False)
                            except OSError:
                                continue
                            rows.append((st.st_mtime, st.st_size, entry.path))
            used = sum(size for _, size, _ in rows)
            if used > max_bytes:
                rows.sort()
                target = int(_SWEEP_TARGET * max_bytes)
                for _, size, path in rows:
                    if used <= target:
                        break
                    _remove_quietly(path)
                    used -= size
        write_atomic(
            os.path.join(root, _USAGE),
            json.dumps({"bytes": used, "time": now}).encode(),
            fsync=False,
        )
    except (Timeout, OSError):
        return
    with _usage_lock:
        _usage[root] = used


def _entries(folder):
    try:
        with os.scandir(folder) as it:
            return list(it)
    except OSError:
        return []


def _subfolders(folder):
    return [e.path for e in _entries(folder) if e.is_dir(follow_symlinks=False)]


def _remove_quietly(path):
    try:
        os.remove(path)
    except OSError:
        pass


_memory = _MemoryLayer()
_stats_lock = threading.Lock()
_stats = {"memory_hits": 0, "disk_hits": 0, "misses": 0}
_thread_locks = {}
_guard = threading.local()  # set while a cached call computes rows: nested calls pass through


def _count(**deltas):
    with _stats_lock:
        for key, value in deltas.items():
            _stats[key] += value


def _thread_lock(fingerprint):
    with _stats_lock:
        lock = _thread_locks.get(fingerprint)
        if lock is None:
            lock = _thread_locks[fingerprint] = threading.Lock()
    return lock


def cache_info():
    """Hit/miss statistics and size of the embedding cache in this process.

    The in-memory layer and these counters belong to the process: joblib's process workers
    keep their own (the on-disk layer, when set, is what they share).

    Returns
    -------
    info : CacheInfo
        A named tuple ``(hits, misses, memory_hits, disk_hits, rows, bytes, max_bytes,
        cache_dir, enabled)``.

    See Also
    --------
    cache_clear : Empty the cache and reset the counters.

    Examples
    --------
    >>> from skfusion.storage import cache_info
    >>> info = cache_info()
    >>> info.hits == info.memory_hits + info.disk_hits
    True
    """
    config = get_config()
    with _stats_lock:
        stats = dict(_stats)
    return CacheInfo(
        hits=stats["memory_hits"] + stats["disk_hits"],
        misses=stats["misses"],
        memory_hits=stats["memory_hits"],
        disk_hits=stats["disk_hits"],
        rows=len(_memory),
        bytes=_memory.nbytes,
        max_bytes=config["cache_max_bytes"],
        cache_dir=config["cache_dir"],
        enabled=config["cache"],
    )


def cache_clear(*, disk=False):
    """Empty the in-memory layer and reset the counters; optionally delete the on-disk rows.

    Parameters
    ----------
    disk : bool, default=False
        Also delete the rows stored under the configured ``cache_dir``.

    Examples
    --------
    >>> from skfusion.storage import cache_clear, cache_info
    >>> cache_clear()
    >>> cache_info().rows
    0
    """
    _memory.clear()
    with _stats_lock:
        for key in _stats:
            _stats[key] = 0
    cache_dir = get_config()["cache_dir"]
    if disk and cache_dir:
        root = os.path.join(os.path.abspath(cache_dir), _LAYOUT)
        shutil.rmtree(root, ignore_errors=True)
        with _usage_lock:
            _usage.pop(root, None)


# --------------------------------------------------------------------------------------------
# the lookup / compute / store loop
# --------------------------------------------------------------------------------------------
def _fingerprint_of(transformer):
    method = getattr(transformer, "_skfusion_fingerprint", None)
    if method is None:
        return None
    fingerprint = method()
    return None if fingerprint is None else str(fingerprint)


def _active_fingerprint(transformer):
    """The fingerprint when caching applies here, else None."""
    if getattr(_guard, "active", False):
        return None
    config = get_config()
    if not config["cache"]:
        return None
    return _fingerprint_of(transformer)


@contextmanager
def _computing():
    previous = getattr(_guard, "active", False)
    _guard.active = True
    try:
        yield
    finally:
        _guard.active = previous


class _NotCacheable(Exception):
    """The transformer's output cannot be split into cached rows (sparse, 1-D...)."""


def _run(fingerprint, keys, compute, name, verbose):
    """Rows for ``keys`` (None: never cached) from the cache or ``compute(positions)``.

    ``compute`` takes a list of positions and returns a 2-D array with one row per position.
    """
    n = len(keys)
    config = get_config()
    max_bytes = config["cache_max_bytes"]
    disk = None
    if config["cache_dir"]:
        disk = _DiskLayer(config["cache_dir"], fingerprint, config["cache_disk_max_bytes"])
    first = {}  # key -> first position with it (duplicates are computed once)
    for i, key in enumerate(keys):
        if key is not None and key not in first:
            first[key] = i
    uncached = [i for i, key in enumerate(keys) if key is None]

    with ExitStack() as stack:
        stack.enter_context(_thread_lock(fingerprint))
        if disk is not None:
            try:
                stack.enter_context(disk.lock())
            except OSError as exc:  # a read-only or full cache folder: the cache is optional
                disk = disk.unavailable(exc)
        found = _memory.get_many(first)
        memory_hits = len(found)
        disk_hits = 0
        if disk is not None and len(found) < len(first):
            from_disk = disk.get_many([k for k in first if k not in found])
            disk_hits = len(from_disk)
            _memory.put_many(from_disk.items(), max_bytes)
            found.update(from_disk)
        todo = sorted([first[k] for k in first if k not in found] + uncached)
        _count(memory_hits=memory_hits, disk_hits=disk_hits, misses=len(todo))
        computed = {}
        if todo:
            if verbose:
                rejected = disk.rejected if disk is not None else 0
                print(
                    f"[skfusion cache] {name}: {n} rows, {len(first) - len(todo) + len(uncached)}"
                    f" from the cache, computing {len(todo)}"
                    + (f" ({rejected} stored rows did not verify)" if rejected else ""),
                    file=sys.stderr,
                    flush=True,
                )
            start = time.perf_counter()
            # One bar for the whole column: the encoder's own progress() calls, one per chunk,
            # add to it (see skfusion._progress).
            bar = stack.enter_context(progress(len(todo), name, verbose))
            for lo in range(0, len(todo), _CHUNK):
                positions = todo[lo : lo + _CHUNK]
                with _computing():
                    try:
                        block = compute(positions)
                    except EncodingError as exc:  # name the row in the caller's X
                        raise exc.relocated(positions) from exc
                block = _as_rows(block, len(positions))
                pairs = []
                for pos, row in zip(positions, block):
                    computed[pos] = row
                    # An all-NaN row is a missing or bad item (on_error="missing"): whether it
                    # is NaN depends on on_error, which does not change the fingerprint, and a
                    # bad file may be fixed in place. Such rows are never stored.
                    if keys[pos] is not None and not _all_nan(row):
                        pairs.append((keys[pos], np.array(row, copy=True)))
                _memory.put_many(pairs, max_bytes)
                if disk is not None:
                    try:
                        disk.put_many(pairs)
                    except OSError as exc:  # a full disk: warn once, go on in memory
                        disk = disk.unavailable(exc)
                done = min(lo + _CHUNK, len(todo))
                if verbose and not bar.shown and len(todo) > _CHUNK and (
                    done % _REPORT_EVERY == 0 or done == len(todo)
                ):
                    print(
                        f"[skfusion cache] {name}: {done}/{len(todo)} computed "
                        f"({time.perf_counter() - start:.1f}s)",
                        file=sys.stderr,
                        flush=True,
                    )

    sample = next(iter(computed.values()), None)
    if sample is None:
        sample = next(iter(found.values()))
    dtype = np.result_type(
        *{r.dtype for r in computed.values()}, *{r.dtype for r in found.values()}
    )
    out = np.empty((n,) + sample.shape, dtype=dtype)
    for i, key in enumerate(keys):
        row = computed.get(i)
        if row is None:
            row = found.get(key) if key is not None else None
            if row is None:  # a duplicate of a computed item
                row = computed[first[key]]
        out[i] = row
    return out


def _all_nan(row):
    return row.dtype.kind == "f" and row.size > 0 and bool(np.isnan(row).all())


def _as_rows(block, n):
    if hasattr(block, "toarray") or hasattr(block, "tocsr"):
        raise _NotCacheable
    block = np.asarray(block)
    if block.ndim < 2 or block.shape[0] != n or block.dtype.hasobject:
        raise _NotCacheable
    return block


def cached_encode(encoder, items, encode):
    """Encode validated items through the embedding cache (for use inside an encoder).

    An encoder calls this from its ``transform`` on the items left after its missing/bad-item
    handling: ``rows = cached_encode(self, texts, self._encode)``. Items whose rows are cached
    under ``encoder._skfusion_fingerprint()`` are not passed to ``encode``; the others are, once
    each (duplicates in ``items`` are encoded once), in chunks, and stored. Without a
    fingerprint, with the cache off, or when called while a cached call of the same thread is
    computing (e.g. under a fusion estimator's :func:`cached_transform`), it is plain
    ``encode(items)``.

    Items are hashed by content: ``str`` by their UTF-8 bytes (or, when the encoder sets
    ``_skfusion_items_are_paths = True``, by the bytes of the file they name), ``bytes`` as
    they are, arrays by dtype, shape and bytes, PIL images by mode, size and pixels. Other items
    are encoded every time.

    Parameters
    ----------
    encoder : estimator
        The encoder, offering ``_skfusion_fingerprint()`` to enable caching.
    items : list
        The items to encode.
    encode : callable
        ``encode(list_of_items) -> ndarray of shape (len(list_of_items), ...)``.

    Returns
    -------
    rows : ndarray of shape (len(items), ...)
        One row per item, in order.

    See Also
    --------
    cached_transform : The same for any transformer's ``transform`` on a 1-D column.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.base import BaseEstimator
    >>> from skfusion.storage import cached_encode, estimator_fingerprint
    >>> class Lengths(BaseEstimator):
    ...     def _skfusion_fingerprint(self):
    ...         return estimator_fingerprint(self)
    ...     def encode(self, texts):
    ...         print("encoding", texts)
    ...         return np.array([[len(t)] for t in texts], dtype=np.float32)
    >>> enc = Lengths()
    >>> cached_encode(enc, ["ab", "abc", "ab"], enc.encode).ravel()
    encoding ['ab', 'abc']
    array([2., 3., 2.], dtype=float32)
    >>> cached_encode(enc, ["abc", "ab"], enc.encode).ravel()
    array([3., 2.], dtype=float32)
    """
    items = list(items)
    fingerprint = _active_fingerprint(encoder) if items else None
    if fingerprint is None:
        return encode(items)
    paths = bool(getattr(encoder, "_skfusion_items_are_paths", False))
    keys = [
        None if is_missing_item(item) else _item_key(fingerprint, item, paths) for item in items
    ]
    if all(key is None for key in keys):
        return encode(items)

    def compute(positions):
        return encode([items[i] for i in positions])

    try:
        return _run(
            fingerprint, keys, compute, type(encoder).__name__, getattr(encoder, "verbose", 0)
        )
    except _NotCacheable:
        return encode(items)


def _column_items(X):
    """The items of a 1-D column input, or None for 2-D inputs."""
    if hasattr(X, "iloc") and getattr(X, "ndim", 1) == 1:  # Series
        return X.tolist()
    if isinstance(X, np.ndarray) and X.ndim == 1:
        return list(X)
    if isinstance(X, (list, tuple)):
        return list(X)
    return None


def _take(X, positions):
    if hasattr(X, "iloc"):
        return X.iloc[positions]  # keeps the index labels that error messages name
    if isinstance(X, np.ndarray):
        return X[positions]
    return [X[i] for i in positions]


def cached_transform(transformer, X):
    """``transformer.transform(X)`` for a 1-D column of raw items, through the embedding cache.

    Used by the fusion estimators for every modality transformer. When the transformer offers
    ``_skfusion_fingerprint()`` and the cache is on, the rows of items seen before (by content,
    as in :func:`cached_encode`) come from the cache, ``transformer.transform`` runs only on the
    others (with the same input type, index labels kept) and its rows are stored. Otherwise,
    and for 2-D inputs or outputs that are not dense 2-D arrays, it is
    ``transformer.transform(X)``.

    Parameters
    ----------
    transformer : transformer
        A fitted transformer.
    X : array-like of shape (n_samples,) or (n_samples, n_features)
        Its input.

    Returns
    -------
    Xt : ndarray of shape (n_samples, n_features_out) or the transformer's own output
        The transformed rows.

    See Also
    --------
    cached_encode : The same inside an encoder, on validated items.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.base import BaseEstimator, TransformerMixin
    >>> from skfusion.storage import estimator_fingerprint
    >>> from skfusion.storage._cache import cached_transform
    >>> class Words(TransformerMixin, BaseEstimator):
    ...     def _skfusion_fingerprint(self):
    ...         return estimator_fingerprint(self)
    ...     def fit(self, X, y=None):
    ...         return self
    ...     def transform(self, X):
    ...         print("transforming", list(X))
    ...         return np.array([[len(t.split())] for t in X], dtype=np.float32)
    >>> words = Words().fit(None)
    >>> cached_transform(words, np.array(["a b", "c"], dtype=object)).ravel()
    transforming ['a b', 'c']
    array([2., 1.], dtype=float32)
    >>> cached_transform(words, np.array(["c", "d e f"], dtype=object)).ravel()
    transforming ['d e f']
    array([1., 3.], dtype=float32)
    """
    fingerprint = _active_fingerprint(transformer)
    items = _column_items(X) if fingerprint is not None else None
    if not items:
        return transformer.transform(X)
    paths = bool(getattr(transformer, "_skfusion_items_are_paths", False))
    keys = [
        None if is_missing_item(item) else _item_key(fingerprint, item, paths) for item in items
    ]
    if all(key is None for key in keys):
        return transformer.transform(X)

    def compute(positions):
        out = transformer.transform(_take(X, positions))
        return out.to_numpy() if hasattr(out, "to_numpy") else out

    try:
        return _run(
            fingerprint,
            keys,
            compute,
            type(transformer).__name__,
            getattr(transformer, "verbose", 0),
        )
    except _NotCacheable:
        return transformer.transform(X)
