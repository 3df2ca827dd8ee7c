"""BatchPredictor and predict_dask: output frames, 0-row frames, meta without scoring, one load
per process, encoder settings, unreadable files counted, and a real Dask LocalCluster."""

# SPDX-License-Identifier: BSD-3-Clause

import json
import logging
import os
import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import skfusion
from skfusion import EarlyFusion
from skfusion.batch import BatchPredictor, clear_model_cache, model_cache_info, predict_dask
from skfusion.datasets import load_clothing_reviews
from skfusion.encoders import ImageEncoder, TextEncoder
from skfusion.exceptions import EncodingError

# A text's embedding may differ in its last float32 bits with the other texts of its batch
# (DESIGN.md section 8), and batching here differs from one whole predict_proba call.
RTOL, ATOL = 1e-6, 1e-7


class Exploding(ClassifierMixin, BaseEstimator):
    """A fitted-looking classifier that fails if it is ever asked to score."""

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        return self

    def predict(self, X):
        raise AssertionError("the model was called")

    predict_proba = predict


@pytest.fixture(scope="module")
def reviews():
    data = load_clothing_reviews()
    return data.data.iloc[:200], data.target.iloc[:200], data.data.iloc[500:620]


@pytest.fixture(scope="module")
def model_file(reviews, tmp_path_factory):
    X, y, _ = reviews
    spec = [
        ("review", TextEncoder(device="cpu"), "Review Text"),
        ("tab", StandardScaler(), ["Age", "Rating"]),
    ]
    model = make_pipeline(EarlyFusion(spec), LogisticRegression(max_iter=500)).fit(X, y)
    path = tmp_path_factory.mktemp("model") / "reviews.skops"
    skfusion.dump(model, path)
    return path, model


def test_output_frame_ids_first_index_kept(model_file, reviews):
    path, model = model_file
    X = reviews[2].copy()
    X.index = X.index + 10_000  # a non-default index is carried through
    X = X[list(X.columns[::-1])]  # the model's columns in another order, plus extra ones
    predictor = BatchPredictor(path, method="predict_proba", id_columns=["Clothing ID"],
                               batch_size=25)
    out = predictor(X)
    assert list(out.columns) == ["Clothing ID", "proba_0", "proba_1"]
    pd.testing.assert_index_equal(out.index, X.index)
    np.testing.assert_array_equal(out["Clothing ID"], X["Clothing ID"])
    expected = model.predict_proba(X[model.feature_names_in_])
    np.testing.assert_allclose(out[["proba_0", "proba_1"]], expected, rtol=RTOL, atol=ATOL)

    labels = BatchPredictor(path, keep_columns=True, id_columns="Clothing ID")(X)
    kept = [c for c in X.columns if c != "Clothing ID"]
    assert list(labels.columns) == ["Clothing ID"] + kept + ["prediction"]
    assert labels["prediction"].dtype == model.classes_.dtype
    np.testing.assert_array_equal(labels["prediction"], model.predict(X[model.feature_names_in_]))


def test_transform_names_columns_by_the_models_feature_names(model_file, reviews, tmp_path):
    _, model = model_file
    X = reviews[2]
    skfusion.dump(model[:-1], tmp_path / "fusion.skops")  # the EarlyFusion step alone
    features = BatchPredictor(tmp_path / "fusion.skops", method="transform", batch_size=50)(X)
    names = list(model[:-1].get_feature_names_out())
    assert list(features.columns) == names and names[0] == "review__0"
    np.testing.assert_allclose(
        features, model[:-1].transform(X[model.feature_names_in_]), rtol=RTOL, atol=ATOL
    )


def test_zero_rows_and_iterators(model_file, reviews):
    path, model = model_file
    predictor = BatchPredictor(path, method="predict_proba", id_columns=["Clothing ID"])
    X = reviews[2]
    empty = predictor(X.iloc[:0])
    assert empty.shape == (0, 3)
    assert empty.dtypes.to_dict() == predictor.output_meta(X).dtypes.to_dict()
    assert empty.dtypes["Clothing ID"] == X.dtypes["Clothing ID"]
    pieces = list(predictor.iter_predict([X.iloc[:30], X.iloc[:0], X.iloc[30:]]))
    assert [len(p) for p in pieces] == [30, 0, len(X) - 30]
    whole = pd.concat(pieces)
    np.testing.assert_allclose(
        whole[["proba_0", "proba_1"]], model.predict_proba(X[model.feature_names_in_]),
        rtol=RTOL, atol=ATOL,
    )


