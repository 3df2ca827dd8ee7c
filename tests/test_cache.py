"""Tests of the embedding cache (skfusion.storage._cache) and skfusion's configuration."""

# SPDX-License-Identifier: BSD-3-Clause

import errno
import glob
import multiprocessing
import os
import pickle
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter

import numpy as np
import pytest
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import skfusion
from skfusion import EarlyFusion, FusionClassifier, LateFusionClassifier
from skfusion.datasets import load_clothing_reviews
from skfusion.encoders import TextEncoder
from skfusion.fusion._dispatch import FUSION_TYPES
from skfusion.storage import cache_clear, cache_info, cached_encode, estimator_fingerprint
from skfusion.storage._cache import cached_transform
from skfusion.storage import _cache
from skfusion.storage._cache import _DiskLayer, _item_key, _row_bytes


def fresh_rows(enc, texts):
    """The rows ``enc`` computes for ``texts`` without the cache (a fresh encode, not logged)."""
    if "log" in enc.get_params():
        enc = clone(enc).set_params(log=None).fit(None)
    return enc.transform(list(texts))


# the real offline all-MiniLM-L6-v2 (default backend: ONNX Runtime), on the CPU
TEXT = {"device": "cpu"}


def count_encoded_texts(monkeypatch):
    """Record every text that reaches TextEncoder's backend encode (ONNX or torch)."""
    seen = []
    for method in ("_encode_onnx", "_encode_torch", "_encode"):
        original = getattr(TextEncoder, method, None)
        if original is None:
            continue

        def counting(self, texts, *args, _original=original, **kwargs):
            seen.extend(texts)
            return _original(self, texts, *args, **kwargs)

        monkeypatch.setattr(TextEncoder, method, counting)
    return seen


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch):
    for var in ("SKFUSION_CACHE", "SKFUSION_CACHE_DIR", "SKFUSION_CACHE_MAX_BYTES",
                "SKFUSION_CACHE_DISK_MAX_BYTES", "SKFUSION_SHOW_PROGRESS"):
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
    assert config == {"cache": True, "cache_dir": None, "cache_max_bytes": 512 * 2**20,
                      "cache_disk_max_bytes": 4 * 2**30, "show_progress": False}
    with skfusion.config_context(cache_max_bytes="2MB", cache=False, show_progress=True,
                                 cache_disk_max_bytes="10MB"):
        assert skfusion.get_config()["cache_max_bytes"] == 2 * 2**20
        assert skfusion.get_config()["cache_disk_max_bytes"] == 10 * 2**20
        assert skfusion.get_config()["cache"] is False
        assert skfusion.get_config()["show_progress"] is True
        # per thread, never written to the environment (tests/test_config.py)
        assert not any(var.startswith("SKFUSION_CACHE") for var in os.environ)
        assert "SKFUSION_SHOW_PROGRESS" not in os.environ
    assert skfusion.get_config() == config


def _get_config_in_a_new_thread():
    """get_config() in a thread that set nothing (the environment decides), or its error."""
    out = []

    def target():
        try:
            out.append(skfusion.get_config())
        except ValueError as exc:
            out.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout=60)
    return out[0]


