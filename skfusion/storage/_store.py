"""Content-addressed on-disk store for exported models (ONNX bytes), verified and safe across
processes.

Every entry ``<sha256 of key>.bin`` has a record ``<sha256 of key>.bin.sha256`` (the entry's
SHA-256, in ``sha256sum``'s format) written with it, and is checked against it when read: a
planted or damaged entry is rebuilt with a warning naming the file when a builder is given, and
refused with :class:`ModelStoreIntegrityError` otherwise. Builders run under an OS file lock
(:func:`file_lock`, from ``filelock``), which the operating system releases when its holder dies,
so a process killed while exporting never blocks the next one. When the store folder cannot
be created or written (a read-only home, a full disk), the bytes are built in memory with a
``RuntimeWarning`` naming the folder (:func:`~skfusion.storage._files.warn_in_memory`, the
policy the embedding cache follows too).
"""

# SPDX-License-Identifier: BSD-3-Clause

import os
import threading
import warnings
from pathlib import Path

from ..exceptions import ModelStoreIntegrityError
from ._files import (
    file_lock,
    remove_orphan_temps,
    warn_in_memory,
    writable_folder,
    write_atomic,
)
from ._hashing import sha256_hex

__all__ = ["model_store_dir", "store_entry", "store_get_or_create", "store_path"]

# seconds to wait for another live process that builds the same entry, then build alongside it
_LOCK_TIMEOUT_S = 600.0
_RECORD_SUFFIX = ".sha256"


def model_store_dir():
    """Folder of skfusion's model store.

    ``$SKFUSION_HOME/models`` when the ``SKFUSION_HOME`` environment variable is set, else
    ``$XDG_CACHE_HOME/skfusion/models`` (``~/.cache/skfusion/models`` by default). The folder
    is not created here.

    Returns
    -------
    path : pathlib.Path
        The store folder.

    Examples
    --------
    >>> import os
    >>> from skfusion.storage import model_store_dir
    >>> os.environ["SKFUSION_HOME"] = "/tmp/skfusion-home"
    >>> str(model_store_dir())
    '/tmp/skfusion-home/models'
    >>> del os.environ["SKFUSION_HOME"]
    """
    home = os.environ.get("SKFUSION_HOME")
    if home:
        return Path(home).expanduser() / "models"
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "skfusion" / "models"


def store_path(key):
    """Where the entry for ``key`` lives (it may not exist yet).

    Parameters
    ----------
    key : str
        Any string that identifies the content (e.g. a model hash plus export settings).

    Returns
    -------
    path : pathlib.Path
        ``model_store_dir() / "<sha256 of key>.bin"``.
    """
    name = sha256_hex(key.encode("utf-8"))
    return model_store_dir() / f"{name}.bin"


def _record_path(path):
    return path.with_name(path.name + _RECORD_SUFFIX)


def _read_verified(path):
    """``(data, sha256, problem)`` for the entry at ``path``.

    ``data`` is None when the entry is absent or does not verify; ``problem`` then says what is
    wrong with it (None when it is simply absent).
    """
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except (FileNotFoundError, NotADirectoryError):
        return None, None, None
    sha = sha256_hex(data)
    try:
        with open(_record_path(path), encoding="ascii", errors="replace") as fh:
            recorded = fh.read(64)
    except (FileNotFoundError, NotADirectoryError):
        return None, None, (
            "has no recorded SHA-256 (written by an older skfusion, or its writer was killed)"
        )
    if recorded != sha:
        return None, None, (
            f"does not match the SHA-256 recorded when it was written (recorded "
            f"{recorded[:16]}..., found {sha[:16]}...): it was modified or damaged"
        )
    if not data:
        return None, None, "is empty"
    return data, sha, None


def _write_entry(path, data):
    """Store ``data`` at ``path`` with its record and return its SHA-256; when it cannot be
    written (a full disk), warn and keep it in memory only."""
    sha = sha256_hex(data)
    try:
        # the record first: a writer killed in between leaves an entry that fails
        # verification (rebuilt) or none, never an unrecorded one that passes
        write_atomic(_record_path(path), f"{sha}  {path.name}\n".encode("ascii"))
        write_atomic(path, data)
    except OSError as exc:
        _unavailable(path, exc)
    return sha


def store_entry(key, build=None, *, timeout=_LOCK_TIMEOUT_S):
    """The verified bytes stored under ``key`` and their SHA-256, building them on a miss.

    The entry's SHA-256 is recorded beside it when it is written and checked whenever it is
    read. An entry that does not match (planted, damaged, or written by an older skfusion
    without a record) is rebuilt with a ``UserWarning`` naming the file when ``build`` is
    given, and refused with :class:`ModelStoreIntegrityError` otherwise. One process builds
    while concurrent ones wait on an OS file lock next to the entry; when the store folder
    cannot be written, the bytes are built and returned with a ``RuntimeWarning``.

    Encoders put the returned hash in their fingerprint, so that the embedding cache never
    mixes rows of different model bytes.

    Parameters
    ----------
    key : str
        Identifies the content: include a content hash of the source model and every setting
        that changes the bytes.
    build : callable or None, default=None
        Called with no arguments on a miss; returns the bytes to store. ``None``: only read.
    timeout : float, default=600
        Seconds to wait for another live process that is building the same entry; after that
        this process builds it too (a process that died holding the lock does not count: the
        operating system releases its lock at once).

    Returns
    -------
    data : bytes
        The stored (or freshly built) bytes.
    sha256 : str
        Their SHA-256, 64 hex digits.

    Raises
    ------
    ModelStoreIntegrityError
        The entry does not verify and ``build`` is None.
    FileNotFoundError
        There is no entry and ``build`` is None.

    See Also
    --------
    store_get_or_create : The bytes alone.

    Examples
    --------
    >>> import os, tempfile
    >>> from skfusion.storage._store import store_entry, store_path
    >>> os.environ["SKFUSION_HOME"] = tempfile.mkdtemp()
    >>> data, sha = store_entry("demo-v2", lambda: b"payload")
    >>> data, sha[:12]
    (b'payload', '239f59ed55e7')
    >>> store_path("demo-v2").with_suffix(".bin.sha256").read_text()[:12]
    '239f59ed55e7'
    >>> del os.environ["SKFUSION_HOME"]
    """
    if not isinstance(key, str) or not key:
        raise ValueError("key must be a non-empty str")
    intern_key = (str(model_store_dir()), key)
    with _intern_lock:
        found = _INTERNED.get(intern_key)
    if found is None:
        found = _get_or_create(key, build, timeout)
        with _intern_lock:
            _INTERNED[intern_key] = found
            while len(_INTERNED) > _INTERN_MAX:
                _INTERNED.pop(next(iter(_INTERNED)))
    return found


