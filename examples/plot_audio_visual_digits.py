"""
Hearing and seeing digits: audio-visual fusion
==============================================

Two real data sets that ship with skfusion make a two-modality task: each recording of the Free
Spoken Digit Dataset (3,000 WAV clips, six speakers, CC BY-SA 4.0) is paired with one of
scikit-learn's 8x8 handwritten digit images of the same digit. We classify the digit from the
sound only, from the picture only, and from both with early and late fusion, on FSDD's official
split (2,700 training and 300 test recordings; the test recordings get images that no training
recording sees).
"""

# %%
# Load the pairs. ``audio`` holds file paths, ``image`` one 8x8 array per row.
import matplotlib.pyplot as plt
import soundfile as sf
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skfusion import EarlyFusion, LateFusionClassifier
from skfusion.datasets import load_audio_visual_digits
from skfusion.encoders import ArrayEncoder, AudioEncoder

digits = load_audio_visual_digits(random_state=0)
X, y, split = digits.data, digits.target, digits.split
X_train, y_train = X[split == "train"], y[split == "train"]
X_test, y_test = X[split == "test"], y[split == "test"]
print(X.head(3))

fig, axes = plt.subplots(2, 4, figsize=(8, 3))
for k, row in enumerate([0, 700, 1400, 2100]):
    clip, rate = sf.read(X["audio"][row])
    axes[0, k].plot(clip, lw=0.5)
    axes[0, k].set_title(f"spoken {y[row]} ({digits.frame['speaker'][row]})", fontsize=9)
    axes[1, k].imshow(X["image"][row], cmap="gray_r")
    for ax in axes[:, k]:
        ax.set_axis_off()
fig.tight_layout()

# %%
# The two modalities. :class:`~skfusion.encoders.AudioEncoder` decodes each file, keeps
# FSDD's native 8 kHz and summarises 20 MFCCs by their mean and standard deviation over the
# clip (40 features named ``"mfcc_0_mean"`` ...); :class:`~skfusion.encoders.ArrayEncoder`
# flattens each image into 64 pixels.
audio = ("audio", AudioEncoder(sr=8000, n_jobs=2), "audio")
image = ("image", ArrayEncoder(), "image")


def linear():
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))


models = {
    "audio only": make_pipeline(EarlyFusion([audio]), linear()),
    "image only": make_pipeline(EarlyFusion([image]), linear()),
    "early fusion": make_pipeline(EarlyFusion([audio, image]), linear()),
    "late fusion": LateFusionClassifier(
        [audio, image], estimator=linear(), final_estimator=LogisticRegression(max_iter=1000), cv=5
    ),
}

# %%
# Fit each model on the training recordings and score it on the test ones. The audio features
# are computed once: the fusion estimators share rows through skfusion's embedding cache.
scores = {}
for name, model in models.items():
    model.fit(X_train, y_train)
    scores[name] = model.score(X_test, y_test)
    print(f"{name:>12}: test accuracy {scores[name]:.3f}")

print(models["audio only"][0].get_feature_names_out()[:3])

# %%
# The sound and the picture make different mistakes, so fusing them beats both. Late fusion's
# final estimator weighs each modality's out-of-fold class probabilities.
fig, ax = plt.subplots(figsize=(6, 3))
ax.barh(list(scores), list(scores.values()), color=["#999", "#999", "#3a7", "#37a"])
ax.set_xlim(0.8, 1.0)
for k, value in enumerate(scores.values()):
    ax.text(value - 0.002, k, f"{value:.3f}", va="center", ha="right", color="white", fontsize=9)
ax.set_xlabel("test accuracy (300 recordings, FSDD official split)")
fig.tight_layout()
plt.show()
