"""File plumbing of skfusion's storage: atomic writes, leftover temporary files, OS locks,
private folders, and what to do when a folder cannot be written.

The model store, the embedding cache, model files (:mod:`skfusion.io`) and batch scoring all
write through :func:`write_atomic` and lock through :func:`file_lock`. The model store and the
embedding cache share one policy for a folder they cannot write (read-only, full, missing
permission): :func:`warn_in_memory` warns and they go on in memory.
"""

# SPDX-License-Identifier: BSD-3-Clause

import errno
import os
import secrets
import time
import warnings
from pathlib import Path

__all__ = [
    "file_lock",
    "makedirs_private",
    "remove_orphan_temps",
    "warn_in_memory",
    "writable_folder",
    "write_atomic",
]

# temporary files older than this are left over by a killed writer and are deleted
ORPHAN_AGE_S = 3600.0
# a waiter tries a held lock this often (filelock polls; the default 50 ms delays hand-overs)
_POLL_S = 0.01


def write_atomic(path, data, *, fsync=True, private=True):
    """Write ``data`` (bytes, or a callable given the open file) to a temporary file beside
    ``path``, then rename it there: readers see the old file, the new one, or none.

    This is skfusion's one atomic-write helper. With ``private=True`` (store entries and cached
    embeddings of users' data) the file is created with mode 0600, only its owner may read it;
    with ``private=False`` (what users asked for: a saved model, scored batches, a manifest) it
    gets the mode any new file gets, 0666 less the process's umask, as ``open(path, "w")``
    would give it. The temporary name ends in ``.tmp`` so that :func:`remove_orphan_temps`
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


def makedirs_private(path):
    """Create ``path`` and any missing parent, each with mode 0700 (``os.makedirs`` gives the
    mode to the last folder only)."""
    path = os.path.abspath(path)
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            pass


def writable_folder(path):
    """Create ``path`` (see :func:`makedirs_private`) and check that this process may write
    in it; raises the ``OSError`` that says why not."""
    makedirs_private(path)
    if not os.access(path, os.W_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))


def describe_os_error(exc):
    """An ``OSError`` without the temporary file name it may carry: ``[Errno 28] No space
    left on device`` (the same text for every failed write, so a repeated warning is shown
    once)."""
    if isinstance(exc, OSError) and exc.errno is not None and exc.strerror:
        return f"[Errno {exc.errno}] {exc.strerror}"
    return str(exc) or type(exc).__name__


def warn_in_memory(what, folder, exc, instead, *, stacklevel=2):
    """The storage's one policy for a folder it cannot write: warn, then go on in memory.

    The model store and the embedding cache are optional speed-ups: when their folder cannot
    be created or written (a read-only home, a full disk, a missing permission) the caller
    goes on without it, and this ``RuntimeWarning`` names the folder, the error and what
    happens instead.

    Parameters
    ----------
    what : str
        The store, e.g. ``"model store"``.
    folder : str or path-like
        Its folder, as the user configured it.
    exc : OSError
        Why it cannot be written.
    instead : str
        What happens instead, and how to fix it (one or more sentences).
    stacklevel : int, default=2
        As for :func:`warnings.warn`, counted from the caller.
    """
    warnings.warn(
        f"skfusion's {what} {os.fspath(folder)} cannot be written ({describe_os_error(exc)}): "
        f"{instead}",
        RuntimeWarning,
        stacklevel=stacklevel + 1,
    )


def remove_orphan_temps(folder, *, max_age_s=ORPHAN_AGE_S, now=None):
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
    >>> from skfusion.storage._files import file_lock
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     with file_lock(os.path.join(tmp, "demo.lock")) as lock:
    ...         lock.is_locked
    True
    """
    from filelock import FileLock

    return FileLock(os.fspath(path), timeout=timeout, mode=0o600, poll_interval=_POLL_S)
