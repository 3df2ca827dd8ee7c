"""scikit-learn's common estimator checks on numeric tabular modalities."""

import pytest
from sklearn.impute import SimpleImputer
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from skfusion import (
    EarlyFusion,
    FusionClassifier,
    FusionRegressor,
    LateFusionClassifier,
    LateFusionRegressor,
)


def first_column(X):
    """Selector used by the checks: the first column (they vary n_features)."""
    return [0]


def other_columns(X):
    """The remaining columns, or the first again when X has only one."""
    return list(range(1, X.shape[1])) or [0]


def tabular_modalities():
    # The checks put NaN in single cells; an imputer in the modality handles those (a whole
    # modality missing in a row is the fusion estimators' own business).
    return [
        ("a", make_pipeline(SimpleImputer(), StandardScaler()), first_column),
        ("b", make_pipeline(SimpleImputer(), StandardScaler()), other_columns),
    ]


ESTIMATORS = [
    EarlyFusion(tabular_modalities()),
    EarlyFusion(tabular_modalities(), scaling="block"),
    LateFusionClassifier(tabular_modalities(), cv=3),
    LateFusionRegressor(tabular_modalities(), estimator=Ridge(), cv=3),
    FusionClassifier(tabular_modalities(), fusion="early"),
    FusionClassifier(tabular_modalities(), fusion="late", cv=3),
    FusionRegressor(tabular_modalities(), fusion="early"),
    FusionRegressor(tabular_modalities(), fusion="late", estimator=Ridge(), cv=3),
]


def expected_failed_checks(estimator):
    return {}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failed_checks)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
