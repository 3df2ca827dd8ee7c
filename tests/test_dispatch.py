"""FusionClassifier end to end on real reviews with the real TextEncoder; persistence; imports."""

import subprocess
import sys

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.preprocessing import StandardScaler

from skfusion import FusionClassifier, FusionRegressor
from skfusion.datasets import load_clothing_reviews
from skfusion.encoders import TextEncoder


@pytest.fixture(scope="module")
def reviews():
    data = load_clothing_reviews()
    X, y = data.data, data.target
    train = data.split == "train"
    X_train, _, y_train, _ = train_test_split(
        X[train], y[train], train_size=300, stratify=y[train], random_state=0
    )
    test = data.split == "test"
    return X_train, y_train, X[test].iloc[:100], y[test].iloc[:100]


def modalities():
    return [
        ("text", TextEncoder(), "Review Text"),
        ("tab", StandardScaler(), ["Age", "Rating", "Positive Feedback Count"]),
    ]


def test_grid_search_over_fusion_type_persists(reviews, tmp_path):
    X_train, y_train, X_test, y_test = reviews
    search = GridSearchCV(
        FusionClassifier(modalities(), estimator=LogisticRegression(max_iter=1000), cv=3),
        {"fusion": ["early", "late"]},
        cv=3,
        scoring="f1",
    ).fit(X_train, y_train)
    assert list(search.cv_results_["param_fusion"]) == ["early", "late"]
    assert np.all(search.cv_results_["mean_test_score"] > 0.85)
    best = search.best_estimator_
    assert best.score(X_test, y_test) > 0.8

    expected = best.predict_proba(X_test)
    model_path, x_path, out_path = tmp_path / "m.joblib", tmp_path / "X.joblib", tmp_path / "p.npy"
    joblib.dump(best, model_path)
    joblib.dump(X_test, x_path)
    code = (
        "import joblib, numpy as np;"
        f"m = joblib.load({str(model_path)!r});"
        f"np.save({str(out_path)!r}, m.predict_proba(joblib.load({str(x_path)!r})))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    np.testing.assert_array_equal(np.load(out_path), expected)


def test_fusion_parameter_switches_the_underlying_estimator(reviews):
    X_train, y_train, X_test, _ = reviews
    spec = modalities()[1:]
    early = FusionClassifier(spec, fusion="early").fit(X_train, y_train)
    late = FusionClassifier(spec, fusion="late", cv=3).fit(X_train, y_train)
    assert type(early.estimator_).__name__ == "Pipeline"
    assert type(late.estimator_).__name__ == "LateFusionClassifier"
    np.testing.assert_array_equal(early.classes_, [0, 1])
    assert late.predict_proba(X_test).shape == (len(X_test), 2)
    reg = FusionRegressor(spec[:1], fusion="late", cv=3).fit(X_train, y_train.astype(float))
    assert reg.predict(X_test).shape == (len(X_test),)


def test_import_is_light():
    code = (
        "import sys, skfusion, skfusion.encoders, skfusion.datasets;"
        "heavy = [m for m in ('torch', 'sentence_transformers', 'librosa', 'onnxruntime', "
        "'transformers') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == ""
