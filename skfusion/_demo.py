"""The ``skfusion demo``: text, tabular, early and late fusion on the clothing reviews."""

# SPDX-License-Identifier: BSD-3-Clause

import os
import subprocess
import sys
import time

import numpy as np

__all__ = ["run_demo"]

# Multimodal-Toolkit README, test split of this data (Gu & Budhkar, ACL MAI workshop 2021),
# bert-base-uncased fine-tuned; copied from the data set's README.
PUBLISHED = [
    ("text_only", 0.957, 0.992),
    ("unimodal", 0.968, 0.995),
    ("concat", 0.958, 0.992),
    ("individual_mlps_on_cat_and_numerical_feats_then_concat", 0.959, 0.992),
    ("attention_on_cat_and_numerical_feats", 0.959, 0.992),
    ("gating_on_cat_and_num_feats_then_sum", 0.961, 0.994),
    ("weighted_feature_sum_on_transformer_cat_and_numerical_feats", 0.962, 0.994),
]


# The fusion types the demo searches. Attention is left out: in the 3-modality demo it was the
# slowest candidate and the weakest (cv F1 0.963 vs 0.966 for early and late), and projecting
# the words modality's sparse TF-IDF block (about 79,000 columns) to a token is not what it is
# for. Early and late fusion of the four modalities: cv F1 0.966 and 0.969 on the full train
# split (docs/results.rst; benchmarks/bench_reviews.py measures each lever).
SEARCHED_FUSION = ("early", "late")


def _say(msg, t0):
    print(f"[{time.perf_counter() - t0:7.1f}s] {msg}", flush=True)


def title_and_review(X):
    """The title and the review of each row as one text (a missing part counts as empty).

    The ``words`` modality's first step: ``X`` holds the ``Title`` and ``Review Text`` columns
    (a DataFrame or a 2-D array, in that order). A module-level function, so that a saved
    model that uses it unpickles wherever skfusion is installed.
    """
    import pandas as pd

    X = pd.DataFrame(X)
    title, review = X.iloc[:, 0], X.iloc[:, 1]
    return (title.fillna("").astype(str) + " . " + review.fillna("").astype(str)).to_numpy()


def build_modalities(*, words=False, precision="fp32"):
    """The demo's modality spec: review text, title text, the tabular columns (and words).

    Parameters
    ----------
    words : bool, default=False
        Add a fourth modality, ``words``: a TF-IDF of the word 1-2 grams of title and review
        joined (:func:`title_and_review`), fitted on the training rows. The embeddings see
        the sense of a text, the words its exact terms ("runs small", "returned"); on the
        reviews each adds to the other (``benchmarks/bench_reviews.py``).
    precision : {"fp32", "int8"}, default="fp32"
        The text encoders' number format (``TextEncoder(precision=...)``).

    Returns
    -------
    modalities : list of (name, transformer, columns) tuples
    """
    from sklearn.compose import make_column_transformer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

    from .datasets._clothing import CATEGORICAL_COLUMNS, NUMERICAL_COLUMNS
    from .encoders import TextEncoder

    tabular = make_column_transformer(
        (StandardScaler(), NUMERICAL_COLUMNS),
        (OneHotEncoder(handle_unknown="ignore", sparse_output=False), CATEGORICAL_COLUMNS),
    )
    modalities = [
        ("review", TextEncoder(precision=precision), "Review Text"),
        ("title", TextEncoder(precision=precision), "Title"),
        ("tab", tabular, NUMERICAL_COLUMNS + CATEGORICAL_COLUMNS),
    ]
    if words:
        tfidf = make_pipeline(
            FunctionTransformer(title_and_review),
            TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
        )
        modalities.append(("words", tfidf, ["Title", "Review Text"]))
    return modalities


def demo_split(*, quick=False, seed=0):
    """The demo's train and test rows: the published split, the train part subsampled if quick.

    Parameters
    ----------
    quick : bool, default=False
        Keep a 1,500-row stratified subsample of the train split.
    seed : int, default=0
        Seed of the subsample.

    Returns
    -------
    X_train, y_train, X_test, y_test : DataFrame, Series, DataFrame, Series
        Model selection sees only ``X_train``/``y_train``; the test rows are scored once.
    """
    from sklearn.model_selection import train_test_split

    from .datasets import load_clothing_reviews

    data = load_clothing_reviews()
    X, y, split = data.data, data.target, data.split
    X_train, y_train = X[split == "train"], y[split == "train"]
    X_test, y_test = X[split == "test"], y[split == "test"]
    if quick:
        X_train, _, y_train, _ = train_test_split(
            X_train, y_train, train_size=1500, stratify=y_train, random_state=seed
        )
    return X_train, y_train, X_test, y_test


