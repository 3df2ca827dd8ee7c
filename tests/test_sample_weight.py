"""sample_weight is never dropped: with metadata routing off, the weights reach every fit that
can take them (a Pipeline through its last step), or ``fit`` raises a TypeError naming the
estimator that cannot take them and saying how to route them instead (as sklearn's stacking).
"""

# SPDX-License-Identifier: BSD-3-Clause

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from skfusion import (
    AttentionFusionClassifier,
    EarlyFusion,
    FusionClassifier,
    LateFusionClassifier,
)

RECEIVED = []  # number of weights (or None) each WeightRecorder.fit received


class WeightRecorder(LogisticRegression):
    """LogisticRegression that records the sample_weight each fit receives."""

    def fit(self, X, y, sample_weight=None):
        RECEIVED.append(None if sample_weight is None else len(sample_weight))
        return super().fit(X, y, sample_weight=sample_weight)


class KwargsClassifier(ClassifierMixin, BaseEstimator):
    """A classifier whose ``fit`` takes ``**fit_params`` (as a meta-estimator's does)."""

    def fit(self, X, y, **fit_params):
        self.fit_params_ = fit_params
        self.lr_ = LogisticRegression().fit(X, y, **fit_params)
        self.classes_ = self.lr_.classes_
        return self

    def predict_proba(self, X):
        return self.lr_.predict_proba(X)

    def predict(self, X):
        return self.lr_.predict(X)


class Centerer(TransformerMixin, BaseEstimator):
    """A transformer that learns from its rows but takes no sample_weight."""

    def fit(self, X, y=None):
        self.mean_ = np.nanmean(np.asarray(X, dtype=float), axis=0)
        return self

    def transform(self, X):
        return np.asarray(X, dtype=float) - self.mean_


@pytest.fixture(autouse=True)
def clear_received():
    RECEIVED.clear()
    yield
    RECEIVED.clear()


def _data(n=90, seed=0, missing=True):
    rng = np.random.RandomState(seed)
    X = pd.DataFrame(rng.normal(size=(n, 4)), columns=["a", "b", "c", "d"])
    y = (X["a"] + 0.5 * X["c"] + rng.normal(scale=0.7, size=n) > 0).astype(int).to_numpy()
    if missing:
        X.loc[X.index[::7], ["c", "d"]] = np.nan  # modality "right" missing in some rows
    return X, y


def _weights(y, seed=1):
    return np.random.RandomState(seed).randint(1, 4, size=len(y)).astype(float)


def _passthrough():
    return [("left", "passthrough", ["a", "b"]), ("right", "passthrough", ["c", "d"])]


def _scaled():
    return [("left", StandardScaler(), ["a", "b"]), ("right", StandardScaler(), ["c", "d"])]


def _exact_lr():
    # converged far past the default tol, so fits of one objective land on the same optimum
    return LogisticRegression(tol=1e-12, max_iter=10_000)


def _late(**kw):
    return LateFusionClassifier(_scaled(), cv=3, **kw)


# --- a head that takes weights: they change the model ------------------------------------


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("fusion", ["early", "late", "attention"])
def test_weights_change_the_model_of_every_strategy(fusion):
    X, y = _data()
    w = np.where(y == 1, 10.0, 1.0)  # one class weighted up
    kw = dict(d_model=8, n_heads=2, max_iter=15, random_state=0) if fusion == "attention" else {}

    def fit(sample_weight):
        clf = FusionClassifier(_scaled(), fusion=fusion, cv=3, **kw)
        with np.errstate(all="ignore"):
            return clf.fit(X, y, sample_weight=sample_weight).predict_proba(X)[:, 1]

    plain, weighted = fit(None), fit(w)
    # the favoured class gains probability on average (by 0.15 to 0.35, measured)
    assert weighted.mean() > plain.mean() + 0.05


# --- a Pipeline head: the weights reach its last step ----------------------------------------


