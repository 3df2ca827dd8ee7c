"""skfusion.dump / skfusion.load: both formats, the sidecar, hash checks, trusted types, and
that every skfusion estimator and encoder goes through skops after it has scored."""

# SPDX-License-Identifier: BSD-3-Clause

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pandas as pd
import pytest
from onnx import TensorProto, helper
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import skfusion
from skfusion import (
    AttentionFusionClassifier,
    AttentionFusionRegressor,
    EarlyFusion,
    FusionClassifier,
    FusionRegressor,
    LateFusionClassifier,
    LateFusionRegressor,
)
from skfusion.datasets import load_clothing_reviews
from skfusion.encoders import ArrayEncoder, OnnxEncoder, TextEncoder
from skfusion.exceptions import ModelFileError, UntrustedTypesError


class Doubler(TransformerMixin, BaseEstimator):
    """A user's own transformer: a type that skops files do not trust by default."""

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return np.asarray(X, dtype=float) * 2


@pytest.fixture(scope="module")
def reviews():
    data = load_clothing_reviews()
    return data.data.iloc[:160], data.target.iloc[:160], data.data.iloc[400:460]


@pytest.fixture(scope="module")
def text_model(reviews, tmp_path_factory):
    """A fitted text + tabular pipeline that has scored (its ONNX session is live)."""
    X, y, X_new = reviews
    spec = [
        ("title", TextEncoder(device="cpu"), "Title"),
        ("tab", StandardScaler(), ["Age", "Rating"]),
    ]
    model = make_pipeline(EarlyFusion(spec), LogisticRegression(max_iter=500)).fit(X, y)
    return model, model.predict_proba(X_new)


@pytest.mark.parametrize("suffix", [".skops", ".joblib"])
def test_round_trip_gives_the_same_predictions_and_a_sidecar(text_model, reviews, tmp_path, suffix):
    model, expected = text_model
    path = tmp_path / f"model{suffix}"
    digest = skfusion.dump(model, path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    # sha256sum's format, so that `sha256sum -c model.skops.sha256` checks the file
    assert (tmp_path / f"model{suffix}.sha256").read_text() == f"{digest}  model{suffix}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"model{suffix}", f"model{suffix}.sha256"]
    loaded = skfusion.load(path, sha256=digest)
    # same process, same ONNX Runtime settings, same batches: bit-identical
    np.testing.assert_array_equal(loaded.predict_proba(reviews[2]), expected)


def test_skops_dump_after_scoring_does_not_kill_the_interpreter(tmp_path):
    # skops' dump of an object that holds an ONNX Runtime session aborts the process (it does
    # not raise), so this runs in a subprocess and checks its exit status.
    script = textwrap.dedent(
        f"""
        import numpy as np, skfusion
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from skfusion import EarlyFusion
        from skfusion.datasets import load_clothing_reviews
        from skfusion.encoders import TextEncoder
        data = load_clothing_reviews()
        X, y = data.data.iloc[:60], data.target.iloc[:60]
        model = make_pipeline(EarlyFusion([("text", TextEncoder(device="cpu"), "Review Text")]),
                              LogisticRegression()).fit(X, y)
        expected = model.predict_proba(X)  # the sessions are live now
        skfusion.dump(model, {str(tmp_path / "model.skops")!r})
        np.save({str(tmp_path / "expected.npy")!r}, expected)
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    loaded = skfusion.load(tmp_path / "model.skops")
    X = load_clothing_reviews().data.iloc[:60]
    np.testing.assert_allclose(
        # another process: a text's embedding may differ in its last float32 bits
        loaded.predict_proba(X), np.load(tmp_path / "expected.npy"), rtol=1e-6, atol=1e-7
    )


def test_live_session_is_refused_with_an_error_not_a_crash(tmp_path):
    script = textwrap.dedent(
        f"""
        import skfusion
        from skfusion.encoders import TextEncoder
        from sklearn.preprocessing import FunctionTransformer
        encoder = TextEncoder(device="cpu").fit(["a b"])
        holder = FunctionTransformer()
        holder.session_ = encoder._onnx_session().session  # a live InferenceSession
        try:
            skfusion.dump(holder, {str(tmp_path / "bad.skops")!r})
        except TypeError as exc:
            print("refused:", exc)
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "refused: cannot save this model in the skops format" in run.stdout
    assert "onnxruntime" in run.stdout
    assert not (tmp_path / "bad.skops").exists()


def _tabular(n=60, seed=0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 4)), columns=["a", "b", "c", "d"])
    X.loc[::7, ["c", "d"]] = np.nan  # a missing modality in some rows
    y = (X["a"] + X["b"].fillna(0) > 0).astype(int)
    return X, y


