"""``skfusion predict``: input formats, part files and manifest, kill -9 and --resume, error
messages and exit status, unreadable files counted."""

# SPDX-License-Identifier: BSD-3-Clause

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import skfusion
from skfusion import EarlyFusion
from skfusion.batch import BatchPredictor
from skfusion.cli import main
from skfusion.datasets import load_clothing_reviews
from skfusion.encoders import ImageEncoder, TextEncoder

PROBA = ["proba_0", "proba_1"]


class Halver(TransformerMixin, BaseEstimator):
    """A user's own transformer: a type a .skops file does not trust by default."""

    def fit(self, X, y=None):
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        return self

    def transform(self, X):
        return np.asarray(X, dtype=float) / 2


HALVER = f"{Halver.__module__}.Halver"  # "test_cli.Halver" with pytest's default import mode


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A saved reviews model (review text + tabular) and 150 new rows in Parquet, CSV, JSONL
    (and 300 in ``more.parquet``)."""
    folder = tmp_path_factory.mktemp("cli")
    data = load_clothing_reviews()
    X, y = data.data.iloc[:200], data.target.iloc[:200]
    spec = [
        ("review", TextEncoder(device="cpu"), "Review Text"),
        ("tab", StandardScaler(), ["Age", "Rating"]),
    ]
    model = make_pipeline(EarlyFusion(spec), LogisticRegression(max_iter=500)).fit(X, y)
    skfusion.dump(model, folder / "model.skops")
    new = data.frame.iloc[3000:3300].drop(columns=["Recommended IND", "split"]).reset_index()
    new.to_parquet(folder / "more.parquet", index=False)
    new = new.iloc[:150]
    new.to_parquet(folder / "in.parquet", index=False)
    new.to_csv(folder / "in.csv", index=False)
    new.to_json(folder / "in.jsonl", orient="records", lines=True)
    return folder, model, new


def _run(*args):
    return main(["predict", *map(str, args)])


def _expected(setup, chunk):
    """What the command must write: the same chunks, scored by a BatchPredictor."""
    folder, _, new = setup
    predictor = BatchPredictor(folder / "model.skops", method="predict_proba",
                               id_columns=["row_id"], batch_size=chunk)
    return predictor(new).reset_index(drop=True)


@pytest.mark.parametrize("source", ["in.parquet", "in.csv", "in.jsonl"])
def test_inputs_to_parquet_parts_and_manifest(setup, source, tmp_path, capsys):
    folder, _, new = setup
    out = tmp_path / "scores.parquet"
    status = _run(folder / "model.skops", folder / source, "-o", out, "--method",
                  "predict_proba", "--id-col", "row_id", "--chunk-size", 60)
    assert status == 0
    assert sorted(os.listdir(out)) == ["_manifest.json", "part-000000.parquet",
                                       "part-000001.parquet", "part-000002.parquet"]
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["complete"] and manifest["rows"] == 150
    assert [p["rows"] for p in manifest["parts"]] == [60, 60, 30]
    assert not (tmp_path / "scores.parquet.partial").exists()
    if sys.platform != "win32":  # the user's output: the umask's mode, not the store's 0600
        umask = os.umask(0)
        os.umask(umask)
        for name in os.listdir(out):
            assert (out / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    result = pd.read_parquet(out)  # the folder reads as one table
    pd.testing.assert_frame_equal(result, _expected(setup, 60), check_exact=True)
    err = capsys.readouterr().err
    assert "150 rows in 3 parts" in err
    assert "scoring" not in err  # no progress bar: stderr is not a terminal


def test_csv_output_folder_and_glob_inputs(setup, tmp_path):
    folder, _, new = setup
    shards = tmp_path / "shards"
    shards.mkdir()
    for i, (start, stop) in enumerate([(0, 40), (40, 41), (41, 150)]):  # chunks span files
        new.iloc[start:stop].to_parquet(shards / f"shard-{i}.parquet", index=False)
    (shards / "_SUCCESS").write_text("")  # ignored, as Spark's marker files are
    expected = _expected(setup, 50)
    for i, source in enumerate([shards, shards / "shard-*.parquet"]):
        out = tmp_path / f"scores{i}.csv"
        assert _run(folder / "model.skops", source, "-o", out, "--method", "predict_proba",
                    "--id-col", "row_id", "--chunk-size", 50, "--quiet") == 0
        parts = sorted(os.listdir(out))
        assert parts == ["_manifest.json", "part-000000.csv", "part-000001.csv",
                         "part-000002.csv"]
        result = pd.concat(
            [pd.read_csv(out / p) for p in parts[1:]],
            ignore_index=True,
        )
        pd.testing.assert_frame_equal(result, expected, check_exact=True)


def test_keep_cols_predict_and_empty_input(setup, tmp_path):
    folder, model, new = setup
    out = tmp_path / "labels.parquet"
    assert _run(folder / "model.skops", folder / "in.parquet", "-o", out, "--keep-cols",
                "--id-col", "row_id", "-q") == 0
    result = pd.read_parquet(out)
    assert list(result.columns) == list(new.columns) + ["prediction"]
    pd.testing.assert_frame_equal(result[list(new.columns)], new)
    np.testing.assert_array_equal(result["prediction"], model.predict(new[model.feature_names_in_]))

    new.iloc[:0].to_parquet(tmp_path / "empty.parquet", index=False)
    assert _run(folder / "model.skops", tmp_path / "empty.parquet", "-o",
                tmp_path / "none.parquet", "--method", "predict_proba", "--id-col", "row_id",
                "-q") == 0
    empty = pd.read_parquet(tmp_path / "none.parquet")
    assert list(empty.columns) == ["row_id"] + PROBA and len(empty) == 0


@pytest.fixture(scope="module")
def uninterrupted(setup, tmp_path_factory):
    """The arguments of a 15-part scoring run and its output when nothing interrupts it: what
    the kill and SIGTERM tests compare their resumed runs with."""
    folder, _, _ = setup
    args = [folder / "model.skops", folder / "more.parquet", "--method", "predict_proba",
            "--id-col", "row_id", "--chunk-size", 20, "--batch-size", 7]
    whole = tmp_path_factory.mktemp("uninterrupted") / "whole.parquet"
    assert _run(*args, "-o", whole, "-q") == 0
    return args, whole


def test_kill_9_then_resume_gives_every_row_once(uninterrupted, tmp_path):
    args, whole = uninterrupted
    seed = int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)

    out = tmp_path / "scores.parquet"
    partial = tmp_path / "scores.parquet.partial"
    command = [sys.executable, "-m", "skfusion.cli", "predict", *map(str, args), "-o", str(out)]
    with open(tmp_path / "stderr.txt", "wb") as err:
        proc = subprocess.Popen(command, stderr=err)
        target = partial / f"part-{rng.randrange(10):06d}.parquet"  # one of the first 10 parts
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and not target.exists():
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.05))  # then kill at a random moment of the next part
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, (seed, (tmp_path / "stderr.txt").read_text())
    assert partial.is_dir() and not out.exists(), seed
    done = json.loads((partial / "_manifest.json").read_text())["parts"]
    assert 0 < len(done) < 15, seed  # killed part-way (15 parts in all)

    # without --resume the interrupted run is not silently replaced or continued
    assert _run(*args, "-o", out) == 1
    assert _run(*args, "-o", out, "--resume", "-q") == 0
    assert not partial.exists()
    result = pd.read_parquet(out)
    rows = pd.read_parquet(args[1])["row_id"].tolist()
    assert result["row_id"].tolist() == rows, seed  # each row once, in order
    pd.testing.assert_frame_equal(result, pd.read_parquet(whole), check_exact=True)
    assert _run(*args, "-o", out, "--resume", "-q") == 0  # a finished output: nothing to do


def test_resume_refuses_other_settings(setup, tmp_path, capsys):
    folder, _, _ = setup
    out = tmp_path / "scores.parquet"
    partial = tmp_path / "scores.parquet.partial"
    args = [folder / "model.skops", folder / "in.parquet", "-o", out, "--id-col", "row_id"]
    assert _run(*args, "--chunk-size", 100, "-q") == 0
    os.rename(out, partial)  # as if the final rename had not happened
    json_path = partial / "_manifest.json"
    manifest = json.loads(json_path.read_text())
    manifest.update(complete=False, parts=manifest["parts"][:1])
    json_path.write_text(json.dumps(manifest))
    capsys.readouterr()
    assert _run(*args, "--chunk-size", 50, "--resume") == 1
    assert "its chunk_size differ" in capsys.readouterr().err
    assert _run(*args, "--chunk-size", 100, "--resume") == 0
    assert "resuming after 100 rows already scored in 1 part." in capsys.readouterr().err
    assert len(pd.read_parquet(out)) == 150


def _garbage(folder):
    path = folder / "garbage.skops"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    return path


def _untrusted(folder):
    data = load_clothing_reviews().data.iloc[:50]
    model = make_pipeline(Halver(), LogisticRegression()).fit(data[["Age"]], data["Age"] > 40)
    skfusion.dump(model, folder / "halver.skops")
    return folder / "halver.skops"


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing model", "the model file .*absent.skops does not exist"),
        ("corrupt model", "garbage.skops is not a readable skops file"),
        ("hash mismatch", "its SHA-256 is [0-9a-f]{64}, not the expected 0{64}"),
        ("changed byte", "but its sidecar changed.skops.sha256 says [0-9a-f]{64}"),
        ("untrusted type", rf"does not trust by default: \['{re.escape(HALVER)}'\].*--trust"),
        ("missing column", "the input has no column 'Review Text', which the model needs"),
        ("output exists", "the output .*scores.parquet exists; pass --overwrite"),
        ("bad output name", "use NAME.parquet or NAME.csv"),
    ],
)
def test_errors_are_one_line_and_non_zero(setup, tmp_path, capsys, case, message):
    folder, _, new = setup
    model, source, extra = folder / "model.skops", folder / "in.parquet", []
    out = tmp_path / "scores.parquet"
    if case == "missing model":
        model = tmp_path / "absent.skops"
    elif case == "corrupt model":
        model = _garbage(tmp_path)
    elif case == "hash mismatch":
        extra = ["--sha256", "0" * 64]
    elif case == "changed byte":
        model = tmp_path / "changed.skops"
        shutil.copy(folder / "model.skops", model)
        shutil.copy(f"{folder / 'model.skops'}.sha256", f"{model}.sha256")
        data = bytearray(model.read_bytes())
        data[len(data) // 3] ^= 0x10
        model.write_bytes(bytes(data))
    elif case == "untrusted type":
        model = _untrusted(tmp_path)
    elif case == "missing column":
        source = tmp_path / "in.parquet"
        new.drop(columns="Review Text").to_parquet(source)
    elif case == "output exists":
        out.mkdir()
    elif case == "bad output name":
        out = tmp_path / "scores.txt"
    capsys.readouterr()
    assert _run(model, source, "-o", out, *extra) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("skfusion predict: error: "), err
    assert re.search(message, err), err
    assert not (tmp_path / "scores.parquet.partial").exists()


def test_trust_option_and_exit_status_of_the_command(setup, tmp_path):
    folder, _, new = setup
    model = _untrusted(tmp_path)
    command = [sys.executable, "-m", "skfusion.cli", "predict", str(model),
               str(folder / "in.parquet"), "-o", str(tmp_path / "out.parquet"), "-q"]
    run = subprocess.run(command, capture_output=True, text=True)
    assert run.returncode == 1 and f"--trust {HALVER}" in run.stderr
    # the subprocess imports Halver by the module name pytest gave this file
    root = Path(__file__).resolve().parents[Halver.__module__.count(".")]
    env = dict(os.environ, PYTHONPATH=str(root))
    run = subprocess.run(command + ["--trust", HALVER], capture_output=True, text=True,
                         env=env)
    assert run.returncode == 0, run.stderr
    assert len(pd.read_parquet(tmp_path / "out.parquet")) == len(new)


def test_progress_bar_on_a_terminal_only(setup, tmp_path):
    import fcntl
    import pty
    import struct
    import termios
    import threading

    folder, _, _ = setup
    command = [sys.executable, "-m", "skfusion.cli", "predict", str(folder / "model.skops"),
               str(folder / "in.parquet"), "--chunk-size", "100"]
    seen = {}
    for quiet in (False, True):
        master, slave = pty.openpty()  # stderr is a terminal, 100 columns wide
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
        chunks = []

        def read(fd=master, into=chunks):
            while True:
                try:
                    data = os.read(fd, 4096)
                except OSError:  # the terminal closed
                    return
                if not data:
                    return
                into.append(data)

        reader = threading.Thread(target=read)
        reader.start()
        out = tmp_path / f"quiet{quiet}.parquet"
        run = subprocess.run(command + ["-o", str(out)] + ["-q"] * quiet, stderr=slave)
        os.close(slave)
        reader.join(timeout=10)
        os.close(master)
        assert run.returncode == 0
        seen[quiet] = b"".join(chunks).decode(errors="replace")
    assert "scoring" in seen[False] and "150/150" in seen[False]  # tqdm's bar, to the end
    assert seen[True] == ""


def test_overwrite_replaces_the_output(setup, tmp_path):
    folder, _, _ = setup
    out = tmp_path / "scores.parquet"
    out.mkdir()
    (out / "old.txt").write_text("old")
    assert _run(folder / "model.skops", folder / "in.parquet", "-o", out, "--overwrite",
                "-q") == 0
    assert "old.txt" not in os.listdir(out) and len(pd.read_parquet(out)) == 150


def test_unreadable_images_are_counted(tmp_path, capsys):
    from PIL import Image

    digits = load_digits()
    paths = []
    for i in range(30):
        Image.fromarray(np.uint8(digits.images[i] * 15)).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    X = pd.DataFrame({"photo": paths, "size": digits.images[:30].sum(axis=(1, 2))})
    spec = [("image", ImageEncoder(image_size=32, resize_size=32, device="cpu"), "photo"),
            ("tab", StandardScaler(), ["size"])]
    model = make_pipeline(EarlyFusion(spec), LogisticRegression(max_iter=500))
    model.fit(X, digits.target[:30] >= 5)
    skfusion.dump(model, tmp_path / "digits.skops")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    X.loc[[4, 17, 25], "photo"] = [str(tmp_path / "junk.png"), str(tmp_path / "gone.png"), None]
    X.to_parquet(tmp_path / "photos.parquet")
    args = [tmp_path / "digits.skops", tmp_path / "photos.parquet", "--chunk-size", 10]

    capsys.readouterr()
    assert _run(*args, "-o", tmp_path / "raise.parquet") == 1
    assert "row 4" in capsys.readouterr().err  # the input's row number
    assert _run(*args, "-o", tmp_path / "missing.parquet", "--on-error", "missing") == 0
    err = capsys.readouterr().err
    assert "2 rows had an unreadable item" in err  # the None path is missing, not an error
    manifest = json.loads((tmp_path / "missing.parquet" / "_manifest.json").read_text())
    assert [p["lost_rows"] for p in manifest["parts"]] == [1, 1, 0]
    assert len(pd.read_parquet(tmp_path / "missing.parquet")) == 30


def test_demo_command_is_unchanged():
    with pytest.raises(SystemExit) as info:
        main(["demo", "--help"])
    assert info.value.code == 0


def test_sigterm_says_resume_exits_143_and_resume_completes(uninterrupted, tmp_path):
    args, whole = uninterrupted

    out = tmp_path / "scores.parquet"
    partial = tmp_path / "scores.parquet.partial"
    command = [sys.executable, "-m", "skfusion.cli", "predict", *map(str, args), "-o", str(out)]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    target = partial / "part-000002.parquet"  # mid-way: 15 parts in all
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not target.exists():
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)  # what a scheduler sends
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err  # 143, the shell's convention
    assert "run the same command with --resume to continue" in err
    assert "Traceback" not in err
    assert partial.is_dir() and not out.exists()
    done = json.loads((partial / "_manifest.json").read_text())["parts"]
    assert 0 < len(done) < 15  # stopped part-way
    assert _run(*args, "-o", out, "--resume", "-q") == 0
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(whole),
                                  check_exact=True)


def test_sigterm_handler_is_put_back_after_the_command(setup, tmp_path):
    folder, _, _ = setup
    before = signal.getsignal(signal.SIGTERM)
    assert _run(folder / "model.skops", folder / "in.parquet", "-o", tmp_path / "s.parquet",
                "-q") == 0
    assert _run(folder / "model.skops", tmp_path / "absent.parquet", "-o",
                tmp_path / "t.parquet", "-q") == 1
    assert signal.getsignal(signal.SIGTERM) is before


def _line_of(path, text):
    """The 1-based line of ``path`` where ``text`` appears first, as an editor shows it."""
    with open(path, encoding="utf-8", newline="") as fh:
        for number, line in enumerate(fh.read().split("\n"), start=1):
            if text in line:
                return number
    raise AssertionError(f"{text!r} is not in {path}")


@pytest.mark.parametrize("source", ["bad.csv", "bad.jsonl", "bad.parquet"])
def test_a_value_of_the_wrong_type_names_its_column_row_and_value(setup, tmp_path, capsys,
                                                                  source):
    folder, _, new = setup
    bad = new.copy()
    bad["Age"] = bad["Age"].astype(object)
    bad.loc[57, "Age"] = "forty-two"  # in a numeric column the model scales
    path = tmp_path / source
    if source.endswith(".csv"):
        bad.to_csv(path, index=False)
    elif source.endswith(".jsonl"):
        bad.to_json(path, orient="records", lines=True)
    else:
        bad.astype({"Age": str}).to_parquet(path, index=False)
    capsys.readouterr()
    assert _run(folder / "model.skops", path, "-o", tmp_path / "out.parquet",
                "--chunk-size", 100) == 1
    err = capsys.readouterr().err
    assert err.startswith("skfusion predict: error: ") and err.count("\n") == 1, err
    assert "column 'Age'" in err and "'forty-two'" in err and "at row 57" in err, err
    if source != "bad.parquet":  # CSV and JSONL lines, as an editor counts them
        assert f"(line {_line_of(path, 'forty-two')}" in err, err
    assert "could not convert" not in err.split("(")[0]
