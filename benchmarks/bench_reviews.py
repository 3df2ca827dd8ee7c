"""Which heads pay on the clothing reviews: the levers behind ``skfusion demo``, measured.

The published Multimodal-Toolkit split (train 18,788 / val 2,349 / test 2,349 rows). Review
and title are encoded once with all-MiniLM-L6-v2 (``TextEncoder``, int8 by default; the
embedding cache serves later runs), then every head is a scikit-learn model on those arrays:

* single modalities: review, title, review + title embeddings, the tabular columns, and
  *words*, a TF-IDF (word 1-2 grams) of the title and review joined, with a logistic
  regression;
* early fusion: one logistic regression on the concatenated blocks;
* late fusion, exactly as :class:`skfusion.LateFusionClassifier` stacks: out-of-fold
  decision values of one logistic regression per modality (5 folds of the train split),
  a logistic regression on top; variants with the words modality, extra tabular columns
  (``Rating`` one-hot, ``Clothing ID``), a ``HistGradientBoostingClassifier`` on the stacked
  scores plus the raw tabular columns, and a threshold tuned by
  ``TunedThresholdClassifierCV`` (F1, 5 folds of the train split).

Every row reports the cross-validated F1 on the train split (out-of-fold, the selection
criterion) and F1 / PR-AUC on the validation split (fitted on train only). The test split is
scored only with ``--test``: it is for reporting the chosen models, never for choosing.

Two more rows aim at the reviews rated 3, where most errors are (the table printed last):
a final model that also sees each score times each rating, and words and embedding heads
fitted on the rows rated 3 only.

``--tuned`` adds fine-tuned text: title and review joined (and, second, the rating, title and
review as one text), scored by a ``FineTunedTextEncoder`` (MiniLM's top 2 layers tuned for one
epoch; decision values cross-fitted over 2 folds of the train split), alone and fused with the
tabular and words modalities; third, the same encoder tuned for 2 epochs on the train rows
rated 2 to 4 only, where the rating does not settle the label.

Run: ``.venv/bin/python benchmarks/bench_reviews.py [--precision int8|fp32] [--tuned] [--test]``
(under a minute on the 2-core machine once the texts are encoded; encoding all 47k texts
takes about 2.5 minutes in int8 and 7 in float32, each tuning about 10 minutes.
``SKFUSION_CACHE_DIR=DIR`` keeps the embeddings on disk for the next run, and the model store
keeps the tuning).
"""

# SPDX-License-Identifier: BSD-3-Clause

import argparse
import time
import warnings

import numpy as np
from sklearn.compose import make_column_transformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, f1_score
from sklearn.model_selection import StratifiedKFold, TunedThresholdClassifierCV, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler, TargetEncoder

from skfusion.datasets import load_clothing_reviews
from skfusion.datasets._clothing import CATEGORICAL_COLUMNS, NUMERICAL_COLUMNS
from skfusion.encoders import FineTunedTextEncoder, TextEncoder

FOLDS = StratifiedKFold(5, shuffle=True, random_state=0)


def lr(C=1.0):
    return LogisticRegression(C=C, max_iter=3000)


def embed(texts, precision):
    """Embeddings of a text column, zeros and a missing flag where the text is missing."""
    E = np.asarray(TextEncoder(precision=precision).fit_transform(texts), dtype=np.float64)
    missing = np.isnan(E).any(axis=1)
    return np.c_[np.nan_to_num(E), missing]


def tabular(extra=()):
    cats = list(CATEGORICAL_COLUMNS) + [c for c in extra if c != "Clothing ID"]
    parts = [
        (StandardScaler(), NUMERICAL_COLUMNS),
        (OneHotEncoder(handle_unknown="ignore", sparse_output=False), cats),
    ]
    if "Clothing ID" in extra:
        parts.append((TargetEncoder(cv=FOLDS), ["Clothing ID"]))
    return make_column_transformer(*parts)