def _tab_spec():
    return [("ab", StandardScaler(), ["a", "b"]), ("cd", StandardScaler(), ["c", "d"])]


FUSION = {
    "early": lambda: make_pipeline(EarlyFusion(_tab_spec()), LogisticRegression()),
    "late": lambda: LateFusionClassifier(_tab_spec(), cv=3),
    "late_regressor": lambda: LateFusionRegressor(_tab_spec(), cv=3),
    "attention": lambda: AttentionFusionClassifier(_tab_spec(), max_iter=5, random_state=0),
    "attention_regressor": lambda: AttentionFusionRegressor(
        _tab_spec(), max_iter=5, random_state=0
    ),
    "dispatch_late": lambda: FusionClassifier(_tab_spec(), fusion="late", cv=3),
    "dispatch_regressor": lambda: FusionRegressor(
        _tab_spec(), fusion="early", estimator=LinearRegression()
    ),
}


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("name", list(FUSION))
def test_fusion_estimators_go_through_skops(name, tmp_path):
    X, y = _tabular()
    model = FUSION[name]().fit(X, y if "regressor" not in name else y.astype(float))
    method = "predict" if "regressor" in name else "predict_proba"
    expected = getattr(model, method)(X)
    skfusion.dump(model, tmp_path / "m.skops")
    loaded = skfusion.load(tmp_path / "m.skops")  # default trust: no extra types needed
    np.testing.assert_array_equal(getattr(loaded, method)(X), expected)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("fusion", ["early", "attention"])
def test_all_four_modalities_go_through_skops(mixed_data, mixed_modalities, fusion, tmp_path):
    # TextEncoder, AudioEncoder, ImageEncoder (built-in MobileNetV2) and a tabular scaler,
    # fitted and scored (their ONNX sessions live), saved, loaded with the default trust
    X, y = mixed_data
    params = {"max_iter": 5} if fusion == "attention" else {"cv": 3}
    model = FusionClassifier(mixed_modalities(), fusion=fusion, random_state=0, **params)
    model.fit(X, y)
    with skfusion.config_context(cache=False):  # recompute, do not read the cache
        expected = model.predict_proba(X)
        skfusion.dump(model, tmp_path / "m.skops")
        loaded = skfusion.load(tmp_path / "m.skops")
        np.testing.assert_array_equal(loaded.predict_proba(X), expected)


def test_onnx_and_array_encoders_go_through_skops(tmp_path):
    two = helper.make_tensor("two", TensorProto.FLOAT, [1], [2.0])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], [two],
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx_model.ir_version = 8
    items = [np.arange(3, dtype=np.float32) + i for i in range(5)] + [None]
    for encoder in (OnnxEncoder(onnx_model.SerializeToString(), device="cpu"), ArrayEncoder()):
        expected = encoder.fit(items).transform(items)
        skfusion.dump(encoder, tmp_path / "e.skops")
        loaded = skfusion.load(tmp_path / "e.skops")
        np.testing.assert_array_equal(loaded.transform(items), expected)


def test_a_changed_byte_is_refused(text_model, tmp_path):
    model, _ = text_model
    path = tmp_path / "model.skops"
    digest = skfusion.dump(model, path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=f"not the expected {digest}"):
        skfusion.load(path, sha256=digest)
    with pytest.raises(ModelFileError, match="its sidecar model.skops.sha256 says"):
        skfusion.load(path)  # no hash given: the sidecar catches it
    with pytest.raises(ModelFileError, match="not the expected"):
        skfusion.load(path, sha256="sha256:" + digest.upper())  # both spellings accepted