def test_meta_never_calls_the_model(reviews, tmp_path):
    X, y, _ = reviews
    path = tmp_path / "exploding.joblib"
    skfusion.dump(Exploding().fit(X[["Age"]], y), path)
    predictor = BatchPredictor(path, method="predict_proba", id_columns="Clothing ID")
    meta = predictor.output_meta(X)
    assert list(meta.columns) == ["Clothing ID", "proba_0", "proba_1"] and len(meta) == 0
    assert predictor(X.iloc[:0]).columns.tolist() == meta.columns.tolist()  # no call either
    with pytest.raises(AssertionError, match="the model was called"):
        predictor(X.iloc[:3])


def test_input_errors_name_the_column(model_file, reviews):
    path, _ = model_file
    X = reviews[2]
    with pytest.raises(ValueError, match="no column 'Review Text', which the model needs"):
        BatchPredictor(path)(X.drop(columns="Review Text"))
    with pytest.raises(ValueError, match="no id column 'order'"):
        BatchPredictor(path, id_columns="order")(X)
    with pytest.raises(ValueError, match="has the name of an output column"):
        BatchPredictor(path, keep_columns=True)(X.assign(prediction=1))
    with pytest.raises(ValueError, match="method must be one of"):
        BatchPredictor(path, method="score")
    with pytest.raises(TypeError, match="scores a pandas DataFrame"):
        BatchPredictor(path)(X.to_numpy())


def test_model_loaded_once_per_process_and_predictor_is_small(model_file, reviews):
    path, _ = model_file
    clear_model_cache()
    before = model_cache_info()["loads"]
    first = BatchPredictor(path, method="predict_proba")
    second = pickle.loads(pickle.dumps(BatchPredictor(path, method="predict_proba")))
    for frame in (reviews[2].iloc[:5], reviews[2].iloc[5:9]):
        first(frame)
        second(frame)
    assert model_cache_info()["loads"] == before + 1
    assert first.model_ is second.model_
    assert len(pickle.dumps(first)) < 1000  # a task carries the path, never the model
    # other encoder settings are another model object in the cache
    cpu = BatchPredictor(path, method="predict_proba", device="cpu", on_error="missing")
    encoders = [t for _, t, _ in cpu.model_[0].transformers_ if isinstance(t, TextEncoder)]
    assert [(e.device, e.on_error) for e in encoders] == [("cpu", "missing")]
    assert model_cache_info()["loads"] == before + 2
    assert first.model_[0].transformers_[0][1].on_error == "raise"


