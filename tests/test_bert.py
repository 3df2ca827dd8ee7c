"""The fused BERT graph written from the weights, and how TextEncoder batches by length."""

# SPDX-License-Identifier: BSD-3-Clause

import json
import shutil
import sys

import numpy as np
import pytest
import onnx
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import save_file

import skfusion
from skfusion.datasets import load_clothing_reviews
from skfusion.encoders import TextEncoder
from skfusion.encoders._text import default_text_model, length_batches
from skfusion.runtime import l2_normalize, make_session, pool_sequence
from skfusion.runtime import _bert
from skfusion.runtime._bert import (
    CPU_DISABLED_OPTIMIZERS,
    add_sentence_pooling,
    bert_graph_support,
    build_bert_onnx,
    first_layer_only,
    numpy_bert_forward,
    read_bert_config,
    read_bert_weights,
    read_safetensors,
    write_bert_graph,
)
from skfusion.runtime._graph import GraphWriter, quantize_per_channel
from skfusion.runtime._export import (
    export_transformer_onnx,
    quantize_int8,
    read_sentence_transformer_folder,
)

MODEL = default_text_model()


def _cosine(a, b):
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def _session(model_bytes, disabled=CPU_DISABLED_OPTIMIZERS):
    return make_session(model_bytes, device="cpu", disabled_optimizers=disabled)