def run_demo(
    *,
    quick=False,
    cv=None,
    n_jobs=None,
    output="skfusion_demo_model.joblib",
    seed=0,
    progress=True,
):
    """Fit and compare fusion strategies on the reviews; print a table; save and reload the best.

    Parameters
    ----------
    quick : bool, default=False
        Train on a 1,500-row stratified subsample of the train split (the test split is kept
        whole), with 3 folds instead of 5.
    cv : int, default=None
        Folds of the grid search (default 5, or 3 with ``quick``).
    n_jobs : int, default=None
        Parallel jobs of the grid search.
    output : str, default="skfusion_demo_model.joblib"
        Where the best model is saved.
    seed : int, default=0
        Seed of the subsample and the folds.
    progress : bool, default=True
        Show progress bars (rows encoded, rate, time left) while texts are encoded and say
        which fusion candidate is being fitted, through ``skfusion.config_context(
        show_progress=True)``; ``TQDM_DISABLE=1`` silences the bars too.

    Returns
    -------
    results : dict
        Test F1, PR-AUC and fit time per model; ``reload_max_diff``, the largest difference
        of the reloaded model's probabilities in a fresh process, and ``reloaded_same``,
        whether it is within ``RELOAD_TOLERANCE``; ``importance``, the test F1 the best model
        loses when each modality is dropped (:func:`skfusion.inspection.modality_importance`).
    """
    from ._config import config_context

    with config_context(show_progress=bool(progress)):
        return _run_demo(quick=quick, cv=cv, n_jobs=n_jobs, output=output, seed=seed)


