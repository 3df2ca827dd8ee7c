"""FusionClassifier / FusionRegressor: the fusion strategy as a hyperparameter."""

# SPDX-License-Identifier: BSD-3-Clause

import re
import string

from sklearn.base import ClassifierMixin, RegressorMixin, clone
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.pipeline import Pipeline
from sklearn.utils.metadata_routing import MetadataRouter, MethodMapping, process_routing
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from .._compat import (
    HasMethods,
    StrOptions,
    _estimator_has,
    _fit_context,
    _raise_for_params,
    _routing_enabled,
)
from ._attention import (
    _NETWORK_PARAMS_DOC,
    AttentionFusionClassifier,
    AttentionFusionRegressor,
    _BaseAttentionFusion,
)
from ._base import BaseFusion, weight_params
from ._early import EarlyFusion
from ._late import LateFusionClassifier, LateFusionRegressor, _BaseLateFusion

__all__ = ["FusionClassifier", "FusionRegressor"]

FUSION_TYPES = ("early", "late", "attention")


def _strategy_params(cls):
    """The constructor parameters of a strategy's estimator, besides ``modalities``.

    Read from the class itself, so the dispatcher forwards exactly what each strategy takes;
    the dispatcher's own signature is their union (``test_dispatch.py`` checks it).
    """
    return [p for p in cls._get_param_names() if p != "modalities"]


_PARAMETERS_DOC = string.Template(
    """    Parameters
    ----------
    modalities : list of (str, transformer, columns) tuples
        The modality spec, as in :class:`EarlyFusion`.

    fusion : {"early", "late", "attention"}, default="early"
        The fusion strategy.

    estimator : $model, default=None
        The model on the fused features (early) or, cloned, per modality (late). ``None``
        means $default. Ignored by attention fusion.

    weights : dict of str to float, default=None
        Early fusion only. Multiplier of each modality's features, see :class:`EarlyFusion`.

    scaling : {"standard", "block"} or None, default=None
        Early fusion only. How each modality's features are standardised, see
        :class:`EarlyFusion`.

    presence_flags : {"auto", "always", "never"}, default="auto"
        Early fusion only. Which modalities get a presence flag column, see
        :class:`EarlyFusion`.

    modality_estimators : dict of str to $model, default=None
        Late fusion only. Per-modality overrides of ``estimator``, by modality name.

    final_estimator : $model, default=None
        Late fusion only. The model on the stacked per-modality outputs. ``None`` means
        $default.

    cv : int, cross-validation generator, iterable or "prefit", default=None
        Late fusion only. How the out-of-fold predictions are made, see :class:`$late`.

    stack_method : $stack_methods, default="auto"
        Late fusion only. Which output of the per-modality models is stacked, see
        :class:`$late`.

    passthrough : bool, default=False
        Late fusion only. If True, the final estimator also receives the modality features.
$attention    n_jobs : int, default=None
        Modalities fitted and encoded in parallel, by every strategy. ``None`` means 1
        unless in a :func:`joblib.parallel_config` context; ``-1`` means all processors.

    verbose : int, default=0
        Verbosity of every strategy: stages and durations, the encoders' progress bars.
"""
)


def _parameters_doc(model, default, late, stack_methods):
    """The Parameters section of a dispatcher: every strategy's parameters, typed."""
    # attention fusion's own text, each entry marked as used by that strategy only
    network = re.sub(r"(\n    \w+ : [^\n]*\n        )", r"\1Attention fusion only. ",
                     _NETWORK_PARAMS_DOC)
    return _PARAMETERS_DOC.substitute(
        model=model, default=default, late=late, stack_methods=stack_methods, attention=network
    )


def _fitted_has(attr):
    # the fitted strategy estimator, else the one fit would build
    return _estimator_has(attr, delegates=("estimator_", "_strategy_estimator"))


