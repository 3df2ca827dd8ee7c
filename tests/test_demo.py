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
