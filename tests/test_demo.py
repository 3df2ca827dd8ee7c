"""The demo's reload check: tolerant of float rounding, strict about real differences."""

# SPDX-License-Identifier: BSD-3-Clause

import joblib
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skfusion import EarlyFusion
from skfusion._demo import RELOAD_TOLERANCE, _score_in_fresh_process
from skfusion.datasets import load_clothing_reviews
from skfusion.encoders import TextEncoder


def test_reload_check_in_a_fresh_process(tmp_path):
    reviews = load_clothing_reviews()
    X, y = reviews.data.iloc[:120], reviews.target.iloc[:120]
    spec = [("title", TextEncoder(), "Title"), ("tab", StandardScaler(), ["Age", "Rating"])]
    model = make_pipeline(EarlyFusion(spec), LogisticRegression(max_iter=500)).fit(X, y)
    path = str(tmp_path / "model.joblib")
    joblib.dump(model, path)
    X_test = reviews.data.iloc[200:260]
    expected = model.predict_proba(X_test)

    diff, torch_loaded = _score_in_fresh_process(path, expected, X_test)
    assert diff <= RELOAD_TOLERANCE
    assert not torch_loaded  # an ONNX-backed model scores without torch

    # a real difference (here 1e-2 on one probability) is reported as one
    wrong = expected.copy()
    wrong[3] += [-1e-2, 1e-2]
    diff, _ = _score_in_fresh_process(path, wrong, X_test)
    assert np.isclose(diff, 1e-2, atol=RELOAD_TOLERANCE) and diff > RELOAD_TOLERANCE


def test_model_selection_never_sees_the_test_split(tmp_path, monkeypatch):
    """Change every test label (and shuffle the test rows): the selected model must not move.

    The demo is run twice on a small slice of the published split. If anything in model
    selection (the grid search, the candidates' fits, the choice of the best) looked at the
    test rows or their labels, the second run could pick another fusion type or fit other
    coefficients; with honest splits both runs select and fit the very same model.
    """
    import skfusion._demo as demo

    X_train, y_train, X_test, y_test = demo.demo_split(quick=True)
    X_train, y_train = X_train.iloc[:240], y_train.iloc[:240]
    X_test, y_test = X_test.iloc[:90], y_test.iloc[:90]
    seen = []

    def run(test_X, test_y):
        monkeypatch.setattr(
            demo, "demo_split", lambda **kw: (X_train, y_train, test_X, test_y)
        )
        out = demo.run_demo(cv=2, output=str(tmp_path / "m.joblib"), progress=False)
        assert out["reloaded_same"]
        search = [r["model"] for k, r in out.items() if isinstance(r, dict) and "GridSearch" in k]
        seen.append(out)
        return search[0]

    first = run(X_test, y_test)
    rng = np.random.default_rng(0)
    flipped = y_test.copy()
    flipped[:] = 1 - y_test.to_numpy()  # every test label wrong
    order = rng.permutation(len(X_test))
    second = run(X_test.iloc[order], flipped.iloc[order])

    assert first.best_params_ == second.best_params_
    assert np.array_equal(
        first.cv_results_["mean_test_score"], second.cv_results_["mean_test_score"]
    )
    # The same fitted model: identical probabilities on the training rows (same process, same
    # kernels and batches, so exact equality is the right check here).
    np.testing.assert_array_equal(
        first.predict_proba(X_train.iloc[:50]), second.predict_proba(X_train.iloc[:50])
    )
    # ... while the reported test scores did see the flipped labels (the check can fail).
    name = next(k for k in seen[0] if isinstance(seen[0][k], dict) and "GridSearch" in k)
    assert seen[0][name]["f1"] != seen[1][name]["f1"]


def test_title_and_review_joins_the_two_texts():
    """The words modality's input: title and review as one text, a missing part as empty."""
    import pandas as pd

    from skfusion._demo import build_modalities, title_and_review

    X = pd.DataFrame({"Title": ["Love it", None, "Too small"],
                      "Review Text": ["Fits well.", "Runs large.", np.nan]})
    assert list(title_and_review(X)) == ["Love it . Fits well.", " . Runs large.", "Too small . "]
    assert list(title_and_review(X.to_numpy())) == list(title_and_review(X))
    names = [name for name, *_ in build_modalities(words=True)]
    assert names == ["review", "title", "tab", "words"]
    assert [name for name, *_ in build_modalities()] == ["review", "title", "tab"]
