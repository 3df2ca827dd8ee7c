"""Early vs late vs attention fusion: test scores and fit times on the two shipped data sets.

Reviews: 2,000 rows sampled from the published train split (``random_state=0``), scored on the
whole test split (2,349 rows); the review text (all-MiniLM-L6-v2, ONNX), 3 numerical and 3
categorical columns. Digits: FSDD audio paired with ``load_digits`` images, official split.
Every encoder's rows are computed once and served by skfusion's embedding cache afterwards, so
the fit times are the fusion models' own.

Usage::

    python benchmarks/bench_fusion.py [reviews] [digits]
"""

# SPDX-License-Identifier: BSD-3-Clause

import sys
import time
import warnings

import numpy as np
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, log_loss
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from skfusion import AttentionFusionClassifier, FusionClassifier
from skfusion.datasets import load_audio_visual_digits, load_clothing_reviews
from skfusion.encoders import ArrayEncoder, AudioEncoder, TextEncoder


def linear():
    return make_pipeline(StandardScaler(with_mean=False), LogisticRegression(max_iter=2000))


def models(mods, sequences=None):
    out = {
        "early (LogisticRegression)": FusionClassifier(mods, fusion="early", estimator=linear()),
        "late (LogisticRegression per modality, cv=5)": FusionClassifier(
            mods, fusion="late", estimator=linear(), cv=5
        ),
        "attention (defaults)": AttentionFusionClassifier(mods, random_state=0),
        "attention (early_stopping)": AttentionFusionClassifier(
            mods, early_stopping=True, random_state=0
        ),
    }
    if sequences:
        out["attention (text tokens, early_stopping)"] = AttentionFusionClassifier(
            mods, use_sequences=sequences, early_stopping=True, random_state=0
        )
    return out


def run(title, mods, X_train, y_train, X_test, y_test, binary, sequences=None):
    print(f"\n{title}: {len(X_train)} train rows, {len(X_test)} test rows", flush=True)
    start = time.perf_counter()
    for _, encoder, column in mods:  # warm the embedding cache: encoders learn nothing in fit
        if hasattr(encoder, "_skfusion_fingerprint"):
            encoder.fit(X_train[column].iloc[:2]).transform(X_train[column])
            encoder.transform(X_test[column])
    print(f"encoding every raw item once: {time.perf_counter() - start:.1f}s", flush=True)
    for name, model in models(mods, sequences).items():
        start = time.perf_counter()
        model.fit(X_train, y_train)
        fit_s = time.perf_counter() - start
        proba = model.predict_proba(X_test)
        pred = model.classes_[proba.argmax(1)]
        score = (
            f"F1 {f1_score(y_test, pred):.3f}  "
            f"PR-AUC {average_precision_score(y_test, proba[:, 1]):.3f}"
            if binary
            else f"log-loss {log_loss(y_test, proba, labels=model.classes_):.3f}"
        )
        print(
            f"  {name:<46} accuracy {accuracy_score(y_test, pred):.3f}  {score}  fit {fit_s:6.1f}s",
            flush=True,
        )


def reviews():
    data = load_clothing_reviews()
    X, y, split = data.data, data.target.to_numpy(), data.split.to_numpy()
    train = np.flatnonzero(split == "train")
    train = np.random.RandomState(0).choice(train, 2000, replace=False)
    test = np.flatnonzero(split == "test")
    mods = [
        ("text", TextEncoder(), "Review Text"),
        ("tab", StandardScaler(), data.numerical_columns),
        (
            "cat",
            make_pipeline(
                SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")
            ),
            data.categorical_columns,
        ),
    ]
    run("Clothing reviews", mods, X.iloc[train], y[train], X.iloc[test], y[test], True, ["text"])


def digits():
    data = load_audio_visual_digits(random_state=0)
    X, y, split = data.data, data.target.to_numpy(), data.split.to_numpy()
    mods = [
        ("audio", AudioEncoder(), "audio"),
        ("image", ArrayEncoder(), "image"),
    ]
    tr, te = split == "train", split == "test"
    run("Audio-visual digits", mods, X[tr], y[tr], X[te], y[te], False)


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    which = sys.argv[1:] or ["reviews", "digits"]
    if "reviews" in which:
        reviews()
    if "digits" in which:
        digits()
