"""Progress bars: verbose, the show_progress config key, TQDM_DISABLE, workers."""

# SPDX-License-Identifier: BSD-3-Clause

import os
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor

import joblib
import numpy as np
import pandas as pd
import pytest
from joblib import Parallel, delayed
from onnx import TensorProto, helper

import skfusion
from skfusion import EarlyFusion
from skfusion._progress import in_worker, progress, progress_requested, wants_progress
from skfusion.encoders import ArrayEncoder, OnnxEncoder, TextEncoder


# every row is computed by the encoder, none served by the embedding cache (conftest.py)
pytestmark = pytest.mark.usefixtures("no_embedding_cache")


def _double_model():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])
    two = helper.make_tensor("two", TensorProto.FLOAT, [1], [2.0])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "two"], ["y"])], "g", [x], [y], [two])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


@pytest.fixture(scope="module")
def text_encoder():
    return TextEncoder(backend="onnx").fit(["x"])


def _encoders(text_encoder):
    items = [np.array([float(i), 1.0]) for i in range(40)]
    return {
        "TextEncoder": (text_encoder, [f"text number {i}" for i in range(40)]),
        "OnnxEncoder": (OnnxEncoder(_double_model(), device="cpu", batch_size=8).fit(items),
                        items),
        "ArrayEncoder": (ArrayEncoder().fit(items), items),
    }


@pytest.mark.parametrize("name", ["TextEncoder", "OnnxEncoder", "ArrayEncoder"])
def test_verbose_shows_a_bar_on_stderr(name, text_encoder, capsys):
    encoder, items = _encoders(text_encoder)[name]
    encoder.set_params(verbose=0).transform(items)
    assert capsys.readouterr().err == ""
    encoder.set_params(verbose=1).transform(items)
    err = capsys.readouterr().err
    assert f"{name}: 100%" in err and "40/40" in err and "row/s" in err
    encoder.set_params(verbose=0)


@pytest.mark.parametrize("name", ["TextEncoder", "OnnxEncoder"])
def test_the_config_key_shows_a_bar(name, text_encoder, capsys):
    encoder, items = _encoders(text_encoder)[name]
    with skfusion.config_context(show_progress=True):
        encoder.set_params(verbose=0).transform(items)
    assert "40/40" in capsys.readouterr().err
    encoder.transform(items)
    assert capsys.readouterr().err == ""


def test_cached_rows_are_not_counted(text_encoder, capsys):
    texts = [f"cached text {i}" for i in range(10)]
    enc = TextEncoder(backend="onnx", verbose=1).fit(["x"])
    with skfusion.config_context(cache=True):
        enc.transform(texts[:6])
        capsys.readouterr()
        enc.transform(texts)  # 6 rows come from the cache: the bar counts the 4 encoded
    err = capsys.readouterr().err
    assert "4/4" in err and "10/10" not in err
    with skfusion.config_context(cache=True):
        enc.transform(texts)  # all cached: no bar at all
    assert capsys.readouterr().err == ""


def test_no_bar_when_nothing_runs(capsys):
    with progress(10, "nothing", verbose=1) as bar:
        pass
    assert not bar.shown and capsys.readouterr().err == ""
    with progress(0, "empty", verbose=1) as bar:
        bar.update(0)
    assert not bar.shown


def test_env_variables_reach_the_subprocess_bar():
    """``SKFUSION_SHOW_PROGRESS=1`` shows a bar; ``TQDM_DISABLE=1`` silences it (tqdm reads its
    variables when it is imported, hence fresh processes)."""
    script = textwrap.dedent(
        """
        from skfusion._progress import progress
        with progress(5, "envcheck", verbose=0) as bar:
            bar.update(5)
        """
    )

    def run(**env):
        full = {**os.environ, **env}
        full.pop("TQDM_DISABLE", None) if "TQDM_DISABLE" not in env else None
        return subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=full, timeout=120
        )

    shown = run(SKFUSION_SHOW_PROGRESS="1")
    assert shown.returncode == 0, shown.stderr
    assert "envcheck: 100%" in shown.stderr and "5/5" in shown.stderr
    silenced = run(SKFUSION_SHOW_PROGRESS="1", TQDM_DISABLE="1")
    assert silenced.returncode == 0, silenced.stderr
    assert "envcheck" not in silenced.stderr
    off = run(SKFUSION_SHOW_PROGRESS="0")
    assert "envcheck" not in off.stderr


