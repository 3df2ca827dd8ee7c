"""
=====================================================
Which modality matters? Permute, drop and Shapley
=====================================================

:func:`~skfusion.inspection.modality_importance` measures how much a fitted fusion model's
score depends on each modality, with three strategies:

- ``"permute"`` shuffles a whole modality across rows (as
  :func:`sklearn.inspection.permutation_importance` does for one column);
- ``"drop"`` makes the modality missing in every row, through the model's own
  missing-modality path: what the model loses without it;
- ``"shapley"`` shares the score gained over "everything missing" among the modalities
  (exact Shapley values, dropping as absence).

The modalities are encoded once; every shuffle and every subset only re-runs the fusion head,
so the text encoder never runs again. We look at the Women's Clothing reviews (review text vs
title vs tabular columns) and at the audio-visual digits.
"""

# SPDX-License-Identifier: BSD-3-Clause

# %%
# Clothing reviews: does the reviewer recommend the product?
# ----------------------------------------------------------
# A small stratified subsample keeps the example quick.
import matplotlib.pyplot as plt
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skfusion import AttentionFusionClassifier, EarlyFusion, LateFusionClassifier
from skfusion.datasets import load_audio_visual_digits, load_clothing_reviews
from skfusion.encoders import ArrayEncoder, AudioEncoder, TextEncoder
from skfusion.inspection import ModalityImportanceDisplay, modality_importance

reviews = load_clothing_reviews()
X, y, split = reviews.data, reviews.target, reviews.split
X_train, _, y_train, _ = train_test_split(
    X[split == "train"], y[split == "train"], train_size=300,
    stratify=y[split == "train"], random_state=0,
)
X_test, _, y_test, _ = train_test_split(
    X[split == "test"], y[split == "test"], train_size=200,
    stratify=y[split == "test"], random_state=0,
)

modalities = [
    ("review", TextEncoder(), "Review Text"),
    ("title", TextEncoder(), "Title"),
    ("tab", StandardScaler(), ["Age", "Rating", "Positive Feedback Count"]),
]
models = {
    "early": make_pipeline(
        EarlyFusion(modalities, scaling="block"), LogisticRegression(max_iter=2000)
    ),
    "late": LateFusionClassifier(modalities, cv=3),
    "attention": AttentionFusionClassifier(
        modalities, max_iter=60, early_stopping=True, random_state=0, device="cpu"
    ),
}
for name, model in models.items():
    model.fit(X_train, y_train)
    print(f"{name:>9}: test accuracy {model.score(X_test, y_test):.3f}")

# %%
# Three strategies side by side, for each fusion type. The score is ROC AUC, so the importance
# of a modality is the AUC it is worth.
strategies = ["permute", "drop", "shapley"]
fig, axes = plt.subplots(3, 3, figsize=(10, 7), sharex=True)
for row, (name, model) in enumerate(models.items()):
    for col, strategy in enumerate(strategies):
        result = modality_importance(
            model, X_test, y_test, strategy=strategy, scoring="roc_auc",
            n_repeats=5, random_state=0,
        )
        ModalityImportanceDisplay.from_result(result, ax=axes[row, col])
        axes[row, col].set_title(f"{name} fusion, {strategy}", fontsize=10)
        summary = ", ".join(
            f"{m} {v:+.3f}" for m, v in zip(result.modality_names, result.importances_mean)
        )
        print(f"{name:>9} {strategy:>7}: {summary}")
fig.tight_layout()

# %%
# For early and late fusion the rating (in ``tab``) dominates under every strategy. Dropping
# the review or the title alone costs almost nothing: each text says much of what the other
# and the rating say. Shapley values average over subsets too, including those without the
# rating, so they credit each text with a share of the signal that ``"drop"`` misses. The
# attention model leans more on the texts: importance describes a model, not the data, and
# different fusion types can use the same modalities differently.
#
# Audio-visual digits: sound or picture?
# --------------------------------------
# Each spoken digit is paired with a handwritten image of the same digit. The sound and the
# picture make different mistakes, so late fusion uses both; the Shapley values split the
# accuracy gained over "both missing" between them.
digits = load_audio_visual_digits(random_state=0)
Xd, yd, dsplit = digits.data, digits.target, digits.split
rng = np.random.RandomState(0)
train = rng.choice(np.flatnonzero(dsplit == "train"), 800, replace=False)
test = np.flatnonzero(dsplit == "test")
av = [("audio", AudioEncoder(sr=8000), "audio"), ("image", ArrayEncoder(), "image")]
late = LateFusionClassifier(
    av, estimator=make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)), cv=3
)
late.fit(Xd.iloc[train], yd.iloc[train])
print(f"late fusion test accuracy: {late.score(Xd.iloc[test], yd.iloc[test]):.3f}")

fig, axes = plt.subplots(1, 2, figsize=(9, 2.8))
display = ModalityImportanceDisplay.from_estimator(
    late, Xd.iloc[test], yd.iloc[test], strategy="permute", n_repeats=10, random_state=0,
    ax=axes[0],
)
axes[0].set_title("permute (10 repeats)")
shapley = modality_importance(late, Xd.iloc[test], yd.iloc[test], strategy="shapley")
ModalityImportanceDisplay.from_result(shapley, ax=axes[1])
axes[1].set_title("shapley")
fig.tight_layout()
print(
    "Shapley values (accuracy): "
    + ", ".join(f"{m} {v:.3f}" for m, v in zip(shapley.modality_names, shapley.importances_mean))
    + f"; they sum to {shapley.importances_mean.sum():.3f} = "
    f"{shapley.baseline_score:.3f} (both) - {shapley.empty_score:.3f} (neither)"
)

# %%
# Late fusion also has a model-side answer: ``modality_weights_``, the share of the final
# estimator's coefficients (in absolute value) on each modality's stacked predictions. It
# costs nothing to read, but it describes the weights, not what the score would lose.
print(late.modality_weights_.round(3))
plt.show()
