"""Tests of OnnxEncoder: tiny ONNX models built here, and the real exported text model."""

# SPDX-License-Identifier: BSD-3-Clause

import hashlib
import pickle

import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import TensorProto, helper
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import (
    check_do_not_raise_errors_in_init_or_set_params,
    check_estimator_repr,
    check_mixin_order,
    check_no_attributes_set_in_init,
)

import skfusion
from skfusion.datasets import load_clothing_reviews
from skfusion.encoders import OnnxEncoder, TextEncoder
from skfusion.encoders._base import EncodingError
from skfusion.runtime._session import held_session


@pytest.fixture(scope="module", autouse=True)
def no_embedding_cache():
    """These tests check what the encoder computes, so rows must not come from the cache."""
    with skfusion.config_context(cache=False):
        yield


def _model(nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _vi(name, dtype, shape):
    return helper.make_tensor_value_info(name, dtype, shape)


@pytest.fixture(scope="module")
def double_model():
    """y = 2 x on (N, 3) float32."""
    two = helper.make_tensor("two", TensorProto.FLOAT, [1], [2.0])
    return _model(
        [helper.make_node("Mul", ["x", "two"], ["y"])],
        [_vi("x", TensorProto.FLOAT, ["N", 3])],
        [_vi("y", TensorProto.FLOAT, ["N", 3])],
        [two],
    )


@pytest.fixture(scope="module")
def token_model():
    """Embedding lookup: input_ids (N, T) int64 -> (N, T, 4); attention_mask is taken too.

    Two outputs: ``tokens`` (N, T, 4) and ``first`` (N, 4), the first position.
    """
    rng = np.random.default_rng(0)
    table = rng.normal(size=(10, 4)).astype(np.float32)
    weights = helper.make_tensor("table", TensorProto.FLOAT, [10, 4], table.ravel().tolist())
    zero = helper.make_tensor("zero", TensorProto.INT64, [1], [0])
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["tokens"], axis=0),
        helper.make_node("Gather", ["tokens", "zero"], ["first3"], axis=1),
        helper.make_node("Squeeze", ["first3", "zero_axis"], ["first"]),
        helper.make_node("Cast", ["attention_mask"], ["unused"], to=TensorProto.FLOAT),
    ]
    axis = helper.make_tensor("zero_axis", TensorProto.INT64, [1], [1])
    model = _model(
        nodes,
        [
            _vi("input_ids", TensorProto.INT64, ["N", "T"]),
            _vi("attention_mask", TensorProto.INT64, ["N", "T"]),
        ],
        [
            _vi("tokens", TensorProto.FLOAT, ["N", "T", 4]),
            _vi("first", TensorProto.FLOAT, ["N", 4]),
        ],
        [weights, zero, axis],
    )
    return model, table


