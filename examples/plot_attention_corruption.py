"""
=====================================================
Attention moves away from a corrupted modality
=====================================================

Cross-attention fusion decides, row by row, how much each modality's tokens attend to the
others. When one modality is broken in some rows, a well-trained model should look at the
other one there. We pair each spoken digit of the Free Spoken Digit Dataset with a handwritten
image of the same digit (:func:`~skfusion.datasets.load_audio_visual_digits`), replace the
image by uniform noise in half of the rows (a camera that sometimes fails), fit an
:class:`~skfusion.AttentionFusionClassifier`, and measure with
:func:`~skfusion.inspection.mean_attention` how much attention the clean modality, the audio,
receives in the corrupted rows and in the clean ones.
"""

# SPDX-License-Identifier: BSD-3-Clause

# %%
# Data: 1,000 training recordings and FSDD's 300 test recordings, half with a noise image
# -----------------------------------------------------------------------------------------
import matplotlib.pyplot as plt
import numpy as np

from skfusion import AttentionFusionClassifier
from skfusion.datasets import load_audio_visual_digits
from skfusion.encoders import ArrayEncoder, AudioEncoder
from skfusion.inspection import AttentionWeightsDisplay, mean_attention

digits = load_audio_visual_digits(random_state=0)
X, y, split = digits.data.copy(), digits.target, digits.split
rng = np.random.RandomState(0)
train = rng.choice(np.flatnonzero(split == "train"), 1000, replace=False)
test = np.flatnonzero(split == "test")

corrupted = rng.rand(len(X)) < 0.5
images = X["image"].to_numpy().copy()  # one 8x8 array (grey levels 0-16) per row
for row in np.flatnonzero(corrupted):
    images[row] = rng.uniform(0, 16, size=(8, 8))
X["image"] = images

fig, axes = plt.subplots(1, 4, figsize=(6, 1.8))
for ax, row in zip(axes, [test[0], test[1], test[2], test[3]]):
    ax.imshow(X["image"][row], cmap="gray_r")
    ax.set_title(f"{y[row]}, {'noise' if corrupted[row] else 'clean'}", fontsize=9)
    ax.set_axis_off()

# %%
# The model
# ---------
# One token per modality (``n_tokens=1``) and modality dropout (whole modalities hidden at
# random during training) teach the network to rely on whichever modality is informative.
modalities = [
    ("audio", AudioEncoder(sr=8000), "audio"),
    ("image", ArrayEncoder(), "image"),
]
clf = AttentionFusionClassifier(
    modalities, d_model=16, n_heads=2, n_tokens=1, modality_dropout=0.3,
    max_iter=100, learning_rate_init=3e-3, random_state=0, device="cpu",
)
clf.fit(X.iloc[train], y.iloc[train])
print(f"test accuracy: {clf.score(X.iloc[test], y.iloc[test]):.3f}")

# %%
# Where the attention goes
# ------------------------
# :func:`~skfusion.inspection.mean_attention` gives, for each row, the share of attention each
# modality receives (averaged over the query modalities; a row's shares sum to 1).
shares = mean_attention(clf, X.iloc[test])
noisy = corrupted[test]
on_audio_noisy = shares["audio"][noisy].mean()
on_audio_clean = shares["audio"][~noisy].mean()
print(
    f"mean attention on the clean modality (audio): {on_audio_noisy:.3f} in rows with a noise "
    f"image vs {on_audio_clean:.3f} in clean rows"
)

# %%
# The same numbers as a heat map, one row per kind of test row.
kind = np.where(noisy, "noise image", "clean image")
AttentionWeightsDisplay.from_estimator(clf, X.iloc[test], kind)
plt.tight_layout()
plt.show()