class Blocks:
    """Per-split rows, labels and embeddings; caches the embeddings and base-model scores."""

    def _tune(self, name):
        """A fine-tuned text block: cross-fitted train rows, val/test rows of the full model.

        ``FineTunedTextEncoder`` (``TUNING``, seed 0; decision values) on title and review
        joined (``tuned``), or on the rating, title and review joined (``tuned_rated``, the
        tabular column that carries most of the signal written into the text, as
        Multimodal-Toolkit's ``unimodal`` row does). A fit is memoised in the model store:
        a rerun with the same ``SKFUSION_HOME`` loads it.
        """
        text = rated if name == "tuned_rated" else joined
        if name == "tuned_mixed":
            # tuned only on the train rows rated 2-4, where the text decides (with 2 epochs);
            # cross-fitted there, and scored by the tuned model on the other train rows
            enc = FineTunedTextEncoder(precision=self.precision, random_state=0, **TUNING_MIXED)
            fit = self.X["train"]["Rating"].isin(MIXED).to_numpy()
        else:
            enc = FineTunedTextEncoder(precision=self.precision, random_state=0, **TUNING)
            fit = np.ones(len(self.y["train"]), dtype=bool)
        start = time.perf_counter()
        train = np.empty((len(fit), 1))  # binary target: one decision value per text
        train[fit] = enc.fit_transform(text(self.X["train"][fit]), self.y["train"][fit])
        if not fit.all():
            train[~fit] = enc.transform(text(self.X["train"][~fit]))
        rows = {"train": train}
        self.tune_s[name] = time.perf_counter() - start
        for s in ("val", "test"):
            rows[s] = enc.transform(text(self.X[s]))
        for s, E in rows.items():
            self._cache[(name, s)] = np.asarray(E, dtype=np.float64)

    def __init__(self, X, y, split, precision):
        self.y = {s: y[split == s].to_numpy() for s in ("train", "val", "test")}
        self.X = {s: X[split == s] for s in ("train", "val", "test")}
        self.precision = precision
        self._cache = {}
        self.tune_s = {}

    def block(self, name, s):
        key = (name, s)
        if key not in self._cache:
            X = self.X[s]
            if name in ("review", "title"):
                col = "Review Text" if name == "review" else "Title"
                self._cache[key] = embed(X[col], self.precision)
            elif name in ("tuned", "tuned_rated", "tuned_mixed"):
                self._tune(name)
            else:
                raise KeyError(name)
        return self._cache[key]


def joined(X):
    return (X["Title"].fillna("") + " . " + X["Review Text"].fillna("")).to_numpy()


def rated(X):
    """"rating 4 . <title> . <review>": the rating written into the text."""
    return ("rating " + X["Rating"].astype(str) + " . ").to_numpy() + joined(X)


# --tuned: MiniLM's top 2 layers tuned for one epoch (int8 states below them), decision values
# cross-fitted over 2 folds of the train split
TUNING = {"n_tuned_layers": 2, "max_iter": 1, "cv": 2}
# the same for two epochs on the train rows rated 2, 3 or 4 only (7,618 rows, 8.5 minutes)
TUNING_MIXED = {"n_tuned_layers": 2, "max_iter": 2, "cv": 2}
MIXED = (2, 3, 4)


def base_scores(b, name):
    """Out-of-fold decision values on train, and val/test ones of the model fitted on train."""
    key = ("scores", name)
    if key in b._cache:
        return b._cache[key]
    if name.endswith("@3"):
        return rating3_scores(b, name[:-2])
    if name in ("review", "title", "text", "tuned", "tuned_rated", "tuned_mixed"):
        parts = ["review", "title"] if name == "text" else [name]
        F = {s: np.hstack([b.block(p, s) for p in parts]) for s in ("train", "val", "test")}
        model = lr()
    elif name.startswith("tab"):
        extra = {"tab": (), "tab+rating": ("Rating",),
                 "tab+rating+id": ("Rating", "Clothing ID")}[name]
        F, model = b.X, make_pipeline(tabular(extra), lr())
    elif name == "words":
        F = {s: joined(b.X[s]) for s in ("train", "val", "test")}
        tfidf = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
        model = make_pipeline(tfidf, lr(10.0))
    else:
        raise KeyError(name)
    oof = cross_val_predict(model, F["train"], b.y["train"], cv=FOLDS, method="decision_function")
    model.fit(F["train"], b.y["train"])
    out = {"train": oof, **{s: model.decision_function(F[s]) for s in ("val", "test")}}
    b._cache[key] = out
    return out


def rating3_scores(b, name):
    """A head fitted on the train rows rated 3 only (out-of-fold there), scoring every row."""
    key = ("scores", name + "@3")
    if key in b._cache:
        return b._cache[key]
    if name == "words":
        F = {s: joined(b.X[s]) for s in ("train", "val", "test")}
        model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
                              lr(10.0))
    else:  # "text": review + title embeddings
        F = {s: np.hstack([b.block("review", s), b.block("title", s)])
             for s in ("train", "val", "test")}
        model = lr()
    rows = np.flatnonzero(b.X["train"]["Rating"].to_numpy() == 3)
    sub, y = F["train"][rows], b.y["train"][rows]
    oof = cross_val_predict(model, sub, y, cv=FOLDS, method="decision_function")
    model.fit(sub, y)
    out = {s: model.decision_function(F[s]) for s in ("train", "val", "test")}
    out["train"][rows] = oof
    b._cache[key] = out
    return out


