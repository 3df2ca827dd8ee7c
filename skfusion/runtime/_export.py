"""Export a sentence-transformers model folder to ONNX (via torch) and quantise it to int8.

Reading a folder's configuration and hashing its content need neither torch nor
sentence-transformers; only :func:`export_transformer_onnx` needs torch and transformers.
"""

# SPDX-License-Identifier: BSD-3-Clause

import contextlib
import json
import logging
import os
import threading
import warnings
from pathlib import Path

import numpy as np

from .._utils import import_optional_dependency
from ..storage._hashing import tree_hash

__all__ = [
    "EXPORT_SETTINGS",
    "INT8_SETTINGS",
    "folder_hash",
    "export_transformer_onnx",
    "quantize_int8",
    "read_sentence_transformer_folder",
]

# Everything that changes the exported bytes; part of the model-store key.
EXPORT_SETTINGS = "torch-dynamo-export|opset=18|attn=eager|out=token_embeddings|v1"
# Everything that changes quantize_int8's bytes; part of the model-store key.
INT8_SETTINGS = "skfusion-int8|matmul-weights|rows-u8-sym-zp128+channels-s8-sym|opset>=21|v2"

_TRANSFORMER = "sentence_transformers.models.Transformer"
_POOLING = "sentence_transformers.models.Pooling"
_NORMALIZE = "sentence_transformers.models.Normalize"
# sentence-transformers' order when several pooling modes are on (their outputs are concatenated)
_POOLING_KEYS = [
    ("pooling_mode_cls_token", "cls"),
    ("pooling_mode_max_tokens", "max"),
    ("pooling_mode_mean_tokens", "mean"),
    ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len"),
]
_UNSUPPORTED_POOLING = ["pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken"]


def _read_json(path):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def read_sentence_transformer_folder(path):
    """What the ONNX text path needs from a sentence-transformers folder, or why it cannot serve.

    Parameters
    ----------
    path : str or path-like
        A local sentence-transformers model folder.

    Returns
    -------
    info : dict
        ``transformer_dir`` (folder of the Hugging Face model), ``tokenizer_file``,
        ``max_seq_length`` (int), ``do_lower_case`` (bool), ``pooling`` (tuple of modes),
        ``normalize`` (bool, a ``Normalize`` module follows).

    Raises
    ------
    ValueError
        When the folder is not one the ONNX path supports; the message says why.
    """
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"{os.fspath(path)!r} is not a local model folder")
    modules_file = root / "modules.json"
    if not modules_file.is_file():
        raise ValueError(f"{root} has no modules.json (not a sentence-transformers folder)")
    modules = _read_json(modules_file)
    types = [m.get("type", "") for m in modules]
    if not types or types[0] != _TRANSFORMER:
        raise ValueError(f"the first module of {root} is {types[:1]}, not a Transformer")
    extra = [t for t in types[1:] if t not in (_POOLING, _NORMALIZE)]
    if extra or _POOLING not in types:
        raise ValueError(
            f"{root} has modules {types}; the ONNX path supports Transformer + Pooling "
            "(+ Normalize) only"
        )
    transformer_dir = root / modules[0].get("path", "")
    pooling_dir = root / modules[types.index(_POOLING)].get("path", "")
    pooling_cfg = _read_json(pooling_dir / "config.json")
    unsupported = [k for k in _UNSUPPORTED_POOLING if pooling_cfg.get(k)]
    if unsupported:
        raise ValueError(f"pooling {unsupported} of {root} is not supported by the ONNX path")
    pooling = tuple(mode for key, mode in _POOLING_KEYS if pooling_cfg.get(key))
    if not pooling:
        raise ValueError(f"{pooling_dir / 'config.json'} turns on no pooling mode")
    tokenizer_file = transformer_dir / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise ValueError(f"{transformer_dir} has no tokenizer.json (a fast tokenizer is needed)")
    st_config = {}
    for name in ("sentence_bert_config.json", "sentence_roberta_config.json"):
        if (transformer_dir / name).is_file():
            st_config = _read_json(transformer_dir / name)
            break
    hf_config = _read_json(transformer_dir / "config.json")
    max_len = st_config.get("max_seq_length")
    model_max = hf_config.get("max_position_embeddings", 512)
    if max_len is None:
        max_len = model_max
    return {
        "transformer_dir": transformer_dir,
        "tokenizer_file": tokenizer_file,
        "max_seq_length": int(min(max_len, model_max)),
        "do_lower_case": bool(st_config.get("do_lower_case", False)),
        "pooling": pooling,
        "normalize": _NORMALIZE in types,
    }