def _feeds(encoder, texts, width=None):
    encodings = encoder._tokenize(texts)
    width = width or max(len(e.ids) for e in encodings)
    ids = np.zeros((len(texts), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, enc in enumerate(encodings):
        ids[row, : len(enc.ids)] = enc.ids
        mask[row, : len(enc.ids)] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


@pytest.fixture(scope="module")
def reviews():
    frame = load_clothing_reviews().frame.dropna(subset=["Review Text"])
    return frame["Review Text"].iloc[:48].tolist()


@pytest.fixture(scope="module")
def encoder():
    with skfusion.config_context(cache=False):
        yield TextEncoder(backend="onnx").fit(["x"])


@pytest.fixture(scope="module")
def fused():
    return {q: build_bert_onnx(MODEL, q) for q in (None, "int8")}


@pytest.fixture(scope="module")
def pooled(fused):
    """The graphs as TextEncoder fits them for all-MiniLM-L6-v2: mean pooling, normalised."""
    return {q: add_sentence_pooling(fused[q], ("mean",), True) for q in fused}


def test_text_encoder_uses_the_fused_graph(encoder, pooled):
    assert encoder.onnx_graph_ == "fused-bert"
    assert encoder.onnx_model_ == pooled[None]  # the build is deterministic
    assert encoder._onnx_session().disabled_optimizers == CPU_DISABLED_OPTIMIZERS
    assert encoder._onnx_session().output_names == ["token_embeddings", "sentence_embedding"]


@pytest.mark.kernels
def test_fused_graph_matches_the_torch_export(encoder, fused, reviews):
    """The same padded batch through torch's export and the fused graph: same token values."""
    feeds = _feeds(encoder, reviews)
    mask = feeds["attention_mask"].astype(bool)
    assert not mask.all()  # padded: the masked attention branch runs
    exported = export_transformer_onnx(read_sentence_transformer_folder(MODEL))
    expected = _session(exported, ()).run(["token_embeddings"], feeds)[0]
    got = _session(fused[None]).run(["token_embeddings"], feeds)[0]
    np.testing.assert_allclose(got[mask], expected[mask], atol=2e-4)
    # int8: both quantisations stay close to float32 token values
    ours = _session(fused["int8"]).run(["token_embeddings"], feeds)[0]
    theirs = _session(quantize_int8(exported), ()).run(["token_embeddings"], feeds)[0]
    ours, theirs = _cosine(ours[mask], expected[mask]), _cosine(theirs[mask], expected[mask])
    assert ours.mean() >= 0.98  # per token; pooled sentences are closer (0.99, test_text)
    assert ours.mean() >= theirs.mean() - 0.005


def _one_length(encoder, texts):
    """The texts grouped by token count: {count: [texts]}."""
    groups = {}
    for text, enc in zip(texts, encoder._tokenize(texts)):
        groups.setdefault(len(enc.ids), []).append(text)
    return groups


@pytest.mark.parametrize("output", ["token_embeddings", "sentence_embedding"])
@pytest.mark.parametrize("quantize", [None, "int8"])
@pytest.mark.kernels
def test_a_row_does_not_depend_on_its_batch_mates(encoder, pooled, reviews, quantize, output):
    """The graph alone: a text gives the same bits alone and among other texts of its length
    (the batches TextEncoder makes). Exact on any x86-64 CPU: no operation mixes the rows of
    a batch (int8 activations are quantised per token; the pooled sum is a batched MatMul,
    not a ReduceSum over the middle axis, whose rounding depends on the batch's row count),
    and one thread runs the batch."""
    groups = _one_length(encoder, reviews)
    mates = groups[max(length for length, texts in groups.items() if len(texts) >= 2)]
    assert len(set(mates)) >= 2  # 48 reviews: two of 128 tokens
    session = _session(pooled[quantize])
    alone = session.run([output], _feeds(encoder, mates[:1]))[0]
    together = session.run([output], _feeds(encoder, mates[::-1] + mates))[0]
    np.testing.assert_array_equal(together[len(mates) - 1], alone[0])
    np.testing.assert_array_equal(together[len(mates)], alone[0])


# --- pooling inside the graph, and the float16 graph ---


@pytest.mark.parametrize(
    "modes", [("mean",), ("cls",), ("max",), ("mean_sqrt_len",), ("cls", "mean", "max")]
)
@pytest.mark.parametrize("normalize", [False, True])
def test_in_graph_pooling_is_numpy_pooling(encoder, fused, reviews, modes, normalize):
    """``sentence_embedding`` is pool_sequence (+ l2_normalize) of the graph's own
    ``token_embeddings``, on a padded batch of real reviews (the mask matters). float32 both
    ways; the sums over up to 128 tokens and the norm run in another order (a batched MatMul
    against numpy's einsum and pairwise sums), which moves a value by a few units in the last
    place of the row's largest value (measured at most 8e-8 of it): 1e-6 of it is about 16
    units. cls and max pick values: exact."""
    session = _session(add_sentence_pooling(fused[None], modes, normalize))
    assert [o.shape for o in session.get_outputs()][1] == ["batch", 384 * len(modes)]
    feeds = _feeds(encoder, reviews[:12])
    assert not feeds["attention_mask"].all()
    tokens, got = session.run(["token_embeddings", "sentence_embedding"], feeds)
    mask = feeds["attention_mask"]
    expected = np.concatenate([pool_sequence(tokens, mask, mode) for mode in modes], axis=1)
    if normalize:
        expected = l2_normalize(expected)
    scale = np.abs(expected).max(axis=1, keepdims=True)
    assert np.all(np.abs(got - expected) <= 1e-6 * scale)
    if modes in (("cls",), ("max",)) and not normalize:
        np.testing.assert_array_equal(got, expected)


def test_in_graph_pooling_needs_a_text_graph(fused):
    from onnx import TensorProto, helper

    with pytest.raises(ValueError, match="already"):
        add_sentence_pooling(add_sentence_pooling(fused[None]))
    with pytest.raises(ValueError, match="unknown pooling modes"):
        add_sentence_pooling(fused[None], ("weightedmean",))
    value = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [value], [
        helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    ])
    other = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(ValueError, match="'token_embeddings'"):
        add_sentence_pooling(other.SerializeToString())


@pytest.fixture(scope="module")
def fp16_graph():
    return build_bert_onnx(MODEL, "fp16")


def test_fp16_graph_structure(fused, fp16_graph):
    """float16 weights and compute, int64 token inputs and a float32 output as before."""
    import onnx
    from onnx import TensorProto

    model = onnx.load_from_string(fp16_graph)
    kinds = {i.data_type for i in model.graph.initializer}
    assert TensorProto.FLOAT not in kinds and TensorProto.FLOAT16 in kinds
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [TensorProto.INT64] * 3
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [TensorProto.FLOAT]
    assert len(fp16_graph) < 0.55 * len(fused[None])
    # the fused kernels stay (their float16 versions run on CUDA)
    ops = {n.op_type for n in model.graph.node}
    assert {"EmbedLayerNormalization", "MultiHeadAttention", "LayerNormalization"} <= ops


def test_fp16_graph_on_cpu_against_fp32(encoder, fused, fp16_graph, reviews):
    """The float16 graph, run by the CPU provider (ONNX Runtime casts around the nodes it has
    no float16 kernel for), against the float32 graph on a padded batch of real reviews:
    every real token within cosine 0.999 (measured 0.99999), and the pooled rows too."""
    feeds = _feeds(encoder, reviews[:16])
    mask = feeds["attention_mask"].astype(bool)
    expected = _session(fused[None]).run(["token_embeddings"], feeds)[0]
    got = _session(fp16_graph).run(["token_embeddings"], feeds)[0]
    assert got.dtype == np.float32
    assert _cosine(got[mask], expected[mask]).min() >= 0.999
    sentences = [
        _session(add_sentence_pooling(g, ("mean",), True)).run(["sentence_embedding"], feeds)[0]
        for g in (fused[None], fp16_graph)
    ]
    assert _cosine(*sentences).min() >= 0.999


def test_the_build_check_rejects_a_lossy_fp16_conversion(monkeypatch):
    """The fp16 build is checked against the float64 reference like the others: a conversion
    that flushes every weight below 0.05 to +-0.05 fails it."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    def lossy(model_bytes):
        model = onnx.load_from_string(model_bytes)
        return convert_float_to_float16(
            model, keep_io_types=True, min_positive_val=0.05
        ).SerializeToString()

    monkeypatch.setattr(_bert, "float16_model", lossy)
    with pytest.raises(RuntimeError, match="float16: min token cosine"):
        build_bert_onnx(MODEL, "fp16")


@pytest.mark.kernels
def test_padding_does_not_change_a_row(encoder, fused, reviews):
    """The graph masks padded keys; TextEncoder never pads, but other callers may. The masked
    attention kernel runs with or without padding (no If that skips the mask), so padding a
    row changes it by float rounding at most: 1e-5 on token values of magnitude up to about
    10, i.e. the 1e-6 relative budget (measured 0 on this CPU; the unmasked kernel differed
    by 1.3e-6). Only float32: int8 turns any rounding difference into a different code."""
    texts = reviews[:6]
    lengths = [len(e.ids) for e in encoder._tokenize(texts)]
    longest = texts[int(np.argmax(lengths))]
    session = _session(fused[None])
    alone = session.run(["token_embeddings"], _feeds(encoder, [longest]))[0]
    for width in (max(lengths), max(lengths) + 7):
        feeds = _feeds(encoder, texts[::-1] + [longest], width=width)
        assert not feeds["attention_mask"].all()
        padded = session.run(["token_embeddings"], feeds)[0][-1, : alone.shape[1]]
        np.testing.assert_allclose(padded, alone[0], rtol=0, atol=1e-5)


@pytest.mark.kernels
def test_numpy_reference_agrees_with_the_graph(encoder, fused, reviews):
    cfg = read_bert_config(read_sentence_transformer_folder(MODEL)["transformer_dir"])
    weights = read_bert_weights(read_sentence_transformer_folder(MODEL)["transformer_dir"], cfg)
    feeds = _feeds(encoder, reviews[:5])
    mask = feeds["attention_mask"].astype(bool)
    expected = numpy_bert_forward(
        cfg, weights, feeds["input_ids"], feeds["attention_mask"], feeds["token_type_ids"]
    )
    got = _session(fused[None]).run(["token_embeddings"], feeds)[0]
    np.testing.assert_allclose(got[mask], expected[mask], atol=1e-4)


def test_int8_graph_follows_its_numpy_simulation(encoder, fused, reviews):
    """The int8 graph computes what numpy computes with the same per-token activation codes
    and per-channel weight codes."""
    folder = read_sentence_transformer_folder(MODEL)["transformer_dir"]
    cfg = read_bert_config(folder)
    weights = read_bert_weights(folder, cfg)
    feeds = _feeds(encoder, reviews[:4])
    ids, mask = feeds["input_ids"], feeds["attention_mask"]
    keep = mask.astype(bool)
    # one layer, where a float32 rounding difference that moves an activation across a
    # rounding boundary changes that one code only: the mean difference to the simulation is
    # a small part of the int8 error (measured 0.15%, at most 2.5% on other reviews; one
    # activation scale per batch: several times the int8 error itself)
    small, local_ids = first_layer_only(weights, ids)
    one_layer = write_bert_graph(cfg, small, int8=True)
    got = _session(one_layer).run(["token_embeddings"], dict(feeds, input_ids=local_ids))[0]
    args = (cfg, small, local_ids, mask, feeds["token_type_ids"])
    simulated, exact = numpy_bert_forward(*args, int8=True), numpy_bert_forward(*args)
    int8_error = np.abs(simulated - exact)[keep].mean()
    assert np.abs(got - simulated)[keep].mean() <= 0.05 * int8_error
    # all the layers: such changed codes change later codes too, so the whole graph is only
    # closer to its simulation than to float32 (measured 1 - cosine 0.0014 against 0.0025)
    got = _session(fused["int8"]).run(["token_embeddings"], feeds)[0][keep]
    args = (cfg, weights, ids, mask, feeds["token_type_ids"])
    simulated, exact = numpy_bert_forward(*args, int8=True)[keep], numpy_bert_forward(*args)[keep]
    assert _cosine(got, simulated).mean() > _cosine(got, exact).mean() >= 0.995


def test_the_build_check_rejects_one_scale_per_batch(monkeypatch):
    """Each build is checked against numpy; int8 activations quantised with one scale for the
    whole tensor (DynamicQuantizeMatMul's way: rows then depend on their batch) fail it."""

    def per_tensor(g, x, width, name):  # a GraphWriter.quantize_rows of another kind
        high = g.node("ReduceMax", [x], f"{name}.max", keepdims=0)
        low = g.node("ReduceMin", [x], f"{name}.min", keepdims=0)
        absmax = g.node("Max", [high, g.node("Neg", [low], f"{name}.-min")], f"{name}.absmax")
        scale = g.node("Mul", [absmax, "rows.inv127"], f"{name}.scale")
        return g.node("QuantizeLinear", [x, scale, "rows.zp_scalar"], f"{name}.q"), scale

    monkeypatch.setattr(GraphWriter, "quantize_rows", per_tensor)
    with pytest.raises(RuntimeError, match="disagrees with the numpy reference"):
        build_bert_onnx(MODEL, "int8")


def test_building_needs_no_torch(monkeypatch, fused):
    for name in ("torch", "transformers", "sentence_transformers"):
        monkeypatch.setitem(sys.modules, name, None)
    assert build_bert_onnx(MODEL, "int8") == fused["int8"]


def test_one_writer_for_every_graph(fused):
    """Building, fine-tuning and the generic int8 rewrite write through one GraphWriter: the
    fine-tuning path (write_bert_graph on the read weights) gives build_bert_onnx's bytes, and
    quantize_int8 writes each product as the BERT graph's int8 products are written."""
    folder = read_sentence_transformer_folder(MODEL)["transformer_dir"]
    cfg = read_bert_config(folder)
    weights = read_bert_weights(folder, cfg)
    for q in (None, "int8"):
        assert write_bert_graph(cfg, weights, int8=q == "int8") == fused[q]
    weight = np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32)
    g = GraphWriter()
    g.row_quantization_constants(zero_point_shape=(1,))
    g.int8_product(g.quantize_rows("x", 16, "skfusion_int8.0"), weight, "skfusion_int8.0")
    graph = onnx.load_from_string(quantize_int8(_matmul_model(weight, 2))).graph
    written = [(n.op_type, list(n.input), list(n.output)) for n in g.nodes]
    assert [(n.op_type, list(n.input), list(n.output)) for n in graph.node][: len(written)] == (
        written
    )
    assert {i.name: i for i in graph.initializer}["skfusion_int8.0.w_int8"] == {
        i.name: i for i in g.initializers
    }["skfusion_int8.0.w_int8"]


def _runtime_private_uses(path, package_root):
    """(line, name) of each underscore name of another skfusion module that ``path`` imports
    (or reads off an imported module) where either side is in ``skfusion.runtime``."""
    import ast

    relative = path.relative_to(package_root.parent).with_suffix("")
    here = ".".join(relative.parts[:-1] if relative.name == "__init__" else relative.parts)
    package = here if relative.name == "__init__" else here.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    modules, found = {}, []

    def private(name):
        return name.startswith("_") and not name.startswith("__")

    def concerns_runtime(module):
        return module != here and (
            module.startswith("skfusion.runtime") or here.startswith("skfusion.runtime")
        )

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if not module.startswith("skfusion"):
                continue
            for alias in node.names:
                full = f"{module}.{alias.name}"
                if (package_root.parent / full.replace(".", "/")).with_suffix(".py").exists():
                    modules[alias.asname or alias.name] = full  # a module, not a name
                elif private(alias.name) and concerns_runtime(module):
                    found.append((node.lineno, full))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            module = modules.get(node.value.id)
            if module and private(node.attr) and concerns_runtime(module):
                found.append((node.lineno, f"{module}.{node.attr}"))
    return found


def test_no_module_uses_the_runtimes_private_names():
    """The graph writer, the BERT graph and the sessions are reached through named functions:
    no skfusion module imports an underscore name of a runtime module, and no runtime module
    one of another module (the fine-tuning encoder used to reach five of the BERT module's)."""
    from pathlib import Path

    root = Path(skfusion.__file__).parent
    found = {
        f"{path.relative_to(root)}:{line}": name
        for path in sorted(root.rglob("*.py"))
        for line, name in _runtime_private_uses(path, root)
    }
    assert found == {}


@pytest.mark.kernels
def test_per_channel_quantisation():
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((16, 5)).astype(np.float32) * np.array([1, 10, 0.1, 0, 3])
    q, scale = quantize_per_channel(weight)
    assert q.dtype == np.int8 and scale.shape == (5,)
    assert np.abs(q).max() <= 127
    assert np.all(q[:, 3] == 0) and scale[3] == 1.0  # an all-zero column
    np.testing.assert_allclose(q * scale, weight, atol=scale.max() / 2 + 1e-7)


# --- which folders the fused graph serves ---


def _copy_model(tmp_path, **config_changes):
    """A copy of the offline model folder with config.json changed (weights linked)."""
    root = tmp_path / "model"
    shutil.copytree(MODEL, root, ignore=shutil.ignore_patterns("model.safetensors"))
    (root / "model.safetensors").symlink_to(f"{MODEL}/model.safetensors")
    config = json.loads((root / "config.json").read_text())
    config.update(config_changes)
    (root / "config.json").write_text(json.dumps(config))
    return root


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({"model_type": "roberta"}, "model_type is 'roberta'"),
        ({"hidden_act": "gelu_new"}, "hidden_act is 'gelu_new'"),
        ({"position_embedding_type": "relative_key"}, "position_embedding_type"),
        ({"is_decoder": True}, "decoder"),
    ],
)
def test_support_names_the_reason(tmp_path, changes, reason):
    root = _copy_model(tmp_path, **changes)
    assert reason in bert_graph_support(root)
    with pytest.raises(ValueError, match="cannot serve"):
        build_bert_onnx(root)


