"""Tests of AttentionFusionClassifier / AttentionFusionRegressor."""

import pickle
import subprocess
import sys
import textwrap
import warnings

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from skfusion import AttentionFusionClassifier, AttentionFusionRegressor, EarlyFusion
from skfusion.datasets import load_clothing_reviews
from skfusion.encoders import TextEncoder
from skfusion.fusion._attention import _PREDICT_BATCH
from skfusion.fusion._attention_net import as_float64, batch_arrays, forward

# Small and fast: a tiny network, few epochs, a high learning rate.
FAST = dict(d_model=16, n_heads=2, n_tokens=1, max_iter=30, batch_size=50, learning_rate_init=1e-2)


@pytest.fixture(autouse=True)
def _quiet_convergence():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def two_modalities():
    return [
        ("left", StandardScaler(), ["a", "b", "c"]),
        ("right", StandardScaler(), ["d", "e", "f"]),
    ]


def xor_data(n, seed=0):
    """The label is the XOR of the signs of one feature in each modality."""
    rng = np.random.RandomState(seed)
    X = pd.DataFrame(rng.normal(size=(n, 6)), columns=list("abcdef"))
    y = np.where((X["a"] > 0) ^ (X["d"] > 0), "yes", "no")
    return X, y


@pytest.fixture(scope="module")
def xor_fitted():
    X, y = xor_data(600)
    clf = AttentionFusionClassifier(two_modalities(), random_state=0, **FAST)
    with warnings.catch_warnings():  # module scope: _quiet_convergence does not cover it
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X.iloc[:400], y[:400])
    return clf, X.iloc[400:], y[400:]


@pytest.mark.kernels
def test_interaction_beats_early_fusion(xor_fitted):
    clf, X_test, y_test = xor_fitted
    X, y = xor_data(600)
    early = make_pipeline(EarlyFusion(two_modalities()), LogisticRegression())
    early.fit(X.iloc[:400], y[:400])
    attention_acc = clf.score(X_test, y_test)
    early_acc = early.score(X_test, y_test)
    assert early_acc < 0.65  # a linear model cannot express the XOR
    assert attention_acc > 0.9
    assert attention_acc > early_acc + 0.25
    assert list(clf.classes_) == ["no", "yes"]
    assert clf.n_iter_ == len(clf.loss_curve_)
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]
    assert clf.validation_loss_curve_ is None
    assert list(clf.modality_names_) == ["left", "right"]


@pytest.mark.kernels
def test_same_random_state_identical_predictions():
    X, y = xor_data(150)
    kw = dict(FAST, max_iter=5, dropout=0.2, modality_dropout=0.3)
    p1 = (
        AttentionFusionClassifier(two_modalities(), random_state=3, **kw).fit(X, y).predict_proba(X)
    )
    p2 = (
        AttentionFusionClassifier(two_modalities(), random_state=3, **kw).fit(X, y).predict_proba(X)
    )
    p3 = (
        AttentionFusionClassifier(two_modalities(), random_state=4, **kw).fit(X, y).predict_proba(X)
    )
    # Exact: the same float operations in the same order, in one process with one thread count
    # (torch's CPU kernels are run-to-run deterministic), so equal bits on any CPU.
    np.testing.assert_array_equal(p1, p2)
    assert np.abs(p1 - p3).max() > 1e-4  # another seed trains another network