def _not_model_content(name):
    return name.startswith(".") or name.upper().startswith("README")


def folder_hash(path):
    """Content hash of a model folder: every file except hidden ones and READMEs.

    Each file's digest is memoised per (file, size, mtime, inode), so a 90 MB model is read
    once per process.

    Parameters
    ----------
    path : str or path-like
        A model folder.

    Returns
    -------
    digest : str
        SHA-256 hex digest of the relative paths and contents.
    """
    return tree_hash(Path(path).resolve(), skip=_not_model_content)


def _example_inputs(tokenizer_file):
    """Two tokenised sentences of different lengths, padded: the export traces the mask path."""
    tokenizers = import_optional_dependency("tokenizers", purpose="tokenising text")
    tok = tokenizers.Tokenizer.from_file(os.fspath(tokenizer_file))
    tok.no_padding()
    tok.no_truncation()
    encodings = tok.encode_batch(["a short one", "a somewhat longer example sentence to export"])
    width = max(len(e.ids) for e in encodings)
    arrays = {k: np.zeros((2, width), dtype=np.int64) for k in ("ids", "mask", "types")}
    for row, enc in enumerate(encodings):
        n = len(enc.ids)
        arrays["ids"][row, :n] = enc.ids
        arrays["mask"][row, :n] = 1
        arrays["types"][row, :n] = enc.type_ids
    return arrays


class _ThreadNotices(logging.Filter):
    """Drop torch's records below ERROR logged by the thread that made the filter."""

    def __init__(self):
        super().__init__()
        self.thread = threading.get_ident()

    def filter(self, record):
        return (
            record.thread != self.thread
            or record.levelno >= logging.ERROR
            or not record.name.startswith("torch")
        )


@contextlib.contextmanager
def _quiet_torch_notices():
    """While exporting, drop torch's notices ("torchvision is not installed") of this thread.

    torch logs them on child loggers of ``torch.onnx`` (created during the export), which a
    logger filter does not see, so the filter goes on the handlers that print them (torch's
    own, on ``torch`` and ``torch.onnx`` among others, and the root logger's) for the time of
    the call, and is removed afterwards. No logger's level changes, and other threads' records pass.
    """
    notices = _ThreadNotices()
    loggers = [logging.getLogger()] + [
        logger
        for name, logger in list(logging.Logger.manager.loggerDict.items())
        if (name == "torch" or name.startswith("torch.")) and isinstance(logger, logging.Logger)
    ]
    handlers = {id(h): h for logger in loggers for h in logger.handlers}.values()
    for handler in handlers:
        handler.addFilter(notices)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(notices)


def export_transformer_onnx(info):
    """Export the Transformer module of a sentence-transformers folder to ONNX bytes.

    The export uses torch's ``torch.export``-based exporter (the TorchScript one mis-exports
    transformers' attention masks). The graph maps ``input_ids``, ``attention_mask`` (and
    ``token_type_ids`` when the model takes them), int64 of shape (batch, sequence), to
    ``token_embeddings`` (batch, sequence, hidden), with dynamic batch and sequence axes.
    Pooling and normalisation stay outside the graph, so the same model serves sentence and
    token outputs. The export is checked against
    torch on a padded batch.

    Parameters
    ----------
    info : dict
        From :func:`read_sentence_transformer_folder`.

    Returns
    -------
    model_bytes : bytes
        The serialized ONNX model.
    """
    torch = import_optional_dependency("torch", purpose="exporting a text model to ONNX")
    transformers = import_optional_dependency(
        "transformers", purpose="exporting a text model to ONNX"
    )
    ort = import_optional_dependency("onnxruntime", purpose="checking an ONNX export")
    import inspect

    model = transformers.AutoModel.from_pretrained(
        os.fspath(info["transformer_dir"]), attn_implementation="eager"
    )
    model.eval()
    takes_types = "token_type_ids" in inspect.signature(model.forward).parameters

    class _TokenEmbeddings(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                kwargs["token_type_ids"] = token_type_ids
            return self.inner(**kwargs).last_hidden_state

    example = _example_inputs(info["tokenizer_file"])
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if takes_types else [])
    tensors = [torch.from_numpy(example[k]) for k in ("ids", "mask", "types")[: len(names)]]
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    wrapper = _TokenEmbeddings(model)
    with _quiet_torch_notices():
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                wrapper,
                tuple(tensors),
                input_names=names,
                output_names=["token_embeddings"],
                dynamic_shapes={name: {0: batch, 1: sequence} for name in names},
                opset_version=18,
                dynamo=True,
                verbose=False,
            )
            program.optimize()
            expected = wrapper(*tensors).numpy()
    model_bytes = program.model_proto.SerializeToString()
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    feeds = {name: t.numpy() for name, t in zip(names, tensors)}
    got = session.run(None, feeds)[0]
    mask = example["mask"].astype(bool)
    error = float(np.abs(got[mask] - expected[mask]).max())
    if not error < 1e-3:
        raise RuntimeError(f"the ONNX export differs from torch by {error:.3g}")
    return model_bytes


