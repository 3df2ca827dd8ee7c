"""Tests of the embedding cache (skfusion.runtime._cache) and skfusion's configuration."""

# SPDX-License-Identifier: BSD-3-Clause

import glob
import hashlib
import json
import multiprocessing
import os
import pickle
import subprocess
import sys
import textwrap
from collections import Counter

import numpy as np
import pytest
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.preprocessing import StandardScaler

import skfusion
from skfusion import EarlyFusion, FusionClassifier, LateFusionClassifier
from skfusion.datasets import load_clothing_reviews
from skfusion.encoders import TextEncoder
from skfusion.fusion._dispatch import FUSION_TYPES
from skfusion.runtime import (
    cache_clear,
    cache_info,
    cached_encode,
    cached_transform,
    estimator_fingerprint,
)


class HashEmbedder(TransformerMixin, BaseEstimator):
    """A deterministic fake encoder: each text maps to a seeded random vector.

    ``log`` (a file path, ignored by the fingerprint) receives one line per computed item, so
    tests can count the work done in any process.
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
        return np.vstack([expected_row(t, self.dim, self.scale) for t in items])


def expected_row(text, dim=8, scale=1.0):
    seed = int.from_bytes(hashlib.sha256(str(text).encode()).digest()[:8], "little")
    return (np.random.default_rng(seed).standard_normal(dim) * scale).astype(np.float32)


def read_log(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line.split("\t", 1)[1]) for line in f if line.strip()]


# the real offline all-MiniLM-L6-v2 (default backend: ONNX Runtime), on the CPU
TEXT = {"device": "cpu"}


def count_encoded_texts(monkeypatch):
    """Record every text that reaches TextEncoder's backend encode (ONNX or torch)."""
    seen = []
    for method in ("_encode_onnx", "_encode_torch", "_encode"):
        original = getattr(TextEncoder, method, None)
        if original is None:
            continue

        def counting(self, texts, _original=original):
            seen.extend(texts)
            return _original(self, texts)

        monkeypatch.setattr(TextEncoder, method, counting)
    return seen


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch):
    for var in ("SKFUSION_CACHE", "SKFUSION_CACHE_DIR", "SKFUSION_CACHE_MAX_BYTES"):
        monkeypatch.delenv(var, raising=False)
    with skfusion.config_context(cache=True, cache_dir="", cache_max_bytes=512 * 2**20):
        cache_clear()
        yield
        cache_clear()


@pytest.fixture(scope="module")
def reviews():
    X, y = load_clothing_reviews(return_X_y=True)
    X = X.iloc[:150][["Review Text", "Age", "Rating"]].copy()
    return X, y.iloc[:150].to_numpy()


# --- configuration ------------------------------------------------------------------------
def test_config_defaults_and_set_config_roundtrip():
    config = skfusion.get_config()
    assert config == {"cache": True, "cache_dir": None, "cache_max_bytes": 512 * 2**20}
    with skfusion.config_context(cache_max_bytes="2MB", cache=False):
        assert skfusion.get_config()["cache_max_bytes"] == 2 * 2**20
        assert skfusion.get_config()["cache"] is False
        assert os.environ["SKFUSION_CACHE"] == "0"  # inherited by worker processes
    assert skfusion.get_config() == config
    assert os.environ["SKFUSION_CACHE"] == "1"  # restored


def test_config_from_environment(monkeypatch, tmp_path):
    with skfusion.config_context():
        skfusion._config._explicit.clear()  # nothing set in-process: the environment decides
        monkeypatch.setenv("SKFUSION_CACHE", "off")
        monkeypatch.setenv("SKFUSION_CACHE_DIR", str(tmp_path))
        monkeypatch.setenv("SKFUSION_CACHE_MAX_BYTES", "1.5G")
        config = skfusion.get_config()
        assert config == {"cache": False, "cache_dir": str(tmp_path),
                          "cache_max_bytes": int(1.5 * 2**30)}
        monkeypatch.setenv("SKFUSION_CACHE", "maybe")
        with pytest.raises(ValueError, match="SKFUSION_CACHE must be"):
            skfusion.get_config()


