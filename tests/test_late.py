"""LateFusion: stacking per modality, cv handling, missing modalities, overrides."""

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
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


class RecordingLR(LogisticRegression):
    """LogisticRegression that keeps the targets of its last fit."""

    def fit(self, X, y, sample_weight=None):
        self.fit_y_ = np.asarray(y).copy()
        return super().fit(X, y, sample_weight=sample_weight)


class RecordingTfidf(TfidfVectorizer):
    """TfidfVectorizer that keeps the documents of its last fit."""

    def fit_transform(self, raw_documents, y=None):
        self.fit_docs_ = list(raw_documents)
        return super().fit_transform(raw_documents, y)


def test_base_models_train_on_present_rows_only(reviews):
    X, y = reviews
    spec = [
        ("text", TfidfVectorizer(min_df=2), "Review Text"),
        ("title", RecordingTfidf(min_df=2), "Title"),
        ("tab", StandardScaler(), ["Age", "Rating", "Positive Feedback Count"]),
    ]
    clf = LateFusionClassifier(spec, estimator=RecordingLR(max_iter=1000), cv=3).fit(X, y)
    has_title = X["Title"].notna().to_numpy()
    assert 0 < has_title.sum() < len(X)  # the test needs rows without a title
    title = clf.named_estimators_["title"]
    # the title's transformer and model saw exactly the rows with a title, in order
    assert title[0].fit_docs_ == X["Title"].dropna().tolist()
    np.testing.assert_array_equal(title[-1].fit_y_, y.to_numpy()[has_title])
    np.testing.assert_array_equal(clf.named_estimators_["tab"][-1].fit_y_, y.to_numpy())
    assert clf.stack_method_ == ["predict_proba"] * 3
    # meta-features: 3 probabilities + flags for text and title (both had missing rows)
    assert clf.final_estimator_.n_features_in_ == 5
    # rows without a title all get the same title meta-feature (its mean prediction)
    meta = clf.transform(X)
    assert np.unique(meta[~has_title, 1]).size == 1
    assert np.unique(meta[has_title, 1]).size > 10


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


def test_transform_and_feature_names_follow_stacking(reviews):
    X, y = reviews
    clf = LateFusionClassifier(spec(), cv=3).fit(X, y)
    meta = clf.transform(X.iloc[:10])
    names = clf.get_feature_names_out()
    assert names.tolist() == [
        "text__predict_proba_1", "title__predict_proba_1", "tab__predict_proba_1",
        "text__present", "title__present",
    ]
    assert meta.shape == (10, 5)
    # the final estimator predicts from exactly these features
    np.testing.assert_array_equal(clf.predict_proba(X.iloc[:10]),
                                  clf.final_estimator_.predict_proba(meta))
    out = clf.set_output(transform="pandas").transform(X.iloc[:10])
    assert list(out.columns) == names.tolist()

    # multiclass: one column per class and modality, decision_function from the final model
    y3 = X["Department Name"].fillna("unknown").to_numpy()
    clf3 = LateFusionClassifier(spec()[:2], estimator=LinearSVC(), cv=3).fit(X, y3)
    k = len(clf3.classes_)
    assert clf3.stack_method_ == ["decision_function"] * 2
    assert clf3.transform(X.iloc[:5]).shape == (5, 2 * k + 2)
    assert clf3.get_feature_names_out()[0] == f"text__decision_function_{clf3.classes_[0]}"
    assert clf3.predict_proba(X.iloc[:5]).shape == (5, k)
    assert clf3.decision_function(X.iloc[:5]).shape == (5, k)
    from sklearn.ensemble import RandomForestClassifier

    no_df = LateFusionClassifier(spec()[2:], final_estimator=RandomForestClassifier(3), cv=3)
    assert not hasattr(no_df.fit(X, y), "decision_function")


def test_stack_method_rules(reviews):
    X, y = reviews
    for method, width in [("predict", 1), ("decision_function", 1), ("predict_proba", 1)]:
        clf = LateFusionClassifier(spec()[2:], stack_method=method, cv=3).fit(X, y)
        assert clf.stack_method_ == [method]
        assert clf.transform(X.iloc[:3]).shape == (3, width)
    reg = LateFusionRegressor(spec()[2:], cv=3).fit(X, X["Rating"].astype(float))
    assert reg.stack_method_ == ["predict"]
    assert reg.get_feature_names_out().tolist() == ["tab__predict"]


