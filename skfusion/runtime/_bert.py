"""A fused ONNX graph for BERT encoders, written from the weights with numpy (no torch).

torch's exporter writes a BERT layer as dozens of small ONNX nodes that ONNX Runtime cannot fuse
back (its BERT fusion patterns do not match the ``torch.export`` graph). For the BERT family
(all-MiniLM-L6-v2, bge-small, e5-small, ...) this module writes the graph directly with ONNX
Runtime's fused CPU/CUDA kernels:

* ``EmbedLayerNormalization`` (word + position + token-type embeddings and their LayerNorm),
* per layer the q, k and v products, ``MultiHeadAttention`` (their biases and the key padding
  mask inside), the output product, ``Add`` + ``LayerNormalization``, the intermediate product,
  ``Gelu`` (exact erf GELU, opset 20), the output product, ``Add`` + ``LayerNormalization``.

An item's output must not depend on the other items of its batch (DESIGN §8), so:

* attention always runs ONNX Runtime's masked kernel, even for a batch without padding. Its
  unmasked kernel is a different algorithm that rounds differently (about 1e-6 on the token
  values), so an earlier ``If`` that skipped the mask made a row depend on whether a batch
  mate was longer. The masked kernel gives the same bits for a row at any padded width here,
  and costs no measurable time more at these lengths;
* with ``quantize="int8"`` the activations are quantised *per row* (per token), not per
  tensor (see :meth:`skfusion.runtime._graph.GraphWriter.quantize_rows`), so the int8 codes of a
  token depend on that token only.

With ``quantize="fp16"`` the float32 graph is converted to float16 (float32 inputs and
outputs, see :func:`skfusion.runtime._session.float16_model`), for the CUDA provider.

:func:`add_sentence_pooling` appends the sentence-transformers pooling (masked mean, CLS, max,
mean/sqrt(len), then the L2 normalisation) to a text graph as a second output,
``sentence_embedding``, computed in float32 from ``token_embeddings``: on a GPU only the
pooled vectors leave the device.

With ``quantize="int8"`` each weight product is ``MatMulIntegerToFloat``: uint8 activations
(symmetric, scale ``max|x| / 127`` of their row, zero point 128) times int8 weights quantised
per output channel (symmetric, scale ``max|w| / 127``), an exact integer product, rescaled by
the row scale times the channel scale. Embeddings, LayerNorms, attention scores and GELU stay
float32.

The weights are read from ``model.safetensors`` with ``safetensors.numpy``, so building needs
neither torch nor transformers. Each build is checked against a float64 numpy forward pass of
the same weights, on a padded batch and on an unpadded one (float32: the two must also agree on
the row they share; int8: a one-layer graph from the same writer must also match numpy doing
the same quantisation, see ``check_bert_graph``).
"""

# SPDX-License-Identifier: BSD-3-Clause

import json
import os
from pathlib import Path

import numpy as np

from .._utils import import_optional_dependency
from ._graph import GraphWriter, quantize_per_channel
from ._session import float16_model, make_session

__all__ = [
    "BERT_GRAPH_SETTINGS",
    "CPU_DISABLED_OPTIMIZERS",
    "SENTENCE_POOLING_SETTINGS",
    "add_sentence_pooling",
    "bert_graph_support",
    "build_bert_onnx",
    "check_bert_graph",
    "first_layer_only",
    "numpy_bert_forward",
    "read_bert_config",
    "read_bert_weights",
    "read_safetensors",
    "write_bert_graph",
]

# Everything that changes the written bytes; part of the model-store key and of TextEncoder's
# embedding-cache fingerprint, so bump it whenever the graph changes.
BERT_GRAPH_SETTINGS = (
    "skfusion-bert-graph|opset=21|ms=1|mha-always-masked|"
    "int8=rows-u8-sym-zp128+channels-s8-sym|v3"
)
_OPSET = 21  # QuantizeLinear's block_size (per-row activation scales) is opset 21

# Everything that changes what add_sentence_pooling appends; part of the model-store key and of
# TextEncoder's fingerprint (with the pooling modes and the normalisation), bump it with them.
SENTENCE_POOLING_SETTINGS = "sentence-pooling|fp32|masked|v1"

