"""Progress bars for long work (encoding many rows): a thin, optional layer over tqdm.

A bar is shown when the caller's ``verbose > 0``, an enclosing estimator asked for bars with
:func:`progress_requested` (a fusion estimator with ``verbose > 0`` around its encoders), or
``skfusion.get_config()["show_progress"]`` is true (``SKFUSION_SHOW_PROGRESS=1``), unless this
code runs in a worker (see :func:`in_worker`) or tqdm is not installed. Whether to create a bar
at all is decided here: tqdm's ``disable=`` is never passed, so a user's ``TQDM_DISABLE=1`` (and
the other ``TQDM_*`` variables tqdm reads) still applies to the bars that are made.
"""

# SPDX-License-Identifier: BSD-3-Clause

import contextvars
import threading
from contextlib import contextmanager

from ._utils import in_worker_process

__all__ = ["Progress", "in_worker", "progress", "progress_requested", "wants_progress"]

# Thread names of the pools that run tasks of a Dask scheduler inside this process (the local
# threaded scheduler, and a distributed Worker started with processes=False).
_WORKER_THREAD_PREFIXES = ("Dask-Default-Threads", "Dask-Worker-Threads", "ThreadPoolExecutor-")


def in_worker():
    """Whether this code runs in a parallel worker, where a bar would only add noise.

    True in a child process (``multiprocessing.parent_process()`` is set: joblib's loky
    workers, ``multiprocessing`` pools, ``concurrent.futures.ProcessPoolExecutor``, Dask's
    nanny-started worker processes), in a process whose name is one of those workers' (loky,
    ``ForkPoolWorker``, ``Dask...``: a worker started without a parent link; see
    :func:`skfusion._utils.in_worker_process`), and in a thread of a pool: Dask's,
    a ``ThreadPoolExecutor`` (Dask's local scheduler, a fusion estimator encoding modalities
    in parallel) or a ``multiprocessing.pool.ThreadPool`` (joblib's threading backend): one
    bar per thread would overwrite each other.

    Returns
    -------
    worker : bool
        True inside a worker.

    Examples
    --------
    >>> from skfusion._progress import in_worker
    >>> in_worker()
    False
    """
    if in_worker_process():
        return True
    name = threading.current_thread().name
    # multiprocessing.pool.ThreadPool (joblib's threading backend) names its threads
    # "Thread-N (worker)"
    return name.startswith(_WORKER_THREAD_PREFIXES) or name.endswith("(worker)")


# The ``verbose`` an enclosing estimator passes down to the encoders it runs, in this context
# only (a thread, or a copied context): no setting of anyone else's changes.
_REQUESTED = contextvars.ContextVar("skfusion_progress_requested", default=0)


@contextmanager
def progress_requested(verbose):
    """Ask the encoders that run inside the block, in this thread, for progress bars.

    A fusion estimator with ``verbose > 0`` enters it around each modality's work, in the
    thread that does the work, so its encoders draw bars as if they had ``verbose > 0``
    themselves. It changes no configuration and nothing that other threads see; a pool's
    worker thread still draws none (:func:`in_worker`).

    Parameters
    ----------
    verbose : int or bool
        The estimator's ``verbose``; ``0`` or ``False`` asks for nothing (an enclosing request
        still holds).

    Yields
    ------
    None

    Examples
    --------
    >>> from skfusion._progress import progress_requested, wants_progress
    >>> with progress_requested(1):
    ...     wants_progress(0)
    True
    >>> wants_progress(0)
    False
    """
    if not (verbose and int(verbose) > 0):
        yield
        return
    token = _REQUESTED.set(int(verbose))
    try:
        yield
    finally:
        _REQUESTED.reset(token)


