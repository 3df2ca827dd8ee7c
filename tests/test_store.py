"""Tests of the verified model store and the file lock (skfusion.storage._store)."""

# SPDX-License-Identifier: BSD-3-Clause

import errno
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from skfusion.exceptions import ModelStoreIntegrityError
from skfusion.runtime import make_session
from skfusion.storage._files import file_lock
from skfusion.storage._store import store_entry, store_get_or_create, store_path
from skfusion.storage import _store
from skfusion.storage._hashing import sha256_hex


def _affine_model(weight):
    """A real ONNX model ``y = x @ weight`` with input ``x`` and output ``y`` (float32)."""
    weight = np.asarray(weight, dtype=np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", weight.shape[0]])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", weight.shape[1]])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "affine",
        [x],
        [y],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


GENUINE_W = np.arange(64, dtype=np.float32).reshape(8, 8) / 64.0


@pytest.fixture
def store_home(tmp_path, monkeypatch):
    monkeypatch.setenv("SKFUSION_HOME", str(tmp_path))
    monkeypatch.setattr(_store, "_INTERNED", {})  # every read goes to the files
    return tmp_path


def _run(model_bytes, x):
    session = make_session(model_bytes, device="cpu", intra_op_num_threads=1)
    return session.run(["y"], {"x": x})[0]


def _planted():
    # another valid model with the same input and output names and shapes
    return _affine_model(-GENUINE_W.T)


def _bit_flipped(genuine):
    # flip one bit in 1% of the weight bytes (every 100th, the top byte of a float32), in
    # place: same size, still a loadable model
    data = bytearray(genuine)
    raw = GENUINE_W.tobytes()
    start = bytes(data).index(raw)
    for offset in range(3, len(raw), 100):
        data[start + offset] ^= 0x40
    return bytes(data)


@pytest.mark.parametrize("tamper", ["planted", "bit_flipped"])
def test_tampered_entry_is_rebuilt_with_a_warning_naming_the_file(store_home, tamper):
    genuine = _affine_model(GENUINE_W)
    builds = []

    def build():
        builds.append(1)
        return genuine

    data, sha = store_entry("affine-v1", build)
    assert data == genuine and sha == sha256_hex(genuine) and builds == [1]
    path = store_path("affine-v1")
    bad = _planted() if tamper == "planted" else _bit_flipped(genuine)
    assert bad != genuine
    x = np.ones((2, 8), dtype=np.float32)
    assert not np.allclose(_run(bad, x), _run(genuine, x))  # the tampered model runs, wrongly
    path.write_bytes(bad)
    _store._INTERNED.clear()  # a new process

    with pytest.warns(UserWarning, match=f"{path.name}.*does not match the SHA-256.*rebuilding"):
        data, sha = store_entry("affine-v1", build)
    assert data == genuine and sha == sha256_hex(genuine) and builds == [1, 1]
    assert path.read_bytes() == genuine  # repaired on disk
    np.testing.assert_array_equal(_run(data, x), _run(genuine, x))
    _store._INTERNED.clear()
    assert store_get_or_create("affine-v1", build) == genuine and builds == [1, 1]


@pytest.mark.parametrize("tamper", ["planted", "bit_flipped"])
def test_tampered_entry_without_a_builder_is_refused_naming_the_file(store_home, tamper):
    genuine = _affine_model(GENUINE_W)
    store_get_or_create("affine-v1", lambda: genuine)
    path = store_path("affine-v1")
    path.write_bytes(_planted() if tamper == "planted" else _bit_flipped(genuine))
    _store._INTERNED.clear()
    with pytest.raises(ModelStoreIntegrityError, match=f"{path.name} does not match"):
        store_entry("affine-v1")
    with pytest.raises(FileNotFoundError, match="has no entry"):
        store_entry("never-stored")


def test_entry_of_an_older_skfusion_without_a_record_is_rebuilt(store_home):
    genuine = _affine_model(GENUINE_W)
    path = store_path("old-entry")
    path.parent.mkdir(parents=True)
    path.write_bytes(_planted())  # no .sha256 record beside it
    with pytest.warns(UserWarning, match=f"{path.name} has no recorded SHA-256"):
        assert store_get_or_create("old-entry", lambda: genuine) == genuine
    record = path.with_name(path.name + ".sha256").read_text()
    assert record == f"{sha256_hex(genuine)}  {path.name}\n"  # sha256sum -c reads it


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")
def test_store_files_are_private(store_home):
    store_get_or_create("k", lambda: b"weights")
    path = store_path("k")
    for f in (path, path.with_name(path.name + ".sha256"), path.with_suffix(".lock")):
        assert f.stat().st_mode & 0o777 == 0o600, f


def test_unwritable_store_folder_builds_in_memory_with_a_warning(
    store_home, unwritable_folder, monkeypatch
):
    monkeypatch.setenv("SKFUSION_HOME", str(unwritable_folder))
    genuine = _affine_model(GENUINE_W)
    with pytest.warns(RuntimeWarning) as record:
        data, sha = store_entry("affine-v1", lambda: genuine)
    assert data == genuine and sha == sha256_hex(genuine)
    (message,) = [str(w.message) for w in record if issubclass(w.category, RuntimeWarning)]
    assert str(unwritable_folder / "models") in message and "in memory" in message
    assert not os.path.exists(unwritable_folder)