def test_pipeline_head_early_gets_the_weights_in_its_last_step():
    X, y = _data(missing=False)
    w = _weights(y)
    head = make_pipeline(StandardScaler(), _exact_lr())
    clf = FusionClassifier(_passthrough(), estimator=head).fit(X, y, sample_weight=w)
    # passthrough modalities without missing rows: the head sees X's columns as they are, so
    # it is the head fitted directly with its last step weighted (same data, same float
    # operations: 2e-16 apart, measured; 1e-9 leaves room for BLAS threading differences)
    direct = make_pipeline(StandardScaler(), _exact_lr()).fit(
        X.to_numpy(), y, logisticregression__sample_weight=w
    )
    np.testing.assert_allclose(
        clf.predict_proba(X), direct.predict_proba(X.to_numpy()), rtol=0, atol=1e-9
    )
    plain = FusionClassifier(_passthrough(), estimator=head).fit(X, y)
    # ignoring the weights moves the probabilities by about 0.1 here
    assert np.abs(plain.predict_proba(X) - clf.predict_proba(X)).max() > 1e-3


def test_pipeline_head_early_equals_repeated_rows():
    X, y = _data(missing=False)
    w = _weights(y).astype(int)
    rows = np.repeat(np.arange(len(y)), w)
    # the Pipeline's scaler is fitted unweighted (routing off, the weights go to the last
    # step only, as sklearn's Pipeline takes them), so compare with a scaler-free pipeline
    head = Pipeline([("clf", _exact_lr())])
    weighted = FusionClassifier(_passthrough(), estimator=head).fit(X, y, sample_weight=w)
    repeated = FusionClassifier(_passthrough(), estimator=head).fit(
        X.iloc[rows].reset_index(drop=True), y[rows]
    )
    # the same objective minimised by lbfgs to tol 1e-12: they differ by the optimiser's
    # rounding only (1e-16, measured), far below the effect of the weights (0.1)
    np.testing.assert_allclose(
        weighted.predict_proba(X), repeated.predict_proba(X), rtol=0, atol=1e-6
    )


def test_pipeline_heads_late_get_the_weights_in_their_last_step():
    X, y = _data()
    w = _weights(y)
    n_right = int(X["c"].notna().sum())
    clf = _late(
        estimator=make_pipeline(StandardScaler(), WeightRecorder()),
        final_estimator=make_pipeline(StandardScaler(), WeightRecorder()),
    ).fit(X, y, sample_weight=w)
    # per modality 3 fold fits + the full fit, then the final estimator: all weighted
    assert None not in RECEIVED and len(RECEIVED) == 2 * 4 + 1
    assert sorted(RECEIVED)[-3:] == sorted([n_right, len(y), len(y)])
    RECEIVED.clear()
    plain = _late(
        estimator=make_pipeline(StandardScaler(), WeightRecorder()),
        final_estimator=make_pipeline(StandardScaler(), WeightRecorder()),
    ).fit(X, y)
    assert RECEIVED == [None] * 9
    assert np.abs(plain.predict_proba(X) - clf.predict_proba(X)).max() > 1e-3


def test_nested_pipeline_and_kwargs_heads_get_the_weights():
    X, y = _data(missing=False)
    w = _weights(y)
    nested = make_pipeline(StandardScaler(), make_pipeline(StandardScaler(), WeightRecorder()))
    FusionClassifier(_passthrough(), estimator=nested).fit(X, y, sample_weight=w)
    assert RECEIVED == [len(y)]
    # a fit(**fit_params) decides itself what it takes, as StackingClassifier lets it
    clf = FusionClassifier(_passthrough(), estimator=KwargsClassifier())
    clf.fit(X, y, sample_weight=w)
    np.testing.assert_array_equal(clf.estimator_[-1].fit_params_["sample_weight"], w)


# --- EarlyFusion as a step: the weights go to its modality transformers ---------------------


