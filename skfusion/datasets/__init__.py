"""Loaders for the real multimodal data sets that ship with skfusion (with their licences)."""

# SPDX-License-Identifier: BSD-3-Clause

from ._clothing import load_clothing_reviews
from ._digits import load_audio_visual_digits, load_spoken_digits

__all__ = ["load_audio_visual_digits", "load_clothing_reviews", "load_spoken_digits"]
