"""The encoders' one transform template (RawItemEncoderMixin) and their shared names."""

import pathlib
import pickle

import numpy as np
import pandas as pd
import pytest
from onnx import TensorProto, helper
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

import skfusion
from skfusion.encoders import (
    ArrayEncoder,
    AudioEncoder,
    FineTunedTextEncoder,
    ImageEncoder,
    OnnxEncoder,
    TextEncoder,
)
from skfusion.encoders._base import RawItemEncoderMixin, raise_encoding_error
from skfusion.exceptions import EncodingError
from skfusion.storage import cache_clear, estimator_fingerprint

ENCODERS = [ArrayEncoder, AudioEncoder, FineTunedTextEncoder, ImageEncoder, OnnxEncoder,
            TextEncoder]
ENCODED = []  # the items that reached Words._encode_items, in order


class Words(RawItemEncoderMixin, BaseEstimator):
    """A new encoder written as the template asks: how to check an item, how to encode some.

    Items are texts or paths (whose file name is the text); "boom" cannot be encoded.
    """

    def __init__(self, *, on_error="raise", verbose=0):
        self.on_error = on_error
        self.verbose = verbose

    def _skfusion_fingerprint(self):
        return estimator_fingerprint(self, ignore=("on_error", "verbose"))

    def _check_item(self, value):
        if isinstance(value, pathlib.PurePath):
            value = value.name
        if not isinstance(value, str):
            raise TypeError(f"expected a string, got {type(value).__name__}")
        return value.strip()

    def fit(self, X, y=None):
        self._column(X)
        self.n_features_out_ = 2
        return self

    def _encode_items(self, items, bar):
        ENCODED.extend(items)
        rows = np.full((len(items), 2), np.nan, dtype=np.float32)
        for i, text in enumerate(items):
            if text == "boom":
                if self.on_error == "raise":
                    raise_encoding_error(self, i, None, "cannot encode 'boom'", text)
                continue
            rows[i] = len(text), text.count(" ")
        bar.update(len(items))
        return rows


@pytest.fixture(autouse=True)
def empty_cache():
    cache_clear()
    ENCODED.clear()
    with skfusion.config_context(cache=True):
        yield
    cache_clear()


def test_the_template_gives_rows_nan_for_missing_and_caches():
    X = pd.Series(["ab", None, " a b ", float("nan"), pathlib.Path("/x/two words")],
                  index=[10, 11, 12, 13, 14])
    out = Words().fit(X).transform(X)
    assert out.dtype == np.float32 and out.shape == (5, 2)
    np.testing.assert_array_equal(out[[0, 2, 4]], [[2, 0], [3, 1], [9, 1]])
    assert np.isnan(out[[1, 3]]).all()
    assert ENCODED == ["ab", "a b", "two words"]  # checked items; missing ones never
    # the embedding cache passes only what it has not seen to _encode_items
    again = Words().fit(["x"]).transform(["a b", "new one", "ab"])
    assert ENCODED[3:] == ["new one"]
    np.testing.assert_array_equal(again, [[3, 1], [7, 1], [2, 0]])
    with skfusion.config_context(cache=False):
        Words().fit(["x"]).transform(["ab"])
    assert ENCODED[4:] == ["ab"]


def test_an_error_for_an_item_names_its_row_label_and_raw_value():
    X = pd.Series(["fine", None, "  boom "], index=["a", "b", "c"])
    encoder = Words().fit(["x"])
    # the template gave _encode_items the items ["fine", "boom"]: the error of item 1 is
    # re-raised for row 2 of X, with the value as the user gave it
    with pytest.raises(EncodingError, match=r"row 2 \(index 'c'\): cannot encode 'boom' "
                                            r"\(value '  boom '\)") as info:
        encoder.transform(X)
    assert info.value.position == 2 and info.value.label == "c"
    out = Words(on_error="missing").fit(["x"]).transform(X)
    np.testing.assert_array_equal(out[0], [4, 0])
    assert np.isnan(out[1:]).all()


def test_a_bad_item_is_named_by_the_check_hook():
    with pytest.raises(EncodingError, match=r"row 1: expected a string, got int \(value 7\)"):
        Words().fit(["x"]).transform(["ok", 7])
    out = Words(on_error="missing").fit(["x"]).transform(["ok", 7])
    assert np.isnan(out[1]).all() and ENCODED == ["ok"]


