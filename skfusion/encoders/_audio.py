"""AudioEncoder: per-clip audio features (MFCC, log-mel, chroma, ...) computed with librosa."""

# SPDX-License-Identifier: BSD-3-Clause

import functools
import io
import os
import re
from importlib import metadata
from numbers import Integral, Real

import numpy as np
from scipy import fft as scipy_fft
from scipy import sparse
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.parallel import Parallel, delayed
from sklearn.utils.validation import check_is_fitted

from .._utils import import_optional_dependency
from ..runtime import estimator_fingerprint
from ._base import (
    RawItemEncoderMixin,
    pad_sequences,
    column_values,
    raise_encoding_error,
    scatter,
    split_missing,
)

__all__ = ["AudioEncoder"]

FEATURES = (
    "mfcc",
    "logmel",
    "chroma",
    "contrast",
    "centroid",
    "bandwidth",
    "rolloff",
    "flatness",
    "zcr",
    "rms",
)
_SPECTRAL = {"centroid", "bandwidth", "rolloff", "flatness"}
_NEEDS_STFT = {"mfcc", "logmel", "chroma", "contrast"} | _SPECTRAL
_PLAIN_STATS = {"mean", "std", "min", "max", "median"}
_PERCENTILE = re.compile(r"^p(100|[0-9]{1,2})$")
_CONTRAST_FMIN = 200.0
_SAMPLE_BUDGET = 1 << 22  # samples per stacked STFT chunk (~16 MB of float32 audio)
_PATH_TYPES = (str, os.PathLike)


def _librosa():
    return import_optional_dependency("librosa", purpose="AudioEncoder")


def _soundfile():
    return import_optional_dependency("soundfile", purpose="AudioEncoder")


def _contrast_bands(sr):
    """Octave bands above 200 Hz that fit under Nyquist (librosa's limit), at most 6."""
    n = 0
    while n < 6 and _CONTRAST_FMIN * 2.0**n < sr / 2:
        n += 1
    return n


@functools.lru_cache(maxsize=16)
def _filter_bank(kind, sr, n_fft, n_bands):
    """librosa's mel or chroma filter bank, in float64, as a read-only CSR matrix.

    A sparse product ``bank @ power`` accumulates each output in the fixed order of the
    matrix's stored entries, in plain C++ (no BLAS: no threads, no kernel chosen by the
    matrix shape or the CPU), so each frame's value depends on that frame alone. It is also
    cheaper than a dense product: the 128 x 1025 mel bank holds about 2,000 non-zeros.
    """
    librosa = _librosa()
    if kind == "mel":
        bank = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_bands, dtype=np.float64)
    else:
        bank = librosa.filters.chroma(
            sr=sr, n_fft=n_fft, tuning=0.0, n_chroma=n_bands, dtype=np.float64
        )
    bank = sparse.csr_array(bank)
    for part in (bank.data, bank.indices, bank.indptr):
        part.flags.writeable = False  # shared between calls and threads
    return bank


def _check_stats(stats):
    if isinstance(stats, str) or len(stats) == 0:
        raise ValueError(f"stats must be a non-empty list of statistic names; got {stats!r}.")
    for s in stats:
        if not isinstance(s, str) or not (s in _PLAIN_STATS or _PERCENTILE.match(s)):
            raise ValueError(
                f"Unknown statistic {s!r} in stats; use 'mean', 'std', 'min', 'max', 'median' "
                "or a percentile 'p0' ... 'p100' (e.g. 'p10')."
            )
    if len(set(stats)) != len(stats):
        raise ValueError(f"stats has duplicates: {stats!r}.")


def _check_features(features):
    if isinstance(features, str) or len(features) == 0:
        raise ValueError(f"features must be a non-empty list of feature names; got {features!r}.")
    for f in features:
        if f not in FEATURES:
            raise ValueError(f"Unknown feature {f!r}; choose among {list(FEATURES)}.")
    if len(set(features)) != len(features):
        raise ValueError(f"features has duplicates: {features!r}.")


