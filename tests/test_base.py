"""The modality contract: spec validation, column routing and missing-modality detection."""

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from skfusion import EarlyFusion, FusionClassifier, LateFusionClassifier


@pytest.fixture
def frame():
    return pd.DataFrame(
        {
            "review": ["lovely dress", "too small", None, "", "great fit", "poor fabric"],
            "age": [25.0, 40.0, 33.0, 51.0, 29.0, 62.0],
            "price": [10.0, 20.0, 30.0, 40.0, 50.0, 60.0],
            "dept": ["tops", "dresses", "tops", "jackets", "dresses", "tops"],
        }
    )


ESTIMATOR_FACTORIES = [
    lambda spec: EarlyFusion(spec),
    lambda spec: LateFusionClassifier(spec, cv=2),
    lambda spec: FusionClassifier(spec),
]

Y = np.array([1, 0, 1, 0, 1, 0])


def _fit(make, spec, X):
    est = make(spec)
    return est.fit(X, Y)


@pytest.mark.parametrize("make", ESTIMATOR_FACTORIES)
@pytest.mark.parametrize(
    "spec, error, match",
    [
        ([], ValueError, "non-empty list"),
        ([("tab", StandardScaler())], ValueError, "triple"),
        (
            [("tab", StandardScaler(), ["age"]), ("tab", StandardScaler(), ["price"])],
            ValueError,
            "used twice",
        ),
        ([("", StandardScaler(), ["age"])], ValueError, "invalid name"),
        ([("a__b", StandardScaler(), ["age"])], ValueError, "reserved"),
        ([(3, StandardScaler(), ["age"])], ValueError, "invalid name"),
        (
            [("tab", LogisticRegression(), ["age"])],
            TypeError,
            "does not implement fit and transform",
        ),
        ([("tab", "scale", ["age"])], ValueError, "'passthrough' or 'drop'"),
        ([("tab", StandardScaler(), ["weight"])], ValueError, "'weight', which is not in X"),
        ([("tab", StandardScaler(), [])], ValueError, "selects no columns"),
        ([("tab", StandardScaler(), [7])], ValueError, "position 7"),
        ([("tab", "drop", ["age"])], ValueError, "nothing is left"),
        ([("modalities", StandardScaler(), ["age"])], ValueError, "conflicts"),
    ],
)
def test_invalid_spec_is_a_clear_error(make, spec, error, match, frame):
    with pytest.raises(error, match=match):
        _fit(make, spec, frame)


@pytest.mark.parametrize("make", ESTIMATOR_FACTORIES)
def test_predict_on_X_without_the_columns(make, frame):
    spec = [("text", TfidfVectorizer(), "review"), ("tab", StandardScaler(), ["age", "price"])]
    est = _fit(make, spec, frame)
    method = est.transform if hasattr(est, "transform") else est.predict
    with pytest.raises(ValueError, match="no column 'price', which modality 'tab' uses"):
        method(frame.drop(columns="price"))


def test_names_on_an_array_need_a_dataframe(frame):
    with pytest.raises(ValueError, match="array without column names"):
        EarlyFusion([("tab", StandardScaler(), ["age"])]).fit(frame[["age"]].to_numpy())


def test_series_is_not_accepted(frame):
    with pytest.raises(ValueError, match="got a Series"):
        EarlyFusion([("tab", StandardScaler(), ["age"])]).fit(frame["age"])


def test_scalar_column_gives_1d_and_list_gives_2d(frame):
    seen = {}

    class Spy(StandardScaler):
        def fit(self, X, y=None):
            seen[self.tag] = (np.ndim(X), type(X).__name__)
            return self

        def transform(self, X):
            return np.zeros((len(X), 1))

    class Spy1(Spy):
        tag = "one"

    class Spy2(Spy):
        tag = "two"

    EarlyFusion([("a", Spy1(), "review"), ("b", Spy2(), ["age", "price"])]).fit(frame)
    assert seen["one"][0] == 1
    assert seen["two"] == (2, "DataFrame")


def test_transformers_are_cloned_not_mutated(frame):
    scaler = StandardScaler()
    fusion = EarlyFusion([("tab", scaler, ["age", "price"])]).fit(frame)
    assert not hasattr(scaler, "mean_")
    assert fusion.named_transformers_["tab"] is not scaler
    assert hasattr(fusion.named_transformers_["tab"], "mean_")


def test_missing_rows_detected_per_row(frame):
    # review is None in row 2 and "" in row 3: the text modality is missing there.
    fusion = EarlyFusion([("text", TfidfVectorizer(), "review")]).fit(frame)
    Xt = fusion.transform(frame).toarray()
    names = list(fusion.get_feature_names_out())
    flag = Xt[:, names.index("text__present")]
    np.testing.assert_array_equal(flag, [1, 1, 0, 0, 1, 1])


def test_tabular_row_missing_only_when_all_its_columns_are(frame):
    X = frame.copy()
    X.loc[1, ["age", "price"]] = np.nan  # whole modality missing
    X.loc[4, "age"] = np.nan  # one cell missing: the transformer's business
    fusion = EarlyFusion([("tab", "passthrough", ["age", "price"])]).fit(X)
    out = fusion.transform(X)
    names = list(fusion.get_feature_names_out())
    assert names == ["tab__age", "tab__price", "tab__present"]
    np.testing.assert_array_equal(out[:, 2], [1, 0, 1, 1, 1, 1])
    assert np.isnan(out[4, 0])  # passed through, not imputed as a missing modality
    assert out[1, 1] == pytest.approx(np.mean([10, 30, 40, 50, 60]))


def test_nested_params_reach_modality_transformers(frame):
    clf = FusionClassifier(
        [("text", TfidfVectorizer(), "review"), ("tab", StandardScaler(), ["age"])]
    )
    params = clf.get_params()
    assert params["text__lowercase"] is True
    clf.set_params(text__lowercase=False, fusion="late")
    assert clf.modalities[0][1].lowercase is False
    assert clf.modalities[0][2] == "review"
    assert clone(clf).get_params()["text__lowercase"] is False


def test_integer_positions_and_callables_work_on_arrays():
    rng = np.random.RandomState(0)
    X = rng.randn(300, 4)
    y = (X[:, 0] + X[:, 3] > 0).astype(int)
    clf = LateFusionClassifier(
        [("a", StandardScaler(), [0, 1]), ("b", StandardScaler(), lambda X: [2, 3])], cv=3
    ).fit(X, y)
    assert sorted(clf.named_estimators_) == ["a", "b"]
    assert clf.named_estimators_["b"][0].n_features_in_ == 2
    assert clf.score(X, y) > 0.85


def test_categorical_modality_with_onehot(frame):
    fusion = EarlyFusion([("cat", OneHotEncoder(sparse_output=False), ["dept"])]).fit(frame)
    assert list(fusion.get_feature_names_out()) == [
        "cat__dept_dresses",
        "cat__dept_jackets",
        "cat__dept_tops",
    ]


def test_a_modality_missing_in_every_row_is_an_error(frame):
    X = frame.assign(review=None)
    with pytest.raises(ValueError, match="'text' is missing .* in every one of the 6 rows"):
        EarlyFusion([("text", TfidfVectorizer(), "review")]).fit(X)