def test_support_needs_safetensors(tmp_path):
    root = _copy_model(tmp_path)
    assert bert_graph_support(root) is None
    (root / "model.safetensors").unlink()
    assert "model.safetensors" in bert_graph_support(root)
    assert "config.json" in bert_graph_support(tmp_path)  # not a model folder


def test_other_models_fall_back_to_the_torch_export(tmp_path):
    """A model the fused graph does not serve (tanh GELU) is exported with torch, and still
    agrees with sentence-transformers on the same folder; its int8 graph (the same per-row
    quantiser as the fused graph's) stays close and keeps rows independent of batch mates."""
    from sentence_transformers import SentenceTransformer

    root = _copy_model(tmp_path, hidden_act="gelu_new")
    texts = ["a soft sweater that runs small", "too short", "love it"]
    with skfusion.config_context(cache=False):
        fitted = TextEncoder(root, backend="onnx").fit(["x"])
        got = fitted.transform(texts)
        int8 = TextEncoder(root, backend="onnx", precision="int8").fit(["x"])
        got8 = int8.transform(texts)
        alone = np.vstack([int8.transform([t]) for t in texts])
    assert fitted.onnx_graph_ == "torch-export"
    assert fitted._onnx_session().disabled_optimizers == ()
    expected = SentenceTransformer(str(root), device="cpu").encode(texts)
    assert _cosine(got, expected).min() >= 0.9999
    # per-token int8 activations, as in the fused BERT graph, whose int8 rows of these three
    # texts measure cosines 0.9967, 0.9912, 0.9865 to float32 ("love it": short texts have
    # the fewest tokens to average rounding over); this graph measured 0.9975, 0.9928, 0.9870
    assert _cosine(got8, expected).min() >= 0.98
    np.testing.assert_array_equal(got8, alone)  # per-row scales: batch mates change nothing
    ops = {node.op_type for node in onnx.load_from_string(int8.onnx_model_).graph.node}
    assert "MatMulIntegerToFloat" in ops and "DynamicQuantizeLinear" not in ops


