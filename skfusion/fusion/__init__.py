"""Fusion estimators: early, late (stacking) and the fusion-type dispatcher."""

# SPDX-License-Identifier: BSD-3-Clause

from ._attention import AttentionFusionClassifier, AttentionFusionRegressor
from ._dispatch import FusionClassifier, FusionRegressor
from ._early import EarlyFusion
from ._late import LateFusionClassifier, LateFusionRegressor

__all__ = [
    "AttentionFusionClassifier",
    "AttentionFusionRegressor",
    "EarlyFusion",
    "FusionClassifier",
    "FusionRegressor",
    "LateFusionClassifier",
    "LateFusionRegressor",
]
