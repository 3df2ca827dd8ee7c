"""Displays (scikit-learn style) for modality importance, attention and fusion comparison."""

# SPDX-License-Identifier: BSD-3-Clause

import numpy as np
import pandas as pd

from .._compat import check_matplotlib_support
from ._importance import mean_attention, modality_importance

__all__ = ["AttentionWeightsDisplay", "FusionComparisonDisplay", "ModalityImportanceDisplay"]


def _horizontal():
    """boxplot keyword for horizontal boxes: ``orientation`` from matplotlib 3.10, ``vert``
    before (deprecated in 3.11)."""
    import matplotlib

    major, minor = (int(part) for part in matplotlib.__version__.split(".")[:2])
    return {"orientation": "horizontal"} if (major, minor) >= (3, 10) else {"vert": False}


def _axes(ax, caller):
    check_matplotlib_support(caller)  # matplotlib is optional: a clear ImportError if missing
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots()
    return ax


class ModalityImportanceDisplay:
    """Box plot of the importance of each modality over the repeats.

    Build it with :meth:`from_estimator` (which runs
    :func:`~skfusion.inspection.modality_importance`) or :meth:`from_result` (from a result
    already computed). Modalities are sorted by mean importance, the most important on top.
    A result with one value per modality (``"drop"``, ``"shapley"``) is drawn as bars.

    Read more in the :ref:`User Guide <modality_importance>`.

    Parameters
    ----------
    importances : ndarray of shape (n_modalities, n_repeats)
        The importance of each modality in each repeat.
    modality_names : array-like of str of shape (n_modalities,)
        The modality names.
    baseline_score : float, default=None
        The score with every modality present (shown in the title).
    strategy : str, default=None
        The strategy that produced ``importances`` (shown in the axis label).

    Attributes
    ----------
    ax_ : matplotlib Axes
        The axes of the plot.
    figure_ : matplotlib Figure
        The figure of the plot.

    See Also
    --------
    modality_importance : Computes the importances.

    Examples
    --------
    >>> import numpy as np
    >>> from skfusion.inspection import ModalityImportanceDisplay
    >>> display = ModalityImportanceDisplay(
    ...     np.array([[0.30, 0.32, 0.29], [0.01, -0.01, 0.0]]), ["text", "tab"]
    ... )
    >>> display = display.plot()  # needs matplotlib
    >>> [label.get_text() for label in display.ax_.get_yticklabels()]  # most important on top
    ['tab', 'text']
    """

    def __init__(self, importances, modality_names, *, baseline_score=None, strategy=None):
        self.importances = importances
        self.modality_names = modality_names
        self.baseline_score = baseline_score
        self.strategy = strategy

    def plot(self, ax=None, *, kind="auto"):
        """Draw the plot.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to draw on; None makes a new figure.
        kind : {"auto", "box", "bar"}, default="auto"
            ``"box"`` draws one box per modality over the repeats, ``"bar"`` the mean with
            the standard deviation as error bar; ``"auto"`` picks ``"box"`` when there are
            several repeats.

        Returns
        -------
        display : ModalityImportanceDisplay
            ``self``, with ``ax_`` and ``figure_`` set.
        """
        if kind not in ("auto", "box", "bar"):
            raise ValueError(f"kind must be 'auto', 'box' or 'bar', got {kind!r}.")
        ax = _axes(ax, f"{type(self).__name__}.plot")
        importances = np.asarray(self.importances, dtype=np.float64)
        if importances.ndim == 1:
            importances = importances[:, None]
        names = np.asarray(self.modality_names, dtype=object)
        order = np.argsort(importances.mean(axis=1))  # barh/boxplot draw bottom-up
        if kind == "auto":
            kind = "box" if importances.shape[1] > 1 else "bar"
        positions = np.arange(len(order))
        if kind == "box":
            ax.boxplot([importances[i] for i in order], positions=positions, **_horizontal())
        else:
            ax.barh(positions, importances[order].mean(axis=1),
                    xerr=importances[order].std(axis=1), color="#37a")
        ax.set_yticks(positions, [str(names[i]) for i in order])
        ax.axvline(0.0, color="k", linestyle="--", linewidth=0.8)
        strategy = f" ({self.strategy})" if self.strategy else ""
        ax.set_xlabel(f"decrease in score{strategy}")
        if self.baseline_score is not None:
            ax.set_title(f"Modality importance (baseline score {self.baseline_score:.3f})")
        self.ax_ = ax
        self.figure_ = ax.figure
        return self

    @classmethod
    def from_result(cls, result, *, ax=None, kind="auto"):
        """Plot a result of :func:`~skfusion.inspection.modality_importance`.

        Parameters
        ----------
        result : Bunch
            The result (for several metrics, pick one: ``result["roc_auc"]``).
        ax : matplotlib Axes, default=None
            Axes to draw on; None makes a new figure.
        kind : {"auto", "box", "bar"}, default="auto"
            See :meth:`plot`.

        Returns
        -------
        display : ModalityImportanceDisplay
            The display, plotted.
        """
        if "importances" not in result:
            raise ValueError(
                "result is not a modality_importance result (no 'importances'); with several "
                "metrics, pass one of them, e.g. result['accuracy']."
            )
        display = cls(
            result["importances"],
            result["modality_names"],
            baseline_score=result.get("baseline_score"),
            strategy=result.get("strategy"),
        )
        return display.plot(ax=ax, kind=kind)

    @classmethod
    def from_estimator(cls, estimator, X, y, *, ax=None, kind="auto", **kwargs):
        """Compute the importance of each modality and plot it.

        Parameters
        ----------
        estimator : estimator object
            A fitted fusion estimator, pipeline or search; see
            :func:`~skfusion.inspection.modality_importance`.
        X : DataFrame of shape (n_samples, n_features)
            Raw input.
        y : array-like of shape (n_samples,)
            Targets.
        ax : matplotlib Axes, default=None
            Axes to draw on; None makes a new figure.
        kind : {"auto", "box", "bar"}, default="auto"
            See :meth:`plot`.
        **kwargs : dict
            Passed to :func:`~skfusion.inspection.modality_importance` (``strategy``,
            ``scoring`` with a single metric, ``n_repeats``, ``random_state``...).

        Returns
        -------
        display : ModalityImportanceDisplay
            The display, plotted; ``display.result_`` holds the computed result.
        """
        result = modality_importance(estimator, X, y, **kwargs)
        if "importances" not in result:
            raise ValueError("from_estimator plots one metric; pass a single `scoring`.")
        display = cls.from_result(result, ax=ax, kind=kind)
        display.result_ = result
        return display