def test_a_users_own_type_is_refused_until_trusted(reviews, tmp_path):
    X, y, _ = reviews
    model = make_pipeline(Doubler(), LogisticRegression()).fit(X[["Age", "Rating"]], y)
    path = tmp_path / "model.skops"
    skfusion.dump(model, path)
    with pytest.raises(UntrustedTypesError) as info:
        skfusion.load(path)
    name = f"{Doubler.__module__}.Doubler"
    assert info.value.types == [name]
    assert f"trusted=['{name}']" in str(info.value) and f"--trust {name}" in str(info.value)
    loaded = skfusion.load(path, trusted=[name])
    np.testing.assert_array_equal(
        loaded.predict_proba(X[["Age", "Rating"]]), model.predict_proba(X[["Age", "Rating"]])
    )
    assert isinstance(skfusion.load(path, trusted=[Doubler]), type(model))  # a type works too


def test_an_injected_function_is_refused(reviews, tmp_path):
    # an attacker edits a good file: LogisticRegression's C becomes the function os.system,
    # and the sidecar is rewritten to match (only --sha256 from a trusted channel beats that)
    X, y, _ = reviews
    path = tmp_path / "model.skops"
    skfusion.dump(make_pipeline(StandardScaler(), LogisticRegression()).fit(X[["Age"]], y), path)
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    schema = json.loads(members["schema.json"])
    logistic = schema["content"]["content"]["steps"]["content"][1]["content"][1]
    assert logistic["__class__"] == "LogisticRegression"
    attrs = logistic["content"]["content"]
    attrs["C"] = {"__class__": "system", "__module__": "posix", "__loader__": "FunctionNode",
                  "__id__": 999_999, "content": {"module_path": "posix", "function": "system"}}
    members["schema.json"] = json.dumps(schema).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    os.remove(f"{path}.sha256")
    with pytest.raises(UntrustedTypesError, match=r"\['posix.system'\]"):
        skfusion.load(path)


def test_file_errors(tmp_path):
    with pytest.raises(ValueError, match="'.skops'.*'.joblib'"):
        skfusion.dump(LogisticRegression(), tmp_path / "model.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        skfusion.load(tmp_path / "absent.skops")
    (tmp_path / "junk.skops").write_bytes(b"not a zip file")
    with pytest.raises(ModelFileError, match="not a readable skops file"):
        skfusion.load(tmp_path / "junk.skops")
    (tmp_path / "junk.joblib").write_bytes(b"not a pickle")
    with pytest.raises(ModelFileError, match="not a readable joblib file"):
        skfusion.load(tmp_path / "junk.joblib")
    with pytest.raises(ValueError, match="trusted= applies to '.skops' files"):
        skfusion.load(tmp_path / "junk.joblib", trusted=["x.Y"])
    with pytest.raises(ValueError, match="64 hex digits"):
        skfusion.load(tmp_path / "junk.joblib", sha256="abc")


def test_loading_a_skops_text_model_does_not_import_torch(text_model, reviews, tmp_path):
    model, expected = text_model
    skfusion.dump(model, tmp_path / "model.skops")
    reviews[2].to_pickle(tmp_path / "X.pkl")
    script = textwrap.dedent(
        f"""
        import sys, numpy as np, pandas as pd, skfusion
        model = skfusion.load({str(tmp_path / "model.skops")!r})
        np.save({str(tmp_path / "p.npy")!r}, model.predict_proba(pd.read_pickle(
            {str(tmp_path / "X.pkl")!r})))
        print(sorted(m for m in ("torch", "sentence_transformers", "librosa") if m in sys.modules))
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[]"
    # another process: a text's embedding may differ in its last float32 bits
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")
@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_saved_model_gets_the_umask_mode_not_0600(tmp_path, umask):
    # a model file is the user's output: readable as any file they write (the store's own
    # entries stay 0600, tests/test_store.py)
    model = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    old = os.umask(umask)
    try:
        skfusion.dump(model, tmp_path / "model.skops")
    finally:
        os.umask(old)
    for name in ("model.skops", "model.skops.sha256"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
