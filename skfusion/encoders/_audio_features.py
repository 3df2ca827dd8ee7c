"""AudioEncoder's features: frame-level librosa features of clips, pooled over each clip.

Short clips are stacked for one STFT call (:func:`frame_features`); a long clip (an
:class:`~skfusion.encoders._audio_io.LongClip`) is featurised in blocks of frames
(:func:`long_frame_blocks`) and pooled with merged running statistics
(:func:`pool_long`), so its memory does not grow with its length. Both give the same features.
"""

# SPDX-License-Identifier: BSD-3-Clause

import functools
import re
from dataclasses import dataclass

import numpy as np
from scipy import fft as scipy_fft
from scipy import sparse

from ._audio_io import librosa_module

__all__ = [
    "FEATURES",
    "FeatureConfig",
    "check_features",
    "check_stats",
    "contrast_bands",
    "frame_features",
    "long_frame_blocks",
    "pool",
    "pool_long",
]

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
CONTRAST_FMIN = 200.0
_SAMPLE_BUDGET = 1 << 22  # samples per stacked STFT chunk (~16 MB of float32 audio)
# STFT bins per block of a long clip (frames x (n_fft // 2 + 1)): 1M bins are 8 MB of
# complex64, about 1,000 frames at n_fft=2048. Private knob: tests lower it.
_BLOCK_BINS = 1 << 20
_MIN_BLOCK_FRAMES = 16  # a block, its last one (>= 8 frames) too, plus context spans 9 frames
_DELTA_WIDTH = 9


def contrast_bands(sr):
    """Octave bands above 200 Hz that fit under Nyquist (librosa's limit), at most 6."""
    n = 0
    while n < 6 and CONTRAST_FMIN * 2.0**n < sr / 2:
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
    librosa = librosa_module()
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


@functools.lru_cache(maxsize=16)
def _contrast_band_masks(sr, n_fft, n_bands):
    """The FFT bins of each octave band of the spectral contrast, as librosa chooses them.

    Band k spans ``[200 * 2**(k-1), 200 * 2**k]`` Hz (band 0 starts at 0 Hz) plus the bin
    just below it; the top band runs to Nyquist; every band but the top drops its last bin.
    """
    freq = librosa_module().fft_frequencies(sr=sr, n_fft=n_fft)
    edges = np.zeros(n_bands + 2)
    edges[1:] = CONTRAST_FMIN * 2.0 ** np.arange(n_bands + 1)
    bands = []
    for k in range(n_bands + 1):
        band = (freq >= edges[k]) & (freq <= edges[k + 1])
        idx = np.flatnonzero(band)
        if k > 0:
            band[idx[0] - 1] = True
        if k == n_bands:
            band[idx[-1] + 1 :] = True
        rows = np.flatnonzero(band)
        rows.flags.writeable = False
        bands.append((rows if k == n_bands else rows[:-1], int(band.sum())))
    return tuple(bands)


def _contrast_levels(mag, cfg):
    """Per octave band and frame, the mean of its highest and of its lowest 2% magnitudes.

    ``librosa.feature.spectral_contrast`` (quantile 0.02, at least one bin) before its dB
    step, which this module applies with a floor at the clip's peak (``_contrast_db``): the
    peak of the whole clip, which for a long clip is found by a first pass over its blocks.
    """
    bands = _contrast_band_masks(cfg.sr, cfg.n_fft, contrast_bands(cfg.sr))
    high = np.zeros((len(bands), mag.shape[1]))
    low = np.zeros_like(high)
    for k, (rows, n_bins) in enumerate(bands):
        n_q = max(int(np.rint(0.02 * n_bins)), 1)
        ordered = np.sort(mag[rows], axis=0)
        low[k] = np.mean(ordered[:n_q], axis=0)
        high[k] = np.mean(ordered[-n_q:], axis=0)
    return _to_db(high), _to_db(low)