def test_missing_modality_at_predict(xor_fitted):
    clf, X_test, _ = xor_fitted
    X = X_test.iloc[:6].copy()
    X.loc[X.index[:3], ["d", "e", "f"]] = np.nan  # rows 0-2: "right" missing
    X.loc[X.index[3], ["a", "b", "c"]] = np.nan  # row 3: "left" missing
    proba = clf.predict_proba(X)
    assert np.isfinite(proba).all()
    # float64 softmax: each row's sum is 1 up to a few float64 ulps
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    W = clf.attention_weights(X)
    assert W.shape == (6, 2, 2)
    # A present query modality: weights over the present modalities sum to 1.
    # Exact: with a single valid key the softmax is exp(0) / exp(0), and masked keys get
    # exp(...) * 0; the means over heads and tokens of exact 1s and 0s are exact.
    np.testing.assert_array_equal(W[:3, 0, 0], 1.0)  # only "left" left: it attends to itself
    np.testing.assert_array_equal(W[:3, 0, 1], 0.0)
    assert np.isnan(W[:3, 1]).all()  # "right" is missing: no query row
    np.testing.assert_array_equal(W[3, 1], [0.0, 1.0])
    assert np.isnan(W[3, 0]).all()
    # float64 attention shares: sums of two softmax terms, 1 up to a few float64 ulps
    np.testing.assert_allclose(W[4:].sum(axis=2), 1.0, rtol=1e-12)
    assert (W[4:] > 0).all()  # both present: each attends to the other as well
    # Without the partner modality the XOR is undecidable: the model should not be sure.
    assert np.abs(proba[:3, 1] - 0.5).max() < np.abs(clf.predict_proba(X_test)[:, 1] - 0.5).max()


def test_missing_modality_during_fit():
    X, y = xor_data(200, seed=1)
    X.loc[X.index[:40], ["d", "e", "f"]] = np.nan
    X.loc[X.index[40:60], ["a", "b", "c"]] = np.nan
    clf = AttentionFusionClassifier(two_modalities(), random_state=0, **dict(FAST, max_iter=3))
    proba = clf.fit(X, y).predict_proba(X)
    assert np.isfinite(proba).all()
    assert np.isfinite(clf.loss_curve_).all()


def test_persisted_model_predicts_without_torch(xor_fitted, tmp_path):
    clf, X_test, _ = xor_fitted
    path = tmp_path / "model.joblib"
    joblib.dump(clf, path)
    X_test.to_csv(tmp_path / "X.csv", index=False)
    np.save(tmp_path / "expected.npy", clf.predict_proba(X_test))
    script = textwrap.dedent(f"""
        import sys
        import importlib.abc

        class BlockTorch(importlib.abc.MetaPathFinder):
            # `sys.modules["torch"] = None` would also block torch, but scipy's array-API
            # helpers then crash on `getattr(None, "Tensor")` before skfusion is reached.
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is not installed here")

        sys.meta_path.insert(0, BlockTorch())
        try:
            import torch
        except ImportError:
            pass
        else:
            raise AssertionError("torch should not import")
        import joblib, numpy as np, pandas as pd
        model = joblib.load({str(path)!r})
        X = pd.read_csv({str(tmp_path / "X.csv")!r})
        proba = model.predict_proba(X)
        # exact: the same weights and rows (CSV text round-trips the floats), the same
        # batch, CPU and thread count
        np.testing.assert_array_equal(proba, np.load({str(tmp_path / "expected.npy")!r}))
        weights = model.attention_weights(X)
        assert weights.shape == (len(X), 2, 2)
        assert not any(name == "torch" or name.startswith("torch.") for name in sys.modules)
        print("OK", model.predict(X.iloc[:3]).tolist())
        """)
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("OK")


def test_pickle_round_trip_has_no_torch_objects(xor_fitted):
    clf, X_test, _ = xor_fitted
    assert all(isinstance(w, np.ndarray) and w.dtype == np.float32 for w in clf._weights.values())
    clone = pickle.loads(pickle.dumps(clf))
    # exact: pickling keeps the float32 weights bit for bit, and the forward pass is the same
    np.testing.assert_array_equal(clone.predict_proba(X_test), clf.predict_proba(X_test))