def store_get_or_create(key, build, *, timeout=_LOCK_TIMEOUT_S):
    """Return the verified bytes stored under ``key``, building and storing them on a miss.

    :func:`store_entry` without the hash: entries are written atomically (a temporary file in
    the store folder, then ``os.replace``) with their SHA-256 recorded beside them, and checked
    when read; an entry that does not match is rebuilt with a ``UserWarning`` naming the file.
    When several processes miss at once, one of them builds while the others wait on an OS
    file lock (released by the operating system if the builder dies). When the store folder
    cannot be written, the bytes are built and returned with a warning.

    Parameters
    ----------
    key : str
        Identifies the content: include a content hash of the source model and every setting
        that changes the bytes.
    build : callable
        Called with no arguments on a miss; returns the bytes to store.
    timeout : float, default=600
        Seconds to wait for another live process that is building the same entry.

    Returns
    -------
    data : bytes
        The stored (or freshly built) bytes.

    See Also
    --------
    store_entry : The bytes and their SHA-256.

    Examples
    --------
    >>> import os, tempfile
    >>> from skfusion.storage._store import store_get_or_create
    >>> os.environ["SKFUSION_HOME"] = tempfile.mkdtemp()
    >>> store_get_or_create("demo-v1", lambda: b"payload")
    b'payload'
    >>> store_get_or_create("demo-v1", lambda: b"never built")
    b'payload'
    >>> del os.environ["SKFUSION_HOME"]
    """
    return store_entry(key, build, timeout=timeout)[0]


# Entries handed out in this process, so that encoders built from one model share one bytes
# object: pickle (and joblib) then write a persisted pipeline's model once, not per encoder.
# The bytes were verified when read; a later change of the file does not affect them.
_INTERNED = {}
_INTERN_MAX = 8
_intern_lock = threading.Lock()


def _get_or_create(key, build, timeout):
    path = store_path(key)
    data, sha, problem = _read_verified(path)
    if data is not None:
        return data, sha
    if build is None and problem is None:
        raise FileNotFoundError(f"skfusion's model store has no entry {path} (key {key!r}).")
    try:
        writable_folder(path.parent)
    except OSError as exc:  # a read-only home
        return _in_memory(path, build, problem, exc)
    from filelock import Timeout

    lock = file_lock(path.with_suffix(".lock"), timeout=timeout)
    try:
        lock.acquire()
    except Timeout:
        if build is None:
            raise
        # another live process has held the lock for `timeout` seconds: build alongside it
        # (atomic writes: whichever finishes last leaves a complete, recorded entry)
        data = _checked(build())
        return data, _write_entry(path, data)
    except OSError as exc:  # the lock file cannot be created (a full disk)
        return _in_memory(path, build, problem, exc)
    try:
        return _build_locked(path, build)
    finally:
        lock.release()


def _build_locked(path, build):
    data, sha, problem = _read_verified(path)  # another process may have finished meanwhile
    if data is not None:
        return data, sha
    if build is None:
        _refuse(path, problem)
    remove_orphan_temps(path.parent)
    if problem is not None:
        warnings.warn(
            f"skfusion's model store entry {path} {problem}; rebuilding it.",
            UserWarning,
            stacklevel=5,
        )
    data = _checked(build())
    return data, _write_entry(path, data)


def _in_memory(path, build, problem, exc):
    """The store folder cannot be written (``exc``): build the bytes and keep them in memory."""
    if build is None:
        _refuse(path, problem)
    _unavailable(path, exc)
    data = _checked(build())
    return data, sha256_hex(data)


def _unavailable(path, exc):
    warn_in_memory(
        "model store",
        path.parent,
        exc,
        "the model is built in memory and not kept (every process builds it again). Set "
        "SKFUSION_HOME to a writable folder to keep exported models.",
        stacklevel=5,
    )


def _refuse(path, problem):
    if problem is None:
        raise FileNotFoundError(f"skfusion's model store has no entry {path}.")
    raise ModelStoreIntegrityError(
        f"skfusion's model store entry {path} {problem}. Delete it (and "
        f"{_record_path(path).name}) so that it is rebuilt from its source."
    )


def _checked(data):
    if not isinstance(data, (bytes, bytearray, memoryview)) or not len(data):
        raise TypeError(f"build() must return non-empty bytes, got {type(data).__name__}")
    return bytes(data)