def test_config_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SKFUSION_CACHE", "off")
    monkeypatch.setenv("SKFUSION_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("SKFUSION_CACHE_MAX_BYTES", "1.5G")
    monkeypatch.setenv("SKFUSION_CACHE_DISK_MAX_BYTES", "20GB")
    monkeypatch.setenv("SKFUSION_SHOW_PROGRESS", "yes")
    config = _get_config_in_a_new_thread()
    assert config == {"cache": False, "cache_dir": str(tmp_path),
                      "cache_max_bytes": int(1.5 * 2**30),
                      "cache_disk_max_bytes": 20 * 2**30, "show_progress": True}
    monkeypatch.setenv("SKFUSION_CACHE", "maybe")
    with pytest.raises(ValueError, match="SKFUSION_CACHE must be"):
        raise _get_config_in_a_new_thread()
    monkeypatch.setenv("SKFUSION_CACHE", "1")
    monkeypatch.setenv("SKFUSION_SHOW_PROGRESS", "loud")
    with pytest.raises(ValueError, match="SKFUSION_SHOW_PROGRESS must be"):
        raise _get_config_in_a_new_thread()
    monkeypatch.setenv("SKFUSION_SHOW_PROGRESS", "0")
    monkeypatch.setenv("SKFUSION_CACHE_DISK_MAX_BYTES", "huge")
    with pytest.raises(ValueError, match="SKFUSION_CACHE_DISK_MAX_BYTES must be a number"):
        raise _get_config_in_a_new_thread()
    monkeypatch.delenv("SKFUSION_CACHE_DISK_MAX_BYTES")  # before the fixture's cache_clear()


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
    with pytest.raises(TypeError, match="show_progress must be True or False"):
        skfusion.set_config(show_progress="yes")
    with pytest.raises(ValueError, match="cache_disk_max_bytes must be >= 0"):
        skfusion.set_config(cache_disk_max_bytes=-5)


def test_cache_off_switch_and_env_reaches_a_child_process(
    tmp_path, hash_embedder, read_log, monkeypatch
):
    HashEmbedder = hash_embedder
    log = str(tmp_path / "log")
    enc = HashEmbedder(log=log).fit(None)
    X = np.array(["a", "b"], dtype=object)

    def child_cache():
        return subprocess.run(
            [sys.executable, "-c", "import skfusion; print(skfusion.get_config()['cache'])"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()

    with skfusion.config_context(cache=False):
        cached_transform(enc, X)
        cached_transform(enc, X)
        # this process's setting, not the environment: a child process does not inherit it
        assert child_cache() == "True"
    assert read_log(log) == ["a", "b", "a", "b"]
    assert cache_info().hits == 0
    # the environment variable is the default of every process started with it
    monkeypatch.setenv("SKFUSION_CACHE", "0")
    assert child_cache() == "False"


# --- the cache itself -----------------------------------------------------------------------
def test_each_item_computed_once_across_shuffles_clones_and_duplicates(
    tmp_path, hash_embedder, read_log
):
    HashEmbedder = hash_embedder
    log = str(tmp_path / "log")
    enc = HashEmbedder(log=log).fit(None)
    items = np.array([f"item {i}" for i in range(40)] + ["item 3", "item 3"], dtype=object)
    rng = np.random.default_rng(0)
    for _ in range(5):
        idx = rng.permutation(len(items))[:30]
        out = cached_transform(clone(enc).fit(None), items[idx])
        np.testing.assert_array_equal(out, fresh_rows(enc, items[idx]))
    out = cached_transform(pickle.loads(pickle.dumps(enc)), items)
    np.testing.assert_array_equal(out, fresh_rows(enc, items))
    counts = Counter(read_log(log))
    assert set(counts) == set(items) and set(counts.values()) == {1}
    info = cache_info()
    assert info.misses == 40 and info.memory_hits >= 40  # the last call was all hits
    assert info.rows == 40 and info.bytes == 40 * 8 * 4


def test_changed_parameter_or_model_never_returns_stale_rows(tmp_path, hash_embedder):
    HashEmbedder = hash_embedder
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


class Weighted(TransformerMixin, BaseEstimator):
    """A fake encoder whose rows depend on every element of its ``weights`` and on ``scale``."""

    def __init__(self, weights=None, scale=1.0, head=None):
        self.weights = weights
        self.scale = scale
        self.head = head

    def _skfusion_fingerprint(self):
        return estimator_fingerprint(self)

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        total = 0.0 if self.weights is None else float(np.sum(self.weights, dtype=np.float64))
        return np.array([[len(t), total * self.scale] for t in X], dtype=np.float64)


def _differ(a, b):
    return estimator_fingerprint(a) != estimator_fingerprint(b)


def test_fingerprint_sees_every_element_of_a_long_array_parameter():
    weights = np.linspace(0.0, 1.0, 2000)
    other = weights.copy()
    other[1000] += 0.5  # numpy prints the first and last three elements only
    assert repr(weights) == repr(other)
    items = np.array(["ab", "abc"], dtype=object)
    first = cached_transform(Weighted(weights).fit(None), items)
    second = cached_transform(Weighted(other).fit(None), items)
    np.testing.assert_array_equal(second, Weighted(other).transform(items))
    assert cache_info().misses == 4  # never served the other encoder's rows
    assert not np.array_equal(first, second)
    assert not _differ(Weighted(weights), Weighted(weights.copy()))  # equal values, equal keys
    assert _differ(Weighted(weights), Weighted(weights.astype(np.float32)))
    assert _differ(Weighted(weights), Weighted(weights.reshape(40, 50)))


def test_fingerprint_of_nested_estimators_is_their_parameters_all_the_way_down():
    weights = np.linspace(0.0, 1.0, 2000)
    other = weights.copy()
    other[1000] += 0.5
    # a Pipeline parameter whose step's own parameter differs (sklearn's repr elides it too)
    assert _differ(Weighted(head=make_pipeline(StandardScaler(), Weighted(weights))),
                   Weighted(head=make_pipeline(StandardScaler(), Weighted(other))))
    # an estimator parameter whose own estimator parameter differs
    assert _differ(Weighted(head=Weighted(head=Weighted(weights))),
                   Weighted(head=Weighted(head=Weighted(other))))
    # a long Pipeline: sklearn's repr elides the middle steps past 700 characters
    steps = [Weighted(scale=float(i)) for i in range(60)]
    changed = [clone(s) for s in steps]
    changed[30].set_params(scale=-1.0)
    assert _differ(Weighted(head=make_pipeline(*steps)), Weighted(head=make_pipeline(*changed)))
    # fitted state and unpicklable lazy state (a session, a lock) are not part of the key
    X = np.array([[0.0], [1.0], [2.0], [3.0]])
    fitted = LogisticRegression().fit(X, [0, 0, 1, 1])
    fitted._session = threading.Lock()
    assert not _differ(Weighted(head=fitted), Weighted(head=LogisticRegression()))
    assert _differ(Weighted(head=fitted), Weighted(head=LogisticRegression(C=2.0)))
    # an estimator class is not an estimator instance
    assert _differ(Weighted(head=LogisticRegression), Weighted(head=LogisticRegression()))


def test_fingerprint_of_floats_that_print_alike():
    assert _differ(Weighted(scale=0.1 + 0.2), Weighted(scale=0.3))
    assert _differ(Weighted(np.array([0.1 + 0.2, 1.0])), Weighted(np.array([0.3, 1.0])))
    assert _differ(Weighted(scale=np.float32(0.1)), Weighted(scale=0.1))
    assert _differ(Weighted(head=Weighted(scale=np.float32(0.1))), Weighted(head=Weighted(0.1)))
    # the key does not depend on numpy's print options (legacy scalars print as 0.1)
    with np.printoptions(legacy="1.25", precision=2):
        assert _differ(Weighted(scale=np.float32(0.1)), Weighted(scale=0.1))
        assert _differ(Weighted(head=Weighted(scale=np.float32(0.1))),
                       Weighted(head=Weighted(scale=0.1)))
        assert _differ(Weighted(np.array([0.123])), Weighted(np.array([0.124])))
    assert not _differ(Weighted(scale=0.1 + 0.2), Weighted(scale=0.30000000000000004))


def test_fingerprint_of_callables_model_and_extra_values():
    def scaled(k):
        def f(x):
            return x * k
        return f

    assert _differ(Weighted(head=scaled(2)), Weighted(head=scaled(3)))  # closure values
    assert not _differ(Weighted(head=scaled(2)), Weighted(head=scaled(2)))  # not by address
    assert _differ(Weighted(head=lambda x: x + 1), Weighted(head=lambda x: x + 2))
    weights = np.linspace(0.0, 1.0, 2000)
    other = weights.copy()
    other[1000] += 0.5
    enc = Weighted()
    assert estimator_fingerprint(enc, extra=weights) != estimator_fingerprint(enc, extra=other)
    assert estimator_fingerprint(enc, model=("name", weights)) != estimator_fingerprint(
        enc, model=("name", other))
    assert estimator_fingerprint(enc, extra=("v", 0.3)) != estimator_fingerprint(
        enc, extra=("v", 0.1 + 0.2))
    # a value that cannot be hashed by content: no fingerprint, the encoder is not cached
    locked = Weighted(head=threading.Lock())
    assert estimator_fingerprint(locked) is None
    items = np.array(["a", "a"], dtype=object)
    np.testing.assert_array_equal(cached_transform(locked, items), locked.transform(items))
    assert cache_info().misses == 0 and cache_info().rows == 0


def test_equal_configurations_have_equal_fingerprints_in_other_processes():
    code = textwrap.dedent(
        """
        import numpy as np
        from sklearn.linear_model import SGDClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import FunctionTransformer, StandardScaler
        from skfusion.storage import estimator_fingerprint

        model = make_pipeline(
            StandardScaler(),
            FunctionTransformer(np.sum, kw_args={"axis": 1, "names": {"a", "b", "c", "d"}}),
            SGDClassifier(alpha=0.1 + 0.2, class_weight={0: 1.0, 1: np.float32(2.0)}),
        )
        print(estimator_fingerprint(model, model=("weights", np.arange(2000.0)),
                                    extra={"tokens": ["x", "y"], "v": 3, 7: {"a", 1.5}}))
        """
    )
    # other hash seeds: the order of a set of strings (and joblib's order of keys that do not
    # sort) changes, the key must not
    digests = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout.strip()
        for seed in ("1", "2", "3")
    }
    assert len(digests) == 1 and re.fullmatch("[0-9a-f]{64}", digests.pop())


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


def test_memory_layer_is_bounded_lru(tmp_path, hash_embedder):
    HashEmbedder = hash_embedder
    enc = HashEmbedder(dim=256).fit(None)  # 1 KiB per row
    with skfusion.config_context(cache_max_bytes=10 * 1024):
        cached_transform(enc, np.array([f"t{i}" for i in range(30)], dtype=object))
        info = cache_info()
        assert info.rows == 10 and info.bytes == 10 * 1024
        cached_transform(enc, np.array(["t29", "t0"], dtype=object))  # t29 kept, t0 evicted
        assert cache_info().memory_hits == 1 and cache_info().misses == 31


def test_disk_layer_serves_a_fresh_process_and_recovers_from_corruption(
    tmp_path, hash_embedder, read_log
):
    HashEmbedder = hash_embedder
    cache_dir = tmp_path / "cache"
    log = str(tmp_path / "log")
    items = [f"row {i}" for i in range(20)]
    with skfusion.config_context(cache_dir=cache_dir):
        cached_transform(HashEmbedder(log=log).fit(None), np.array(items, dtype=object))
        files = glob.glob(str(cache_dir / _cache._LAYOUT / "*" / "*" / "*.row"))
        assert len(files) == 20
        with open(files[0], "wb") as f:
            f.write(b"\x93NUMPY garbage")
        script = textwrap.dedent(
            f"""
            import sys, numpy as np
            sys.path.insert(0, {os.path.dirname(__file__)!r})
            from conftest import HashEmbedder
            import skfusion
            from skfusion.storage import cache_info
            from skfusion.storage._cache import cached_transform
            skfusion.set_config(cache_dir={str(cache_dir)!r})  # settings are per process
            items = np.array({items!r}, dtype=object)
            out = cached_transform(HashEmbedder(log={log!r}).fit(None), items)
            assert np.array_equal(out, HashEmbedder().fit(None).transform(items))
            info = cache_info()
            print(info.disk_hits, info.misses)
            """
        )
        child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert child.returncode == 0, child.stderr
    assert child.stdout.split() == ["19", "1"]  # the corrupt row was recomputed
    assert len(read_log(log)) == 21


def _fill(embedder_class, cache_dir, log, items, barrier):
    """Worker of the concurrency test (runs in another process)."""
    with skfusion.config_context(cache_dir=cache_dir):
        enc = embedder_class(dim=32, log=log).fit(None)
        barrier.wait(timeout=120)  # start together
        for lo in range(0, len(items), 50):
            cached_transform(enc, np.array(items[lo : lo + 50], dtype=object))
            time.sleep(0.05)  # let the other process take the lock in between (it polls)


def test_two_processes_filling_one_disk_cache_lose_and_corrupt_nothing(
    tmp_path, hash_embedder, read_log
):
    HashEmbedder = hash_embedder
    cache_dir = str(tmp_path / "shared")
    log = str(tmp_path / "log")
    items = [f"review number {i}" for i in range(600)]
    rng = np.random.default_rng(1)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    sys.path.insert(0, os.path.dirname(__file__))
    try:
        procs = [
            ctx.Process(
                target=_fill,
                args=(HashEmbedder, cache_dir, log, list(rng.permutation(items)), barrier),
            )
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
    files = glob.glob(os.path.join(cache_dir, _cache._LAYOUT, "*", "*", "*.row"))
    assert len(files) == 600
    assert not glob.glob(os.path.join(cache_dir, _cache._LAYOUT, "*", "*", "*.tmp"))
    with skfusion.config_context(cache_dir=cache_dir):
        out = cached_transform(HashEmbedder(dim=32).fit(None), np.array(items, dtype=object))
    np.testing.assert_array_equal(out, fresh_rows(HashEmbedder(dim=32).fit(None), items))
    assert cache_info().disk_hits == 600 and cache_info().misses == 0


def test_non_cacheable_inputs_and_outputs_fall_back(hash_embedder):
    HashEmbedder = hash_embedder
    enc = HashEmbedder().fit(None)
    X2d = np.array([["a"], ["b"]], dtype=object)
    assert cached_transform(enc, X2d).shape == (2, 8)  # 2-D input: plain transform
    assert cache_info().misses == 0
    plain = StandardScaler().fit(np.ones((3, 1)))
    assert cached_transform(plain, np.ones((2, 1))).shape == (2, 1)  # no fingerprint
    assert cached_encode(enc, [], lambda items: np.empty((0, 8))).shape == (0, 8)


def test_verbose_reports_progress(capsys, hash_embedder):
    HashEmbedder = hash_embedder
    enc = HashEmbedder().fit(None)
    enc.verbose = 1
    cached_encode(enc, ["a", "b", "a"], enc.transform)
    assert "HashEmbedder: 3 rows, 0 from the cache, computing 2" in capsys.readouterr().err


# --- through the fusion estimators -----------------------------------------------------------
def test_fusion_estimators_use_the_cache(reviews, tmp_path, hash_embedder, read_log):
    HashEmbedder = hash_embedder
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


# --- verified disk rows, folders, bound, interruptions ------------------------------------------
def _row_file(cache_dir, enc, item):
    """The disk layer's file for ``item`` under ``enc``'s fingerprint, and its key."""
    fingerprint = enc._skfusion_fingerprint()
    key = _item_key(fingerprint, item, bool(getattr(enc, "_skfusion_items_are_paths", False)))
    return _DiskLayer(str(cache_dir), fingerprint, 0)._path(key), key


def _overwrite_values(path, values):
    """Write ``values`` over the row's values in place (same size, header and checksum kept)."""
    values = np.ascontiguousarray(values).tobytes()
    with open(path, "r+b") as f:
        f.seek(-len(values), os.SEEK_END)
        f.write(values)


def _tamper(kind, path, key, other_path, row):
    if kind == "other_floats":
        _overwrite_values(path, row[::-1] + 1)
    elif kind == "nan":
        _overwrite_values(path, np.full_like(row, np.nan))
    elif kind == "other_items_row":  # the whole file of another item, checksum included
        with open(other_path, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            f.write(data)
    elif kind == "wrong_shape":  # a well-formed file, for this key, with another shape
        with open(path, "wb") as f:
            f.write(_row_bytes(key, np.concatenate([row, row])))
    elif kind == "truncated":
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) - 3)
    else:  # pragma: no cover
        raise AssertionError(kind)


TAMPERING = ["other_floats", "nan", "other_items_row", "wrong_shape", "truncated"]


@pytest.mark.parametrize("kind", TAMPERING)
def test_tampered_disk_row_is_recomputed_never_served(tmp_path, hash_embedder, kind):
    cache_dir = tmp_path / "cache"
    enc = hash_embedder().fit(None)
    items = np.array([f"text {i}" for i in range(12)], dtype=object)
    fresh = fresh_rows(enc, items)
    with skfusion.config_context(cache_dir=cache_dir):
        cached_transform(enc, items)
        path, key = _row_file(cache_dir, enc, items[0])
        other, _ = _row_file(cache_dir, enc, items[1])
        _tamper(kind, path, key, other, fresh[0])
        cache_clear()  # a new process: only the disk layer is left

        out = cached_transform(enc, items)
        np.testing.assert_array_equal(out, fresh)  # the planted row is not served
        info = cache_info()
        assert (info.disk_hits, info.misses) == (11, 1)
        # nor copied into memory: a memory hit now gives the fresh row too
        np.testing.assert_array_equal(cached_transform(enc, items[:1]), fresh[:1])

        cache_clear()  # after the repair, the rewritten row verifies and is served from disk
        np.testing.assert_array_equal(cached_transform(enc, items), fresh)
        assert (cache_info().disk_hits, cache_info().misses) == (12, 0)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")
def test_disk_folders_are_digests_private_and_one_per_configuration(tmp_path, hash_embedder):
    class Piped(hash_embedder):
        def _skfusion_fingerprint(self):  # a fingerprint like TextEncoder's, with "|"
            return f"Piped|dim={self.dim}|scale={self.scale}"

    cache_dir = tmp_path / "not-yet" / "cache"
    with skfusion.config_context(cache_dir=cache_dir):
        cached_transform(Piped().fit(None), np.array(["a", "b"], dtype=object))
        cached_transform(Piped(scale=2.0).fit(None), np.array(["a"], dtype=object))
    layer = cache_dir / _cache._LAYOUT
    folders = [name for name in os.listdir(layer) if (layer / name).is_dir()]
    assert len(folders) == 2  # one folder (and lock) per configuration
    assert all(re.fullmatch("[0-9a-f]{32}", name) for name in folders)
    for root, dirs, files in os.walk(tmp_path / "not-yet"):
        assert os.stat(root).st_mode & 0o777 == 0o700, root
        for name in files:
            assert os.stat(os.path.join(root, name)).st_mode & 0o777 == 0o600, name
    assert len(glob.glob(str(cache_dir / _cache._LAYOUT / "*" / "*" / "*.row"))) == 3


def test_disk_layer_is_bounded_and_evicts_least_recently_used(tmp_path, hash_embedder):
    cache_dir = tmp_path / "cache"
    enc = hash_embedder().fit(None)
    batches = [np.array([f"{b}{i}" for i in range(20)], dtype=object) for b in "ABCD"]
    with skfusion.config_context(cache_dir=cache_dir):
        cached_transform(enc, np.array(["probe"], dtype=object))
        (row_file,) = glob.glob(str(cache_dir / _cache._LAYOUT / "*" / "*" / "*.row"))
        row_bytes = os.path.getsize(row_file)
        os.remove(row_file)
        bound = 50 * row_bytes
        with skfusion.config_context(cache_disk_max_bytes=bound):
            for batch in batches[:2]:
                cached_transform(enc, batch)
                time.sleep(0.05)  # distinct file times
            cache_clear()
            cached_transform(enc, batches[0])  # A read again: now more recent than B
            assert cache_info().disk_hits == 20
            time.sleep(0.05)
            for batch in batches[2:]:
                cached_transform(enc, batch)
                time.sleep(0.05)
    files = glob.glob(str(cache_dir / _cache._LAYOUT / "*" / "*" / "*.row"))
    assert sum(os.path.getsize(f) for f in files) <= bound
    kept = {name for batch in batches for name in batch if os.path.exists(
        _row_file(cache_dir, enc, name)[0])}
    assert not kept & set(batches[1])  # B, the least recently used, went first
    assert set(batches[3]) <= kept  # the newest rows stay
    assert len(kept & set(batches[0])) > len(kept & set(batches[1]))


def test_orphan_temp_files_are_removed(tmp_path, hash_embedder):
    cache_dir = tmp_path / "cache"
    enc = hash_embedder().fit(None)
    with skfusion.config_context(cache_dir=cache_dir):
        cached_transform(enc, np.array(["a"], dtype=object))
        path, _ = _row_file(cache_dir, enc, "a")
        old, fresh = path + ".x1.tmp", path + ".x2.tmp"
        for tmp in (old, fresh):
            with open(tmp, "wb") as f:
                f.write(b"partial")
        hours_ago = time.time() - 2 * 3600
        os.utime(old, (hours_ago, hours_ago))
        _cache._usage.clear()  # a new process, long after the last sweep: its first use sweeps
        os.remove(cache_dir / _cache._LAYOUT / "usage.json")
        cached_transform(enc, np.array(["b"], dtype=object))
    assert not os.path.exists(old) and os.path.exists(fresh)


def test_interrupted_encode_keeps_its_finished_chunks(tmp_path, hash_embedder):
    enc = hash_embedder().fit(None)
    items = [f"t{i}" for i in range(700)]  # chunks of 256: 256 + 256 + 188
    calls = []

    def interrupted(batch):
        calls.append(len(batch))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return enc.transform(batch)

    with skfusion.config_context(cache_dir=tmp_path / "cache"):
        with pytest.raises(KeyboardInterrupt):
            cached_encode(enc, items, interrupted)
        assert calls == [256, 256, 188]
        cache_clear()
        out = cached_encode(enc, items, enc.transform)
    np.testing.assert_array_equal(out, fresh_rows(enc, items))
    assert (cache_info().disk_hits, cache_info().misses) == (512, 188)


def test_full_disk_during_cache_writes_warns_once_and_goes_on_in_memory(
    tmp_path, hash_embedder, read_log, monkeypatch
):
    cache_dir = tmp_path / "cache"
    log = str(tmp_path / "log")
    enc = hash_embedder(log=log).fit(None)
    items = np.array([f"t{i}" for i in range(700)], dtype=object)  # chunks: 256 + 256 + 188
    write_atomic = _cache.write_atomic
    rows_written = []

    def full_after_one_chunk(path, data, **kwargs):
        if str(path).endswith(".row"):
            if len(rows_written) == 256:  # the disk fills up in the second chunk
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            rows_written.append(path)
        return write_atomic(path, data, **kwargs)

    monkeypatch.setattr(_cache, "write_atomic", full_after_one_chunk)
    with skfusion.config_context(cache_dir=cache_dir):
        with pytest.warns(RuntimeWarning) as record:
            out = cached_transform(enc, items)
        # all the rows, each computed once; the memory layer still serves them
        np.testing.assert_array_equal(out, fresh_rows(enc, items))
        assert read_log(log) == list(items)
        cached_transform(enc, items)
        assert cache_info().memory_hits == 700
    messages = [str(w.message) for w in record if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1, messages  # once: no more writes are tried in the call
    assert str(cache_dir) in messages[0] and "No space left on device" in messages[0]
    assert "without the disk layer" in messages[0]
    # the rows stored before the disk filled up are whole, and a rerun resumes from them
    monkeypatch.setattr(_cache, "write_atomic", write_atomic)
    cache_clear()
    with skfusion.config_context(cache_dir=cache_dir):
        out = cached_transform(enc, items)
    np.testing.assert_array_equal(out, fresh_rows(enc, items))
    assert (cache_info().disk_hits, cache_info().misses) == (256, 444)
    assert len(glob.glob(str(cache_dir / _cache._LAYOUT / "*" / "*" / "*.row"))) == 700


def test_unwritable_cache_folder_warns_and_goes_on_in_memory(hash_embedder, unwritable_folder):
    enc = hash_embedder().fit(None)
    items = np.array(["a", "b", "a"], dtype=object)
    with skfusion.config_context(cache_dir=unwritable_folder):
        with pytest.warns(RuntimeWarning, match="embedding cache") as record:
            out = cached_transform(enc, items)
        np.testing.assert_array_equal(out, fresh_rows(enc, items))
        assert cache_info().misses == 2
        with pytest.warns(RuntimeWarning, match="embedding cache"):  # each call tries again
            assert cached_transform(enc, items).tobytes() == out.tobytes()
        assert cache_info().memory_hits == 2
    (message,) = [str(w.message) for w in record if issubclass(w.category, RuntimeWarning)]
    assert str(unwritable_folder) in message and "kept in memory" in message
    assert not os.path.exists(unwritable_folder)


def test_killed_encode_keeps_its_chunks_and_releases_the_cache_lock(tmp_path):
    """kill -9 of a process in the middle of an encode (holding the folder lock): the next one
    finds the finished chunks and does not wait on the dead lock."""
    cache_dir = str(tmp_path / "cache")
    marker = tmp_path / "two-chunks-done"
    script = textwrap.dedent(
        f"""
        import time, numpy as np, skfusion
        from sklearn.base import BaseEstimator
        from skfusion.storage import cached_encode

        class Slow(BaseEstimator):
            def _skfusion_fingerprint(self):
                return "Slow|v1"

        calls = []

        def encode(batch):
            calls.append(1)
            if len(calls) == 3:
                open({str(marker)!r}, "w").close()
                time.sleep(600)  # killed here
            return np.array([[len(t), 1.0] for t in batch], dtype=np.float32)

        skfusion.set_config(cache_dir={cache_dir!r})
        cached_encode(Slow(), [f"t{{i}}" for i in range(700)], encode)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait(timeout=60)

    class Slow(BaseEstimator):
        def _skfusion_fingerprint(self):
            return "Slow|v1"

    items = [f"t{i}" for i in range(700)]
    start = time.monotonic()
    with skfusion.config_context(cache_dir=cache_dir):
        out = cached_encode(
            Slow(), items, lambda b: np.array([[len(t), 1.0] for t in b], dtype=np.float32)
        )
    assert time.monotonic() - start < 10
    np.testing.assert_array_equal(out[:, 0], [len(t) for t in items])
    assert (cache_info().disk_hits, cache_info().misses) == (512, 188)


# --- the real encoders: a row overwritten in place is recomputed --------------------------------
def _repaired_after_overwrite(enc, X, cache_dir):
    """Fill the disk layer with ``enc``'s rows of ``X``, overwrite row 0's values in place
    with row 1's (same size), and return (rows read back, fresh rows)."""
    with skfusion.config_context(cache=False):
        fresh = np.asarray(enc.transform(X))
    assert not np.allclose(fresh[0], fresh[1], atol=1e-3)
    with skfusion.config_context(cache_dir=cache_dir):
        cached_transform(enc, X)
        path, _ = _row_file(cache_dir, enc, X[0])
        _overwrite_values(path, fresh[1].astype(fresh.dtype))
        cache_clear()
        out = cached_transform(enc, X)
        assert (cache_info().disk_hits, cache_info().misses) == (len(X) - 1, 1)
    return out, fresh


def test_real_text_encoder_row_overwritten_on_disk_is_recomputed(tmp_path):
    texts = np.array(["a soft linen dress", "the zip broke on day two", "fits well"],
                     dtype=object)
    enc = TextEncoder(**TEXT).fit(texts)
    out, fresh = _repaired_after_overwrite(enc, texts, tmp_path / "cache")
    # the recomputed row is encoded alone, the fresh ones in a batch of 3 (other padding):
    # ONNX Runtime's float32 kernels may then differ in the last bits, far below the distance
    # to the planted row (asserted > 1e-3 above)
    np.testing.assert_allclose(out, fresh, rtol=0, atol=1e-5)


def test_real_audio_encoder_row_overwritten_on_disk_is_recomputed(tmp_path):
    from skfusion.datasets import load_spoken_digits
    from skfusion.encoders import AudioEncoder

    paths = np.array(load_spoken_digits().data["path"].iloc[:3].tolist(), dtype=object)
    enc = AudioEncoder().fit(paths)
    out, fresh = _repaired_after_overwrite(enc, paths, tmp_path / "cache")
    # librosa's features of one file do not depend on the other files: same code, same input
    np.testing.assert_array_equal(out, fresh)


def test_real_image_encoder_row_overwritten_on_disk_is_recomputed(tmp_path):
    from skfusion.encoders import ImageEncoder

    rng = np.random.default_rng(0)
    images = np.empty(3, dtype=object)  # one small uint8 RGB image per cell
    for i in range(3):
        images[i] = rng.integers(0, 256, size=(24, 24, 3), dtype=np.uint8)
    enc = ImageEncoder(image_size=64, resize_size=64, device="cpu").fit(images)
    out, fresh = _repaired_after_overwrite(enc, images, tmp_path / "cache")
    # one image alone vs in a batch of 3: ONNX Runtime's convolutions may pick other kernels
    # for another batch size and differ in the last float32 bits, far below the distance to
    # the planted row (asserted > 1e-3 above)
    np.testing.assert_allclose(out, fresh, rtol=0, atol=1e-5)