def test_early_fusion_step_weights_its_transformers_and_statistics():
    X, y = _data()  # with missing rows: the weighted fill values are used
    w = _weights(y).astype(int)
    rows = np.repeat(np.arange(len(y)), w)
    X_rep = X.iloc[rows].reset_index(drop=True)
    for scaling in (None, "standard"):
        fusion = EarlyFusion(_scaled(), scaling=scaling)
        pipe = make_pipeline(fusion, _exact_lr()).fit(X, y, earlyfusion__sample_weight=w)
        weighted = pipe[0].transform(X)
        repeated = EarlyFusion(_scaled(), scaling=scaling).fit(X_rep).transform(X)
        # weighted means and variances against sums over repeated rows: equal up to the
        # rounding of different summation orders (1e-15, measured); the weights move them
        # by 0.2
        np.testing.assert_allclose(weighted, repeated, rtol=1e-9, atol=1e-12)
        unweighted = EarlyFusion(_scaled(), scaling=scaling).fit(X).transform(X)
        assert np.abs(unweighted - weighted).max() > 1e-3
        np.testing.assert_allclose(
            EarlyFusion(_scaled(), scaling=scaling).fit_transform(X, sample_weight=w), weighted,
            rtol=1e-12, atol=1e-12,
        )


def test_early_fusion_passthrough_and_stateless_modalities_need_no_weights():
    X, y = _data()
    w = _weights(y)
    # passthrough learns nothing from the rows: the weights only reach the statistics
    out = EarlyFusion(_passthrough(), scaling="standard").fit(X, sample_weight=w).transform(X)
    assert np.isfinite(out).all()


# --- an estimator without sample_weight: a TypeError naming it --------------------------------


def _assert_names(excinfo, name):
    msg = str(excinfo.value)
    assert name in msg
    assert "enable_metadata_routing=True" in msg and "set_fit_request" in msg


@pytest.mark.parametrize("fusion", ["early", "late"])
def test_head_without_sample_weight_raises(fusion):
    X, y = _data()
    w = _weights(y)
    for head in (KNeighborsClassifier(), make_pipeline(StandardScaler(), KNeighborsClassifier())):
        clf = FusionClassifier(_scaled(), fusion=fusion, estimator=head, cv=3)
        with pytest.raises(TypeError, match="KNeighborsClassifier") as excinfo:
            clf.fit(X, y, sample_weight=w)
        _assert_names(excinfo, "KNeighborsClassifier")
        clf.fit(X, y)  # without weights it is fine


def test_late_estimators_without_sample_weight_raise():
    X, y = _data()
    w = _weights(y)
    cases = [
        dict(estimator=KNeighborsClassifier()),
        dict(modality_estimators={"right": KNeighborsClassifier()}),
        dict(final_estimator=KNeighborsClassifier()),
        dict(final_estimator=make_pipeline(StandardScaler(), KNeighborsClassifier())),
    ]
    for kw in cases:
        with pytest.raises(TypeError) as excinfo:
            _late(**kw).fit(X, y, sample_weight=w)
        _assert_names(excinfo, "KNeighborsClassifier")
    with pytest.raises(TypeError, match="final estimator"):
        _late(final_estimator=KNeighborsClassifier()).fit(X, y, sample_weight=w)
    with pytest.raises(TypeError, match="'right'"):
        _late(modality_estimators={"right": KNeighborsClassifier()}).fit(X, y, sample_weight=w)


def test_early_fusion_transformer_without_sample_weight_raises():
    X, y = _data()
    w = _weights(y)
    for trans, name in ((PCA(n_components=1), "PCA"), (Centerer(), "Centerer")):
        fusion = EarlyFusion([("left", StandardScaler(), ["a", "b"]),
                              ("right", trans, ["c", "d"])])
        with pytest.raises(TypeError) as excinfo:
            fusion.fit(X, sample_weight=w)
        _assert_names(excinfo, name)
        assert "'right'" in str(excinfo.value)
        with pytest.raises(TypeError, match=name):
            make_pipeline(fusion, LogisticRegression()).fit(X, y, earlyfusion__sample_weight=w)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_attention_takes_the_weights():
    # the network's loss takes them; the dispatcher passes them on
    X, y = _data()
    w = np.where(y == 1, 10.0, 1.0)
    kw = dict(d_model=8, n_heads=2, max_iter=15, random_state=0)
    with np.errstate(all="ignore"):
        direct = AttentionFusionClassifier(_scaled(), **kw).fit(X, y, sample_weight=w)
        via = FusionClassifier(_scaled(), fusion="attention", **kw).fit(X, y, sample_weight=w)
    # same seed, same data, same float operations on one CPU: identical
    np.testing.assert_array_equal(direct.predict_proba(X), via.predict_proba(X))
