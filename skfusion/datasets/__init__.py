"""Loaders for the real multimodal data sets that ship with skfusion (with their licences)."""

# SPDX-License-Identifier: BSD-3-Clause

from ._clothing import load_clothing_reviews

__all__ = ["load_clothing_reviews"]
