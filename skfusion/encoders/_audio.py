"""AudioEncoder: per-clip audio features (MFCC, log-mel, chroma, ...) computed with librosa.

Decoding lives in :mod:`skfusion.encoders._audio_io`, the features and their pooling in
:mod:`skfusion.encoders._audio_features`; this module holds the estimator.
"""

# SPDX-License-Identifier: BSD-3-Clause

from importlib import metadata
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .._compat import Interval, StrOptions, _fit_context
from .._parallel import Parallel, delayed
from ..storage import estimator_fingerprint
from ._audio_features import (
    CONTRAST_FMIN,
    FeatureConfig,
    check_features,
    check_stats,
    contrast_bands,
    frame_features,
    long_frame_blocks,
    pool,
    pool_long,
)
from ._audio_io import LongClip, check_item, decode_safe
from ._base import RawItemEncoderMixin, raise_encoding_error

__all__ = ["AudioEncoder"]

# a batch holds at most this many decoded samples (128 MB of float32) besides ``batch_size``
_BATCH_SAMPLES = 1 << 25
# items decoded per step while a batch fills (the memory check runs between steps)
_DECODE_STEP = 32


class AudioEncoder(RawItemEncoderMixin, TransformerMixin, BaseEstimator):
    """Pooled audio features of a column of clips, computed with librosa.

    Each row is one clip: a file path (WAV, FLAC, OGG/Vorbis, MP3 - whatever libsndfile
    reads), the raw bytes of such a file, a 1-D array of samples (at ``input_sr``), a 2-D
    ``(channels, samples)`` array, or a ``(samples, sample_rate)`` tuple. Clips are mixed down to
    mono, resampled to ``sr`` and cropped/padded by the ``duration`` policy. Frame-level
    features (``features``) are then summarised over the clip's frames by ``stats`` into one
    vector per clip, named like ``"mfcc_3_mean"``.

    Missing rows (``None``, ``NaN``, an empty string, empty bytes, an empty array) give a row of
    NaN. A bad item - wrong type, a path that is not a file, an unreadable, truncated or
    zero-length file, NaN samples - raises ``EncodingError`` (a ``ValueError``) naming the
    row and the value, or gives a NaN row with ``on_error="missing"``. A valid clip of digital
    silence is valid audio: its features are computed (MFCCs of silence are finite).

    Read more in the :ref:`User Guide <audio>`.

    Parameters
    ----------
    features : list of str, default=("mfcc",)
        Frame-level features, in output order: ``"mfcc"`` (``n_mfcc`` coefficients, plus
        deltas by ``mfcc_deltas``), ``"logmel"`` (``n_mels`` log-mel bands, dB),
        ``"chroma"`` (12 pitch classes, A440 tuning), ``"contrast"`` (spectral contrast,
        octave bands above 200 Hz that fit under Nyquist, at most 6, plus one),
        ``"centroid"``, ``"bandwidth"``, ``"rolloff"``, ``"flatness"`` (spectral shape),
        ``"zcr"`` (zero-crossing rate) and ``"rms"`` (frame energy).

    stats : list of str, default=("mean", "std")
        Statistics pooled over each clip's frames: ``"mean"``, ``"std"``, ``"min"``,
        ``"max"``, ``"median"`` or a percentile ``"p0"`` ... ``"p100"``.

    sr : int, default=22050
        Sample rate the clips are resampled to (librosa's default).

    input_sr : int or None, default=None
        Sample rate of bare arrays; ``None`` means they are already at ``sr``. Files and
        ``(samples, rate)`` tuples carry their own rate.

    duration : float or None, default=None
        Target clip length in seconds; ``None`` keeps every clip as it is (features are pooled
        over each clip's own frames, so clips of any length batch together).

    duration_policy : {"pad_crop", "pad", "crop"}, default="pad_crop"
        With ``duration`` set: crop longer clips and zero-pad shorter ones (``"pad_crop"``),
        only pad (``"pad"``) or only crop (``"crop"``). Cropping keeps the start of the clip.

    n_mfcc : int, default=20
        MFCC coefficients.

    mfcc_deltas : {0, 1, 2}, default=0
        Also compute the first (1) or the first and second (2) time derivatives of the MFCCs
        (``librosa.feature.delta``, width 9 or the longest odd width the clip allows).

    n_mels : int, default=128
        Mel bands (for MFCC and log-mel).

    n_fft : int, default=2048
        FFT window length in samples; also the frame length of ``"zcr"`` and ``"rms"``.

    hop_length : int, default=512
        Samples between frames.

    res_type : str, default="soxr_hq"
        Resampler passed to ``librosa.resample`` (``librosa.load``'s default).

    batch_size : int, default=1024
        Clips decoded and featurised together at most; a batch also ends once its clips
        hold 2**25 samples (128 MB of float32, about 25 minutes of audio at 22,050 Hz), so
        memory stays bounded for long clips too. The features do not depend on it.

    n_jobs : int or None, default=None
        Parallel jobs that decode and resample files (threads: decoding is I/O and native
        code). ``None`` means 1 unless in a :func:`joblib.parallel_config` context; -1 uses all
        processors. Features are computed on stacked arrays in the calling thread.

    on_error : {"raise", "missing"}, default="raise"
        What a bad item does: raise an error naming the row and value, or count as missing.

    verbose : int, default=0
        With ``verbose > 0`` (or ``skfusion.set_config(show_progress=True)``) a progress bar
        (tqdm, if installed) counts the clips encoded by each call, on stderr.

    Attributes
    ----------
    n_features_out_ : int
        Length of each clip's feature vector.

    frame_feature_names_ : ndarray of str
        Names of the per-frame features returned by :meth:`transform_sequence`
        (``"mfcc_0"``, ``"mfcc_delta_0"``, ``"zcr"``...).

    See Also
    --------
    skfusion.encoders.ArrayEncoder : Stacks a column of equal-length arrays (pixels).
    skfusion.EarlyFusion : Fuses this encoder's output with other modalities.

    Notes
    -----
    Clips are sorted by length and stacked, zero-padded at the end, into ``(n, samples)``
    arrays whose STFT librosa computes in one call. Everything after the STFT (filter banks,
    dB, DCT, spectral shape, deltas, pooling) runs per clip on its own
    ``1 + len // hop_length`` frames, in float64 (the filter banks as sparse products rather
    than BLAS ones), and is cast to float32 at the end. So a clip's features do not depend on
    the other clips of the call, ``batch_size``, ``n_jobs``, the BLAS thread count or the
    embedding cache: on one machine they are bitwise equal, and across CPUs they agree to
    float32 rounding (see the :ref:`User Guide <audio>`). STFT frames are centred on
    zero-padded audio, as in ``librosa.feature.mfcc``, so the result equals a per-clip librosa
    computation up to float32 rounding. The dB scale of MFCC/log-mel is clipped at 80 dB
    below each clip's own peak.

    A long clip (over 2**21 samples at ``sr``: 95 s at 22,050 Hz) is never held whole: it is
    read and resampled in blocks (soundfile, soxr's streaming resampler; other ``res_type``
    values resample it whole) and featurised block by block of frames, each block with the
    context its frames need, then pooled with merged running statistics in float64 (medians
    and percentiles keep the frame features, not the audio). Its features equal the
    whole-clip computation to float64 rounding; an hour at 8 kHz peaks at a few hundred MB
    (``benchmarks/bench_long_audio.py``).

    The first librosa call in a fresh environment compiles librosa's numba functions (15-60 s
    on two cores); numba caches them next to librosa, in ``~/.cache/numba`` when that is
    read-only, or under ``NUMBA_CACHE_DIR``, so later processes only pay the imports (2-6 s).

    Examples
    --------
    >>> import numpy as np
    >>> from skfusion.encoders import AudioEncoder
    >>> t = np.arange(8000) / 8000
    >>> clips = [np.sin(2 * np.pi * 440 * t), None]
    >>> encoder = AudioEncoder(sr=8000, n_mfcc=4, stats=["mean", "max"])
    >>> X = encoder.fit_transform(clips)
    >>> X.shape
    (2, 8)
    >>> encoder.get_feature_names_out()[:3].tolist()
    ['mfcc_0_mean', 'mfcc_1_mean', 'mfcc_2_mean']
    >>> bool(np.isnan(X[1]).all())
    True
    """

    _skfusion_items_are_paths = True  # a str item is a file path; its content identifies it

    _parameter_constraints: dict = {
        "features": [list, tuple],
        "stats": [list, tuple],
        "sr": [Interval(Integral, 1, None, closed="left")],
        "input_sr": [Interval(Real, 0, None, closed="neither"), None],
        "duration": [Interval(Real, 0, None, closed="neither"), None],
        "duration_policy": [StrOptions({"pad_crop", "pad", "crop"})],
        "n_mfcc": [Interval(Integral, 1, None, closed="left")],
        "mfcc_deltas": [Interval(Integral, 0, 2, closed="both")],
        "n_mels": [Interval(Integral, 1, None, closed="left")],
        "n_fft": [Interval(Integral, 16, None, closed="left")],
        "hop_length": [Interval(Integral, 1, None, closed="left")],
        "res_type": [str],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "n_jobs": [Integral, None],
        "on_error": [StrOptions({"raise", "missing"})],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        features=("mfcc",),
        stats=("mean", "std"),
        *,
        sr=22050,
        input_sr=None,
        duration=None,
        duration_policy="pad_crop",
        n_mfcc=20,
        mfcc_deltas=0,
        n_mels=128,
        n_fft=2048,
        hop_length=512,
        res_type="soxr_hq",
        batch_size=1024,
        n_jobs=None,
        on_error="raise",
        verbose=0,
    ):
        self.features = features
        self.stats = stats
        self.sr = sr
        self.input_sr = input_sr
        self.duration = duration
        self.duration_policy = duration_policy
        self.n_mfcc = n_mfcc
        self.mfcc_deltas = mfcc_deltas
        self.n_mels = n_mels
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.res_type = res_type
        self.batch_size = batch_size
        self.n_jobs = n_jobs
        self.on_error = on_error
        self.verbose = verbose

    # ------------------------------------------------------------------ layout
    def _config(self):
        return FeatureConfig.of(self)

    def _validate_more(self):
        check_features(self.features)
        check_stats(self.stats)
        if "contrast" in self.features and contrast_bands(self.sr) == 0:
            raise ValueError(
                f"'contrast' needs sr > {2 * CONTRAST_FMIN:.0f} Hz (octave bands above "
                f"{CONTRAST_FMIN:.0f} Hz); got sr={self.sr}."
            )

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Check the parameters and the items' types; nothing is learnt from X.

        Files are not decoded here: bad files are reported by :meth:`transform`.

        Parameters
        ----------
        X : array-like of shape (n_samples,)
            Clips (paths, bytes, arrays or ``(samples, sr)`` tuples).
        y : None
            Ignored.

        Returns
        -------
        self : AudioEncoder
            The fitted encoder.
        """
        self._validate_more()
        self._column(X)
        self.frame_feature_names_ = np.asarray(self._config().frame_names(), dtype=object)
        self.n_features_out_ = len(self.frame_feature_names_) * len(self.stats)
        return self

    def _check_item(self, value):
        return check_item(value)

    # ------------------------------------------------------------------ decoding
    def _decode_all(self, items, bar):
        """Decode items in blocks; yields (positions in ``items``, list of clips).

        A clip is float32 samples, or a :class:`LongClip` handle for a long one (streamed
        later, block by block). ``bar`` counts the items decoded.
        """
        target_len = None if self.duration is None else int(round(self.duration * self.sr))
        args = (
            self.sr,
            self.input_sr,
            self.res_type,
            target_len,
            self.duration_policy in ("pad_crop", "crop"),
            self.duration_policy in ("pad_crop", "pad"),
        )
        parallel = Parallel(n_jobs=self.n_jobs, prefer="threads")
        # a batch ends at ``batch_size`` clips or once its decoded clips hold
        # ``_BATCH_SAMPLES`` samples, whichever comes first: 1,024 clips of 90 s would
        # otherwise be 8 GB of float32 at once. Items are decoded a few at a time so that the
        # check runs before the next clip is read; a clip's features do not depend on its batch.
        step = min(self.batch_size, _DECODE_STEP)
        keep, clips, held = [], [], 0
        for start in range(0, len(items), step):
            block = items[start : start + step]
            if self.n_jobs in (None, 1):
                results = [decode_safe(item, *args) for item in block]
            else:
                results = parallel(delayed(decode_safe)(item, *args) for item in block)
            for row, (ok, result) in enumerate(results, start):
                if ok:
                    keep.append(row)
                    clips.append(result)
                    # a long clip is a handle that streams its samples later: it holds none
                    held += 0 if isinstance(result, LongClip) else result.shape[0]
                    if len(clips) == self.batch_size or held >= _BATCH_SAMPLES:
                        yield np.asarray(keep, dtype=np.intp), clips
                        keep, clips, held = [], [], 0
                elif self.on_error == "raise":
                    raise_encoding_error(self, row, None, str(result), items[row])
            bar.update(len(block))
        if clips:
            yield np.asarray(keep, dtype=np.intp), clips

    # ------------------------------------------------------------------ features
    def _frame_features(self, clips):
        """Per clip, its (n_frame_features, n_frames) float64 frame matrix."""
        cfg = self._config()
        out = [None] * len(clips)
        short = [i for i, c in enumerate(clips) if not isinstance(c, LongClip)]
        for i, mat in zip(short, frame_features([clips[i] for i in short], cfg)):
            out[i] = mat
        for i, clip in enumerate(clips):
            if isinstance(clip, LongClip):
                out[i] = np.concatenate(list(long_frame_blocks(clip, cfg)), axis=1)
        return out

    def _pooled(self, clips):
        """(n_clips, n_features_out_) float32 pooled features."""
        cfg = self._config()
        out = [None] * len(clips)
        short = [i for i, c in enumerate(clips) if not isinstance(c, LongClip)]
        for i, mat in zip(short, frame_features([clips[i] for i in short], cfg)):
            out[i] = pool(mat, cfg)
        for i, clip in enumerate(clips):
            if isinstance(clip, LongClip):
                out[i] = pool_long(clip, cfg)
        return np.stack(out)

    # ------------------------------------------------------------------ template hooks
    def _encode_items(self, items, bar):
        out = np.full((len(items), self.n_features_out_), np.nan, dtype=np.float32)
        for rows, clips in self._decode_all(items, bar):
            out[rows] = self._pooled(clips)
        return out

    def _encode_item_sequences(self, items, bar):
        sequences = [None] * len(items)  # None: a clip that failed to decode (on_error)
        for rows, clips in self._decode_all(items, bar):
            for row, mat in zip(rows, self._frame_features(clips)):
                sequences[row] = mat.T
        return sequences

    def _empty_sequence_shape(self):
        return 1, len(self.frame_feature_names_)

    # ------------------------------------------------------------------ public API
    def transform_sequence(self, X):
        """Frame-level features of each clip, padded to the longest clip, and their mask.

        Parameters
        ----------
        X : array-like of shape (n_samples,)
            Clips.

        Returns
        -------
        values : ndarray of shape (n_samples, T, n_frame_features), dtype float32
            Per-frame features (named by ``frame_feature_names_``); padding frames are 0 and
            missing rows are NaN.
        mask : ndarray of shape (n_samples, T), dtype bool
            True for real frames; all False for a missing row.
        """
        self._check_fitted()
        return self._encode_column_sequences(X)

    def get_feature_names_out(self, input_features=None):
        """Return the output names, like ``"mfcc_3_mean"``, ``"zcr_std"``, ``"logmel_10_p90"``.

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Ignored.

        Returns
        -------
        feature_names_out : ndarray of str objects
            One name per output column.
        """
        check_is_fitted(self)
        return np.asarray(self._config().pooled_names(), dtype=object)

    def _skfusion_fingerprint(self):
        """A digest identifying this encoder's output, for the embedding cache."""
        try:
            version = metadata.version("librosa")
        except metadata.PackageNotFoundError:  # pragma: no cover
            version = "unknown"
        # v2: features computed per clip in float64 (v1 rows differ in float32 rounding)
        extra = ("v2", f"librosa={version}", tuple(self.features), tuple(self.stats))
        return estimator_fingerprint(
            self,
            ignore=("features", "stats", "batch_size", "n_jobs", "on_error", "verbose"),
            extra=extra,
        )