class _BaseFusionDispatch(BaseFusion):
    _parameter_constraints: dict = {
        **EarlyFusion._parameter_constraints,
        **_BaseLateFusion._parameter_constraints,
        **_BaseAttentionFusion._parameter_constraints,
        "fusion": [StrOptions(set(FUSION_TYPES))],
        "estimator": [HasMethods("fit"), None],
    }

    def __init__(
        self,
        modalities,
        *,
        fusion="early",
        estimator=None,
        weights=None,
        scaling=None,
        presence_flags="auto",
        modality_estimators=None,
        final_estimator=None,
        cv=None,
        stack_method="auto",
        passthrough=False,
        d_model=32,
        n_heads=4,
        n_layers=1,
        n_tokens=4,
        dim_feedforward=None,
        dropout=0.1,
        modality_dropout=0.1,
        use_sequences=False,
        max_iter=200,
        batch_size="auto",
        learning_rate_init=1e-3,
        alpha=1e-4,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=10,
        tol=1e-4,
        random_state=None,
        device="auto",
        n_jobs=None,
        verbose=0,
    ):
        self.modalities = modalities
        self.fusion = fusion
        self.estimator = estimator
        self.weights = weights
        self.scaling = scaling
        self.presence_flags = presence_flags
        self.modality_estimators = modality_estimators
        self.final_estimator = final_estimator
        self.cv = cv
        self.stack_method = stack_method
        self.passthrough = passthrough
        self.d_model = d_model
        self.n_heads = n_heads
        self.n_layers = n_layers
        self.n_tokens = n_tokens
        self.dim_feedforward = dim_feedforward
        self.dropout = dropout
        self.modality_dropout = modality_dropout
        self.use_sequences = use_sequences
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.alpha = alpha
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.random_state = random_state
        self.device = device
        self.n_jobs = n_jobs
        self.verbose = verbose

    def _head(self):
        return self.estimator if self.estimator is not None else self._default_estimator()

    def _strategy(self, cls):
        """An unfitted ``cls`` with every one of its parameters taken from this estimator."""
        return cls(self.modalities, **{p: getattr(self, p) for p in _strategy_params(cls)})

    def _make_estimator(self):
        """The unfitted strategy estimator, with every parameter of that strategy forwarded."""
        if self.fusion == "early":
            fusion = self._strategy(EarlyFusion)
            return Pipeline([("fusion", fusion), ("estimator", clone(self._head()))])
        if self.fusion == "attention":
            est = self._strategy(self._attention_class)
            if _routing_enabled():
                # the network's loss consumes the weights routed to this estimator
                est.set_fit_request(sample_weight=True)
            return est
        return self._strategy(self._late_class)

    @property
    def _strategy_estimator(self):
        return self._make_estimator()

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y, sample_weight=None, **fit_params):
        """Fit the fusion strategy named by ``fusion``.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Raw input with the columns named in ``modalities``.
        y : array-like of shape (n_samples,)
            Target values.
        sample_weight : array-like of shape (n_samples,), default=None
            Row weights: early fusion passes them to ``estimator`` (if its ``fit`` takes
            them), late fusion to the per-modality and final estimators that take them,
            attention fusion to its loss. With metadata routing enabled they are routed like
            ``fit_params``.
        **fit_params : dict
            Other metadata, only with ``sklearn.set_config(enable_metadata_routing=True)``:
            routed to the strategy estimator, which passes it on as requested.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        _raise_for_params(fit_params, self, "fit")
        X = self._check_X(X, reset=True)
        y = self._check_y(X, y)
        self._build_modalities(X)
        inner = self._make_estimator()
        if _routing_enabled():
            if sample_weight is not None:
                fit_params["sample_weight"] = sample_weight
            params = dict(process_routing(self, "fit", **fit_params).estimator_.fit)
        elif sample_weight is None:
            params = {}
        elif self.fusion == "early":
            # the head gets them (a Pipeline head through its last step) or a TypeError
            # names it; the modality transformers do not, as in a Pipeline's first steps
            head = weight_params(inner[-1], sample_weight, owner=type(self).__name__,
                                 role="the estimator")
            params = {f"estimator__{k}": v for k, v in head.items()}
        else:  # late fusion passes them on (or names who cannot take them); attention's loss
            params = {"sample_weight": sample_weight}
        self.estimator_ = inner.fit(X, y, **params)
        return self

    def get_metadata_routing(self):
        """Metadata routing: ``fit`` metadata goes to the strategy estimator.

        Returns
        -------
        routing : MetadataRouter
            A :class:`~sklearn.utils.metadata_routing.MetadataRouter` encapsulating routing
            information.
        """
        return MetadataRouter(owner=self).add(
            estimator_=self._make_estimator(),
            method_mapping=MethodMapping().add(caller="fit", callee="fit"),
        )

    def _fusion_step(self):
        return self.estimator_[0] if self.fusion_ == "early" else self.estimator_

    @property
    def fusion_(self):
        """The strategy of the fitted estimator."""
        check_is_fitted(self)
        return (
            "early" if isinstance(self.estimator_, Pipeline)
            else "late" if isinstance(self.estimator_, _BaseLateFusion) else "attention"
        )

    def _encode(self, X):
        """Validate X and encode every modality once, by the fitted strategy estimator."""
        check_is_fitted(self)
        return self._fusion_step()._encode(self._check_X(X, reset=False))

    def _predict_encoded(self, encoded, method="predict"):
        """What ``getattr(self, method)(X)`` gives, from ``encoded = self._encode(X)``."""
        check_is_fitted(self)
        if self.fusion_ != "early":
            return self.estimator_._predict_encoded(encoded, method)
        if method not in ("predict", "predict_proba", "decision_function"):
            raise ValueError(
                f"{type(self).__name__} with fusion='early' supports method in "
                f"['decision_function', 'predict', 'predict_proba']; got {method!r}."
            )
        Xt = self.estimator_[0]._predict_encoded(encoded, "transform")
        for _, step in self.estimator_.steps[1:-1]:
            Xt = step.transform(Xt)
        return getattr(self.estimator_[-1], method)(Xt)

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
        return self._predict_encoded(self._encode(X), "predict")

    def _sk_visual_block_(self):
        from .._compat import _VisualBlock

        inner = self.estimator_ if hasattr(self, "estimator_") else self._make_estimator()
        return _VisualBlock("serial", [inner], names=[f"fusion={self.fusion!r}"],
                            dash_wrapped=False)

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
    :class:`AttentionFusionClassifier`. Every parameter of every strategy is a parameter of
    this class, under its own name, and is passed to the strategy that takes it (as
    :class:`~sklearn.svm.SVC` takes ``degree``, used by ``kernel="poly"`` only). So
    ``GridSearchCV(FusionClassifier(...), {"fusion": ["early", "late"]})`` compares strategies,
    a list of grids tunes each strategy's own parameters (see the User Guide), and nested
    parameters such as ``text__batch_size`` reach the modality transformers.

    Read more in the :ref:`User Guide <fusion_dispatch>`.

%(parameters)s
    Attributes
    ----------
    estimator_ : estimator
        The fitted fusion estimator (a Pipeline for early fusion).

    fusion_ : str
        The strategy of ``estimator_``.

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
    >>> grid = [{"fusion": ["early"], "scaling": [None, "block"]},
    ...         {"fusion": ["late"], "passthrough": [False, True]}]
    >>> GridSearchCV(clf, grid, cv=3).fit(X, y).cv_results_["params"][2]
    {'fusion': 'late', 'passthrough': False}
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
        return self._predict_encoded(self._encode(X), "predict_proba")

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
        return self._predict_encoded(self._encode(X), "decision_function")


FusionClassifier.__doc__ %= {"parameters": _parameters_doc(
    "classifier", ":class:`~sklearn.linear_model.LogisticRegression`", "LateFusionClassifier",
    '{"auto", "predict_proba", "decision_function", "predict"}',
)}


class FusionRegressor(RegressorMixin, _BaseFusionDispatch):
    """A regressor whose fusion strategy is a parameter, for model selection.

    The regression twin of :class:`FusionClassifier`.

    Read more in the :ref:`User Guide <fusion_dispatch>`.

%(parameters)s
    Attributes
    ----------
    estimator_ : estimator
        The fitted fusion estimator.

    fusion_ : str
        The strategy of ``estimator_``.

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


FusionRegressor.__doc__ %= {"parameters": _parameters_doc(
    "regressor", ":class:`~sklearn.linear_model.RidgeCV`", "LateFusionRegressor",
    '{"auto", "predict"}',
)}
