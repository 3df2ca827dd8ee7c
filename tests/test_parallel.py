"""Parallel and distributed runs: the same answer with n_jobs, in loky workers and on dask."""

# SPDX-License-Identifier: BSD-3-Clause

import os
import warnings
from collections import Counter

import distributed
import joblib
from joblib.externals.loky import get_reusable_executor
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import skfusion
from skfusion import (
    AttentionFusionClassifier,
    EarlyFusion,
    FusionClassifier,
    LateFusionClassifier,
)
from skfusion.datasets import load_clothing_reviews
from skfusion.encoders import TextEncoder
from skfusion.fusion._dispatch import FUSION_TYPES
from skfusion.storage import cache_clear, cache_info


@pytest.fixture(scope="module")
def reviews():
    X, y = load_clothing_reviews(return_X_y=True)
    X = X.iloc[:120][["Review Text", "Age", "Rating"]].copy()
    return X, y.iloc[:120].to_numpy()


@pytest.fixture(scope="module", autouse=True)
def memory_cache():
    """The in-memory cache only, for the whole module (in this thread; skfusion's own parallel
    calls carry it into their workers)."""
    with skfusion.config_context(cache=True, cache_dir=""):
        yield


@pytest.fixture(autouse=True)
def fresh_cache(memory_cache):
    cache_clear()
    yield
    cache_clear()


def _search(modalities, n_jobs, fusion_types=FUSION_TYPES):
    clf = FusionClassifier(
        modalities, estimator=LogisticRegression(max_iter=500), cv=3, random_state=0
    )
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    return GridSearchCV(clf, {"fusion": list(fusion_types)}, cv=cv, n_jobs=n_jobs)


def test_process_workers_share_the_disk_cache_and_encode_each_item_once(
    reviews, tmp_path, hash_embedder, read_log, monkeypatch
):
    """GridSearchCV(n_jobs=2) on loky processes: the on-disk layer makes it one encode per item.

    scikit-learn dispatches the search's tasks, so skfusion's settings reach its worker
    processes the documented way: ``SKFUSION_CACHE_DIR`` in the environment they start with.
    """
    X, y = reviews
    log = str(tmp_path / "log")
    modalities = [
        ("text", hash_embedder(log=log), "Review Text"),
        ("tab", StandardScaler(), ["Age"]),
    ]
    monkeypatch.setenv("SKFUSION_CACHE_DIR", str(tmp_path / "cache"))
    # loky keeps idle workers between calls; ones started by earlier tests lack the variable
    get_reusable_executor().shutdown(wait=True)
    with skfusion.config_context(cache_dir=tmp_path / "cache"):  # and in this process's refit
        with joblib.parallel_config(backend="loky"):
            # early and late only: attention would make each fresh worker import torch
            search = _search(modalities, n_jobs=2, fusion_types=("early", "late")).fit(X, y)
    counts = Counter(read_log(log))
    assert set(counts) == set(X["Review Text"].dropna())
    assert max(counts.values()) == 1, counts.most_common(3)
    assert len(search.cv_results_["mean_test_score"]) == 2


def test_fusion_n_jobs_on_loky_carries_the_settings_into_the_workers(
    tmp_path, hash_embedder, read_log
):
    """A fusion estimator's own n_jobs (modalities in loky processes) carries the caller's
    thread settings, the disk layer here, into its workers: no environment variable needed."""
    X = load_clothing_reviews(return_X_y=True)[0].iloc[:40]
    log = str(tmp_path / "log")
    modalities = [
        # dims no other test uses: loky workers reused from them keep their memory layers
        ("review", hash_embedder(dim=5, log=log), "Review Text"),
        ("title", hash_embedder(dim=4, log=log), "Title"),
    ]
    with skfusion.config_context(cache_dir=tmp_path / "cache"):
        with joblib.parallel_config(backend="loky"):
            in_workers = EarlyFusion(modalities, n_jobs=2).fit_transform(X)
        computed = len(read_log(log))
        cache_clear()  # this process's memory layer: the rows must come from the disk
        here = EarlyFusion(modalities).fit_transform(X)
    with open(log) as f:
        pids = {line.split("\t")[0] for line in f}
    assert str(os.getpid()) not in pids  # the workers computed every row ...
    assert computed == X["Review Text"].notna().sum() + X["Title"].notna().sum()
    assert len(read_log(log)) == computed  # ... and stored it where this process finds it
    assert cache_info().disk_hits == computed
    np.testing.assert_array_equal(here, in_workers)


