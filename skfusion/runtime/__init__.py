"""Runtime: ONNX Runtime sessions, devices, pooling and the text graphs.

Nothing here imports onnxruntime at import time; it is imported when a session is built.
What users call: :func:`resolve_providers` (which execution providers a ``device`` string
means), :func:`make_session` and the picklable :class:`LazySession`,
:func:`default_intra_op_threads`, and the pooling of token sequences
(:func:`pool_sequence`, :func:`l2_normalize`). Read more in the :ref:`runtime` guide.

Storage (the model store and the embedding cache) is :mod:`skfusion.storage`.
"""

# SPDX-License-Identifier: BSD-3-Clause

from ._pooling import l2_normalize, pool_sequence
from ._session import LazySession, default_intra_op_threads, make_session, resolve_providers

__all__ = [
    "LazySession",
    "default_intra_op_threads",
    "l2_normalize",
    "make_session",
    "pool_sequence",
    "resolve_providers",
]