def _subsets(n, rng):
    """Batches that split, shuffle and regroup ``range(n)``: single rows, pairs, odd sizes, a
    permutation, and, for large ``n``, the predict-time chunking boundary."""
    rows = np.arange(n)
    yield rows[:1]
    yield rows[n // 2 : n // 2 + 2]
    yield rng.permutation(n)
    yield rows[::-1][:7]
    for chunk in np.array_split(rng.permutation(n), 5):
        yield np.sort(chunk)


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.kernels
def test_a_row_scores_the_same_in_any_batch(task):
    """sklearn's subset and sample-order invariance, far tighter than its checks ask.

    Inference runs in float64: the batch only changes how BLAS blocks its products and how
    numpy orders its sums, which moves a float64 result by a few ulps. Measured on a 2-core
    AMD EPYC, 1 and 2 threads: at most 2e-16 relative on probabilities and 6e-16 on
    regression targets, attention weights equal bit for bit; with float32 inference the same
    test gave 1e-7 and 2.5e-7 (sklearn's common checks, 1.1e-5). ``rtol=1e-12`` keeps three
    orders of magnitude of headroom for other CPUs and thread counts, and fails on a return
    to float32 accumulation.
    """
    rng = np.random.RandomState(0)
    n = _PREDICT_BATCH + 44  # predict splits this into two chunks
    X = pd.DataFrame(rng.normal(size=(n, 6)) * 3, columns=list("abcdef"))
    if task == "classification":
        y = rng.randint(0, 3, n)
        est = AttentionFusionClassifier(two_modalities(), random_state=0, **dict(FAST, max_iter=3))
        predict = est.predict_proba
    else:
        y = 10.0 * X["a"] * X["d"] + rng.normal(size=n)
        est = AttentionFusionRegressor(two_modalities(), random_state=0, **dict(FAST, max_iter=3))
        predict = est.predict
    est.fit(X, y)
    full = predict(X)
    weights = est.attention_weights(X)
    # outputs near 0 (tiny probabilities, targets near 0) get the absolute part of the bound
    atol = 1e-12 * np.abs(full).max()
    for rows in _subsets(n, rng):
        np.testing.assert_allclose(predict(X.iloc[rows]), full[rows], rtol=1e-12, atol=atol)
        np.testing.assert_allclose(
            est.attention_weights(X.iloc[rows]), weights[rows], rtol=1e-12, atol=1e-12
        )


@pytest.mark.kernels
def test_numpy_forward_matches_torch(xor_fitted):
    """The float64 numpy forward pass of predict computes what torch trained in float32."""
    import torch
    from sklearn.externals.array_api_compat import torch as xp_torch

    clf, X_test, _ = xor_fitted
    encoded = clf._encode(X_test)
    data = clf._network_data(encoded.blocks, encoded.presence)
    rows = np.arange(50)
    kw = dict(n_heads=clf.n_heads, n_layers=clf.n_layers)
    inputs64, valid64, pres64 = batch_arrays(data, rows, data["present"][rows], dtype=np.float64)
    ref, _ = forward(as_float64(clf._weights), inputs64, valid64, pres64, xp=np, **kw)
    # predict's path is this one: exact, the same 50-row batch through the same code
    np.testing.assert_array_equal(clf._logits(clf._encode(X_test.iloc[:50]))[0], ref)
    inputs, valid, pres = batch_arrays(data, rows, data["present"][rows])
    to_t = torch.from_numpy
    got, _ = forward(
        {k: to_t(v) for k, v in clf._weights.items()},
        [to_t(a) for a in inputs],
        [to_t(v) for v in valid],
        to_t(pres),
        xp=xp_torch,
        **kw,
    )
    # torch runs in float32: its logits (magnitude up to ~5 here) carry the rounding of a few
    # chained float32 products and sums, 1.4e-6 at most on the AMD EPYC this was measured on.
    # atol=1e-5 leaves room for other CPUs' kernels (FMA or not, other blockings); a wrong
    # weight, mask or layout moves logits by 0.1 or more.
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-4, atol=1e-5)


def test_regressor_learns_interaction():
    rng = np.random.RandomState(0)
    X = pd.DataFrame(rng.normal(size=(500, 6)), columns=list("abcdef"))
    y = 10.0 * X["a"] * X["d"] + 3.0
    reg = AttentionFusionRegressor(two_modalities(), random_state=0, **FAST)
    reg.fit(X.iloc[:400], y.iloc[:400])
    assert reg.score(X.iloc[400:], y.iloc[400:]) > 0.7
    pred = reg.predict(X.iloc[400:])
    assert pred.shape == (100,) and np.isfinite(pred).all()


