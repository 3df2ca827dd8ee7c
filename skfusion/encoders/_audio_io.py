"""Decoding of AudioEncoder's items: files, bytes, arrays -> float32 mono samples at ``sr``.

A clip is decoded whole (:func:`decode`) unless it is long (more than ``_LONG_SAMPLES``
samples at ``sr``): then :func:`decode` returns a :class:`LongClip`, a re-readable handle that
streams the clip in blocks (soundfile block reads, soxr's streaming resampler), so that a long
recording is never held whole in memory. Its blocks concatenate to exactly the samples the
whole-clip path gives (soxr's stream and one-shot resamplers give the same samples).
"""

# SPDX-License-Identifier: BSD-3-Clause

import io
import os
import re
from numbers import Real

import numpy as np

from .._utils import import_optional_dependency

__all__ = ["LongClip", "check_item", "decode", "decode_safe"]

_PATH_TYPES = (str, os.PathLike)
# Clips longer than this (samples at the target rate; ~95 s at 22,050 Hz) are streamed in
# blocks instead of being decoded whole. Private knob: tests lower it.
_LONG_SAMPLES = 1 << 21
_READ_FRAMES = 1 << 16  # frames per soundfile block read / resampler call of a long clip


def librosa_module():
    return import_optional_dependency("librosa", purpose="AudioEncoder")


def _soundfile():
    return import_optional_dependency("soundfile", purpose="AudioEncoder")


def check_item(value):
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


def as_float_mono(samples):
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


def _read(source, too_long=None):
    """Decode a path or bytes with soundfile into (float32 (channels, samples), sr).

    ``too_long(rate, frames)``, when given, is asked first, from the header: when it says
    True, nothing is decoded and None is returned (the caller streams the file instead).
    """
    sf = _soundfile()
    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with sf.SoundFile(handle) as f:
            if too_long is not None and too_long(float(f.samplerate), int(f.frames)):
                return None
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


def _decode_whole(item, sr, input_sr, res_type, target_len, crop, pad):
    """One item -> float32 mono samples at ``sr`` with the duration policy applied."""
    if isinstance(item, (str, bytes)):
        samples, rate = _read(item)
    elif isinstance(item, tuple):
        samples, rate = item
    else:
        samples, rate = item, float(sr if input_sr is None else input_sr)
    return _finish(samples, rate, sr, res_type, target_len, crop, pad)


def _finish(samples, rate, sr, res_type, target_len, crop, pad):
    """Decoded samples -> float32 mono at ``sr`` with the duration policy applied."""
    y = as_float_mono(samples)
    if rate != sr:
        y = librosa_module().resample(y, orig_sr=rate, target_sr=sr, res_type=res_type)
        y = np.asarray(y, dtype=np.float32)
    if target_len is not None:
        if crop and y.shape[0] > target_len:
            y = y[:target_len]
        if pad and y.shape[0] < target_len:
            y = np.pad(y, (0, target_len - y.shape[0]))
    if y.shape[0] == 0:
        raise ValueError("the clip has no samples after resampling")
    return np.ascontiguousarray(y)


def decode_safe(item, *args):
    try:
        return True, decode(item, *args)
    except (TypeError, ValueError) as exc:
        return False, str(exc)


def _handle(source):
    return io.BytesIO(source) if isinstance(source, bytes) else source


