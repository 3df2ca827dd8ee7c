"""Spoken-digit accuracy on FSDD's official split: AudioEncoder + a scikit-learn head.

Free Spoken Digit Dataset: 3,000 recordings ``<digit>_<speaker>_<index>.wav`` at 8 kHz; the
README's official split puts the recordings with index 0-4 in the test set (300) and the
others in the training set (2,700). The recordings are read from a folder of the dataset
(``--data``, default ``/work/shared/data/fsdd/recordings``), not from the copy skfusion ships,
so that the benchmark also checks the file names' split.

Two feature sets, both at the files' own rate (``sr=8000``, no resampling):

* ``mfcc``: 20 MFCCs, mean and standard deviation over the clip (AudioEncoder's defaults);
* ``mfcc+deltas``: 20 MFCCs and their first and second deltas (n_fft=512, hop 128, 40 mel
  bands), mean, standard deviation, min and max.

The head is ``StandardScaler`` + an RBF ``SVC`` whose ``C`` is chosen by 5-fold
cross-validation on the training set only; the test set is scored once. One line per feature
set: test accuracy, the chosen ``C`` and the encode time.

Run: ``.venv/bin/python benchmarks/bench_fsdd.py [--data DIR] [--n-jobs 2]``
"""

# SPDX-License-Identifier: BSD-3-Clause

import argparse
import glob
import os
import time

import numpy as np
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from skfusion.encoders import AudioEncoder

FEATURE_SETS = {
    "mfcc": {"sr": 8000},
    "mfcc+deltas": {
        "features": ["mfcc"],
        "stats": ["mean", "std", "min", "max"],
        "sr": 8000,
        "n_fft": 512,
        "hop_length": 128,
        "n_mels": 40,
        "mfcc_deltas": 2,
    },
}


def official_split(folder):
    paths = sorted(glob.glob(os.path.join(folder, "*.wav")))
    if len(paths) != 3000:
        raise SystemExit(f"expected FSDD's 3,000 recordings in {folder}, found {len(paths)}")
    parts = [os.path.basename(p)[: -len(".wav")].split("_") for p in paths]
    digits = np.array([int(p[0]) for p in parts])
    test = np.array([int(p[2]) < 5 for p in parts])
    return paths, digits, test


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/work/shared/data/fsdd/recordings")
    parser.add_argument("--n-jobs", type=int, default=2)
    args = parser.parse_args()
    paths, digits, test = official_split(args.data)
    for name, params in FEATURE_SETS.items():
        start = time.perf_counter()
        X = AudioEncoder(n_jobs=args.n_jobs, **params).fit_transform(paths)
        seconds = time.perf_counter() - start
        search = GridSearchCV(
            make_pipeline(StandardScaler(), SVC()),
            {"svc__C": [1, 10, 100]},
            cv=StratifiedKFold(5, shuffle=True, random_state=0),
        )
        search.fit(X[~test], digits[~test])
        accuracy = search.score(X[test], digits[test])
        print(
            f"FSDD official split ({(~test).sum()} train / {test.sum()} test), {name} "
            f"({X.shape[1]} features) + StandardScaler + SVC(C={search.best_params_['svc__C']}): "
            f"test accuracy {accuracy:.4f}; encode {seconds:.1f} s"
        )


if __name__ == "__main__":
    main()
