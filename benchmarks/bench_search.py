"""GridSearchCV over the fusion type: embedding cache on vs off, against one encoding pass.

On real reviews (Women's Clothing E-Commerce Reviews, shipped with skfusion) with the real
TextEncoder (offline all-MiniLM-L6-v2), one run measures:

* ``encode``: one plain encoding pass over the texts (cache off);
* ``heads``: the same search with the embeddings precomputed (a numeric modality), i.e. the
  time of the models alone;
* ``search, cache on`` and ``search, cache off``: ``GridSearchCV(FusionClassifier(...),
  {"fusion": [...]}, cv=5)`` on the raw texts.

It prints the speed-up of the cache and checks the target
``search with cache <= 1.3 x (encode + heads)``.

Run: ``python benchmarks/bench_search.py`` (``--help`` for the options).
"""

# SPDX-License-Identifier: BSD-3-Clause

import argparse
import time
from collections import Counter

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.preprocessing import StandardScaler

import skfusion
from skfusion import FusionClassifier
from skfusion.datasets import load_clothing_reviews
from skfusion.encoders import TextEncoder
from skfusion.fusion._dispatch import FUSION_TYPES
from skfusion.storage import cache_clear, cache_info

TAB = ["Age", "Positive Feedback Count"]


def search(modalities, args):
    clf = FusionClassifier(
        modalities, estimator=LogisticRegression(max_iter=1000), cv=3, random_state=0
    )
    cv = StratifiedKFold(args.folds, shuffle=True, random_state=0)
    return GridSearchCV(clf, {"fusion": args.fusion}, cv=cv, n_jobs=args.n_jobs)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="reviews (default 2000)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--fusion", nargs="+", default=list(FUSION_TYPES))
    parser.add_argument("--backend", default=None, help="TextEncoder backend (default: its own)")
    parser.add_argument("--n-jobs", type=int, default=None)
    parser.add_argument("--skip-off", action="store_true", help="skip the (slow) cache-off search")
    args = parser.parse_args()

    X, y = load_clothing_reviews(return_X_y=True)
    X, y = X.iloc[: args.n][["Review Text", *TAB]].reset_index(drop=True), y.iloc[: args.n]
    texts = X["Review Text"]
    params = {} if args.backend is None else {"backend": args.backend}
    n_present = int(texts.notna().sum())
    print(f"{args.n} reviews ({n_present} with text, {texts.dropna().nunique()} distinct), "
          f"GridSearchCV fusion={args.fusion} x {args.folds} folds, n_jobs={args.n_jobs}")

    # one-off model loading / export, not part of any timing below
    warm, t_setup = timed(lambda: TextEncoder(**params).fit(["warm up"]))
    print(f"model setup (once): {t_setup:.1f}s, backend {getattr(warm, 'backend_', 'torch')!r}")

    with skfusion.config_context(cache=False):
        encoder = TextEncoder(**params).fit(texts)
        emb, t_encode = timed(lambda: encoder.transform(texts))

    columns = [f"e{i}" for i in range(emb.shape[1])]
    X_pre = pd.concat([pd.DataFrame(emb, columns=columns), X[TAB]], axis=1)
    pre = [("text", "passthrough", columns), ("tab", StandardScaler(), TAB)]
    heads, t_heads = timed(lambda: search(pre, args).fit(X_pre, y))

    raw = [("text", TextEncoder(**params), "Review Text"), ("tab", StandardScaler(), TAB)]
    seen = []
    for name in ("_encode_onnx", "_encode_torch"):  # count what reaches the backend
        original = getattr(TextEncoder, name, None)
        if original is not None:
            def counting(self, items, _original=original):
                seen.extend(items)
                return _original(self, items)

            setattr(TextEncoder, name, counting)
    cache_clear()
    on, t_on = timed(lambda: search(raw, args).fit(X, y))
    info = cache_info()
    counts = Counter(seen)
    print(f"cache on: {len(seen)} texts encoded ({len(counts)} distinct, "
          f"max {max(counts.values())} times each); cache hits {info.hits}, misses {info.misses}")

    rows = [("one encoding pass", t_encode), ("heads only (precomputed embeddings)", t_heads),
            ("search, cache on", t_on)]
    t_off = None
    if not args.skip_off:
        seen.clear()
        with skfusion.config_context(cache=False):
            off, t_off = timed(lambda: search(raw, args).fit(X, y))
        rows.append(("search, cache off", t_off))
        print(f"cache off: {len(seen)} texts encoded")
        np.testing.assert_allclose(
            on.cv_results_["mean_test_score"], off.cv_results_["mean_test_score"], atol=1e-3
        )
    print()
    print(f"{'':40s} {'seconds':>8s}")
    for label, seconds in rows:
        print(f"{label:40s} {seconds:8.1f}")
    budget = t_encode + t_heads
    print()
    print(f"search with cache / (encoding pass + heads) = {t_on / budget:.2f} (target <= 1.3)")
    if t_off is not None:
        print(f"search without cache / with cache = {t_off / t_on:.1f}x")
    print("scores:", dict(zip(args.fusion, on.cv_results_["mean_test_score"].round(4).tolist())),
          "(heads on precomputed:",
          dict(zip(args.fusion, heads.cv_results_["mean_test_score"].round(4).tolist())), ")")


if __name__ == "__main__":
    main()