def test_cv_prefit_uses_the_fitted_models_as_they_are(reviews):
    X, y = reviews
    first, second = X.iloc[:400], X.iloc[400:]
    y1, y2 = y.iloc[:400], y.iloc[400:]
    tab_cols = ["Age", "Rating", "Positive Feedback Count"]
    scaler = StandardScaler().fit(first[tab_cols])
    tab_model = LogisticRegression().fit(scaler.transform(first[tab_cols]), y1)
    vec = TfidfVectorizer(min_df=2).fit(first["Review Text"].dropna())
    text_model = MultinomialNB().fit(
        vec.transform(first["Review Text"].dropna()), y1[first["Review Text"].notna()]
    )
    clf = LateFusionClassifier(
        [("text", vec, "Review Text"), ("tab", scaler, tab_cols)],
        modality_estimators={"text": text_model, "tab": tab_model},
        cv="prefit",
    ).fit(second, y2)
    assert clf.named_estimators_["tab"][-1] is tab_model  # not cloned, not refitted
    np.testing.assert_array_equal(clf.named_estimators_["tab"][-1].coef_, tab_model.coef_)
    # the meta-feature is the prefit model's prediction
    np.testing.assert_allclose(
        clf.transform(second)[:, 1],
        tab_model.predict_proba(scaler.transform(second[tab_cols]))[:, 1],
    )
    with pytest.raises(Exception, match="not fitted"):
        LateFusionClassifier(spec()[2:], cv="prefit").fit(second, y2)


def test_modality_weights(reviews):
    X, y = reviews
    clf = LateFusionClassifier(spec(), cv=3).fit(X, y)
    weights = clf.modality_weights_
    assert list(weights.index) == ["text", "title", "tab"]
    assert weights.sum() == pytest.approx(1.0)
    coef = np.abs(clf.final_estimator_.coef_).sum(axis=0)[:3]
    np.testing.assert_allclose(weights.to_numpy(), coef / coef.sum())
    assert clf.modality_weights_reason_ is None
    # multiclass: summed over classes
    y3 = X["Department Name"].fillna("unknown").to_numpy()
    clf3 = LateFusionClassifier(spec()[:2], cv=3).fit(X, y3)
    k = len(clf3.classes_)
    coef = np.abs(clf3.final_estimator_.coef_).sum(axis=0)
    expected = np.array([coef[:k].sum(), coef[k:2 * k].sum()])
    np.testing.assert_allclose(clf3.modality_weights_.to_numpy(), expected / expected.sum())
    # a regressor's 1-D coef_
    reg = LateFusionRegressor(spec()[2:] + [("len", StandardScaler(), ["Age"])],
                              final_estimator=LinearRegression(), cv=3)
    reg.fit(X, X["Rating"].astype(float))
    coef = np.abs(reg.final_estimator_.coef_)
    np.testing.assert_allclose(reg.modality_weights_.to_numpy(), coef / coef.sum())
    # no coef_: None, and the reason says why
    from sklearn.ensemble import RandomForestClassifier

    forest = LateFusionClassifier(spec()[2:], final_estimator=RandomForestClassifier(3), cv=3)
    forest.fit(X, y)
    assert forest.modality_weights_ is None
    assert "RandomForestClassifier has no coef_" in forest.modality_weights_reason_


def test_persists_with_skops(reviews, tmp_path):
    import skfusion

    X, y = reviews
    clf = LateFusionClassifier(spec(), cv=3).fit(X, y)
    skfusion.dump(clf, tmp_path / "m.skops")
    loaded = skfusion.load(tmp_path / "m.skops")  # default trust: nothing unknown inside
    np.testing.assert_array_equal(loaded.predict_proba(X.iloc[:20]),
                                  clf.predict_proba(X.iloc[:20]))
    pd.testing.assert_series_equal(loaded.modality_weights_, clf.modality_weights_)


def test_methods_before_fit_follow_the_final_estimator():
    """Before fit, the methods are those of the final estimator fit would train."""
    tab = [("tab", StandardScaler(), ["Age", "Rating"])]
    assert hasattr(LateFusionClassifier(tab), "predict_proba")  # the default final estimator
    no_proba = LateFusionClassifier(tab, final_estimator=LinearSVC())
    assert not hasattr(no_proba, "predict_proba") and hasattr(no_proba, "decision_function")
