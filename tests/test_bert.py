"""The fused BERT graph written from the weights, and how TextEncoder batches by length."""

# SPDX-License-Identifier: BSD-3-Clause

import json
import shutil
import sys

import numpy as np
import pytest
from safetensors.numpy import save_file

import skfusion
from skfusion.datasets import load_clothing_reviews
from skfusion.encoders import TextEncoder
from skfusion.encoders._text import default_text_model, length_batches
from skfusion.runtime import make_session
from skfusion.runtime._bert import (
    CPU_DISABLED_OPTIMIZERS,
    _bert_weights,
    _read_config,
    bert_graph_support,
    build_bert_onnx,
    numpy_bert_forward,
    quantize_per_channel,
    read_safetensors,
)
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


def _feeds(encoder, texts):
    encodings = encoder._tokenize(texts)
    width = max(len(e.ids) for e in encodings)
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


def test_text_encoder_uses_the_fused_graph(encoder, fused):
    assert encoder.onnx_graph_ == "fused-bert"
    assert encoder.onnx_model_ == fused[None]  # the build is deterministic
    assert encoder._onnx_session().disabled_optimizers == CPU_DISABLED_OPTIMIZERS


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


def test_unpadded_and_padded_batches_agree(encoder, fused, reviews):
    """A batch of one length skips the mask (If branch); padding one row must not change it."""
    texts = reviews[:6]
    lengths = [len(e.ids) for e in encoder._tokenize(texts)]
    longest = texts[int(np.argmax(lengths))]
    session = _session(fused[None])
    alone = session.run(["token_embeddings"], _feeds(encoder, [longest] * 3))[0]
    feeds = _feeds(encoder, [longest] + texts)
    assert not feeds["attention_mask"].all()
    mixed = session.run(["token_embeddings"], feeds)[0]
    np.testing.assert_allclose(mixed[0], alone[0], atol=1e-5)
    np.testing.assert_allclose(alone[0], alone[2], atol=1e-6)


def test_numpy_reference_agrees_with_the_graph(encoder, fused, reviews):
    cfg = _read_config(read_sentence_transformer_folder(MODEL)["transformer_dir"])
    weights = _bert_weights(read_sentence_transformer_folder(MODEL)["transformer_dir"], cfg)
    feeds = _feeds(encoder, reviews[:5])
    mask = feeds["attention_mask"].astype(bool)
    expected = numpy_bert_forward(
        cfg, weights, feeds["input_ids"], feeds["attention_mask"], feeds["token_type_ids"]
    )
    got = _session(fused[None]).run(["token_embeddings"], feeds)[0]
    np.testing.assert_allclose(got[mask], expected[mask], atol=1e-4)


def test_building_needs_no_torch(monkeypatch, fused):
    for name in ("torch", "transformers", "sentence_transformers"):
        monkeypatch.setitem(sys.modules, name, None)
    assert build_bert_onnx(MODEL, "int8") == fused["int8"]


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
    agrees with sentence-transformers on the same folder."""
    from sentence_transformers import SentenceTransformer

    root = _copy_model(tmp_path, hidden_act="gelu_new")
    texts = ["a soft sweater that runs small", "too short", "love it"]
    with skfusion.config_context(cache=False):
        fitted = TextEncoder(root, backend="onnx").fit(["x"])
        got = fitted.transform(texts)
    assert fitted.onnx_graph_ == "torch-export"
    assert fitted._onnx_session().disabled_optimizers == ()
    expected = SentenceTransformer(str(root), device="cpu").encode(texts)
    assert _cosine(got, expected).min() >= 0.9999


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
    one_length = sum(len(set(lengths[b])) == 1 for b in batches)
    assert one_length >= 0.9 * len(batches)  # 200 rows over 9 lengths: nearly all unpadded
    assert length_batches(np.array([], dtype=int), batch_size) == []


def test_small_runs_share_a_batch():
    lengths = np.array([4, 5, 6, 7, 8, 9, 9, 9, 9])
    batches = [b.tolist() for b in length_batches(lengths, 16)]  # at least 4 rows before a cut
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7, 8]]


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
        np.testing.assert_allclose(parallel, sequential, atol=1e-5)
        np.testing.assert_allclose(parallel[-5:], parallel[:5][::-1], atol=1e-5)
        # one short batch is split so that both threads work
        assert len(two._run_onnx(reviews[:4])) >= 2