def test_config_bad_values():
    with pytest.raises(TypeError, match="unknown keys"):
        skfusion.set_config(cache_size=3)
    with pytest.raises(TypeError, match="cache must be True or False"):
        skfusion.set_config(cache="yes")
    with pytest.raises(ValueError, match="cache_max_bytes must be a number"):
        skfusion.set_config(cache_max_bytes="lots")
    with pytest.raises(ValueError, match="must be >= 0"):
        skfusion.set_config(cache_max_bytes=-1)
    with pytest.raises(TypeError, match="cache_dir must be"):
        skfusion.set_config(cache_dir=3)


def test_cache_off_switch_and_env_reaches_a_child_process(tmp_path):
    log = str(tmp_path / "log")
    enc = HashEmbedder(log=log).fit(None)
    X = np.array(["a", "b"], dtype=object)
    with skfusion.config_context(cache=False):
        cached_transform(enc, X)
        cached_transform(enc, X)
        child = subprocess.run(
            [sys.executable, "-c", "import skfusion; print(skfusion.get_config()['cache'])"],
            capture_output=True, text=True, check=True,
        )
    assert child.stdout.strip() == "False"
    assert read_log(log) == ["a", "b", "a", "b"]
    assert cache_info().hits == 0


# --- the cache itself -----------------------------------------------------------------------
def test_each_item_computed_once_across_shuffles_clones_and_duplicates(tmp_path):
    log = str(tmp_path / "log")
    enc = HashEmbedder(log=log).fit(None)
    items = np.array([f"item {i}" for i in range(40)] + ["item 3", "item 3"], dtype=object)
    rng = np.random.default_rng(0)
    for _ in range(5):
        idx = rng.permutation(len(items))[:30]
        out = cached_transform(clone(enc).fit(None), items[idx])
        np.testing.assert_array_equal(out, np.vstack([expected_row(t) for t in items[idx]]))
    out = cached_transform(pickle.loads(pickle.dumps(enc)), items)
    np.testing.assert_array_equal(out, np.vstack([expected_row(t) for t in items]))
    counts = Counter(read_log(log))
    assert set(counts) == set(items) and set(counts.values()) == {1}
    info = cache_info()
    assert info.misses == 40 and info.memory_hits >= 40  # the last call was all hits
    assert info.rows == 40 and info.bytes == 40 * 8 * 4


def test_changed_parameter_or_model_never_returns_stale_rows(tmp_path):
    items = np.array(["x", "y"], dtype=object)
    a = cached_transform(HashEmbedder().fit(None), items)
    b = cached_transform(HashEmbedder(scale=2.0).fit(None), items)
    np.testing.assert_allclose(b, 2 * a)
    assert cache_info().misses == 4
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"first")
    before = estimator_fingerprint(HashEmbedder(), model=model)
    (model / "weights.bin").write_bytes(b"other weights")
    assert estimator_fingerprint(HashEmbedder(), model=model) != before
    assert estimator_fingerprint(HashEmbedder(), model=model, ignore=("log",)) == (
        estimator_fingerprint(HashEmbedder(log="elsewhere"), model=model, ignore=("log",))
    )


def test_item_kinds_paths_arrays_bytes_and_missing(tmp_path):
    seen = []

    class Sizes(BaseEstimator):
        _skfusion_items_are_paths = True

        def _skfusion_fingerprint(self):
            return estimator_fingerprint(self)

        def encode(self, items):
            seen.extend(items)
            return np.array([[float(len(_bytes_of(x)))] for x in items])

    def _bytes_of(x):
        if isinstance(x, str):
            with open(x, "rb") as f:
                return f.read()
        return bytes(x) if not isinstance(x, np.ndarray) else x.tobytes()

    enc = Sizes()
    clip = tmp_path / "clip.wav"
    clip.write_bytes(b"1234")
    copy = tmp_path / "copy.wav"
    copy.write_bytes(b"1234")
    arr = np.arange(6, dtype=np.float32)
    items = [str(clip), str(copy), arr, arr.astype(np.float64), arr.reshape(2, 3), b"raw"]
    out = cached_encode(enc, items, enc.encode)
    np.testing.assert_array_equal(out.ravel(), [4, 4, 24, 48, 24, 3])
    # the two files have the same bytes: one entry; the three arrays differ by dtype or shape
    assert len(seen) == 5
    clip.write_bytes(b"123456")  # a changed file is a different item
    os.utime(clip, ns=(1, 1))
    out = cached_encode(enc, [str(clip), str(copy)], enc.encode)
    np.testing.assert_array_equal(out.ravel(), [6, 4])
    assert len(seen) == 6
    # a path that does not exist (yet) is computed, never cached: the file may appear later
    ghost = str(tmp_path / "ghost.wav")
    with pytest.raises(FileNotFoundError):
        cached_encode(enc, [ghost], enc.encode)
    (tmp_path / "ghost.wav").write_bytes(b"12")
    assert cached_encode(enc, [ghost, b"raw"], enc.encode).ravel().tolist() == [2.0, 3.0]
    assert seen[-2:] == [ghost, ghost] and len(seen) == 8