# --------------------------------------------------------------------------- decoding
def _check_item(value):
    """Cheap type check of one raw item; decoding happens later (in parallel)."""
    if isinstance(value, np.str_):
        value = str(value)
    if isinstance(value, _PATH_TYPES):
        path = os.fspath(value)
        if not os.path.isfile(path):
            raise ValueError("no such audio file")
        return path
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, tuple):
        if len(value) != 2:
            raise ValueError("a tuple must be (samples, sample_rate)")
        samples, rate = value
        if isinstance(rate, bool) or not isinstance(rate, Real) or not rate > 0:
            raise ValueError(f"sample rate must be a positive number, got {rate!r}")
        return (_check_samples(samples), float(rate))
    if isinstance(value, np.ndarray):
        return _check_samples(value)
    raise TypeError(
        f"expected a file path, bytes, a 1-D array of samples or a (samples, sr) tuple; got "
        f"{type(value).__name__}"
    )


def _check_samples(samples):
    if not isinstance(samples, np.ndarray):
        raise TypeError(f"samples must be a numpy array, got {type(samples).__name__}")
    if samples.dtype.kind not in "fiu":
        raise ValueError(
            f"samples must be numeric (float or integer PCM), got dtype {samples.dtype}"
        )
    if samples.ndim not in (1, 2):
        raise ValueError(
            f"samples must be 1-D (mono) or 2-D (channels, samples), got {samples.ndim}-D"
        )
    if samples.ndim == 2 and samples.shape[0] > samples.shape[1]:
        raise ValueError(
            f"a 2-D array is read as (channels, samples) like librosa; shape {samples.shape} "
            "looks like (samples, channels): transpose it"
        )
    if samples.size == 0:
        raise ValueError("the clip has no samples")
    if samples.dtype.kind == "f" and not np.isfinite(samples).all():
        raise ValueError("the clip contains NaN or infinite samples")
    return samples


def _as_float_mono(samples):
    """float32 mono samples; integer PCM is scaled to [-1, 1)."""
    if samples.dtype.kind in "iu":
        info = np.iinfo(samples.dtype)
        mid = (int(info.max) + int(info.min) + 1) / 2  # 0 for signed, 2**(bits-1) for unsigned
        samples = (samples.astype(np.float64) - mid) / (int(info.max) + 1 - mid)
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 2:
        samples = samples.mean(axis=0)
    return samples


