"""The per-modality engine shared by every fusion estimator: ``_encode``/``_predict_encoded``,
columns by name, read-only prediction (threads), verbose output, one loop over modalities."""

# SPDX-License-Identifier: BSD-3-Clause

import ast
import pathlib
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import StandardScaler

import skfusion
import skfusion.fusion
from skfusion import (
    AttentionFusionClassifier,
    AttentionFusionRegressor,
    EarlyFusion,
    FusionClassifier,
    FusionRegressor,
    LateFusionClassifier,
    LateFusionRegressor,
)
from skfusion._progress import wants_progress
from skfusion.datasets import load_clothing_reviews
from skfusion.fusion._base import EncodedModalities

FAST = dict(d_model=8, n_heads=2, n_tokens=1, max_iter=5, random_state=0)


@pytest.fixture(scope="module")
def reviews():
    data = load_clothing_reviews()
    X = data.data.iloc[:240][["Review Text", "Title", "Age", "Rating"]].copy()
    return X, data.target.iloc[:240].to_numpy()


def text_spec():
    return [
        ("text", TfidfVectorizer(min_df=2), "Review Text"),
        ("title", TfidfVectorizer(min_df=2), "Title"),
        ("tab", StandardScaler(), ["Age", "Rating"]),
    ]


def dense_spec(hash_embedder):
    # attention fusion takes dense features; the hash embedder is a stateless "encoder"
    return [
        ("text", hash_embedder(dim=6), "Review Text"),
        ("title", hash_embedder(dim=4), "Title"),
        ("tab", StandardScaler(), ["Age", "Rating"]),
    ]


def _cases(hash_embedder):
    """(estimator, methods) for every strategy and the dispatchers."""
    return [
        (EarlyFusion(text_spec()), ["transform"]),
        (LateFusionClassifier(text_spec(), cv=3),
         ["predict", "predict_proba", "decision_function", "transform"]),
        (LateFusionClassifier(dense_spec(hash_embedder), cv=3), ["predict_proba", "transform"]),
        (LateFusionRegressor(text_spec(), cv=3), ["predict", "transform"]),
        (AttentionFusionClassifier(dense_spec(hash_embedder), **FAST),
         ["predict", "predict_proba"]),
        (AttentionFusionRegressor(dense_spec(hash_embedder), **FAST), ["predict"]),
        (FusionClassifier(text_spec()), ["predict", "predict_proba", "decision_function"]),
        (FusionClassifier(text_spec(), fusion="late", cv=3), ["predict", "predict_proba"]),
        (FusionClassifier(dense_spec(hash_embedder), fusion="attention", **FAST),
         ["predict_proba"]),
        (FusionRegressor(text_spec(), fusion="late", cv=3), ["predict"]),
    ]


def _columns(spec, name):
    [columns] = [c for n, _, c in spec if n == name]
    return [columns] if isinstance(columns, str) else list(columns)


def _dense(a):
    return a.toarray() if hasattr(a, "toarray") else np.asarray(a)


@pytest.mark.parametrize("case", range(10))
def test_predict_encoded_matches_predict_with_modality_dropped_or_permuted(
    case, reviews, hash_embedder
):
    """The engine contract: encode once, then drop / permute a modality without re-encoding."""
    X, y = reviews
    est, methods = _cases(hash_embedder)[case]
    y_fit = y.astype(float) if "Regressor" in type(est).__name__ else y
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # 5 epochs are on purpose
        est.fit(X, y_fit)
    X_new = X.iloc[:50]
    encoded = est._encode(X_new)
    assert isinstance(encoded, EncodedModalities)
    assert encoded.names == ("text", "title", "tab") and encoded.n_samples == 50
    # the title is missing in some rows, and the presence says so
    np.testing.assert_array_equal(encoded.presence[:, 1], X_new["Title"].notna().to_numpy())
    rng = np.random.RandomState(0)
    spec = est.modalities
    for method in methods:
        # Exact where the same numbers go through the same code; a float tolerance where the
        # reference reorders rows (a row's output must not depend on its neighbours, but BLAS
        # may sum a batch differently): 1e-10 is far below any real change (>1e-3).
        expected = getattr(est, method)(X_new)
        np.testing.assert_array_equal(_dense(est._predict_encoded(encoded, method)),
                                      _dense(expected))
        for name in encoded.names:
            cols = _columns(spec, name)
            X_none = X_new.copy()
            X_none[cols] = None
            np.testing.assert_allclose(
                _dense(est._predict_encoded(encoded.drop(name), method)),
                _dense(getattr(est, method)(X_none)), rtol=0, atol=1e-10,
            )
            perm = rng.permutation(50)
            X_perm = X_new.copy()
            X_perm[cols] = X_new[cols].to_numpy()[perm]
            np.testing.assert_allclose(
                _dense(est._predict_encoded(encoded.permute(name, perm), method)),
                _dense(getattr(est, method)(X_perm)), rtol=0, atol=1e-10,
            )
        rows = [5, 1, 1, 30]
        np.testing.assert_allclose(
            _dense(est._predict_encoded(encoded.take(rows), method)),
            _dense(getattr(est, method)(X_new.iloc[rows])), rtol=0, atol=1e-10,
        )
    with pytest.raises(ValueError, match="supports method"):
        est._predict_encoded(encoded, "score_samples")