def _run_demo(*, quick, cv, n_jobs, output, seed):
    import joblib
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score, f1_score
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline

    from . import EarlyFusion, FusionClassifier
    from .inspection import modality_importance

    from ._config import get_config

    show_progress = get_config()["show_progress"]
    t0 = time.perf_counter()
    cv = cv or (3 if quick else 5)
    X_train, y_train, X_test, y_test = demo_split(quick=quick, seed=seed)
    _say(
        f"Women's Clothing reviews: {len(X_train)} train rows, {len(X_test)} test rows "
        f"(published Multimodal-Toolkit split){' [quick]' if quick else ''}",
        t0,
    )
    modalities = build_modalities(words=True, precision="int8")
    text, tab, words = modalities[:2], modalities[2:3], modalities[3:]

    def lr(C=1.0):
        return LogisticRegression(C=C, max_iter=3000)

    folds = StratifiedKFold(cv, shuffle=True, random_state=seed)
    candidates = [
        ("text only (early: review + title embeddings)", make_pipeline(EarlyFusion(text), lr())),
        ("words only (TF-IDF of title + review)", make_pipeline(EarlyFusion(words), lr(10.0))),
        ("tabular only", make_pipeline(EarlyFusion(tab), lr())),
        (
            f"fusion: GridSearchCV over {list(SEARCHED_FUSION)}",
            GridSearchCV(
                FusionClassifier(
                    modalities,
                    estimator=lr(),
                    # late fusion: the sparse TF-IDF block wants less regularisation
                    modality_estimators={"words": lr(10.0)},
                    cv=folds,
                ),
                {"fusion": list(SEARCHED_FUSION)},
                cv=folds,
                scoring="f1",
                n_jobs=n_jobs,
                # one line per fold and candidate as it ends: a sign of life between bars
                verbose=2 if show_progress else 0,
            ),
        ),
    ]
    results = {}
    for name, model in candidates:
        _say(f"fitting {name} ...", t0)
        start = time.perf_counter()
        model.fit(X_train, y_train)
        fit_time = time.perf_counter() - start
        proba = model.predict_proba(X_test)[:, 1]
        pred = model.classes_[(proba >= 0.5).astype(int)]
        results[name] = {
            "f1": f1_score(y_test, pred),
            "pr_auc": average_precision_score(y_test, proba),
            "fit_s": fit_time,
            "model": model,
        }
        _say(f"  test F1 {results[name]['f1']:.3f}  PR-AUC {results[name]['pr_auc']:.3f}", t0)
        if isinstance(model, GridSearchCV):
            for fusion, score in zip(
                model.cv_results_["param_fusion"], model.cv_results_["mean_test_score"]
            ):
                _say(f"  cv F1 of fusion={fusion!r}: {score:.3f}", t0)
            _say(f"  best: fusion={model.best_params_['fusion']!r}", t0)

    search = candidates[-1][1]
    fused = results[candidates[-1][0]]
    best_single = max((results[n] for n, _ in candidates[:-1]), key=lambda r: r["f1"])

    print()
    print(f"{'model':<58} {'test F1':>8} {'PR-AUC':>8} {'fit (s)':>8}")
    print("-" * 86)
    for name, r in results.items():
        label = (
            name if "GridSearch" not in name else f"best fusion ({search.best_params_['fusion']})"
        )
        print(f"{'skfusion ' + label:<58} {r['f1']:>8.3f} {r['pr_auc']:>8.3f} {r['fit_s']:>8.1f}")
    for name, f1, pr in PUBLISHED:
        print(f"{'published bert-base ' + name:<58.58} {f1:>8.3f} {pr:>8.3f} {'':>8}")
    print("-" * 86)
    print(
        "Published rows: Multimodal-Toolkit (Gu & Budhkar 2021), fine-tuned bert-base-uncased "
        "on the same split;\nskfusion uses frozen all-MiniLM-L6-v2 embeddings (int8), a TF-IDF of "
        "the words and linear models."
    )
    verdict = "beats" if fused["f1"] > best_single["f1"] else "does NOT beat"
    top = max(PUBLISHED, key=lambda p: p[1])
    versus = "above" if fused["f1"] > top[1] else "NOT above"
    print(
        f"Best fusion F1 {fused['f1']:.4f} {verdict} the best single modality "
        f"({best_single['f1']:.4f}), and is {versus} the best published F1 {top[1]:.3f} "
        f"(PR-AUC {fused['pr_auc']:.4f} vs {top[2]:.3f})."
    )

    best = search.best_estimator_
    # What each modality is worth to the best model: the test F1 it loses when the modality is
    # dropped (its own missing-modality path). The test rows are already encoded and cached,
    # so this costs only the fusion head.
    importance = modality_importance(best, X_test, y_test, strategy="drop", scoring="f1")
    _say("modality importance of the best model (test F1 lost when the modality is dropped):", t0)
    for name, value in zip(importance.modality_names, importance.importances_mean):
        _say(f"  {name:<8} {value:+.3f}", t0)
    results["importance"] = dict(zip(importance.modality_names, importance.importances_mean))

    joblib.dump(best, output)
    _say(f"saved the best model to {output} ({os.path.getsize(output) / 1e6:.1f} MB)", t0)
    expected = best.predict_proba(X_test)
    diff, torch_loaded = _score_in_fresh_process(output, expected, X_test)
    same = diff <= RELOAD_TOLERANCE
    _say(
        f"reloaded in a fresh process and scored the test split: largest probability "
        f"difference {diff:.1e} (tolerance {RELOAD_TOLERANCE:.0e}): "
        f"{'same' if same else 'DIFFERENT'}; torch imported there: {torch_loaded}",
        t0,
    )
    results["reload_max_diff"] = diff
    results["reloaded_same"] = same
    return results


# The fresh process encodes the test texts in other batches than this one (here the cache
# already held some of them), and float32 rounding then differs in the last bits: embeddings
# agree to ~1e-6 of their norm (docs/benchmarks.md). Through a linear or attention head that
# moves probabilities by well under 1e-5; a real difference (another model, other features,
# a stale cache) moves them by 1e-2 and more.
RELOAD_TOLERANCE = 1e-4


def _score_in_fresh_process(path, expected, X_test):
    """Load ``path`` in a new interpreter and score X_test there.

    Returns the largest absolute difference to ``expected`` and whether torch was imported.
    """
    import tempfile

    import joblib

    with tempfile.TemporaryDirectory() as tmp:
        x_path, out_path = os.path.join(tmp, "X.joblib"), os.path.join(tmp, "proba.npy")
        joblib.dump(X_test, x_path)
        code = (
            "import joblib, numpy as np, sys;"
            f"m = joblib.load({path!r}); X = joblib.load({x_path!r});"
            f"np.save({out_path!r}, m.predict_proba(X));"
            "print('torch' in sys.modules)"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], check=True, capture_output=True, text=True
        )
        proba = np.load(out_path)
    diff = float(np.max(np.abs(proba - expected))) if proba.shape == expected.shape else np.inf
    return diff, done.stdout.strip().splitlines()[-1] == "True"
