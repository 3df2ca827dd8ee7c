"""TextEncoder's text handling: checking texts, tokenising per item, batching by length.

Separate from :mod:`._text` (the estimator: model identity, graph building, backends) so that
what decides a text's batch, and what happens to a text the tokenizer cannot take, reads in one
place.
"""

# SPDX-License-Identifier: BSD-3-Clause

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..exceptions import EncodingError
from ._base import short_repr

__all__ = ["check_text", "length_batches", "run_length_batches", "tokenize_texts"]


def length_batches(lengths, batch_size):
    """Row indices in batches of at most ``batch_size`` texts of one length, by increasing length.

    No batch is ever padded, so that a text's embedding cannot depend on the other texts of
    its batch (DESIGN §8): every kernel of the model then sees the same values in the same
    shapes for that text, whatever its batch mates, the batch size or the thread count, apart
    from the number of rows, and none of them mixes the rows of a batch. Padding to a batch's
    longest text gave a row other bits (attention over a padded width, and per-batch int8
    scales before those became per row). It saved nothing either: texts of one length are
    common enough that the extra, smaller batches cost no measurable time against the padded
    positions they no longer compute (600 reviews: 129 batches instead of 59, same CPU time).

    Parameters
    ----------
    lengths : ndarray of shape (n,), dtype int
        Tokens per text.
    batch_size : int
        Largest batch.

    Returns
    -------
    batches : list of ndarray of int
        Row indices, every row exactly once; all the rows of a batch have the same length.

    Examples
    --------
    >>> import numpy as np
    >>> from skfusion.encoders._text_batches import length_batches
    >>> [b.tolist() for b in length_batches(np.array([5, 3, 5, 3, 3, 9]), 2)]
    [[1, 3], [4], [0, 2], [5]]
    """
    order = np.argsort(lengths, kind="stable")
    cuts = []
    start = 0
    for pos in range(1, len(order)):
        if pos - start == batch_size or lengths[order[pos]] != lengths[order[pos - 1]]:
            cuts.append(pos)
            start = pos
    return np.split(order, cuts) if len(order) else []


def check_text(value):
    """The text of a row, or ``TypeError``/``ValueError`` for a value that is not usable text.

    Lone surrogates (``"bad \\ud83d"``) are refused here: neither UTF-8 nor the tokenizer can
    take them (and the embedding cache keys texts by their UTF-8 bytes).
    """
    if isinstance(value, np.str_):
        value = str(value)
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates: no tokenizer (nor UTF-8) takes them
        raise ValueError(
            f"the text is not valid Unicode ({exc.reason}: {value[exc.start:exc.end]!r} at "
            f"character {exc.start}), so the tokenizer cannot take it"
        ) from None
    return value


def tokenize_texts(tokenizer, texts, *, lower=False, on_error="raise", encoder_name="TextEncoder"):
    """``tokenizer.encode_batch`` of the stripped (and lower-cased) texts, item by item on failure.

    tokenizers rejects a whole batch for one text it cannot take, naming none. The batch is
    then encoded text by text: a text that fails raises an :class:`EncodingError` naming its
    position in ``texts`` (``on_error="raise"``), or gets None (``on_error="missing"``) while
    the others are encoded as they would be without it.

    Parameters
    ----------
    tokenizer : tokenizers.Tokenizer
        The fitted tokenizer.
    texts : list of str
        Checked texts.
    lower : bool, default=False
        Lower-case them first (``do_lower_case`` models).
    on_error : {"raise", "missing"}, default="raise"
        What a text the tokenizer rejects does.
    encoder_name : str, default="TextEncoder"
        Names the encoder in errors.

    Returns
    -------
    encodings : list of tokenizers.Encoding or None
        One per text, in order.
    """
    cleaned = [t.strip() for t in texts]  # as sentence-transformers does
    if lower:
        cleaned = [t.lower() for t in cleaned]
    try:
        return tokenizer.encode_batch(cleaned)
    except Exception:  # tokenizers raises TypeError/ValueError/its own for the whole batch
        pass
    encodings = []
    for i, text in enumerate(cleaned):
        try:
            encodings.append(tokenizer.encode(text))
        except Exception as exc:
            if on_error == "missing":
                encodings.append(None)
                continue
            raise EncodingError(
                encoder_name,
                i,
                f"the tokenizer cannot take this text ({type(exc).__name__}: {exc})",
                short_repr(texts[i]),
            ) from exc
    return encodings


def run_length_batches(encodings, run, batch_size, workers=1, bar=None):
    """Run ``run(rows)`` on the encodings in batches of one length; a list in length order.

    Parameters
    ----------
    encodings : list of tokenizers.Encoding or None
        None entries (texts the tokenizer rejected) are in no batch.
    run : callable
        ``run(row_indices) -> (row_indices, ...)``, one batch.
    batch_size : int
        Largest batch.
    workers : int, default=1
        Batches run at once, in threads (ONNX Runtime releases the GIL while it runs); the
        batch size is lowered so that every worker gets a batch.
    bar : skfusion._progress.Progress, default=None
        Counts the rows of each finished batch.

    Returns
    -------
    results : list
        ``run``'s results, one per batch, in length order.
    """
    kept = np.fromiter((i for i, e in enumerate(encodings) if e is not None), dtype=np.intp)
    lengths = np.fromiter((len(encodings[i].ids) for i in kept), dtype=np.intp, count=len(kept))
    # enough batches for every worker: a single batch would leave the others idle
    size = max(1, min(batch_size, -(-len(kept) // workers)))
    batches = [kept[b] for b in length_batches(lengths, size)]
    done = {}
    if workers == 1 or len(batches) <= 1:
        for b, rows in enumerate(batches):
            done[b] = run(rows)
            if bar is not None:
                bar.update(len(rows))
        return [done[b] for b in range(len(batches))]
    # the longest batches go first so that no thread is left with one at the end
    cost = {b: len(encodings[rows[0]].ids) * len(rows) for b, rows in enumerate(batches)}
    order = sorted(range(len(batches)), key=lambda b: -cost[b])
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for b, result in zip(order, pool.map(run, [batches[b] for b in order])):
            done[b] = result
            if bar is not None:
                bar.update(len(batches[b]))
    return [done[b] for b in range(len(batches))]
