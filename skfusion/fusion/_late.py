"""Late fusion: one model per modality, stacked by a final estimator."""

# SPDX-License-Identifier: BSD-3-Clause

from numbers import Integral

import numpy as np
import pandas as pd
from sklearn.base import (
    ClassifierMixin,
    RegressorMixin,
    TransformerMixin,
    clone,
    is_classifier,
)
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.model_selection import check_cv, cross_val_predict
from sklearn.pipeline import Pipeline
from sklearn.utils import Bunch
from sklearn.utils.metadata_routing import MetadataRouter, MethodMapping, process_routing
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from .._compat import (
    HasMethods,
    StrOptions,
    _check_sample_weight,
    _estimator_has,
    _fit_context,
    _raise_for_params,
    _routing_enabled,
)
from ._base import (
    BaseFusion,
    _encode_one,
    _Encoder,
    _fit_encode_one,
    _take_y,
    densify,
    encode_classes,
    encoded_presence,
    is_stateless,
    modality_feature_names,
    numeric_target,
    scatter_rows,
    take_rows,
    weight_params,
    weighted_nanmean,
)

__all__ = ["LateFusionClassifier", "LateFusionRegressor"]

_METHODS = {"predict", "predict_proba", "decision_function", "transform"}


def _final_has(attr):
    # the fitted final estimator, else the one fit would train (its default when None)
    return _estimator_has(attr, delegates=("final_estimator_", "_final_estimator"))


