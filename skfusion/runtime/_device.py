"""torch devices from skfusion's ``device`` strings (the torch backends: text, attention)."""

# SPDX-License-Identifier: BSD-3-Clause

from .._utils import import_optional_dependency

__all__ = ["resolve_device"]


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