def _to_db(values):
    """``librosa.power_to_db`` (reference 1, floor 1e-10) before its 80 dB clip."""
    return 10.0 * np.log10(np.maximum(1e-10, values))


def _contrast_db(high_db, low_db, peaks):
    """Spectral contrast in dB: each level clipped at 80 dB under its clip-wide peak."""
    high_peak, low_peak = (high_db.max(), low_db.max()) if peaks is None else peaks
    return np.maximum(high_db, high_peak - 80.0) - np.maximum(low_db, low_peak - 80.0)


def check_stats(stats):
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


def check_features(features):
    if isinstance(features, str) or len(features) == 0:
        raise ValueError(f"features must be a non-empty list of feature names; got {features!r}.")
    for f in features:
        if f not in FEATURES:
            raise ValueError(f"Unknown feature {f!r}; choose among {list(FEATURES)}.")
    if len(set(features)) != len(features):
        raise ValueError(f"features has duplicates: {features!r}.")


@dataclass(frozen=True)
class FeatureConfig:
    """The parameters of :class:`~skfusion.encoders.AudioEncoder` that shape its features."""

    features: tuple
    stats: tuple
    sr: int
    n_fft: int
    hop_length: int
    n_mels: int
    n_mfcc: int
    mfcc_deltas: int

    @classmethod
    def of(cls, encoder):
        return cls(
            tuple(encoder.features), tuple(encoder.stats), encoder.sr, encoder.n_fft,
            encoder.hop_length, encoder.n_mels, encoder.n_mfcc, encoder.mfcc_deltas,
        )  # fmt: skip

    def blocks(self):
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
                blocks.append(("contrast", contrast_bands(self.sr) + 1))
            else:
                blocks.append((name, 1))
        return blocks

    def frame_names(self):
        return [
            name if rows == 1 else f"{name}_{j}"
            for name, rows in self.blocks()
            for j in range(rows)
        ]

    def pooled_names(self):
        names = []
        for name, rows in self.blocks():
            for stat in self.stats:
                names.extend(
                    f"{name}_{stat}" if rows == 1 else f"{name}_{j}_{stat}" for j in range(rows)
                )
        return names


# --------------------------------------------------------------------------- short clips
def frame_features(clips, cfg):
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
        for i, mat in zip(chunk, _chunk_features([clips[i] for i in chunk], cfg)):
            out[i] = mat
        start = stop
    return out


def _chunk_features(clips, cfg):
    """Per clip, the (n_frame_features, n_frames) float64 matrix of its own frames.

    Only the STFT runs on the clips stacked into one zero-padded (n, samples) array: each
    STFT column is the FFT of one frame's samples, whatever else is in the stack (the
    padding a longer batch mate adds lies beyond the clip's last frame). Everything after
    it runs per clip, on exactly that clip's frames and in float64: BLAS products on the
    stack, as librosa does them, round in float32 by an order that depends on the matrix
    shape (the batch mates, the batch size) and on the BLAS thread count.
    """
    librosa = librosa_module()
    n = len(clips)
    lengths = np.array([c.shape[0] for c in clips])
    frames = 1 + lengths // cfg.hop_length
    stft = None
    if set(cfg.features) & _NEEDS_STFT:
        batch = np.zeros((n, lengths.max()), dtype=np.float32)
        for i, c in enumerate(clips):
            batch[i, : c.shape[0]] = c
        # librosa takes the FFT of float64 frames and stores it as complex64
        stft = librosa.stft(
            batch, n_fft=cfg.n_fft, hop_length=cfg.hop_length, center=True,
            pad_mode="constant",
        )  # fmt: skip
        del batch
    mats = []
    for i in range(n):
        spec = None if stft is None else stft[i, :, : frames[i]]
        mat = _clip_features(clips[i], spec, cfg, librosa)
        mats.append(_with_deltas(mat, cfg, librosa, frames[i]))
    return mats


def _power(spec):
    z = spec.astype(np.complex128)
    return z.real**2 + z.imag**2  # float32 parts: the squares are exact in float64


