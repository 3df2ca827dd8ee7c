"""Which modality matters: permutation, drop and Shapley importance over whole modalities."""

# SPDX-License-Identifier: BSD-3-Clause

from itertools import combinations
from math import factorial
from numbers import Integral, Real

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, is_classifier
from sklearn.metrics import check_scoring
from sklearn.pipeline import Pipeline
from sklearn.utils import Bunch, check_random_state, get_tags
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from .._compat import (
    HasMethods,
    Interval,
    StrOptions,
    _check_sample_weight,
    _safe_indexing,
    validate_params,
)
from .._parallel import Parallel, delayed
from ..fusion._base import BaseFusion

__all__ = ["mean_attention", "modality_importance"]

#: Above this many modalities, exact Shapley values (2**M subsets) are refused.
MAX_SHAPLEY_MODALITIES = 10


# --- what to score: the fusion estimator, what comes before it and what comes after ---


def _is_fusion(est):
    return isinstance(est, BaseFusion)


def _split_model(estimator):
    """``(pre, fusion, post, top)``, checked: something after the fusion makes predictions."""
    pre, fusion, post, top = _find_fusion(estimator)
    if post is None and not hasattr(fusion, "predict"):
        raise ValueError(
            f"{type(fusion).__name__} is a transformer and makes no prediction to score; pass "
            "the Pipeline that ends in the model after it, e.g. "
            "make_pipeline(EarlyFusion(...), LogisticRegression())."
        )
    return pre, fusion, post, top


def _find_fusion(estimator):
    """``(pre, fusion, post, top)`` for a fitted fusion estimator, pipeline or search.

    ``pre`` is the fitted pipeline slice before the fusion step (or None), ``fusion`` the
    fitted fusion estimator, ``post`` the fitted slice after it (or None) and ``top`` the
    estimator whose type and classes the scorer sees.
    """
    if hasattr(estimator, "best_estimator_") or (
        hasattr(estimator, "estimator") and hasattr(estimator, "cv_results_")
    ):
        if not hasattr(estimator, "best_estimator_"):
            raise ValueError(
                f"The {type(estimator).__name__} has no best_estimator_ (was it fitted with "
                "refit=False?); pass a fitted fusion estimator instead."
            )
        estimator = estimator.best_estimator_
    elif type(estimator).__name__.endswith("SearchCV"):
        check_is_fitted(estimator)  # an unfitted search: NotFittedError
    if _is_fusion(estimator):
        check_is_fitted(estimator)
        return None, estimator, None, estimator
    if isinstance(estimator, Pipeline):
        check_is_fitted(estimator)
        steps = [step for _, step in estimator.steps]
        where = [i for i, step in enumerate(steps) if _is_fusion(step)]
        if not where:
            raise ValueError(
                "The Pipeline has no fusion step (EarlyFusion, LateFusion*, AttentionFusion* or "
                "Fusion*); modality_importance needs one to know the modalities."
            )
        i = where[-1]
        pre = estimator[:i] if i > 0 else None
        post = estimator[i + 1:] if i + 1 < len(steps) else None
        if post is not None and not hasattr(steps[i], "transform"):
            raise ValueError(
                f"The Pipeline's fusion step {estimator.steps[i][0]!r} "
                f"({type(steps[i]).__name__}) is followed by other steps but has no transform."
            )
        return pre, steps[i], post, estimator
    raise TypeError(
        "modality_importance takes a fitted fusion estimator (EarlyFusion in a Pipeline, "
        "LateFusion*, AttentionFusion*, Fusion*), a Pipeline containing one, or a fitted "
        f"GridSearchCV over one; got {type(estimator).__name__}."
    )


def _response_has(method):
    def check(self):
        return hasattr(self.fusion if self.post is None else self.post, method)

    return check


