"""Cold start: a persisted model loads and scores its first row in a fresh process.

What a batch job or a web worker pays before its first prediction: start Python, import what
scoring needs, ``joblib.load`` the model, score one row. Two models, fitted here on a small
sample and saved to a temporary folder:

* ``reviews``: early fusion of the review and title texts (``TextEncoder``, the fused ONNX
  graph; one model shared by both encoders) and the tabular columns, as the demo builds it;
* ``audio``: early fusion of spoken-digit clips (``AudioEncoder``, librosa) and one tabular
  column, to state the extra cost of librosa and numba's first compilations. numba compiles
  librosa's kernels on their first call in every process unless its on-disk cache is warm:
  the ``warm`` run reuses ``NUMBA_CACHE_DIR`` from the run before, the ``cold`` run starts
  with an empty one.

Each figure is the median of ``--repeats`` fresh processes: "first prediction" runs from
spawning the process (interpreter start-up included) to the end of its first ``predict_proba``,
"exited" until the process has exited (interpreter teardown included). The child also reports
what it imported: torch must never load.

Run: ``.venv/bin/python benchmarks/bench_cold_start.py [--repeats 5]``
"""

# SPDX-License-Identifier: BSD-3-Clause

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import joblib, pandas as pd
t1 = time.perf_counter()
model = joblib.load(sys.argv[1])
t2 = time.perf_counter()
row = pd.read_pickle(sys.argv[2])
model.predict_proba(row)
t3 = time.perf_counter()
heavy = [m for m in ("torch", "sentence_transformers", "librosa", "numba", "onnxruntime")
         if m in sys.modules]
print(json.dumps({"import": t1 - t0, "load": t2 - t1, "predict": t3 - t2, "heavy": heavy,
                  "done_at": time.time()}))
"""


def fit_models(folder):
    import joblib
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from skfusion import EarlyFusion
    from skfusion._demo import build_modalities
    from skfusion.datasets import load_clothing_reviews, load_spoken_digits
    from skfusion.encoders import AudioEncoder

    models = {}
    reviews = load_clothing_reviews()
    X, y = reviews.data.iloc[:400], reviews.target.iloc[:400]
    model = make_pipeline(EarlyFusion(build_modalities()), LogisticRegression(max_iter=1000))
    models["reviews"] = (model.fit(X, y), reviews.data.iloc[[1000]])

    digits = load_spoken_digits()
    rows = np.arange(0, len(digits.target), 15)  # 200 clips of every digit
    frame = pd.DataFrame({"clip": digits.frame["path"].iloc[rows].tolist(),
                          "n": np.arange(len(rows), dtype=float)})
    spec = [("audio", AudioEncoder(), "clip"), ("tab", StandardScaler(), ["n"])]
    model = make_pipeline(EarlyFusion(spec), LogisticRegression(max_iter=1000))
    models["audio"] = (model.fit(frame, np.asarray(digits.target)[rows]), frame.iloc[[7]])

    paths = {}
    for name, (model, row) in models.items():
        model_path = os.path.join(folder, f"{name}.joblib")
        row_path = os.path.join(folder, f"{name}-row.pkl")
        joblib.dump(model, model_path)
        row.to_pickle(row_path)
        paths[name] = (model_path, row_path, os.path.getsize(model_path))
    return paths


def fresh_process(model_path, row_path, env):
    start, start_clock = time.perf_counter(), time.time()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, model_path, row_path],
        check=True, capture_output=True, text=True, env=env,
    )
    wall = time.perf_counter() - start
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["wall"] = wall  # until the process has exited (interpreter teardown included)
    out["first"] = out["done_at"] - start_clock  # from spawning it to its first prediction
    return out


def summarise(label, runs, size):
    keys = ("first", "wall", "import", "load", "predict")
    med = {k: statistics.median(r[k] for r in runs) for k in keys}
    heavy = sorted({m for r in runs for m in r["heavy"]})
    print(
        f"{label:<26} {size / 1e6:7.1f} MB  first prediction {med['first']:5.2f} s, exited "
        f"{med['wall']:5.2f} s  (imports {med['import']:.2f}"
        f", load {med['load']:.2f}, first predict {med['predict']:.2f})  "
        f"heavy modules: {', '.join(heavy) or 'none'}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as folder:
        paths = fit_models(folder)
        env = dict(os.environ)
        model_path, row_path, size = paths["reviews"]
        fresh_process(model_path, row_path, env)  # page cache warm, like a second job
        runs = [fresh_process(model_path, row_path, env) for _ in range(args.repeats)]
        summarise("reviews (text ONNX + tab)", runs, size)

        model_path, row_path, size = paths["audio"]
        numba_dir = os.path.join(folder, "numba-cache")
        cold = []
        for i in range(args.repeats):
            env_cold = dict(env, NUMBA_CACHE_DIR=os.path.join(numba_dir, f"cold-{i}"))
            cold.append(fresh_process(model_path, row_path, env_cold))
        summarise("audio, numba cache cold", cold, size)
        env_warm = dict(env, NUMBA_CACHE_DIR=os.path.join(numba_dir, "cold-0"))
        warm = [fresh_process(model_path, row_path, env_warm) for _ in range(args.repeats)]
        summarise("audio, numba cache warm", warm, size)


if __name__ == "__main__":
    main()
