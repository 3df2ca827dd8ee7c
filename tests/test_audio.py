"""AudioEncoder on the real Free Spoken Digit Dataset and on every kind of bad input."""

# SPDX-License-Identifier: BSD-3-Clause

import io
import os
import pickle
import subprocess
import sys

import librosa
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from threadpoolctl import threadpool_limits
from sklearn.base import clone
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

import skfusion
from skfusion.datasets import load_spoken_digits
from skfusion.encoders import AudioEncoder
from skfusion.encoders._base import EncodingError
from skfusion.storage import cache_clear
from skfusion.storage._cache import cached_transform

# every row is computed by the encoder, none served by the embedding cache (conftest.py): the
# encoder's own transform looks rows up in the cache too, which would make comparisons of two
# transforms compare cached rows; the tests of the cache turn it on themselves
pytestmark = pytest.mark.usefixtures("no_embedding_cache")

ALL_FEATURES = [
    "mfcc", "logmel", "chroma", "contrast", "centroid", "bandwidth", "rolloff", "flatness",
    "zcr", "rms",
]  # fmt: skip


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
def fsdd_features(fsdd):
    """Default features (20 MFCC mean/std at 22,050 Hz) of all 3,000 recordings, computed once."""
    return AudioEncoder(n_jobs=2).fit_transform(fsdd.data["path"])


@pytest.fixture(scope="module")
def wav_bytes(fsdd):
    with open(fsdd.frame["path"][0], "rb") as f:
        return f.read()


def assert_same_features(actual, desired):
    """Equal up to float32 rounding: ``|actual - desired| <= 1e-6 x`` each feature's scale.

    DESIGN §8 lets an item's features vary with the CPU's instruction set by float rounding
    only. AudioEncoder computes in float64 and casts to float32 once, so on one machine the
    outputs compared here are bitwise equal (measured for batch sizes 1/7/64, n_jobs 1/2, BLAS
    threads 1/2 and the cache on/off). That is not promised on every x86-64 CPU: numpy's
    SIMD sums, ``log`` and ``exp``, and OpenBLAS's kernels (in the deltas' edge fit) may
    round the last float64 bit differently there, which can move a float32 result by one
    unit (6e-8 of its value) or leave 1e-14 instead of 0 in the std of a constant band.
    1e-6 of the feature's scale (its largest magnitude over the rows, and over the frames
    for sequences) admits that. It still catches what this test was written for: with float32
    BLAS products over the padded batch, the all-features encoder below moved by 5.6e-6 of
    the scale (spectral flatness, MFCC deltas) with its batch mates and BLAS threads.
    """
    actual, desired = np.asarray(actual, np.float64), np.asarray(desired, np.float64)
    assert actual.shape == desired.shape
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(desired))  # missing rows
    axes = tuple(range(desired.ndim - 1))
    scale = np.nanmax(np.abs(desired), axis=axes, keepdims=True)
    error = np.abs(np.nan_to_num(actual) - np.nan_to_num(desired))
    worst = float(np.max(error / np.where(scale > 0, scale, 1.0)))
    assert worst <= 1e-6, f"features differ by {worst:.2e} of their scale"


def librosa_reference(y, sr, n_mfcc=20):
    m = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=n_mfcc)
    return np.concatenate([m.mean(axis=1), m.std(axis=1)])


# ----------------------------------------------------------------------------- real data
def test_fsdd_official_split_accuracy(fsdd, fsdd_features):
    train = (fsdd.split == "train").to_numpy()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(fsdd_features[train], fsdd.target[train])
    accuracy = model.score(fsdd_features[~train], fsdd.target[~train])
    print(f"FSDD official split, AudioEncoder (MFCC mean+std) + LogisticRegression: {accuracy:.3f}")
    assert accuracy >= 0.85  # published MFCC+SVM repository figures: 84-92%
    assert fsdd_features.shape == (3000, 40)
    assert fsdd_features.dtype == np.float32 and np.isfinite(fsdd_features).all()


@pytest.mark.kernels
def test_matches_per_file_librosa(fsdd, fsdd_features):
    # shortest, longest and a few ordinary clips: the stacked, padded batch must not leak
    lengths = [sf.info(p).frames for p in fsdd.frame["path"]]
    rows = [int(np.argmin(lengths)), int(np.argmax(lengths)), 7, 1500, 2999]
    for i in rows:
        y, sr = librosa.load(fsdd.frame["path"][i])
        np.testing.assert_allclose(fsdd_features[i], librosa_reference(y, sr), rtol=1e-4, atol=1e-3)


