"""Cross-modal attention fusion: each modality attends to the others.

Trained with torch; a fitted model keeps its weights as numpy arrays and predicts with a numpy
forward pass, so scoring a persisted model never imports torch.
"""

# SPDX-License-Identifier: BSD-3-Clause

from numbers import Integral, Real

import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from .. import _compat
from .._compat import Interval, StrOptions, _check_sample_weight, _fit_context
from ._attention_net import (
    as_float64,
    batch_arrays,
    forward,
    init_params,
    modality_attention,
)
from ._base import BaseFusion, _fit_encode_one, densify, encode_classes, numeric_target

__all__ = ["AttentionFusionClassifier", "AttentionFusionRegressor"]

_PREDICT_BATCH = 256  # rows per numpy forward pass at predict time (bounds memory)


def _fit_encode_dense(mod, trans, Xm, y, present, params, *, sequence):
    """Fit one modality's transformer; pooled features (dense) or a token sequence."""
    trans, out = _fit_encode_one(mod, trans, Xm, y, present, params, sequence=sequence)
    return trans, (out if sequence else densify(out)), sequence


class _BaseAttentionFusion(BaseFusion):
    """Shared by the classifier and the regressor."""

    _parameter_constraints: dict = {
        "modalities": [list],
        "d_model": [Interval(Integral, 1, None, closed="left")],
        "n_heads": [Interval(Integral, 1, None, closed="left")],
        "n_layers": [Interval(Integral, 1, None, closed="left")],
        "n_tokens": [Interval(Integral, 1, None, closed="left")],
        "dim_feedforward": [Interval(Integral, 1, None, closed="left"), None],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "modality_dropout": [Interval(Real, 0, 1, closed="left")],
        "use_sequences": ["boolean", list],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "random_state": ["random_state"],
        "device": [str],
        "n_jobs": [None, Integral],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        modalities,
        *,
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

    # --- pieces that differ between classifier and regressor ---
    _task = None

    def _prepare_y(self, y):  # pragma: no cover - overridden
        raise NotImplementedError

    # --- encoding ---
    def _sequence_flags(self):
        """Which active modalities are fed as token sequences."""
        names = [m.name for m in self._modalities]
        if self.use_sequences is False:
            wanted = set()
        elif self.use_sequences is True:
            wanted = {
                m.name for m in self._modalities if hasattr(m.transformer, "transform_sequence")
            }
        else:
            wanted = set(self.use_sequences)
            unknown = wanted - set(names)
            if unknown:
                raise ValueError(
                    f"use_sequences names unknown modalities {sorted(unknown)!r}; modalities are "
                    f"{names!r}."
                )
            for m in self._modalities:
                if m.name in wanted and not hasattr(m.transformer, "transform_sequence"):
                    raise ValueError(
                        f"use_sequences names modality {m.name!r}, but its transformer "
                        f"{type(m.transformer).__name__} has no transform_sequence method."
                    )
        return [m.name in wanted for m in self._modalities]

    def _fit_modalities(self, X, y):
        flags = dict(zip([m.name for m in self._modalities], self._sequence_flags()))
        fitted = self._fit_each(
            X, y, _fit_encode_dense, extra={name: {"sequence": f} for name, f in flags.items()}
        )
        self._encoders, encoded = self._encoded_from_fit(fitted)
        self.transformers_ = [(e.name, e.transformer, e.mod.columns) for e in self._encoders]
        self._sequence = [e.sequence for e in self._encoders]
        self._widths = [e.width for e in self._encoders]
        self.modality_names_ = np.asarray([e.name for e in self._encoders], dtype=object)
        return encoded.blocks, encoded.presence

    # --- standardisation and network inputs ---
    def _fit_scaling(self, features, presence):
        self._means, self._scales = [], []
        for j, (feat, seq) in enumerate(zip(features, self._sequence)):
            rows = feat[0][feat[1]] if seq else feat[presence[:, j]]
            with np.errstate(all="ignore"):
                mean = np.nanmean(rows, axis=0) if rows.size else np.zeros(rows.shape[-1])
                std = np.nanstd(rows, axis=0) if rows.size else np.ones(rows.shape[-1])
            mean = np.where(np.isfinite(mean), mean, 0.0)
            std = np.where(np.isfinite(std) & (std > 1e-12), std, 1.0)
            self._means.append(mean.astype(np.float32))
            self._scales.append(std.astype(np.float32))

    def _network_data(self, features, presence):
        """Standardised inputs (0 where missing), token validity and presence."""
        inputs, valid = [], []
        presence = presence.copy()
        for j, (feat, seq) in enumerate(zip(features, self._sequence)):
            values, tok_valid = (feat[0], feat[1]) if seq else (densify(feat), None)
            z = np.array(values, dtype=np.float32)  # one copy, standardised in place
            with np.errstate(all="ignore"):
                z -= self._means[j]
                z /= self._scales[j]
            z[~np.isfinite(z)] = 0.0
            if seq:
                presence[:, j] &= tok_valid.any(axis=1)
                z[~tok_valid] = 0.0
            else:
                presence[:, j] &= ~np.isnan(values).all(axis=1)
                tok_valid = np.ones((values.shape[0], self.n_tokens), dtype=bool)
            z[~presence[:, j]] = 0.0
            inputs.append(z)
            valid.append(tok_valid)
        return {
            "inputs": inputs,
            "token_valid": valid,
            "present": presence,
        }

    # --- fit ---
    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y, sample_weight=None):
        """Encode every modality, then train the attention network with torch.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Raw input with the columns named in ``modalities``.
        y : array-like of shape (n_samples,)
            Target values.
        sample_weight : array-like of shape (n_samples,), default=None
            Weight of each row in the training (and validation) loss. ``None`` gives every row
            weight 1.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        X = self._check_X(X, reset=True)
        y = self._check_y(X, y)
        sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64)
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model={self.d_model} must be a multiple of n_heads={self.n_heads}."
            )
        target = self._prepare_y(y)
        self._build_modalities(X)
        features, presence = self._fit_modalities(X, y)
        self._fit_scaling(features, presence)
        data = self._network_data(features, presence)
        del features  # the standardised copy in data is all training needs
        data["y"] = target
        data["sample_weight"] = sample_weight.astype(np.float32)

        rng = np.random.default_rng(check_random_state(self.random_state).randint(2**31 - 1))
        n_out = len(self.classes_) if self._task == "classification" else 1
        layout = [
            (0 if seq else self.n_tokens, width)
            for seq, width in zip(self._sequence, self._widths)
        ]
        d_ff = self.dim_feedforward or 2 * self.d_model
        params = init_params(
            rng, layout, d_model=self.d_model, n_layers=self.n_layers, d_ff=d_ff, n_out=n_out
        )
        train_rows, val_rows = self._split(target, rng)

        # torch is imported by these, at fit time only
        from ..runtime._device import resolve_device
        from ._attention_train import _Trainer

        trainer = _Trainer(self, self._task, resolve_device(self.device), rng)
        self._weights, self.loss_curve_, self.validation_loss_curve_, self.n_iter_ = trainer.fit(
            params, data, train_rows, val_rows
        )
        self.best_loss_ = float(np.min(self.validation_loss_curve_ or self.loss_curve_))
        return self

    def _split(self, target, rng):
        n = target.shape[0]
        rows = np.arange(n)
        if not self.early_stopping:
            return rows, None
        n_val = int(np.ceil(self.validation_fraction * n))
        if n_val < 1 or n - n_val < 1:
            raise ValueError(
                f"early_stopping with validation_fraction={self.validation_fraction} leaves no "
                f"training or no validation row out of {n}; use more rows or turn it off."
            )
        stratify = None
        if self._task == "classification":
            counts = np.bincount(target)
            if counts.min() >= 2 and n_val >= counts.size:
                stratify = target
        train, val = train_test_split(
            rows, test_size=n_val, random_state=int(rng.integers(2**31 - 1)), stratify=stratify
        )
        return np.sort(train), np.sort(val)

    # --- numpy inference ---
    def _logits(self, encoded, keep_attention=False):
        """Logits (n, n_out) by the numpy forward pass, in batches; optionally attention."""
        data = self._network_data(encoded.blocks, encoded.presence)
        n = encoded.n_samples
        # float64 inference: a row's output must not depend on the rows batched with it
        # (sklearn's subset and sample-order invariance); see as_float64.
        params = as_float64(self._weights)
        logits, weights = [], []
        for start in range(0, n, _PREDICT_BATCH):
            rows = np.arange(start, min(start + _PREDICT_BATCH, n))
            inputs, valid, pres = batch_arrays(data, rows, data["present"][rows], dtype=np.float64)
            out, attention = forward(
                params,
                inputs,
                valid,
                pres,
                n_heads=self.n_heads,
                n_layers=self.n_layers,
                xp=_compat.xp_numpy,
                keep_attention=keep_attention,
            )
            logits.append(out)
            if keep_attention:
                weights.append(modality_attention(attention, data["present"][rows]))
        logits = np.concatenate(logits, axis=0)
        return logits, (np.concatenate(weights, axis=0) if keep_attention else None)

    def _predict_encoded(self, encoded, method="predict"):
        """What ``getattr(self, method)(X)`` gives, from ``encoded = self._encode(X)``."""
        check_is_fitted(self)
        self._check_encoded(encoded, self._methods, method)
        return self._from_logits(self._logits(encoded)[0], method)

    def _sk_visual_block_(self):
        from .._compat import _VisualBlock

        network = _VisualBlock(
            "single", f"cross-modal attention (d_model={self.d_model}, "
            f"n_layers={self.n_layers}, n_heads={self.n_heads})",
            names="network", name_details=f"d_model={self.d_model}",
        )
        return _VisualBlock("serial", (self._visual_modalities(), network), dash_wrapped=False)

    def attention_weights(self, X):
        """How much each modality attended to each modality, per row.

        Entry ``[i, q, k]`` is the share of the attention of modality ``q``'s tokens (the
        queries) that went to modality ``k``'s tokens in row ``i``, averaged over layers,
        heads and the query modality's tokens. A token attends to the tokens of the other
        present modalities and to itself, so the diagonal ``[i, q, q]`` is how much modality
        ``q`` kept to itself. Row ``[i, q, :]`` sums to 1 over the present modalities (a
        missing modality gets 0 as a key), and is all NaN when modality ``q`` is missing in
        row ``i``. Modalities are in the order of ``modality_names_``.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Raw input with the same columns as during fit.

        Returns
        -------
        weights : ndarray of shape (n_samples, n_modalities, n_modalities)
            The attention shares; ``n_modalities`` counts the modalities that are not
            ``"drop"``.
        """
        return self._logits(self._encode(X), keep_attention=True)[1]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.string = True
        return tags


_NETWORK_PARAMS_DOC = """
    d_model : int, default=32
        Width of every token.

    n_heads : int, default=4
        Attention heads; ``d_model`` must be a multiple of it.

    n_layers : int, default=1
        Cross-attention blocks (attention, residual, layer norm, feed-forward, residual,
        layer norm).

    n_tokens : int, default=4
        Tokens a pooled modality vector is projected to.

    dim_feedforward : int, default=None
        Hidden width of the feed-forward block; ``None`` means ``2 * d_model``.

    dropout : float, default=0.1
        Dropout on the attention and feed-forward outputs and the head, while training.

    modality_dropout : float, default=0.1
        While training, each present modality of a row is hidden with this probability (at
        least one stays), so the model learns to predict without it.

    use_sequences : bool or list of str, default=False
        Feed a modality as its token sequence (``transformer.transform_sequence``, e.g.
        :class:`~skfusion.encoders.TextEncoder`'s token embeddings with their padding mask)
        instead of one pooled vector. ``True`` does so for every modality whose transformer
        has ``transform_sequence``; a list names the modalities. Sequences are richer but
        cost more time and memory than pooled vectors.

    max_iter : int, default=200
        Maximum number of epochs.

    batch_size : int or "auto", default="auto"
        Rows per mini-batch; ``"auto"`` means ``min(200, n_samples)``.

    learning_rate_init : float, default=1e-3
        Adam's learning rate.

    alpha : float, default=1e-4
        L2 penalty (Adam weight decay) on the weight matrices.

    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the rows (stratified for classifiers), stop when
        the validation loss has not improved by ``tol`` for ``n_iter_no_change`` epochs and
        keep the weights of the best epoch. Otherwise the training loss decides when to stop.

    validation_fraction : float, default=0.1
        Share of rows held out when ``early_stopping`` is True.

    n_iter_no_change : int, default=10
        Epochs without an improvement of at least ``tol`` before training stops.

    tol : float, default=1e-4
        Minimum improvement of the monitored loss.

    random_state : int, RandomState instance or None, default=None
        Seeds the weights, the batches, dropout, modality dropout and the validation split.
        With an int, fitting twice on CPU gives identical predictions.

    device : {"auto", "cpu", "cuda"} or str, default="auto"
        Where torch trains: ``"auto"`` picks CUDA when torch sees a GPU. Prediction always
        runs in numpy on the CPU.

"""

_PARAMS_DOC = """
    Parameters
    ----------
    modalities : list of (str, transformer, columns) tuples
        The modality spec, as in :class:`EarlyFusion`. ``"drop"`` modalities are left out.
""" + _NETWORK_PARAMS_DOC + """    n_jobs : int, default=None
        Modalities encoded in parallel. ``None`` means 1 unless in a
        :func:`joblib.parallel_config` context; ``-1`` means all processors.

    verbose : int, default=0
        Print the loss of every epoch when positive.
"""

_ATTRS_DOC = """
    transformers_ : list of (str, transformer, columns) tuples
        The fitted transformer of each modality that is not ``"drop"``.

    modality_names_ : ndarray of str
        Names of the fused modalities, the axes of :meth:`attention_weights`.

    loss_curve_ : list of float
        Mean training loss of every epoch.

    validation_loss_curve_ : list of float or None
        Validation loss of every epoch when ``early_stopping`` is True, else None.

    best_loss_ : float
        Lowest monitored loss (validation loss with ``early_stopping``, else training loss).

    n_iter_ : int
        Number of epochs run.

    n_features_in_ : int
        Number of columns in ``X`` during fit.

    feature_names_in_ : ndarray of shape (``n_features_in_``,)
        Column names of ``X`` during fit, when it is a DataFrame.
"""


class AttentionFusionClassifier(ClassifierMixin, _BaseAttentionFusion):
    __doc__ = (
        """Cross-modal attention fusion for classification.

    Every modality is encoded by its transformer (fitted on the rows where it is present),
    standardised, and projected to tokens of width ``d_model``: a pooled vector becomes
    ``n_tokens`` tokens, a token sequence (see ``use_sequences``) keeps one token per element.
    In each of ``n_layers`` blocks, every token queries the tokens of the *other* modalities
    (and itself) with multi-head attention, followed by a residual connection, layer norm and
    a feed-forward block. Each modality's tokens are then mean-pooled (a missing modality
    contributes a learned "missing" vector) and a small MLP head on the concatenation gives the
    class scores. Missing modalities and padding are masked out of the keys.

    Training runs in torch (Adam, mini-batches, cross-entropy weighted by ``sample_weight``);
    the fitted weights are numpy arrays and ``predict``, ``predict_proba`` and
    :meth:`attention_weights` run a numpy forward pass, so a persisted model scores without
    torch. That pass runs in float64, so a row's prediction does not depend on the other
    rows scored with it.

    Read more in the :ref:`User Guide <attention_fusion>`.
