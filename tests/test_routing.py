"""sample_weight and metadata routing through the fusion estimators, as sklearn's stacking does."""

# SPDX-License-Identifier: BSD-3-Clause

import numpy as np
import pandas as pd
import pytest
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, make_scorer
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from skfusion import AttentionFusionClassifier, FusionClassifier, LateFusionClassifier

RECEIVED = []  # (class name, number of weights or None), one entry per fit


class WeightRecorder(LogisticRegression):
    """LogisticRegression that records the sample_weight each fit receives."""

    def fit(self, X, y, sample_weight=None):
        RECEIVED.append(None if sample_weight is None else len(sample_weight))
        return super().fit(X, y, sample_weight=sample_weight)


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


def _spec(scaler=StandardScaler):
    return [("left", scaler(), ["a", "b"]), ("right", scaler(), ["c", "d"])]


def test_sample_weight_reaches_the_heads_without_routing():
    X, y = _data()
    w = np.random.RandomState(1).randint(1, 4, size=len(y)).astype(float)
    n_right = int(X["c"].notna().sum())

    FusionClassifier(_spec(), estimator=WeightRecorder()).fit(X, y, sample_weight=w)
    assert RECEIVED == [len(y)]  # early: the head, on every row
    RECEIVED.clear()

    LateFusionClassifier(
        _spec(), estimator=WeightRecorder(), final_estimator=WeightRecorder(), cv=3
    ).fit(X, y, sample_weight=w)
    # per modality, on its present rows only: 3 training folds (each present row in 2 of
    # them) and the full fit; then the final estimator on every row
    assert None not in RECEIVED and len(RECEIVED) == 2 * 4 + 1
    full = sorted(RECEIVED)[-3:]
    assert full == sorted([n_right, len(y), len(y)])
    assert sum(RECEIVED) - sum(full) == 2 * len(y) + 2 * n_right

    clf = AttentionFusionClassifier(_spec(), d_model=8, n_heads=2, max_iter=3, random_state=0)
    with pytest.warns(Warning):  # 3 epochs do not converge
        clf.fit(X, y, sample_weight=np.zeros_like(w) + 1.0)
    # no routing on: extra metadata is an error naming the fix, as in sklearn
    with pytest.raises(ValueError, match="enable_metadata_routing"):
        LateFusionClassifier(_spec()).fit(X, y, groups=np.arange(len(y)))


def _repeat(X, y, w):
    rows = np.repeat(np.arange(len(y)), w)
    return X.iloc[rows].reset_index(drop=True), y[rows], rows


def _exact_lr():
    # converged far past the default tol, so both fits land on the same optimum
    return LogisticRegression(tol=1e-12, max_iter=10_000)


@pytest.mark.kernels
def test_integer_weights_equal_repeated_rows_early():
    X, y = _data(missing=False)  # early fusion's fill values are unweighted statistics
    w = np.random.RandomState(2).randint(1, 4, size=len(y))
    spec = [("left", "passthrough", ["a", "b"]), ("right", "passthrough", ["c", "d"])]
    weighted = FusionClassifier(spec, estimator=_exact_lr()).fit(X, y, sample_weight=w)
    X_rep, y_rep, _ = _repeat(X, y, w)
    repeated = FusionClassifier(spec, estimator=_exact_lr()).fit(X_rep, y_rep)
    # Both minimise the same objective (lbfgs, tol 1e-12); they differ by the optimiser's
    # float rounding only (1e-16 here, 5e-10 for late fusion, measured), far below a real
    # difference (ignoring the weights moves the probabilities by 0.12 here, 0.23 late).
    np.testing.assert_allclose(
        weighted.predict_proba(X), repeated.predict_proba(X), rtol=0, atol=1e-6
    )
    ignored = FusionClassifier(spec, estimator=_exact_lr()).fit(X, y)
    assert np.abs(ignored.predict_proba(X) - repeated.predict_proba(X)).max() > 1e-3


@pytest.mark.kernels
def test_integer_weights_equal_repeated_rows_late():
    X, y = _data()  # with missing rows: weights restricted to the present rows, weighted fill
    w = np.random.RandomState(3).randint(1, 4, size=len(y))
    spec = [("left", "passthrough", ["a", "b"]), ("right", "passthrough", ["c", "d"])]
    fold = np.arange(len(y)) % 3
    X_rep, y_rep, rows = _repeat(X, y, w)

    def splits(f):  # repeats stay in their row's fold, so the same models are trained
        return [(np.flatnonzero(f != k), np.flatnonzero(f == k)) for k in range(3)]

    def late(cv):
        return LateFusionClassifier(spec, estimator=_exact_lr(), final_estimator=_exact_lr(),
                                    cv=cv)

    weighted = late(splits(fold)).fit(X, y, sample_weight=w)
    repeated = late(splits(fold[rows])).fit(X_rep, y_rep)
    # as above: the same objectives, lbfgs rounding only
    np.testing.assert_allclose(
        weighted.predict_proba(X), repeated.predict_proba(X), rtol=0, atol=1e-6
    )
    np.testing.assert_allclose(weighted.transform(X), repeated.transform(X), rtol=0, atol=1e-6)
    ignored = late(splits(fold)).fit(X, y)
    assert np.abs(ignored.predict_proba(X) - repeated.predict_proba(X)).max() > 1e-3


def test_routing_through_pipeline_and_grid_search():
    X, y = _data()
    w = np.random.RandomState(4).randint(1, 4, size=len(y)).astype(float)
    with sklearn.config_context(enable_metadata_routing=True):
        recorder = WeightRecorder().set_fit_request(sample_weight=True)
        clf = FusionClassifier(
            _spec(lambda: StandardScaler().set_fit_request(sample_weight=False)),
            estimator=recorder,
            final_estimator=recorder,
            cv=2,
        )
        search = GridSearchCV(
            Pipeline([("fusion", clf)]), {"fusion__fusion": ["early", "late"]}, cv=2,
            refit=False,
            # the score ignores the weights (sklearn asks to say so explicitly)
            scoring=make_scorer(accuracy_score).set_score_request(sample_weight=False),
        )
        search.fit(X, y, sample_weight=w)
        assert np.isfinite(search.cv_results_["mean_test_score"]).all()
        # early: the head once per split (2); late: per split, 2 modalities x (2 inner folds
        # + 1 full fit) + the final estimator = 7, twice (14)
        assert len(RECEIVED) == 2 + 14
        assert None not in RECEIVED

        RECEIVED.clear()
        routing = clf.get_metadata_routing()
        assert "sample_weight" in str(routing)
        # not requested: the weights are not passed (and sklearn says so if they are)
        plain = FusionClassifier(_spec(), estimator=WeightRecorder())
        with pytest.raises(Exception, match="sample_weight"):
            plain.fit(X, y, sample_weight=w)
