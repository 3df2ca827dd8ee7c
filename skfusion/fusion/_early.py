"""Early fusion: encode every modality, then concatenate the features for one model."""

# SPDX-License-Identifier: BSD-3-Clause

from numbers import Integral

import numpy as np
from scipy import sparse
from sklearn.base import TransformerMixin
from sklearn.utils.metadata_routing import MetadataRouter, MethodMapping, process_routing
from sklearn.utils.validation import check_is_fitted

from .._compat import (
    StrOptions,
    _check_sample_weight,
    _fit_context,
    _raise_for_params,
    _routing_enabled,
)
from ._base import (
    BaseFusion,
    _fit_encode_one,
    _weight_key,
    is_stateless,
    modality_feature_names,
    weight_params,
    weighted_nanmean,
)

__all__ = ["EarlyFusion"]


class EarlyFusion(TransformerMixin, BaseFusion):
    """Encode each modality with its transformer and concatenate the features.

    Early fusion puts every modality into one feature matrix for a single downstream model.
    Each modality's transformer is cloned and fitted on the rows where that modality is
    present. Rows where a modality is missing (``None``, ``NaN`` or an empty value in its raw
    column) get that modality's training mean, and a ``"<name>__present"`` flag column tells the
    downstream model which rows were imputed.

    Read more in the :ref:`User Guide <early_fusion>`.

    Parameters
    ----------
    modalities : list of (str, transformer, columns) tuples
        The modality spec, like :class:`~sklearn.compose.ColumnTransformer`'s ``transformers``.
        ``columns`` is a column name or position (the transformer gets a 1-D array: text,
        paths, raw arrays), or a list / slice / boolean mask / callable (it gets a 2-D frame).
        The transformer may be any sklearn transformer, ``"passthrough"`` or ``"drop"``.

    weights : dict of str to float, default=None
        Multiplier applied to each modality's features (after scaling); modalities not named
        keep weight 1.

    scaling : {"standard", "block"} or None, default=None
        ``"standard"`` standardises every output column with the training mean and standard
        deviation. ``"block"`` also divides each modality by the square root of its width, so
        every modality contributes the same total variance however many features it has (a
        384-d text embedding does not drown three tabular columns). Sparse blocks are scaled
        without centring. ``None`` leaves the features as the transformers return them.

    presence_flags : {"auto", "always", "never"}, default="auto"
        Whether to append a ``"<name>__present"`` column (1.0 present, 0.0 missing) for each
        modality: ``"auto"`` adds it for the modalities that had missing rows during ``fit``.

    n_jobs : int, default=None
        Number of modalities encoded in parallel (in threads unless a
        :func:`joblib.parallel_config` context says otherwise; the encoders release the GIL).
        ``None`` means 1 unless in a :func:`joblib.parallel_config` context; ``-1`` means all
        processors.

    verbose : int, default=0
        When positive, print each modality's stage and its duration, and show the encoders'
        progress bars (as ``skfusion.config_context(show_progress=True)`` does).

    Attributes
    ----------
    transformers_ : list of (str, transformer, columns) tuples
        The fitted transformer of each modality (``"drop"``/``"passthrough"`` kept as is).

    named_transformers_ : :class:`~sklearn.utils.Bunch`
        The fitted transformers by modality name.

    output_indices_ : dict of str to slice
        Which output columns come from each modality (its flag column excluded).

    fill_values_ : dict of str to ndarray
        The values that replace a missing modality (the training mean of its features).

    n_features_in_ : int
        Number of columns in ``X`` during fit.

    feature_names_in_ : ndarray of shape (``n_features_in_``,)
        Column names of ``X`` during fit, when it is a DataFrame.

    See Also
    --------
    LateFusionClassifier : One model per modality, stacked.
    FusionClassifier : Chooses the fusion strategy with a parameter.

    Examples
    --------
    >>> import numpy as np
    >>> import pandas as pd
    >>> from sklearn.preprocessing import StandardScaler
    >>> from skfusion import EarlyFusion
    >>> X = pd.DataFrame({"a": [1.0, 2.0, np.nan, 4.0], "b": [0.5, 0.1, 0.2, 0.3],
    ...                   "c": [10.0, 20.0, 30.0, 40.0]})
    >>> fusion = EarlyFusion([("left", StandardScaler(), ["a"]),
    ...                       ("right", StandardScaler(), ["b", "c"])])
    >>> fusion.fit_transform(X).shape
    (4, 4)
    >>> fusion.get_feature_names_out().tolist()
    ['left__a', 'left__present', 'right__b', 'right__c']
    """

    _parameter_constraints: dict = {
        "modalities": [list],
        "weights": [dict, None],
        "scaling": [StrOptions({"standard", "block"}), None],
        "presence_flags": [StrOptions({"auto", "always", "never"})],
        "n_jobs": [None, Integral],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        modalities,
        *,
        weights=None,
        scaling=None,
        presence_flags="auto",
        n_jobs=None,
        verbose=0,
    ):
        self.modalities = modalities
        self.weights = weights
        self.scaling = scaling
        self.presence_flags = presence_flags
        self.n_jobs = n_jobs
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None, sample_weight=None, **params):
        """Fit every modality transformer on the rows where its modality is present.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Raw input with the columns named in ``modalities``.
        y : array-like of shape (n_samples,), default=None
            Target, passed on to the transformers that use one.
        sample_weight : array-like of shape (n_samples,), default=None
            Row weights. They weight the fill values and the ``scaling`` statistics, and
            reach every modality transformer (on the rows where its modality is present;
            a Pipeline through its last step). A transformer whose ``fit`` cannot take them
            is a TypeError, unless it learns nothing from the rows (``"passthrough"``,
            pretrained encoders). With metadata routing enabled, they go where the
            transformers request them instead, and the statistics are not weighted.
        **params : dict
            Other metadata for the modality transformers' ``fit`` (row-aligned values are
            restricted to the rows where the modality is present). Only with
            ``sklearn.set_config(enable_metadata_routing=True)``, as in
            :class:`~sklearn.compose.ColumnTransformer`.

        Returns
        -------
        self : EarlyFusion
            The fitted transformer.
        """
        self._fit(X, y, sample_weight, params)
        return self

    @_fit_context(prefer_skip_nested_validation=False)
    def fit_transform(self, X, y=None, sample_weight=None, **params):
        """Fit on X and return the fused features.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Raw input with the columns named in ``modalities``.
        y : array-like of shape (n_samples,), default=None
            Target, passed on to the transformers that use one.
        sample_weight : array-like of shape (n_samples,), default=None
            Row weights, see :meth:`fit`.
        **params : dict
            Other metadata for the modality transformers, see :meth:`fit`.

        Returns
        -------
        X_fused : ndarray or sparse matrix of shape (n_samples, n_features_out)
            The concatenated modality features (and presence flags).
        """
        return self._fit(X, y, sample_weight, params)

    def _transformer_weights(self, sample_weight):
        """Routing off: each modality transformer's ``fit`` parameters carrying the weights."""
        params = {}
        for mod in self._active_modalities():
            trans = mod.transformer
            if isinstance(trans, str) or (_weight_key(trans) is None and is_stateless(trans)):
                continue  # learns nothing from the rows: the weights have nothing to change
            params[mod.name] = weight_params(
                trans, sample_weight, owner=type(self).__name__,
                role=f"the transformer of modality {mod.name!r}",
            )
        return params

    def _fit(self, X, y, sample_weight, params):
        _raise_for_params(params, self, "fit")
        X = self._check_X(X, reset=True)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64)
        self._build_modalities(X)
        if self.weights is not None:
            unknown = set(self.weights) - {m.name for m in self._modalities}
            if unknown:
                raise ValueError(
                    f"weights names unknown modalities {sorted(unknown)!r}; modalities are "
                    f"{[m.name for m in self._modalities]!r}."
                )
        if _routing_enabled():
            if sample_weight is not None:
                params["sample_weight"] = sample_weight
            routed = process_routing(self, "fit", **params)
            params = {m.name: routed[m.name].fit_transform for m in self._modalities}
            stats_weight = None
        else:
            params = self._transformer_weights(sample_weight)
            stats_weight = sample_weight
        fitted = self._fit_each(X, y, _fit_encode_one, params=params)
        self._encoders, encoded = self._encoded_from_fit(
            [(mod, present, (trans, out, False)) for mod, present, (trans, out) in fitted]
        )
        fitted_by_name = {e.name: e.transformer for e in self._encoders}
        self.transformers_ = [
            (m.name, fitted_by_name.get(m.name, "drop"), m.columns) for m in self._modalities
        ]
        blocks, presence = encoded.blocks, encoded.presence
        self.fill_values_, self._scale, self._center = {}, {}, {}
        for enc, block, present in zip(self._encoders, blocks, presence.T):
            w = None if stats_weight is None else stats_weight[present]
            self._fit_block_stats(enc.name, block, present, w)
        if self.presence_flags == "always":
            self._flagged = [True] * len(blocks)
        elif self.presence_flags == "never":
            self._flagged = [False] * len(blocks)
        else:
            self._flagged = [not p.all() for p in presence.T]
        self.output_indices_, start, widths = {}, 0, {e.name: e.width for e in self._encoders}
        flagged = dict(zip(widths, self._flagged))
        for name, _, _ in self.transformers_:
            width = widths.get(name, 0)
            self.output_indices_[name] = slice(start, start + width)
            start += width + int(flagged.get(name, False))
        return self._assemble(blocks, presence)

    def _fit_block_stats(self, name, block, present, weights=None):
        """Fill value, centre and scale of one modality (weighted by the present rows')."""
        if sparse.issparse(block):
            rows = block[np.flatnonzero(present)]
            fill = np.zeros(block.shape[1])
            if weights is None:
                mean = np.asarray(rows.mean(axis=0)).ravel()
                var = np.asarray(rows.multiply(rows).mean(axis=0)).ravel() - mean**2
            else:
                with np.errstate(all="ignore"):
                    mean = rows.T @ weights / weights.sum()
                    var = rows.multiply(rows).T @ weights / weights.sum() - mean**2
            center = np.zeros(block.shape[1])
        else:
            rows = block[present]
            with np.errstate(all="ignore"):
                if not rows.size:
                    fill = np.zeros(block.shape[1])
                else:
                    fill = weighted_nanmean(rows, weights)
                fill = np.where(np.isnan(fill), 0.0, fill)
                if weights is None:
                    var = np.nanvar(rows, axis=0)
                else:
                    var = weighted_nanmean((rows - fill) ** 2, weights)
            center = fill
        std = np.sqrt(np.clip(np.nan_to_num(var), 0, None))
        std[std < 1e-12] = 1.0
        scale = np.ones(block.shape[1])
        if self.scaling in ("standard", "block"):
            scale = 1.0 / std
            if self.scaling == "block":
                scale = scale / np.sqrt(block.shape[1])
        else:
            center = np.zeros(block.shape[1])
        if self.weights is not None:
            scale = scale * float(self.weights.get(name, 1.0))
        self.fill_values_[name] = fill
        self._scale[name] = scale
        self._center[name] = center

    def _assemble(self, blocks, presence):
        """Fill, scale and concatenate the encoded blocks (reads ``self``, never writes it)."""
        out, any_sparse = [], any(sparse.issparse(b) for b in blocks)
        for j, (enc, block) in enumerate(zip(self._encoders, blocks)):
            name = enc.name
            if sparse.issparse(block):
                if not presence[:, j].all():  # absent rows are all-zero, whatever they held
                    block = sparse.diags(presence[:, j].astype(np.float64)) @ block
                block = block @ sparse.diags(self._scale[name])
            else:
                block = np.array(block, dtype=np.float64)
                missing = ~presence[:, j]
                if missing.any():
                    block[missing] = self.fill_values_[name]
                block = (block - self._center[name]) * self._scale[name]
            out.append(block)
            if self._flagged[j]:
                out.append(presence[:, [j]].astype(np.float64))
        if any_sparse:
            return sparse.hstack([sparse.csr_matrix(b) for b in out]).tocsr()
        return np.hstack(out)

    def transform(self, X):
        """Encode every modality with its fitted transformer and concatenate.

        When fitted on a DataFrame, columns are selected by name: extra and reordered columns
        are fine, a missing one is an error naming it.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Raw input with the same columns as during fit.

        Returns
        -------
        X_fused : ndarray or sparse matrix of shape (n_samples, n_features_out)
            The fused features.
        """
        return self._predict_encoded(self._encode(X), "transform")

    def _predict_encoded(self, encoded, method="transform"):
        """The fused features of already encoded modalities (``method="transform"``)."""
        check_is_fitted(self)
        self._check_encoded(encoded, {"transform"}, method)
        return self._assemble(encoded.blocks, encoded.presence)

    def get_metadata_routing(self):
        """Metadata routing of this object: ``fit`` metadata goes to the modality transformers.

        Returns
        -------
        routing : MetadataRouter
            A :class:`~sklearn.utils.metadata_routing.MetadataRouter` encapsulating routing
            information.
        """
        router = MetadataRouter(owner=self)
        for name, trans, _ in self.modalities:
            if isinstance(trans, str):
                continue
            router.add(
                **{name: trans},
                method_mapping=MethodMapping()
                .add(caller="fit", callee="fit_transform")
                .add(caller="fit_transform", callee="fit_transform"),
            )
        return router

    def _sk_visual_block_(self):
        return self._visual_modalities()

    @property
    def named_transformers_(self):
        """The fitted transformers by modality name."""
        from sklearn.utils import Bunch

        check_is_fitted(self)
        return Bunch(**{name: trans for name, trans, _ in self.transformers_})

    def get_feature_names_out(self, input_features=None):
        """Output feature names: ``"<modality>__<feature>"`` and ``"<modality>__present"``.

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Ignored; present for API consistency.

        Returns
        -------
        feature_names_out : ndarray of str objects
            Names of the fused features.
        """
        check_is_fitted(self)
        names = []
        for enc, flagged in zip(self._encoders, self._flagged):
            names += modality_feature_names(enc.name, enc.transformer, enc.mod.names, enc.width)
            if flagged:
                names.append(f"{enc.name}__present")
        return np.asarray(names, dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.string = True
        tags.transformer_tags.preserves_dtype = ["float64"]
        return tags