# On CPU, ONNX Runtime's fused kernels are slower than the plain ops they replace here (measured
# with onnxruntime 1.32 on (14..32, 77, 384|1536) inputs): SkipLayerNormalization about 3x
# slower than Add + LayerNormalization, BiasGelu about 1.3x slower than Add + Gelu (opset 20).
# The sessions of this graph turn those fusions off on CPU.
CPU_DISABLED_OPTIMIZERS = ("SkipLayerNormFusion", "BiasGeluFusion")

_PREFIXES = ("bert.", "model.", "")


def read_safetensors(path):
    """Read a ``.safetensors`` file into float32/int numpy arrays (bf16/f16 become float32).

    ``safetensors.numpy`` reads the file (no torch). numpy has no bfloat16, so a file with
    bf16 tensors is read through ``safetensors.deserialize`` and those tensors widened to
    float32 (a bf16 value is the upper half of a float32).

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
        When the file is not a safetensors file or uses a dtype numpy cannot hold.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from safetensors.numpy import save_file
    >>> from skfusion.runtime._bert import read_safetensors
    >>> path = os.path.join(tempfile.mkdtemp(), "w.safetensors")
    >>> save_file({"w": np.ones((2, 3), dtype=np.float16)}, path)
    >>> read_safetensors(path)["w"].dtype
    dtype('float32')
    """
    safetensors = import_optional_dependency("safetensors", purpose="reading BERT weights")
    from safetensors.numpy import load_file

    path = os.fspath(path)
    try:
        tensors = load_file(path)
    except TypeError:  # a dtype numpy lacks (bf16): widen it by hand below
        tensors = None
    except Exception as exc:  # safetensors raises its own SafetensorError
        raise ValueError(f"{path!r} is not a safetensors file: {exc}") from exc
    if tensors is None:
        with open(path, "rb") as fh:
            raw = {name: spec for name, spec in safetensors.deserialize(fh.read())}
        tensors = {}
        with safetensors.safe_open(path, framework="np") as handle:
            for name in handle.keys():
                try:
                    tensors[name] = handle.get_tensor(name)
                    continue
                except TypeError:
                    spec = raw[name]
                if spec["dtype"] != "BF16":
                    raise ValueError(
                        f"tensor {name!r} of {path!r} has dtype {spec['dtype']}, which numpy "
                        "cannot hold"
                    )
                bits = np.frombuffer(bytes(spec["data"]), dtype="<u2").astype(np.uint32) << 16
                tensors[name] = bits.view(np.float32).reshape(spec["shape"])
    return {
        name: array.astype(np.float32) if array.dtype.kind == "f" else array
        for name, array in tensors.items()
    }


def read_bert_config(transformer_dir):
    """The ``config.json`` of a Hugging Face model folder, as a dict."""
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
        cfg = read_bert_config(root)
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


def read_bert_weights(transformer_dir, cfg):
    """The float32 weights of a BERT folder, laid out for :func:`write_bert_graph`.

    Parameters
    ----------
    transformer_dir : str or path-like
        The folder with ``model.safetensors``.
    cfg : dict
        Its ``config.json`` (:func:`read_bert_config`).

    Returns
    -------
    weights : dict
        ``"embeddings"`` (``word``, ``position``, ``type``, ``gamma``, ``beta``) and
        ``"layers"``, one dict per layer with the products' weights as (in, out) arrays
        (``qkv_w``, ``qkv_b``, ``attn_out_w``, ``attn_out_b``, ``ln1_g``, ``ln1_b``,
        ``ffn_in_w``, ``ffn_in_b``, ``ffn_out_w``, ``ffn_out_b``, ``ln2_g``, ``ln2_b``).

    Raises
    ------
    ValueError
        When a weight is missing (the message names it).
    """
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


def _residual_norm(g, out, residual, gamma, beta, eps, name):
    """LayerNorm(out + residual): Add + LayerNormalization (not fused on CPU, see above)."""
    total = g.node("Add", [out, residual], f"{name}.sum")
    inputs = [total, g.const(f"{name}.g", gamma), g.const(f"{name}.b", beta)]
    return g.node("LayerNormalization", inputs, name, axis=-1, epsilon=float(eps))


