"""EncodingError names the row as the user passed it, in every fusion strategy.

An encoder often sees only part of the user's X: the rows where its modality is present,
the rows the embedding cache has not seen, a cross-validation fold. Whatever it saw, the
error must give the row's position in the X the user passed and its index label.
"""

# SPDX-License-Identifier: BSD-3-Clause

import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

import skfusion
from skfusion import (
    AttentionFusionClassifier,
    EarlyFusion,
    FusionClassifier,
    LateFusionClassifier,
)
from skfusion.datasets import load_spoken_digits
from skfusion.encoders import AudioEncoder, EncodingError, TextEncoder
from skfusion.exceptions import EncodingError as PublicEncodingError
from skfusion.storage._cache import cached_transform

pytestmark = pytest.mark.filterwarnings("ignore:AttentionFusion. the maximum number of iterations")

TEXTS = ["good dress", None, "bad fit", "lovely", "", "meh", "great", "awful", "ok", "nice"]
Y = np.array([1, 0, 0, 1, 1, 0, 1, 0, 1, 0])
BAD_ROW = 6  # rows 1 and 4 before it are missing: the encoder sees it as its 5th present item
INDEX = list(range(300, 310))


def _text_spec():
    return [("text", TextEncoder(), "t"), ("tab", StandardScaler(), ["a"])]


STRATEGIES = {
    "early": lambda: EarlyFusion(_text_spec()),
    "late": lambda: LateFusionClassifier(_text_spec(), cv=2),
    "attention": lambda: AttentionFusionClassifier(_text_spec(), max_iter=2, random_state=0),
    "dispatch-late": lambda: FusionClassifier(_text_spec(), fusion="late", cv=2),
}


def _frame(texts, index=INDEX):
    return pd.DataFrame({"t": texts, "a": np.arange(len(texts), dtype=float)}, index=index)


def _with_bad(texts, row, value=42):
    texts = list(texts)
    texts[row] = value
    return texts


def _score(est, X):
    return est.transform(X) if isinstance(est, EarlyFusion) else est.predict(X)


def _expected(row, label):
    where = f"row {row}" if label is None else rf"row {row} \(index {label!r}\)"
    modality = r"modality 'text' \(column 't'\)"
    return rf"TextEncoder cannot encode {where} of {modality}: expected a string"


@pytest.mark.parametrize("cache", [True, False], ids=["cache-on", "cache-off"])
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_fit_names_the_users_row(strategy, cache):
    X = _frame(_with_bad(TEXTS, BAD_ROW))
    with skfusion.config_context(cache=cache):
        with pytest.raises(EncodingError, match=_expected(BAD_ROW, 300 + BAD_ROW)) as info:
            STRATEGIES[strategy]().fit(X, Y)
    error = info.value
    assert (error.position, error.label) == (BAD_ROW, 300 + BAD_ROW)
    assert error.value == "42"


@pytest.mark.parametrize("cache", [True, False], ids=["cache-on", "cache-off"])
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_predict_names_the_users_row(strategy, cache):
    """At predict time the cache holds the clean rows, so the encoder sees only the new ones."""
    with skfusion.config_context(cache=cache):
        est = STRATEGIES[strategy]().fit(_frame(TEXTS), Y)
        new = TEXTS[:BAD_ROW] + ["never seen before", 42] + TEXTS[BAD_ROW + 2:]
        index = [f"r{i}" for i in range(len(new))]
        with pytest.raises(EncodingError, match=_expected(BAD_ROW + 1, f"r{BAD_ROW + 1}")):
            _score(est, _frame(new, index=index))


@pytest.mark.parametrize("strategy", ["early", "late", "attention"])
def test_array_input_names_the_position(strategy):
    X = _frame(_with_bad(TEXTS, BAD_ROW)).to_numpy(dtype=object)
    spec = [("text", TextEncoder(), 0), ("tab", StandardScaler(), [1])]
    make = {
        "early": lambda: EarlyFusion(spec),
        "late": lambda: LateFusionClassifier(spec, cv=2),
        "attention": lambda: AttentionFusionClassifier(spec, max_iter=2, random_state=0),
    }[strategy]
    with pytest.raises(EncodingError, match=r"cannot encode row 6 of modality 'text' \(column 0\)"):
        make().fit(X, Y)