def _scan(source):
    """Read a long file through once, in blocks, with :func:`_read`'s checks.

    Returns ``(sample rate, frames)``; a truncated, empty or non-finite file raises the
    ``ValueError`` that :func:`_read` raises for it.
    """
    sf = _soundfile()
    try:
        with sf.SoundFile(_handle(source)) as f:
            problem = _truncation(f)
            declared = f.frames
            slack = max(1152, declared // 20) if f.format in ("MP3", "MPEG") else 0
            rate = f.samplerate
            count, finite = 0, True
            for block in f.blocks(blocksize=_READ_FRAMES, dtype="float32", always_2d=True):
                count += block.shape[0]
                finite = finite and bool(np.isfinite(block).all())
    except (sf.SoundFileError, RuntimeError, OSError) as exc:
        raise ValueError(f"cannot decode audio ({exc})") from None
    if problem is None and 0 < count < declared - slack:
        problem = f"truncated file: the header declares {declared} frames, only {count} decode"
    if problem:
        raise ValueError(problem)
    if count == 0:
        raise ValueError("the file holds no audio samples (0 frames)")
    if not finite:
        raise ValueError("the file contains NaN or infinite samples")
    return float(rate), count


def _resampled_length(n_in, rate, sr):
    """Samples after ``librosa.resample`` (which fixes the length to ``ceil(n * ratio)``)."""
    return n_in if rate == sr else int(np.ceil(n_in * (float(sr) / rate)))


def _final_length(n, target_len, crop, pad):
    if target_len is not None:
        if crop and n > target_len:
            return target_len
        if pad and n < target_len:
            return target_len
    return n


def decode(item, sr, input_sr, res_type, target_len, crop, pad):
    """One item -> float32 mono samples at ``sr`` with the duration policy applied.

    A clip longer than ``_LONG_SAMPLES`` samples at ``sr`` gives a :class:`LongClip`
    instead, whose blocks concatenate to the samples this function would have returned.
    """

    def too_long(rate, n_in):
        length = _final_length(_resampled_length(n_in, rate, sr), target_len, crop, pad)
        return length > _LONG_SAMPLES

    if isinstance(item, (str, bytes)):
        read = _read(item, too_long)  # one open of the file: its header, then its samples
        if read is not None:
            return _finish(*read, sr, res_type, target_len, crop, pad)
    else:
        samples = item[0] if isinstance(item, tuple) else item
        rate = item[1] if isinstance(item, tuple) else float(sr if input_sr is None else input_sr)
        if not too_long(rate, samples.shape[-1]):
            return _finish(samples, rate, sr, res_type, target_len, crop, pad)
    if isinstance(item, (str, bytes)):
        rate, n_in = _scan(item)  # the checks of _read, block by block
        source = item
    else:
        source, n_in = samples, samples.shape[-1]
    if rate != sr and not res_type.startswith("soxr"):
        # only soxr resamples in a stream: decode whole, featurise in blocks
        whole = _decode_whole(item, sr, input_sr, res_type, target_len, crop, pad)
        return LongClip(whole, sr, whole.shape[0], sr, res_type, whole.shape[0])
    length = _final_length(_resampled_length(n_in, rate, sr), target_len, crop, pad)
    return LongClip(source, rate, n_in, sr, res_type, length)


class LongClip:
    """A clip too long to decode whole, streamed in float32 mono blocks at ``sr``.

    ``blocks()`` can be called any number of times (each call reads the source again); the
    blocks of one call concatenate to exactly ``length`` samples: the samples that
    :func:`decode` gives for a short clip (mixed down, resampled with soxr's streaming
    resampler, cut or padded to ``ceil(n * sr / rate)`` as ``librosa.resample`` does, then the
    duration policy).

    Parameters
    ----------
    source : str, bytes or ndarray
        A checked file path, the bytes of a file, or samples ``(samples,)`` or
        ``(channels, samples)`` at ``rate``.
    rate : float
        Sample rate of ``source``.
    n_in : int
        Frames of ``source``.
    sr : int
        Target sample rate.
    res_type : str
        A soxr quality (``"soxr_hq"``...), used when ``rate != sr``.
    length : int
        Samples after resampling and the duration policy.
    """

    def __init__(self, source, rate, n_in, sr, res_type, length):
        self.source = source
        self.rate = float(rate)
        self.n_in = int(n_in)
        self.sr = sr
        self.res_type = res_type
        self.length = int(length)

    def _raw_blocks(self):
        if isinstance(self.source, np.ndarray):
            for start in range(0, self.n_in, _READ_FRAMES):
                yield as_float_mono(self.source[..., start : start + _READ_FRAMES])
            return
        sf = _soundfile()
        with sf.SoundFile(_handle(self.source)) as f:
            for block in f.blocks(blocksize=_READ_FRAMES, dtype="float32", always_2d=True):
                yield as_float_mono(block.T)

    def _resampled_blocks(self):
        if self.rate == self.sr:
            yield from self._raw_blocks()
            return
        soxr = import_optional_dependency("soxr", purpose="AudioEncoder")
        stream = soxr.ResampleStream(
            self.rate, self.sr, 1, dtype="float32", quality=self.res_type
        )
        for block in self._raw_blocks():
            yield stream.resample_chunk(block, last=False)
        yield stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)

    def blocks(self):
        """Yield float32 blocks of the clip at ``sr``; together exactly ``length`` samples."""
        keep = min(_resampled_length(self.n_in, self.rate, self.sr), self.length)
        emitted = 0
        for block in self._resampled_blocks():
            block = np.asarray(block[: keep - emitted], dtype=np.float32)
            if block.shape[0]:
                yield block
                emitted += block.shape[0]
            if emitted >= keep:
                break
        if emitted < self.length:  # librosa's length fix, then the duration policy's padding
            yield np.zeros(self.length - emitted, dtype=np.float32)

    def __repr__(self):
        return f"LongClip({self.length} samples at {self.sr} Hz)"