class _BaseLateFusion(TransformerMixin, BaseFusion):
    """Stacking over modalities; shared by the classifier and the regressor."""

    _parameter_constraints: dict = {
        "modalities": [list],
        "estimator": [HasMethods("fit"), None],
        "modality_estimators": [dict, None],
        "final_estimator": [HasMethods("fit"), None],
        "cv": ["cv_object", StrOptions({"prefit"})],
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

    def _prepare_y(self, y):  # pragma: no cover - overridden
        raise NotImplementedError

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

    def _estimator_for(self, name):
        overrides = self.modality_estimators or {}
        if name in overrides:
            return overrides[name]
        return self.estimator if self.estimator is not None else self._default_estimator()

    @property
    def _final_estimator(self):
        """The unfitted final estimator: ``final_estimator`` or the default one."""
        final = self.final_estimator
        return final if final is not None else self._default_final_estimator()

    def _modality_pipeline(self, name, trans):
        return Pipeline([("transformer", trans), ("estimator", self._estimator_for(name))])

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y, sample_weight=None, **fit_params):
        """Fit one model per modality, then the final estimator on their out-of-fold outputs.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Raw input with the columns named in ``modalities``.
        y : array-like of shape (n_samples,)
            Target values.
        sample_weight : array-like of shape (n_samples,), default=None
            Row weights, passed to every per-modality estimator that accepts them (on the
            rows where its modality is present) and to the final estimator. With metadata
            routing enabled, they go where the estimators request them instead.
        **fit_params : dict
            Other metadata, only with ``sklearn.set_config(enable_metadata_routing=True)``:
            routed to the per-modality pipelines (named after their modality) and the
            final estimator (``final_estimator_``) that request it.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        _raise_for_params(fit_params, self, "fit")
        X = self._check_X(X, reset=True)
        y = self._prepare_y(self._check_y(X, y))
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X)
        self._build_modalities(X)
        names = [m.name for m in self._active_modalities()]
        unknown = set(self.modality_estimators or {}) - {m.name for m in self._modalities}
        if unknown:
            raise ValueError(
                f"modality_estimators names unknown modalities {sorted(unknown)!r}; modalities "
                f"are {[m.name for m in self._modalities]!r}."
            )
        prefit = isinstance(self.cv, str) and self.cv == "prefit"
        routing = _routing_enabled()
        est_params, final_params = {}, {}
        if routing:
            if sample_weight is not None:
                fit_params["sample_weight"] = sample_weight
            routed = process_routing(self, "fit", **fit_params)
            est_params = {name: dict(routed[name].fit) for name in names}
            final_params = dict(routed["final_estimator_"].fit)
        elif sample_weight is not None:
            # every fit that can take the weights gets them, or a TypeError names it
            owner = type(self).__name__
            if not prefit:  # prefit models are not fitted again
                for name in names:
                    est_params[name] = weight_params(
                        self._estimator_for(name), sample_weight, owner=owner,
                        role=f"the estimator of modality {name!r}",
                    )
            final_params = weight_params(
                self._final_estimator, sample_weight, owner=owner, role="the final estimator"
            )
        splits = None
        if not prefit:
            cv = check_cv(self.cv, y, classifier=is_classifier(self))
            splits = list(cv.split(np.zeros((X.shape[0], 1)), y))
        extra = {}
        for name in names:
            est = self._estimator_for(name)
            if prefit:
                check_is_fitted(est)
            else:
                est = clone(est)
            extra[name] = dict(
                est=est, method=self._method_for(est), splits=splits, prefit=prefit,
                routing=routing,
            )
        results = self._fit_each(X, y, _fit_modality_model, params=est_params, extra=extra,
                                 prefit=prefit)

        self.estimators_, self.stack_method_, self._encoders = [], [], []
        self._fill, self._pass_fill, self._meta_widths = [], [], []
        meta_blocks, pass_blocks, presence = [], [], []
        for mod, present, (pipe, oof, F, kept) in results:
            method = extra[mod.name]["method"]
            present = _narrow(present, kept)
            oof = self._concat_meta(oof, method)
            self.estimators_.append(pipe)
            self.stack_method_.append(method)
            self._encoders.append(_Encoder(mod, pipe[0], F.shape[1]))
            w = None if sample_weight is None else sample_weight[present]
            fill = weighted_nanmean(oof, w)  # a weight of 2 counts as a repeated row
            self._fill.append(fill)
            self._meta_widths.append(oof.shape[1])
            meta_blocks.append(scatter_rows(oof, present, fill=fill))
            presence.append(present)
            if self.passthrough:
                F = densify(F[kept])
                pass_fill = weighted_nanmean(F, w)
                self._pass_fill.append(pass_fill)
                pass_blocks.append(scatter_rows(F, present, fill=pass_fill))
        presence = np.column_stack(presence)
        self._flag_cols = [j for j in range(presence.shape[1]) if not presence[:, j].all()]
        meta = self._stack(meta_blocks, pass_blocks, presence)
        self.final_estimator_ = clone(self._final_estimator)
        self.final_estimator_.fit(meta, y, **final_params)
        return self

    def _modality_weights(self):
        """``(weights Series or None, reason or None)`` from the final estimator's ``coef_``."""
        check_is_fitted(self)
        names = [e.name for e in self._encoders]
        coef = getattr(self.final_estimator_, "coef_", None)
        if coef is None:
            return None, (
                f"the final estimator {type(self.final_estimator_).__name__} has no coef_"
            )
        coef = np.abs(np.asarray(coef, dtype=np.float64))
        if coef.ndim == 2:
            coef = coef.sum(axis=0)
        bounds = np.cumsum([0] + self._meta_widths)
        weights = np.array([coef[a:b].sum() for a, b in zip(bounds[:-1], bounds[1:])])
        if not np.isfinite(weights).all() or weights.sum() <= 0:
            return None, (
                "the final estimator's coefficients on the modality predictions are all zero"
            )
        return pd.Series(weights / weights.sum(), index=names, dtype=float), None

    @property
    def modality_weights_(self):
        """Per-modality weights of the final estimator (a Series summing to 1) or None."""
        return self._modality_weights()[0]

    @property
    def modality_weights_reason_(self):
        """Why ``modality_weights_`` is None (a str), else None."""
        return self._modality_weights()[1]

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
        return Bunch(**{e.name: pipe for e, pipe in zip(self._encoders, self.estimators_)})

    def _meta_from_encoded(self, encoded):
        """The stacked features of already encoded modalities (reads ``self`` only)."""
        meta_blocks, pass_blocks = [], []
        for j, (pipe, method) in enumerate(zip(self.estimators_, self.stack_method_)):
            block, present = encoded.blocks[j], encoded.presence[:, j]
            if present.any():
                preds = self._concat_meta(getattr(pipe[-1], method)(block[present]), method)
            else:
                preds = np.empty((0, self._fill[j].shape[0]))
            meta_blocks.append(scatter_rows(preds, present, fill=self._fill[j]))
            if self.passthrough:
                pass_blocks.append(scatter_rows(densify(block[present]), present,
                                                fill=self._pass_fill[j]))
        return self._stack(meta_blocks, pass_blocks, encoded.presence)

    def _predict_encoded(self, encoded, method="predict"):
        """What ``getattr(self, method)(X)`` gives, from ``encoded = self._encode(X)``."""
        check_is_fitted(self)
        self._check_encoded(encoded, _METHODS, method)
        meta = self._meta_from_encoded(encoded)
        if method == "transform":
            return meta
        return self._from_final(meta, method)

    def _from_final(self, meta, method):
        return getattr(self.final_estimator_, method)(meta)

    def predict(self, X):
        """Predict with the final estimator on the stacked per-modality outputs.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Raw input with the same columns as during fit (selected by name).

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            Predicted targets.
        """
        return self._predict_encoded(self._encode(X), "predict")

    def transform(self, X):
        """The stacked features the final estimator sees.

        Per modality (in order), its model's predictions (``stack_method_``; the mean
        out-of-fold prediction where the modality is missing), then the presence flags of the
        modalities that had missing rows at fit, then (with ``passthrough``) the modality
        features, as named by :meth:`get_feature_names_out`.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Raw input with the same columns as during fit.

        Returns
        -------
        X_stacked : ndarray of shape (n_samples, n_features_out)
            The stacked features.
        """
        return self._predict_encoded(self._encode(X), "transform")

    def get_feature_names_out(self, input_features=None):
        """Get the names of the stacked features returned by :meth:`transform`.

        ``"<modality>__<method>"`` (regressor, or one column), ``"<modality>__<method>_<class>"``
        (one column per class), ``"<modality>__present"`` and, with ``passthrough``, the
        modality features ``"<modality>__<feature>"``.

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Ignored; present for API consistency.

        Returns
        -------
        feature_names_out : ndarray of str objects
            Names of the stacked features.
        """
        check_is_fitted(self)
        names = []
        classes = getattr(self, "classes_", None)
        for enc, method, width in zip(self._encoders, self.stack_method_, self._meta_widths):
            if width == 1 and method == "predict_proba" and classes is not None:
                names.append(f"{enc.name}__{method}_{classes[-1]}")
            elif width == 1:
                names.append(f"{enc.name}__{method}")
            else:
                labels = classes if classes is not None and len(classes) == width else range(width)
                names += [f"{enc.name}__{method}_{c}" for c in labels]
        names += [f"{self._encoders[j].name}__present" for j in self._flag_cols]
        if self.passthrough:
            for enc in self._encoders:
                names += modality_feature_names(enc.name, enc.transformer, enc.mod.names,
                                                enc.width)
        return np.asarray(names, dtype=object)

    def get_metadata_routing(self):
        """Metadata routing: to each modality's pipeline and to the final estimator.

        Returns
        -------
        routing : MetadataRouter
            A :class:`~sklearn.utils.metadata_routing.MetadataRouter` encapsulating routing
            information.
        """
        router = MetadataRouter(owner=self)
        for name, trans, _ in self.modalities:
            if isinstance(trans, str) and trans == "drop":
                continue
            router.add(
                **{name: self._modality_pipeline(name, trans)},
                method_mapping=MethodMapping().add(caller="fit", callee="fit"),
            )
        router.add(
            final_estimator_=self._final_estimator,
            method_mapping=MethodMapping().add(caller="fit", callee="fit"),
        )
        return router

    def _sk_visual_block_(self):
        from .._compat import _VisualBlock

        if hasattr(self, "estimators_"):
            pipes = dict(zip([e.name for e in self._encoders], self.estimators_))
            final = self.final_estimator_
            modalities = self._visual_modalities(lambda name, trans: pipes[name])
        else:
            final = self._final_estimator
            modalities = self._visual_modalities(self._modality_pipeline)
        head = _VisualBlock("parallel", [final], names=["final_estimator"], dash_wrapped=False)
        return _VisualBlock("serial", (modalities, head), dash_wrapped=False)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.string = True
        return tags