def test_sample_weight():
    X, y = xor_data(200, seed=2)
    kw = dict(FAST, max_iter=8)
    base = AttentionFusionClassifier(two_modalities(), random_state=0, **kw)
    p_none = base.fit(X, y).predict_proba(X)
    p_ones = base.fit(X, y, sample_weight=np.ones(len(y))).predict_proba(X)
    # exact: None becomes a vector of ones, so both fits run the same float operations
    np.testing.assert_array_equal(p_none, p_ones)
    # Weighting one class up moves the predictions towards it.
    w = np.where(y == "yes", 20.0, 1.0)
    p_weighted = base.fit(X, y, sample_weight=w).predict_proba(X)
    assert p_weighted[:, 1].mean() > p_none[:, 1].mean() + 0.1
    with pytest.raises(ValueError, match="sample_weight"):
        base.fit(X, y, sample_weight=np.ones(5))


def test_early_stopping_keeps_best_validation_epoch(capsys):
    X, y = xor_data(300, seed=3)
    clf = AttentionFusionClassifier(
        two_modalities(),
        random_state=0,
        early_stopping=True,
        validation_fraction=0.2,
        n_iter_no_change=3,
        verbose=1,
        **dict(FAST, max_iter=200, learning_rate_init=0.05),
    ).fit(X, y)
    assert clf.n_iter_ < 200
    assert len(clf.validation_loss_curve_) == clf.n_iter_
    assert clf.best_loss_ == min(clf.validation_loss_curve_)  # the same float, picked
    out = capsys.readouterr().out
    assert "validation loss" in out and "Stopping" in out


def test_fit_errors():
    X, y = xor_data(60)
    with pytest.raises(ValueError, match="multiple of n_heads"):
        AttentionFusionClassifier(two_modalities(), d_model=10, n_heads=4).fit(X, y)
    with pytest.raises(ValueError, match="unknown modalities"):
        AttentionFusionClassifier(two_modalities(), use_sequences=["nope"]).fit(X, y)
    with pytest.raises(ValueError, match="has no transform_sequence"):
        AttentionFusionClassifier(two_modalities(), use_sequences=["left"]).fit(X, y)
    X_missing = X.copy()
    X_missing[["d", "e", "f"]] = np.nan
    with pytest.raises(ValueError, match="missing .* in every one of the 60 rows"):
        AttentionFusionClassifier(two_modalities()).fit(X_missing, y)
    with pytest.raises(ValueError, match="only one class"):
        AttentionFusionClassifier(two_modalities()).fit(X, np.ones(60))
    with pytest.raises(ValueError, match="leaves no training or no validation row"):
        AttentionFusionClassifier(
            two_modalities(), early_stopping=True, validation_fraction=0.99
        ).fit(X.iloc[:2], ["no", "yes"])
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            AttentionFusionClassifier(two_modalities(), device="cuda", max_iter=1).fit(X, y)
    fitted = AttentionFusionClassifier(two_modalities(), random_state=0, **dict(FAST, max_iter=1))
    fitted.fit(X, y)
    with pytest.raises(ValueError, match="X has no column 'd'"):
        fitted.predict(X.drop(columns=["d"]))


def test_fusion_classifier_attention_in_grid_search():
    from sklearn.model_selection import GridSearchCV

    from skfusion import FusionClassifier

    X, y = xor_data(240, seed=4)
    clf = FusionClassifier(two_modalities(), **dict(FAST, random_state=0, max_iter=20))
    search = GridSearchCV(clf, {"fusion": ["early", "attention"]}, cv=2).fit(X, y)
    assert search.best_params_["fusion"] == "attention"
    scores = search.cv_results_["mean_test_score"]
    assert scores[1] > scores[0] + 0.2
    best = search.best_estimator_
    assert isinstance(best.estimator_, AttentionFusionClassifier)
    assert best.estimator_.random_state == 0
    assert best.predict_proba(X.iloc[:4]).shape == (4, 2)


