"""Tests of skfusion.runtime: providers, sessions, the lazy holder and the model store."""

# SPDX-License-Identifier: BSD-3-Clause

import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from skfusion.runtime import (
    LazySession,
    content_hash,
    default_intra_op_threads,
    make_session,
    model_store_dir,
    resolve_providers,
    store_get_or_create,
    store_path,
)


def _add_one_model():
    """A tiny real ONNX model: y = x + 1 on float32 (N, 3)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    graph = helper.make_graph([helper.make_node("Add", ["x", "one"], ["y"])], "g", [x], [y], [one])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.fixture(scope="module")
def model_bytes():
    return _add_one_model()


@pytest.fixture
def store_home(tmp_path, monkeypatch):
    monkeypatch.setenv("SKFUSION_HOME", str(tmp_path))
    return tmp_path


def test_resolve_providers():
    assert resolve_providers("cpu") == ["CPUExecutionProvider"]
    auto = resolve_providers("auto")
    assert auto[-1] == "CPUExecutionProvider"
    import onnxruntime

    has_cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    assert ("CUDAExecutionProvider" in auto) == has_cuda
    if not has_cuda:
        with pytest.raises(RuntimeError, match="no CUDAExecutionProvider"):
            resolve_providers("cuda")
        with pytest.raises(RuntimeError, match="no CUDAExecutionProvider"):
            resolve_providers("cuda:1")
    with pytest.raises(ValueError, match="not understood"):
        resolve_providers("gpu")
    with pytest.raises(ValueError, match="not understood"):
        resolve_providers("cuda:x")


def test_make_session_runs(model_bytes):
    session = make_session(model_bytes, device="cpu", intra_op_num_threads=1)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    (y,) = session.run(None, {"x": x})
    np.testing.assert_array_equal(y, x + 1)
    assert session.get_providers() == ["CPUExecutionProvider"]


def test_make_session_from_path(model_bytes, tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(model_bytes)
    session = make_session(path, device="cpu")
    assert [i.name for i in session.get_inputs()] == ["x"]


@pytest.mark.parametrize(
    "bad, match",
    [
        (b"", "empty"),
        (b"this is not a protobuf at all \x00\xff", "not a valid ONNX model"),
        ("truncated", "not a valid ONNX model"),
    ],
)
def test_make_session_bad_bytes(model_bytes, bad, match):
    if bad == "truncated":
        bad = model_bytes[: len(model_bytes) // 2]
    with pytest.raises(ValueError, match=match):
        make_session(bad, device="cpu")


def test_default_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert default_intra_op_threads() == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert default_intra_op_threads() == len(os.sched_getaffinity(0))


def _worker_threads():
    return os.environ.get("OMP_NUM_THREADS"), default_intra_op_threads()


def test_default_threads_in_joblib_worker():
    """joblib's loky workers get cpu_count // n_jobs threads, not every core each."""
    from joblib import Parallel, delayed

    usable = len(os.sched_getaffinity(0))
    for env, count in Parallel(n_jobs=2)(delayed(_worker_threads)() for _ in range(2)):
        assert env is not None
        assert count == min(int(env), usable)
        assert count <= max(usable // 2, 1)


def test_lazy_session_pickle(model_bytes):
    lazy = LazySession(model_bytes, device="cpu", intra_op_num_threads=1)
    assert lazy._session is None
    assert lazy.input_names == ["x"] and lazy.output_names == ["y"]
    assert lazy._session is not None
    restored = pickle.loads(pickle.dumps(lazy))
    assert restored._session is None  # the session is not pickled
    x = np.ones((4, 3), dtype=np.float32)
    np.testing.assert_array_equal(restored.run(["y"], {"x": x})[0], x + 1)
    assert "bytes" in repr(restored)


def test_lazy_sessions_of_one_bytes_object_share_a_session(model_bytes):
    """Two holders of the same bytes and settings (two encoders of a pipeline loaded by
    joblib, which keeps one bytes object for both) build the session once."""
    a = LazySession(model_bytes, device="cpu", intra_op_num_threads=1)
    b = LazySession(model_bytes, device="cpu", intra_op_num_threads=1)
    assert a.session is b.session
    # other settings, or equal bytes in another object, get their own session
    assert LazySession(model_bytes, device="cpu", intra_op_num_threads=2).session is not a.session
    copy = bytes(bytearray(model_bytes))
    assert LazySession(copy, device="cpu", intra_op_num_threads=1).session is not a.session
    # both holders loaded from one pickle share it too
    c, d = pickle.loads(pickle.dumps([a, b]))
    assert c.model_bytes is d.model_bytes and c.session is d.session


def test_store_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("SKFUSION_HOME", str(tmp_path / "home"))
    assert model_store_dir() == tmp_path / "home" / "models"
    monkeypatch.delenv("SKFUSION_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert model_store_dir() == tmp_path / "xdg" / "skfusion" / "models"


def test_store_get_or_create(store_home):
    calls = []

    def build():
        calls.append(1)
        return b"exported"

    assert store_get_or_create("k1", build) == b"exported"
    assert store_get_or_create("k1", build) == b"exported"
    assert calls == [1]
    assert store_path("k1").read_bytes() == b"exported"
    assert store_path("k1").parent == store_home / "models"
    assert store_get_or_create("k2", lambda: b"other") == b"other"
    assert not list((store_home / "models").glob("*.tmp"))
    assert not list((store_home / "models").glob("*.lock"))
    with pytest.raises(TypeError, match="non-empty bytes"):
        store_get_or_create("k3", lambda: "text")
    assert not store_path("k3").exists()
    with pytest.raises(ValueError, match="non-empty str"):
        store_get_or_create("", build)


def test_store_unwritable(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("SKFUSION_HOME", str(blocker))  # a file: the folder cannot be made
    with pytest.warns(RuntimeWarning, match="cannot be created"):
        assert store_get_or_create("k", lambda: b"data") == b"data"


def test_store_two_processes(store_home):
    """Two processes export the same key at once: one builds, both get the same bytes."""
    script = textwrap.dedent(
        """
        import os, sys, time
        from skfusion.runtime import store_get_or_create

        def build():
            open(os.path.join(sys.argv[1], f"built-{os.getpid()}"), "w").close()
            time.sleep(1.0)  # a slow export, so that the other process arrives meanwhile
            return os.urandom(1 << 20)

        marks = sys.argv[1]
        open(os.path.join(marks, f"ready-{os.getpid()}"), "w").close()
        while len([f for f in os.listdir(marks) if f.startswith("ready-")]) < 2:
            time.sleep(0.005)  # start together once both have imported skfusion
        data = store_get_or_create("shared-key", build)
        sys.stdout.write(data[:16].hex())
        """
    )
    marks = store_home / "marks"
    marks.mkdir()
    env = {**os.environ, "SKFUSION_HOME": str(store_home)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(marks)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert outs[0][0] == outs[1][0] != ""
    assert len(list(marks.glob("built-*"))) == 1  # one export only
    assert store_path("shared-key").read_bytes()[:16].hex() == outs[0][0]


def test_content_hash(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"weights")
    from pathlib import Path

    assert content_hash(Path(f)) == content_hash(Path(f))
    assert content_hash(Path(f)) != content_hash(b"weights")
    assert content_hash("a", "b") != content_hash("ab")
