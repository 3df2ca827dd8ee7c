"""Content hashing, in one place: SHA-256 of bytes, strings, files and folders.

The model store records and checks the SHA-256 of its entries, the embedding cache keys rows by
a digest of the encoder's fingerprint and the raw item, encoders fingerprint their model files,
and :func:`skfusion.io.file_sha256` prints what ``sha256sum`` prints: all of them go through
the helpers here. File digests are memoised per process by path, size, modification time and
inode, so fingerprinting a model folder reads it once.
"""

# SPDX-License-Identifier: BSD-3-Clause

import hashlib
import os
import threading
from pathlib import Path

__all__ = ["content_hash", "file_sha256", "new_hash", "sha256_hex", "tree_hash"]

_BLOCK = 1 << 20
_file_digests = {}  # absolute path -> ((size, mtime_ns, inode), raw digest)
_file_lock = threading.Lock()


def new_hash(data=b""):
    """A new SHA-256 hash object, optionally fed ``data`` (``hashlib.sha256``)."""
    return hashlib.sha256(data)


def sha256_hex(data):
    """SHA-256 hex digest of a bytes-like object.

    Examples
    --------
    >>> from skfusion.storage._hashing import sha256_hex
    >>> sha256_hex(b"")[:16]
    'e3b0c44298fc1c14'
    """
    return hashlib.sha256(data).hexdigest()


def _update_from_file(digest, path):
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_BLOCK), b""):
            digest.update(block)
    return digest


def file_sha256(path):
    """SHA-256 hex digest of a file's bytes (what ``sha256sum`` prints), read in 1 MiB blocks.

    Examples
    --------
    >>> import os, tempfile
    >>> from skfusion.storage._hashing import file_sha256
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = os.path.join(tmp, "empty")
    ...     open(path, "wb").close()
    ...     file_sha256(path)[:16]
    'e3b0c44298fc1c14'
    """
    return _update_from_file(hashlib.sha256(), path).hexdigest()


def file_digest(path):
    """Raw SHA-256 digest of a file's bytes, memoised by (path, size, mtime, inode)."""
    path = os.path.abspath(os.fspath(path))
    st = os.stat(path)
    signature = (st.st_size, st.st_mtime_ns, st.st_ino)
    with _file_lock:
        known = _file_digests.get(path)
    if known is not None and known[0] == signature:
        return known[1]
    digest = _update_from_file(hashlib.sha256(), path).digest()
    with _file_lock:
        _file_digests[path] = (signature, digest)
    return digest


def tree_hash(path, *, skip=None):
    """SHA-256 hex digest of a file's bytes, or of every file under a folder (relative names
    included), memoised per file (see :func:`file_digest`).

    ``skip(name) -> bool``, if given, leaves out the files and sub-folders whose name it
    accepts (for example hidden files and READMEs of a model folder).

    Examples
    --------
    >>> import os, tempfile
    >>> from skfusion.storage._hashing import tree_hash
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     with open(os.path.join(tmp, "w.bin"), "wb") as fh:
    ...         _ = fh.write(b"weights")
    ...     before = tree_hash(tmp)
    ...     os.rename(os.path.join(tmp, "w.bin"), os.path.join(tmp, "v.bin"))
    ...     before == tree_hash(tmp)
    False
    """
    path = os.fspath(path)
    digest = hashlib.sha256()
    if os.path.isdir(path):
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if skip is None or not skip(d))
            for name in sorted(files):
                if skip is not None and skip(name):
                    continue
                full = os.path.join(root, name)
                digest.update(os.path.relpath(full, path).replace(os.sep, "/").encode())
                digest.update(b"\0")
                digest.update(file_digest(full))
    else:
        digest.update(file_digest(path))
    return digest.hexdigest()


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
    >>> from skfusion.storage._hashing import content_hash
    >>> len(content_hash(b"model bytes", "opset=17"))
    64
    >>> content_hash(b"a", "b") == content_hash(b"a", "b") != content_hash(b"ab")
    True
    """
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            digest.update(b"file\0")
            _update_from_file(digest, part)
        elif isinstance(part, str):
            digest.update(b"str\0" + part.encode("utf-8"))
        else:
            digest.update(b"bytes\0" + bytes(part))
        digest.update(b"\0")
    return digest.hexdigest()