def test_the_template_gives_the_encoder_contract():
    with pytest.raises(NotFittedError):
        Words().transform(["a"])
    encoder = Words().fit(["a"])
    assert encoder.get_feature_names_out().tolist() == ["0", "1"]
    frame = Words().set_output(transform="pandas").fit(["a"]).transform(
        pd.Series(["a b", None], index=[5, 6])
    )
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == ["0", "1"]
    assert list(frame.index) == [5, 6]
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(encoder)).transform(["abc"]),
                                  [[3, 0]])
    assert Words().fit(["a"]).transform([]).shape == (0, 2)


def _double_model():
    two = helper.make_tensor("two", TensorProto.FLOAT, [1], [2.0])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])], [two],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


PREPROCESSED = []


def _counting_preprocess(items):
    PREPROCESSED.extend(np.asarray(item).tolist() for item in items)
    return np.stack([np.asarray(item, dtype=np.float32) for item in items])


def test_onnx_encoder_transform_goes_through_the_embedding_cache():
    # OnnxEncoder had a fingerprint but its own transform, which never looked rows up: only
    # the fusion estimators' calls were cached. It now runs the template, as TextEncoder did.
    PREPROCESSED.clear()
    encoder = OnnxEncoder(_double_model(), preprocess=_counting_preprocess, device="cpu")
    encoder.fit([np.array([1.0, 2.0])])
    PREPROCESSED.clear()
    first = encoder.transform([np.array([1.0, 2.0]), None, np.array([3.0, 4.0])])
    second = encoder.transform([np.array([3.0, 4.0]), np.array([5.0, 6.0])])
    np.testing.assert_array_equal(first[[0, 2]], [[2, 4], [6, 8]])
    np.testing.assert_array_equal(second, [[6, 8], [10, 12]])
    assert PREPROCESSED == [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]


def test_array_encoder_is_written_as_hooks_only():
    # no transform, _split or get_feature_names_out of its own: the template's
    for name in ("transform", "_split", "get_feature_names_out"):
        assert name not in vars(ArrayEncoder)
    X = pd.Series([np.eye(2), None, "text"], index=[7, 8, 9])
    encoder = ArrayEncoder().fit(X.iloc[:2])
    with pytest.raises(EncodingError, match=r"row 2 \(index 9\): expected an array"):
        encoder.transform(X)
    with pytest.raises(EncodingError, match=r"row 1: expected an array of shape \(2, 2\)"):
        encoder.transform([np.eye(2), np.ones(3)])


@pytest.mark.parametrize("encoder", ENCODERS)
def test_one_name_for_one_idea(encoder):
    params = encoder._get_param_names()
    assert "quantize" not in params  # a number format is a precision
    assert "output" not in params or encoder is FineTunedTextEncoder  # a kind of value there
    assert ("precision" in params) == (encoder in (TextEncoder, FineTunedTextEncoder,
                                                   ImageEncoder))
    # n_jobs: threads that decode raw files; model runs have their own threads
    assert ("n_jobs" in params) == (encoder in (AudioEncoder, ImageEncoder))
    assert ("output_name" in params) == (encoder in (ImageEncoder, OnnxEncoder))
    for name in ("transform", "_split"):
        assert name not in vars(encoder)


def test_the_output_width_is_n_features_out():
    onnx = OnnxEncoder(_double_model(), device="cpu").fit([[1.0, 2.0]])
    array = ArrayEncoder().fit([np.ones((2, 3))])
    assert onnx.n_features_out_ == 2 and array.n_features_out_ == 6
    assert not hasattr(onnx, "embedding_dim_") and not hasattr(array, "embedding_dim_")


def test_no_pooling_is_flatten_everywhere():
    from sklearn.utils._param_validation import InvalidParameterError

    for encoder in (OnnxEncoder(_double_model(), pooling="none"), ImageEncoder(pooling="none")):
        with pytest.raises(InvalidParameterError, match="pooling"):
            encoder.fit([np.ones(2)])
    OnnxEncoder(_double_model(), pooling="flatten", device="cpu").fit([[1.0, 2.0]])
