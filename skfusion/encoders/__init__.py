"""Per-modality encoders: scikit-learn transformers that turn raw items into features.

Each encoder lives in its own private module and imports its heavy backend (torch,
sentence-transformers, librosa, onnxruntime) only when it first needs it.
"""

# SPDX-License-Identifier: BSD-3-Clause

from ._array import ArrayEncoder
from ._audio import AudioEncoder
from ._base import EncodingError
from ._finetune import FineTunedTextEncoder
from ._image import ImageEncoder
from ._onnx import OnnxEncoder
from ._text import TextEncoder

__all__ = [
    "ArrayEncoder",
    "AudioEncoder",
    "EncodingError",
    "FineTunedTextEncoder",
    "ImageEncoder",
    "OnnxEncoder",
    "TextEncoder",
]