class _EncodedModel(BaseEstimator):
    """An estimator-like view of a fitted model whose input is an ``EncodedModalities``.

    Every prediction goes through ``fusion._predict_encoded`` (no encoder runs), then through
    the fitted pipeline steps after the fusion step, if any. ``classes_`` and the tags are
    those of the fitted model, so any scorer from ``check_scoring`` works on it unchanged.
    """

    def __init__(self, fusion, post=None, top=None):
        self.fusion = fusion
        self.post = post
        self.top = top

    def _respond(self, encoded, method):
        if self.post is None:
            return self.fusion._predict_encoded(encoded, method)
        Xt = self.fusion._predict_encoded(encoded, "transform")
        return getattr(self.post, method)(Xt)

    def predict(self, X):
        return self._respond(X, "predict")

    @available_if(_response_has("predict_proba"))
    def predict_proba(self, X):
        return self._respond(X, "predict_proba")

    @available_if(_response_has("decision_function"))
    def decision_function(self, X):
        return self._respond(X, "decision_function")

    @property
    def classes_(self):
        return self.top.classes_

    def __sklearn_tags__(self):
        return get_tags(self.top)

    def __sklearn_is_fitted__(self):
        return True


class _EncodedClassifier(ClassifierMixin, _EncodedModel):
    pass


class _EncodedRegressor(RegressorMixin, _EncodedModel):
    pass


def _encoded_model(fusion, post, top):
    if is_classifier(top):
        return _EncodedClassifier(fusion, post, top)
    if get_tags(top).estimator_type == "regressor":
        return _EncodedRegressor(fusion, post, top)
    return _EncodedModel(fusion, post, top)


def _score(scorer, model, encoded, y, sample_weight):
    if sample_weight is None:
        return scorer(model, encoded, y)
    return scorer(model, encoded, y, sample_weight=sample_weight)


def _permute_scores(scorer, model, encoded, y, sample_weight, name, n_repeats, seed):
    rng = check_random_state(seed)
    return [
        _score(scorer, model, encoded.permute(name, rng.permutation(encoded.n_samples)), y,
               sample_weight)
        for _ in range(n_repeats)
    ]


def _dropped_score(scorer, model, encoded, y, sample_weight, names):
    for name in names:
        encoded = encoded.drop(name)
    return _score(scorer, model, encoded, y, sample_weight)


def shapley_weights(n_players):
    """``w[k] = k! (M - k - 1)! / M!``, the weight of a coalition of size ``k``."""
    total = factorial(n_players)
    return [factorial(k) * factorial(n_players - k - 1) / total for k in range(n_players)]


def shapley_values(value, n_players):
    """Exact Shapley values from ``value[frozenset_of_player_indices]``."""
    weights = shapley_weights(n_players)
    phi = np.zeros(n_players)
    for i in range(n_players):
        others = [j for j in range(n_players) if j != i]
        for k in range(n_players):
            for coalition in combinations(others, k):
                S = frozenset(coalition)
                phi[i] += weights[k] * (value[S | {i}] - value[S])
    return phi


def _as_dict(score):
    return score if isinstance(score, dict) else {None: score}


def _bunch(importances, names, baseline, strategy):
    importances = np.asarray(importances, dtype=np.float64)
    return Bunch(
        importances_mean=importances.mean(axis=1),
        importances_std=importances.std(axis=1),
        importances=importances,
        modality_names=np.asarray(names, dtype=object),
        baseline_score=baseline,
        strategy=strategy,
    )


