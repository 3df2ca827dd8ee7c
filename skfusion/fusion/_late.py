"""Late fusion: one model per modality, stacked by a final estimator."""

# SPDX-License-Identifier: BSD-3-Clause

from numbers import Integral

import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin, _fit_context, clone, is_classifier
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.model_selection import check_cv, cross_val_predict
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import Bunch
from sklearn.utils._param_validation import HasMethods, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from ..runtime._cache import cached_transform
from ._base import _BaseFusion, _passthrough, _take_y, encoded_presence, is_stateless

__all__ = ["LateFusionClassifier", "LateFusionRegressor"]


def _final_has(attr):
    def check(self):
        if hasattr(self, "final_estimator_"):
            return hasattr(self.final_estimator_, attr)
        return self.final_estimator is None or hasattr(self.final_estimator, attr)

    return check


class _BaseLateFusion(_BaseFusion):
    """Stacking over modalities; shared by the classifier and the regressor."""

    _parameter_constraints: dict = {
        "modalities": [list],
        "estimator": [HasMethods("fit"), None],
        "modality_estimators": [dict, None],
        "final_estimator": [HasMethods("fit"), None],
        "cv": ["cv_object"],
        "stack_method": [StrOptions({"auto", "predict_proba", "decision_function", "predict"})],
        "passthrough": ["boolean"],
        "n_jobs": [None, Integral],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        modalities,
        *,
        estimator=None,
        modality_estimators=None,
        final_estimator=None,
        cv=None,
        stack_method="auto",
        passthrough=False,
        n_jobs=None,
        verbose=0,
    ):
        self.modalities = modalities
        self.estimator = estimator
        self.modality_estimators = modality_estimators
        self.final_estimator = final_estimator
        self.cv = cv
        self.stack_method = stack_method
        self.passthrough = passthrough
        self.n_jobs = n_jobs
        self.verbose = verbose

    # --- pieces that differ between classifier and regressor ---
    def _default_estimator(self):  # pragma: no cover - overridden
        raise NotImplementedError

    def _default_final_estimator(self):  # pragma: no cover - overridden
        raise NotImplementedError

    def _prepare_y(self, y):
        return y

    def _method_for(self, estimator):
        if not is_classifier(self):
            if self.stack_method not in ("auto", "predict"):
                raise ValueError(
                    f"stack_method={self.stack_method!r} is not available for a regressor; "
                    "use 'auto' or 'predict'."
                )
            return "predict"
        if self.stack_method != "auto":
            if not hasattr(estimator, self.stack_method):
                raise ValueError(
                    f"stack_method={self.stack_method!r}, but {type(estimator).__name__} does "
                    f"not implement {self.stack_method}."
                )
            return self.stack_method
        for method in ("predict_proba", "decision_function", "predict"):
            if hasattr(estimator, method):
                return method
        raise ValueError(
            f"{type(estimator).__name__} has no prediction method."
        )  # pragma: no cover

    def _concat_meta(self, preds, method):
        preds = np.asarray(preds, dtype=np.float64)
        if preds.ndim == 1:
            return preds.reshape(-1, 1)
        if method == "predict_proba" and preds.shape[1] == 2:
            return preds[:, 1:]
        return preds

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y):
        """Fit one model per modality, then the final estimator on their out-of-fold outputs.

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
        y = self._prepare_y(self._check_y(X, y))
        self._build_modalities(X)
        overrides = dict(self.modality_estimators or {})
        unknown = set(overrides) - {m.name for m in self._modalities}
        if unknown:
            raise ValueError(
                f"modality_estimators names unknown modalities {sorted(unknown)!r}; modalities "
                f"are {[m.name for m in self._modalities]!r}."
            )
        n = X.shape[0]
        cv = check_cv(self.cv, y, classifier=is_classifier(self))
        splits = list(cv.split(np.zeros((n, 1)), y))
        base = self.estimator if self.estimator is not None else self._default_estimator()

        self.estimators_, self.stack_method_, self._fill, self._pass_fill = [], [], [], []
        self._active = []
        meta_blocks, pass_blocks, presence = [], [], []
        for mod, (Xm, present) in zip(self._modalities, self._modality_inputs(X)):
            if Xm is None:
                continue
            if not present.any():
                raise ValueError(
                    f"Modality {mod.name!r} is missing (None/NaN/empty) in every one of the {n} "
                    "rows passed to fit; there is nothing to learn from."
                )
            if self.verbose:
                print(f"[LateFusion] modality {mod.name!r}: {present.sum()} of {n} rows present")
            est = clone(overrides.get(mod.name, base))
            method = self._method_for(est)
            y_m = _take_y(y, present)
            sub_splits = _restrict_splits(splits, present, mod.name)
            with self._rows_named(X, mod):
                trans = mod.transformer
                trans = trans if isinstance(trans, str) else clone(trans)
                if is_stateless(trans):
                    # Fit learns nothing from the data: encode once, cross-validate the model alone.
                    trans, F = _fit_transform_features(trans, Xm, y_m, mod.name)
                    kept = encoded_presence(F, np.ones(F.shape[0], dtype=bool))
                    if not kept.all():  # on_error="missing" made bad items NaN rows: missing
                        present = encoded_presence(F, present)
                        F, y_m = F[kept], _take_y(y, present)
                        sub_splits = _restrict_splits(splits, present, mod.name)
                    oof = cross_val_predict(
                        clone(est), F, y_m, cv=sub_splits, method=method, n_jobs=self.n_jobs
                    )
                    est.fit(F, y_m)
                    pipe = Pipeline([("transformer", trans), ("estimator", est)])
                else:
                    pipe = Pipeline([("transformer", trans), ("estimator", est)])
                    oof = cross_val_predict(
                        clone(pipe), Xm, y_m, cv=sub_splits, method=method, n_jobs=self.n_jobs
                    )
                    pipe.fit(Xm, y_m)
                    F = _transform_features(pipe[0], Xm, mod.name) if self.passthrough else None
            oof = self._concat_meta(oof, method)
            self.estimators_.append(pipe)
            self.stack_method_.append(method)
            self._active.append(mod.name)
            fill = oof.mean(axis=0)
            self._fill.append(fill)
            meta_blocks.append(_scatter(oof, present, fill))
            presence.append(present)
            if self.passthrough:
                pass_fill = np.nanmean(F, axis=0)
                self._pass_fill.append(pass_fill)
                pass_blocks.append(_scatter(F, present, pass_fill))
        presence = np.column_stack(presence)
        self._flag_cols = [j for j in range(presence.shape[1]) if not presence[:, j].all()]
        meta = self._stack(meta_blocks, pass_blocks, presence)
        final = self.final_estimator
        self.final_estimator_ = clone(
            final if final is not None else self._default_final_estimator()
        )
        self.final_estimator_.fit(meta, y)
        return self

    def _stack(self, meta_blocks, pass_blocks, presence):
        parts = list(meta_blocks)
        if self._flag_cols:
            parts.append(presence[:, self._flag_cols].astype(np.float64))
        parts += pass_blocks
        return np.hstack(parts)

    @property
    def named_estimators_(self):
        """The fitted per-modality pipelines by modality name."""
        check_is_fitted(self)
        return Bunch(**dict(zip(self._active, self.estimators_)))

    def _meta_features(self, X):
        check_is_fitted(self)
        X = self._check_X(X, reset=False)
        inputs = {
            mod.name: inp
            for mod, inp in zip(self._modalities, self._modality_inputs(X))
            if inp[0] is not None
        }
        mods = {mod.name: mod for mod in self._modalities}
        meta_blocks, pass_blocks, presence = [], [], []
        for j, (name, pipe, method) in enumerate(
            zip(self._active, self.estimators_, self.stack_method_)
        ):
            Xm, present = inputs[name]
            preds, F = None, None
            with self._rows_named(X, mods[name]):
                if present.any():
                    preds, kept = _predict_modality(pipe, method, Xm, name)
                    if self.passthrough:
                        F = _transform_features(pipe[0], Xm, name)[kept]
                    present = _narrow(present, kept)
            if preds is None:
                preds = np.empty((0, self._fill[j].shape[0]))
            presence.append(present)
            meta_blocks.append(_scatter(self._concat_meta(preds, method), present, self._fill[j]))
            if self.passthrough:
                if F is None:
                    F = np.empty((0, self._pass_fill[j].shape[0]))
                pass_blocks.append(_scatter(F, present, self._pass_fill[j]))
        return self._stack(meta_blocks, pass_blocks, np.column_stack(presence))

    def predict(self, X):
        """Predict with the final estimator on the stacked per-modality outputs.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Raw input with the same columns as during fit.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            Predicted targets.
        """
        meta = self._meta_features(X)
        return self.final_estimator_.predict(meta)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.string = True
        return tags


def _restrict_splits(splits, present, name):
    """Map full-data CV splits onto the rows where a modality is present."""
    if present.all():
        return splits
    pos = np.full(present.shape[0], -1)
    pos[present] = np.arange(present.sum())
    out = []
    for train, test in splits:
        tr, te = pos[train][present[train]], pos[test][present[test]]
        if te.size == 0:
            continue
        if tr.size == 0:
            raise ValueError(
                f"Modality {name!r}: a cross-validation fold has no training row where the "
                "modality is present; use fewer folds or fill in more rows."
            )
        out.append((tr, te))
    return out


def _fit_transform_features(trans, Xm, y, name):
    from ._base import _fit_transform_one

    trans, Xt = _fit_transform_one(trans, Xm, y, name)  # through the embedding cache
    return trans, _densify(Xt)


def _transform_features(trans, Xm, name):
    from ._base import _as_2d_output

    if isinstance(trans, str):
        return _passthrough(Xm, name)
    return _densify(_as_2d_output(cached_transform(trans, Xm), name))


def _predict_modality(pipe, method, Xm, name):
    """``getattr(pipe, method)(Xm)``, with the transformer's rows through the embedding cache.

    A stateless transformer's model was trained on ``_fit_transform_features`` output, so its
    predictions go through ``_transform_features`` too (same conversion, cached rows). Rows
    the encoder returned as NaN (``on_error="missing"``) are missing that modality: returns
    the predictions of the rows kept (None if none is) and the boolean mask of those rows.
    """
    if is_stateless(pipe[0]):
        F = _transform_features(pipe[0], Xm, name)
        kept = encoded_presence(F, np.ones(F.shape[0], dtype=bool))
        preds = getattr(pipe[-1], method)(F[kept]) if kept.any() else None
        return preds, kept
    return getattr(pipe, method)(Xm), np.ones(Xm.shape[0], dtype=bool)


def _narrow(present, kept):
    """``present`` with only the ``kept`` ones of its True rows left True."""
    if kept.all():
        return present
    present = present.copy()
    present[np.flatnonzero(present)[~kept]] = False
    return present


def _densify(Xt):
    return Xt.toarray() if hasattr(Xt, "toarray") else Xt


def _scatter(values, present, fill):
    out = np.empty((present.shape[0], values.shape[1]), dtype=np.float64)
    out[present] = values
    out[~present] = fill
    return out


class LateFusionClassifier(ClassifierMixin, _BaseLateFusion):
    """Late fusion for classification: one classifier per modality, stacked.

    Each modality gets a pipeline made of a clone of its transformer and a clone of
    ``estimator`` (or its entry in ``modality_estimators``), trained on the rows where that
    modality is present. Their out-of-fold predictions (from ``cv``) become the features of
    ``final_estimator``, with a presence flag for each modality that had missing rows. At
    predict time a missing modality contributes its mean out-of-fold prediction, and its flag
    tells the final estimator to rely on the other modalities.

    Read more in the :ref:`User Guide <late_fusion>`.

    Parameters
    ----------
    modalities : list of (str, transformer, columns) tuples
        The modality spec, as in :class:`EarlyFusion`.

    estimator : classifier, default=None
        The per-modality model, cloned for every modality. ``None`` means
        :class:`~sklearn.linear_model.LogisticRegression`.

    modality_estimators : dict of str to classifier, default=None
        Per-modality overrides of ``estimator``, by modality name.

    final_estimator : classifier, default=None
        The model trained on the stacked per-modality outputs. ``None`` means
        :class:`~sklearn.linear_model.LogisticRegression`.

    cv : int, cross-validation generator or iterable, default=None
        How out-of-fold predictions are made, as in :func:`~sklearn.model_selection.check_cv`
        (``None``: 5-fold stratified). The same folds are used for every modality, restricted
        to the rows where it is present.

    stack_method : {"auto", "predict_proba", "decision_function", "predict"}, default="auto"
        Which output of the per-modality models is stacked. ``"auto"`` tries
        ``predict_proba``, then ``decision_function``, then ``predict``. For binary
        ``predict_proba`` only the positive-class column is kept.

    passthrough : bool, default=False
        If True, the final estimator also receives every modality's transformed features
        (missing rows filled with the training mean).

    n_jobs : int, default=None
        Number of jobs for the cross-validated fits. ``None`` means 1 unless in a
        :func:`joblib.parallel_config` context; ``-1`` means all processors.

    verbose : int, default=0
        Print progress per modality when positive.

    Attributes
    ----------
    estimators_ : list of Pipeline
        The fitted ``(transformer, estimator)`` pipeline of each modality (dropped ones left out).

    named_estimators_ : :class:`~sklearn.utils.Bunch`
        The same pipelines by modality name.

    stack_method_ : list of str
        The prediction method used for each modality.

    final_estimator_ : estimator
        The fitted final estimator.

    classes_ : ndarray of shape (n_classes,)
        Class labels.

    n_features_in_ : int
        Number of columns in ``X`` during fit.

    feature_names_in_ : ndarray of shape (``n_features_in_``,)
        Column names of ``X`` during fit, when it is a DataFrame.

    See Also
    --------
    EarlyFusion : Concatenate modality features for one model.
    sklearn.ensemble.StackingClassifier : Stacking over estimators that share one input.

    Notes
    -----
    A modality whose transformer learns nothing from the data (skfusion's pretrained encoders,
    or transformers tagged ``requires_fit=False``) is encoded once for all folds; other
    transformers are refitted inside every fold, so no information leaks from the held-out rows.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.preprocessing import StandardScaler
    >>> from skfusion import LateFusionClassifier
    >>> X, y = load_iris(return_X_y=True, as_frame=True)
    >>> clf = LateFusionClassifier([
    ...     ("sepal", StandardScaler(), ["sepal length (cm)", "sepal width (cm)"]),
    ...     ("petal", StandardScaler(), ["petal length (cm)", "petal width (cm)"]),
    ... ], cv=3).fit(X, y)
    >>> clf.predict(X.iloc[:2])
    array([0, 0])
    """

    def _default_estimator(self):
        return LogisticRegression(max_iter=1000)

    def _default_final_estimator(self):
        return LogisticRegression(max_iter=1000)

    def _prepare_y(self, y):
        check_classification_targets(y)
        self._label_encoder = LabelEncoder().fit(y)
        self.classes_ = self._label_encoder.classes_
        if len(self.classes_) < 2:
            raise ValueError(
                f"The target has only one class ({self.classes_[0]!r}); a classifier needs at "
                "least two."
            )
        return self._label_encoder.transform(y)

    def predict(self, X):
        """Predict class labels.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Raw input with the same columns as during fit.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            Predicted class labels.
        """
        y_pred = super().predict(X)
        return self._label_encoder.inverse_transform(y_pred)

    @available_if(_final_has("predict_proba"))
    def predict_proba(self, X):
        """Class probabilities from the final estimator.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Raw input with the same columns as during fit.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Probability of each class, in the order of ``classes_``.
        """
        meta = self._meta_features(X)
        return self.final_estimator_.predict_proba(meta)

    @available_if(_final_has("decision_function"))
    def decision_function(self, X):
        """Decision function of the final estimator.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Raw input with the same columns as during fit.

        Returns
        -------
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
            Decision scores.
        """
        meta = self._meta_features(X)
        return self.final_estimator_.decision_function(meta)


class LateFusionRegressor(RegressorMixin, _BaseLateFusion):
    """Late fusion for regression: one regressor per modality, stacked.

    The regression twin of :class:`LateFusionClassifier`: every modality's pipeline is
    trained where the modality is present, its out-of-fold predictions (plus presence flags)
    feed ``final_estimator``.

    Read more in the :ref:`User Guide <late_fusion>`.

    Parameters
    ----------
    modalities : list of (str, transformer, columns) tuples
        The modality spec, as in :class:`EarlyFusion`.

    estimator : regressor, default=None
        The per-modality model. ``None`` means :class:`~sklearn.linear_model.RidgeCV`.

    modality_estimators : dict of str to regressor, default=None
        Per-modality overrides of ``estimator``.

    final_estimator : regressor, default=None
        Model on the stacked outputs. ``None`` means :class:`~sklearn.linear_model.RidgeCV`.

    cv : int, cross-validation generator or iterable, default=None
        How out-of-fold predictions are made (``None``: 5-fold).

    stack_method : {"auto", "predict"}, default="auto"
        Regressors stack ``predict``.

    passthrough : bool, default=False
        If True, the final estimator also receives the modality features.

    n_jobs : int, default=None
        Number of jobs for the cross-validated fits.

    verbose : int, default=0
        Print progress per modality when positive.

    Attributes
    ----------
    estimators_ : list of Pipeline
        The fitted pipeline of each modality.

    named_estimators_ : :class:`~sklearn.utils.Bunch`
        The same pipelines by modality name.

    stack_method_ : list of str
        The prediction method used for each modality.

    final_estimator_ : estimator
        The fitted final estimator.

    n_features_in_ : int
        Number of columns in ``X`` during fit.

    feature_names_in_ : ndarray of shape (``n_features_in_``,)
        Column names of ``X`` during fit, when it is a DataFrame.

    See Also
    --------
    LateFusionClassifier : The classification twin.

    Examples
    --------
    >>> from sklearn.datasets import load_diabetes
    >>> from sklearn.preprocessing import StandardScaler
    >>> from skfusion import LateFusionRegressor
    >>> X, y = load_diabetes(return_X_y=True, as_frame=True)
    >>> reg = LateFusionRegressor([
    ...     ("body", StandardScaler(), ["age", "sex", "bmi", "bp"]),
    ...     ("blood", StandardScaler(), ["s1", "s2", "s3", "s4", "s5", "s6"]),
    ... ], cv=3).fit(X, y)
    >>> reg.predict(X.iloc[:2]).shape
    (2,)
    """

    def _default_estimator(self):
        return RidgeCV()

    def _default_final_estimator(self):
        return RidgeCV()

    def _prepare_y(self, y):
        try:
            return np.asarray(y, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"The regression target must be numeric ({exc}).") from exc
