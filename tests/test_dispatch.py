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
        "import sys, joblib, numpy as np;"
        f"m = joblib.load({str(model_path)!r});"
        f"np.save({str(out_path)!r}, m.predict_proba(joblib.load({str(x_path)!r})));"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True)
    np.testing.assert_array_equal(np.load(out_path), expected)
    # the persisted ONNX-backed model scored without importing torch
    assert out.stdout.strip() == "False", out.stdout


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


def _strategy_params():
    from skfusion import AttentionFusionClassifier, EarlyFusion, LateFusionClassifier

    return {
        "early": set(EarlyFusion._get_param_names()) - {"modalities"},
        "late": set(LateFusionClassifier._get_param_names()) - {"modalities"},
        "attention": set(AttentionFusionClassifier._get_param_names()) - {"modalities"},
    }


@pytest.mark.parametrize("fusion", ["early", "late", "attention"])
def test_every_strategy_parameter_is_forwarded(fusion):
    """Each strategy's parameters are the dispatcher's, and reach the inner estimator."""
    from sklearn.base import clone

    params = _strategy_params()[fusion]
    assert params <= set(FusionClassifier._get_param_names())
    spec = modalities()[1:]
    # a non-default value for every parameter of this strategy
    values = {
        "weights": {"tab": 2.0}, "scaling": "block", "presence_flags": "always",
        "estimator": LogisticRegression(C=0.5),
        "modality_estimators": {"tab": LogisticRegression(C=3.0)},
        "final_estimator": LogisticRegression(C=2.0), "cv": 4, "stack_method": "predict",
        "passthrough": True, "d_model": 16, "n_heads": 8, "n_layers": 2, "n_tokens": 3,
        "dim_feedforward": 7, "dropout": 0.2, "modality_dropout": 0.3,
        "use_sequences": ["tab"], "max_iter": 3, "batch_size": 11,
        "learning_rate_init": 0.05, "alpha": 0.1, "early_stopping": True,
        "validation_fraction": 0.2, "n_iter_no_change": 4, "tol": 0.5, "random_state": 3,
        "device": "cpu", "n_jobs": 2, "verbose": 1,
    }
    clf = FusionClassifier(spec, fusion=fusion, **{p: values[p] for p in params})
    inner = clf._make_estimator()
    inner = inner[0] if fusion == "early" else inner
    got = inner.get_params(deep=False)
    for p in params - {"estimator"}:
        assert got[p] is values[p] or got[p] == values[p], p
    # get_params / set_params round-trip, and clone keeps everything
    again = FusionClassifier(spec).set_params(**clf.get_params(deep=False))
    assert again.get_params(deep=False) == clf.get_params(deep=False)
    assert clone(clf).get_params(deep=False).keys() == clf.get_params(deep=False).keys()


def test_grid_mixing_strategies_with_their_own_parameters(reviews):
    X_train, y_train, _, _ = reviews
    spec = modalities()[1:] + [("fb", StandardScaler(), ["Positive Feedback Count"])]
    grid = [
        {"fusion": ["early"], "scaling": [None, "block"]},
        {
            "fusion": ["late"],
            "final_estimator": [LogisticRegression(C=0.1), LogisticRegression(C=10.0)],
        },
        {"fusion": ["attention"], "d_model": [8], "max_iter": [2], "random_state": [0]},
    ]
    search = GridSearchCV(FusionClassifier(spec, cv=3), grid, cv=2).fit(X_train, y_train)
    params = search.cv_results_["params"]
    assert [p["fusion"] for p in params] == ["early", "early", "late", "late", "attention"]
    best = search.best_estimator_
    assert best.fusion_ == best.fusion
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


def test_methods_before_fit_are_those_of_the_estimator_fit_would_build():
    """``hasattr`` on an unfitted dispatcher asks the strategy estimator ``fit`` builds."""
    from sklearn.svm import LinearSVC

    spec = modalities()[1:]
    assert hasattr(FusionClassifier(spec), "predict_proba")
    assert hasattr(FusionClassifier(spec), "decision_function")
    # a head without predict_proba; attention fusion has no decision_function
    assert not hasattr(FusionClassifier(spec, estimator=LinearSVC()), "predict_proba")
    assert not hasattr(FusionClassifier(spec, fusion="attention"), "decision_function")
    assert hasattr(FusionClassifier(spec, fusion="attention"), "predict_proba")
    late = FusionClassifier(spec, fusion="late", final_estimator=LinearSVC())
    assert not hasattr(late, "predict_proba") and hasattr(late, "decision_function")