@pytest.fixture(scope="module")
def image_model(tmp_path_factory):
    """Digits written as PNG files, a fitted image + tabular model, and a frame with one
    unreadable file, one truncated file and one missing path."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("digits")
    digits = load_digits()
    paths = []
    for i in range(40):
        path = folder / f"{i}.png"
        Image.fromarray(np.uint8(digits.images[i] * 15)).save(path)
        paths.append(str(path))
    X = pd.DataFrame({"photo": paths, "size": digits.images[:40].sum(axis=(1, 2))})
    y = (digits.target[:40] >= 5).astype(int)
    spec = [
        ("image", ImageEncoder(image_size=32, resize_size=32, device="cpu"), "photo"),
        ("tab", StandardScaler(), ["size"]),
    ]
    model = make_pipeline(EarlyFusion(spec), LogisticRegression(max_iter=500)).fit(X, y)
    model_path = folder / "digits.skops"
    skfusion.dump(model, model_path)
    (folder / "junk.png").write_bytes(b"this is not an image")
    (folder / "cut.png").write_bytes((folder / "3.png").read_bytes()[:40])
    bad = X.iloc[:8].copy()
    bad.loc[2, "photo"] = str(folder / "junk.png")
    bad.loc[5, "photo"] = str(folder / "cut.png")
    bad.loc[6, "photo"] = None  # a missing modality, not an error
    return model_path, model, bad


def test_unreadable_files_become_missing_and_are_counted(image_model):
    path, model, bad = image_model
    with pytest.raises(EncodingError, match="row 2"):
        BatchPredictor(path)(bad)
    predictor = BatchPredictor(path, method="predict_proba", on_error="missing", batch_size=3)
    out, lost = predictor._predictions(bad)
    assert lost == 2  # junk.png and cut.png; the None path is a missing modality, not an error
    assert np.isfinite(out.to_numpy()).all()
    # the same rows with the items given as missing score the same
    as_missing = bad.copy()
    as_missing.loc[[2, 5], "photo"] = None
    with skfusion.config_context(cache=False):
        np.testing.assert_allclose(out, model.predict_proba(as_missing), rtol=RTOL, atol=ATOL)
    # the encoders are back to their own methods once scoring is done
    encoder = predictor.model_[0].transformers_[0][1]
    assert "transform" not in vars(encoder)


def test_predict_dask_on_a_local_cluster(model_file, reviews):
    import dask.dataframe as dd
    from distributed import Client, LocalCluster

    path, model = model_file
    X = load_clothing_reviews().data.iloc[1000:1240]
    ddf = dd.from_pandas(X, npartitions=6)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        scores = predict_dask(path, ddf, method="predict_proba", id_columns=["Clothing ID"])
        assert scores.npartitions == ddf.npartitions
        assert scores.divisions == ddf.divisions
        result = scores.compute()
        loads = client.run(lambda: model_cache_info()["loads"])
    pd.testing.assert_index_equal(result.index, X.index)  # order kept
    np.testing.assert_array_equal(result["Clothing ID"], X["Clothing ID"])
    expected = model.predict_proba(X[model.feature_names_in_])
    np.testing.assert_allclose(result[["proba_0", "proba_1"]], expected, rtol=RTOL, atol=ATOL)
    # each worker process deserialised the model at most once, for all its partitions
    assert len(loads) == 2 and max(loads.values()) == 1
    assert sum(loads.values()) < ddf.npartitions


# --- predict_files: the file-to-file engine of ``skfusion predict``, from Python ---
@pytest.fixture(scope="module")
def tabular_model(tmp_path_factory):
    """A saved tabular model (fast to score) and 500 review rows with an id, in Parquet."""
    folder = tmp_path_factory.mktemp("tabular")
    data = load_clothing_reviews()
    X = data.data[["Clothing ID", "Age", "Rating"]].iloc[:500].reset_index(drop=True)
    model = make_pipeline(StandardScaler(), LogisticRegression())
    model.fit(X[["Age", "Rating"]], data.target.iloc[:500])
    skfusion.dump(model, folder / "model.skops")
    X.to_parquet(folder / "in.parquet", index=False)
    return folder, X


def test_predict_files_chunks_resumes_and_refuses_to_overwrite(tabular_model, tmp_path,
                                                               caplog):
    import signal

    folder, X = tabular_model
    handler = signal.getsignal(signal.SIGTERM)
    predictor = BatchPredictor(folder / "model.skops", method="predict_proba",
                               id_columns="Clothing ID")
    out = tmp_path / "scores.parquet"
    summary = predictor.predict_files(folder / "in.parquet", out, chunk_size=120)
    assert summary == {"output": str(out), "rows": 500, "parts": 5, "scored_rows": 500,
                       "lost_rows": 0, "seconds": summary["seconds"]}
    assert sorted(os.listdir(out)) == ["_manifest.json"] + [
        f"part-{i:06d}.parquet" for i in range(5)
    ]
    result = pd.read_parquet(out)
    # the model's matrix products run on 120 rows here, 500 there: last-bit differences
    pd.testing.assert_frame_equal(result, predictor(X), check_exact=False, rtol=1e-12)
    assert signal.getsignal(signal.SIGTERM) is handler  # no process-wide handler installed

    with pytest.raises(FileExistsError, match=r"exists; pass overwrite=True to replace it"):
        predictor.predict_files(folder / "in.parquet", out, chunk_size=120)
    with caplog.at_level(logging.INFO, logger="skfusion.batch"):
        again = predictor.predict_files(folder / "in.parquet", out, chunk_size=120, resume=True)
    assert again["scored_rows"] == 0 and again["rows"] == 500
    assert "is already complete (500 rows)" in caplog.text

    # an interrupted run: two parts listed, a third written after the last manifest
    partial = tmp_path / "scores.parquet.partial"
    os.rename(out, partial)
    manifest = json.loads((partial / "_manifest.json").read_text())
    manifest.update(complete=False, parts=manifest["parts"][:2], rows=240)
    (partial / "_manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FileExistsError, match=r"continue it with resume=True, or start again "
                                              r"with overwrite=True"):
        predictor.predict_files(folder / "in.parquet", out, chunk_size=120)
    with pytest.raises(ValueError, match=r"its chunk_size differ .* overwrite=True"):
        predictor.predict_files(folder / "in.parquet", out, chunk_size=100, resume=True)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="skfusion.batch"):
        resumed = predictor.predict_files(folder / "in.parquet", out, chunk_size=120,
                                          resume=True)
    assert resumed["scored_rows"] == 260 and resumed["rows"] == 500 and resumed["parts"] == 5
    assert "resuming after 240 rows already scored in 2 parts." in caplog.text
    assert not partial.exists()
    pd.testing.assert_frame_equal(pd.read_parquet(out), result, check_exact=True)


def test_predict_files_csv_output_and_input_errors(tabular_model, tmp_path):
    folder, X = tabular_model
    X.to_csv(tmp_path / "in.csv", index=False)
    predictor = BatchPredictor(folder / "model.skops", id_columns="Clothing ID")
    summary = predictor.predict_files(tmp_path / "in.csv", tmp_path / "labels.csv",
                                      chunk_size=300)
    assert summary["parts"] == 2
    labels = pd.concat(
        [pd.read_csv(tmp_path / "labels.csv" / f"part-00000{i}.csv") for i in range(2)],
        ignore_index=True,
    )
    pd.testing.assert_frame_equal(labels, predictor(X))
    with pytest.raises(FileNotFoundError, match="the input .*absent.parquet does not exist"):
        predictor.predict_files(tmp_path / "absent.parquet", tmp_path / "a.parquet")
    with pytest.raises(ValueError, match="use NAME.parquet or NAME.csv"):
        predictor.predict_files(tmp_path / "in.csv", tmp_path / "a.txt")
    X.drop(columns="Age").to_parquet(tmp_path / "no_age.parquet")
    with pytest.raises(ValueError, match="no column 'Age', which the model needs"):
        predictor.predict_files(tmp_path / "no_age.parquet", tmp_path / "b.parquet")
    assert not (tmp_path / "b.parquet.partial").exists()


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_predict_files_a_wrong_type_past_the_first_block(tabular_model, tmp_path, fmt):
    """pyarrow types CSV and JSONL columns from the first 8 MB: a later text value in a number
    column fails in the reader, whose message names no row."""
    folder, X = tabular_model
    n = 200_000  # 12 MB of CSV: the reader's second block
    big = pd.DataFrame({
        "Clothing ID": np.arange(n),
        "Age": np.resize(X["Age"].to_numpy(), n).astype(object),
        "Rating": np.resize(X["Rating"].to_numpy(), n),
        "Note": "a note that makes the rows long enough " * 2,
    })
    big.loc[190_000, "Age"] = "forty-two"
    path = tmp_path / f"big.{fmt}"
    if fmt == "csv":
        big.to_csv(path, index=False)
    else:
        big.to_json(path, orient="records", lines=True)
    assert path.stat().st_size > 9 << 20
    predictor = BatchPredictor(folder / "model.skops", id_columns="Clothing ID")
    line = 190_002 if fmt == "csv" else 190_001  # the header is line 1 of the CSV
    message = (rf"column 'Age' holds 'forty-two' at row 190000 \(line {line} of .*big.{fmt}\), "
               r"which is not a value of the column's type")
    with pytest.raises(ValueError, match=message):
        predictor.predict_files(path, tmp_path / "out.parquet", chunk_size=100_000)


def test_a_text_value_in_a_number_column_names_its_row(tabular_model):
    folder, X = tabular_model
    bad = X.iloc[:6].astype({"Age": object}).set_axis(range(100, 106))
    bad.loc[103, "Age"] = "forty-two"
    with pytest.raises(ValueError, match=r"column 'Age' holds 'forty-two' at row 3 "
                                         r"\(index 103\), which the model cannot read"):
        BatchPredictor(folder / "model.skops")(bad)
