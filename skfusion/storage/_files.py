"""File plumbing of skfusion's storage: atomic writes, leftover temporary files, OS locks.

The model store, the embedding cache, model files (:mod:`skfusion.io`) and batch scoring all
write through :func:`write_atomic` and lock through :func:`file_lock`.
"""

# SPDX-License-Identifier: BSD-3-Clause

import os
import secrets
import time
from pathlib import Path

__all__ = ["file_lock", "remove_orphan_temps", "write_atomic"]

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