def stacked(b, names, final="lr", threshold=False):
    """Late fusion on the out-of-fold scores of ``names``: scores for train (OOF), val, test."""
    S = {s: np.column_stack([base_scores(b, n)[s] for n in names])
         for s in ("train", "val", "test")}
    if final == "hgb":  # the stacked text scores plus the raw tabular columns ("passthrough")
        ct = tabular().fit(b.X["train"])
        S = {s: np.c_[S[s], ct.transform(b.X[s])] for s in S}
        model = HistGradientBoostingClassifier(
            max_iter=300, learning_rate=0.05, max_leaf_nodes=15, random_state=0
        )
    elif final == "lr x rating":  # each score also times each Rating's indicator
        onehot = OneHotEncoder(sparse_output=False).fit(b.X["train"][["Rating"]])
        for s in S:
            R = onehot.transform(b.X[s][["Rating"]])
            S[s] = np.hstack([S[s], (S[s][:, :, None] * R[:, None, :]).reshape(len(R), -1)])
        model = lr()
    else:
        model = lr()
    if threshold:
        model = TunedThresholdClassifierCV(model, scoring="f1", cv=FOLDS)
        oof = cross_val_predict(model, S["train"], b.y["train"], cv=FOLDS)
        model.fit(S["train"], b.y["train"])
        proba = {s: model.predict_proba(S[s])[:, 1] for s in ("val", "test")}
        pred = {s: model.predict(S[s]) for s in ("val", "test")}
        return oof, pred, proba
    oof = cross_val_predict(model, S["train"], b.y["train"], cv=FOLDS, method="decision_function")
    model.fit(S["train"], b.y["train"])
    score = {s: model.decision_function(S[s]) for s in ("val", "test")}
    return oof >= 0, {s: v >= 0 for s, v in score.items()}, score


def early(b, names):
    parts = [n for n in names if n not in ("tab", "words")]
    ct = tabular().fit(b.X["train"])
    F = {s: np.hstack([b.block(p, s) for p in parts] + [ct.transform(b.X[s])])
         for s in ("train", "val", "test")}
    if "words" in names:  # the sparse TF-IDF block beside the dense ones
        from scipy import sparse

        tfidf = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
        tfidf.fit(joined(b.X["train"]))
        F = {s: sparse.hstack([F[s], tfidf.transform(joined(b.X[s]))]).tocsr() for s in F}
    model = lr()
    oof = cross_val_predict(model, F["train"], b.y["train"], cv=FOLDS, method="decision_function")
    model.fit(F["train"], b.y["train"])
    score = {s: model.decision_function(F[s]) for s in ("val", "test")}
    return oof >= 0, {s: v >= 0 for s, v in score.items()}, score


def single(b, name):
    out = base_scores(b, name)
    return out["train"] >= 0, {s: out[s] >= 0 for s in ("val", "test")}, out


ROWS = [
    ("review embedding", lambda b: single(b, "review")),
    ("title embedding", lambda b: single(b, "title")),
    ("review + title embeddings", lambda b: single(b, "text")),
    ("words (TF-IDF of title + review)", lambda b: single(b, "words")),
    ("tabular", lambda b: single(b, "tab")),
    ("early: review, title, tab", lambda b: early(b, ["review", "title", "tab"])),
    ("late: review, title, tab (the old demo's best)",
     lambda b: stacked(b, ["review", "title", "tab"])),
    ("late: tab, words (no embeddings)", lambda b: stacked(b, ["tab", "words"])),
    ("late: review, title, tab, words (the demo's)",
     lambda b: stacked(b, ["review", "title", "tab", "words"])),
    ("  + Rating one-hot in tab", lambda b: stacked(b, ["review", "title", "tab+rating", "words"])),
    ("  + Rating one-hot, Clothing ID target-encoded",
     lambda b: stacked(b, ["review", "title", "tab+rating+id", "words"])),
    ("  + threshold tuned by CV (TunedThresholdClassifierCV)",
     lambda b: stacked(b, ["review", "title", "tab", "words"], threshold=True)),
    ("  final HistGradientBoosting on scores + tab columns",
     lambda b: stacked(b, ["review", "title", "words"], final="hgb")),
    ("  final model on scores and scores x Rating one-hot",
     lambda b: stacked(b, ["review", "title", "tab", "words"], final="lr x rating")),
    ("  + words and embedding heads fitted on Rating 3 rows",
     lambda b: stacked(b, ["review", "title", "tab", "words", "words@3", "text@3"])),
]