@pytest.fixture(scope="module")
def reviews():
    # the copy shipped with skfusion: a user's clone has no ../shared next to it
    df = load_clothing_reviews().frame.iloc[:600]
    short = df["Review Text"].str.len() < 160  # short texts keep the encoding fast
    return df[short].iloc[:80].reset_index(drop=True)


@pytest.mark.slow
@pytest.mark.kernels
def test_text_sequences_on_real_reviews(reviews):
    """Token sequences of real reviews (TextEncoder) with their padding mask, plus tabular."""
    df = reviews
    modalities = [
        ("text", TextEncoder(), "Review Text"),
        ("tab", StandardScaler(), ["Age", "Rating", "Positive Feedback Count"]),
        ("cat", OneHotEncoder(handle_unknown="ignore"), ["Department Name"]),
    ]
    clf = AttentionFusionClassifier(
        modalities, use_sequences=True, random_state=0, **dict(FAST, max_iter=10)
    )
    y = df["Recommended IND"].to_numpy()
    clf.fit(df.iloc[:60], y[:60])
    assert clf._sequence == [True, False, False]  # only the text encoder gives sequences
    test = df.iloc[60:].copy()
    test.loc[test.index[0], "Review Text"] = None  # a missing text
    proba = clf.predict_proba(test)
    assert np.isfinite(proba).all()
    W = clf.attention_weights(test)
    assert W.shape == (len(test), 3, 3)
    assert np.isnan(W[0, 0]).all()
    # float64 attention shares: 1 up to a few float64 ulps
    np.testing.assert_allclose(np.nansum(W[1:], axis=2), 1.0, rtol=1e-12)
    # Padding is masked: a row scores the same alone as in a batch padded to a longer text.
    longest = test["Review Text"].str.len().idxmax()
    short = test["Review Text"].str.len().idxmin()
    alone = clf.predict_proba(test.loc[[short]])
    with_long = clf.predict_proba(test.loc[[short, longest]])[:1]
    # Not exact: the token embeddings come from ONNX Runtime in float32, and a batch padded
    # to another length runs other shapes through its kernels, which may round differently
    # by ~1e-7 relative on some CPUs (here they were equal bit for bit). The network adds no
    # batch dependence of its own (float64). A padding token leaking into the attention
    # would change the pooled text vector, not its last bits: 1e-6 on a probability tells
    # the two apart.
    np.testing.assert_allclose(alone, with_long, rtol=0, atol=1e-6)
    assert clf.score(test.iloc[1:], y[61:]) >= 0.6


def test_fusion_regressor_attention_and_sequences_flag_without_sequences():
    from skfusion import FusionRegressor

    X, _ = xor_data(120, seed=5)
    y = X["a"] * X["d"]
    reg = FusionRegressor(
        two_modalities(),
        fusion="attention",
        **dict(FAST, random_state=0, max_iter=3, use_sequences=True),
    )
    pred = reg.fit(X, y).predict(X.iloc[:7])
    assert isinstance(reg.estimator_, AttentionFusionRegressor)
    assert reg.estimator_._sequence == [False, False]  # no transformer has transform_sequence
    assert pred.shape == (7,) and np.isfinite(pred).all()


def test_rows_with_every_modality_missing_train_and_predict():
    # modality dropout must not pick from an empty set when a row has nothing present
    rng = np.random.RandomState(0)
    X = pd.DataFrame(rng.randn(80, 2), columns=["a", "b"])
    X.loc[:9, ["a", "b"]] = np.nan
    y = (X["a"].fillna(0) > 0).astype(int)
    clf = AttentionFusionClassifier(
        [("tab", "passthrough", ["a", "b"])], modality_dropout=0.5, max_iter=5, random_state=0
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    assert np.isfinite(clf.predict_proba(X)).all()
