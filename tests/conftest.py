"""Fixtures shared by several test modules.

Test modules never import from one another (``from test_cache import ...`` ties a module to
another's name and import side effects); what more than one of them needs lives here.
"""

# SPDX-License-Identifier: BSD-3-Clause

import hashlib
import json
import os

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.preprocessing import StandardScaler

from skfusion.datasets import load_audio_visual_digits, load_clothing_reviews
from skfusion.encoders import AudioEncoder, ImageEncoder, TextEncoder
from skfusion.storage import estimator_fingerprint


@pytest.fixture(scope="module")
def no_embedding_cache():
    """Every row is computed by its encoder, none served by the embedding cache.

    For modules that check what an encoder computes (or count its rows): they mark themselves
    with ``pytestmark = pytest.mark.usefixtures("no_embedding_cache")``.
    """
    import skfusion

    with skfusion.config_context(cache=False):
        yield


class HashEmbedder(TransformerMixin, BaseEstimator):
    """A deterministic fake text encoder: each text maps to a seeded random vector.

    ``log`` (a file path, ignored by the fingerprint) receives one line per computed item, so
    tests can count the work done in any process. Defined at module level so that loky
    workers unpickle it by reference (pytest puts ``tests/`` on ``sys.path``, and loky's
    workers inherit it).
    """

    _skfusion_stateless = True

    def __init__(self, dim=8, scale=1.0, log=None):
        self.dim = dim
        self.scale = scale
        self.log = log

    def _skfusion_fingerprint(self):
        return estimator_fingerprint(self, ignore=("log",))

    def fit(self, X, y=None):
        self.n_features_out_ = self.dim
        return self

    def transform(self, X):
        items = list(X)
        if self.log:
            with open(self.log, "a") as f:
                f.write("".join(f"{os.getpid()}\t{json.dumps(t)}\n" for t in items))
        return np.vstack([_hash_row(t, self.dim, self.scale) for t in items])


def _hash_row(text, dim, scale):
    seed = int.from_bytes(hashlib.sha256(str(text).encode()).digest()[:8], "little")
    return (np.random.default_rng(seed).standard_normal(dim) * scale).astype(np.float32)


def _read_log(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line.split("\t", 1)[1]) for line in f if line.strip()]


@pytest.fixture
def hash_embedder():
    """The :class:`HashEmbedder` class: ``hash_embedder(log=...)`` makes one."""
    return HashEmbedder


@pytest.fixture
def read_log():
    """``read_log(path)``: the texts a :class:`HashEmbedder` logged to ``path``, in order."""
    return _read_log


@pytest.fixture
def text_encoder_params():
    """TextEncoder parameters of the tests: the real offline all-MiniLM-L6-v2 (default
    backend, ONNX Runtime) on the CPU, so a GPU host gives the same features."""
    return {"device": "cpu"}


# --- mixed text / audio / image / tabular data, all shipped with skfusion or scikit-learn ---

N_MIXED = 40  # a few dozen rows: enough for 3-fold stacking of LogisticRegression heads


@pytest.fixture(scope="session")
def mixed_data():
    """Four real modalities in one DataFrame, and a binary target.

    Rows pair, by position, a clothing review (``review``, text; rows 3 and 35 set to None: a
    missing modality) and the reviewer's ``age`` (tabular) with a Free Spoken Digit recording
    (``audio``, a wav path) and a scikit-learn ``load_digits`` image of the same digit
    (``image``, an 8x8 uint8 array), both from :func:`load_audio_visual_digits`. The target
    is "digit >= 5", balanced. Returns ``(X, y)``.
    """
    reviews = load_clothing_reviews().data.iloc[:N_MIXED]
    digits = load_audio_visual_digits(random_state=0).frame
    # 4 recordings per digit from FSDD's test split, interleaved so that any slice mixes digits
    digits = digits[digits["split"] == "test"].groupby("digit").head(N_MIXED // 10)
    digits = digits.sort_values(["take", "speaker", "digit"], kind="stable").iloc[:N_MIXED]
    # grey levels 0-16 to uint8, as ImageEncoder takes integer arrays in [0, 255]
    images = np.empty(N_MIXED, dtype=object)  # one 8x8 array per cell
    for i, img in enumerate(digits["image"]):
        images[i] = np.round(img * (255.0 / 16.0)).astype(np.uint8)
    text = reviews["Review Text"].to_numpy(dtype=object)
    text[[3, 35]] = None
    X = pd.DataFrame(
        {
            "review": text,
            "audio": digits["audio"].to_numpy(),
            "image": images,
            "age": reviews["Age"].to_numpy(dtype=np.float64),
        }
    )
    y = (digits["digit"].to_numpy() >= 5).astype(np.int64)
    return X, y


@pytest.fixture
def mixed_modalities(text_encoder_params):
    """``mixed_modalities()``: a fresh modality spec for :func:`mixed_data`'s columns.

    The image encoder runs the built-in MobileNetV2 on 64x64 crops instead of 224x224 (the
    8x8 digits hold no more detail, and it is 14 times faster).
    """
    def make():
        return [
            ("text", TextEncoder(**text_encoder_params), "review"),
            ("audio", AudioEncoder(), "audio"),
            ("image", ImageEncoder(image_size=64, resize_size=64, device="cpu"), "image"),
            ("tab", StandardScaler(), ["age"]),
        ]

    return make


@pytest.fixture
def cuda_build(monkeypatch):
    """onnxruntime as its CUDA build lists its providers, on a host whose GPU is visible."""
    import onnxruntime

    monkeypatch.setattr(
        onnxruntime,
        "get_available_providers",
        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


@pytest.fixture(params=["under-a-file", "read-only"])
def unwritable_folder(request, tmp_path):
    """A folder this process cannot create or write in (the model store's or the cache's).

    "under-a-file": a path below a regular file, so that mkdir fails (NotADirectoryError)
    for every user, root included. "read-only": below a folder of mode 0500 (PermissionError),
    for a normal user only: root writes whatever the mode, so it is skipped as root.
    """
    if request.param == "under-a-file":
        blocker = tmp_path / "a-file"
        blocker.write_bytes(b"")
        return blocker / "skfusion"
    if not hasattr(os, "geteuid") or os.geteuid() == 0:
        pytest.skip("file modes do not stop root (or there are none)")
    parent = tmp_path / "read-only"
    parent.mkdir()
    parent.chmod(0o500)
    request.addfinalizer(lambda: parent.chmod(0o700))
    return parent / "skfusion"