@validate_params(
    {
        "estimator": [HasMethods(["fit"])],
        "X": ["array-like"],
        "y": ["array-like", None],
        "strategy": [StrOptions({"permute", "drop", "shapley"})],
        "scoring": [str, callable, list, tuple, dict, None],
        "n_repeats": [Interval(Integral, 1, None, closed="left")],
        "modalities": [list, tuple, None],
        "sample_weight": ["array-like", None],
        "max_samples": [
            Interval(Integral, 1, None, closed="left"),
            Interval(Real, 0, 1, closed="right"),
            None,
        ],
        "n_jobs": [Integral, None],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def modality_importance(
    estimator,
    X,
    y,
    *,
    strategy="permute",
    scoring=None,
    n_repeats=5,
    modalities=None,
    sample_weight=None,
    max_samples=None,
    n_jobs=None,
    random_state=None,
):
    """How much the score of a fitted fusion model depends on each modality.

    The modalities of ``X`` are encoded **once** (through the embedding cache as usual); each
    modality is then shuffled or dropped in the encoded form and only the part of the model
    after the encoders (the fusion head) is re-run, so no text, audio or image is encoded
    again however many repeats or subsets are scored.

    Read more in the :ref:`User Guide <modality_importance>`.

    Parameters
    ----------
    estimator : estimator object
        A fitted :class:`~skfusion.LateFusionClassifier`, :class:`~skfusion.LateFusionRegressor`,
        :class:`~skfusion.AttentionFusionClassifier`, :class:`~skfusion.AttentionFusionRegressor`,
        :class:`~skfusion.FusionClassifier` or :class:`~skfusion.FusionRegressor`; a fitted
        :class:`~sklearn.pipeline.Pipeline` that contains one of them or an
        :class:`~skfusion.EarlyFusion` step (steps before it transform ``X``, steps after it
        make the prediction); or a fitted search such as
        :class:`~sklearn.model_selection.GridSearchCV` (its ``best_estimator_`` is used).

    X : DataFrame of shape (n_samples, n_features)
        Raw input with the columns the estimator was fitted on.

    y : array-like of shape (n_samples,) or None
        Targets of ``X`` (None only for scorers that need none).

    strategy : {"permute", "drop", "shapley"}, default="permute"
        - ``"permute"``: shuffle the rows of a whole modality (all its columns at once, and
          its missing-row pattern with them), ``n_repeats`` times; importance is the drop of
          the score. This is :func:`sklearn.inspection.permutation_importance` with one
          group of columns per modality.
        - ``"drop"``: make the modality missing in every row, through the estimator's own
          missing-modality path; importance is what the model loses without it.
        - ``"shapley"``: exact Shapley values of the score over the modalities, a modality
          being absent when dropped as in ``"drop"``. The values sum to
          ``score(all present) - score(all dropped)``. It scores ``2 ** n_modalities``
          subsets and is refused above 10 modalities.

    scoring : str, callable, list, tuple, dict or None, default=None
        As in :func:`sklearn.inspection.permutation_importance`: None uses the estimator's
        default score (accuracy for a classifier, R² for a regressor); several metrics give a
        dict of results, one per metric.

    n_repeats : int, default=5
        Number of shuffles of each modality (``"permute"`` only; the other strategies are
        deterministic and score once).

    modalities : list of str, default=None
        The modalities to score, by name (``modality_names_`` of the fusion estimator). None
        scores them all. With ``"shapley"``, the others stay present in every subset.

    sample_weight : array-like of shape (n_samples,), default=None
        Sample weights passed to the scorer.

    max_samples : int or float, default=None
        Rows to use: an int is a number of rows, a float in (0, 1] a fraction of them. They
        are drawn once, without replacement, before encoding, and every score (the baseline
        included) uses the same rows. None uses all rows.

    n_jobs : int, default=None
        Jobs run in parallel over modalities (``"permute"``, ``"drop"``) or subsets
        (``"shapley"``). None means 1 unless in a :obj:`joblib.parallel_backend` context;
        -1 means all processors.

    random_state : int, RandomState instance or None, default=None
        Seeds the row subsample and the permutations.

    Returns
    -------
    result : :class:`~sklearn.utils.Bunch` or dict of such
        With ``importances_mean`` and ``importances_std`` (shape ``(n_modalities,)``),
        ``importances`` (shape ``(n_modalities, n_repeats)`` for ``"permute"``; shape
        ``(n_modalities, 1)`` for ``"drop"`` and ``"shapley"``, whose ``importances_std`` is
        0), ``modality_names``, ``baseline_score`` (the score with every modality present)
        and ``strategy``. A dict of them, keyed by metric name, when ``scoring`` names several
        metrics.

    See Also
    --------
    sklearn.inspection.permutation_importance : The same, one column at a time.
    mean_attention : Where the attention of an attention-fusion model goes.
    ModalityImportanceDisplay : Box plot of the result.

    Notes
    -----
    Unlike :func:`sklearn.inspection.permutation_importance`, which draws ``max_samples`` rows
    anew for each repeat and keeps the baseline on all rows, the rows are drawn once here so
    that they are encoded once.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from sklearn.preprocessing import StandardScaler
    >>> from skfusion import LateFusionClassifier
    >>> from skfusion.inspection import modality_importance
    >>> rng = np.random.RandomState(0)
    >>> X = pd.DataFrame(rng.normal(size=(120, 4)), columns=["a0", "a1", "b0", "b1"])
    >>> y = (X["a0"] + X["a1"] > 0).astype(int)
    >>> clf = LateFusionClassifier(
    ...     [("a", StandardScaler(), ["a0", "a1"]), ("b", StandardScaler(), ["b0", "b1"])]
    ... ).fit(X, y)
    >>> result = modality_importance(clf, X, y, strategy="drop")
    >>> result.modality_names
    array(['a', 'b'], dtype=object)
    >>> bool(result.importances_mean[0] > result.importances_mean[1])
    True
    """
    pre, fusion, post, top = _split_model(estimator)
    if sample_weight is not None:
        sample_weight = _check_sample_weight(sample_weight, X)
    n_samples = X.shape[0] if hasattr(X, "shape") else len(X)
    if y is not None and len(y) != n_samples:
        raise ValueError(f"X has {n_samples} rows but y has {len(y)}.")
    rng = check_random_state(random_state)
    if max_samples is not None:
        if isinstance(max_samples, Integral):
            if max_samples > n_samples:
                raise ValueError(
                    f"max_samples={max_samples} is more than the {n_samples} rows of X."
                )
            n_keep = int(max_samples)
        else:
            n_keep = max(1, int(max_samples * n_samples))
        rows = np.sort(rng.choice(n_samples, n_keep, replace=False))
        X = _safe_indexing(X, rows)
        y = None if y is None else _safe_indexing(y, rows)
        if sample_weight is not None:
            sample_weight = sample_weight[rows]

    Xt = X if pre is None else pre.transform(X)
    encoded = fusion._encode(Xt)
    known = list(encoded.names)
    if modalities is None:
        names = known
    else:
        names = list(modalities)
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ValueError(
                f"Unknown modalities {unknown!r}; the estimator's modalities are {known!r}."
            )
        if len(set(names)) != len(names):
            raise ValueError(f"modalities names a modality twice: {names!r}.")
        if not names:
            raise ValueError("modalities is empty; name at least one modality.")
    if strategy == "shapley" and len(names) > MAX_SHAPLEY_MODALITIES:
        raise ValueError(
            f"strategy='shapley' scores 2**{len(names)} subsets of modalities; it is refused "
            f"above {MAX_SHAPLEY_MODALITIES} modalities. Pass at most "
            f"{MAX_SHAPLEY_MODALITIES} names in `modalities`, or use strategy='drop' or "
            "'permute'."
        )

    model = _encoded_model(fusion, post, top)
    # raise_exc: a failing metric raises instead of turning into NaN silently
    scorer = check_scoring(model, scoring=scoring, raise_exc=True)
    baseline = _as_dict(_score(scorer, model, encoded, y, sample_weight))
    parallel = Parallel(n_jobs=n_jobs)

    if strategy == "permute":
        seed = rng.randint(np.iinfo(np.int32).max + 1)
        scores = parallel(
            delayed(_permute_scores)(scorer, model, encoded, y, sample_weight, name, n_repeats,
                                     seed)
            for name in names
        )
        scores = [[_as_dict(s) for s in per_name] for per_name in scores]
        results = {
            key: _bunch(
                [[baseline[key] - s[key] for s in per_name] for per_name in scores],
                names, baseline[key], strategy,
            )
            for key in baseline
        }
    elif strategy == "drop":
        scores = parallel(
            delayed(_dropped_score)(scorer, model, encoded, y, sample_weight, [name])
            for name in names
        )
        scores = [_as_dict(s) for s in scores]
        results = {
            key: _bunch([[baseline[key] - s[key]] for s in scores], names, baseline[key],
                        strategy)
            for key in baseline
        }
    else:
        players = range(len(names))
        subsets = [
            frozenset(c) for k in range(len(names) + 1) for c in combinations(players, k)
        ]
        scores = parallel(
            delayed(_dropped_score)(
                scorer, model, encoded, y, sample_weight,
                [names[j] for j in players if j not in S],
            )
            for S in subsets
        )
        scores = [_as_dict(s) for s in scores]
        results = {}
        for key in baseline:
            value = {S: s[key] for S, s in zip(subsets, scores)}
            phi = shapley_values(value, len(names))
            result = _bunch(phi[:, None], names, baseline[key], strategy)
            result.empty_score = value[frozenset()]
            results[key] = result
    if None in results:
        return results[None]
    return results


# --- attention ---


def _attention_estimator(estimator):
    """``(pre, attention_estimator)``: the pipeline steps before it (or None) and the model."""
    if hasattr(estimator, "best_estimator_"):
        estimator = estimator.best_estimator_
    pre = None
    if isinstance(estimator, Pipeline):
        pre = estimator[:-1] if len(estimator) > 1 else None
        estimator = estimator[-1]
    inner = getattr(estimator, "estimator_", None)  # FusionClassifier/Regressor
    if inner is not None and hasattr(inner, "attention_weights"):
        estimator = inner
    if not hasattr(estimator, "attention_weights"):
        raise TypeError(
            "mean_attention needs a fitted AttentionFusionClassifier/Regressor (or a "
            "FusionClassifier/Regressor with fusion='attention', or a Pipeline ending in one); "
            f"got {type(estimator).__name__}."
        )
    check_is_fitted(estimator)
    return pre, estimator


@validate_params(
    {"estimator": [HasMethods(["fit"])], "X": ["array-like"], "y": ["array-like", None]},
    prefer_skip_nested_validation=True,
)
def mean_attention(estimator, X, y=None):
    """Share of the attention each modality receives, per row or per class.

    For each row, the attention an attention-fusion model pays to modality ``k`` is the
    share of attention that modality's tokens receive, averaged over the query modalities
    present in that row (its own tokens included; see
    :meth:`~skfusion.AttentionFusionClassifier.attention_weights`). The shares of a row sum
    to 1; a modality missing from a row receives 0.

    Read more in the :ref:`User Guide <attention_received>`.

    Parameters
    ----------
    estimator : estimator object
        A fitted :class:`~skfusion.AttentionFusionClassifier` or
        :class:`~skfusion.AttentionFusionRegressor`; a :class:`~skfusion.FusionClassifier` /
        :class:`~skfusion.FusionRegressor` fitted with ``fusion="attention"``; a Pipeline
        ending in one; or a fitted search whose ``best_estimator_`` is one.

    X : DataFrame of shape (n_samples, n_features)
        Raw input with the columns the estimator was fitted on.

    y : array-like of shape (n_samples,), default=None
        If given, the rows are averaged per value of ``y`` (for example the true class).

    Returns
    -------
    attention : DataFrame
        One column per modality (in the order of ``modality_names_``). One row per row of
        ``X`` (same index) when ``y`` is None; otherwise one row per distinct value of ``y``
        (the index, sorted), holding the mean over that group's rows.

    See Also
    --------
    AttentionWeightsDisplay : Heat map of the result.
    modality_importance : What the score loses without each modality.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from sklearn.preprocessing import StandardScaler
    >>> from skfusion import AttentionFusionClassifier
    >>> from skfusion.inspection import mean_attention
    >>> rng = np.random.RandomState(0)
    >>> X = pd.DataFrame(rng.normal(size=(60, 4)), columns=["a0", "a1", "b0", "b1"])
    >>> y = (X["a0"] > 0).astype(int)
    >>> clf = AttentionFusionClassifier(
    ...     [("a", StandardScaler(), ["a0", "a1"]), ("b", StandardScaler(), ["b0", "b1"])],
    ...     d_model=8, n_heads=2, max_iter=5, random_state=0, device="cpu",
    ... ).fit(X, y)
    >>> per_class = mean_attention(clf, X, y)
    >>> per_class.shape
    (2, 2)
    >>> np.allclose(per_class.sum(axis=1), 1.0)
    True
    """
    pre, est = _attention_estimator(estimator)
    # (n, query, key); all-NaN [i, q, :] when modality q is missing from row i
    weights = est.attention_weights(X if pre is None else pre.transform(X))
    with np.errstate(all="ignore"):
        present = ~np.isnan(weights).all(axis=2)  # (n, query)
        received = np.nansum(weights, axis=1) / np.maximum(present.sum(axis=1), 1)[:, None]
    received[~present.any(axis=1)] = np.nan
    names = [str(name) for name in est.modality_names_]
    index = X.index if isinstance(X, pd.DataFrame) else None
    frame = pd.DataFrame(received, columns=names, index=index)
    if y is None:
        return frame
    y = np.asarray(y)
    if y.shape[0] != frame.shape[0]:
        raise ValueError(f"X has {frame.shape[0]} rows but y has {y.shape[0]}.")
    frame.index = pd.Index(y, name="y")
    return frame.groupby(level=0, sort=True).mean()