def tokenize(items):
    """Items are lists of token ids; pad to the longest with 0 and a mask."""
    width = max(len(item) for item in items)
    ids = np.zeros((len(items), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, item in enumerate(items):
        if not all(isinstance(t, (int, np.integer)) and 0 <= t < 10 for t in item):
            raise ValueError("token ids must be ints in [0, 10)")
        ids[i, : len(item)] = item
        mask[i, : len(item)] = 1
    return {"ids": ids, "mask": mask}


TOKEN_ITEMS = [[1, 2, 3], [4], None, [5, 6, 7, 8, 9]]


def _token_encoder(token_model, **params):
    params = {
        "preprocess": tokenize,
        "input_names": {"ids": "input_ids", "mask": "attention_mask"},
        "mask_key": "mask",
        "output_name": "tokens",
        "device": "cpu",
        **params,
    }
    return OnnxEncoder(token_model[0], **params)


def test_array_model(double_model):
    enc = OnnxEncoder(double_model, device="cpu")
    X = [[1.0, 2.0, 3.0], None, np.array([0.0, 1.0, 0.5]), float("nan")]
    out = enc.fit_transform(X)
    assert out.dtype == np.float32 and out.shape == (4, 3)
    np.testing.assert_array_equal(out[0], [2, 4, 6])
    np.testing.assert_array_equal(out[2], [0, 2, 1])
    assert np.isnan(out[[1, 3]]).all()
    assert enc.n_features_out_ == 3 and enc.output_name_ == "y" and enc.input_names_ == ["x"]
    assert list(enc.get_feature_names_out()) == ["0", "1", "2"]
    series = pd.Series(X, index=list("abcd"), dtype=object)
    np.testing.assert_array_equal(enc.transform(series), out)


def test_path_pickle_and_set_output(double_model, tmp_path):
    path = tmp_path / "double.onnx"
    path.write_bytes(double_model)
    enc = OnnxEncoder(str(path), device="cpu").fit([[1, 1, 1]])
    assert enc.model_bytes_ == double_model
    first = enc.transform([[1, 2, 3]])
    path.unlink()  # the fitted encoder keeps the bytes
    restored = pickle.loads(pickle.dumps(enc))
    assert held_session(enc) is not None  # the original holds a session
    assert held_session(restored) is None  # a copy builds its own
    np.testing.assert_array_equal(restored.transform([[1, 2, 3]]), first)
    out = restored.set_output(transform="pandas").transform(
        pd.Series([[1, 1, 1], None], index=[5, 6])
    )
    assert isinstance(out, pd.DataFrame) and list(out.columns) == ["0", "1", "2"]
    assert list(out.index) == [5, 6]


def test_not_fitted(double_model):
    with pytest.raises(NotFittedError):
        OnnxEncoder(double_model).transform([[1, 2, 3]])


def test_bad_models(double_model, tmp_path):
    with pytest.raises(ValueError, match="not a valid ONNX model"):
        OnnxEncoder(b"\x08\x01garbage" * 10).fit([[1, 2, 3]])
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(double_model[:20])
    with pytest.raises(ValueError, match="not a valid ONNX model"):
        OnnxEncoder(bad).fit([[1, 2, 3]])
    with pytest.raises(ValueError, match=r"no output 'z'; outputs: \['y'\]"):
        OnnxEncoder(double_model, output_name="z").fit([[1, 2, 3]])
    with pytest.raises(ValueError, match="output_name=3 but the model has outputs"):
        OnnxEncoder(double_model, output_name=3).fit([[1, 2, 3]])
    with pytest.raises(FileNotFoundError):
        OnnxEncoder(tmp_path / "absent.onnx").fit([[1, 2, 3]])


def test_bad_items(double_model):
    enc = OnnxEncoder(double_model, device="cpu").fit([[1, 2, 3]])
    with pytest.raises(EncodingError, match=r"row 1 \(index 'b'\).*'oops'"):
        enc.transform(pd.Series([[1, 2, 3], "oops", [1, 1, 1]], index=list("abc")))
    lenient = clone(enc).set_params(on_error="missing").fit([[1, 2, 3]])
    out = lenient.transform([[1, 2, 3], "oops", [1, 1, 1], [1, 2]])
    assert np.isnan(out[[1, 3]]).all() and np.isfinite(out[[0, 2]]).all()
    with pytest.raises(EncodingError, match="row 1.*the ONNX model failed"):
        enc.transform([[1, 2, 3], [1, 2]])  # wrong width: the model rejects the item


def test_sequence_pooling(token_model):
    table = token_model[1]
    items = TOKEN_ITEMS
    for pooling, reduce in [("mean", np.mean), ("max", np.max), ("cls", lambda t, axis: t[0])]:
        enc = _token_encoder(token_model, pooling=pooling).fit(items)
        out = enc.transform(items)
        assert out.shape == (4, 4) and np.isnan(out[2]).all()
        for i in (0, 1, 3):
            np.testing.assert_allclose(out[i], reduce(table[items[i]], axis=0), rtol=1e-6)
    flat = _token_encoder(token_model, pooling="flatten").fit([[1, 2]])
    assert flat.n_features_out_ == 8
    np.testing.assert_allclose(flat.transform([[1, 2]])[0], table[[1, 2]].ravel())


def test_mask_defaults_to_attention_mask(token_model):
    def tokenize_named(items):
        out = tokenize(items)
        return {"input_ids": out["ids"], "attention_mask": out["mask"]}

    enc = OnnxEncoder(token_model[0], preprocess=tokenize_named, output_name="tokens", device="cpu")
    out = enc.fit(TOKEN_ITEMS).transform(TOKEN_ITEMS)
    np.testing.assert_allclose(out[1], token_model[1][4], rtol=1e-6)  # padding ignored


@pytest.mark.kernels
def test_output_by_index_and_batching(token_model):
    by_index = _token_encoder(token_model, output_name=1).fit(TOKEN_ITEMS)
    assert by_index.output_name_ == "first" and by_index.n_features_out_ == 4
    one_by_one = clone(by_index).set_params(batch_size=1).fit(TOKEN_ITEMS)
    np.testing.assert_allclose(by_index.transform(TOKEN_ITEMS), one_by_one.transform(TOKEN_ITEMS))
    np.testing.assert_allclose(by_index.transform(TOKEN_ITEMS)[3], token_model[1][5])


def test_feed_errors(token_model):
    single = OnnxEncoder(token_model[0], preprocess=lambda items: np.zeros((len(items), 2)))
    with pytest.raises(ValueError, match="return a dict or set input_names"):
        single.fit([[1]])
    unknown = OnnxEncoder(token_model[0], preprocess=lambda items: {"ids": np.zeros((1, 2))})
    with pytest.raises(ValueError, match=r"gave \['ids'\], which the model does not take"):
        unknown.fit([[1]])
    enc = _token_encoder(token_model)
    with pytest.raises(ValueError, match="no non-missing item"):
        enc.fit([None, None])
    with pytest.raises(EncodingError, match="row 0.*token ids must be ints"):
        enc.fit([[99]])


def test_transform_sequence(token_model):
    enc = _token_encoder(token_model, batch_size=2).fit(TOKEN_ITEMS)
    values, mask = enc.transform_sequence(TOKEN_ITEMS)
    assert values.shape == (4, 5, 4) and values.dtype == np.float32
    assert mask.sum(axis=1).tolist() == [3, 1, 0, 5]
    np.testing.assert_allclose(values[0, :3], token_model[1][[1, 2, 3]])
    assert np.all(values[0, 3:] == 0) and np.isnan(values[2]).all()
    flat = _token_encoder(token_model, output_name="first").fit(TOKEN_ITEMS)
    with pytest.raises(ValueError, match="needs a sequence output"):
        flat.transform_sequence(TOKEN_ITEMS)


def test_nchw_feature_map():
    model = _model(
        [helper.make_node("Identity", ["image"], ["features"])],
        [_vi("image", TensorProto.FLOAT, ["N", 2, 3, 3])],
        [_vi("features", TensorProto.FLOAT, ["N", 2, 3, 3])],
    )
    images = [np.arange(18, dtype=np.float32).reshape(2, 3, 3), None]
    enc = OnnxEncoder(model, device="cpu").fit(images)
    assert enc.n_features_out_ == 2
    out = enc.transform(images)
    np.testing.assert_allclose(out[0], [4.0, 13.0])
    values, mask = enc.transform_sequence(images)
    assert values.shape == (2, 9, 2) and mask[0].all() and not mask[1].any()


def test_fingerprint(token_model, double_model):
    enc = _token_encoder(token_model)
    assert enc._skfusion_fingerprint() == clone(enc)._skfusion_fingerprint()
    assert enc._skfusion_fingerprint() == clone(enc).fit(TOKEN_ITEMS)._skfusion_fingerprint()
    assert (
        enc._skfusion_fingerprint()
        != _token_encoder(token_model, pooling="max")._skfusion_fingerprint()
    )
    assert (
        enc._skfusion_fingerprint()
        == _token_encoder(token_model, batch_size=1, device="auto")._skfusion_fingerprint()
    )
    other = _token_encoder(token_model, preprocess=lambda items: tokenize(items))
    assert other._skfusion_fingerprint() != enc._skfusion_fingerprint()
    # the SHA-256 of the bytes that run: other bytes, another fingerprint
    fitted = OnnxEncoder(double_model).fit([[1, 2, 3]])
    assert fitted.model_sha256_ == hashlib.sha256(double_model).hexdigest()
    assert OnnxEncoder(double_model)._skfusion_fingerprint() == fitted._skfusion_fingerprint()
    other_bytes = OnnxEncoder(double_model + b"\n")  # a trailing field: same graph, new bytes
    assert other_bytes._skfusion_fingerprint() != fitted._skfusion_fingerprint()


def test_bytes_altered_after_fit_are_refused(double_model):
    enc = OnnxEncoder(double_model, device="cpu").fit([[1, 2, 3]])
    restored = pickle.loads(pickle.dumps(enc))
    flipped = bytearray(double_model)
    flipped[-1] ^= 1
    restored.model_bytes_ = bytes(flipped)
    with pytest.raises(ValueError, match="OnnxEncoder's ONNX model bytes do not match"):
        restored.transform([[1, 2, 3]])


def test_a_session_setting_gets_a_new_session(double_model):
    """The session is keyed by every setting that shapes it (threads, device, bytes)."""
    enc = OnnxEncoder(double_model, device="cpu").fit([[1, 2, 3]])
    first = enc._lazy_session()
    assert enc._lazy_session() is first
    enc.set_params(intra_op_num_threads=2)
    second = enc._lazy_session()
    assert second is not first and second.intra_op_num_threads == 2
    np.testing.assert_array_equal(enc.transform([[1, 2, 3]]), [[2, 4, 6]])
    enc.set_params(intra_op_num_threads=None)
    assert enc._lazy_session() is not second
    renamed = onnx.load_from_string(double_model)
    renamed.graph.name = "renamed"
    refit = enc.set_params(model=renamed.SerializeToString()).fit([[1, 2, 3]])
    assert refit._lazy_session().model_bytes != first.model_bytes


@pytest.mark.parametrize(
    "check",
    [
        check_no_attributes_set_in_init,
        check_estimator_repr,
        check_do_not_raise_errors_in_init_or_set_params,
        check_mixin_order,
    ],
)
def test_sklearn_checks(check, double_model):
    check("OnnxEncoder", OnnxEncoder(double_model))


# --- the real text model, run through OnnxEncoder ---


def test_real_text_model_matches_text_encoder():
    """OnnxEncoder + a tokenizers preprocess reproduces TextEncoder on real reviews."""
    from tokenizers import Tokenizer

    text_encoder = TextEncoder(backend="onnx").fit(["x"])
    tokenizer = Tokenizer.from_str(text_encoder.tokenizer_json_)

    def preprocess(texts):
        encodings = tokenizer.encode_batch([t.strip() for t in texts])
        width = max(len(e.ids) for e in encodings)
        out = {
            k: np.zeros((len(texts), width), dtype=np.int64)
            for k in ("input_ids", "attention_mask", "token_type_ids")
        }
        for i, e in enumerate(encodings):
            out["input_ids"][i, : len(e.ids)] = e.ids
            out["attention_mask"][i, : len(e.ids)] = 1
        return out

    texts = load_clothing_reviews().data["Review Text"].iloc[:40]
    enc = OnnxEncoder(
        text_encoder.onnx_model_, preprocess=preprocess, output_name="token_embeddings"
    )
    got = enc.fit(texts).transform(texts)
    expected = text_encoder.transform(texts)
    assert np.isnan(got).any(axis=1).tolist() == np.isnan(expected).any(axis=1).tolist()
    ok = ~np.isnan(got).any(axis=1)
    got = got[ok] / np.linalg.norm(got[ok], axis=1, keepdims=True)
    cos = (got * expected[ok]).sum(axis=1)
    assert cos.min() >= 0.9999


def test_one_session_for_concurrent_first_uses(double_model):
    """Threads that ask a fitted encoder for its session at once all get the same one."""
    from concurrent.futures import ThreadPoolExecutor

    enc = OnnxEncoder(double_model, device="cpu").fit([[1, 2, 3]])
    clone_ = pickle.loads(pickle.dumps(enc))  # no session held yet
    with ThreadPoolExecutor(max_workers=8) as pool:
        held = list(pool.map(lambda _: clone_._lazy_session(), range(32)))
    assert all(lazy is held[0] for lazy in held)
    with ThreadPoolExecutor(max_workers=4) as pool:
        rows = list(pool.map(lambda i: clone_.transform([[i, 0, 1]]), range(16)))
    np.testing.assert_array_equal(np.vstack(rows), [[2 * i, 0, 2] for i in range(16)])
