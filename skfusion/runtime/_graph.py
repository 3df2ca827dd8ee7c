"""Writing ONNX nodes from numpy: the one graph writer of the fused BERT graph, the in-graph
pooling, the generic int8 rewrite of exported graphs and the fine-tuned head.

:class:`GraphWriter` collects nodes and initializers (``onnx`` protos) under the names it is
given, in the order they are written: the same calls give the same bytes, which the model-store
keys (``BERT_GRAPH_SETTINGS``, ``INT8_SETTINGS``) rely on. Besides plain nodes it writes the two
kinds of weight product every skfusion graph uses:

* :meth:`GraphWriter.product`: ``x @ weight (+ bias)`` in float32 (``MatMul``, ``Add``);
* :meth:`GraphWriter.int8_product` from :meth:`GraphWriter.quantize_rows`: uint8 activations
  quantised *per row* (symmetric, scale ``max|x_row| / 127``, zero point 128), so a row's
  codes depend on that row only, times int8 weights quantised per output channel
  (:func:`quantize_per_channel`), as ``MatMulIntegerToFloat``.

Nothing here imports ``onnx`` at import time; a writer imports it when it is made.
"""

# SPDX-License-Identifier: BSD-3-Clause

import numpy as np

from .._utils import import_optional_dependency

__all__ = ["GraphWriter", "quantize_per_channel"]


def quantize_per_channel(weight):
    """Symmetric int8 quantisation of a (in, out) weight, one scale per output column.

    Parameters
    ----------
    weight : ndarray of shape (n_in, n_out)
        Float weights.

    Returns
    -------
    q : ndarray of shape (n_in, n_out), dtype int8
        Values in [-127, 127].
    scale : ndarray of shape (n_out,), dtype float32
        ``weight ≈ q * scale``; 1 for an all-zero column.

    Examples
    --------
    >>> import numpy as np
    >>> from skfusion.runtime._graph import quantize_per_channel
    >>> q, scale = quantize_per_channel(np.array([[1.0, 0.0], [-2.0, 0.0]]))
    >>> q.tolist(), scale.tolist()
    ([[64, 0], [-127, 0]], [0.015748031437397003, 1.0])
    """
    scale = np.abs(weight).max(axis=0) / 127.0
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.rint(weight / scale), -127, 127).astype(np.int8)
    return q, scale