def _truncation(sf_file):
    """A message when the header promises more audio than the file holds, else None."""
    declared = sf_file.frames
    log = sf_file.extra_info or ""
    match = re.search(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", log, flags=re.MULTILINE)
    if match:
        said, real = int(match.group(1)), int(match.group(2))
        block = max(1, sf_file.channels * 2)
        # 0 / 0x7fffffff / 0xffffffff are "length unknown" markers of streamed WAV files
        if 0 < said < 0x7FFFFFFF and said - real >= block:
            return f"truncated file: the header declares {said} data bytes, the file holds {real}"
    return None if declared >= 0 else "invalid frame count"


def _read(source):
    """Decode a path or bytes with soundfile into (float32 (channels, samples), sr)."""
    sf = _soundfile()
    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with sf.SoundFile(handle) as f:
            problem = _truncation(f)
            declared = f.frames
            # MP3 lengths are estimates (encoder delay, VBR): allow one MPEG frame or 5%
            slack = max(1152, declared // 20) if f.format in ("MP3", "MPEG") else 0
            data = f.read(dtype="float32", always_2d=True)
            rate = f.samplerate
    except (sf.SoundFileError, RuntimeError, OSError) as exc:
        raise ValueError(f"cannot decode audio ({exc})") from None
    if problem is None and 0 < data.shape[0] < declared - slack:
        problem = (
            f"truncated file: the header declares {declared} frames, only {data.shape[0]} decode"
        )
    if problem:
        raise ValueError(problem)
    if data.shape[0] == 0:
        raise ValueError("the file holds no audio samples (0 frames)")
    if not np.isfinite(data).all():
        raise ValueError("the file contains NaN or infinite samples")
    return data.T, float(rate)


def _decode(item, sr, input_sr, res_type, target_len, crop, pad):
    """One item -> float32 mono samples at ``sr`` with the duration policy applied."""
    if isinstance(item, (str, bytes)):
        samples, rate = _read(item)
    elif isinstance(item, tuple):
        samples, rate = item
    else:
        samples, rate = item, float(sr if input_sr is None else input_sr)
    y = _as_float_mono(samples)
    if rate != sr:
        y = _librosa().resample(y, orig_sr=rate, target_sr=sr, res_type=res_type)
        y = np.asarray(y, dtype=np.float32)
    if target_len is not None:
        if crop and y.shape[0] > target_len:
            y = y[:target_len]
        if pad and y.shape[0] < target_len:
            y = np.pad(y, (0, target_len - y.shape[0]))
    if y.shape[0] == 0:
        raise ValueError("the clip has no samples after resampling")
    return np.ascontiguousarray(y)


def _decode_safe(item, *args):
    try:
        return True, _decode(item, *args)
    except (TypeError, ValueError) as exc:
        return False, str(exc)


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
        Clips decoded and featurised together (bounds memory).

    n_jobs : int or None, default=None
        Parallel jobs that decode and resample files (threads: decoding is I/O and native
        code). ``None`` means 1 unless in a :func:`joblib.parallel_config` context; -1 uses all
        processors. Features are computed on stacked arrays in the calling thread.

    on_error : {"raise", "missing"}, default="raise"
        What a bad item does: raise an error naming the row and value, or count as missing.

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

    # ------------------------------------------------------------------ layout
    def _blocks(self):
        """[(block name, rows)] of the per-frame features, in output order."""
        blocks = []
        for name in self.features:
            if name == "mfcc":
                blocks.append(("mfcc", self.n_mfcc))
                for k in range(1, self.mfcc_deltas + 1):
                    blocks.append(("mfcc_delta" if k == 1 else "mfcc_delta2", self.n_mfcc))
            elif name == "logmel":
                blocks.append(("logmel", self.n_mels))
            elif name == "chroma":
                blocks.append(("chroma", 12))
            elif name == "contrast":
                blocks.append(("contrast", _contrast_bands(self.sr) + 1))
            else:
                blocks.append((name, 1))
        return blocks

    def _frame_names(self):
        return [
            name if rows == 1 else f"{name}_{j}"
            for name, rows in self._blocks()
            for j in range(rows)
        ]

    def _pooled_names(self):
        names = []
        for name, rows in self._blocks():
            for stat in self.stats:
                names.extend(
                    f"{name}_{stat}" if rows == 1 else f"{name}_{j}_{stat}" for j in range(rows)
                )
        return names

    def _validate_more(self):
        _check_features(self.features)
        _check_stats(self.stats)
        if "contrast" in self.features and _contrast_bands(self.sr) == 0:
            raise ValueError(
                f"'contrast' needs sr > {2 * _CONTRAST_FMIN:.0f} Hz (octave bands above "
                f"{_CONTRAST_FMIN:.0f} Hz); got sr={self.sr}."
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
        self._split(X)
        self.frame_feature_names_ = np.asarray(self._frame_names(), dtype=object)
        self.n_features_out_ = len(self.frame_feature_names_) * len(self.stats)
        return self

    def _split(self, X):
        values, labels = column_values(X, type(self).__name__)
        present, items = split_missing(
            values, labels, _check_item, self.on_error, type(self).__name__
        )
        return values, labels, present, items

    # ------------------------------------------------------------------ decoding
    def _decode_all(self, values, labels, present, items):
        """Decode items in blocks; yields (present rows, list of float32 clips)."""
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
        for start in range(0, len(items), self.batch_size):
            block = items[start : start + self.batch_size]
            rows = present[start : start + self.batch_size]
            if self.n_jobs in (None, 1):
                results = [_decode_safe(item, *args) for item in block]
            else:
                results = parallel(delayed(_decode_safe)(item, *args) for item in block)
            keep, clips = [], []
            for row, item, (ok, result) in zip(rows, block, results):
                if ok:
                    keep.append(row)
                    clips.append(result)
                elif self.on_error == "raise":
                    raise_encoding_error(self, row, labels, str(result), values[row])
            yield np.asarray(keep, dtype=np.intp), clips

    # ------------------------------------------------------------------ features
    def _frame_features(self, clips):
        """Per clip, the (n_frame_features, n_frames) float64 matrix of its own frames.

        Clips are sorted by length and stacked in chunks of at most ``_SAMPLE_BUDGET`` samples
        for the STFT; which chunk a clip lands in does not change its features.
        """
        out = [None] * len(clips)
        order = np.argsort([c.shape[0] for c in clips], kind="stable")
        start = 0
        while start < len(order):
            stop = start + 1
            longest = clips[order[start]].shape[0]
            while stop < len(order):
                longest_next = max(longest, clips[order[stop]].shape[0])
                if longest_next * (stop - start + 1) > _SAMPLE_BUDGET:
                    break
                longest = longest_next
                stop += 1
            chunk = order[start:stop]
            for i, mat in zip(chunk, self._chunk_features([clips[i] for i in chunk])):
                out[i] = mat
            start = stop
        return out

    def _chunk_features(self, clips):
        """Per clip, the (n_frame_features, n_frames) float64 matrix of its own frames.

        Only the STFT runs on the clips stacked into one zero-padded (n, samples) array: each
        STFT column is the FFT of one frame's samples, whatever else is in the stack (the
        padding a longer batch mate adds lies beyond the clip's last frame). Everything after
        it runs per clip, on exactly that clip's frames and in float64: BLAS products on the
        stack, as librosa does them, round in float32 by an order that depends on the matrix
        shape (the batch mates, the batch size) and on the BLAS thread count.
        """
        librosa = _librosa()
        n = len(clips)
        lengths = np.array([c.shape[0] for c in clips])
        frames = 1 + lengths // self.hop_length
        stft = None
        if set(self.features) & _NEEDS_STFT:
            batch = np.zeros((n, lengths.max()), dtype=np.float32)
            for i, c in enumerate(clips):
                batch[i, : c.shape[0]] = c
            # librosa takes the FFT of float64 frames and stores it as complex64
            stft = librosa.stft(
                batch, n_fft=self.n_fft, hop_length=self.hop_length, center=True,
                pad_mode="constant",
            )  # fmt: skip
            del batch
        mats = []
        for i in range(n):
            spec = None if stft is None else stft[i, :, : frames[i]]
            mats.append(self._clip_features(clips[i], spec, librosa))
        return mats

    def _clip_features(self, clip, spec, librosa):
        """The (n_frame_features, n_frames) float64 matrix of one clip.

        ``spec`` is the clip's complex64 STFT (its own frames only), or None when no feature
        needs it.
        """
        sr, n_fft, hop = self.sr, self.n_fft, self.hop_length
        feats = set(self.features)
        computed = {}
        if spec is not None:
            z = spec.astype(np.complex128)
            power = z.real**2 + z.imag**2  # float32 parts: the squares are exact in float64
            del z
            mag = np.sqrt(power)
        if feats & {"mfcc", "logmel"}:
            mel = _filter_bank("mel", sr, n_fft, self.n_mels) @ power
            log_mel = 10.0 * np.log10(np.maximum(mel, 1e-10))
            # librosa.power_to_db(top_db=80) with the clip's own peak as the floor's reference
            log_mel = np.maximum(log_mel, log_mel.max() - 80.0)
            computed["logmel"] = log_mel
            if "mfcc" in feats:
                mfcc = scipy_fft.dct(log_mel, axis=0, type=2, norm="ortho")[: self.n_mfcc]
                computed["mfcc"] = mfcc
        if "chroma" in feats:
            # librosa.feature.chroma_stft: filter bank, then each frame scaled to max 1
            raw = _filter_bank("chroma", sr, n_fft, 12) @ power
            computed["chroma"] = librosa.util.normalize(raw, norm=np.inf, axis=0)
        if "contrast" in feats:
            computed["contrast"] = librosa.feature.spectral_contrast(
                S=mag, sr=sr, n_fft=n_fft, fmin=_CONTRAST_FMIN, n_bands=_contrast_bands(sr)
            )
        spectral = {
            "centroid": librosa.feature.spectral_centroid,
            "bandwidth": librosa.feature.spectral_bandwidth,
            "rolloff": librosa.feature.spectral_rolloff,
        }
        for name, func in spectral.items():
            if name in feats:
                computed[name] = func(S=mag, sr=sr, n_fft=n_fft)
        if "flatness" in feats:
            computed["flatness"] = librosa.feature.spectral_flatness(S=mag)
        if feats & {"rms", "zcr"}:
            y = clip.astype(np.float64)
        if "rms" in feats:
            computed["rms"] = librosa.feature.rms(
                y=y, frame_length=n_fft, hop_length=hop, center=True, pad_mode="constant"
            )
        if "zcr" in feats:
            # frames centred on zero-padded audio like the STFT's (librosa's own centring
            # repeats the edge samples)
            computed["zcr"] = librosa.feature.zero_crossing_rate(
                np.pad(y, n_fft // 2), frame_length=n_fft, hop_length=hop, center=False
            )
        parts = []
        for name in self.features:
            block = np.asarray(computed[name], dtype=np.float64)
            parts.append(block)
            if name == "mfcc":
                parts.extend(self._deltas(block, librosa))
        return np.concatenate(parts, axis=0)

    def _deltas(self, mfcc, librosa):
        if self.mfcc_deltas == 0:
            return []
        t = mfcc.shape[1]
        width = min(9, t if t % 2 else t - 1)
        out = []
        for order in range(1, self.mfcc_deltas + 1):
            if width < 3:
                out.append(np.zeros_like(mfcc))
            else:
                out.append(librosa.feature.delta(mfcc, width=width, order=order, mode="interp"))
        return out

    def _pool(self, mat):
        """Pool a clip's float64 frame matrix; cast to float32 only at the end."""
        parts = []
        offset = 0
        for _, rows in self._blocks():
            block = mat[offset : offset + rows]
            offset += rows
            for stat in self.stats:
                if stat == "mean":
                    parts.append(block.mean(axis=1))
                elif stat == "std":
                    parts.append(block.std(axis=1))
                elif stat == "min":
                    parts.append(block.min(axis=1))
                elif stat == "max":
                    parts.append(block.max(axis=1))
                elif stat == "median":
                    parts.append(np.median(block, axis=1))
                else:
                    parts.append(np.percentile(block, float(stat[1:]), axis=1))
        return np.concatenate(parts).astype(np.float32)

    # ------------------------------------------------------------------ public API
    def transform(self, X):
        """Pooled features of each clip; missing rows give NaN.

        Parameters
        ----------
        X : array-like of shape (n_samples,)
            Clips: a list, Series, 1-D object array or one-column DataFrame.

        Returns
        -------
        X_feat : ndarray of shape (n_samples, ``n_features_out_``), dtype float32
            The features, in the order of :meth:`get_feature_names_out`.
        """
        check_is_fitted(self)
        values, labels, present, items = self._split(X)
        out = scatter(len(values), np.empty(0, dtype=np.intp), None, self.n_features_out_)
        for rows, clips in self._decode_all(values, labels, present, items):
            if len(rows):
                out[rows] = np.stack([self._pool(m) for m in self._frame_features(clips)])
        return out

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
        check_is_fitted(self)
        values, labels, present, items = self._split(X)
        n, d = len(values), len(self.frame_feature_names_)
        pieces = [
            (row, mat.T)
            for rows, clips in self._decode_all(values, labels, present, items)
            for row, mat in zip(rows, self._frame_features(clips))
        ]
        return pad_sequences(n, pieces, d)

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
        return np.asarray(self._pooled_names(), dtype=object)

    def _skfusion_fingerprint(self):
        """A digest identifying this encoder's output, for the embedding cache."""
        try:
            version = metadata.version("librosa")
        except metadata.PackageNotFoundError:  # pragma: no cover
            version = "unknown"
        # v2: features computed per clip in float64 (v1 rows differ in float32 rounding)
        extra = ("v2", f"librosa={version}", tuple(self.features), tuple(self.stats))
        return estimator_fingerprint(
            self, ignore=("features", "stats", "batch_size", "n_jobs", "on_error"), extra=extra
        )