def write_bert_graph(cfg, weights, int8=False):
    """The fused ONNX graph of BERT weights, unchecked (:func:`build_bert_onnx` checks it).

    Also what fine-tuning writes: the frozen lower layers alone, then the tuned weights.

    Parameters
    ----------
    cfg : dict
        The model's ``config.json`` (:func:`read_bert_config`).
    weights : dict
        From :func:`read_bert_weights`; its ``"layers"`` may be any of the model's layers
        (the graph has as many).
    int8 : bool, default=False
        Write int8 weight products (per-row activations, per-channel weights).

    Returns
    -------
    model_bytes : bytes
        The serialized ONNX model: ``input_ids``, ``attention_mask``, ``token_type_ids`` to
        ``token_embeddings``. The same weights and settings give the same bytes.
    """
    g = GraphWriter(purpose="writing the BERT ONNX graph")
    helper, TensorProto = g.onnx.helper, g.onnx.TensorProto
    hidden, heads, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg["layer_norm_eps"]
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
    if int8:
        g.row_quantization_constants()

    def product(x, weight, name, bias=None, rows=None):
        if not int8:
            return g.product(x, weight, name, bias)
        if rows is None:  # x's per-row codes, unless the caller shares them
            rows = g.quantize_rows(x, weight.shape[0], f"{name}.x")
        return g.int8_product(rows, weight, name, bias)

    for i, layer in enumerate(weights["layers"]):
        n = f"layer{i}"
        # q, k and v read the same input: quantise it once for the three int8 products.
        # Three products rather than one q|k|v product and a Split (measured faster).
        rows = g.quantize_rows(x, hidden, f"{n}.x") if int8 else None
        q, k, v = (
            product(x, layer["qkv_w"][:, j * hidden : (j + 1) * hidden], f"{n}.{part}", rows=rows)
            for j, part in enumerate("qkv")
        )
        # Always the masked kernel, also for a batch without padding (see the module notes)
        ctx = g.node(
            "MultiHeadAttention",
            [q, k, v, g.const(f"{n}.qkv.b", layer["qkv_b"]), mask],
            f"{n}.ctx",
            domain="com.microsoft",
            num_heads=int(heads),
        )
        out = product(ctx, layer["attn_out_w"], f"{n}.attn_out", layer["attn_out_b"])
        x1 = _residual_norm(g, out, x, layer["ln1_g"], layer["ln1_b"], eps, f"{n}.ln1")
        h = product(x1, layer["ffn_in_w"], f"{n}.ffn_in", layer["ffn_in_b"])
        h = g.node("Gelu", [h], f"{n}.gelu")
        out = product(h, layer["ffn_out_w"], f"{n}.ffn_out", layer["ffn_out_b"])
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
        opset_imports=[helper.make_opsetid("", _OPSET), helper.make_opsetid("com.microsoft", 1)],
        producer_name="skfusion",
    )
    model.ir_version = 10  # opset 21
    return model.SerializeToString()


