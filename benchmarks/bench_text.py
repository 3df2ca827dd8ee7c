"""Text encoding speed: TextEncoder (ONNX fp32, ONNX int8) vs SentenceTransformer.encode.

Same model (the offline all-MiniLM-L6-v2), same 2,000 real reviews (Women's Clothing
E-Commerce Reviews), same thread count for torch and ONNX Runtime, batch size 32, CPU. Each
contender gets a short warm-up, then one timed pass (``--repeat`` takes the best of several).
Prints sentences/s, the ratios to sentence-transformers, the agreement of the embeddings
(cosine to sentence-transformers), and how much the first ``--invariance`` embeddings move when
each text is encoded alone (batch size 1) instead of in the timed run's batches (DESIGN §8: 0 for
TextEncoder; sentence-transformers pads each batch to its longest text).

Run: ``python benchmarks/bench_text.py [--n 2000] [--threads N] [--repeat 1] [--column Title]``.
Targets (DESIGN §7): ONNX fp32 >= 2x, int8 >= 4x sentence-transformers' own encode.
"""

# SPDX-License-Identifier: BSD-3-Clause

import argparse
import os
import time

import numpy as np


def _timed(func, texts, repeat):
    func(texts[:64])  # warm-up: sessions, allocator, first-batch costs
    best, out = np.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        out = func(texts)
        best = min(best, time.perf_counter() - start)
    return len(texts) / best, np.asarray(out, dtype=np.float32)


def _cosine(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="number of reviews")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=1, help="timed passes (best kept)")
    parser.add_argument("--column", default="Review Text", help="text column ('Title': short)")
    parser.add_argument(
        "--invariance", type=int, default=200, help="texts re-encoded one per batch (0: skip)"
    )
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    import skfusion

    from skfusion.datasets import load_clothing_reviews
    from skfusion.encoders import TextEncoder
    from skfusion.encoders._text import default_text_model

    skfusion.set_config(cache=False)  # time the encoders, not the embedding cache
    torch.set_num_threads(args.threads)  # a benchmark script may set the process's threads
    texts = load_clothing_reviews().data[args.column].dropna().iloc[: args.n].tolist()
    n_tokens = None
    model_path = default_text_model()
    st = SentenceTransformer(model_path, device="cpu")

    def st_encode(batch, batch_size=args.batch_size):
        return st.encode(batch, batch_size=batch_size, convert_to_numpy=True)

    common = dict(device="cpu", batch_size=args.batch_size, intra_op_num_threads=args.threads)
    fp32 = TextEncoder(model_path, backend="onnx", **common).fit(["x"])
    int8 = TextEncoder(model_path, backend="onnx", precision="int8", **common).fit(["x"])
    encodings = fp32._tokenize(texts)
    n_tokens = np.array([len(e.ids) for e in encodings])

    print(f"{len(texts)} texts of {args.column!r}, tokens per text: mean {n_tokens.mean():.0f}, "
          f"max {n_tokens.max()}; threads={args.threads}, batch_size={args.batch_size}, "
          f"cpus={os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    results = {}
    results["sentence-transformers encode"] = _timed(st_encode, texts, args.repeat)
    results["TextEncoder onnx fp32"] = _timed(fp32.transform, texts, args.repeat)
    results["TextEncoder onnx int8"] = _timed(int8.transform, texts, args.repeat)
    alone = {}  # the first texts, each in a batch of its own
    if args.invariance:
        few = texts[: args.invariance]
        alone["sentence-transformers encode"] = st_encode(few, batch_size=1)
        for name, encoder in (("fp32", fp32), ("int8", int8)):
            one = encoder.set_params(batch_size=1, intra_op_num_threads=1)
            alone[f"TextEncoder onnx {name}"] = one.transform(few)

    base_speed, reference = results["sentence-transformers encode"]
    print(f"{'contender':32s} {'sent/s':>9s} {'ratio':>7s} {'cos min':>9s} {'cos mean':>9s} "
          f"{'vs alone':>9s}")
    for name, (speed, emb) in results.items():
        cos = _cosine(emb, reference)
        moved = np.abs(emb[: len(alone[name])] - alone[name]).max() if alone else np.nan
        print(f"{name:32s} {speed:9.1f} {speed / base_speed:6.2f}x {cos.min():9.6f} "
              f"{cos.mean():9.6f} {moved:9.2g}")


if __name__ == "__main__":
    main()
