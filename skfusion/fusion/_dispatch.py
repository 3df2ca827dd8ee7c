"""FusionClassifier / FusionRegressor: the fusion strategy as a hyperparameter."""

# SPDX-License-Identifier: BSD-3-Clause

from numbers import Integral

from sklearn.base import ClassifierMixin, RegressorMixin, _fit_context, clone
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import HasMethods, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from ._attention import AttentionFusionClassifier, AttentionFusionRegressor
from ._base import _BaseFusion
from ._early import EarlyFusion
from ._late import LateFusionClassifier, LateFusionRegressor

__all__ = ["FusionClassifier", "FusionRegressor"]

FUSION_TYPES = ("early", "late", "attention")


def _fitted_has(attr):
    def check(self):
        if hasattr(self, "estimator_"):
            return hasattr(self.estimator_, attr)
        return True

    return check


class _BaseFusionDispatch(_BaseFusion):
    _parameter_constraints: dict = {
        "modalities": [list],
        "fusion": [StrOptions(set(FUSION_TYPES))],
        "estimator": [HasMethods("fit"), None],
        "final_estimator": [HasMethods("fit"), None],
        "cv": ["cv_object"],
        "scaling": [StrOptions({"standard", "block"}), None],
        "passthrough": ["boolean"],
        "attention_params": [dict, None],
        "random_state": ["random_state"],
        "n_jobs": [None, Integral],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        modalities,
        *,
        fusion="early",
        estimator=None,
        final_estimator=None,
        cv=None,
        scaling=None,
        passthrough=False,
        attention_params=None,
        random_state=None,
        n_jobs=None,
        verbose=0,
    ):
        self.modalities = modalities
        self.fusion = fusion
        self.estimator = estimator
        self.final_estimator = final_estimator
        self.cv = cv
        self.scaling = scaling
        self.passthrough = passthrough
        self.attention_params = attention_params
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.verbose = verbose

    def _make_estimator(self):
        est = self.estimator if self.estimator is not None else self._default_estimator()
        if self.fusion == "early":
            fusion = EarlyFusion(self.modalities, scaling=self.scaling, n_jobs=self.n_jobs)
            return Pipeline([("fusion", fusion), ("estimator", clone(est))])
        if self.fusion == "attention":
            params = dict(self.attention_params or {})
            params.setdefault("random_state", self.random_state)
            params.setdefault("n_jobs", self.n_jobs)
            params.setdefault("verbose", self.verbose)
            return self._attention_class(self.modalities, **params)
        return self._late_class(
            self.modalities,
            estimator=est,
            final_estimator=self.final_estimator,
            cv=self.cv,
            passthrough=self.passthrough,
            n_jobs=self.n_jobs,
            verbose=self.verbose,
        )

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y):
        """Fit the fusion strategy named by ``fusion``.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Raw input with the columns named in ``modalities``.
        y : array-like of shape (n_samples,)
            Target values.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        X = self._check_X(X, reset=True)
        y = self._check_y(X, y)
        self._build_modalities(X)
        self.estimator_ = self._make_estimator().fit(X, y)
        return self

    def predict(self, X):
        """Predict with the fitted fusion estimator.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Raw input with the same columns as during fit.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            Predictions.
        """
        check_is_fitted(self)
        X = self._check_X(X, reset=False)
        return self.estimator_.predict(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.string = True
        return tags


class FusionClassifier(ClassifierMixin, _BaseFusionDispatch):
    """A classifier whose fusion strategy is a parameter, for model selection.

    ``fusion="early"`` builds ``Pipeline([EarlyFusion(modalities), estimator])``;
    ``fusion="late"`` builds :class:`LateFusionClassifier` with ``estimator`` per modality and
    ``final_estimator`` on top; ``fusion="attention"`` builds
    :class:`AttentionFusionClassifier` with ``attention_params``. Because the strategy is a
    parameter,
    ``GridSearchCV(FusionClassifier(...), {"fusion": ["early", "late"]})`` compares them, and
    nested parameters such as ``text__batch_size`` reach the modality transformers.

    Read more in the :ref:`User Guide <fusion_dispatch>`.

    Parameters
    ----------
    modalities : list of (str, transformer, columns) tuples
        The modality spec, as in :class:`EarlyFusion`.

    fusion : {"early", "late", "attention"}, default="early"
        The fusion strategy.

    estimator : classifier, default=None
        The model on the fused features (early) or per modality (late). ``None`` means
        :class:`~sklearn.linear_model.LogisticRegression`.

    final_estimator : classifier, default=None
        Late fusion's stacking model (ignored by early fusion).

    cv : int, cross-validation generator or iterable, default=None
        Late fusion's out-of-fold scheme (ignored by early fusion).

    scaling : {"standard", "block"} or None, default=None
        Early fusion's per-modality scaling, see :class:`EarlyFusion`.

    passthrough : bool, default=False
        Late fusion's passthrough, see :class:`LateFusionClassifier`.

    attention_params : dict, default=None
        Keyword arguments of :class:`AttentionFusionClassifier` (``max_iter``, ``d_model``,
        ...) for ``fusion="attention"``; ignored by the other strategies.

    random_state : int, RandomState instance or None, default=None
        Seeds attention fusion's training (unless ``attention_params`` sets its own).

    n_jobs : int, default=None
        Parallel jobs used by the underlying fusion estimator.

    verbose : int, default=0
        Verbosity of the underlying fusion estimator.

    Attributes
    ----------
    estimator_ : estimator
        The fitted fusion estimator (a Pipeline for early fusion).

    classes_ : ndarray of shape (n_classes,)
        Class labels.

    n_features_in_ : int
        Number of columns in ``X`` during fit.

    feature_names_in_ : ndarray of shape (``n_features_in_``,)
        Column names of ``X`` during fit, when it is a DataFrame.

    See Also
    --------
    EarlyFusion : The early fusion transformer.
    LateFusionClassifier : The late fusion (stacking) classifier.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.model_selection import GridSearchCV
    >>> from sklearn.preprocessing import StandardScaler
    >>> from skfusion import FusionClassifier
    >>> X, y = load_iris(return_X_y=True, as_frame=True)
    >>> clf = FusionClassifier([
    ...     ("sepal", StandardScaler(), ["sepal length (cm)", "sepal width (cm)"]),
    ...     ("petal", StandardScaler(), ["petal length (cm)", "petal width (cm)"]),
    ... ], cv=3)
    >>> search = GridSearchCV(clf, {"fusion": ["early", "late"]}, cv=3).fit(X, y)
    >>> search.best_params_["fusion"] in ("early", "late")
    True
    """

    def _default_estimator(self):
        return LogisticRegression(max_iter=1000)

    _late_class = LateFusionClassifier
    _attention_class = AttentionFusionClassifier

    @property
    def classes_(self):
        """Class labels seen during fit."""
        check_is_fitted(self)
        return self.estimator_.classes_

    @available_if(_fitted_has("predict_proba"))
    def predict_proba(self, X):
        """Class probabilities.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Raw input with the same columns as during fit.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Probability of each class, in the order of ``classes_``.
        """
        check_is_fitted(self)
        return self.estimator_.predict_proba(self._check_X(X, reset=False))

    @available_if(_fitted_has("decision_function"))
    def decision_function(self, X):
        """Decision scores.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Raw input with the same columns as during fit.

        Returns
        -------
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
            Decision scores.
        """
        check_is_fitted(self)
        return self.estimator_.decision_function(self._check_X(X, reset=False))


class FusionRegressor(RegressorMixin, _BaseFusionDispatch):
    """A regressor whose fusion strategy is a parameter, for model selection.

    The regression twin of :class:`FusionClassifier`.

    Read more in the :ref:`User Guide <fusion_dispatch>`.

    Parameters
    ----------
    modalities : list of (str, transformer, columns) tuples
        The modality spec, as in :class:`EarlyFusion`.

    fusion : {"early", "late", "attention"}, default="early"
        The fusion strategy.

    estimator : regressor, default=None
        The model on the fused features (early) or per modality (late). ``None`` means
        :class:`~sklearn.linear_model.RidgeCV`.

    final_estimator : regressor, default=None
        Late fusion's stacking model.

    cv : int, cross-validation generator or iterable, default=None
        Late fusion's out-of-fold scheme.

    scaling : {"standard", "block"} or None, default=None
        Early fusion's per-modality scaling.

    passthrough : bool, default=False
        Late fusion's passthrough.

    attention_params : dict, default=None
        Keyword arguments of :class:`AttentionFusionRegressor` for ``fusion="attention"``.

    random_state : int, RandomState instance or None, default=None
        Seeds attention fusion's training (unless ``attention_params`` sets its own).

    n_jobs : int, default=None
        Parallel jobs used by the underlying fusion estimator.

    verbose : int, default=0
        Verbosity of the underlying fusion estimator.

    Attributes
    ----------
    estimator_ : estimator
        The fitted fusion estimator.

    n_features_in_ : int
        Number of columns in ``X`` during fit.

    feature_names_in_ : ndarray of shape (``n_features_in_``,)
        Column names of ``X`` during fit, when it is a DataFrame.

    See Also
    --------
    FusionClassifier : The classification twin.

    Examples
    --------
    >>> from sklearn.datasets import load_diabetes
    >>> from sklearn.preprocessing import StandardScaler
    >>> from skfusion import FusionRegressor
    >>> X, y = load_diabetes(return_X_y=True, as_frame=True)
    >>> reg = FusionRegressor([
    ...     ("body", StandardScaler(), ["age", "sex", "bmi", "bp"]),
    ...     ("blood", StandardScaler(), ["s1", "s2", "s3", "s4", "s5", "s6"]),
    ... ], fusion="late", cv=3).fit(X, y)
    >>> reg.predict(X.iloc[:3]).shape
    (3,)
    """

    def _default_estimator(self):
        return RidgeCV()

    _late_class = LateFusionRegressor
    _attention_class = AttentionFusionRegressor