def _est_params(est, params, routing):
    """The metadata the bare estimator takes (routing on: only what it requested)."""
    if not routing or not params:
        return params
    request = est.get_metadata_routing()
    return {k: v for k, v in params.items() if request.consumes("fit", [k])}


def _fit_modality_model(mod, trans, Xm, y, present, params, *, est, method, splits, prefit,
                        routing):
    """Fit one modality's (transformer, estimator) on its present rows (run in a worker).

    Returns the pipeline, its out-of-fold predictions (in-sample ones for ``cv="prefit"``) and
    the encoded features of the present rows, both for the rows kept (an encoder with
    ``on_error="missing"`` may lose some), and the boolean mask of the rows kept.
    """
    name = mod.name
    if prefit:
        F = _encode_one(trans, Xm, name, False)
        kept = encoded_presence(F, np.ones(F.shape[0], dtype=bool))
        preds = getattr(est, method)(F[kept]) if kept.any() else None
        return Pipeline([("transformer", trans), ("estimator", est)]), preds, F, kept
    if is_stateless(trans):
        # Fit learns nothing from the data: encode once, cross-validate the model alone.
        trans, F = _fit_encode_one(mod, trans, Xm, y, present, {})
        kept = encoded_presence(F, np.ones(F.shape[0], dtype=bool))
        F_fit, y_fit, fit_params = F, y, _est_params(est, params, routing)
        if not kept.all():  # on_error="missing" made bad items NaN rows: missing
            F_fit, y_fit = F[kept], _take_y(y, kept)
            fit_params = {k: take_rows(v, kept) for k, v in fit_params.items()}
        sub_splits = _restrict_splits(splits, _narrow(present, kept), name)
        oof = cross_val_predict(
            clone(est), F_fit, y_fit, cv=sub_splits, method=method, params=fit_params
        )
        est.fit(F_fit, y_fit, **fit_params)
        return Pipeline([("transformer", trans), ("estimator", est)]), oof, F, kept
    pipe = Pipeline([("transformer", trans), ("estimator", est)])
    # Routing off, a Pipeline takes step-prefixed fit parameters; on, it routes them itself.
    pipe_params = params if routing else {f"estimator__{k}": v for k, v in params.items()}
    oof = cross_val_predict(
        clone(pipe), Xm, y, cv=_restrict_splits(splits, present, name), method=method,
        params=pipe_params,
    )
    pipe.fit(Xm, y, **pipe_params)
    F = _encode_one(pipe[0], Xm, name, False)
    kept = encoded_presence(F, np.ones(F.shape[0], dtype=bool))
    return pipe, oof[kept], F, kept


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