def _corrupt_folder(tmp_path, fsdd, bad_row):
    folder = tmp_path / "clips"
    folder.mkdir()
    paths = list(fsdd.frame["path"])
    for i, path in enumerate(paths):
        target = folder / os.path.basename(path)
        if i == bad_row:
            target.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt this is not audio at all")
        else:
            target.symlink_to(path)
    return [str(folder / os.path.basename(p)) for p in paths]


def test_folder_of_3000_with_one_corrupt_file(tmp_path, fsdd, fsdd_features):
    bad_row = 1234
    paths = _corrupt_folder(tmp_path, fsdd, bad_row)
    bad_name = os.path.basename(paths[bad_row])
    with pytest.raises(EncodingError, match=rf"row {bad_row}: cannot decode.*{bad_name}"):
        AudioEncoder(n_jobs=2).fit_transform(paths)

    X = AudioEncoder(n_jobs=2, on_error="missing").fit_transform(pd.Series(paths))
    assert X.shape == (3000, 40)
    missing = np.isnan(X).all(axis=1)
    assert missing.sum() == 1 and missing[bad_row]
    np.testing.assert_allclose(X[~missing], fsdd_features[~missing], rtol=1e-6, atol=1e-5)


# ----------------------------------------------------------------------------- input kinds
@pytest.mark.kernels
def test_input_kinds_give_the_same_features(fsdd, wav_bytes, tmp_path):
    path = fsdd.frame["path"][0]
    y8, sr8 = sf.read(path, dtype="float32")
    stereo = tmp_path / "stereo.wav"
    sf.write(stereo, np.stack([y8, y8], axis=1), sr8, subtype="FLOAT")
    flac = tmp_path / "clip.flac"
    sf.write(flac, y8, sr8, subtype="PCM_16")
    items = [
        path,
        wav_bytes,
        (y8, sr8),
        y8,  # bare array at input_sr
        np.stack([y8, y8]),  # (channels, samples)
        (np.round(y8 * 32768).astype(np.int16), 8000),  # integer PCM
        str(stereo),
        flac,  # a path-like
    ]
    X = AudioEncoder(input_sr=8000).fit_transform(items)
    assert np.isfinite(X).all()
    for row in X[1:]:
        np.testing.assert_allclose(row, X[0], rtol=1e-5, atol=1e-4)


def test_lossy_formats_decode(fsdd, tmp_path):
    y, sr = sf.read(fsdd.frame["path"][10], dtype="float32")
    paths = []
    for fmt in ("ogg", "mp3"):
        p = tmp_path / f"clip.{fmt}"
        sf.write(p, y, sr)
        paths.append(str(p))
    X = AudioEncoder().fit_transform(paths)
    assert np.isfinite(X).all()
    ref = AudioEncoder().fit_transform([fsdd.frame["path"][10]])[0]
    assert np.corrcoef(X[0], ref)[0, 1] > 0.99


def test_missing_rows_give_nan(fsdd):
    path = fsdd.frame["path"][3]
    items = [None, path, np.nan, "", "  ", b"", np.array([], dtype=np.float32), pd.NA]
    encoder = AudioEncoder(n_mfcc=13).fit(items)
    X = encoder.transform(pd.Series(items, dtype=object))
    assert X.shape == (8, 26)
    present = ~np.isnan(X).any(axis=1)
    assert present.tolist() == [False, True] + [False] * 6
    values, mask = encoder.transform_sequence(items)
    assert mask[1].any() and not mask[[0, 2, 3, 4, 5, 6, 7]].any()
    assert np.isnan(values[0]).all() and np.isfinite(values[1]).all()


def test_silent_but_valid_clip_is_audio(tmp_path):
    silent = tmp_path / "silence.wav"
    sf.write(silent, np.zeros(4000, dtype=np.float32), 8000)
    X = AudioEncoder(features=["mfcc", "rms", "zcr"], sr=8000).fit_transform(
        [str(silent), np.zeros(4000, dtype=np.float32)]
    )
    assert np.isfinite(X).all()
    # exact: two all-zero clips of one length take the same operations on exact zeros
    np.testing.assert_array_equal(X[0], X[1])
    names = AudioEncoder(features=["mfcc", "rms", "zcr"]).fit([str(silent)]).get_feature_names_out()
    assert X[0][list(names).index("rms_mean")] == 0