class AttentionWeightsDisplay:
    """Heat map of the attention each modality receives, per row or per class.

    Build it with :meth:`from_estimator`, which runs
    :func:`~skfusion.inspection.mean_attention`.

    Read more in the :ref:`User Guide <attention_received>`.

    Parameters
    ----------
    attention : DataFrame of shape (n_rows, n_modalities)
        Attention share of each modality (columns) per row or per class (index).

    Attributes
    ----------
    ax_ : matplotlib Axes
        The axes of the plot.
    figure_ : matplotlib Figure
        The figure of the plot.
    image_ : matplotlib AxesImage
        The heat map.

    See Also
    --------
    mean_attention : Computes the attention shares.

    Examples
    --------
    >>> import pandas as pd
    >>> from skfusion.inspection import AttentionWeightsDisplay
    >>> shares = pd.DataFrame({"audio": [0.7, 0.4], "image": [0.3, 0.6]}, index=[0, 1])
    >>> display = AttentionWeightsDisplay(shares).plot()  # needs matplotlib
    >>> display.image_.get_array().shape
    (2, 2)
    """

    def __init__(self, attention):
        self.attention = attention

    def plot(self, ax=None, *, cmap="Blues", annotate=None, colorbar=True):
        """Draw the heat map.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to draw on; None makes a new figure.
        cmap : str or Colormap, default="Blues"
            The colour map (shares run from 0 to 1).
        annotate : bool, default=None
            Write each share in its cell; None does it when there are at most 30 rows.
        colorbar : bool, default=True
            Add a colour bar.

        Returns
        -------
        display : AttentionWeightsDisplay
            ``self``, with ``ax_``, ``figure_`` and ``image_`` set.
        """
        ax = _axes(ax, f"{type(self).__name__}.plot")
        frame = pd.DataFrame(self.attention)
        values = frame.to_numpy(dtype=np.float64)
        self.image_ = ax.imshow(values, vmin=0.0, vmax=1.0, cmap=cmap, aspect="auto",
                                interpolation="nearest")
        ax.set_xticks(range(frame.shape[1]), [str(c) for c in frame.columns])
        if annotate is None:
            annotate = frame.shape[0] <= 30
        if annotate:
            ax.set_yticks(range(frame.shape[0]), [str(i) for i in frame.index])
            for r in range(values.shape[0]):
                for c in range(values.shape[1]):
                    if np.isfinite(values[r, c]):
                        ax.text(c, r, f"{values[r, c]:.2f}", ha="center", va="center",
                                color="white" if values[r, c] > 0.5 else "black")
        ax.set_xlabel("modality (attention received)")
        ax.set_ylabel(str(frame.index.name) if frame.index.name else "row")
        if colorbar:
            ax.figure.colorbar(self.image_, ax=ax)
        self.ax_ = ax
        self.figure_ = ax.figure
        return self

    @classmethod
    def from_estimator(cls, estimator, X, y=None, *, ax=None, **kwargs):
        """Compute the attention shares and draw them.

        Parameters
        ----------
        estimator : estimator object
            A fitted attention-fusion model; see :func:`~skfusion.inspection.mean_attention`.
        X : DataFrame of shape (n_samples, n_features)
            Raw input.
        y : array-like of shape (n_samples,), default=None
            If given, one heat-map row per value of ``y`` (the mean over its rows); otherwise
            one per row of ``X``.
        ax : matplotlib Axes, default=None
            Axes to draw on; None makes a new figure.
        **kwargs : dict
            Passed to :meth:`plot`.

        Returns
        -------
        display : AttentionWeightsDisplay
            The display, plotted.
        """
        return cls(mean_attention(estimator, X, y)).plot(ax=ax, **kwargs)