def quantize_int8(model_bytes):
    """int8 products for an exported graph: the BERT graph's quantisation, applied to MatMuls.

    Every ``MatMul`` whose second input is a 2-D float32 initializer (a weight) becomes
    ``MatMulIntegerToFloat``: its activations quantised *per row* (symmetric, one scale per
    token, so that a row's codes do not depend on its batch mates) and its weight per output
    channel, by the same writer as the fused BERT graph's int8 products
    (:class:`skfusion.runtime._graph.GraphWriter`). The rewrite is done in memory with
    ``onnx``: no temporary files, no working-directory or logger changes. The default-domain
    opset is raised to 21 when lower (``QuantizeLinear``'s ``block_size``).

    Parameters
    ----------
    model_bytes : bytes
        A float32 ONNX model.

    Returns
    -------
    quantized : bytes
        The int8 model (activations quantised on the fly at run time).

    Examples
    --------
    >>> import numpy as np
    >>> from onnx import TensorProto, helper, numpy_helper
    >>> from skfusion.runtime import make_session
    >>> from skfusion.runtime._export import quantize_int8
    >>> x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    >>> y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    >>> w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "w")
    >>> graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
    ...                           [x], [y], [w])
    >>> model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    >>> session = make_session(quantize_int8(model.SerializeToString()), device="cpu")
    >>> [node.op_type for node in __import__("onnx").load_from_string(
    ...     quantize_int8(model.SerializeToString())).graph.node][-2:]
    ['MatMulIntegerToFloat', 'Identity']
    >>> session.run(None, {"x": np.ones((1, 4), np.float32)})[0].round(1)
    array([[18., 22., 26.]], dtype=float32)
    """
    onnx = import_optional_dependency("onnx", purpose="int8 quantisation")
    from ._graph import GraphWriter

    model = onnx.load_from_string(bytes(model_bytes))
    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    uses = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    g = GraphWriter()
    g.row_quantization_constants(zero_point_shape=(1,))
    nodes, replaced = [], set()
    for index, node in enumerate(graph.node):
        init = weights.get(node.input[1]) if node.op_type == "MatMul" else None
        weight = None if init is None else onnx.numpy_helper.to_array(init)
        if node.domain not in ("", "ai.onnx") or weight is None or weight.ndim != 2 or (
            weight.dtype != np.float32
        ):
            nodes.append(node)
            continue
        g.nodes = []
        name = f"skfusion_int8.{index}"
        rows = g.quantize_rows(node.input[0], weight.shape[0], name)
        out = g.int8_product(rows, weight, name)
        g.node("Identity", [out], node.output[0])
        nodes.extend(g.nodes)
        uses[node.input[1]] -= 1
        replaced.add(node.input[1])
    if not replaced:
        return bytes(model_bytes)
    kept = [init for init in graph.initializer if uses.get(init.name, 0) > 0]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept + g.initializers)
    opsets = {o.domain: o for o in model.opset_import}
    default = opsets.get("") or opsets.get("ai.onnx")
    if default is None:
        model.opset_import.append(onnx.helper.make_opsetid("", 21))
    elif default.version < 21:
        default.version = 21
    if "com.microsoft" not in opsets:
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    model.ir_version = max(model.ir_version, 10)
    return model.SerializeToString()
