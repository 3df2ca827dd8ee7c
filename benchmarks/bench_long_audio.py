"""Peak memory of AudioEncoder on a 1-hour recording: streamed blocks against the whole file.

The script writes a 1-hour, 8 kHz, 16-bit mono WAV (a deterministic mix of gliding tones,
noise and silences) in a temporary folder, then encodes it in fresh processes:

* ``streamed``: ``AudioEncoder(sr=8000)`` (20 MFCC mean/std, at the file's rate: the setting
  of issue 14's 2.75 GB measurement; ``--sr 22050`` for the default, resampled with soxr).
  The clip is read (and resampled) in blocks and featurised block by block of frames;
* ``whole``: the same encoder with the long-clip threshold raised so that the clip is decoded,
  resampled and featurised whole (the path every clip took before; short clips still do);
* ``baseline``: the imports and a 1-second clip, for the memory every process pays anyway.

Each child reports its own peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) and saves
its features; the script prints one line with the peaks, their ratio, the time of each encode
and the largest difference between the two feature vectors, relative to each feature's
magnitude. ``--seconds`` shortens the clip (say so when quoting the figures);
``--skip-whole`` runs only the streamed encode (the whole-file path needs several GB at
22,050 Hz).

Run: ``.venv/bin/python benchmarks/bench_long_audio.py [--seconds 3600] [--sr 8000]
[--skip-whole]``
"""

# SPDX-License-Identifier: BSD-3-Clause

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import soundfile as sf

SR_FILE = 8000

_CHILD = r"""
import json, resource, sys, time
import numpy as np
from skfusion.encoders import AudioEncoder
from skfusion.encoders import _audio_io

mode, path, out, sr = sys.argv[1:5]
if mode == "whole":
    _audio_io._LONG_SAMPLES = 1 << 62  # every clip decoded and featurised whole
encoder = AudioEncoder(sr=int(sr))
if mode == "baseline":
    t = np.arange(8000) / 8000
    item = (np.sin(2 * np.pi * 440 * t).astype(np.float32), 8000)
else:
    item = path
encoder.fit([item])
encoder.transform([(np.zeros(800, np.float32), 8000)])  # imports and numba compiled first
start = time.perf_counter()
X = encoder.transform([item])
seconds = time.perf_counter() - start
np.save(out, X)
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
print(json.dumps({"peak_mb": peak_mb, "seconds": seconds}))
"""


def write_clip(path, seconds, block_seconds=60):
    """A deterministic speech-like test signal, written block by block (bounded memory)."""
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", SR_FILE, 1, subtype="PCM_16") as f:
        for start in range(0, seconds, block_seconds):
            n = min(block_seconds, seconds - start) * SR_FILE
            t = start + np.arange(n) / SR_FILE
            tone = 0.3 * np.sin(2 * np.pi * (300 + 200 * np.sin(2 * np.pi * 0.05 * t)) * t)
            y = tone + 0.02 * rng.standard_normal(n)
            y[(t % 17.0) < 1.5] = 0.0  # a silence every 17 s
            f.write(y.astype(np.float32))


def run_child(mode, path, out, sr):
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, mode, path, out, str(sr)], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"{mode} child failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=3600, help="clip length (default 1 h)")
    parser.add_argument("--sr", type=int, default=SR_FILE, help="AudioEncoder's sr")
    parser.add_argument("--skip-whole", action="store_true", help="no whole-file encode")
    args = parser.parse_args()
    modes = ("baseline", "streamed") if args.skip_whole else ("baseline", "streamed", "whole")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "long.wav")
        write_clip(path, args.seconds)
        runs, features = {}, {}
        for mode in modes:
            out = os.path.join(tmp, f"{mode}.npy")
            runs[mode] = run_child(mode, path, out, args.sr)
            features[mode] = np.load(out)[0].astype(np.float64)
    s, b = runs["streamed"], runs["baseline"]
    line = (
        f"{args.seconds / 3600:g} h wav at {SR_FILE} Hz, AudioEncoder(sr={args.sr}) (20 MFCC "
        f"mean/std): peak RSS streamed {s['peak_mb']:.0f} MB (imports + 1 s clip "
        f"{b['peak_mb']:.0f} MB), encode {s['seconds']:.1f} s"
    )
    if not args.skip_whole:
        w = runs["whole"]
        relative = np.abs(features["streamed"] - features["whole"]) / np.maximum(
            np.abs(features["whole"]), 1e-12
        )
        line += (
            f"; whole file {w['peak_mb']:.0f} MB ({s['peak_mb'] / w['peak_mb']:.2f}x), "
            f"{w['seconds']:.1f} s; max relative feature difference {relative.max():.1e} "
            f"over {relative.size} features"
        )
    print(line)


if __name__ == "__main__":
    main()
