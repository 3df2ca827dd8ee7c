"""skfusion's configuration is per thread, never written to the environment, and carried into
joblib workers (threads, loky processes, dask tasks) by skfusion's own Parallel/delayed."""

# SPDX-License-Identifier: BSD-3-Clause

import os
import threading
import time
import warnings

import joblib
import numpy as np
import pandas as pd
import pytest
import sklearn
from sklearn.base import BaseEstimator, TransformerMixin

import skfusion
from skfusion import EarlyFusion
from skfusion._parallel import Parallel, delayed
from skfusion._progress import wants_progress

ENV_VARS = ("SKFUSION_CACHE", "SKFUSION_CACHE_DIR", "SKFUSION_CACHE_MAX_BYTES",
            "SKFUSION_CACHE_DISK_MAX_BYTES", "SKFUSION_SHOW_PROGRESS")


@pytest.fixture(autouse=True)
def no_config_env(monkeypatch):
    """None of skfusion's variables in the environment: every thread starts from the defaults."""
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)


def _skfusion_env():
    return {var: os.environ.get(var) for var in ENV_VARS}


def _in_new_thread(func):
    """``func()`` run in a fresh thread of the user's: its result, or the exception it raised."""
    out = []

    def target():
        try:
            out.append(func())
        except Exception as exc:  # handed back to the test
            out.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout=60)
    return out[0]


def test_set_config_and_config_context_never_write_the_environment():
    before = _skfusion_env()
    with skfusion.config_context(cache=False, cache_dir="/tmp/somewhere", cache_max_bytes="2MB",
                                 cache_disk_max_bytes="10MB", show_progress=True):
        assert skfusion.get_config()["cache"] is False
        assert _skfusion_env() == before
    with skfusion.config_context():
        skfusion.set_config(cache=False, show_progress=True)
        assert _skfusion_env() == before
    assert skfusion.get_config()["cache"] is True
    assert _skfusion_env() == before


def test_environment_variables_are_the_defaults_of_every_thread(monkeypatch):
    monkeypatch.setenv("SKFUSION_CACHE", "off")
    monkeypatch.setenv("SKFUSION_CACHE_MAX_BYTES", "2MB")
    # a thread that set nothing reads the environment (when it asks: not at import)
    assert _in_new_thread(skfusion.get_config)["cache"] is False
    with skfusion.config_context(cache=True):
        assert skfusion.get_config()["cache"] is True  # this thread's setting comes first
        config = _in_new_thread(skfusion.get_config)
        assert (config["cache"], config["cache_max_bytes"]) == (False, 2 * 2**20)


def test_a_setting_made_in_one_thread_is_not_seen_in_another():
    barrier = threading.Barrier(2, timeout=30)
    seen = {}

    def other():
        skfusion.set_config(cache_max_bytes="1MB", show_progress=True)  # lasting, in its thread
        barrier.wait()  # both threads have made their change
        seen["other"] = skfusion.get_config()
        barrier.wait()

    thread = threading.Thread(target=other)
    with skfusion.config_context(cache=False):
        thread.start()
        barrier.wait()
        barrier.wait()
        mine = skfusion.get_config()
    thread.join(timeout=60)
    assert (mine["cache"], mine["cache_max_bytes"], mine["show_progress"]) == (
        False, 512 * 2**20, False)
    assert (seen["other"]["cache"], seen["other"]["cache_max_bytes"],
            seen["other"]["show_progress"]) == (True, 2**20, True)
    assert skfusion.get_config()["cache"] is True


# --- overlapping verbose fits ---------------------------------------------------------------
# Shared by the Gate transformers of two overlapping fits (module state: a Barrier or an Event
# cannot be a parameter, which clone deep-copies).
_STATE = {}


class Gate(TransformerMixin, BaseEstimator):
    """Passes its column through. Its fit waits on the barrier shared with the other fit and the
    test, then (with ``after``) until the fit named ``after`` has returned, and records what it
    sees under ``key``."""

    def __init__(self, key=None, after=None):
        self.key = key
        self.after = after

    def fit(self, X, y=None):
        _STATE["barrier"].wait()  # both fits are inside fit, with their verbose passed down
        if self.after is not None:
            assert _STATE["done"][self.after].wait(timeout=30)
        _STATE["seen"][self.key] = {
            "wants_progress": wants_progress(0),
            "show_progress": skfusion.get_config()["show_progress"],
        }
        return self

    def transform(self, X):
        return np.asarray(X, dtype=float)