"""
        + _PARAMS_DOC
        + """
    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels.
"""
        + _ATTRS_DOC
        + """
    See Also
    --------
    AttentionFusionRegressor : The regression twin.
    LateFusionClassifier : One model per modality, stacked.
    FusionClassifier : Chooses the fusion strategy with a parameter.

    Examples
    --------
    >>> import numpy as np
    >>> import pandas as pd
    >>> from sklearn.preprocessing import StandardScaler
    >>> from skfusion import AttentionFusionClassifier
    >>> rng = np.random.RandomState(0)
    >>> X = pd.DataFrame(rng.normal(size=(200, 4)), columns=["a", "b", "c", "d"])
    >>> y = (X["a"] * X["c"] > 0).astype(int)
    >>> clf = AttentionFusionClassifier(
    ...     [("left", StandardScaler(), ["a", "b"]), ("right", StandardScaler(), ["c", "d"])],
    ...     max_iter=30, random_state=0).fit(X, y)
    >>> clf.predict_proba(X.iloc[:2]).shape
    (2, 2)
    >>> weights = clf.attention_weights(X.iloc[:2])  # (rows, query modality, key modality)
    >>> weights.shape
    (2, 2, 2)
    >>> np.allclose(weights.sum(axis=2), 1.0)
    True
"""
    )

    _task = "classification"

    def _prepare_y(self, y):
        return encode_classes(self, y).astype(np.int64)

    _methods = {"predict", "predict_proba"}

    def _from_logits(self, logits, method):
        if method == "predict":
            return self.classes_[np.argmax(logits, axis=1)]
        logits = logits - logits.max(axis=1, keepdims=True)
        proba = np.exp(logits)
        return proba / proba.sum(axis=1, keepdims=True)

    def predict_proba(self, X):
        """Class probabilities, computed in numpy.

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

    def predict(self, X):
        """Most probable class of each row.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Raw input with the same columns as during fit.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            Predicted class labels.
        """
        return self._predict_encoded(self._encode(X), "predict")