def test_dask_local_cluster_gives_the_local_results(reviews, text_encoder_params):
    """The same code under joblib's dask backend (LocalCluster on loopback) equals a local run."""
    X, y = reviews
    modalities = [
        ("text", TextEncoder(**text_encoder_params), "Review Text"),
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
    # Not exact: the dask run encodes the reviews in worker threads, where ONNX Runtime and
    # BLAS may split their float32 work differently from this thread (~1e-7 relative on some
    # CPUs); the heads carry that to the probabilities with little amplification. A real
    # difference (another fold, seed or row order) moves them by 1e-3 or more.
    np.testing.assert_allclose(dask_proba, local.predict_proba(X.iloc[:15]), rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        dask_late, local_late.predict_proba(X.iloc[:15]), rtol=0, atol=1e-6
    )
    # Exact: accuracies are counts of the same predicted labels over the same folds, averaged
    # in the same order. (A label is an argmax that the ~1e-7 wobble above could flip only
    # for a probability within 1e-7 of a tie; no tolerance on the mean would absorb that.)
    np.testing.assert_array_equal(
        search.cv_results_["mean_test_score"], local.cv_results_["mean_test_score"]
    )
    assert search.best_params_ == local.best_params_


def _mixed_fusion(kind, modalities, n_jobs):
    """A small classifier of each fusion type: LogisticRegression heads, a tiny network.

    The heads see standardised features: on the raw ones (audio MFCC means reach ~440) lbfgs
    stops at its ``tol`` somewhere that a 1-ulp change of the features moves, by up to 1e-2
    in probability; standardised, the same change moves them by 2e-7 (measured).
    """
    if kind == "early":
        return make_pipeline(
            EarlyFusion(modalities, n_jobs=n_jobs), StandardScaler(), LogisticRegression()
        )
    if kind == "late":
        head = make_pipeline(StandardScaler(), LogisticRegression())
        return LateFusionClassifier(modalities, estimator=head, cv=3, n_jobs=n_jobs)
    return AttentionFusionClassifier(
        modalities, d_model=8, n_heads=2, n_tokens=1, max_iter=5, random_state=0, n_jobs=n_jobs
    )


def _fit_proba(estimator, X, y, X_new):
    """Fit, predict_proba on new rows; also the process id, to tell where it ran."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # 5 epochs are on purpose
        return estimator.fit(X, y).predict_proba(X_new), os.getpid()


@pytest.mark.parametrize("kind", ["early", "late", "attention"])
@pytest.mark.kernels
def test_n_jobs_and_loky_workers_give_the_same_predictions(kind, mixed_data, mixed_modalities):
    """Text, audio, image and tabular modalities: n_jobs=1, n_jobs=2 (loky processes) and a
    fit run whole inside a loky worker predict the same probabilities (DESIGN section 8).

    The workers differ from this process in what could change the numbers: their thread
    counts (loky gives each ``cpu_count // n_jobs`` OpenMP and BLAS threads, and ONNX Runtime
    one intra-op thread; attention training runs on one torch thread everywhere) and their
    caches (the in-memory embedding cache is per process, so the workers compute every
    feature afresh).
    """
    X, y = mixed_data
    train, test = slice(0, 30), slice(30, None)
    X_train, y_train, X_test = X.iloc[train], y[train], X.iloc[test]
    with joblib.parallel_config(backend="loky"):
        one, _ = _fit_proba(_mixed_fusion(kind, mixed_modalities(), 1), X_train, y_train, X_test)
        two, _ = _fit_proba(_mixed_fusion(kind, mixed_modalities(), 2), X_train, y_train, X_test)
        [(in_worker, pid)] = joblib.Parallel(n_jobs=2)(
            [joblib.delayed(_fit_proba)(
                _mixed_fusion(kind, mixed_modalities(), None), X_train, y_train, X_test
            )]
        )
    assert pid != os.getpid()
    assert one.shape == (10, 2) and np.isfinite(one).all()
    # Not exact: the features are float32 sums from ONNX Runtime, librosa/scipy and OpenBLAS,
    # whose kernels split rows and columns, not sums, across threads, but none promises the
    # same rounding at every thread count on every CPU. Were every feature one ulp off, the
    # probabilities would move by at most 2e-7 (early, late) and 6e-7 (attention: float32
    # Adam), measured; 1e-6 allows that and fails on any real difference: another seed, other
    # folds, another batch order or audio rows shifted by one moved them by 0.06 to 0.6. On
    # the 2-core AMD EPYC where this was written they are equal bit for bit.
    np.testing.assert_allclose(two, one, rtol=0, atol=1e-6)
    np.testing.assert_allclose(in_worker, one, rtol=0, atol=1e-6)