def test_memory_layer_is_bounded_lru(tmp_path):
    enc = HashEmbedder(dim=256).fit(None)  # 1 KiB per row
    with skfusion.config_context(cache_max_bytes=10 * 1024):
        cached_transform(enc, np.array([f"t{i}" for i in range(30)], dtype=object))
        info = cache_info()
        assert info.rows == 10 and info.bytes == 10 * 1024
        cached_transform(enc, np.array(["t29", "t0"], dtype=object))  # t29 kept, t0 evicted
        assert cache_info().memory_hits == 1 and cache_info().misses == 31


def test_disk_layer_serves_a_fresh_process_and_recovers_from_corruption(tmp_path):
    cache_dir = tmp_path / "cache"
    log = str(tmp_path / "log")
    items = [f"row {i}" for i in range(20)]
    with skfusion.config_context(cache_dir=cache_dir):
        cached_transform(HashEmbedder(log=log).fit(None), np.array(items, dtype=object))
        files = glob.glob(str(cache_dir / "embeddings-v1" / "*" / "*" / "*.npy"))
        assert len(files) == 20
        with open(files[0], "wb") as f:
            f.write(b"\x93NUMPY garbage")
        script = textwrap.dedent(
            f"""
            import sys, numpy as np
            sys.path.insert(0, {os.path.dirname(__file__)!r})
            from test_cache import HashEmbedder, expected_row
            from skfusion.runtime import cached_transform, cache_info
            items = np.array({items!r}, dtype=object)
            out = cached_transform(HashEmbedder(log={log!r}).fit(None), items)
            assert np.array_equal(out, np.vstack([expected_row(t) for t in items]))
            info = cache_info()
            print(info.disk_hits, info.misses)
            """
        )
        child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert child.returncode == 0, child.stderr
    assert child.stdout.split() == ["19", "1"]  # the corrupt row was recomputed
    assert len(read_log(log)) == 21


def _fill(cache_dir, log, items, barrier):
    """Worker of the concurrency test (runs in another process)."""
    import time

    with skfusion.config_context(cache_dir=cache_dir):
        enc = HashEmbedder(dim=32, log=log).fit(None)
        barrier.wait(timeout=120)  # start together
        for lo in range(0, len(items), 50):
            cached_transform(enc, np.array(items[lo : lo + 50], dtype=object))
            time.sleep(0.01)  # let the other process take the lock in between


def test_two_processes_filling_one_disk_cache_lose_and_corrupt_nothing(tmp_path):
    cache_dir = str(tmp_path / "shared")
    log = str(tmp_path / "log")
    items = [f"review number {i}" for i in range(600)]
    rng = np.random.default_rng(1)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    sys.path.insert(0, os.path.dirname(__file__))
    try:
        procs = [
            ctx.Process(target=_fill, args=(cache_dir, log, list(rng.permutation(items)), barrier))
            for _ in range(2)
        ]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(timeout=240)
    finally:
        sys.path.remove(os.path.dirname(__file__))
    assert [proc.exitcode for proc in procs] == [0, 0]
    # every item computed exactly once across both processes, by both of them together
    counts = Counter(read_log(log))
    assert set(counts) == set(items) and set(counts.values()) == {1}
    with open(log) as f:
        assert len({line.split("\t")[0] for line in f}) == 2
    files = glob.glob(os.path.join(cache_dir, "embeddings-v1", "*", "*", "*.npy"))
    assert len(files) == 600
    assert not glob.glob(os.path.join(cache_dir, "embeddings-v1", "*", "*", "*.tmp"))
    with skfusion.config_context(cache_dir=cache_dir):
        out = cached_transform(HashEmbedder(dim=32).fit(None), np.array(items, dtype=object))
    np.testing.assert_array_equal(out, np.vstack([expected_row(t, 32) for t in items]))
    assert cache_info().disk_hits == 600 and cache_info().misses == 0