def _fusion_param(cv_results):
    keys = [k for k in cv_results if k == "param_fusion" or k.endswith("__fusion")]
    keys = [k for k in keys if k.startswith("param_")]
    if len(keys) != 1:
        raise ValueError(
            "The search's parameter grid must include the fusion type (a parameter named "
            f"'fusion' or '<step>__fusion'); found {keys or 'none'} among "
            f"{sorted(k for k in cv_results if k.startswith('param_'))}."
        )
    return keys[0]


class FusionComparisonDisplay:
    """Scores of each fusion type across the cross-validation folds of a search.

    Build it with :meth:`from_cv_results` from a fitted
    :class:`~sklearn.model_selection.GridSearchCV` (or any search with ``cv_results_``) whose
    grid includes ``fusion``, for example over :class:`~skfusion.FusionClassifier`. For each
    fusion type, the best candidate of that type (by mean test score) is kept and its fold
    scores are drawn as a box with the folds as points.

    Read more in the :ref:`User Guide <fusion_comparison>`.

    Parameters
    ----------
    scores : dict of str to ndarray of shape (n_splits,)
        Test score of each fold, per fusion type.
    best_params : dict of str to dict, default=None
        The parameters of the candidate kept for each fusion type.
    scoring : str, default=None
        The metric name (axis label).

    Attributes
    ----------
    ax_ : matplotlib Axes
        The axes of the plot.
    figure_ : matplotlib Figure
        The figure of the plot.

    Examples
    --------
    >>> import numpy as np
    >>> from skfusion.inspection import FusionComparisonDisplay
    >>> display = FusionComparisonDisplay(
    ...     {"early": np.array([0.80, 0.82, 0.79]), "late": np.array([0.84, 0.83, 0.86])}
    ... )
    >>> display = display.plot()  # needs matplotlib
    >>> [label.get_text() for label in display.ax_.get_xticklabels()]
    ['early', 'late']
    """

    def __init__(self, scores, *, best_params=None, scoring=None):
        self.scores = scores
        self.best_params = best_params
        self.scoring = scoring

    def plot(self, ax=None):
        """Draw a box per fusion type, with one point per fold.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to draw on; None makes a new figure.

        Returns
        -------
        display : FusionComparisonDisplay
            ``self``, with ``ax_`` and ``figure_`` set.
        """
        ax = _axes(ax, f"{type(self).__name__}.plot")
        names = list(self.scores)
        data = [np.asarray(self.scores[name], dtype=np.float64) for name in names]
        positions = np.arange(1, len(names) + 1)
        ax.boxplot(data, positions=positions, showfliers=False)
        ax.set_xticks(positions, names)
        jitter = np.random.RandomState(0)  # fixed jitter: the same picture every time
        for pos, values in zip(positions, data):
            ax.plot(pos + jitter.uniform(-0.08, 0.08, values.size), values, "o",
                    color="#37a", alpha=0.7)
        ax.set_xlabel("fusion")
        ax.set_ylabel(f"test {self.scoring}" if self.scoring else "test score")
        ax.set_title("Score across CV folds, best candidate of each fusion type")
        self.ax_ = ax
        self.figure_ = ax.figure
        return self

    @classmethod
    def from_cv_results(cls, search, *, scoring=None, ax=None):
        """Read the fold scores of each fusion type from a fitted search and plot them.

        Parameters
        ----------
        search : fitted search estimator
            A fitted :class:`~sklearn.model_selection.GridSearchCV` or
            :class:`~sklearn.model_selection.RandomizedSearchCV` whose parameters include
            ``fusion`` (or ``<step>__fusion``).
        scoring : str, default=None
            With several metrics, the one to show; None uses the search's ``refit`` metric
            (or its single score).
        ax : matplotlib Axes, default=None
            Axes to draw on; None makes a new figure.

        Returns
        -------
        display : FusionComparisonDisplay
            The display, plotted.
        """
        if not hasattr(search, "cv_results_"):
            raise ValueError(
                f"{type(search).__name__} has no cv_results_; pass a fitted GridSearchCV."
            )
        results = search.cv_results_
        key = _fusion_param(results)
        if scoring is None:
            refit = getattr(search, "refit", True)
            suffix = refit if isinstance(refit, str) else "score"
        else:
            suffix = scoring
        if f"mean_test_{suffix}" not in results:
            metrics = sorted(k[len("mean_test_"):] for k in results if k.startswith("mean_test_"))
            raise ValueError(f"No test scores for {suffix!r}; the search has {metrics}.")
        n_splits = sum(
            1 for k in results if k.startswith("split") and k.endswith(f"_test_{suffix}")
        )
        means = np.asarray(results[f"mean_test_{suffix}"], dtype=np.float64)
        fusion = np.ma.getdata(results[key])
        mask = np.ma.getmaskarray(results[key])
        scores, best_params = {}, {}
        for name in dict.fromkeys(f for f, m in zip(fusion, mask) if not m):
            cands = np.flatnonzero((fusion == name) & ~mask)
            finite = cands[np.isfinite(means[cands])]
            best = finite[np.argmax(means[finite])] if finite.size else cands[0]
            scores[str(name)] = np.array(
                [results[f"split{k}_test_{suffix}"][best] for k in range(n_splits)],
                dtype=np.float64,
            )
            best_params[str(name)] = results["params"][best]
        label = suffix
        if suffix == "score":
            label = search.scoring if isinstance(getattr(search, "scoring", None), str) else None
        display = cls(scores, best_params=best_params, scoring=label)
        return display.plot(ax=ax)
