"""scikit-learn's common estimator checks on numeric tabular modalities."""

from sklearn.impute import SimpleImputer
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from skfusion import (
    AttentionFusionClassifier,
    AttentionFusionRegressor,
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


ATTENTION_FAST = dict(
    d_model=8, n_heads=2, n_tokens=1, max_iter=10, learning_rate_init=0.03, random_state=0
)

ESTIMATORS = [
    EarlyFusion(tabular_modalities()),
    EarlyFusion(tabular_modalities(), scaling="block"),
    LateFusionClassifier(tabular_modalities(), cv=3),
    LateFusionRegressor(tabular_modalities(), estimator=Ridge(), cv=3),
    FusionClassifier(tabular_modalities(), fusion="early"),
    FusionClassifier(tabular_modalities(), fusion="late", cv=3),
    FusionRegressor(tabular_modalities(), fusion="early"),
    FusionRegressor(tabular_modalities(), fusion="late", estimator=Ridge(), cv=3),
    # a tiny, fast network: the checks fit dozens of times
    AttentionFusionClassifier(tabular_modalities(), **ATTENTION_FAST),
    AttentionFusionRegressor(tabular_modalities(), **ATTENTION_FAST),
]


def expected_failed_checks(estimator):
    # check_methods_subset_invariance and check_methods_sample_order_invariance pass for the
    # attention estimators because their numpy inference runs in float64 (in float32 a row's
    # prediction moved by up to 1e-5 relative with its batch on AVX2 CPUs): do not list them.
    if isinstance(estimator, (AttentionFusionClassifier, AttentionFusionRegressor)):
        return {
            "check_sample_weight_equivalence_on_dense_data": (
                "mini-batch training: a weight of 2 changes the batches, it does not repeat "
                "the row (as for MLPClassifier)"
            ),
        }
    failures = {}
    fusion = getattr(estimator, "fusion", None)
    if isinstance(estimator, (LateFusionClassifier, LateFusionRegressor)) or fusion == "late":
        failures["check_sample_weight_equivalence_on_dense_data"] = (
            "stacking: a repeated row changes the cross-validation folds, so the out-of-fold "
            "meta-features differ (sklearn lists the same for StackingClassifier); "
            "tests/test_routing.py checks the equivalence with folds that keep repeats together"
        )
    elif fusion == "early":
        failures["check_sample_weight_equivalence_on_dense_data"] = (
            "sample_weight reaches the head only: the modality transformers (StandardScaler "
            "here) are fitted unweighted, as in a Pipeline that routes it to its last step; "
            "tests/test_routing.py checks the equivalence with stateless transformers"
        )
    if fusion in ("early", "late"):
        failures["check_non_transformer_estimators_n_iter"] = (
            "max_iter is a parameter of fusion='attention' only (as SVC's degree is of "
            "kernel='poly' only); the early and late strategies have no n_iter_"
        )
    return failures


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failed_checks)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
