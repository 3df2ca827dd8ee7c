"""Batch scoring: ``skfusion predict`` against the naive whole-file script.

The naive script is what users write today: ``joblib.load`` the model, read the whole input
with pandas, ``predict_proba`` on all of it, write the result. ``skfusion predict`` streams the
input in chunks (part files, a manifest, resumable). Each run is a fresh process; the figures
are its wall time (process start, model load, reading, scoring, writing: what a user waits
for) and its peak resident memory (``ru_maxrss`` of the finished child).

* model: early fusion of the review text (``TextEncoder``: all-MiniLM-L6-v2 on ONNX Runtime)
  and the tabular columns (age, rating, feedback count, department), LogisticRegression, fitted
  on 2,000 training reviews; saved with ``skfusion.dump`` as ``.skops`` (read by ``skfusion
  predict``) and ``.joblib`` (read by the naive script);
* input: the 23,486 clothing reviews repeated to N rows, in Parquet, with a ``row_id``;
* the embedding cache is off in both (``SKFUSION_CACHE=0``): repeated reviews would hit it,
  and the rows of a real batch job are distinct.

Printed: rows/s of both at the same size (and their ratio), the peak RSS of ``skfusion
predict`` at each size (ratio to the smallest), and the largest difference between their
probabilities. The naive script holds the whole input and every intermediate result of the
model (tokenised texts, the fused feature matrix) at once, so its peak memory grows with the
input; ``--naive-rows`` sets the sizes it runs at (the throughput ratio is taken at the
largest).

Usage::

    .venv/bin/python benchmarks/bench_batch.py                 # 1k and 100k rows, both
    .venv/bin/python benchmarks/bench_batch.py --rows 1000 20000 --naive-rows 1000 20000 \
        --repeat 3                                             # best of 3, alternated
"""

# SPDX-License-Identifier: BSD-3-Clause

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd

NAIVE = """
import sys, joblib, pandas as pd
model_path, input_path, output_path = sys.argv[1:]
model = joblib.load(model_path)
X = pd.read_parquet(input_path)
proba = model.predict_proba(X[model.feature_names_in_])
out = pd.DataFrame({"row_id": X["row_id"], "proba_0": proba[:, 0], "proba_1": proba[:, 1]})
out.to_parquet(output_path, index=False)
"""


def _cpu():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _timed(command, env):
    """Run a child process; return (wall seconds, peak RSS in MB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{command[:3]} failed with status {proc.returncode}")
    return seconds, usage.ru_maxrss / 1024  # kB on Linux


def _fit(folder):
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    import skfusion
    from skfusion import EarlyFusion
    from skfusion.datasets import load_clothing_reviews
    from skfusion.encoders import TextEncoder

    data = load_clothing_reviews()
    train = data.split == "train"
    X, y = data.data[train].iloc[:2000], data.target[train].iloc[:2000]
    numeric = ["Age", "Rating", "Positive Feedback Count"]
    tab = make_column_transformer(
        (StandardScaler(), numeric),
        (OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["Department Name"]),
    )
    spec = [
        ("review", TextEncoder(), "Review Text"),
        ("tab", tab, numeric + ["Department Name"]),
    ]
    model = make_pipeline(EarlyFusion(spec), LogisticRegression(max_iter=2000)).fit(X, y)
    skfusion.dump(model, os.path.join(folder, "model.skops"))
    skfusion.dump(model, os.path.join(folder, "model.joblib"))
    return data.data


def _input(reviews, rows, folder):
    path = os.path.join(folder, f"in_{rows}.parquet")
    repeats = -(-rows // len(reviews))
    frame = pd.concat([reviews] * repeats, ignore_index=True).iloc[:rows]
    frame.insert(0, "row_id", np.arange(rows))
    frame.to_parquet(path, index=False)
    return path


def _report(name, rows, runs):
    """Best wall time and highest peak RSS of the runs; print and return them."""
    seconds = min(r[0] for r in runs)
    rss = max(r[1] for r in runs)
    print(f"{name:<17} {rows:>7,} rows: {seconds:7.1f} s {rows / seconds:7.0f} rows/s  "
          f"peak RSS {rss:6.0f} MB  (best of {len(runs)})", flush=True)
    return seconds, rss


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000, 100_000])
    parser.add_argument("--naive-rows", type=int, nargs="+", default=[1_000, 100_000])
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of each, alternated; the best time is kept (shared machines)")
    args = parser.parse_args()
    sizes = sorted(set(args.rows) | set(args.naive_rows))
    compare = max(args.naive_rows)
    env = dict(os.environ, SKFUSION_CACHE="0")
    bindir = os.path.dirname(sys.executable)
    print(f"CPU: {_cpu()}, {os.cpu_count()} logical cores; Python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as folder:
        reviews = _fit(folder)
        cli, naive = {}, {}
        for rows in sizes:
            source = _input(reviews, rows, folder)
            out = os.path.join(folder, f"out_{rows}.parquet")
            naive_out = os.path.join(folder, f"naive_{rows}.parquet")
            ours_runs, naive_runs = [], []
            for _ in range(args.repeat):  # alternated, so that both see the same load
                command = [os.path.join(bindir, "skfusion"), "predict",
                           os.path.join(folder, "model.skops"), source, "-o", out,
                           "--method", "predict_proba", "--id-col", "row_id", "--quiet",
                           "--overwrite"]
                ours_runs.append(_timed(command, env))
                if rows in args.naive_rows:
                    command = [sys.executable, "-c", NAIVE,
                               os.path.join(folder, "model.joblib"), source, naive_out]
                    naive_runs.append(_timed(command, env))
            cli[rows] = _report("skfusion predict", rows, ours_runs)
            if naive_runs:
                naive[rows] = _report("naive script", rows, naive_runs)
            if rows == compare:
                ours = pd.read_parquet(out)
                theirs = pd.read_parquet(naive_out)
                assert ours["row_id"].tolist() == theirs["row_id"].tolist()
                diff = np.abs(ours[["proba_0", "proba_1"]].to_numpy()
                              - theirs[["proba_0", "proba_1"]].to_numpy()).max()
                same_labels = (ours["proba_1"] > 0.5).equals(theirs["proba_1"] > 0.5)
        smallest = sizes[0]
        print()
        print(f"throughput at {compare:,} rows: skfusion predict / naive = "
              f"{naive[compare][0] / cli[compare][0]:.2f}")
        for rows in sizes[1:]:
            print(f"peak RSS of skfusion predict, {rows:,} / {smallest:,} rows = "
                  f"{cli[rows][1] / cli[smallest][1]:.2f}")
        low = min(args.naive_rows)
        for rows in sorted(args.naive_rows)[1:]:
            print(f"peak RSS of the naive script, {rows:,} / {low:,} rows = "
                  f"{naive[rows][1] / naive[low][1]:.2f}")
        print(f"largest |probability difference| vs naive: {diff:.1e}; same labels: {same_labels}")


if __name__ == "__main__":
    main()
