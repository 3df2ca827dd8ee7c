"""skfusion: multimodal fusion (text, audio, images, tabular) as scikit-learn estimators.

``import skfusion`` stays light: torch, sentence-transformers, librosa and onnxruntime are
imported only by the encoders that use them, when they first need them.
"""

# SPDX-License-Identifier: BSD-3-Clause

from ._config import config_context, get_config, set_config
from .fusion import (
    AttentionFusionClassifier,
    AttentionFusionRegressor,
    EarlyFusion,
    FusionClassifier,
    FusionRegressor,
    LateFusionClassifier,
    LateFusionRegressor,
)
from .io import dump, load

__version__ = "0.1.0.dev0"

__all__ = [
    "AttentionFusionClassifier",
    "AttentionFusionRegressor",
    "EarlyFusion",
    "FusionClassifier",
    "FusionRegressor",
    "LateFusionClassifier",
    "LateFusionRegressor",
    "__version__",
    "config_context",
    "dump",
    "get_config",
    "load",
    "set_config",
]