def test_non_cacheable_inputs_and_outputs_fall_back():
    enc = HashEmbedder().fit(None)
    X2d = np.array([["a"], ["b"]], dtype=object)
    assert cached_transform(enc, X2d).shape == (2, 8)  # 2-D input: plain transform
    assert cache_info().misses == 0
    plain = StandardScaler().fit(np.ones((3, 1)))
    assert cached_transform(plain, np.ones((2, 1))).shape == (2, 1)  # no fingerprint
    assert cached_encode(enc, [], lambda items: np.empty((0, 8))).shape == (0, 8)


def test_verbose_reports_progress(capsys):
    enc = HashEmbedder().fit(None)
    enc.verbose = 1
    cached_encode(enc, ["a", "b", "a"], lambda items: np.vstack([expected_row(t) for t in items]))
    assert "HashEmbedder: 3 rows, 0 from the cache, computing 2" in capsys.readouterr().err


# --- through the fusion estimators -----------------------------------------------------------
def test_fusion_estimators_use_the_cache(reviews, tmp_path):
    X, y = reviews
    log = str(tmp_path / "log")
    mods = [("text", HashEmbedder(log=log), "Review Text"), ("tab", StandardScaler(), ["Age"])]
    EarlyFusion(mods).fit_transform(X, y)
    late = LateFusionClassifier(mods, cv=3).fit(X, y)
    late.predict_proba(X.iloc[:20])
    present = set(X["Review Text"].dropna())
    counts = Counter(read_log(log))
    assert set(counts) == present and set(counts.values()) == {1}


def test_grid_search_encodes_each_review_once_with_the_real_text_encoder(reviews, monkeypatch):
    """GridSearchCV over every fusion type x 5 shuffled folds: one encode per distinct text."""
    X, y = reviews
    seen = count_encoded_texts(monkeypatch)
    modalities = [
        ("text", TextEncoder(**TEXT), "Review Text"),
        ("tab", StandardScaler(), ["Age", "Rating"]),
    ]
    grid = {"fusion": list(FUSION_TYPES)}
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    clf = FusionClassifier(
        modalities, estimator=LogisticRegression(max_iter=500), cv=3, random_state=0
    )
    search = GridSearchCV(clf, grid, cv=cv).fit(X, y)
    proba = search.predict_proba(X.iloc[:10])

    distinct = set(X["Review Text"].dropna())
    counts = Counter(seen)
    assert set(counts) == distinct
    assert max(counts.values()) == 1, counts.most_common(3)
    assert cache_info().misses == len(distinct)
    assert cache_info().hits > 5 * len(distinct)

    seen.clear()
    with skfusion.config_context(cache=False):  # the cached rows are the rows computed afresh
        proba_off = clone(search.best_estimator_).fit(X, y).predict_proba(X.iloc[:10])
    assert len(seen) >= len(distinct)
    np.testing.assert_allclose(proba, proba_off, atol=1e-5)


def test_text_encoder_caches_when_used_directly(reviews):
    texts = reviews[0]["Review Text"].iloc[:30].tolist()
    enc = TextEncoder(**TEXT).fit(texts)
    first = enc.transform(texts)
    n_present = sum(t == t and bool(str(t).strip()) for t in texts)
    assert cache_info().misses == len(set(t for t in texts if isinstance(t, str)))
    again = clone(enc).fit(texts).transform(texts[::-1])
    np.testing.assert_array_equal(again, first[::-1])
    assert cache_info().memory_hits == n_present
    # another backend is another output: its rows are computed, never taken from the cache
    changed = TextEncoder(backend="torch", batch_size=7, device="cpu").fit(texts)
    same = TextEncoder(batch_size=7, verbose=True, on_error="missing", **TEXT)
    assert changed._skfusion_fingerprint() != enc._skfusion_fingerprint()
    assert same._skfusion_fingerprint() == enc._skfusion_fingerprint()
    np.testing.assert_allclose(changed.transform(texts), first, atol=1e-4)
    assert cache_info().misses == 2 * len(set(t for t in texts if isinstance(t, str)))
