"""Which modality matters: per-modality importance, attention shares and Displays."""

# SPDX-License-Identifier: BSD-3-Clause

from ._displays import (
    AttentionWeightsDisplay,
    FusionComparisonDisplay,
    ModalityImportanceDisplay,
)
from ._importance import mean_attention, modality_importance

__all__ = [
    "AttentionWeightsDisplay",
    "FusionComparisonDisplay",
    "ModalityImportanceDisplay",
    "mean_attention",
    "modality_importance",
]