def _log_mel(power, cfg):
    mel = _filter_bank("mel", cfg.sr, cfg.n_fft, cfg.n_mels) @ power
    return 10.0 * np.log10(np.maximum(mel, 1e-10))


def _clip_features(y, spec, cfg, librosa, *, padded=False, peaks=None):
    """The (n_frame_features, n_frames) float64 matrix of one clip or one block, no deltas.

    ``spec`` is the complex64 STFT of exactly these frames, or None when no feature needs
    it. ``y`` is the clip's samples, or with ``padded=True`` a block's window: the samples of
    its frames, already zero-padded by ``n_fft // 2`` where they fall outside the clip.
    ``peaks`` holds the clip-wide maxima the dB floors are set from (see :func:`_peaks`);
    None computes them from these frames (a whole clip).
    """
    sr, n_fft, hop = cfg.sr, cfg.n_fft, cfg.hop_length
    feats = set(cfg.features)
    computed = {}
    if spec is not None:
        power = _power(spec)
        mag = np.sqrt(power)
    if feats & {"mfcc", "logmel"}:
        log_mel = _log_mel(power, cfg)
        # librosa.power_to_db(top_db=80) with the clip's own peak as the floor's reference
        log_mel = np.maximum(log_mel, (log_mel.max() if peaks is None else peaks["mel"]) - 80.0)
        computed["logmel"] = log_mel
        if "mfcc" in feats:
            mfcc = scipy_fft.dct(log_mel, axis=0, type=2, norm="ortho")[: cfg.n_mfcc]
            computed["mfcc"] = mfcc
    if "chroma" in feats:
        # librosa.feature.chroma_stft: filter bank, then each frame scaled to max 1
        raw = _filter_bank("chroma", sr, n_fft, 12) @ power
        computed["chroma"] = librosa.util.normalize(raw, norm=np.inf, axis=0)
    if "contrast" in feats:
        # librosa.feature.spectral_contrast, with the dB floor at the clip's peaks
        computed["contrast"] = _contrast_db(
            *_contrast_levels(mag, cfg), None if peaks is None else peaks["contrast"]
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
        y = y.astype(np.float64)
    if "rms" in feats:
        computed["rms"] = librosa.feature.rms(
            y=y, frame_length=n_fft, hop_length=hop, center=not padded, pad_mode="constant"
        )
    if "zcr" in feats:
        # frames centred on zero-padded audio like the STFT's (librosa's own centring
        # repeats the edge samples)
        computed["zcr"] = librosa.feature.zero_crossing_rate(
            y if padded else np.pad(y, n_fft // 2), frame_length=n_fft, hop_length=hop,
            center=False,
        )  # fmt: skip
    return np.concatenate(
        [np.asarray(computed[name], dtype=np.float64) for name in cfg.features], axis=0
    )


def _delta_width(n_frames):
    """The deltas' window: 9 frames, or the longest odd width a short clip allows."""
    return min(_DELTA_WIDTH, n_frames if n_frames % 2 else n_frames - 1)


def _with_deltas(mat, cfg, librosa, n_frames):
    """``mat`` with the MFCC deltas inserted after the MFCCs (in ``cfg.blocks()`` order).

    ``n_frames`` is the clip's frame count (which sets the window); ``mat`` may hold a
    block of it with enough context frames on each side.
    """
    if cfg.mfcc_deltas == 0 or "mfcc" not in cfg.features:
        return mat
    rows = {name: rows for name, rows in cfg.blocks()}
    offset = 0
    parts = []
    for name in cfg.features:
        size = cfg.n_mfcc if name == "mfcc" else rows[name]
        block = mat[offset : offset + size]
        offset += size
        parts.append(block)
        if name == "mfcc":
            width = _delta_width(n_frames)
            for order in range(1, cfg.mfcc_deltas + 1):
                if width < 3:
                    parts.append(np.zeros_like(block))
                else:
                    parts.append(
                        librosa.feature.delta(block, width=width, order=order, mode="interp")
                    )
    return np.concatenate(parts, axis=0)


def pool(mat, cfg):
    """Pool a clip's float64 frame matrix; cast to float32 only at the end."""
    parts = []
    offset = 0
    for _, rows in cfg.blocks():
        block = mat[offset : offset + rows]
        offset += rows
        for stat in cfg.stats:
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


# --------------------------------------------------------------------------- long clips
class _Window:
    """Samples ``[lo, hi)`` of a streamed clip, zero outside ``[0, length)``.

    Successive calls must not move ``lo`` backwards: what lies before it is dropped, so the
    buffer holds about one block.
    """

    def __init__(self, clip):
        self._blocks = clip.blocks()
        self._length = clip.length
        self._buffer = np.zeros(0, dtype=np.float32)
        self._start = 0  # clip index of self._buffer[0]

    def get(self, lo, hi):
        keep_from = min(max(lo, 0), self._length)
        self._buffer = self._buffer[keep_from - self._start :]
        self._start = keep_from
        want = min(hi, self._length)
        pieces = [self._buffer]
        have = self._start + self._buffer.shape[0]
        while have < want:
            block = next(self._blocks)
            pieces.append(block)
            have += block.shape[0]
        if len(pieces) > 1:
            self._buffer = np.concatenate(pieces)
        out = np.zeros(hi - lo, dtype=np.float32)
        first, last = max(lo, 0), min(hi, self._length)
        if last > first:
            out[first - lo : last - lo] = self._buffer[first - self._start : last - self._start]
        return out

    def close(self):
        self._blocks.close()


def block_frames(cfg):
    """Frames per block of a long clip: ``_BLOCK_BINS`` STFT bins, at least 16 frames."""
    return max(_MIN_BLOCK_FRAMES, _BLOCK_BINS // (cfg.n_fft // 2 + 1))


def _frame_ranges(n_frames, size):
    """[(t0, t1)] blocks of ``size`` frames; the last one takes a remainder under size / 2."""
    ranges, t0 = [], 0
    while t0 < n_frames:
        t1 = n_frames if n_frames - t0 < size + size // 2 else t0 + size
        ranges.append((t0, t1))
        t0 = t1
    return ranges


def _stft_frames(window, cfg, librosa):
    # the window holds exactly its frames' samples (zero-padded like center=True's padding)
    return librosa.stft(window, n_fft=cfg.n_fft, hop_length=cfg.hop_length, center=False)


def long_frame_blocks(clip, cfg):
    """Yield the frame features of a :class:`LongClip`, block by block of frames.

    Each yielded (n_frame_features, frames) float64 matrix equals the matching columns of
    the whole-clip computation: a frame's STFT, filter banks, spectral shape, RMS and
    zero-crossing rate depend on that frame's samples alone (the window of frames
    ``[t0, t1)`` is the samples ``[t0 * hop - n_fft // 2, (t1 - 1) * hop + n_fft - n_fft // 2)``,
    zero outside the clip, as ``center=True`` pads them); the dB floor needs the clip's
    log-mel peak, found by a first pass over the clip; the MFCC deltas (a 9-frame
    Savitzky-Golay filter) are computed on the block plus 4 frames of context on each side,
    and at the clip's ends on at least 9 frames, which is what the whole-clip filter reads.
    """
    librosa = librosa_module()
    hop, n_fft = cfg.hop_length, cfg.n_fft
    n_frames = 1 + clip.length // hop
    width = _delta_width(n_frames)
    context = width // 2 if cfg.mfcc_deltas and "mfcc" in cfg.features and width >= 3 else 0
    ranges = _frame_ranges(n_frames, block_frames(cfg))
    needs_stft = bool(set(cfg.features) & _NEEDS_STFT)

    def windows(pad):
        window = _Window(clip)
        try:
            for t0, t1 in ranges:
                a, b = max(0, t0 - pad), min(n_frames, t1 + pad)
                lo = a * hop - n_fft // 2
                yield t0, t1, a, b, window.get(lo, lo + (b - a - 1) * hop + n_fft)
        finally:
            window.close()

    peaks = None
    if set(cfg.features) & {"mfcc", "logmel", "contrast"}:
        peaks = _peaks((_stft_frames(y, cfg, librosa) for *_, y in windows(0)), cfg)
    for t0, t1, a, b, y in windows(context):
        spec = _stft_frames(y, cfg, librosa) if needs_stft else None
        mat = _clip_features(y, spec, cfg, librosa, padded=True, peaks=peaks)
        mat = _with_deltas(mat, cfg, librosa, n_frames)
        yield mat[:, t0 - a : t1 - a]


def _peaks(spectra, cfg):
    """The clip-wide maxima that set the dB floors, over the STFT blocks of a clip."""
    mel, high, low = -np.inf, -np.inf, -np.inf
    for spec in spectra:
        power = _power(spec)
        if set(cfg.features) & {"mfcc", "logmel"}:
            mel = max(mel, float(_log_mel(power, cfg).max()))
        if "contrast" in cfg.features:
            high_db, low_db = _contrast_levels(np.sqrt(power), cfg)
            high, low = max(high, float(high_db.max())), max(low, float(low_db.max()))
    return {"mel": mel, "contrast": (high, low)}


class _RunningPool:
    """Statistics of frame features merged block by block, in float64.

    Mean and standard deviation are merged with Chan, Golub and LeVeque's pairwise update
    (each block's mean and sum of squared deviations about it, combined exactly as the
    two-pass formula over the concatenated frames would be, without its cancellation); min
    and max are running extremes. Medians and percentiles need every value: the blocks are
    kept (n_frame_features x 8 bytes per frame, small next to the audio and its spectrum).
    """

    def __init__(self, cfg):
        self.cfg = cfg
        self.keep = any(s not in ("mean", "std", "min", "max") for s in cfg.stats)
        self.kept = []
        self.n = 0
        self.mean = self.m2 = self.min = self.max = None

    def add(self, mat):
        n_b = mat.shape[1]
        if n_b == 0:
            return
        mean_b = mat.mean(axis=1)
        m2_b = np.square(mat - mean_b[:, None]).sum(axis=1)
        if self.n == 0:
            self.mean, self.m2 = mean_b, m2_b
            self.min, self.max = mat.min(axis=1), mat.max(axis=1)
        else:
            total = self.n + n_b
            delta = mean_b - self.mean
            self.mean = self.mean + delta * (n_b / total)
            self.m2 = self.m2 + m2_b + np.square(delta) * (self.n * n_b / total)
            self.min = np.minimum(self.min, mat.min(axis=1))
            self.max = np.maximum(self.max, mat.max(axis=1))
        self.n += n_b
        if self.keep:
            self.kept.append(mat)

    def result(self):
        whole = np.concatenate(self.kept, axis=1) if self.keep else None
        parts = []
        offset = 0
        for _, rows in self.cfg.blocks():
            sl = slice(offset, offset + rows)
            offset += rows
            for stat in self.cfg.stats:
                if stat == "mean":
                    parts.append(self.mean[sl])
                elif stat == "std":
                    parts.append(np.sqrt(self.m2[sl] / self.n))
                elif stat == "min":
                    parts.append(self.min[sl])
                elif stat == "max":
                    parts.append(self.max[sl])
                elif stat == "median":
                    parts.append(np.median(whole[sl], axis=1))
                else:
                    parts.append(np.percentile(whole[sl], float(stat[1:]), axis=1))
        return np.concatenate(parts).astype(np.float32)


def pool_long(clip, cfg):
    """The pooled features of a :class:`LongClip`, as :func:`pool` gives them for a short one."""
    running = _RunningPool(cfg)
    for mat in long_frame_blocks(clip, cfg):
        running.add(mat)
    return running.result()
