"""Export a sentence-transformers model folder to ONNX (via torch) and quantise it to int8.

Reading a folder's configuration and hashing its content need neither torch nor
sentence-transformers; only :func:`export_transformer_onnx` needs torch and transformers.
"""

# SPDX-License-Identifier: BSD-3-Clause

import json
import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from .._utils import import_optional_dependency
from ._store import content_hash

__all__ = [
    "EXPORT_SETTINGS",
    "folder_hash",
    "export_transformer_onnx",
    "quantize_int8",
    "read_sentence_transformer_folder",
]

# Everything that changes the exported bytes; part of the model-store key.
EXPORT_SETTINGS = "torch-dynamo-export|opset=18|attn=eager|out=token_embeddings|v1"
INT8_SETTINGS = "ort-dynamic-int8|per_channel=True|ops=MatMul|weights=QInt8|v1"

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

_HASH_MEMO = {}


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


def folder_hash(path):
    """Content hash of a model folder: every file except hidden ones and READMEs.

    The result is memoised per (file, size, mtime), so a 90 MB model is read once per process.

    Parameters
    ----------
    path : str or path-like
        A model folder.

    Returns
    -------
    digest : str
        SHA-256 hex digest of the relative paths and contents.
    """
    root = Path(path).resolve()
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or name.upper().startswith("README"):
                continue
            full = Path(dirpath) / name
            stat = full.stat()
            files.append((full.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns))
    memo_key = (str(root), tuple(files))
    if memo_key not in _HASH_MEMO:
        parts = []
        for rel, _, _ in files:
            parts += [rel, root / rel]
        _HASH_MEMO[memo_key] = content_hash(*parts)
    return _HASH_MEMO[memo_key]


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
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "torchvision is not installed" notices
    try:
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
    finally:
        quiet.setLevel(level)
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
    """Dynamic int8 quantisation (per-channel weights of the MatMul nodes) with ONNX Runtime.

    Parameters
    ----------
    model_bytes : bytes
        A float32 ONNX model.

    Returns
    -------
    quantized : bytes
        The int8 model (activations quantised on the fly at run time).
    """
    quantization = import_optional_dependency(
        "onnxruntime.quantization", purpose="int8 quantisation"
    )
    with tempfile.TemporaryDirectory(prefix="skfusion-q-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(model_bytes)
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # ORT logs a pre-processing hint on the root logger
        cwd = os.getcwd()
        os.chdir(tmp)  # ORT's shape inference may drop temporary files in the working directory
        try:
            quantization.quantize_dynamic(
                src,
                dst,
                per_channel=True,
                weight_type=quantization.QuantType.QInt8,
                op_types_to_quantize=["MatMul"],
            )
        finally:
            os.chdir(cwd)
            root.setLevel(level)
        return dst.read_bytes()
