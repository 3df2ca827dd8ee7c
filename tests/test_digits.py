"""The shipped Free Spoken Digit Dataset, the audio-visual digits, and fusion on them."""

# SPDX-License-Identifier: BSD-3-Clause

import os
import pickle

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from threadpoolctl import threadpool_limits
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import (
    check_do_not_raise_errors_in_init_or_set_params,
    check_estimator_repr,
    check_mixin_order,
    check_no_attributes_set_in_init,
)

from skfusion import EarlyFusion, LateFusionClassifier
from skfusion.datasets import load_audio_visual_digits, load_spoken_digits
from skfusion.encoders import ArrayEncoder, AudioEncoder


@pytest.fixture(autouse=True)
def one_blas_thread():
    """Small LogisticRegression fits: on a shared 2-core machine, BLAS threads only contend
    (a 2,700 x 40 fit took 1.3 s with 2 OpenBLAS threads under load, 0.02 s with one)."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="module")
def fsdd():
    return load_spoken_digits()


@pytest.fixture(scope="module")
def av_digits():
    return load_audio_visual_digits(random_state=0)


def test_spoken_digits_content_and_official_split(fsdd):
    frame = fsdd.frame
    assert frame.shape == (3000, 5)
    assert list(frame.columns) == ["path", "digit", "speaker", "take", "split"]
    counts = frame.groupby(["digit", "speaker"]).size()
    assert len(counts) == 60 and (counts == 50).all()  # 10 digits x 6 speakers x 50 takes
    assert set(frame["speaker"]) == set(fsdd.speakers["speaker"])
    assert ((frame["split"] == "test") == (frame["take"] <= 4)).all()
    assert fsdd.split.value_counts().to_dict() == {"train": 2700, "test": 300}
    for path, digit, speaker, take in frame[["path", "digit", "speaker", "take"]].to_numpy()[::97]:
        assert os.path.basename(path) == f"{digit}_{speaker}_{take}.wav"
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.format) == (8000, 1, "WAV")
    assert (
        "CC BY-SA"
        in open(os.path.join(os.path.dirname(frame["path"][0]), "..", "LICENSE.txt")).read()
    )
    assert "Creative Commons Attribution-ShareAlike 4.0" in fsdd.DESCR
    data, target = load_spoken_digits(return_X_y=True)
    pd.testing.assert_frame_equal(data, fsdd.data)
    assert target.tolist() == frame["digit"].tolist()


def test_audio_visual_pairing(av_digits):
    frame = av_digits.frame
    images = load_digits()
    assert av_digits.data.columns.tolist() == ["audio", "image"]
    assert (images.target[frame["image_index"]] == frame["digit"]).all()
    for img, j in zip(frame["image"][::50], frame["image_index"][::50]):
        assert img.shape == (8, 8)
        np.testing.assert_array_equal(img, images.images[j])
    train = frame[frame["split"] == "train"]["image_index"]
    test = frame[frame["split"] == "test"]["image_index"]
    assert test.is_unique and not set(test) & set(train)  # test images are never trained on
    assert train.value_counts().max() == 2  # ~150 train images per digit for 270 recordings
    again = load_audio_visual_digits(random_state=0).frame["image_index"]
    other = load_audio_visual_digits(random_state=1).frame["image_index"]
    assert (again == frame["image_index"]).all()
    assert (other != frame["image_index"]).mean() > 0.9
    data, target = load_audio_visual_digits(return_X_y=True)
    assert data.shape == (3000, 2) and (target == frame["digit"]).all()


def test_array_encoder(av_digits):
    images = av_digits.data["image"]
    encoder = ArrayEncoder().fit(images[:10])
    X = encoder.transform(images[:10])
    assert X.shape == (10, 64) and X.dtype == np.float32
    np.testing.assert_array_equal(X[3], images.iloc[3].ravel())
    assert encoder.item_shape_ == (8, 8) and encoder.get_feature_names_out()[-1] == "63"
    column = pd.Series([images.iloc[0], None, np.nan, np.zeros(5), "pixels"], index=list("abcde"))
    with pytest.raises(
        ValueError, match=r"row 3 \(index 'd'\): expected an array of shape \(8, 8\)"
    ):
        encoder.transform(column)
    out = ArrayEncoder(on_error="missing").fit(images[:2]).transform(column)
    assert np.isfinite(out[0]).all() and np.isnan(out[1:]).all()
    with pytest.raises(
        ValueError, match=r"row 1: expected an array or a sequence of numbers, got str"
    ):
        encoder.transform([images.iloc[0], "pixels"])
    with pytest.raises(ValueError, match=r"row 0: not a numeric array"):
        encoder.transform([np.array(["a"] * 64, dtype=object).reshape(8, 8)])
    with pytest.raises(ValueError, match="needs at least one non-missing array"):
        ArrayEncoder().fit([None, np.nan])
    with pytest.raises(ValueError, match=r"row 1: expected an array of shape \(2,\)"):
        ArrayEncoder().fit([np.zeros(2), np.zeros(3)])


def test_array_encoder_estimator_api(av_digits):
    encoder = ArrayEncoder()
    for check in (
        check_no_attributes_set_in_init,
        check_estimator_repr,
        check_do_not_raise_errors_in_init_or_set_params,
        check_mixin_order,
    ):
        check("ArrayEncoder", encoder)
    images = av_digits.data["image"][:5]
    with pytest.raises(NotFittedError):
        encoder.transform(images)
    assert encoder.fit(images) is encoder
    X = encoder.transform(images.to_numpy())
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(encoder)).transform(list(images)), X)
    np.testing.assert_array_equal(clone(encoder).fit_transform(images.to_frame()), X)
    frame = clone(encoder).set_output(transform="pandas").fit_transform(images)
    assert isinstance(frame, pd.DataFrame) and frame.columns[10] == "10"
    # plain lists of numbers are arrays too
    np.testing.assert_array_equal(ArrayEncoder().fit_transform([[1, 2], [3, 4]]), [[1, 2], [3, 4]])


def test_fusion_beats_both_modalities(av_digits):
    """Audio-only, image-only, early and late fusion on FSDD's official split."""
    X, y = av_digits.data, av_digits.target
    train = (av_digits.split == "train").to_numpy()
    audio = AudioEncoder(sr=8000, n_jobs=2)

    def linear():
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))

    models = {
        "audio": make_pipeline(EarlyFusion([("audio", audio, "audio")]), linear()),
        "image": make_pipeline(EarlyFusion([("image", ArrayEncoder(), "image")]), linear()),
        "early": make_pipeline(
            EarlyFusion([("audio", audio, "audio"), ("image", ArrayEncoder(), "image")]), linear()
        ),
        "late": LateFusionClassifier(
            [("audio", audio, "audio"), ("image", ArrayEncoder(), "image")],
            estimator=linear(),
            final_estimator=LogisticRegression(max_iter=1000),
            cv=5,
        ),
    }
    scores = {}
    for name, model in models.items():
        model.fit(X[train], y[train])
        scores[name] = model.score(X[~train], y[~train])
    print("audio-visual digits, test accuracy:", {k: round(v, 3) for k, v in scores.items()})
    assert scores["audio"] >= 0.85 and scores["image"] >= 0.9
    best_single = max(scores["audio"], scores["image"])
    assert scores["early"] > best_single
    assert scores["late"] > best_single
