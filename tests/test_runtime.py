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

from skfusion.runtime import default_intra_op_threads, LazySession, make_session, resolve_providers
from skfusion.exceptions import ModelBytesMismatchError
from skfusion.runtime._session import (
    clear_session,
    float16_model,
    held_session,
    lazy_session,
    run_session,
    uses_io_binding,
)
from skfusion.storage._hashing import sha256_hex
from skfusion.storage import model_store_dir
from skfusion.storage._files import file_lock
from skfusion.storage._hashing import content_hash
from skfusion.storage._store import store_get_or_create, store_path
from skfusion.runtime import _session
from skfusion.runtime._session import cuda_devices_hidden


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
    assert ("CUDAExecutionProvider" in auto) == (has_cuda and not cuda_devices_hidden())
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


class _Owner:
    """An encoder as far as lazy_session is concerned: any weak-referenceable object."""


def test_an_owner_keeps_one_session_keyed_by_its_settings(model_bytes):
    """lazy_session returns the held LazySession while the bytes object and every setting
    that shapes the session are the same, and a new one when any changes."""
    owner = _Owner()
    settings = dict(device="cpu", intra_op_num_threads=1)
    first = lazy_session(owner, model_bytes, **settings)
    assert lazy_session(owner, model_bytes, **settings) is first
    assert held_session(owner) is first
    for change in (
        {"intra_op_num_threads": 2},
        {"disabled_optimizers": ("ConstantFolding",)},
        {"expected_sha256": sha256_hex(model_bytes)},
    ):
        other = lazy_session(owner, model_bytes, **dict(settings, **change))
        assert other is not first and held_session(owner) is other
        first = lazy_session(owner, model_bytes, **settings)
    copy = bytes(bytearray(model_bytes))  # equal bytes, another object (a refit)
    assert lazy_session(owner, copy, **settings) is not first
    assert lazy_session(owner, copy, **settings).model_bytes is copy
    clear_session(owner)
    assert held_session(owner) is None
    x = np.zeros((1, 3), dtype=np.float32)
    (y,) = lazy_session(owner, copy, **settings).run(["y"], {"x": x})
    np.testing.assert_array_equal(y, x + 1)


def test_an_owners_session_is_checked_against_its_recorded_hash(model_bytes):
    owner = _Owner()
    altered = model_bytes + b"\n"  # a trailing field: still a valid model, other bytes
    with pytest.raises(ModelBytesMismatchError, match="_Owner's ONNX model bytes do not match"):
        lazy_session(owner, altered, device="cpu", expected_sha256=sha256_hex(model_bytes))
    assert held_session(owner) is None  # nothing kept, nothing built

    def refuse(lazy):
        assert lazy.input_names == ["x"]  # the check sees the built session
        raise ValueError("not this one")

    with pytest.raises(ValueError, match="not this one"):
        lazy_session(owner, model_bytes, device="cpu", check=refuse)
    assert held_session(owner) is None


def test_an_owner_carries_no_session(model_bytes):
    """Nothing is stored on the owner: its pickles and copies hold no session (they build their
    own on first use), and its session goes when it goes."""
    import copy
    import gc
    import weakref

    owner = _Owner()
    owner.model_bytes_ = model_bytes
    lazy = lazy_session(owner, model_bytes, device="cpu", intra_op_num_threads=1)
    lazy.session
    assert vars(owner) == {"model_bytes_": model_bytes}
    for twin in (copy.deepcopy(owner), pickle.loads(pickle.dumps(owner))):
        assert held_session(twin) is None
        assert lazy_session(twin, twin.model_bytes_, device="cpu") is not lazy
    gone = weakref.ref(lazy)
    del owner, lazy, twin
    gc.collect()
    assert gone() is None


def test_concurrent_first_uses_get_one_session(model_bytes):
    from concurrent.futures import ThreadPoolExecutor

    owner = _Owner()
    with ThreadPoolExecutor(max_workers=8) as pool:
        held = list(
            pool.map(lambda _: lazy_session(owner, model_bytes, device="cpu").session, range(32))
        )
    assert all(session is held[0] for session in held)


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
    for lock in (store_home / "models").glob("*.lock"):  # OS locks: files may stay, unlocked
        with file_lock(lock, timeout=0):
            pass
    with pytest.raises(TypeError, match="non-empty bytes"):
        store_get_or_create("k3", lambda: "text")
    assert not store_path("k3").exists()
    with pytest.raises(ValueError, match="non-empty str"):
        store_get_or_create("", build)


