"""EarlyFusion: concatenation, scaling, weights, presence flags, missing modalities."""

import numpy as np
import pandas as pd
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from skfusion import EarlyFusion
from skfusion.datasets import load_clothing_reviews


@pytest.fixture(scope="module")
def reviews():
    data = load_clothing_reviews()
    X = data.data.iloc[:600]
    return X, data.target.iloc[:600]


def spec():
    return [
        ("text", TfidfVectorizer(min_df=2), "Review Text"),
        ("title", TfidfVectorizer(min_df=2), "Title"),
        ("tab", StandardScaler(), ["Age", "Rating", "Positive Feedback Count"]),
    ]


def test_missing_titles_at_fit_and_predict(reviews):
    X, y = reviews
    assert X["Title"].isna().any() and X["Review Text"].isna().any()
    model = make_pipeline(EarlyFusion(spec()), LogisticRegression(max_iter=1000)).fit(X, y)
    X_new = X.iloc[:50].copy()
    X_new["Title"] = None  # every row lacks a title at predict time
    X_new.loc[X_new.index[:10], "Review Text"] = ""
    proba = model.predict_proba(X_new)
    assert np.isfinite(proba).all()
    names = list(model[0].get_feature_names_out())
    assert "title__present" in names and "text__present" in names
    assert "tab__present" not in names  # no tabular row was missing at fit ("auto")
    Xt = model[0].transform(X_new).toarray()
    assert (Xt[:, names.index("title__present")] == 0).all()
    assert (Xt[:10, names.index("text__present")] == 0).all()


def test_dense_imputation_uses_training_mean():
    X = pd.DataFrame({"a": [1.0, 3.0, np.nan, 5.0], "b": [0.0, 1.0, 2.0, 3.0]})
    fusion = EarlyFusion([("a", "passthrough", ["a"]), ("b", "passthrough", ["b"])])
    out = fusion.fit_transform(X)
    assert out[2, 0] == pytest.approx(3.0)
    np.testing.assert_array_equal(out[:, 1], [1, 1, 0, 1])
    np.testing.assert_allclose(fusion.fill_values_["a"], [3.0])


def test_block_scaling_balances_modalities():
    rng = np.random.RandomState(0)
    X = pd.DataFrame(rng.randn(200, 11) * 50, columns=[f"c{i}" for i in range(11)])
    fusion = EarlyFusion(
        [("wide", "passthrough", [f"c{i}" for i in range(10)]), ("narrow", "passthrough", ["c10"])],
        scaling="block",
    )
    out = fusion.fit_transform(X)
    wide = out[:, fusion.output_indices_["wide"]]
    narrow = out[:, fusion.output_indices_["narrow"]]
    assert wide.var(axis=0).sum() == pytest.approx(1.0, rel=1e-6)
    assert narrow.var(axis=0).sum() == pytest.approx(1.0, rel=1e-6)


def test_weights_multiply_and_unknown_names_fail():
    X = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [1.0, 2.0, 3.0]})
    fusion = EarlyFusion(
        [("a", "passthrough", ["a"]), ("b", "passthrough", ["b"])], weights={"b": 2.0}
    )
    out = fusion.fit_transform(X)
    np.testing.assert_allclose(out[:, 1], 2 * out[:, 0])
    with pytest.raises(ValueError, match="unknown modalities \\['c'\\]"):
        EarlyFusion([("a", "passthrough", ["a"])], weights={"c": 1.0}).fit(X)


def test_presence_flags_options():
    X = pd.DataFrame({"a": [1.0, 2.0, 3.0]})
    spec_ = [("a", "passthrough", ["a"])]
    assert list(EarlyFusion(spec_, presence_flags="always").fit(X).get_feature_names_out()) == [
        "a__a",
        "a__present",
    ]
    assert list(EarlyFusion(spec_).fit(X).get_feature_names_out()) == ["a__a"]


def test_set_output_pandas(reviews):
    X, _ = reviews
    fusion = EarlyFusion([("tab", StandardScaler(), ["Age", "Rating"])]).set_output(
        transform="pandas"
    )
    out = fusion.fit_transform(X)
    assert list(out.columns) == ["tab__Age", "tab__Rating"]


@pytest.mark.kernels
def test_n_jobs_gives_the_same_result(reviews):
    X, _ = reviews
    a = EarlyFusion(spec(), n_jobs=1).fit_transform(X).toarray()
    b = EarlyFusion(spec(), n_jobs=2).fit_transform(X).toarray()
    np.testing.assert_allclose(a, b)


def test_transform_width_change_is_an_error(reviews):
    X, _ = reviews

    def width(n):
        return lambda v: np.zeros((len(v), n))

    fusion = EarlyFusion([("text", FunctionTransformer(width(2)), "Review Text")]).fit(X)
    fusion.transformers_[0][1].func = width(1)  # a transformer that changed under our feet
    with pytest.raises(ValueError, match="'text': transformer returned 1 features, but 2"):
        fusion.transform(X)