@pytest.mark.parametrize("cache", [True, False], ids=["cache-on", "cache-off"])
@pytest.mark.parametrize("strategy", ["early", "late", "attention"])
def test_on_error_missing_is_a_missing_modality(strategy, cache):
    """A bad item with on_error="missing" gives exactly what a None in its place gives."""
    spec = [("text", TextEncoder(on_error="missing"), "t"), ("tab", StandardScaler(), ["a"])]
    make = {
        "early": lambda: EarlyFusion(spec),
        "late": lambda: LateFusionClassifier(spec, cv=2),
        "attention": lambda: AttentionFusionClassifier(spec, max_iter=3, random_state=0),
    }[strategy]
    bad, none = _frame(_with_bad(TEXTS, BAD_ROW)), _frame(_with_bad(TEXTS, BAD_ROW, None))
    with skfusion.config_context(cache=cache):
        with_bad, with_none = make().fit(bad, Y), make().fit(none, Y)
        if strategy == "early":
            out_bad, out_none = with_bad.transform(bad), with_none.transform(none)
            flags = out_bad[:, list(with_bad.get_feature_names_out()).index("text__present")]
            assert flags[BAD_ROW] == 0.0 and flags.sum() == len(TEXTS) - 3
        else:
            out_bad, out_none = with_bad.predict_proba(bad), with_none.predict_proba(none)
    assert np.isfinite(out_bad).all()
    # the same rows, features and seeds on both sides: the same floating-point operations
    np.testing.assert_array_equal(out_bad, out_none)


def test_audio_decode_error_from_process_workers(tmp_path):
    """A clip that fails to decode (inside transform, after the cache's split) in a loky worker."""
    digits = load_spoken_digits()
    paths = list(digits.frame["path"][:8])
    clips = [paths[0], None, paths[1], paths[2], b"not audio at all", paths[3], paths[4],
             paths[5]]
    X = pd.DataFrame(
        {"clip": clips, "a": np.arange(8.0)}, index=[f"c{i}" for i in range(8)]
    )
    y = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    spec = [("audio", AudioEncoder(), "clip"), ("tab", StandardScaler(), ["a"])]
    match = r"AudioEncoder cannot encode row 4 \(index 'c4'\) of modality 'audio'.*cannot decode"
    with pytest.raises(EncodingError, match=match):
        LateFusionClassifier(spec, estimator=LogisticRegression(), cv=2, n_jobs=2).fit(X, y)
    with pytest.raises(EncodingError, match=match):
        EarlyFusion(spec, n_jobs=2).fit(X, y)


def test_cached_transform_names_the_callers_row():
    """The cache hands the encoder only the rows it has not seen; the error names X's row."""
    paths = list(load_spoken_digits().frame["path"][:3])
    enc = AudioEncoder().fit(paths)
    with skfusion.config_context(cache=True):
        cached_transform(enc, np.array(paths, dtype=object))  # now cached
        X = np.array(paths[:2] + [b"not audio at all"] + paths[2:], dtype=object)
        with pytest.raises(EncodingError, match=r"AudioEncoder cannot encode row 2: cannot"):
            cached_transform(enc, X)
        series = pd.Series(list(X), index=list("abcd"))
        with pytest.raises(EncodingError, match=r"row 2 \(index 'c'\): cannot"):
            cached_transform(enc, series)


def test_error_pickles_and_is_public():
    error = EncodingError("TextEncoder", 3, "bad", "7", label="x", modality="modality 'm'")
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error)
    assert (again.position, again.label, again.modality) == (3, "x", "modality 'm'")
    assert PublicEncodingError is EncodingError
    assert isinstance(error, ValueError)