def test_full_disk_while_storing_builds_in_memory_with_a_warning(store_home, monkeypatch):
    write_atomic = _store.write_atomic
    written = []

    def full_disk(path, data, **kwargs):
        if written:  # room for the record, not for the entry
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written.append(path)
        return write_atomic(path, data, **kwargs)

    monkeypatch.setattr(_store, "write_atomic", full_disk)
    genuine = _affine_model(GENUINE_W)
    with pytest.warns(RuntimeWarning) as record:
        data, sha = store_entry("affine-v1", lambda: genuine)
    assert data == genuine and sha == sha256_hex(genuine)
    (message,) = [str(w.message) for w in record if issubclass(w.category, RuntimeWarning)]
    assert str(store_home / "models") in message and "No space left on device" in message
    # no entry that passes verification was left behind: the next build writes it whole
    monkeypatch.setattr(_store, "write_atomic", write_atomic)
    monkeypatch.setattr(_store, "_INTERNED", {})
    assert not store_path("affine-v1").exists()
    assert store_entry("affine-v1", lambda: genuine) == (genuine, sha)
    assert store_entry("affine-v1") == (genuine, sha)


def test_orphan_temp_files_are_removed(store_home):
    folder = store_home / "models"
    folder.mkdir()
    old, fresh = folder / "x.bin.abc.tmp", folder / "y.bin.def.tmp"
    old.write_bytes(b"partial")
    fresh.write_bytes(b"being written")
    hours_ago = time.time() - 2 * 3600
    os.utime(old, (hours_ago, hours_ago))
    store_get_or_create("k", lambda: b"weights")
    assert not old.exists()  # left by a writer killed long ago
    assert fresh.exists()  # may belong to a live writer


def test_a_killed_lock_holder_does_not_block_the_next_build(store_home):
    """kill -9 of a process holding the store lock during its first build (export), then a
    second build finishes at once: the OS released the dead process's lock."""
    from filelock import Timeout

    marker = store_home / "building"
    script = textwrap.dedent(
        """
        import sys, time
        from skfusion.storage._store import store_get_or_create

        def build():
            open(sys.argv[1], "w").close()  # the lock is held now
            time.sleep(600)  # a long export, killed meanwhile
            return b"never"

        store_get_or_create("first-fit", build)
        """
    )
    env = {**os.environ, "SKFUSION_HOME": str(store_home)}
    proc = subprocess.Popen([sys.executable, "-c", script, str(marker)], env=env)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None, "the child died before building"
            assert time.monotonic() < deadline, "the child never started building"
            time.sleep(0.05)
        lock = store_path("first-fit").with_suffix(".lock")
        assert lock.exists()
        with pytest.raises(Timeout):  # held while the child lives
            with file_lock(lock, timeout=0.2):
                pass
    finally:
        proc.kill()  # SIGKILL: no cleanup runs in the child
        proc.wait(timeout=60)
    assert lock.exists()  # the dead process's lock file is still there ...
    start = time.monotonic()
    data = store_get_or_create("first-fit", lambda: b"exported", timeout=300)
    elapsed = time.monotonic() - start
    assert data == b"exported"
    assert elapsed < 10, elapsed  # ... and did not make us wait (timeout was 300 s)


def test_file_lock_excludes_a_second_holder(tmp_path):
    from filelock import Timeout

    path = tmp_path / "x.lock"
    with file_lock(path):
        with pytest.raises(Timeout):
            file_lock(path, timeout=0.1).acquire()
    with file_lock(path, timeout=0.1):
        pass


def test_planted_model_under_the_real_image_encoder_is_rebuilt_not_run(store_home):
    """The issue's case: a valid ONNX model planted over the built-in image model's entry."""
    from skfusion.encoders import ImageEncoder

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size=(24, 24, 3), dtype=np.uint8) for _ in range(2)]

    def make():
        return ImageEncoder(image_size=64, resize_size=64, device="cpu")

    enc = make().fit(images)
    genuine = enc.transform(images)
    entries = sorted((store_home / "models").glob("*.bin"))
    assert entries
    for entry in entries:
        entry.write_bytes(_planted())
    _store._INTERNED.clear()  # a new process

    with pytest.warns(UserWarning, match=f"{entries[0].name}.*rebuilding") as record:
        refit = make().fit(images)
    named = {str(w.message).split("entry ")[1].split(" ")[0] for w in record
             if "model store entry" in str(w.message)}
    assert {os.path.basename(p) for p in named} == {e.name for e in entries}
    assert refit.n_features_out_ == enc.n_features_out_ == genuine.shape[1]
    # the same export of the same weights, run on the same CPU and batch: float32 rounding at
    # most (a re-export may order the graph's nodes differently)
    np.testing.assert_allclose(refit.transform(images), genuine, rtol=0, atol=1e-6)