class GraphWriter:
    """Nodes and initializers of an ONNX graph, written in order.

    Each node is named ``"<output>/<op>"`` and each tensor by the name given, so a graph
    written twice from the same weights has the same bytes.

    Parameters
    ----------
    purpose : str, default="writing ONNX graphs"
        What the ``onnx`` package is needed for, for the error raised when it is missing.

    Attributes
    ----------
    onnx : module
        The ``onnx`` package.
    nodes : list of onnx.NodeProto
        The nodes written, in order.
    initializers : list of onnx.TensorProto
        The constants written, in order.

    Examples
    --------
    >>> import numpy as np
    >>> from skfusion.runtime._graph import GraphWriter
    >>> g = GraphWriter()
    >>> g.product("x", np.eye(2, dtype=np.float32), "dense", bias=np.zeros(2, np.float32))
    'dense.out'
    >>> [node.op_type for node in g.nodes], [init.name for init in g.initializers]
    (['MatMul', 'Add'], ['dense.w', 'dense.b'])
    """

    def __init__(self, purpose="writing ONNX graphs"):
        self.onnx = import_optional_dependency("onnx", purpose=purpose)
        self.nodes, self.initializers = [], []

    def const(self, name, array):
        """Add ``array`` as an initializer called ``name``; return the name."""
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op, inputs, output, domain="", extra_outputs=(), **attrs):
        """Add one ``op`` node from ``inputs`` to ``output`` (and ``extra_outputs``).

        ``attrs`` are the node's attributes. Returns ``output``.
        """
        self.nodes.append(
            self.onnx.helper.make_node(
                op,
                inputs,
                [output, *extra_outputs],
                name=f"{output}/{op}",
                domain=domain,
                **attrs,
            )
        )
        return output

    def append_to(self, graph):
        """Append the nodes and initializers written to an ``onnx.GraphProto``."""
        graph.node.extend(self.nodes)
        graph.initializer.extend(self.initializers)

    def product(self, x, weight, name, bias=None):
        """``x @ weight (+ bias)`` in float32: ``MatMul`` (+ ``Add``); returns the output name."""
        y = self.node("MatMul", [x, self.const(f"{name}.w", weight)], f"{name}.mm")
        if bias is None:
            return y
        return self.node("Add", [y, self.const(f"{name}.b", bias)], f"{name}.out")

    def row_quantization_constants(self, zero_point_shape=(1, 1, 1)):
        """Add the constants ``rows.*`` that :meth:`quantize_rows` and :meth:`int8_product`
        refer to; once per graph, before them.

        ``zero_point_shape`` is the shape of the zero point that ``Expand`` broadcasts to the
        scale's shape: ``(1, 1, 1)`` in the BERT graph (its bytes are keyed by
        ``BERT_GRAPH_SETTINGS``), ``(1,)`` for inputs of any rank.
        """
        self.const("rows.axis", np.array([-1], dtype=np.int64))
        self.const("rows.floor", np.array(1e-30, dtype=np.float32))
        self.const("rows.inv127", np.array(1.0 / 127.0, dtype=np.float32))
        self.const("rows.zp", np.full(zero_point_shape, 128, dtype=np.uint8))
        self.const("rows.zp_scalar", np.array(128, dtype=np.uint8))

    def quantize_rows(self, x, width, name):
        """Per-row (per-token) symmetric dynamic quantisation of ``x`` (..., width) to uint8.

        ``DynamicQuantizeMatMul`` picks one scale for the whole input tensor, i.e. for the
        whole batch, so a text's int8 codes (and its embedding) changed with its batch mates
        and even with its batch's padding. Here each row gets its own scale
        ``max|x_row| / 127``: a row's codes depend on that row only, and a row with small
        values keeps its precision (more accurate than one scale per tensor). The codes are
        ``round(x / scale) + 128`` (round half to even) in uint8, i.e. signed values in
        [-127, 127] with zero point 128: ONNX Runtime's fast integer products take uint8
        activations, not int8.

        Returns
        -------
        rows : tuple of (str, str)
            The names of the uint8 codes (x's shape) and of the float32 scales (..., 1):
            what :meth:`int8_product` takes.
        """
        # max|x| from ReduceMax and ReduceMin (two reads) rather than ReduceMax(Abs(x)), which
        # writes a full-size temporary; the floor keeps an all-zero row at scale > 0 (codes 128)
        high = self.node("ReduceMax", [x, "rows.axis"], f"{name}.max", keepdims=1)
        low = self.node("ReduceMin", [x, "rows.axis"], f"{name}.min", keepdims=1)
        minus_low = self.node("Neg", [low], f"{name}.-min")
        absmax = self.node("Max", [high, minus_low, "rows.floor"], f"{name}.absmax")
        scale = self.node("Mul", [absmax, "rows.inv127"], f"{name}.scale")
        # QuantizeLinear with one block per row (opset 21): the division, rounding, zero point
        # and saturation in one pass. Its zero point must have the scale's shape.
        shape = self.node("Shape", [scale], f"{name}.shape")
        zero = self.node("Expand", ["rows.zp", shape], f"{name}.zp")
        codes = self.node(
            "QuantizeLinear", [x, scale, zero], f"{name}.q", axis=-1, block_size=int(width)
        )
        return codes, scale

    def int8_product(self, rows, weight, name, bias=None):
        """``x @ weight (+ bias)`` from x's per-row codes: ``MatMulIntegerToFloat`` (+ ``Add``).

        ``rows`` is what :meth:`quantize_rows` returned for x. The integer product is exact,
        then ONNX Runtime scales it by the weight's channel scales and the row scales (a
        non-scalar A scale is applied to the output, bias included, so the bias is added
        after the node rather than given to it). Returns the output name.
        """
        codes, scale = rows
        q, channel_scale = quantize_per_channel(weight)
        inputs = [
            codes,
            self.const(f"{name}.w_int8", q),
            scale,
            self.const(f"{name}.w_scale", channel_scale),
            "rows.zp_scalar",
        ]
        y = self.node("MatMulIntegerToFloat", inputs, f"{name}.mm", domain="com.microsoft")
        if bias is None:
            return y
        return self.node("Add", [y, self.const(f"{name}.b", bias)], f"{name}.out")