def _matmul_model(weight, rank=3):
    dims = ["B", "T", weight.shape[0]][-rank:]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, dims[:-1] + [weight.shape[1]])
    w = numpy_helper.from_array(weight, "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])]
    graph = helper.make_graph(nodes, "g", [x], [y], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()


@pytest.mark.parametrize("rank", [2, 3])
@pytest.mark.kernels
def test_quantize_int8_is_per_row_and_has_no_side_effects(tmp_path, monkeypatch, rank):
    import logging

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((16, 8)).astype(np.float32)
    model = _matmul_model(weight, rank)
    monkeypatch.chdir(tmp_path)
    level = logging.getLogger().level
    quantized = quantize_int8(model)
    assert list(tmp_path.iterdir()) == []  # nothing written to the working directory
    assert logging.getLogger().level == level
    assert quantize_int8(model) == quantized  # deterministic (it is a model-store entry)
    graph = onnx.load_from_string(quantized).graph
    assert [n.op_type for n in graph.node].count("MatMulIntegerToFloat") == 1
    assert "w" not in {init.name for init in graph.initializer}  # the float weight is gone
    x = rng.standard_normal((3, 5, 16)).astype(np.float32)[(0,) * (3 - rank)]
    big = x.copy()
    big[0] *= 1000  # a batch mate with a much larger range
    run = _session(quantized, ()).run
    got, with_big = run(["y"], {"x": x})[0], run(["y"], {"x": big})[0]
    np.testing.assert_array_equal(got[1:], with_big[1:])  # per-row scales
    expected = np.maximum(x @ weight, 0)
    # int8 codes of x (per row) and of w (per column): each product term is off by about
    # 1/254 of the row's and column's ranges; 16 terms of unit-normal values stay well within
    # 0.15 (measured max about 0.05)
    np.testing.assert_allclose(got, expected, atol=0.15)


def test_no_process_wide_side_effects_in_the_runtime():
    """No working-directory or logger-level changes anywhere in skfusion (threads share them)."""
    from pathlib import Path

    root = Path(skfusion.__file__).parent
    for path in root.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "os.chdir" not in text, path
    for name in ("_bert.py", "_export.py", "_graph.py", "_session.py", "_device.py"):
        assert ".setLevel(" not in (root / "runtime" / name).read_text(encoding="utf-8"), name


# --- the safetensors reader ---


def test_read_safetensors_dtypes(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "f32": rng.standard_normal((3, 4)).astype(np.float32),
        "f16": rng.standard_normal(5).astype(np.float16),
        "i64": np.arange(6, dtype=np.int64).reshape(2, 3),
    }
    save_file(arrays, tmp_path / "t.safetensors")
    read = read_safetensors(tmp_path / "t.safetensors")
    assert set(read) == set(arrays)
    np.testing.assert_array_equal(read["f32"], arrays["f32"])
    assert read["f16"].dtype == np.float32
    np.testing.assert_array_equal(read["f16"], arrays["f16"].astype(np.float32))
    np.testing.assert_array_equal(read["i64"], arrays["i64"])


def test_read_safetensors_bf16(tmp_path):
    values = np.array([1.0, -2.5, 3.140625], dtype=np.float32)  # exact in bfloat16
    raw = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    header = json.dumps({"w": {"dtype": "BF16", "shape": [3], "data_offsets": [0, len(raw)]}})
    blob = len(header).to_bytes(8, "little") + header.encode() + raw
    (tmp_path / "b.safetensors").write_bytes(blob)
    np.testing.assert_array_equal(read_safetensors(tmp_path / "b.safetensors")["w"], values)


@pytest.mark.parametrize("content", [b"", b"\x05\x00\x00\x00\x00\x00\x00\x00{oops"])
def test_read_safetensors_rejects_other_files(tmp_path, content):
    (tmp_path / "bad.safetensors").write_bytes(content)
    with pytest.raises(ValueError, match="not a safetensors file"):
        read_safetensors(tmp_path / "bad.safetensors")


# --- batching by length ---


@pytest.mark.parametrize("batch_size", [1, 3, 8, 32])
def test_length_batches(batch_size):
    rng = np.random.default_rng(batch_size)
    lengths = rng.integers(3, 12, size=200)
    batches = length_batches(lengths, batch_size)
    rows = np.concatenate(batches)
    assert sorted(rows.tolist()) == list(range(200))  # every row exactly once
    assert max(len(b) for b in batches) <= batch_size
    assert np.all(np.diff(lengths[rows]) >= 0)  # by increasing length
    assert all(len(set(lengths[b])) == 1 for b in batches)  # one length: never padded
    # full batches: a length with k rows takes ceil(k / batch_size) batches, no more
    counts = np.bincount(lengths)
    assert len(batches) == sum(-(-int(k) // batch_size) for k in counts if k)
    assert length_batches(np.array([], dtype=int), batch_size) == []


def test_small_runs_get_their_own_batch():
    lengths = np.array([4, 5, 6, 7, 8, 9, 9, 9, 9])
    batches = [b.tolist() for b in length_batches(lengths, 16)]
    assert batches == [[0], [1], [2], [3], [4], [5, 6, 7, 8]]


@pytest.mark.kernels
def test_parallel_batches_match_one_thread(reviews):
    """On CPU, intra_op_num_threads batches run at once (one thread each): same embeddings, same
    order, as one batch at a time."""
    texts = reviews + reviews[:5][::-1]  # 53 texts: several batches of several lengths
    with skfusion.config_context(cache=False):
        two = TextEncoder(backend="onnx", device="cpu", intra_op_num_threads=2).fit(["x"])
        one = TextEncoder(backend="onnx", device="cpu", intra_op_num_threads=1).fit(["x"])
        assert two._threads() == (1, 2) and one._threads() == (1, 1)
        assert two._onnx_session().intra_op_num_threads == 1
        parallel, sequential = two.transform(texts), one.transform(texts)
        # exact: each batch runs on one thread either way, and a batch's rows do not depend on
        # its batch mates (test_text.py::test_rows_do_not_depend_on_the_batch)
        np.testing.assert_array_equal(parallel, sequential)
        np.testing.assert_array_equal(parallel[-5:], parallel[:5][::-1])
        # one short batch is split so that both threads work
        assert len(two._run_onnx(reviews[:4])) >= 2