def _narrow(present, kept):
    """``present`` with only the ``kept`` ones of its True rows left True."""
    if kept.all():
        return present
    present = present.copy()
    present[np.flatnonzero(present)[~kept]] = False
    return present


class LateFusionClassifier(ClassifierMixin, _BaseLateFusion):
    """Late fusion for classification: one classifier per modality, stacked.

    Each modality gets a pipeline made of a clone of its transformer and a clone of
    ``estimator`` (or its entry in ``modality_estimators``), trained on the rows where that
    modality is present. Their out-of-fold predictions (from ``cv``) become the features of
    ``final_estimator``, with a presence flag for each modality that had missing rows. At
    predict time a missing modality contributes its mean out-of-fold prediction, and its flag
    tells the final estimator to rely on the other modalities. Like
    :class:`~sklearn.ensemble.StackingClassifier`, it is also a transformer: :meth:`transform`
    returns those stacked features.

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

    cv : int, cross-validation generator, iterable or "prefit", default=None
        How out-of-fold predictions are made, as in :func:`~sklearn.model_selection.check_cv`
        (``None``: 5-fold stratified). The same folds are used for every modality, restricted
        to the rows where it is present. ``"prefit"``: every modality's transformer and
        estimator (``modality_estimators[name]``, else ``estimator``) is already fitted and
        used as is; only ``final_estimator`` is trained, on their predictions for ``X``
        (use other rows than theirs, as with :class:`~sklearn.ensemble.StackingClassifier`).

    stack_method : {"auto", "predict_proba", "decision_function", "predict"}, default="auto"
        Which output of the per-modality models is stacked. ``"auto"`` tries
        ``predict_proba``, then ``decision_function``, then ``predict``. For binary
        ``predict_proba`` only the positive-class column is kept.

    passthrough : bool, default=False
        If True, the final estimator also receives every modality's transformed features
        (missing rows filled with the training mean).

    n_jobs : int, default=None
        Number of modalities fitted (and encoded at predict time) in parallel, in threads
        unless a :func:`joblib.parallel_config` context says otherwise. ``None`` means 1
        unless in a :func:`joblib.parallel_config` context; ``-1`` means all processors.

    verbose : int, default=0
        When positive, print each modality's stage and its duration, and show the encoders'
        progress bars.

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

    modality_weights_ : pandas.Series or None
        How much the final estimator relies on each modality: the absolute values of its
        ``coef_`` over that modality's stacked prediction columns (summed over classes for a
        multiclass model; presence flags and passthrough features not counted), normalised to
        sum to 1, indexed by modality name. None when the final estimator has no ``coef_``
        (or all of those coefficients are zero); ``modality_weights_reason_`` then says why.

    modality_weights_reason_ : str or None
        Why ``modality_weights_`` is None, else None.

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
    >>> clf.transform(X.iloc[:2]).shape  # the stacked features: 3 probabilities per modality
    (2, 6)
    >>> clf.get_feature_names_out()[:3].tolist()
    ['sepal__predict_proba_0', 'sepal__predict_proba_1', 'sepal__predict_proba_2']
    >>> clf.modality_weights_.index.tolist(), round(float(clf.modality_weights_.sum()), 9)
    (['sepal', 'petal'], 1.0)
    """

    def _default_estimator(self):
        return LogisticRegression(max_iter=1000)

    def _default_final_estimator(self):
        return LogisticRegression(max_iter=1000)

    def _prepare_y(self, y):
        return encode_classes(self, y)

    def _from_final(self, meta, method):
        out = getattr(self.final_estimator_, method)(meta)
        if method == "predict":
            return self._label_encoder.inverse_transform(out)
        return out

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
        return self._predict_encoded(self._encode(X), "predict_proba")

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
        return self._predict_encoded(self._encode(X), "decision_function")


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

    cv : int, cross-validation generator, iterable or "prefit", default=None
        How out-of-fold predictions are made (``None``: 5-fold); ``"prefit"`` as in
        :class:`LateFusionClassifier`.

    stack_method : {"auto", "predict"}, default="auto"
        Regressors stack ``predict``.

    passthrough : bool, default=False
        If True, the final estimator also receives the modality features.

    n_jobs : int, default=None
        Number of modalities fitted in parallel.

    verbose : int, default=0
        When positive, print each modality's stage and its duration, and show the encoders'
        progress bars.

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

    modality_weights_ : pandas.Series or None
        How much the final estimator relies on each modality: the absolute values of its
        ``coef_`` over that modality's stacked prediction columns (summed over classes for a
        multiclass model; presence flags and passthrough features not counted), normalised to
        sum to 1, indexed by modality name. None when the final estimator has no ``coef_``
        (or all of those coefficients are zero); ``modality_weights_reason_`` then says why.

    modality_weights_reason_ : str or None
        Why ``modality_weights_`` is None, else None.

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
        return numeric_target(y)