def test_store_unwritable(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("SKFUSION_HOME", str(blocker))  # a file: the folder cannot be made
    # the one storage policy (storage._files.warn_in_memory): warn naming the folder, go on
    with pytest.warns(RuntimeWarning, match="models cannot be written"):
        assert store_get_or_create("k", lambda: b"data") == b"data"


def test_store_two_processes(store_home):
    """Two processes export the same key at once: one builds, both get the same bytes."""
    script = textwrap.dedent(
        """
        import os, sys, time
        from skfusion.storage._store import store_get_or_create

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


# --- CUDA: provider choice, IOBinding, float16 (checked without a GPU) ---


@pytest.mark.parametrize(
    "value, hidden",
    [(None, False), ("", True), ("-1", True), ("0", False), ("1,0", False),
     ("GPU-8f3a", False), ("MIG-1c2d", False), ("NoDevFiles", True), (" ", True)],
)
def test_cuda_devices_hidden(monkeypatch, value, hidden):
    if value is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
    assert cuda_devices_hidden() is hidden


def test_auto_leaves_hidden_gpus_alone(monkeypatch, cuda_build):
    """The CUDA build lists its provider on a host whose GPUs are hidden (a CPU-only scoring
    process): "auto" then uses the CPU, an explicit CUDA device still asks for CUDA."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert resolve_providers("auto") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert resolve_providers("auto") == ["CPUExecutionProvider"]
    assert resolve_providers("cuda:1") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert _session._provider_entries("cuda:1")[0] == (
        "CUDAExecutionProvider", {"device_id": "1", "use_tf32": "0"}  # float32 means float32
    )


class _Recorder:
    """A stand-in for an InferenceSession and its IOBinding: records the calls made."""

    def __init__(self, providers):
        self.providers, self.calls = providers, []

    def get_providers(self):
        return self.providers

    def get_outputs(self):
        return [type("Arg", (), {"name": name})() for name in ("a", "b")]

    def run(self, names, feeds):
        self.calls.append(("run", names, sorted(feeds)))
        return ["plain"]

    def io_binding(self):
        self.calls.append(("io_binding",))
        return self

    def bind_cpu_input(self, name, value):
        self.calls.append(("bind_cpu_input", name, value.dtype.name))

    def bind_output(self, name, device_type, device_id):
        self.calls.append(("bind_output", name, device_type, device_id))

    def run_with_iobinding(self, binding):
        self.calls.append(("run_with_iobinding",))

    def copy_outputs_to_cpu(self):
        self.calls.append(("copy_outputs_to_cpu",))
        return ["bound"]


def test_run_session_binds_inputs_and_outputs_on_cuda():
    session = _Recorder(["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert uses_io_binding(session)
    feeds = {"ids": np.zeros((2, 3), dtype=np.int64), "mask": np.ones((2, 3), dtype=np.int64)}
    assert run_session(session, ["b"], feeds, device_id=1) == ["bound"]
    assert session.calls == [
        ("io_binding",),
        ("bind_cpu_input", "ids", "int64"),
        ("bind_cpu_input", "mask", "int64"),
        ("bind_output", "b", "cuda", 1),  # only the requested output leaves the GPU
        ("run_with_iobinding",),
        ("copy_outputs_to_cpu",),
    ]
    session.calls.clear()
    run_session(session, None, feeds)  # None: every output, bound on the GPU
    assert [c[1] for c in session.calls if c[0] == "bind_output"] == ["a", "b"]


def test_cpu_sessions_run_without_binding(model_bytes, monkeypatch):
    cpu = _Recorder(["CPUExecutionProvider"])
    assert not uses_io_binding(cpu)
    assert run_session(cpu, ["y"], {"x": np.zeros((1, 3), np.float32)}) == ["plain"]
    assert cpu.calls == [("run", ["y"], ["x"])]
    # a real CPU session: LazySession.run is session.run, no IOBinding is made
    lazy = LazySession(model_bytes, device="cpu")
    assert not uses_io_binding(lazy.session)
    never = lambda self: pytest.fail("an IOBinding on the CPU")  # noqa: E731
    monkeypatch.setattr(type(lazy.session), "io_binding", never, raising=False)
    (out,) = lazy.run(["y"], {"x": np.zeros((2, 3), dtype=np.float32)})
    np.testing.assert_array_equal(out, np.ones((2, 3), dtype=np.float32))


def _small_net():
    """x (N, 8) -> relu(x @ W1 + b1) @ W2: float32 weights to convert."""
    rng = np.random.default_rng(0)
    inits = [
        onnx.numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "w1"),
        onnx.numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "b1"),
        onnx.numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


@pytest.mark.kernels
def test_float16_model_keeps_float32_io_and_runs_on_cpu():
    fp32 = _small_net()
    path = list(sys.path)
    fp16 = float16_model(fp32)
    assert sys.path == path  # onnxruntime.transformers' import appends its folder: undone
    model = onnx.load_from_string(fp16)
    assert {i.data_type for i in model.graph.initializer} == {TensorProto.FLOAT16}
    for value in (*model.graph.input, *model.graph.output):  # the interface stays float32
        assert value.type.tensor_type.elem_type == TensorProto.FLOAT
    x = np.random.default_rng(1).standard_normal((5, 8)).astype(np.float32)
    expected = make_session(fp32, device="cpu").run(["y"], {"x": x})[0]
    got = make_session(fp16, device="cpu").run(["y"], {"x": x})[0]  # CPU: casts inserted
    assert got.dtype == np.float32
    # float16 keeps 11 significant bits: relative error about 5e-4 per value, summed over
    # 8 and 16 products, against outputs of magnitude about 10
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-2 * np.abs(expected).max())


def test_cuda_libraries_are_preloaded_when_a_session_cannot_use_cuda(
    model_bytes, cuda_build, monkeypatch
):
    """onnxruntime-gpu does not find the CUDA libraries of the nvidia-* wheels by itself: when
    a CUDA session comes back without CUDA, onnxruntime.preload_dlls() runs (once a process)
    and the session is made again; what it printed goes into the error of a session that
    still cannot use CUDA. A session that gets CUDA at once preloads nothing."""
    import onnxruntime

    made, preloads, missing = [], [], [True]  # the libraries are missing at first

    class Session:
        def __init__(self, model, sess_options=None, providers=None, **kwargs):
            made.append(providers)
            names = [p[0] if isinstance(p, tuple) else p for p in providers]
            self.providers = ["CPUExecutionProvider"] if missing.pop() else names
            missing.append(False)

        def get_providers(self):
            return self.providers

    def preload():
        preloads.append(True)
        print("Failed to load libcublas.so.13")

    monkeypatch.setattr(onnxruntime, "InferenceSession", Session)
    monkeypatch.setattr(onnxruntime, "preload_dlls", preload, raising=False)
    monkeypatch.setattr(_session, "_preload_messages", None)
    session = make_session(model_bytes, device="cuda")
    assert session.get_providers()[0] == "CUDAExecutionProvider"
    assert len(made) == 2 and preloads == [True]
    assert made[0][0] == ("CUDAExecutionProvider", {"device_id": "0", "use_tf32": "0"})
    # a working setup: no preload
    made.clear()
    make_session(model_bytes, device="auto")
    assert len(made) == 1 and preloads == [True]
    # still no CUDA after the preload: the error says what the preload printed
    monkeypatch.setattr(Session, "get_providers", lambda self: ["CPUExecutionProvider"])
    with pytest.raises(RuntimeError, match="fell back.*libcublas.so.13"):
        make_session(model_bytes, device="cuda")
    assert preloads == [True]  # once a process


@pytest.mark.gpu
def test_cuda_session_binds_and_matches_cpu(model_bytes):
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime has no CUDA provider here")
    if cuda_devices_hidden():
        pytest.skip("CUDA_VISIBLE_DEVICES hides every GPU")
    lazy = LazySession(model_bytes, device="cuda")
    assert uses_io_binding(lazy.session)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    (out,) = lazy.run(["y"], {"x": x})
    np.testing.assert_array_equal(out, x + 1)