class AttentionFusionRegressor(RegressorMixin, _BaseAttentionFusion):
    __doc__ = (
        """Cross-modal attention fusion for regression.

    The regression twin of :class:`AttentionFusionClassifier`: the same network with one
    output, trained on the standardised target with a squared-error loss weighted by
    ``sample_weight``. Prediction runs in numpy, without torch.

    Read more in the :ref:`User Guide <attention_fusion>`.
"""
        + _PARAMS_DOC
        + """
    Attributes
    ----------"""
        + _ATTRS_DOC
        + """
    See Also
    --------
    AttentionFusionClassifier : The classification twin.
    FusionRegressor : Chooses the fusion strategy with a parameter.

    Examples
    --------
    >>> from sklearn.datasets import load_diabetes
    >>> from sklearn.preprocessing import StandardScaler
    >>> from skfusion import AttentionFusionRegressor
    >>> X, y = load_diabetes(return_X_y=True, as_frame=True)
    >>> reg = AttentionFusionRegressor([
    ...     ("body", StandardScaler(), ["age", "sex", "bmi", "bp"]),
    ...     ("blood", StandardScaler(), ["s1", "s2", "s3", "s4", "s5", "s6"]),
    ... ], max_iter=20, random_state=0).fit(X, y)
    >>> reg.predict(X.iloc[:3]).shape
    (3,)
"""
    )

    _task = "regression"

    def _prepare_y(self, y):
        y = numeric_target(y)
        self._y_mean = float(y.mean())
        std = float(y.std())
        self._y_scale = std if std > 1e-12 else 1.0
        return ((y - self._y_mean) / self._y_scale).astype(np.float32)

    _methods = {"predict"}

    def _from_logits(self, logits, method):
        return logits[:, 0] * self._y_scale + self._y_mean

    def predict(self, X):
        """Predicted targets, computed in numpy.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Raw input with the same columns as during fit.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            Predicted targets.
        """
        return self._predict_encoded(self._encode(X), "predict")
