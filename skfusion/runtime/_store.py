"""Content-addressed on-disk store for exported models (ONNX bytes), safe across processes."""

# SPDX-License-Identifier: BSD-3-Clause

import hashlib
import os
import tempfile
import time
import warnings
from pathlib import Path

__all__ = ["content_hash", "model_store_dir", "store_get_or_create", "store_path"]

# a lock older than this is from a crashed exporter and is ignored
_STALE_LOCK_S = 600.0
_POLL_S = 0.2


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


def content_hash(*parts):
    """SHA-256 hex digest of byte strings, strings and files, in order.

    Parameters
    ----------
    *parts : bytes, str or pathlib.Path
        Bytes are hashed as they are, a ``str`` as UTF-8 text, a ``Path`` by its file content.

    Returns
    -------
    digest : str
        64 hex characters.

    Examples
    --------
    >>> from skfusion.runtime import content_hash
    >>> len(content_hash(b"model bytes", "opset=17"))
    64
    >>> content_hash(b"a", "b") == content_hash(b"a", "b") != content_hash(b"ab")
    True
    """
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            digest.update(b"file\0")
            with open(part, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
        elif isinstance(part, str):
            digest.update(b"str\0" + part.encode("utf-8"))
        else:
            digest.update(b"bytes\0" + bytes(part))
        digest.update(b"\0")
    return digest.hexdigest()


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
    name = hashlib.sha256(key.encode("utf-8")).hexdigest()
    return model_store_dir() / f"{name}.bin"


def _read(path):
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return data or None


def _write_atomic(path, data):
    """Write ``data`` (bytes, or a callable given the open file) to a temporary file beside
    ``path``, then rename it there: readers see the old file, the new one, or none."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            if callable(data):
                data(fh)
            else:
                fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _try_lock(lock):
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            if time.time() - os.path.getmtime(lock) > _STALE_LOCK_S:
                os.unlink(lock)  # a crashed exporter left it
        except OSError:
            pass
        return False
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


def store_get_or_create(key, build, *, timeout=_STALE_LOCK_S):
    """Return the bytes stored under ``key``, building and storing them on a miss.

    Entries are written atomically (a temporary file in the store folder, then ``os.replace``),
    so a reader never sees a partial file. When several processes miss at once, one of them
    builds while the others wait for its file (a lock file next to the entry); if the builder
    dies, the others build themselves after ``timeout`` seconds. When the store folder cannot
    be written, the bytes are built and returned with a warning.

    Parameters
    ----------
    key : str
        Identifies the content: include a content hash of the source model and every setting
        that changes the bytes.
    build : callable
        Called with no arguments on a miss; returns the bytes to store.
    timeout : float, default=600
        Seconds to wait for another process that is building the same entry.

    Returns
    -------
    data : bytes
        The stored (or freshly built) bytes.

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
    if not isinstance(key, str) or not key:
        raise ValueError("key must be a non-empty str")
    data = _INTERNED.get((str(model_store_dir()), key))
    if data is None:
        data = _get_or_create(key, build, timeout)
        _INTERNED[(str(model_store_dir()), key)] = data
        while len(_INTERNED) > _INTERN_MAX:
            _INTERNED.pop(next(iter(_INTERNED)))
    return data


# Entries handed out in this process, so that encoders built from one model share one bytes
# object: pickle (and joblib) then write a persisted pipeline's model once, not per encoder.
_INTERNED = {}
_INTERN_MAX = 8


def _get_or_create(key, build, timeout):
    path = store_path(key)
    data = _read(path)
    if data is not None:
        return data
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(path.parent, os.W_OK):
            raise PermissionError(f"no write permission on {path.parent}")
    except OSError as exc:
        warnings.warn(
            f"skfusion's model store {path.parent} cannot be created ({exc}); building in "
            "memory. Set SKFUSION_HOME to a writable folder to keep exported models.",
            RuntimeWarning,
            stacklevel=2,
        )
        return _checked(build())
    lock = path.with_suffix(".lock")
    deadline = time.monotonic() + timeout
    while True:
        if _try_lock(lock):
            try:
                data = _read(path)  # another process may have finished meanwhile
                if data is None:
                    data = _checked(build())
                    _write_atomic(path, data)
                return data
            finally:
                try:
                    os.unlink(lock)
                except OSError:
                    pass
        data = _read(path)
        if data is not None:
            return data
        if time.monotonic() > deadline:
            data = _checked(build())
            _write_atomic(path, data)
            return data
        time.sleep(_POLL_S)


def _checked(data):
    if not isinstance(data, (bytes, bytearray, memoryview)) or not len(data):
        raise TypeError(f"build() must return non-empty bytes, got {type(data).__name__}")
    return bytes(data)
