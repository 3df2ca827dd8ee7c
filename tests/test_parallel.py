"""Parallel and distributed runs: process workers share the on-disk cache; dask gives equal results."""

# SPDX-License-Identifier: BSD-3-Clause

from collections import Counter

import distributed
import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.preprocessing import StandardScaler
from test_cache import TEXT, HashEmbedder, read_log

import skfusion
from skfusion import FusionClassifier, LateFusionClassifier
from skfusion.datasets import load_clothing_reviews
from skfusion.encoders import TextEncoder
from skfusion.fusion._dispatch import FUSION_TYPES
from skfusion.runtime import cache_clear, cache_info


@pytest.fixture(scope="module")
def reviews():
    X, y = load_clothing_reviews(return_X_y=True)
    X = X.iloc[:120][["Review Text", "Age", "Rating"]].copy()
    return X, y.iloc[:120].to_numpy()


@pytest.fixture(autouse=True)
def fresh_cache():
    with skfusion.config_context(cache=True, cache_dir=""):
        cache_clear()
        yield
        cache_clear()


def _search(modalities, n_jobs, fusion_types=FUSION_TYPES):
    clf = FusionClassifier(
        modalities, estimator=LogisticRegression(max_iter=500), cv=3, random_state=0
    )
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    return GridSearchCV(clf, {"fusion": list(fusion_types)}, cv=cv, n_jobs=n_jobs)


def test_process_workers_share_the_disk_cache_and_encode_each_item_once(reviews, tmp_path):
    """GridSearchCV(n_jobs=2) on loky processes: the on-disk layer makes it one encode per item."""
    X, y = reviews
    log = str(tmp_path / "log")
    modalities = [("text", HashEmbedder(log=log), "Review Text"), ("tab", StandardScaler(), ["Age"])]
    with skfusion.config_context(cache_dir=tmp_path / "cache"):
        with joblib.parallel_config(backend="loky"):
            # early and late only: attention would make each fresh worker import torch
            search = _search(modalities, n_jobs=2, fusion_types=("early", "late")).fit(X, y)
    counts = Counter(read_log(log))
    assert set(counts) == set(X["Review Text"].dropna())
    assert max(counts.values()) == 1, counts.most_common(3)
    assert len(search.cv_results_["mean_test_score"]) == 2


def test_dask_local_cluster_gives_the_local_results(reviews):
    """The same code under joblib's dask backend (LocalCluster on loopback) equals a local run."""
    X, y = reviews
    modalities = [
        ("text", TextEncoder(**TEXT), "Review Text"),
        ("tab", StandardScaler(), ["Age", "Rating"]),
    ]
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, protocol="tcp", host="127.0.0.1",
        dashboard_address=None,
    ) as cluster, distributed.Client(cluster):
        with joblib.parallel_config(backend="dask"):
            search = _search(modalities, n_jobs=2).fit(X, y)
            late = LateFusionClassifier(modalities, cv=3, n_jobs=2).fit(X, y)
            dask_proba = search.predict_proba(X.iloc[:15])
            dask_late = late.predict_proba(X.iloc[:15])
    # the dask workers (threads of this process) filled the cache: each review encoded once
    assert cache_info().misses == X["Review Text"].dropna().nunique()

    local = _search(modalities, n_jobs=None).fit(X, y)
    local_late = LateFusionClassifier(modalities, cv=3).fit(X, y)
    np.testing.assert_allclose(dask_proba, local.predict_proba(X.iloc[:15]), atol=1e-6)
    np.testing.assert_allclose(dask_late, local_late.predict_proba(X.iloc[:15]), atol=1e-6)
    np.testing.assert_allclose(
        search.cv_results_["mean_test_score"], local.cv_results_["mean_test_score"]
    )
    assert search.best_params_ == local.best_params_