# ----------------------------------------------------------------------------- bad inputs
def _bad_files(tmp_path, wav_bytes):
    y, sr = sf.read(io.BytesIO(wav_bytes), dtype="float32")
    files = {}
    files["empty.wav"] = b""
    files["garbage.wav"] = b"this is a text file, not audio " * 20
    files["truncated.wav"] = wav_bytes[: len(wav_bytes) // 2]
    files["header_only.wav"] = wav_bytes[:44]
    files["header_cut.wav"] = wav_bytes[:30]
    for fmt in ("flac", "ogg", "mp3"):
        buf = io.BytesIO()
        sf.write(buf, y, sr, format=fmt.upper())
        files[f"truncated.{fmt}"] = buf.getvalue()[: len(buf.getvalue()) // 2]
    zero_frames = io.BytesIO()
    sf.write(zero_frames, np.zeros(0, dtype=np.float32), 8000, format="WAV")
    files["zero_frames.wav"] = zero_frames.getvalue()
    nan_wav = io.BytesIO()
    sf.write(nan_wav, np.full(100, np.nan, dtype=np.float32), 8000, format="WAV", subtype="FLOAT")
    files["nan.wav"] = nan_wav.getvalue()
    paths = {}
    for name, content in files.items():
        p = tmp_path / name
        p.write_bytes(content)
        paths[name] = str(p)
    return paths


BAD_FILE_MESSAGES = {
    "empty.wav": "cannot decode audio",
    "garbage.wav": "cannot decode audio",
    "truncated.wav": "truncated file",
    "header_only.wav": "truncated file",
    "header_cut.wav": "cannot decode audio",
    "truncated.flac": "cannot decode audio",
    "truncated.ogg": "cannot decode audio",
    "truncated.mp3": "truncated file",
    "zero_frames.wav": "no audio samples",
    "nan.wav": "NaN or infinite",
}


def test_bad_files_raise_naming_row_and_path(tmp_path, fsdd, wav_bytes):
    good = fsdd.frame["path"][0]
    for name, path in _bad_files(tmp_path, wav_bytes).items():
        with pytest.raises(EncodingError, match=rf"row 1: .*{BAD_FILE_MESSAGES[name]}.*{name}"):
            AudioEncoder().fit_transform([good, path])
        X = AudioEncoder(on_error="missing").fit_transform([good, path])
        assert np.isfinite(X[0]).all() and np.isnan(X[1]).all(), name


def test_bad_bytes_raise(wav_bytes):
    with pytest.raises(EncodingError, match=r"row 0: truncated file"):
        AudioEncoder().fit_transform([wav_bytes[:1000]])
    with pytest.raises(EncodingError, match=r"row 0: cannot decode audio"):
        AudioEncoder().fit_transform([b"not audio at all"])


@pytest.mark.parametrize(
    "item, message",
    [
        ("/no/such/dir/clip.wav", "no such audio file"),
        (42, "expected a file path, bytes, a 1-D array"),
        ([0.1, 0.2], "expected a file path, bytes, a 1-D array"),
        ({"a": 1}, "expected a file path, bytes, a 1-D array"),
        (np.array(["a", "b"]), "must be numeric"),
        (np.zeros((2, 2, 2)), "must be 1-D"),
        (np.zeros((400, 2)), "looks like \\(samples, channels\\)"),
        (np.array([0.1, np.nan, 0.2]), "NaN or infinite"),
        (np.array([0.1, np.inf]), "NaN or infinite"),
        ((np.zeros(100),), "must be \\(samples, sample_rate\\)"),
        ((np.zeros(100), -8000), "sample rate must be a positive number"),
        ((np.zeros(100), "8000"), "sample rate must be a positive number"),
        (([0.0, 0.1], 8000), "samples must be a numpy array"),
        ((np.zeros(0), 8000), "the clip has no samples"),
    ],
)
def test_bad_items(item, message):
    good = np.random.default_rng(0).normal(size=4000).astype(np.float32)
    column = np.empty(2, dtype=object)
    column[0], column[1] = good, item
    with pytest.raises(EncodingError, match=rf"row 1: .*{message}"):
        AudioEncoder(sr=8000).fit_transform(column)
    X = AudioEncoder(sr=8000, on_error="missing").fit_transform(column)
    assert np.isfinite(X[0]).all() and np.isnan(X[1]).all()


def test_directory_is_not_a_file(tmp_path):
    with pytest.raises(EncodingError, match="row 0 .index 'a'.: no such audio file"):
        AudioEncoder().fit(pd.Series([str(tmp_path)], index=["a"]))


def test_single_string_or_wide_input_is_rejected(fsdd):
    with pytest.raises(ValueError, match="wrap it in a list"):
        AudioEncoder().fit(fsdd.frame["path"][0])
    with pytest.raises(ValueError, match="encodes one column"):
        AudioEncoder().fit(fsdd.frame[["path", "speaker"]])


# ----------------------------------------------------------------------------- features
@pytest.mark.kernels
def test_all_features_match_per_clip_librosa(fsdd):
    lengths = np.array([sf.info(p).frames for p in fsdd.frame["path"]])
    rows = [int(np.argmin(lengths)), int(np.argmax(lengths)), 100, 2000]
    paths = fsdd.frame["path"][rows].tolist()
    sr, n_fft, hop = 16000, 1024, 256
    encoder = AudioEncoder(
        ALL_FEATURES, ["mean", "max", "p10"], sr=sr, n_fft=n_fft, hop_length=hop, n_mfcc=13,
        n_mels=40,
    ).fit(paths)  # fmt: skip
    X = encoder.transform(paths)
    names = list(encoder.get_feature_names_out())
    assert len(names) == X.shape[1] == encoder.n_features_out_
    for i, path in enumerate(paths):
        y, _ = librosa.load(path, sr=sr)
        S = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop))
        mel = librosa.feature.melspectrogram(S=S**2, sr=sr, n_fft=n_fft, n_mels=40)
        ref = {
            "mfcc": librosa.feature.mfcc(
                y=y, sr=sr, n_mfcc=13, n_fft=n_fft, hop_length=hop, n_mels=40
            ),
            "logmel": librosa.power_to_db(mel),
            "chroma": librosa.feature.chroma_stft(S=S**2, sr=sr, tuning=0.0),
            "contrast": librosa.feature.spectral_contrast(S=S, sr=sr),
            "centroid": librosa.feature.spectral_centroid(S=S, sr=sr),
            "bandwidth": librosa.feature.spectral_bandwidth(S=S, sr=sr),
            "rolloff": librosa.feature.spectral_rolloff(S=S, sr=sr),
            "flatness": librosa.feature.spectral_flatness(S=S),
            "zcr": librosa.feature.zero_crossing_rate(
                np.pad(y, n_fft // 2), frame_length=n_fft, hop_length=hop, center=False
            ),
            "rms": librosa.feature.rms(y=y, frame_length=n_fft, hop_length=hop),
        }
        for feature, matrix in ref.items():
            for stat, value in [
                ("mean", matrix.mean(axis=1)),
                ("max", matrix.max(axis=1)),
                ("p10", np.percentile(matrix, 10, axis=1)),
            ]:
                if matrix.shape[0] == 1:
                    cols = [names.index(f"{feature}_{stat}")]
                else:
                    cols = [names.index(f"{feature}_{j}_{stat}") for j in range(matrix.shape[0])]
                np.testing.assert_allclose(
                    X[i, cols], value, rtol=1e-4, atol=1e-3, err_msg=f"{feature}_{stat}, clip {i}"
                )


def test_feature_names_and_deltas():
    encoder = AudioEncoder(
        ["mfcc", "zcr", "contrast"], ["mean", "p90"], n_mfcc=3, mfcc_deltas=2, sr=8000
    )
    clip = np.random.default_rng(0).normal(size=8000).astype(np.float32)
    X = encoder.fit_transform([clip])
    names = encoder.get_feature_names_out().tolist()
    assert names[:7] == [
        "mfcc_0_mean", "mfcc_1_mean", "mfcc_2_mean", "mfcc_0_p90", "mfcc_1_p90", "mfcc_2_p90",
        "mfcc_delta_0_mean",
    ]  # fmt: skip
    assert "mfcc_delta2_2_p90" in names and "zcr_mean" in names and "contrast_5_p90" in names
    assert "contrast_6_mean" not in names  # only 5 octave bands above 200 Hz fit under 4 kHz
    assert X.shape == (1, len(names)) == (1, 3 * 2 * 3 + 2 + 6 * 2)
    assert encoder.frame_feature_names_.tolist()[:4] == [
        "mfcc_0",
        "mfcc_1",
        "mfcc_2",
        "mfcc_delta_0",
    ]
    # a clip of 2 frames has no usable delta window: deltas are 0, not an error
    short = AudioEncoder(n_mfcc=3, mfcc_deltas=1, sr=8000).fit_transform([clip[:600]])
    assert short.shape == (1, 12) and np.all(short[0, 6:] == 0)


@pytest.mark.kernels
def test_sequence_matches_pooled_features(fsdd):
    paths = fsdd.frame["path"][[0, 1, 2000]].tolist() + [None]
    encoder = AudioEncoder(["mfcc", "rms"], ["mean"], sr=8000, hop_length=256).fit(paths)
    values, mask = encoder.transform_sequence(paths)
    lengths = [sf.info(p).frames for p in paths[:3]]
    assert mask.sum(axis=1).tolist() == [1 + n // 256 for n in lengths] + [0]
    assert values.shape == (4, mask.shape[1], 21) and values.dtype == np.float32
    assert np.isnan(values[3]).all()
    pooled = encoder.transform(paths)
    for i in range(3):
        np.testing.assert_allclose(values[i][mask[i]].mean(axis=0), pooled[i], rtol=1e-5, atol=1e-4)
        assert (values[i][~mask[i]] == 0).all()


def test_duration_policy():
    rng = np.random.default_rng(0)
    clips = [rng.normal(size=n).astype(np.float32) for n in (2000, 8000, 16000)]
    hop = 512

    def frames(**params):
        _, mask = (
            AudioEncoder(sr=8000, hop_length=hop, **params).fit(clips).transform_sequence(clips)
        )
        return mask.sum(axis=1).tolist()

    natural = [1 + n // hop for n in (2000, 8000, 16000)]
    assert frames() == natural
    assert frames(duration=1.0) == [1 + 8000 // hop] * 3
    assert frames(duration=1.0, duration_policy="pad") == [1 + 8000 // hop] * 2 + [natural[2]]
    assert frames(duration=1.0, duration_policy="crop") == [natural[0]] + [1 + 8000 // hop] * 2
    # cropping keeps the start of the clip (keeping any other second would change the
    # features entirely; float rounding is all the comparison has to admit)
    X = AudioEncoder(sr=8000, duration=1.0).fit_transform([clips[2], clips[2][:8000]])
    assert_same_features(X[:1], X[1:])


@pytest.mark.kernels
def test_resampling_matches_librosa_load(fsdd):
    path = fsdd.frame["path"][42]
    X = AudioEncoder(sr=16000).fit_transform([path])
    y, sr = librosa.load(path, sr=16000)
    np.testing.assert_allclose(X[0], librosa_reference(y, sr), rtol=1e-4, atol=1e-3)
    # bare arrays at a declared input rate are resampled the same way
    y8, _ = sf.read(path, dtype="float32")
    X2 = AudioEncoder(sr=16000, input_sr=8000).fit_transform([y8])
    np.testing.assert_allclose(X2, X, rtol=1e-5, atol=1e-4)


def test_parallel_decoding_gives_the_same_result(fsdd):
    paths = fsdd.frame["path"][::150].tolist()
    X1 = AudioEncoder(batch_size=7).fit_transform(paths)
    X2 = AudioEncoder(n_jobs=2).fit_transform(paths)
    assert_same_features(X2, X1)


def test_batches_are_capped_by_decoded_samples(fsdd, monkeypatch):
    """A batch ends at ``batch_size`` clips or at ``_BATCH_SAMPLES`` decoded samples, so
    1,024 medium-length clips are never held at once; the features stay the same."""
    from skfusion.encoders import _audio

    paths = fsdd.frame["path"][::200].tolist() + [None]
    with skfusion.config_context(cache=False):
        reference = AudioEncoder().fit_transform(paths)
        sizes = []
        real = AudioEncoder._pooled

        def counting(self, clips):
            sizes.append(sum(c.shape[0] for c in clips))
            return real(self, clips)

        monkeypatch.setattr(AudioEncoder, "_pooled", counting)
        monkeypatch.setattr(_audio, "_BATCH_SAMPLES", 20_000)  # about 2 FSDD clips at 22,050 Hz
        monkeypatch.setattr(_audio, "_DECODE_STEP", 3)
        capped = AudioEncoder().fit_transform(paths)
    assert len(sizes) >= 6, sizes  # 15 clips of about 10,000 samples each
    # a batch stops at the first clip that reaches the cap: it holds under cap + one clip
    longest = max(sf.info(p).frames for p in paths[:-1]) * 22050 // 8000 + 1
    assert max(sizes) < 20_000 + longest, sizes
    assert_same_features(capped, reference)


def _invariance_clips(fsdd):
    """24 recordings: the shortest, the longest (the widest zero-padding for its batch mates)
    and 22 spread over speakers and digits; plus a missing row."""
    lengths = [sf.info(p).frames for p in fsdd.frame["path"]]
    rows = [int(np.argmin(lengths)), int(np.argmax(lengths))] + list(range(7, 3000, 137))
    return fsdd.frame["path"][rows].tolist() + [None]


@pytest.mark.parametrize(
    "params",
    [
        {},  # defaults: 20 MFCC mean/std at 22,050 Hz (resampled from 8 kHz)
        {
            "features": ALL_FEATURES, "stats": ["mean", "std", "max", "p10"], "sr": 8000,
            "n_fft": 512, "hop_length": 128, "n_mels": 40, "n_mfcc": 13, "mfcc_deltas": 2,
        },
    ],
    ids=["default", "all_features"],
)  # fmt: skip
@pytest.mark.kernels
def test_features_do_not_depend_on_batch_threads_or_cache(fsdd, params):
    """DESIGN §8: a clip's features do not depend on its batch mates, the batch size,
    n_jobs, the BLAS thread count or the embedding cache."""
    clips = _invariance_clips(fsdd)
    with skfusion.config_context(cache=False):
        reference = AudioEncoder(batch_size=1, **params).fit(clips)
        X = reference.transform(clips)
        values, mask = reference.transform_sequence(clips)
        for batch_size, n_jobs, blas_threads in [
            (7, None, 1),
            (64, None, 2),
            (7, 2, 2),
            (64, 2, 1),
        ]:
            encoder = AudioEncoder(batch_size=batch_size, n_jobs=n_jobs, **params).fit(clips)
            with threadpool_limits(limits=blas_threads, user_api="blas"):
                assert_same_features(encoder.transform(clips), X)
                other_values, other_mask = encoder.transform_sequence(clips)
            np.testing.assert_array_equal(other_mask, mask)
            assert_same_features(other_values, values)
        # one clip alone, then with the longest recording as its batch mate
        assert_same_features(reference.transform(clips[2:3]), X[2:3])
        assert_same_features(AudioEncoder(**params).fit(clips).transform(clips[:3])[2:], X[2:3])
    # with the cache on, the rows of a third of the clips come from the cache and the others
    # are computed in a batch of a different make-up
    encoder = AudioEncoder(batch_size=64, **params).fit(clips)
    cache_clear()
    try:
        with skfusion.config_context(cache=True):
            cached_transform(encoder, clips[::3])
            assert_same_features(cached_transform(encoder, clips), X)
    finally:
        cache_clear()


# ----------------------------------------------------------------------------- long clips
def _long_test_clip(seconds=12, rate=8000):
    """A deterministic stereo recording with gliding tones, noise and a stretch of silence."""
    rng = np.random.default_rng(7)
    t = np.arange(seconds * rate) / rate
    left = 0.3 * np.sin(2 * np.pi * (300 + 150 * np.sin(2 * np.pi * 0.3 * t)) * t)
    left += 0.02 * rng.standard_normal(t.size)
    left[2 * rate : 3 * rate] = 0.0  # silence: the dB floors (clip-wide peaks) matter here
    right = 0.5 * left + 0.01 * rng.standard_normal(t.size)
    return np.stack([left, right]).astype(np.float32), rate


@pytest.mark.parametrize(
    "params",
    [
        {},  # defaults: 20 MFCC mean/std at 22,050 Hz, resampled from 8 kHz in a stream
        {
            "features": ALL_FEATURES, "stats": ["mean", "std", "min", "max", "median", "p10"],
            "sr": 8000, "n_fft": 512, "hop_length": 128, "n_mels": 40, "n_mfcc": 13,
            "mfcc_deltas": 2,
        },
        {"sr": 16000, "n_fft": 512, "hop_length": 160, "mfcc_deltas": 1, "duration": 9.5},
        {"sr": 16000, "n_fft": 512, "hop_length": 160, "duration": 14.2, "duration_policy": "pad"},
        # no streaming resampler but soxr's: resampled whole, featurised in blocks
        {"sr": 11025, "res_type": "polyphase", "mfcc_deltas": 1},
    ],
    ids=["default", "all_features", "crop", "pad", "polyphase"],
)  # fmt: skip
@pytest.mark.kernels
def test_long_clip_in_blocks_equals_whole_clip(tmp_path, monkeypatch, params):
    """Issue 14: a long clip is read, resampled and featurised in blocks (bounded memory),
    and its features equal the whole-clip computation. The tolerance is
    ``assert_same_features``' (1e-6 of each feature's scale): the blocked path sums the
    frame statistics block by block (Chan's merged mean and variance) where the whole path
    uses numpy's pairwise sums, which differ in the last float64 bits only; everything else
    (each frame's FFT, filter banks, dB floors at the clip-wide peaks, the deltas' filter on
    blocks with context, soxr's streaming resampler) is the same arithmetic on the same
    numbers."""
    from skfusion.encoders import _audio_features, _audio_io

    stereo, rate = _long_test_clip()
    path = tmp_path / "long.wav"
    sf.write(path, stereo.T, rate, subtype="PCM_16")
    mono = stereo.mean(axis=0)
    items = [str(path), path.read_bytes(), (mono, rate), None]
    with skfusion.config_context(cache=False):
        encoder = AudioEncoder(**params).fit(items)
        X = encoder.transform(items)  # clips under 2**21 samples: decoded and featurised whole
        values, mask = encoder.transform_sequence(items[:1])
        # the long-clip knobs turned down: a 12-s clip is streamed in blocks of 40 frames
        monkeypatch.setattr(_audio_io, "_LONG_SAMPLES", 4096)
        monkeypatch.setattr(_audio_io, "_READ_FRAMES", 3001)  # reads straddle the blocks
        monkeypatch.setattr(_audio_features, "_BLOCK_BINS", 40 * (encoder.n_fft // 2 + 1))
        seen = []
        real = _audio_features.long_frame_blocks

        def counting(clip, cfg):
            blocks = list(real(clip, cfg))
            seen.append(len(blocks))
            yield from blocks

        monkeypatch.setattr(_audio_features, "long_frame_blocks", counting)
        blocked = encoder.transform(items)
        blocked_values, blocked_mask = encoder.transform_sequence(items[:1])
    # every present clip took the blocked path (pool_long), in many blocks
    assert len(seen) == 3 and min(seen) >= 5, seen
    assert_same_features(blocked, X)
    np.testing.assert_array_equal(blocked_mask, mask)
    assert_same_features(blocked_values, values)


def test_long_file_errors_name_the_row(tmp_path, monkeypatch):
    from skfusion.encoders import _audio_io

    monkeypatch.setattr(_audio_io, "_LONG_SAMPLES", 4096)
    stereo, rate = _long_test_clip(seconds=3)
    path = tmp_path / "long.wav"
    sf.write(path, stereo.T, rate, subtype="PCM_16")
    data = path.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) // 2])  # the header still declares every frame
    encoder = AudioEncoder(sr=8000).fit([str(path), str(cut)])
    with pytest.raises(EncodingError, match=r"row 1.*truncated file"):
        encoder.transform([str(path), str(cut)])
    X = encoder.set_params(on_error="missing").transform([str(path), str(cut)])
    assert np.isfinite(X[0]).all() and np.isnan(X[1]).all()


def test_verbose_shows_a_progress_bar(capsys):
    clips = [np.random.default_rng(i).normal(size=4000).astype(np.float32) for i in range(3)]
    encoder = AudioEncoder(sr=8000, batch_size=2, verbose=1).fit(clips)
    encoder.transform(clips + [None])
    err = capsys.readouterr().err
    assert "AudioEncoder" in err and "3/3" in err
    encoder.set_params(verbose=0).transform(clips)
    assert capsys.readouterr().err == ""


# ----------------------------------------------------------------------------- parameters
@pytest.mark.parametrize(
    "params, message",
    [
        ({"features": ["mfcc", "pitch"]}, "Unknown feature 'pitch'"),
        ({"features": "mfcc"}, "must be an instance of .list."),
        ({"features": []}, "non-empty list of feature names"),
        ({"features": ["rms", "rms"]}, "duplicates"),
        ({"stats": ["mean", "mode"]}, "Unknown statistic 'mode'"),
        ({"stats": ["p101"]}, "Unknown statistic 'p101'"),
        ({"stats": ["std", "std"]}, "duplicates"),
        ({"features": ["contrast"], "sr": 300}, "'contrast' needs sr > 400"),
    ],
)
def test_invalid_parameters(params, message):
    with pytest.raises(ValueError, match=message):
        AudioEncoder(**params).fit([np.zeros(1000, dtype=np.float32)])


def test_sklearn_parameter_validation():
    with pytest.raises(ValueError, match="'duration_policy' parameter"):
        AudioEncoder(duration_policy="stretch").fit([np.zeros(100)])
    with pytest.raises(ValueError, match="'mfcc_deltas' parameter"):
        AudioEncoder(mfcc_deltas=3).fit([np.zeros(100)])


# ----------------------------------------------------------------------------- estimator API
def test_estimator_api(fsdd):
    encoder = AudioEncoder()
    for check in (
        check_no_attributes_set_in_init,
        check_estimator_repr,
        check_do_not_raise_errors_in_init_or_set_params,
        check_mixin_order,
    ):
        check(type(encoder).__name__, encoder)
    paths = fsdd.frame["path"][:4]
    with pytest.raises(NotFittedError):
        encoder.transform(paths)
    assert encoder.fit(paths) is encoder
    X = encoder.transform(paths.to_numpy())
    # exact: the same clips, batched alike, by the same code in the same process
    restored = pickle.loads(pickle.dumps(encoder))
    np.testing.assert_array_equal(restored.transform(paths.tolist()), X)
    np.testing.assert_array_equal(clone(encoder).fit_transform(paths.to_frame()), X)
    frame = clone(encoder).set_output(transform="pandas").fit_transform(paths)
    assert isinstance(frame, pd.DataFrame) and frame.columns[3] == "mfcc_3_mean"
    assert AudioEncoder._skfusion_stateless and AudioEncoder._skfusion_items_are_paths


def test_fingerprint_identifies_the_output():
    a = AudioEncoder(features=["mfcc"], stats=["mean", "std"]).fit([np.zeros(100)])
    assert a._skfusion_fingerprint() == AudioEncoder()._skfusion_fingerprint()
    assert (
        AudioEncoder(n_jobs=4, on_error="missing")._skfusion_fingerprint()
        == a._skfusion_fingerprint()
    )
    assert AudioEncoder(n_mfcc=13)._skfusion_fingerprint() != a._skfusion_fingerprint()
    assert AudioEncoder(sr=8000)._skfusion_fingerprint() != a._skfusion_fingerprint()
    assert (
        AudioEncoder(features=["mfcc", "rms"])._skfusion_fingerprint() != a._skfusion_fingerprint()
    )
    # the parameters that do not change the output share the fingerprint (and cached rows)
    assert AudioEncoder(batch_size=7)._skfusion_fingerprint() == a._skfusion_fingerprint()


def test_missing_librosa_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "librosa", None)
    with pytest.raises(ImportError, match="pip install librosa"):
        AudioEncoder(sr=8000).fit_transform([np.zeros(1000, dtype=np.float32)])


def test_import_does_not_load_librosa():
    code = "import skfusion.encoders, sys; print('librosa' in sys.modules, 'numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_frame_sequences_feed_attention_fusion():
    from skfusion import AttentionFusionClassifier
    from skfusion.datasets import load_audio_visual_digits
    from skfusion.encoders import ArrayEncoder

    digits = load_audio_visual_digits()
    rows = np.arange(0, 3000, 25)
    X = digits.data.iloc[rows].reset_index(drop=True)
    X.loc[::10, "audio"] = None  # missing clips: an all-False key mask
    y = digits.target.iloc[rows].to_numpy()
    model = AttentionFusionClassifier(
        [("audio", AudioEncoder(sr=8000, n_mfcc=13), "audio"), ("image", ArrayEncoder(), "image")],
        use_sequences=["audio"],
        max_iter=3,
        random_state=0,
    )
    model.fit(X, y)
    proba = model.predict_proba(X)
    assert proba.shape == (len(rows), 10) and np.isfinite(proba).all()
