"""A fused ONNX graph for BERT encoders, written from the weights with numpy (no torch).

torch's exporter writes a BERT layer as dozens of small ONNX nodes that ONNX Runtime cannot fuse
back (its BERT fusion patterns do not match the ``torch.export`` graph). For the BERT family
(all-MiniLM-L6-v2, bge-small, e5-small, ...) this module writes the graph directly with ONNX
Runtime's fused CPU/CUDA kernels:

* ``EmbedLayerNormalization`` (word + position + token-type embeddings and their LayerNorm),
* per layer the q, k and v products, ``MultiHeadAttention`` (their biases and the key padding
  mask inside; an ``If`` skips the mask when a batch has no padding), the output product,
  ``Add`` + ``LayerNormalization``, the intermediate product, ``Gelu`` (exact erf GELU,
  opset 20), the output product, ``Add`` + ``LayerNormalization``.

With ``quantize="int8"`` the weight products are ``DynamicQuantizeMatMul`` with int8 weights
quantised per output channel (symmetric, scale ``max|w| / 127``) and activations quantised on
the fly; embeddings, LayerNorms, attention scores and GELU stay float32.

The weights are read from ``model.safetensors`` by a small reader here, so building needs
neither torch nor transformers. Each build is checked against a numpy forward pass of the same
weights, on a padded batch and on an unpadded one.
"""

# SPDX-License-Identifier: BSD-3-Clause

import json
import os
from pathlib import Path

import numpy as np

from .._utils import import_optional_dependency
from ._session import make_session

__all__ = ["BERT_GRAPH_SETTINGS", "bert_graph_support", "build_bert_onnx", "read_safetensors"]

# Everything that changes the written bytes; part of the model-store key.
BERT_GRAPH_SETTINGS = "skfusion-bert-graph|opset=20|ms=1|mha|int8=dqmm-per-channel-sym|v2"

# On CPU, ONNX Runtime's fused kernels are slower than the plain ops they replace here (measured
# with onnxruntime 1.32 on (14..32, 77, 384|1536) inputs): SkipLayerNormalization about 3x
# slower than Add + LayerNormalization, BiasGelu about 1.3x slower than Add + Gelu (opset 20).
# The sessions of this graph turn those fusions off on CPU.
CPU_DISABLED_OPTIMIZERS = ("SkipLayerNormFusion", "BiasGeluFusion")

_SAFETENSORS_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
_PREFIXES = ("bert.", "model.", "")