def wants_progress(verbose=0):
    """Whether a bar is asked for: ``verbose > 0``, an enclosing :func:`progress_requested`,
    or the ``show_progress`` config key.

    Parameters
    ----------
    verbose : int or bool, default=0
        The caller's ``verbose`` parameter.

    Returns
    -------
    wanted : bool
        True when a bar should be shown (before the worker and tqdm checks).

    Examples
    --------
    >>> import skfusion
    >>> from skfusion._progress import wants_progress
    >>> wants_progress(0), wants_progress(1)
    (False, True)
    >>> with skfusion.config_context(show_progress=True):
    ...     wants_progress(0)
    True
    """
    if (verbose and int(verbose) > 0) or _REQUESTED.get() > 0:
        return True
    from ._config import get_config

    return bool(get_config().get("show_progress", False))


def _tqdm():
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional: no bar
        return None
    return tqdm


class Progress:
    """The object :func:`progress` yields: counts rows, drawing a tqdm bar when one is shown.

    The bar is made on the first :meth:`update` (so that work that turns out to need nothing,
    such as rows all served by the cache, draws nothing). Safe to call from several threads.

    Parameters
    ----------
    total : int
        Rows expected.
    desc : str
        Label of the bar.
    show : bool
        Whether a bar is drawn.

    Attributes
    ----------
    n : int
        Rows counted so far.
    shown : bool
        Whether a bar was drawn.
    """

    def __init__(self, total, desc, show):
        self.total = int(total)
        self.desc = desc
        self.n = 0
        self._show = show
        self._bar = None
        self.shown = False
        self._lock = threading.Lock()

    def update(self, n=1):
        """Count ``n`` more rows done.

        Parameters
        ----------
        n : int, default=1
            Rows just finished.
        """
        n = int(n)
        with self._lock:
            self.n += n
            if not self._show:
                return
            if self._bar is None:
                tqdm = _tqdm()
                if tqdm is None:
                    self._show = False
                    return
                self._bar = tqdm(total=self.total, desc=self.desc, unit="row", leave=True)
                self.shown = True
            self._bar.update(n)

    def close(self):
        """Close the bar; when fewer rows than ``total`` ran (cached ones), it ends at the count."""
        with self._lock:
            if self._bar is not None:
                if self.n < self.total:
                    self._bar.total = self.n
                    self._bar.refresh()
                self._bar.close()
                self._bar = None
            self._show = False


# The count open in this thread/context, which nested progress() calls add to.
_ACTIVE = contextvars.ContextVar("skfusion_progress", default=None)


@contextmanager
def progress(total, desc=None, verbose=0):
    """A progress counter for ``total`` rows, with a tqdm bar on stderr when one is wanted.

    A bar is drawn when :func:`wants_progress` says so (``verbose > 0`` or the
    ``show_progress`` config key), :func:`in_worker` is false and tqdm can be imported; it
    shows rows done, the rate and the time left. ``TQDM_DISABLE=1`` and the other ``TQDM_*``
    variables apply as tqdm reads them (no ``disable=`` is passed).

    Parameters
    ----------
    total : int
        Rows expected (an upper bound: rows served by a cache are never counted, and the bar
        ends at the rows that ran). A call made while another count is open in the same
        thread (an encoder called chunk by chunk by the embedding cache) adds its rows to that
        count instead of drawing a bar of its own.
    desc : str, default=None
        Label of the bar (e.g. the encoder's class name).
    verbose : int or bool, default=0
        The caller's ``verbose`` parameter.

    Yields
    ------
    counter : Progress
        Call ``counter.update(n)`` after each batch of ``n`` rows.

    Examples
    --------
    >>> from skfusion._progress import progress
    >>> with progress(3, "rows", verbose=0) as bar:
    ...     for _ in range(3):
    ...         bar.update(1)
    >>> bar.n, bar.shown
    (3, False)
    """
    outer = _ACTIVE.get()
    if outer is not None:
        # Nested in an enclosing count (the embedding cache computes a long column in chunks
        # and calls the encoder once per chunk): these rows are part of that one bar, which
        # goes on to the end instead of restarting at every chunk.
        yield outer
        return
    show = total > 0 and wants_progress(verbose) and not in_worker()
    counter = Progress(total, desc, show)
    token = _ACTIVE.set(counter)
    try:
        yield counter
    finally:
        _ACTIVE.reset(token)
        counter.close()