# --tuned: the text fine-tuned (FineTunedTextEncoder, cross-fitted decision values)
TUNED_ROWS = [
    ("tuned: title + review (fine-tuned MiniLM)", lambda b: single(b, "tuned")),
    ("tuned: rating + title + review as one text", lambda b: single(b, "tuned_rated")),
    ("early: tuned text, tab, words", lambda b: early(b, ["tuned", "tab", "words"])),
    ("late: tuned text, tab, words", lambda b: stacked(b, ["tuned", "tab", "words"])),
    ("late: tuned text, review, title, tab, words",
     lambda b: stacked(b, ["tuned", "review", "title", "tab", "words"])),
    ("late: tuned rating+text, tab, words", lambda b: stacked(b, ["tuned_rated", "tab", "words"])),
    ("early: tuned rating+text, tab, words",
     lambda b: early(b, ["tuned_rated", "tab", "words"])),
    ("tuned on Rating 2-4 rows (2 epochs), alone", lambda b: single(b, "tuned_mixed")),
    ("late: tuned on Rating 2-4, tab, words",
     lambda b: stacked(b, ["tuned_mixed", "tab", "words"])),
    ("late: tuned on Rating 2-4, review, title, tab, words",
     lambda b: stacked(b, ["tuned_mixed", "review", "title", "tab", "words"])),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", choices=["int8", "fp32"], default="int8")
    parser.add_argument("--test", action="store_true", help="also score the test split")
    parser.add_argument(
        "--tuned", action="store_true",
        help="also the fine-tuned text rows (three tunings of 8-12 minutes each, or none when "
        "the model store has them)",
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    data = load_clothing_reviews()
    b = Blocks(data.data, data.target, data.split, args.precision)
    t0 = time.perf_counter()
    for s in ("train", "val", "test"):
        b.block("review", s), b.block("title", s)
    print(f"encoded review and title ({args.precision}) in {time.perf_counter() - t0:.0f} s")
    rows = ROWS
    if args.tuned:
        for name in ("tuned", "tuned_rated", "tuned_mixed"):
            b.block(name, "train")
            print(f"{name}: fitted and transformed in {b.tune_s[name]:.0f} s")
        rows = ROWS + TUNED_ROWS
    head = f"{'model':<56} {'cv F1':>7} {'val F1':>7} {'val AP':>7}"
    print(head + (f" {'test F1':>7} {'test AP':>7}" if args.test else ""))
    print("-" * (len(head) + (16 if args.test else 0)))
    for name, run in rows:
        oof_pred, pred, score = run(b)
        line = (f"{name:<56} {f1_score(b.y['train'], oof_pred):>7.4f} "
                f"{f1_score(b.y['val'], pred['val']):>7.4f} "
                f"{average_precision_score(b.y['val'], score['val']):>7.4f}")
        if args.test:
            line += (f" {f1_score(b.y['test'], pred['test']):>7.4f} "
                     f"{average_precision_score(b.y['test'], score['test']):>7.4f}")
        print(line, flush=True)
    errors_by_rating(b, args.test)
    print(f"total {time.perf_counter() - t0:.0f} s")


def errors_by_rating(b, test):
    """Where the demo's model errs: its errors per ``Rating``, out-of-fold on train and on the
    validation (and test) split."""
    oof, pred, _ = stacked(b, ["review", "title", "tab", "words"])
    print("\nerrors of late: review, title, tab, words, by Rating (rows, errors, accuracy)")
    rows_of = [("train (cv)", oof), ("val", pred["val"])]
    for s, p in rows_of + ([("test", pred["test"])] if test else []):
        split = s.split()[0]
        rating, y = b.X[split]["Rating"].to_numpy(), b.y[split]
        cells = []
        for r in range(1, 6):
            rows = rating == r
            wrong = int((p[rows] != y[rows]).sum())
            cells.append(f"{r}: {rows.sum():>5} {wrong:>4} {1 - wrong / rows.sum():.3f}")
        print(f"{s:<11} " + " | ".join(cells) + f" | all: {int((p != y).sum())} errors")


if __name__ == "__main__":
    main()
