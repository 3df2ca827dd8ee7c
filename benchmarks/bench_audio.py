"""AudioEncoder against a plain per-file librosa loop on the 3,000 FSDD recordings.

The peer is what a user writes without skfusion::

    for path in paths:
        y, sr = librosa.load(path)                    # 22,050 Hz, soxr_hq, mono
        m = librosa.feature.mfcc(y=y, sr=sr)          # 20 MFCC
        row = np.concatenate([m.mean(1), m.std(1)])

AudioEncoder computes the same 40 statistics (its defaults) from stacked, zero-padded batches
of clips, decoding files in parallel threads with ``n_jobs``. Both sides are warmed up first
(imports, numba), then timed once each in the same process; the script prints clips/s, the
speed-up, the largest absolute difference between the two feature matrices and whether
AudioEncoder's sequential and parallel runs agree bit for bit.

``--startup`` also times a fresh process's first ``fit_transform`` of one clip, with numba's
cache warm and with an empty ``NUMBA_CACHE_DIR`` (the cost of the very first call).

Run: ``.venv/bin/python benchmarks/bench_audio.py [--n-jobs 2] [--limit N] [--startup]``
"""

# SPDX-License-Identifier: BSD-3-Clause

import argparse
import os
import subprocess
import sys
import tempfile
import time

import librosa
import numpy as np

from skfusion.datasets import load_spoken_digits
from skfusion.encoders import AudioEncoder


def per_file_loop(paths):
    rows = []
    for path in paths:
        y, sr = librosa.load(path)
        m = librosa.feature.mfcc(y=y, sr=sr)
        rows.append(np.concatenate([m.mean(axis=1), m.std(axis=1)]))
    return np.asarray(rows, dtype=np.float32)


def timed(func, *args):
    start = time.perf_counter()
    out = func(*args)
    return out, time.perf_counter() - start


def startup_seconds(path, numba_cache_dir=None):
    code = (
        "import time; t = time.perf_counter()\n"
        "from skfusion.encoders import AudioEncoder\n"
        f"AudioEncoder().fit_transform([{path!r}])\n"
        "print(time.perf_counter() - t)\n"
    )
    env = dict(os.environ)
    if numba_cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = numba_cache_dir
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return float(out.stdout.split()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-jobs", type=int, default=2, help="AudioEncoder decoding threads")
    parser.add_argument("--limit", type=int, default=None, help="use the first N recordings")
    parser.add_argument("--startup", action="store_true", help="also time a fresh process")
    args = parser.parse_args()

    paths = load_spoken_digits().frame["path"].tolist()[: args.limit]
    print(f"{len(paths)} FSDD recordings, librosa {librosa.__version__}, {os.cpu_count()} CPUs")

    # warm-up: imports, numba-compiled helpers, FFT plans
    per_file_loop(paths[:5])
    AudioEncoder().fit_transform(paths[:5])

    sequential = AudioEncoder()
    parallel = AudioEncoder(n_jobs=args.n_jobs)
    X_seq, t_seq = timed(sequential.fit_transform, paths)
    ref, t_ref = timed(per_file_loop, paths)
    X_par, t_par = timed(parallel.fit_transform, paths)

    n = len(paths)
    print(f"per-file librosa.load + mfcc loop : {n / t_ref:8.1f} clips/s ({t_ref:6.2f} s)")
    print(
        f"AudioEncoder(n_jobs=None)         : {n / t_seq:8.1f} clips/s ({t_seq:6.2f} s)  "
        f"x{t_ref / t_seq:.2f}"
    )
    print(
        f"AudioEncoder(n_jobs={args.n_jobs})            : "
        f"{n / t_par:8.1f} clips/s ({t_par:6.2f} s)  "
        f"x{t_ref / t_par:.2f}"
    )
    diff = max(np.abs(X_seq - ref).max(), np.abs(X_par - ref).max())
    print(
        f"max |AudioEncoder - librosa loop| = {diff:.2e} (features up to {np.abs(ref).max():.0f})"
    )
    if not diff < 1e-3:
        raise SystemExit("features differ from the per-file librosa computation")
    # DESIGN §8: the decoding threads must not change a clip's features
    same = np.array_equal(X_seq, X_par)
    print(
        f"AudioEncoder n_jobs=None and n_jobs={args.n_jobs} give bitwise equal features: {same}"
        + ("" if same else f" (max |diff| {np.abs(X_seq - X_par).max():.2e})")
    )

    if args.startup:
        warm = startup_seconds(paths[0])
        with tempfile.TemporaryDirectory() as empty:
            cold = startup_seconds(paths[0], numba_cache_dir=empty)
        print(
            f"fresh process, import + first clip: {warm:.1f} s with numba's cache, "
            f"{cold:.1f} s with an empty NUMBA_CACHE_DIR (first call ever)"
        )


if __name__ == "__main__":
    main()