def test_encoded_modalities_never_change_in_place():
    enc = EncodedModalities(
        ["a", "b"], [np.arange(6.0).reshape(3, 2), (np.ones((3, 2, 1)), np.ones((3, 2), bool))],
        np.ones((3, 2), dtype=bool),
    )
    before = [enc.blocks[0].copy(), enc.presence.copy()]
    dropped, permuted, taken = enc.drop("a"), enc.permute("b", [2, 1, 0]), enc.take([True,
                                                                                     False, True])
    np.testing.assert_array_equal(enc.blocks[0], before[0])
    np.testing.assert_array_equal(enc.presence, before[1])
    assert not dropped.presence[:, 0].any() and dropped.presence[:, 1].all()
    assert permuted.blocks[0] is enc.blocks[0]  # the other modality is shared, untouched
    assert taken.n_samples == 2 and taken.blocks[1][1].shape == (2, 2)
    with pytest.raises(KeyError, match="No modality 'c'"):
        enc.drop("c")


@pytest.mark.parametrize(
    "make",
    [
        lambda: EarlyFusion(text_spec()),
        lambda: LateFusionClassifier(text_spec(), cv=3),
        lambda: FusionClassifier(text_spec()),
    ],
)
def test_columns_are_selected_by_name(make, reviews):
    X, y = reviews
    est = make().fit(X, y)
    method = "transform" if isinstance(est, EarlyFusion) else "predict_proba"
    expected = _dense(getattr(est, method)(X.iloc[:30]))
    shuffled = X.iloc[:30][["Rating", "Title", "Age", "Review Text"]].assign(extra=1.0)
    # exact: the same columns reach the same transformers
    np.testing.assert_array_equal(_dense(getattr(est, method)(shuffled)), expected)
    with pytest.raises(ValueError, match="X has no column 'Title', which modality 'title'"):
        getattr(est, method)(X.iloc[:30].drop(columns="Title"))


@pytest.mark.parametrize(
    "make",
    [
        lambda h: EarlyFusion(text_spec()),
        lambda h: LateFusionClassifier(text_spec(), cv=3),
        lambda h: FusionClassifier(text_spec(), fusion="late", cv=3),
        lambda h: AttentionFusionClassifier(dense_spec(h), **FAST),
    ],
)
@pytest.mark.kernels
def test_prediction_writes_nothing_and_threads_agree(make, reviews, hash_embedder):
    """4 threads scoring one fitted model give the serial result; prediction writes no state."""
    X, y = reviews
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = make(hash_embedder).fit(X, y)
    method = "transform" if isinstance(est, EarlyFusion) else "predict_proba"
    state = dict(vars(est))
    chunks = [X.iloc[i * 60:(i + 1) * 60] for i in range(4)]
    serial = [_dense(getattr(est, method)(c)) for c in chunks]
    assert {k: id(v) for k, v in vars(est).items()} == {k: id(v) for k, v in state.items()}
    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            threaded = list(pool.map(lambda c: _dense(getattr(est, method)(c)), chunks))
            for got, want in zip(threaded, serial):
                np.testing.assert_array_equal(got, want)  # same code, same numbers
    assert {k: id(v) for k, v in vars(est).items()} == {k: id(v) for k, v in state.items()}


def test_verbose_prints_each_modality_stage(reviews, capsys):
    X, y = reviews
    EarlyFusion(text_spec(), verbose=1).fit(X, y)
    out = capsys.readouterr().out
    assert "[EarlyFusion]" in out
    assert f"(2 of 3) fitting title on {X['Title'].notna().sum()} rows" in out
    LateFusionClassifier(text_spec(), cv=3, verbose=0).fit(X, y)
    assert capsys.readouterr().out == ""


class ConfigSpy(TransformerMixin, BaseEstimator):
    """Records whether an encoder fitted here would draw its progress bar."""

    def fit(self, X, y=None):
        self.show_progress_ = wants_progress(0)
        return self

    def transform(self, X):
        return np.asarray(X, dtype=float)


@pytest.mark.parametrize("verbose", [0, 1])
def test_verbose_turns_the_encoders_progress_bars_on(reviews, verbose):
    X, y = reviews
    with skfusion.config_context(show_progress=False):
        fusion = EarlyFusion([("age", ConfigSpy(), ["Age"])], verbose=verbose).fit(X, y)
        assert skfusion.get_config()["show_progress"] is False  # restored afterwards
    assert fusion.named_transformers_["age"].show_progress_ is bool(verbose)


@pytest.mark.kernels
def test_n_jobs_over_modalities_gives_the_same_result(reviews):
    X, y = reviews
    one = LateFusionClassifier(text_spec(), cv=3).fit(X, y).predict_proba(X.iloc[:40])
    two = LateFusionClassifier(text_spec(), cv=3, n_jobs=2).fit(X, y).predict_proba(X.iloc[:40])
    np.testing.assert_array_equal(two, one)  # threads run the same code on the same data


def test_one_per_modality_loop_in_fusion():
    """Only the engine (``_fit_each`` and ``_encode_checked``) loops over modalities with
    joblib; the strategy files call it. Counted in the source, so a second loop fails here."""
    calls = {}
    for path in pathlib.Path(skfusion.fusion.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Parallel":
                calls.setdefault(path.name, []).append(node.lineno)
    assert list(calls) == ["_base.py"] and len(calls["_base.py"]) == 2, calls


def test_dropped_modality_needs_no_column_and_is_not_encoded(reviews):
    X, y = reviews
    spec = text_spec()[2:] + [("title", "drop", "Title")]
    for est in (EarlyFusion(spec), LateFusionClassifier(spec, cv=3)):
        est.fit(X, y)
        encoded = est._encode(X.drop(columns="Title"))  # the dropped column may be absent
        assert encoded.names == ("tab",)
