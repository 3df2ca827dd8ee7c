"""Content-addressed on-disk store for exported models (ONNX bytes), verified and safe across
processes; also the file plumbing that the embedding cache shares (atomic writes, locks).

Every entry ``<sha256 of key>.bin`` has a record ``<sha256 of key>.bin.sha256`` (the entry's
SHA-256, in ``sha256sum``'s format) written with it, and is checked against it when read: a
planted or damaged entry is rebuilt with a warning naming the file when a builder is given, and
refused with :class:`ModelStoreIntegrityError` otherwise. Builders run under an OS file lock
(:func:`file_lock`, from ``filelock``), which the operating system releases when its holder dies,
so a process killed while exporting never blocks the next one.
"""

# SPDX-License-Identifier: BSD-3-Clause

import os
import secrets
import threading
import time
import warnings
from pathlib import Path

from ._hashing import content_hash, sha256_hex

__all__ = [
    "ModelStoreIntegrityError",
    "content_hash",
    "file_lock",
    "model_store_dir",
    "store_entry",
    "store_get_or_create",
    "store_path",
]

# seconds to wait for another live process that builds the same entry, then build alongside it
_LOCK_TIMEOUT_S = 600.0
# temporary files older than this are left over by a killed writer and are deleted
_ORPHAN_AGE_S = 3600.0
_RECORD_SUFFIX = ".sha256"
# a waiter tries a held lock this often (filelock polls; the default 50 ms delays hand-overs)
_POLL_S = 0.01


class ModelStoreIntegrityError(RuntimeError):
    """A model store entry does not verify and the caller cannot rebuild it.

    Raised by :func:`store_entry` without a builder when the entry does not match the SHA-256
    recorded when it was written (or has no record). The message names the file.
    """


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
    >>> from skfusion.runtime import model_store_dir
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


def _write_entry(path, data, sha):
    # the record first: a writer killed in between leaves an entry that fails verification
    # (rebuilt) or none, never an unrecorded one that passes
    _write_atomic(_record_path(path), f"{sha}  {path.name}\n".encode("ascii"))
    _write_atomic(path, data)


def _write_atomic(path, data, *, fsync=True, private=True):
    """Write ``data`` (bytes, or a callable given the open file) to a temporary file beside
    ``path``, then rename it there: readers see the old file, the new one, or none.

    This is skfusion's one atomic-write helper. With ``private=True`` (store entries and cached
    embeddings of users' data) the file is created with mode 0600, only its owner may read it;
    with ``private=False`` (what users asked for: a saved model, scored batches, a manifest) it
    gets the mode any new file gets, 0666 less the process's umask, as ``open(path, "w")``
    would give it. The temporary name ends in ``.tmp`` so that :func:`_remove_orphan_temps`
    finds what a killed writer left. ``fsync=False`` skips flushing to the device (cache rows:
    a row lost in a power cut is verified away and recomputed).
    """
    path = Path(path)
    # ``tempfile.mkstemp`` always creates 0600; ``os.open`` with O_EXCL and a mode lets the
    # kernel apply the umask itself, without the process-wide ``os.umask`` read-and-reset
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = path.parent / f"{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, flags, 0o600 if private else 0o666)
            break
        except FileExistsError:  # pragma: no cover - a 48-bit name collision
            continue
    try:
        with os.fdopen(fd, "wb") as fh:
            if callable(data):
                data(fh)
            else:
                fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _remove_orphan_temps(folder, *, max_age_s=_ORPHAN_AGE_S, now=None):
    """Delete the ``*.tmp`` files directly in ``folder`` that are older than ``max_age_s``
    (left by a writer that was killed between creating and renaming them). Returns their
    number."""
    now = time.time() if now is None else now
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        if not entry.name.endswith(".tmp"):
            continue
        try:
            if now - entry.stat(follow_symlinks=False).st_mtime > max_age_s:
                os.unlink(entry.path)
                removed += 1
        except OSError:
            pass
    return removed


def file_lock(path, *, timeout=-1):
    """An exclusive lock between processes (and threads) on the file ``path``.

    A ``filelock.FileLock`` (an OS lock: ``flock`` on POSIX, an OS file lock on Windows),
    which the operating system releases when the process holding it dies, however it dies:
    a killed holder never blocks the next one. The lock file is created with mode 0600 and
    left in place (an unlocked file is harmless); a waiter tries it every 10 ms. Used as a
    context manager; with a ``timeout`` (seconds, ``-1`` waits forever), acquiring raises
    ``filelock.Timeout``.

    Parameters
    ----------
    path : str or path-like
        The lock file.
    timeout : float, default=-1
        Seconds to wait for the lock; ``-1`` waits forever.

    Returns
    -------
    lock : filelock.FileLock
        The lock, to use as ``with file_lock(path): ...``.

    Examples
    --------
    >>> import os, tempfile
    >>> from skfusion.runtime import file_lock
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     with file_lock(os.path.join(tmp, "demo.lock")) as lock:
    ...         lock.is_locked
    True
    """
    from filelock import FileLock

    return FileLock(os.fspath(path), timeout=timeout, mode=0o600, poll_interval=_POLL_S)


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
    >>> from skfusion.runtime import store_entry, store_path
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
    >>> from skfusion.runtime import store_get_or_create
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
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not os.access(path.parent, os.W_OK):
            raise PermissionError(f"no write permission on {path.parent}")
    except OSError as exc:
        if build is None:
            _refuse(path, problem)
        warnings.warn(
            f"skfusion's model store {path.parent} cannot be created ({exc}); building in "
            "memory. Set SKFUSION_HOME to a writable folder to keep exported models.",
            RuntimeWarning,
            stacklevel=4,
        )
        data = _checked(build())
        return data, sha256_hex(data)
    from filelock import Timeout

    try:
        with file_lock(path.with_suffix(".lock"), timeout=timeout):
            return _build_locked(path, build)
    except Timeout:
        if build is None:
            raise
        # another live process has held the lock for `timeout` seconds: build alongside it
        # (atomic writes: whichever finishes last leaves a complete, recorded entry)
        data = _checked(build())
        sha = sha256_hex(data)
        _write_entry(path, data, sha)
        return data, sha


def _build_locked(path, build):
    data, sha, problem = _read_verified(path)  # another process may have finished meanwhile
    if data is not None:
        return data, sha
    if build is None:
        _refuse(path, problem)
    _remove_orphan_temps(path.parent)
    if problem is not None:
        warnings.warn(
            f"skfusion's model store entry {path} {problem}; rebuilding it.",
            UserWarning,
            stacklevel=5,
        )
    data = _checked(build())
    sha = sha256_hex(data)
    _write_entry(path, data, sha)
    return data, sha


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
