"""
=====================================================
What does cross-attention fusion attend to?
=====================================================

:class:`~skfusion.AttentionFusionClassifier` lets every modality attend to the others. This
example fits it on real clothing reviews (the review text, three numerical columns and three
categorical columns) and plots :meth:`~skfusion.AttentionFusionClassifier.attention_weights`:
for each modality (a row of the matrix), the share of its attention that went to each modality
(the columns; the diagonal is attention a modality's tokens kept on themselves).
"""

# SPDX-License-Identifier: BSD-3-Clause

# %%
# Data and model
# --------------
# 600 training rows and 300 test rows of the Multimodal-Toolkit split keep the example quick.
# The text goes through :class:`~skfusion.encoders.TextEncoder` (all-MiniLM-L6-v2, offline).
import matplotlib.pyplot as plt
import numpy as np
from sklearn.impute import SimpleImputer
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from skfusion import AttentionFusionClassifier
from skfusion.datasets import load_clothing_reviews
from skfusion.encoders import TextEncoder

reviews = load_clothing_reviews()
X, y, split = reviews.data, reviews.target, reviews.split
train = X[split == "train"].sample(600, random_state=0).index
test = X[split == "test"].sample(300, random_state=0).index

modalities = [
    ("text", TextEncoder(), "Review Text"),
    ("numbers", StandardScaler(), ["Age", "Rating", "Positive Feedback Count"]),
    (
        "category",
        make_pipeline(
            SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")
        ),
        ["Division Name", "Department Name", "Class Name"],
    ),
]
clf = AttentionFusionClassifier(modalities, early_stopping=True, random_state=0)
clf.fit(X.loc[train], y.loc[train])
proba = clf.predict_proba(X.loc[test])[:, 1]
print(f"test ROC AUC: {roc_auc_score(y.loc[test], proba):.3f} after {clf.n_iter_} epochs")

# %%
# The average attention pattern
# -----------------------------
# ``attention_weights`` gives one ``(modality, modality)`` matrix per row; rows of a present
# modality sum to 1. ``np.nanmean`` averages them over the test rows (a row whose text is
# missing has NaN for the text queries).
W = clf.attention_weights(X.loc[test])
names = list(clf.modality_names_)
mean = np.nanmean(W, axis=0)

fig, ax = plt.subplots(figsize=(4.8, 4))
im = ax.imshow(mean, vmin=0, vmax=1, cmap="Blues")
ax.set_xticks(range(len(names)), names)
ax.set_yticks(range(len(names)), names)
ax.set_xlabel("attended to (keys)")
ax.set_ylabel("attending (queries)")
for q in range(len(names)):
    for k in range(len(names)):
        ax.text(k, q, f"{mean[q, k]:.2f}", ha="center", va="center",
                color="white" if mean[q, k] > 0.5 else "black")
fig.colorbar(im, ax=ax, shrink=0.8)
ax.set_title("Mean attention share, test rows")
fig.tight_layout()

# %%
# Does the numbers modality read the text more for some ratings?
# ---------------------------------------------------------------
# The attention of the numerical tokens (``Rating`` among them) to the text, row by row,
# grouped by the star rating of the review.
numbers, text = names.index("numbers"), names.index("text")
share = W[:, numbers, text]
ratings = X.loc[test, "Rating"].to_numpy()
groups = [share[(ratings == r) & ~np.isnan(share)] for r in range(1, 6)]

fig, ax = plt.subplots(figsize=(5, 3.5))
ax.boxplot(groups, tick_labels=[str(r) for r in range(1, 6)])
ax.set_xlabel("Rating (stars)")
ax.set_ylabel("share of attention to the text")
ax.set_title("numbers -> text attention by rating")
fig.tight_layout()

# %%
# A missing modality
# ------------------
# Removing the text of a row masks it out: the other modalities cannot attend to it (its
# column becomes 0), its own row is NaN, and the prediction still comes out.
X_no_text = X.loc[test[:3]].copy()
X_no_text["Review Text"] = None
print(np.round(clf.attention_weights(X_no_text)[0], 3))
print(clf.predict_proba(X_no_text).round(3))
plt.show()
