"""LateFusion: stacking per modality, cv handling, missing modalities, overrides."""

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold
from sklearn.naive_bayes import MultinomialNB
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from skfusion import LateFusionClassifier, LateFusionRegressor
from skfusion.datasets import load_clothing_reviews


@pytest.fixture(scope="module")
def reviews():
    data = load_clothing_reviews()
    return data.data.iloc[:800], data.target.iloc[:800]


def spec():
    return [
        ("text", TfidfVectorizer(min_df=2), "Review Text"),
        ("title", TfidfVectorizer(min_df=2), "Title"),
        ("tab", StandardScaler(), ["Age", "Rating", "Positive Feedback Count"]),
    ]


def test_base_models_train_on_present_rows_only(reviews):
    X, y = reviews
    clf = LateFusionClassifier(spec(), cv=3).fit(X, y)
    n_titles = X["Title"].notna().sum()
    assert clf.named_estimators_["title"][-1].coef_.shape[0] == 1
    # the title model saw exactly the rows with a title
    assert clf.named_estimators_["title"][0].transform(X["Title"].dropna()).shape[0] == n_titles
    assert clf.stack_method_ == ["predict_proba"] * 3
    # meta-features: 3 probabilities + flags for text and title (both had missing rows)
    assert clf.final_estimator_.n_features_in_ == 5


def test_missing_modality_at_predict_time(reviews):
    X, y = reviews
    clf = LateFusionClassifier(spec(), cv=3).fit(X, y)
    X_new = X.iloc[:40].copy()
    X_new["Review Text"] = np.nan
    X_new["Title"] = None
    proba = clf.predict_proba(X_new)
    assert np.isfinite(proba).all()
    # with only the tabular modality left, the prediction follows the rating
    low, high = X_new["Rating"] <= 2, X_new["Rating"] == 5
    assert proba[low.to_numpy(), 1].mean() < proba[high.to_numpy(), 1].mean()


def test_modality_estimators_override_and_stack_method(reviews):
    X, y = reviews
    clf = LateFusionClassifier(
        spec(), modality_estimators={"text": MultinomialNB(), "title": LinearSVC()}, cv=3
    ).fit(X, y)
    assert isinstance(clf.named_estimators_["text"][-1], MultinomialNB)
    assert clf.stack_method_ == ["predict_proba", "decision_function", "predict_proba"]
    with pytest.raises(ValueError, match="unknown modalities \\['photo'\\]"):
        LateFusionClassifier(spec(), modality_estimators={"photo": LinearSVC()}).fit(X, y)
    with pytest.raises(ValueError, match="LinearSVC does not implement predict_proba"):
        LateFusionClassifier(spec(), estimator=LinearSVC(), stack_method="predict_proba").fit(X, y)


def test_passthrough_adds_modality_features(reviews):
    X, y = reviews
    tab = [
        ("tab", StandardScaler(), ["Age", "Rating"]),
        ("fb", StandardScaler(), ["Positive Feedback Count"]),
    ]
    clf = LateFusionClassifier(tab, cv=3, passthrough=True).fit(X, y)
    assert clf.final_estimator_.n_features_in_ == 2 + 3
    assert clf.predict(X.iloc[:5]).shape == (5,)


def test_string_labels_and_multiclass(reviews):
    X, _ = reviews
    y = X["Department Name"].fillna("unknown").to_numpy()
    clf = LateFusionClassifier(spec()[:2], cv=3).fit(X, y)
    assert set(clf.predict(X.iloc[:20])) <= set(clf.classes_)
    assert clf.predict_proba(X.iloc[:20]).shape == (20, len(np.unique(y)))


def test_cv_splitter_and_regressor(reviews):
    X, _ = reviews
    y = X["Rating"].to_numpy(dtype=float)
    reg = LateFusionRegressor(
        [("text", TfidfVectorizer(min_df=2), "Review Text"), ("tab", StandardScaler(), ["Age"])],
        estimator=Ridge(),
        cv=KFold(4, shuffle=True, random_state=0),
    ).fit(X, y)
    pred = reg.predict(X)
    assert np.corrcoef(pred, y)[0, 1] > 0.5
    with pytest.raises(ValueError, match="not available for a regressor"):
        LateFusionRegressor(spec()[2:], stack_method="predict_proba").fit(X, y)


def test_single_class_is_an_error(reviews):
    X, _ = reviews
    with pytest.raises(ValueError, match="only one class"):
        LateFusionClassifier(spec()[2:]).fit(X, np.ones(len(X)))


def test_stateless_transformer_is_encoded_once(reviews):
    X, y = reviews
    calls = []

    from sklearn.preprocessing import FunctionTransformer

    def count(v):
        calls.append(len(v))
        return np.c_[pd.Series(v).fillna("").str.len().to_numpy(dtype=float)]

    clf = LateFusionClassifier(
        [("len", FunctionTransformer(count), "Review Text"), ("tab", StandardScaler(), ["Rating"])],
        cv=5,
    ).fit(X, y)
    assert calls == [X["Review Text"].notna().sum()]  # one pass, not one per fold
    assert clf.score(X, y) > 0.8


def test_passthrough_modality_predicts_without_warnings(reviews):
    X, y = reviews
    clf = LateFusionClassifier(
        [
            ("num", "passthrough", ["Age", "Rating"]),
            ("text", TfidfVectorizer(min_df=2), "Review Text"),
        ],
        cv=3,
    ).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        proba = clf.predict_proba(X.iloc[:20])
    assert np.isfinite(proba).all()
