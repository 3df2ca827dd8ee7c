"""torch devices from skfusion's ``device`` strings (the torch backends: text, attention)."""

# SPDX-License-Identifier: BSD-3-Clause

import multiprocessing

from .._utils import import_optional_dependency

__all__ = ["in_worker_process", "resolve_device"]

_WORKER_PROCESS_PREFIXES = ("LokyProcess", "ForkPoolWorker", "SpawnPoolWorker", "Dask")


def in_worker_process():
    """Whether this process is a worker of a parallel pool.

    True in a child process (``multiprocessing.parent_process()`` is set: joblib's loky
    workers, ``multiprocessing`` pools, ``ProcessPoolExecutor``, Dask's nanny-started workers)
    and in a process whose name is a pool worker's (``LokyProcess``, ``ForkPoolWorker``,
    ``SpawnPoolWorker``, ``Dask...``). Such workers get one ONNX Runtime thread by default and
    draw no progress bars.

    Returns
    -------
    worker : bool
        True inside a worker process.

    Examples
    --------
    >>> from skfusion.runtime._device import in_worker_process
    >>> in_worker_process()
    False
    """
    if multiprocessing.parent_process() is not None:
        return True
    return multiprocessing.current_process().name.startswith(_WORKER_PROCESS_PREFIXES)


def resolve_device(device):
    """The torch device for a ``device`` parameter: ``"auto"`` → ``"cuda"`` or ``"cpu"``.

    ``"auto"`` is ``"cuda"`` when torch sees a GPU, else ``"cpu"``; ``"cuda"``/``"cuda:N"``
    are checked (an error when torch sees no GPU); anything else (``"cpu"``, ``"mps"``) is
    returned as it is, without importing torch. ONNX Runtime sessions map devices to execution
    providers instead, see :func:`skfusion.runtime.resolve_providers`.

    Parameters
    ----------
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or another torch device.

    Returns
    -------
    device : str
        A device torch accepts.

    Raises
    ------
    RuntimeError
        When a CUDA device is requested and torch sees no GPU.

    Examples
    --------
    >>> from skfusion.runtime._device import resolve_device
    >>> resolve_device("cpu")
    'cpu'
    """
    if device != "auto" and not device.startswith("cuda"):
        return device
    torch = import_optional_dependency("torch", purpose="the torch backends")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise RuntimeError(
            f"device={device!r} was requested but torch sees no CUDA GPU; use device='auto' "
            "or 'cpu'."
        )
    return device