def test_overlapping_verbose_fits_leave_config_and_environment_as_they_were(hash_embedder):
    """Two EarlyFusion(verbose=1) fits overlap in two threads, and the first to start ends
    first: the order in which process-wide saves and restores leave show_progress on for good."""
    X = pd.DataFrame({"text": [f"review {i}" for i in range(12)], "x": np.arange(12.0)})
    y = np.arange(12) % 2
    _STATE.clear()
    _STATE.update(barrier=threading.Barrier(3, timeout=30), seen={},
                  done={"first": threading.Event(), "second": threading.Event()})
    config_before, env_before = skfusion.get_config(), _skfusion_env()
    errors = []

    def fit(key, after):
        try:
            EarlyFusion([("text", hash_embedder(), "text"), ("x", Gate(key, after), ["x"])],
                        verbose=1).fit(X, y)
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            _STATE["done"][key].set()

    threads = [threading.Thread(target=fit, args=("first", None)),
               threading.Thread(target=fit, args=("second", "first"))]
    for thread in threads:
        thread.start()
    _STATE["barrier"].wait()  # both fits are running: this thread's settings are untouched
    during = skfusion.get_config(), _skfusion_env()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert skfusion.get_config() == config_before
    assert _skfusion_env() == env_before
    assert not wants_progress(0)
    assert during == (config_before, env_before)
    # verbose=1 reached each fit's encoders (they would draw bars) without changing a setting
    assert _STATE["seen"] == {
        "first": {"wants_progress": True, "show_progress": False},
        "second": {"wants_progress": True, "show_progress": False},
    }


# --- carried into joblib workers ------------------------------------------------------------
def _config_and_pid():
    return skfusion.get_config(), sklearn.get_config()["assume_finite"], os.getpid()


@pytest.mark.parametrize("backend", ["loky", "threading"])
def test_the_callers_config_reaches_joblib_workers(backend, tmp_path):
    settings = dict(cache=False, cache_dir=str(tmp_path / "cache"), cache_max_bytes=3 * 2**20,
                    cache_disk_max_bytes=7 * 2**20, show_progress=True)
    with skfusion.config_context(**settings), sklearn.config_context(assume_finite=True):
        expected = skfusion.get_config()
        results = Parallel(n_jobs=2, backend=backend)(
            delayed(_config_and_pid)() for _ in range(4)
        )
    assert expected == settings
    for config, assume_finite, pid in results:
        assert config == expected
        assert assume_finite is True  # scikit-learn's configuration travels too
        assert (pid != os.getpid()) is (backend == "loky")
    # the workers' own settings are back to theirs after each task: a call made without the
    # context gets the defaults
    results = Parallel(n_jobs=2, backend=backend)(delayed(_config_and_pid)() for _ in range(4))
    assert all(config == skfusion.get_config() for config, _, _ in results)


def test_no_disk_layer_is_carried_even_where_the_environment_names_one(monkeypatch, tmp_path):
    # cache_dir=None in the caller overrides a worker's SKFUSION_CACHE_DIR (threads see the
    # variable as soon as it is set)
    monkeypatch.setenv("SKFUSION_CACHE_DIR", str(tmp_path))
    with skfusion.config_context(cache_dir=""):
        assert skfusion.get_config()["cache_dir"] is None
        results = Parallel(n_jobs=2, backend="threading")(
            delayed(_config_and_pid)() for _ in range(2)
        )
    assert [config["cache_dir"] for config, _, _ in results] == [None, None]
    assert skfusion.get_config()["cache_dir"] == str(tmp_path)


def test_the_callers_config_reaches_dask_tasks():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, protocol="tcp", host="127.0.0.1",
        dashboard_address=None,
    ) as cluster, distributed.Client(cluster):
        with skfusion.config_context(cache=False, cache_max_bytes="5MB"):
            expected = skfusion.get_config()
            with joblib.parallel_config(backend="dask"):
                results = Parallel(n_jobs=2)(delayed(_config_and_pid)() for _ in range(2))
    assert [config for config, _, _ in results] == [expected, expected]


@pytest.mark.filterwarnings("ignore:`sklearn.utils.parallel.Parallel` needs")
def test_mixing_with_joblibs_delayed_warns():
    with pytest.warns(UserWarning, match="skfusion._parallel.delayed"):
        assert Parallel(n_jobs=1)(joblib.delayed(len)("abc") for _ in range(1)) == [3]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Parallel(n_jobs=1)(delayed(len)("abc") for _ in range(1)) == [3]


def _sleepy_pid():
    time.sleep(0.3)  # long enough that both workers take a task
    return os.getpid()


def test_a_config_change_leaves_the_loky_workers_running():
    """No shutdown of joblib's reusable loky workers (private executor flags) on a change."""
    with joblib.parallel_config(backend="loky"):
        before = set(Parallel(n_jobs=2)(delayed(_sleepy_pid)() for _ in range(4)))
        with skfusion.config_context(cache=False, show_progress=True):
            during = set(Parallel(n_jobs=2)(delayed(_sleepy_pid)() for _ in range(4)))
        after = set(Parallel(n_jobs=2)(delayed(_sleepy_pid)() for _ in range(4)))
    assert os.getpid() not in before
    assert before & during and during & after, (before, during, after)
