"""Images per second: ImageEncoder (MobileNetV2 on ONNX Runtime) vs the same network in torch eager.

Both sides use the same images, the same preprocessing code, the same batch size and the same
number of threads; one run, best of ``--repeat`` timings per side, ratio printed. Two figures:

* ``network``: the forward pass alone on pre-decoded, normalised batches;
* ``end-to-end``: JPEG files to features (decode, resize, crop, normalise, forward), both
  decoding serially; a third line lets ImageEncoder decode with ``n_jobs=threads`` threads.

Run: ``.venv/bin/python benchmarks/bench_image.py [--n-images 128] [--threads 2]``
"""

# SPDX-License-Identifier: BSD-3-Clause

import argparse
import os
import tempfile
import time

import numpy as np
import torch
from PIL import Image
from sklearn.base import clone
from sklearn.datasets import load_sample_images

from skfusion.encoders import ImageEncoder
from skfusion.encoders._image import MOBILENET_V2, load_image
from skfusion.encoders._mobilenet import load_pretrained


def make_jpegs(folder, n, seed=0):
    """``n`` JPEG files of 640x480-ish random crops of scikit-learn's two sample photos."""
    rng = np.random.RandomState(seed)
    photos = load_sample_images().images
    paths = []
    for i in range(n):
        arr = photos[i % 2]
        top, left = rng.randint(0, 60), rng.randint(0, 100)
        crop = np.ascontiguousarray(arr[top : top + 360, left : left + 540])
        path = os.path.join(folder, f"img{i:04d}.jpg")
        Image.fromarray(crop).save(path, quality=90)
        paths.append(path)
    return paths


def best_of(repeat, fn):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # a script may set torch's global thread count
    size, resize = MOBILENET_V2["image_size"], MOBILENET_V2["resize_size"]
    mean = np.asarray(MOBILENET_V2["mean"], dtype=np.float32)
    std = np.asarray(MOBILENET_V2["std"], dtype=np.float32)
    net = load_pretrained()
    encoder = ImageEncoder(
        batch_size=args.batch_size, device="cpu", intra_op_num_threads=args.threads
    )

    with tempfile.TemporaryDirectory() as folder:
        paths = make_jpegs(folder, args.n_images)
        encoder.fit(paths[:2])

        def torch_end_to_end(items):
            rows = []
            for start in range(0, len(items), args.batch_size):
                chunk = items[start : start + args.batch_size]
                pixels = np.stack([load_image(p, (size, size), resize) for p in chunk])
                x = ((pixels / np.float32(255) - mean) / std).transpose(0, 3, 1, 2)
                with torch.inference_mode():
                    rows.append(net.forward_all(torch.from_numpy(np.ascontiguousarray(x)))[0])
            return torch.cat(rows).numpy()

        # the same normalised batches for the network-only figure
        pixels = np.stack([load_image(p, (size, size), resize) for p in paths])
        batches = [
            np.ascontiguousarray(
                ((pixels[i : i + args.batch_size] / np.float32(255) - mean) / std).transpose(
                    0, 3, 1, 2
                )
            )
            for i in range(0, len(paths), args.batch_size)
        ]
        session = encoder._get_session()

        def onnx_network():
            return [session.run(["features"], {"image": b})[0] for b in batches]

        def torch_network():
            with torch.inference_mode():
                return [net.forward_all(torch.from_numpy(b))[0] for b in batches]

        # warm up both, and check that they agree
        ours = encoder.transform(paths[: args.batch_size])
        theirs = torch_end_to_end(paths[: args.batch_size])
        diff = float(np.abs(ours - theirs).max())
        onnx_network(), torch_network()

        t_onnx_net = best_of(args.repeat, onnx_network)
        t_torch_net = best_of(args.repeat, torch_network)
        t_onnx = best_of(args.repeat, lambda: encoder.transform(paths))
        t_torch = best_of(args.repeat, lambda: torch_end_to_end(paths))
        parallel = clone(encoder).set_params(n_jobs=args.threads).fit(paths[:2])
        parallel.transform(paths[: args.batch_size])
        t_parallel = best_of(args.repeat, lambda: parallel.transform(paths))

    n = len(paths)
    print(
        f"MobileNetV2, {n} JPEG images (540x360), batch {args.batch_size}, "
        f"{args.threads} threads, torch {torch.__version__}, best of {args.repeat}"
    )
    print(f"max abs diff of the features (ONNX vs torch): {diff:.2e}")
    for label, t_ours, t_theirs in [
        ("network only", t_onnx_net, t_torch_net),
        ("end-to-end  ", t_onnx, t_torch),
        (f"end-to-end, n_jobs={args.threads}", t_parallel, t_torch),
    ]:
        print(
            f"{label:<21}: ImageEncoder (ONNX Runtime) {n / t_ours:7.1f} img/s | torch eager "
            f"{n / t_theirs:7.1f} img/s | ratio {t_theirs / t_ours:.2f}x"
        )


if __name__ == "__main__":
    main()