def _layer_norm(x, gamma, beta, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def _quantized_rows(x):
    """x rounded to its per-row int8 grid, as ``GraphWriter.quantize_rows`` does (reference)."""
    scale = np.maximum(np.abs(x).max(-1, keepdims=True), 1e-30) / 127.0
    return np.clip(np.rint(x / scale), -127, 127) * scale  # np.rint: half to even, as ONNX


def numpy_bert_forward(cfg, weights, ids, mask, types, int8=False):
    """Reference BERT forward pass in float64 numpy (token embeddings), for checking builds.

    Parameters
    ----------
    cfg : dict
        The model's ``config.json``.
    weights : dict
        From :func:`read_bert_weights`.
    ids, mask, types : ndarray of shape (batch, sequence)
        Token ids, attention mask (1 = token), token type ids.
    int8 : bool, default=False
        Quantise as the int8 graph does: every weight product takes its input rounded to
        per-row int8 codes and its weight rounded to per-channel int8 codes.

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

    def product(x, weight):
        if not int8:
            return x @ weight
        q, scale = quantize_per_channel(weight)
        return _quantized_rows(x) @ (q.astype(np.float64) * scale)

    for layer in weights["layers"]:
        w = {k: v.astype(np.float64) for k, v in layer.items()}
        qkv = product(x, layer["qkv_w"]) + w["qkv_b"]
        q, k, v = np.split(qkv, 3, axis=-1)
        scores = heads_first(q) @ heads_first(k).transpose(0, 1, 3, 2) / np.sqrt(d) + bias
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        probs = scores / scores.sum(-1, keepdims=True)
        ctx = (probs @ heads_first(v)).transpose(0, 2, 1, 3).reshape(batch, seq, heads * d)
        out = product(ctx, layer["attn_out_w"]) + w["attn_out_b"]
        x = _layer_norm(out + x, w["ln1_g"], w["ln1_b"], eps)
        h = product(x, layer["ffn_in_w"]) + w["ffn_in_b"]
        h = 0.5 * h * (1.0 + erf(h / np.sqrt(2.0)))
        out = product(h, layer["ffn_out_w"]) + w["ffn_out_b"]
        x = _layer_norm(out + x, w["ln2_g"], w["ln2_b"], eps)
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
    quantize : {None, "int8", "fp16"}, default=None
        ``"int8"``: dynamic int8 products with per-channel int8 weights. ``"fp16"``: the
        float32 graph (checked as such) converted to float16 with float32 inputs and outputs,
        then checked on the CPU provider against the float64 reference.

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
    if quantize not in (None, "int8", "fp16"):
        raise ValueError(f"quantize must be None, 'int8' or 'fp16', got {quantize!r}")
    cfg = read_bert_config(transformer_dir)
    weights = read_bert_weights(transformer_dir, cfg)
    model_bytes = write_bert_graph(cfg, weights, int8=quantize == "int8")
    check_bert_graph(model_bytes, cfg, weights, int8=quantize == "int8")
    if quantize == "fp16":
        model_bytes = float16_model(model_bytes)
        check_bert_graph(model_bytes, cfg, weights, int8=False, fp16=True)
    return model_bytes


def _token_cosine(a, b):
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def first_layer_only(weights, ids):
    """The first layer of ``weights`` and the word embeddings of ``ids`` only, and the ids
    renumbered into that table: a small graph for checking what each layer computes.

    Returns
    -------
    weights : dict
        As :func:`read_bert_weights` gives, with one layer.
    ids : ndarray
        ``ids`` as indices into the smaller word table.
    """
    used, local = np.unique(ids, return_inverse=True)
    embeddings = dict(weights["embeddings"], word=weights["embeddings"]["word"][used])
    return {"embeddings": embeddings, "layers": weights["layers"][:1]}, local.reshape(ids.shape)


def check_bert_graph(model_bytes, cfg, weights, int8=False, fp16=False):
    """Run the graph on a padded batch and on its first row alone, and compare with numpy.

    :func:`build_bert_onnx` checks every build with it, fine-tuning its tuned graphs; it
    raises a ``RuntimeError`` naming the difference when the graph fails.

    float16 (the float32 graph converted): every real token within cosine 0.999 of the
    float64 reference (measured 0.99999 on all-MiniLM-L6-v2: float16 keeps 11 significant
    bits, about 5e-4 relative per value, and the errors of a token's 384 values do not line
    up), run by the CPU provider.

    float32: every real token within 1e-3 of the float64 reference (measured 2e-6), and the
    row alone within 1e-5 of the same row in the padded batch (float rounding at most; the
    masked attention kernel gives the same bits here).

    int8: quantisation is discontinuous. A float32 rounding difference that moves one
    activation across a rounding boundary changes its code, and through attention the codes
    of every later token and layer, so the whole graph cannot match a float64 simulation of
    its quantisation to a fixed tolerance (after 6 layers it is about half as far from the
    simulation as from float32). One layer can: a one-layer graph from the same writer must be
    within a tenth of the int8 error (the simulation's mean distance to float32) of the
    simulation, in mean absolute token difference (measured 4e-6 of it on these inputs, at
    most 0.025 on real reviews; one activation scale per batch, as ``DynamicQuantizeMatMul``
    has, measures 5). The whole graph must keep every token within cosine 0.9 of the
    float32 reference.
    """
    rng = np.random.default_rng(0)
    vocab = weights["embeddings"]["word"].shape[0]
    n_types = weights["embeddings"]["type"].shape[0]
    lengths = np.array([9, 4, 1])
    ids = rng.integers(1, vocab, size=(3, 9))
    mask = (np.arange(9)[None, :] < lengths[:, None]).astype(np.int64)
    ids = ids * mask
    types = (rng.integers(0, n_types, size=ids.shape) * mask).astype(np.int64)
    keep = mask.astype(bool)

    def run(graph, ids):
        session = make_session(graph, device="cpu", disabled_optimizers=CPU_DISABLED_OPTIMIZERS)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        padded = session.run(["token_embeddings"], feeds)[0]
        # the first row has no padding: alone it is a batch without padding
        alone = session.run(["token_embeddings"], {k: v[:1] for k, v in feeds.items()})[0]
        return padded, alone, np.concatenate([padded[keep], alone[0]]).astype(np.float64)

    def reference(weights, ids, int8=False):
        out = numpy_bert_forward(cfg, weights, ids, mask, types, int8=int8)
        return np.concatenate([out[keep], out[0]])

    padded, alone, got = run(model_bytes, ids)
    expected = reference(weights, ids)
    if fp16:
        worst = _token_cosine(got, expected).min()
        ok = worst >= 0.999
        what = f"float16: min token cosine {worst:.6f} to the float64 reference"
    elif int8:
        small, local_ids = first_layer_only(weights, ids)
        _, _, layer = run(write_bert_graph(cfg, small, int8=True), local_ids)
        simulated = reference(small, local_ids, int8=True)
        error = np.abs(layer - simulated).mean()
        budget = 0.1 * np.abs(simulated - reference(small, local_ids)).mean()
        worst = _token_cosine(got, expected).min()
        ok = error <= budget and worst > 0.9
        what = (
            f"one layer: mean difference {error:.2g} to its int8 simulation (at most "
            f"{budget:.2g}); all layers: min token cosine {worst:.4f} to float32"
        )
    else:
        error = np.abs(got - expected).max()
        drift = np.abs(alone[0] - padded[0]).max()
        ok = error < 1e-3 and drift <= 1e-5
        what = f"max difference {error:.3g}, row alone vs in its padded batch {drift:.3g}"
    if not ok:
        raise RuntimeError(f"the fused BERT graph disagrees with the numpy reference: {what}")


def add_sentence_pooling(model_bytes, pooling=("mean",), normalize=False):
    """Append sentence-transformers' pooling to a text graph: an output ``sentence_embedding``.

    The graph must take ``attention_mask`` (batch, sequence) and give ``token_embeddings``
    (batch, sequence, hidden) in float32 (a float16 graph of :func:`float16_model` does: its
    outputs stay float32). The appended nodes compute, in float32, what
    :func:`skfusion.runtime.pool_sequence` and :func:`skfusion.runtime.l2_normalize` compute
    in numpy: per mode, over the positions whose mask is non-zero, the mean
    (``sum / max(count, 1e-9)``), the first position (``"cls"``), the maximum (0 for a row
    without positions) or ``sum / sqrt(max(count, 1e-9))``; the modes concatenated in the
    given order; then, with ``normalize``, ``v / max(||v||, 1e-12)``. No node mixes the rows of
    a batch, and on the CPU a row's bits do not depend on the other rows of its batch.
    ``token_embeddings`` stays an output (for ``transform_sequence``); a run that asks only
    for ``sentence_embedding`` copies only the pooled vectors out (from the GPU, with
    :func:`skfusion.runtime.run_session`).

    Parameters
    ----------
    model_bytes : bytes
        The text graph (default-domain opset 18 or later).
    pooling : sequence of {"mean", "cls", "max", "mean_sqrt_len"}, default=("mean",)
        Pooling modes, concatenated in this order.
    normalize : bool, default=False
        Scale each pooled row to unit L2 norm.

    Returns
    -------
    model_bytes : bytes
        The graph with the extra output.
    """
    onnx = import_optional_dependency("onnx", purpose="writing the pooling of a text graph")
    helper, TensorProto = onnx.helper, onnx.TensorProto
    model = onnx.load_from_string(bytes(model_bytes))
    graph = model.graph
    outputs = {o.name: o for o in graph.output}
    token = outputs.get("token_embeddings")
    if token is None or "attention_mask" not in {i.name for i in graph.input}:
        raise ValueError(
            "the graph needs an input 'attention_mask' and an output 'token_embeddings'"
        )
    if token.type.tensor_type.elem_type != TensorProto.FLOAT:
        raise ValueError("the graph's 'token_embeddings' must be float32")
    if "sentence_embedding" in outputs:
        raise ValueError("the graph has a 'sentence_embedding' output already")
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < 18:
        raise ValueError(f"pooling in the graph needs opset 18 or later, the graph has {opset}")
    modes = tuple(pooling)
    unknown = set(modes) - {"mean", "cls", "max", "mean_sqrt_len"}
    if not modes or unknown:
        raise ValueError(f"unknown pooling modes {sorted(unknown)} (or none given)")

    g = GraphWriter()
    p = "skfusion.pool"
    x = "token_embeddings"
    g.const(f"{p}.axis1", np.array([1], dtype=np.int64))
    g.const(f"{p}.axis_last", np.array([-1], dtype=np.int64))
    weights = g.node("Cast", ["attention_mask"], f"{p}.weights", to=TensorProto.FLOAT)
    # (batch, 1): a sum of ones and zeros, exact in any order
    count = g.node("ReduceSum", [weights, f"{p}.axis_last"], f"{p}.count", keepdims=1)
    pooled = []
    if {"mean", "mean_sqrt_len"} & set(modes):
        # the masked sum over the positions as a batched product (batch, 1, seq) @ (batch,
        # seq, hidden): ONNX Runtime's CPU ReduceSum over the middle axis rounds a row
        # differently with the number of rows in the batch, its MatMul does not (DESIGN §8)
        row = g.node("Unsqueeze", [weights, f"{p}.axis1"], f"{p}.row")
        total = g.node("MatMul", [row, x], f"{p}.sum3")
        total = g.node("Squeeze", [total, f"{p}.axis1"], f"{p}.sum")
        floor = g.const(f"{p}.count_floor", np.array(1e-9, dtype=np.float32))
        safe = g.node("Max", [count, floor], f"{p}.safe_count")
    for mode in modes:
        if mode == "mean":
            pooled.append(g.node("Div", [total, safe], f"{p}.mean"))
        elif mode == "mean_sqrt_len":
            root = g.node("Sqrt", [safe], f"{p}.sqrt_count")
            pooled.append(g.node("Div", [total, root], f"{p}.mean_sqrt_len"))
        elif mode == "cls":
            first = g.const(f"{p}.first", np.array(0, dtype=np.int64))
            pooled.append(g.node("Gather", [x, first], f"{p}.cls", axis=1))
        else:  # max over the real positions (exact in any order); none gives zeros
            zero = g.const(f"{p}.zero", np.array(0.0, dtype=np.float32))
            low = g.const(f"{p}.-inf", np.array(-np.inf, dtype=np.float32))
            mask = g.node("Unsqueeze", [weights, f"{p}.axis_last"], f"{p}.mask3")
            real = g.node("Greater", [mask, zero], f"{p}.real")
            filled = g.node("Where", [real, x, low], f"{p}.filled")
            top = g.node("ReduceMax", [filled, f"{p}.axis1"], f"{p}.top", keepdims=0)
            some = g.node("Greater", [count, zero], f"{p}.some")
            pooled.append(g.node("Where", [some, top, zero], f"{p}.max"))
    out = pooled[0] if len(pooled) == 1 else g.node("Concat", pooled, f"{p}.concat", axis=-1)
    if normalize:
        square = g.node("Mul", [out, out], f"{p}.square")
        norm = g.node(
            "Sqrt",
            [g.node("ReduceSum", [square, f"{p}.axis_last"], f"{p}.sumsq", keepdims=1)],
            f"{p}.norm",
        )
        tiny = g.const(f"{p}.norm_floor", np.array(1e-12, dtype=np.float32))
        norm = g.node("Max", [norm, tiny], f"{p}.safe_norm")
        out = g.node("Div", [out, norm], f"{p}.normalized")
    g.node("Identity", [out], "sentence_embedding")
    g.append_to(graph)
    dims = token.type.tensor_type.shape.dim
    batch, hidden = "batch", None
    if len(dims) == 3:
        batch = dims[0].dim_param or dims[0].dim_value or "batch"
        hidden = dims[2].dim_value or None
    width = hidden * len(modes) if hidden else "sentence_dim"
    graph.output.append(
        helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, [batch, width])
    )
    return model.SerializeToString()
