"""Notebook diagrams: every fusion estimator draws its modalities side by side, then its head."""

# SPDX-License-Identifier: BSD-3-Clause

import re
import warnings
from html import unescape

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import Ridge
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.utils import estimator_html_repr

from skfusion import (
    AttentionFusionClassifier,
    AttentionFusionRegressor,
    EarlyFusion,
    FusionClassifier,
    FusionRegressor,
    LateFusionClassifier,
    LateFusionRegressor,
)


def _spec():
    return [
        ("review_text", TfidfVectorizer(), "text"),
        ("shop_dept", OneHotEncoder(handle_unknown="ignore"), ["dept"]),
        ("numbers", StandardScaler(), ["age", "price"]),
    ]


def _data():
    rng = np.random.RandomState(0)
    n = 40
    X = pd.DataFrame({
        "text": rng.choice(["lovely dress", "too small", "great fit", "poor fabric"], n),
        "dept": rng.choice(["tops", "dresses"], n),
        "age": rng.normal(40, 10, n),
        "price": rng.normal(50, 5, n),
    })
    return X, np.arange(n) % 2


MAKERS = [
    lambda: EarlyFusion(_spec()),
    lambda: LateFusionClassifier(_spec(), final_estimator=Ridge(), cv=2),
    lambda: LateFusionRegressor(_spec(), cv=2),
    lambda: AttentionFusionClassifier(_spec(), d_model=8, n_heads=2, max_iter=2, random_state=0),
    lambda: AttentionFusionRegressor(_spec(), d_model=8, n_heads=2, max_iter=2, random_state=0),
    lambda: FusionClassifier(_spec()),
    lambda: FusionClassifier(_spec(), fusion="late", cv=2),
    lambda: FusionClassifier(_spec(), fusion="attention", d_model=8, n_heads=2, max_iter=2),
    lambda: FusionRegressor(_spec(), fusion="late", cv=2),
]


@pytest.mark.parametrize("make", MAKERS)
def test_html_repr_shows_every_modality_fitted_and_unfitted(make):
    X, y = _data()
    est = make()
    is_late = "Late" in type(est).__name__ or getattr(est, "fusion", "") == "late"
    for fitted in (False, True):
        if fitted:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                est.fit(X, y.astype(float) if "Regressor" in type(est).__name__ else y)
        html = unescape(estimator_html_repr(est))
        # the label of every box of the diagram (the text-only fallback repr left out)
        labels = [
            " ".join(re.sub(r"<[^>]+>", " ", label).split()[:1])
            for label in re.findall(r"<label[^>]*>(.*?)</label>", html, flags=re.S)
        ]
        diagram = html.split('<div class="sk-text-repr-fallback">')[0] + html.split(
            "</pre>", 1
        )[1]
        # a box per modality, side by side, with its name, its columns and its transformer
        assert "sk-parallel" in html
        for name, trans, columns in _spec():
            assert name in labels, (name, labels)
            assert type(trans).__name__ in labels, (trans, labels)
            assert str(columns) in diagram or repr(columns) in diagram
        if is_late:
            assert "final_estimator" in labels