def test_no_bar_in_workers(capsys):
    assert not in_worker()
    # joblib's loky processes and Python's thread pools count as workers
    assert Parallel(n_jobs=2, backend="loky")(delayed(in_worker)() for _ in range(2)) == [
        True,
        True,
    ]
    with ThreadPoolExecutor(max_workers=1) as pool:
        assert pool.submit(in_worker).result()
    assert Parallel(n_jobs=2, backend="threading")(delayed(in_worker)() for _ in range(2)) == [
        True,
        True,
    ]

    def count():
        with progress(3, "threaded", verbose=1) as bar:
            bar.update(3)
        return bar.shown

    with ThreadPoolExecutor(max_workers=1) as pool:
        assert pool.submit(count).result() is False
    # a plain thread of the user's is not a worker
    result = []
    thread = threading.Thread(target=lambda: result.append(count()))
    thread.start()
    thread.join()
    assert result == [True]
    assert "threaded" in capsys.readouterr().err


def test_wants_progress():
    assert not wants_progress(0) and not wants_progress(False)
    assert wants_progress(1) and wants_progress(True) and wants_progress(2)
    with skfusion.config_context(show_progress=True):
        assert wants_progress(0)


def test_without_tqdm_no_bar(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    with progress(3, "no tqdm", verbose=1) as bar:
        bar.update(3)
    assert bar.n == 3 and not bar.shown
    assert capsys.readouterr().err == ""


def test_one_bar_for_a_column_the_cache_computes_in_chunks(capsys):
    # The embedding cache computes the rows it lacks 256 at a time and calls the encoder once
    # per chunk; the bar must run once to the whole count (600 rows), not restart at 256.
    items = [np.array([float(i), 2.0]) for i in range(600)]
    enc = OnnxEncoder(_double_model(), device="cpu", batch_size=64, verbose=1).fit(items[:2])
    with skfusion.config_context(cache=True):
        skfusion.storage.cache_clear()
        enc.transform(items)
    err = capsys.readouterr().err
    assert "600/600" in err
    assert "256/256" not in err


def test_a_progress_request_holds_in_its_thread_only():
    barrier = threading.Barrier(2, timeout=30)
    seen = []

    def other():
        barrier.wait()  # the request below is open in the main thread
        seen.append(wants_progress(0))
        barrier.wait()

    thread = threading.Thread(target=other)
    thread.start()
    with progress_requested(1):
        assert wants_progress(0)
        barrier.wait()
        barrier.wait()
    thread.join(timeout=60)
    assert seen == [False]
    assert not wants_progress(0) and not skfusion.get_config()["show_progress"]
    with progress_requested(0):
        assert not wants_progress(0)


@pytest.mark.parametrize("n_jobs", [None, 2])
def test_a_verbose_fusion_estimator_passes_verbose_down_to_its_encoders(n_jobs, capsys):
    """EarlyFusion(verbose=1): its encoders draw bars in the calling thread (n_jobs=None),
    none in joblib's pool threads (n_jobs=2); no setting is changed either way."""
    items = [np.array([float(i), 1.0]) for i in range(40)]
    X = pd.DataFrame({"a": pd.Series(items, dtype=object),
                      "b": pd.Series(items[::-1], dtype=object)})
    fusion = EarlyFusion([("a", ArrayEncoder(), "a"), ("b", ArrayEncoder(), "b")],
                         n_jobs=n_jobs, verbose=1)
    with joblib.parallel_config(backend="threading"):
        fusion.fit_transform(X)
    err = capsys.readouterr().err
    assert (err.count("ArrayEncoder: 100%") == 2) is (n_jobs is None), err
    if n_jobs is not None:
        assert "ArrayEncoder" not in err
    assert not skfusion.get_config()["show_progress"] and not wants_progress(0)
    fusion.set_params(verbose=0, n_jobs=None).fit_transform(X)
    assert "ArrayEncoder" not in capsys.readouterr().err
