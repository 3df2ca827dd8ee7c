"""
Early or late fusion of review text and tabular columns
=======================================================

The Women's Clothing reviews (shipped with skfusion, CC0) hold two texts per review (a title and
the review itself, each sometimes missing) and tabular columns (age, rating, feedback count,
department...). We predict whether the reviewer recommends the product with text only, tabular
only, early fusion and late fusion, on a small subsample so the example runs in seconds.
"""

# %%
# Load the data and keep a small stratified subsample of the published train split.
import matplotlib.pyplot as plt
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skfusion import EarlyFusion, LateFusionClassifier
from skfusion.datasets import load_clothing_reviews
from skfusion.encoders import TextEncoder

reviews = load_clothing_reviews()
X, y, split = reviews.data, reviews.target, reviews.split
X_train, _, y_train, _ = train_test_split(
    X[split == "train"],
    y[split == "train"],
    train_size=800,
    stratify=y[split == "train"],
    random_state=0,
)
X_test, _, y_test, _ = train_test_split(
    X[split == "test"],
    y[split == "test"],
    train_size=400,
    stratify=y[split == "test"],
    random_state=0,
)
print(f"titles missing in {X_train['Title'].isna().mean():.0%} of the training rows")

# %%
# The modality spec: a scalar column is a raw modality (1-D input), a list is tabular (2-D).
text = [("review", TextEncoder(), "Review Text"), ("title", TextEncoder(), "Title")]
tab = [("tab", StandardScaler(), ["Age", "Rating", "Positive Feedback Count"])]

models = {
    "text only": make_pipeline(EarlyFusion(text), LogisticRegression(max_iter=2000)),
    "tabular only": make_pipeline(EarlyFusion(tab), LogisticRegression(max_iter=2000)),
    "early fusion": make_pipeline(
        EarlyFusion(text + tab, scaling="block"), LogisticRegression(max_iter=2000)
    ),
    "late fusion": LateFusionClassifier(text + tab, cv=3),
}
scores = {}
for name, model in models.items():
    model.fit(X_train, y_train)
    scores[name] = f1_score(y_test, model.predict(X_test))
    print(f"{name:>14}: test F1 {scores[name]:.3f}")

# %%
# Late fusion's final estimator shows how much it trusts each modality: one weight per
# modality's out-of-fold probability (review, title, tab), then one per presence flag.
late = models["late fusion"]
print(late.final_estimator_.coef_.round(2))

# %%
fig, ax = plt.subplots(figsize=(6, 3))
ax.barh(list(scores), list(scores.values()), color=["#999", "#999", "#3a7", "#37a"])
ax.set_xlim(min(scores.values()) - 0.05, 1.0)
ax.set_xlabel("test F1 (400 reviews)")
fig.tight_layout()
plt.show()