def read_safetensors(path):
    """Read a ``.safetensors`` file into float32/int numpy arrays (bf16/f16 become float32).

    Parameters
    ----------
    path : str or path-like
        The file.

    Returns
    -------
    tensors : dict of str to ndarray
        Tensors by name.

    Raises
    ------
    ValueError
        When the file is not a safetensors file or uses an unknown dtype.
    """
    with open(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 8:
        raise ValueError(f"{os.fspath(path)!r} is not a safetensors file (too short)")
    n = int.from_bytes(raw[:8], "little")
    try:
        header = json.loads(raw[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{os.fspath(path)!r} is not a safetensors file: {exc}") from exc
    body = memoryview(raw)[8 + n :]
    tensors = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        begin, end = spec["data_offsets"]
        dtype = spec["dtype"]
        chunk = body[begin:end]
        if dtype == "BF16":  # the upper half of a float32
            bits = np.frombuffer(chunk, dtype="<u2").astype(np.uint32) << 16
            array = bits.view(np.float32)
        elif dtype in _SAFETENSORS_DTYPES:
            array = np.frombuffer(
                chunk, dtype=np.dtype(_SAFETENSORS_DTYPES[dtype]).newbyteorder("<")
            )
        else:
            raise ValueError(
                f"tensor {name!r} of {os.fspath(path)!r} has unsupported dtype {dtype}"
            )
        array = array.reshape(spec["shape"])
        if array.dtype.kind == "f":
            array = array.astype(np.float32)
        tensors[name] = array
    return tensors


def _read_config(transformer_dir):
    with open(Path(transformer_dir) / "config.json", encoding="utf-8") as fh:
        return json.load(fh)


def bert_graph_support(transformer_dir):
    """Why the fused BERT graph cannot serve a Hugging Face model folder, or None when it can.

    Parameters
    ----------
    transformer_dir : str or path-like
        The folder with ``config.json`` and ``model.safetensors``.

    Returns
    -------
    reason : str or None
        None when supported.
    """
    root = Path(transformer_dir)
    try:
        cfg = _read_config(root)
    except (OSError, ValueError) as exc:
        return f"no readable config.json ({exc})"
    checks = [
        (cfg.get("model_type") == "bert", f"model_type is {cfg.get('model_type')!r}, not 'bert'"),
        (cfg.get("hidden_act") == "gelu", f"hidden_act is {cfg.get('hidden_act')!r}, not 'gelu'"),
        (
            cfg.get("position_embedding_type", "absolute") == "absolute",
            f"position_embedding_type is {cfg.get('position_embedding_type')!r}",
        ),
        (not cfg.get("is_decoder", False), "the model is a decoder"),
        (
            cfg.get("hidden_size", 0) % max(cfg.get("num_attention_heads", 1), 1) == 0,
            "hidden_size is not a multiple of num_attention_heads",
        ),
        ((root / "model.safetensors").is_file(), "there is no model.safetensors"),
    ]
    for ok, reason in checks:
        if not ok:
            return reason
    return None


def _bert_weights(transformer_dir, cfg):
    tensors = read_safetensors(Path(transformer_dir) / "model.safetensors")
    for prefix in _PREFIXES:
        if f"{prefix}embeddings.word_embeddings.weight" in tensors:
            break
    else:
        raise ValueError(f"{transformer_dir} has no BERT embedding weights")

    def get(name):
        key = prefix + name
        if key not in tensors:
            raise ValueError(f"{transformer_dir}: weight {key!r} is missing")
        return np.ascontiguousarray(tensors[key], dtype=np.float32)

    hidden = cfg["hidden_size"]
    weights = {"embeddings": {}, "layers": []}
    e = "embeddings."
    weights["embeddings"] = {
        "word": get(e + "word_embeddings.weight"),
        "position": get(e + "position_embeddings.weight"),
        "gamma": get(e + "LayerNorm.weight"),
        "beta": get(e + "LayerNorm.bias"),
    }
    type_key = prefix + e + "token_type_embeddings.weight"
    weights["embeddings"]["type"] = (
        get(e + "token_type_embeddings.weight")
        if type_key in tensors
        else np.zeros((1, hidden), dtype=np.float32)
    )
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        a = p + "attention.self."
        layer = {
            # torch Linear weights are (out, in); ONNX MatMul wants (in, out)
            "qkv_w": np.concatenate(
                [get(a + f"{n}.weight") for n in ("query", "key", "value")], axis=0
            ).T,
            "qkv_b": np.concatenate([get(a + f"{n}.bias") for n in ("query", "key", "value")]),
            "attn_out_w": get(p + "attention.output.dense.weight").T,
            "attn_out_b": get(p + "attention.output.dense.bias"),
            "ln1_g": get(p + "attention.output.LayerNorm.weight"),
            "ln1_b": get(p + "attention.output.LayerNorm.bias"),
            "ffn_in_w": get(p + "intermediate.dense.weight").T,
            "ffn_in_b": get(p + "intermediate.dense.bias"),
            "ffn_out_w": get(p + "output.dense.weight").T,
            "ffn_out_b": get(p + "output.dense.bias"),
            "ln2_g": get(p + "output.LayerNorm.weight"),
            "ln2_b": get(p + "output.LayerNorm.bias"),
        }
        weights["layers"].append({k: np.ascontiguousarray(v) for k, v in layer.items()})
    return weights


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
        ``weight ≈ q * scale``.
    """
    scale = np.abs(weight).max(axis=0) / 127.0
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.rint(weight / scale), -127, 127).astype(np.int8)
    return q, scale


class _GraphWriter:
    def __init__(self, onnx):
        self.onnx = onnx
        self.nodes, self.initializers = [], []

    def const(self, name, array):
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op, inputs, output, domain="", extra_outputs=(), **attrs):
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


def _product(g, x, weight, name, int8, bias=None):
    """x @ weight (+ bias): MatMul (+ Add) in float32, DynamicQuantizeMatMul in int8."""
    if int8:
        q, scale = quantize_per_channel(weight)
        inputs = [x, g.const(f"{name}.w_int8", q), g.const(f"{name}.w_scale", scale), ""]
        if bias is not None:
            inputs.append(g.const(f"{name}.b", bias))
        return g.node("DynamicQuantizeMatMul", inputs, f"{name}.out", domain="com.microsoft")
    y = g.node("MatMul", [x, g.const(f"{name}.w", weight)], f"{name}.mm")
    if bias is None:
        return y
    return g.node("Add", [y, g.const(f"{name}.b", bias)], f"{name}.out")


def _residual_norm(g, out, residual, gamma, beta, eps, name):
    """LayerNorm(out + residual): Add + LayerNormalization (not fused on CPU, see above)."""
    total = g.node("Add", [out, residual], f"{name}.sum")
    inputs = [total, g.const(f"{name}.g", gamma), g.const(f"{name}.b", beta)]
    return g.node("LayerNormalization", inputs, name, axis=-1, epsilon=float(eps))


def _write_graph(cfg, weights, int8):
    onnx = import_optional_dependency("onnx", purpose="writing the BERT ONNX graph")
    helper, TensorProto = onnx.helper, onnx.TensorProto
    hidden, heads, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg["layer_norm_eps"]
    g = _GraphWriter(onnx)
    emb = weights["embeddings"]
    ids = g.node("Cast", ["input_ids"], "ids_int32", to=TensorProto.INT32)
    types = g.node("Cast", ["token_type_ids"], "types_int32", to=TensorProto.INT32)
    mask = g.node("Cast", ["attention_mask"], "mask_int32", to=TensorProto.INT32)
    x = g.node(
        "EmbedLayerNormalization",
        [
            ids,
            types,
            g.const("emb.word", emb["word"]),
            g.const("emb.position", emb["position"]),
            g.const("emb.type", emb["type"]),
            g.const("emb.gamma", emb["gamma"]),
            g.const("emb.beta", emb["beta"]),
        ],
        "emb.out",
        domain="com.microsoft",
        extra_outputs=["emb.mask_index"],  # declared (the kernel needs it), unused
        epsilon=float(eps),
    )
    lowest = g.node("ReduceMin", [mask], "mask_min", keepdims=0)
    unpadded = g.node("Cast", [lowest], "unpadded", to=TensorProto.BOOL)
    for i, layer in enumerate(weights["layers"]):
        n = f"layer{i}"
        # three products rather than one q|k|v product and a Split (measured faster)
        q, k, v = (
            _product(g, x, layer["qkv_w"][:, j * hidden : (j + 1) * hidden], f"{n}.{part}", int8)
            for j, part in enumerate("qkv")
        )
        bias = g.const(f"{n}.qkv.b", layer["qkv_b"])
        branches = {}
        for branch, inputs in (("dense", [q, k, v, bias]), ("padded", [q, k, v, bias, mask])):
            out = f"{n}.ctx.{branch}"
            mha = helper.make_node(
                "MultiHeadAttention",
                inputs,
                [out],
                name=f"{out}/MultiHeadAttention",
                domain="com.microsoft",
                num_heads=int(heads),
            )
            branches[branch] = helper.make_graph(
                [mha],
                f"{n}_{branch}",
                [],
                [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
            )
        # a batch without padding skips the mask: ORT's unmasked kernel is about 25% faster
        ctx = g.node(
            "If",
            [unpadded],
            f"{n}.ctx",
            then_branch=branches["dense"],
            else_branch=branches["padded"],
        )
        out = _product(g, ctx, layer["attn_out_w"], f"{n}.attn_out", int8, layer["attn_out_b"])
        x1 = _residual_norm(g, out, x, layer["ln1_g"], layer["ln1_b"], eps, f"{n}.ln1")
        h = _product(g, x1, layer["ffn_in_w"], f"{n}.ffn_in", int8, layer["ffn_in_b"])
        h = g.node("Gelu", [h], f"{n}.gelu")
        out = _product(g, h, layer["ffn_out_w"], f"{n}.ffn_out", int8, layer["ffn_out_b"])
        x = _residual_norm(g, out, x1, layer["ln2_g"], layer["ln2_b"], eps, f"{n}.ln2")
    g.node("Identity", [x], "token_embeddings")
    dims = ["batch", "sequence"]
    graph = helper.make_graph(
        g.nodes,
        "skfusion_bert_int8" if int8 else "skfusion_bert",
        [
            helper.make_tensor_value_info(name, TensorProto.INT64, dims)
            for name in ("input_ids", "attention_mask", "token_type_ids")
        ],
        [helper.make_tensor_value_info("token_embeddings", TensorProto.FLOAT, dims + [hidden])],
        g.initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("com.microsoft", 1)],
        producer_name="skfusion",
    )
    model.ir_version = 9
    return model.SerializeToString()


def _layer_norm(x, gamma, beta, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def numpy_bert_forward(cfg, weights, ids, mask, types):
    """Reference BERT forward pass in float64 numpy (token embeddings), for checking builds.

    Parameters
    ----------
    cfg : dict
        The model's ``config.json``.
    weights : dict
        From ``_bert_weights``.
    ids, mask, types : ndarray of shape (batch, sequence)
        Token ids, attention mask (1 = token), token type ids.

    Returns
    -------
    hidden : ndarray of shape (batch, sequence, hidden_size)
        Last hidden states.
    """
    from scipy.special import erf

    eps, heads = cfg["layer_norm_eps"], cfg["num_attention_heads"]
    emb = {k: v.astype(np.float64) for k, v in weights["embeddings"].items()}
    batch, seq = ids.shape
    x = emb["word"][ids] + emb["position"][np.arange(seq)][None] + emb["type"][types]
    x = _layer_norm(x, emb["gamma"], emb["beta"], eps)
    bias = np.where(mask[:, None, None, :] > 0, 0.0, -1e9)
    d = cfg["hidden_size"] // heads

    def heads_first(t):
        return t.reshape(batch, seq, heads, d).transpose(0, 2, 1, 3)

    for layer in weights["layers"]:
        w = {k: v.astype(np.float64) for k, v in layer.items()}
        qkv = x @ w["qkv_w"] + w["qkv_b"]
        q, k, v = np.split(qkv, 3, axis=-1)
        scores = heads_first(q) @ heads_first(k).transpose(0, 1, 3, 2) / np.sqrt(d) + bias
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        probs = scores / scores.sum(-1, keepdims=True)
        ctx = (probs @ heads_first(v)).transpose(0, 2, 1, 3).reshape(batch, seq, heads * d)
        x = _layer_norm(ctx @ w["attn_out_w"] + w["attn_out_b"] + x, w["ln1_g"], w["ln1_b"], eps)
        h = x @ w["ffn_in_w"] + w["ffn_in_b"]
        h = 0.5 * h * (1.0 + erf(h / np.sqrt(2.0)))
        x = _layer_norm(h @ w["ffn_out_w"] + w["ffn_out_b"] + x, w["ln2_g"], w["ln2_b"], eps)
    return x


def build_bert_onnx(transformer_dir, quantize=None):
    """Write the fused ONNX graph of a BERT model folder and check it against numpy.

    The graph maps ``input_ids``, ``attention_mask`` and ``token_type_ids`` (int64, shape
    (batch, sequence), any batch and length up to ``max_position_embeddings``) to
    ``token_embeddings`` (float32, (batch, sequence, hidden)). Padding positions are masked as
    keys (they get values too, which callers ignore), like the Hugging Face model.

    Parameters
    ----------
    transformer_dir : str or path-like
        A Hugging Face BERT folder (``config.json``, ``model.safetensors``); see
        :func:`bert_graph_support`.
    quantize : {None, "int8"}, default=None
        ``"int8"``: dynamic int8 products with per-channel int8 weights.

    Returns
    -------
    model_bytes : bytes
        The serialized ONNX model.

    Raises
    ------
    ValueError
        When the folder is not supported (the message says why).
    RuntimeError
        When the written graph disagrees with the numpy reference (a bug, never expected).
    """
    reason = bert_graph_support(transformer_dir)
    if reason is not None:
        raise ValueError(
            f"the fused BERT graph cannot serve {os.fspath(transformer_dir)}: {reason}"
        )
    if quantize not in (None, "int8"):
        raise ValueError(f"quantize must be None or 'int8', got {quantize!r}")
    cfg = _read_config(transformer_dir)
    weights = _bert_weights(transformer_dir, cfg)
    model_bytes = _write_graph(cfg, weights, int8=quantize == "int8")
    _check_against_numpy(model_bytes, cfg, weights, int8=quantize == "int8")
    return model_bytes


def _check_against_numpy(model_bytes, cfg, weights, int8):
    rng = np.random.default_rng(0)
    vocab = weights["embeddings"]["word"].shape[0]
    n_types = weights["embeddings"]["type"].shape[0]
    lengths = np.array([9, 4, 1])
    ids = rng.integers(1, vocab, size=(3, 9))
    mask = (np.arange(9)[None, :] < lengths[:, None]).astype(np.int64)
    ids = ids * mask
    types = (rng.integers(0, n_types, size=ids.shape) * mask).astype(np.int64)
    expected = numpy_bert_forward(cfg, weights, ids, mask, types)
    session = make_session(model_bytes, device="cpu", disabled_optimizers=CPU_DISABLED_OPTIMIZERS)
    padded = session.run(
        ["token_embeddings"],
        {"input_ids": ids, "attention_mask": mask, "token_type_ids": types},
    )[0]
    # the first row alone has no padding: the unmasked attention branch
    unpadded = session.run(
        ["token_embeddings"],
        {"input_ids": ids[:1], "attention_mask": mask[:1], "token_type_ids": types[:1]},
    )[0]
    keep = mask.astype(bool)
    a = np.concatenate([padded[keep], unpadded[0]]).astype(np.float64)
    b = np.concatenate([expected[keep], expected[0]])
    if int8:
        cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        ok, what = cosine.min() > 0.9, f"min token cosine {cosine.min():.4f}"
    else:
        error = np.abs(a - b).max()
        ok, what = error < 1e-3, f"max difference {error:.3g}"
    if not ok:
        raise RuntimeError(f"the fused BERT graph disagrees with the numpy reference: {what}")
