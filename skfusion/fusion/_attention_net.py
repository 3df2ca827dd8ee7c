"""The cross-modal attention network, written once for numpy and torch.

The forward pass uses only array-API functions (``xp.matmul``, ``xp.exp``, ...), so the same
code runs on numpy arrays at predict time (no torch import) and on torch tensors, through the
array-API wrapper that scikit-learn vendors, while training (autograd works through it).
Weights live in a flat ``dict`` of arrays: numpy ``float32`` in a fitted estimator (cast to
``float64`` for the numpy pass, see :func:`as_float64`), torch ``float32`` tensors during
training.
"""

# SPDX-License-Identifier: BSD-3-Clause

import math

import numpy as np

__all__ = []

_LN_EPS = 1e-5
_BIG = 1e9  # pushes masked scores below every real one when taking the row maximum


def init_params(rng, layout, *, d_model, n_layers, d_ff, n_out):
    """Initial weights (Glorot-uniform matrices, zero biases, unit norms) from a numpy RNG.

    ``layout`` has one ``(n_tokens, d_in)`` pair per modality: its number of tokens (a
    pooled vector is projected to ``n_tokens`` tokens; a sequence keeps its own length and is
    given ``n_tokens=0`` here) and its input width.
    """

    def glorot(fan_in, fan_out):
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, size=(fan_in, fan_out)).astype(np.float32)

    def zeros(*shape):
        return np.zeros(shape, dtype=np.float32)

    P = {}
    for j, (n_tok, d_in) in enumerate(layout):
        width = d_model * max(n_tok, 1)
        P[f"m{j}.W"] = glorot(d_in, width)
        P[f"m{j}.b"] = zeros(width)
        P[f"m{j}.tok"] = (0.02 * rng.standard_normal((max(n_tok, 1), d_model))).astype(np.float32)
        P[f"m{j}.missing"] = (0.02 * rng.standard_normal(d_model)).astype(np.float32)
    for i in range(n_layers):
        for name in ("q", "k", "v", "o"):
            P[f"l{i}.W{name}"] = glorot(d_model, d_model)
            P[f"l{i}.b{name}"] = zeros(d_model)
        P[f"l{i}.W1"] = glorot(d_model, d_ff)
        P[f"l{i}.b1"] = zeros(d_ff)
        P[f"l{i}.W2"] = glorot(d_ff, d_model)
        P[f"l{i}.b2"] = zeros(d_model)
        for norm in ("n1", "n2"):
            P[f"l{i}.{norm}g"] = np.ones(d_model, dtype=np.float32)
            P[f"l{i}.{norm}b"] = zeros(d_model)
    n_mod = len(layout)
    P["head.W1"] = glorot(n_mod * d_model, d_model)
    P["head.b1"] = zeros(d_model)
    P["head.W2"] = glorot(d_model, n_out)
    P["head.b2"] = zeros(n_out)
    return P


def batch_arrays(data, rows, present, dtype=np.float32):
    """Inputs, token validity (float 0/1) and presence of some rows, with a given presence.

    ``dtype`` is the float type of all three: ``float32`` for training, ``float64`` for
    numpy inference (see :func:`as_float64`).
    """
    inputs, valid = [], []
    for j, (values, tok_valid) in enumerate(zip(data["inputs"], data["token_valid"])):
        inputs.append(values[rows].astype(dtype, copy=False))
        valid.append((tok_valid[rows] & present[:, j : j + 1]).astype(dtype))
    return inputs, valid, present.astype(dtype)


def as_float64(P):
    """The weights in ``float64``, for the numpy forward pass at predict time.

    Training is float32, and so are the stored weights; casting them (and the inputs, see
    :func:`batch_arrays`) to float64 is exact and does not change the function the network
    computes, only how it is rounded. Why it matters: BLAS picks its kernels, blocking and
    thread split from the matrix shapes, and numpy its reduction order from the array
    layout, so the rounding of a row's result depends on how many rows share its batch. In
    float32 that moved a prediction by up to 1e-5 relative between a batch and its subsets
    (an AVX2 AMD EPYC), failing sklearn's subset and sample-order invariance checks;
    accumulated in float64 the same differences are a few ulps (2e-16 relative measured at 1
    and 2 threads), so a row scores the same, to far better than 1e-12, in any batch.
    """
    return {k: np.asarray(v, dtype=np.float64) for k, v in P.items()}


def _layer_norm(xp, x, g, b):
    mean = xp.mean(x, axis=-1, keepdims=True)
    var = xp.mean((x - mean) ** 2, axis=-1, keepdims=True)
    return (x - mean) / xp.sqrt(var + _LN_EPS) * g + b


def _masked_softmax(xp, s, mask):
    """Softmax over the last axis where ``mask`` (0/1, broadcast) is 1.

    Masked scores are never exponentiated at a huge negative value (underflowing ``exp`` is
    several times slower on CPU): they are clamped, exponentiated and multiplied by 0.
    """
    top = xp.max(s * mask + (mask - 1.0) * _BIG, axis=-1, keepdims=True)
    e = xp.exp(xp.minimum(s - top, 0.0 * s)) * mask
    return e / xp.sum(e, axis=-1, keepdims=True)


def _linear(xp, X, W, b):
    """``X @ W + b`` over the last axis, as one 2-D product (numpy's stacked matmul with a
    wide inner axis is up to 40 times slower than the same product on the flattened rows)."""
    shape = tuple(X.shape[:-1]) + (W.shape[1],)
    return xp.reshape(xp.matmul(xp.reshape(X, (-1, X.shape[-1])), W), shape) + b


def _relu(xp, x):
    return xp.where(x > 0, x, x * 0)


def _cross_attention(xp, Q, K, V, spans, key_valid, scale):
    """Each modality's tokens attend to the other modalities' valid tokens and to themselves.

    ``Q``, ``K``, ``V`` are (n, heads, L, dh); ``spans`` gives each modality's token range.
    The score of a token with itself is computed on its own (no L x L matrix), so a long
    sequence does not pay for attending to its own tokens. Returns the attended values
    (n, heads, L, dh) and, per query modality, the attention (n, heads, T_q, 1 + L_other)
    whose first column is the token itself.
    """
    outs, maps = [], []
    for i, (a, b) in enumerate(spans):
        Qi, Ki, Vi = Q[:, :, a:b, :], K[:, :, a:b, :], V[:, :, a:b, :]
        others = [j for j in range(len(spans)) if j != i]
        s_self = xp.sum(Qi * Ki, axis=-1, keepdims=True) * scale
        if not others:  # a single modality: every token keeps its own value
            outs.append(Vi)
            maps.append(s_self * 0 + 1.0)
            continue
        Ko = xp.concat([K[:, :, spans[j][0] : spans[j][1], :] for j in others], axis=2)
        Vo = xp.concat([V[:, :, spans[j][0] : spans[j][1], :] for j in others], axis=2)
        s_other = xp.matmul(Qi, xp.permute_dims(Ko, (0, 1, 3, 2))) * scale
        ones = key_valid[others[0]][:, :1] * 0 + 1.0
        mask = xp.concat([ones] + [key_valid[j] for j in others], axis=1)[:, None, None, :]
        A = _masked_softmax(xp, xp.concat([s_self, s_other], axis=-1), mask)
        outs.append(A[..., :1] * Vi + xp.matmul(A[..., 1:], Vo))
        maps.append(A)
    return xp.concat(outs, axis=2), maps


def _modality_shares(xp, maps, spans, token_valid):
    """(n, M, M): per query modality, its tokens' mean attention to each modality."""
    rows = []
    for i, A in enumerate(maps):
        A = xp.mean(A, axis=1)  # over heads: (n, T_q, 1 + L_other)
        cols, pos = [], 1
        for k, (a, b) in enumerate(spans):
            if k == i:
                cols.append(A[:, :, 0])
            else:
                cols.append(xp.sum(A[:, :, pos : pos + b - a], axis=-1))
                pos += b - a
        W = xp.stack(cols, axis=-1)  # (n, T_q, M)
        q = token_valid[i]
        rows.append(
            xp.sum(W * q[:, :, None], axis=1) / xp.clip(xp.sum(q, axis=1), 1.0, None)[:, None]
        )
    return xp.stack(rows, axis=1)


def forward(
    P, inputs, token_valid, present, *, n_heads, n_layers, xp, dropout=None, keep_attention=False
):
    """Logits (n, n_out) and, optionally, per layer the (n, M, M) modality attention shares.

    Parameters
    ----------
    P : dict of arrays
        The weights (see :func:`init_params`).
    inputs : list of arrays
        Per modality: standardised features, (n, d_in) for a pooled vector or (n, T, d_in)
        for a sequence; zero where missing.
    token_valid : list of arrays
        Per modality: (n, T) float 0/1, 1 for a real token of a present modality.
    present : array of shape (n, M)
        Float 0/1 presence of each modality.
    dropout : callable or None
        Applied to the attention and feed-forward outputs and the head while training.
    """
    drop = dropout or (lambda t: t)
    n = inputs[0].shape[0]
    tokens, spans, start = [], [], 0
    for j, X in enumerate(inputs):
        tok = P[f"m{j}.tok"]
        H = _linear(xp, X, P[f"m{j}.W"], P[f"m{j}.b"])
        if X.ndim == 2:  # pooled vector -> n_tokens tokens
            H = xp.reshape(H, (n, tok.shape[0], tok.shape[1]))
        tokens.append(H + tok)
        spans.append((start, start + H.shape[1]))
        start += H.shape[1]
    H = xp.concat(tokens, axis=1)
    L, d = H.shape[1], H.shape[2]
    dh = d // n_heads
    attention = []

    def heads(T):
        return xp.permute_dims(xp.reshape(T, (n, L, n_heads, dh)), (0, 2, 1, 3))

    for i in range(n_layers):
        p = f"l{i}."
        Q = heads(_linear(xp, H, P[p + "Wq"], P[p + "bq"]))
        K = heads(_linear(xp, H, P[p + "Wk"], P[p + "bk"]))
        V = heads(_linear(xp, H, P[p + "Wv"], P[p + "bv"]))
        out, maps = _cross_attention(xp, Q, K, V, spans, token_valid, 1.0 / math.sqrt(dh))
        if keep_attention:
            attention.append(_modality_shares(xp, maps, spans, token_valid))
        out = xp.reshape(xp.permute_dims(out, (0, 2, 1, 3)), (n, L, d))
        out = _linear(xp, out, P[p + "Wo"], P[p + "bo"])
        H = _layer_norm(xp, H + drop(out), P[p + "n1g"], P[p + "n1b"])
        ff = _linear(
            xp, _relu(xp, _linear(xp, H, P[p + "W1"], P[p + "b1"])), P[p + "W2"], P[p + "b2"]
        )
        H = _layer_norm(xp, H + drop(ff), P[p + "n2g"], P[p + "n2b"])

    pooled = []
    for j, (valid, (a, b)) in enumerate(zip(token_valid, spans)):
        w = valid / xp.clip(xp.sum(valid, axis=1, keepdims=True), 1.0, None)
        mean = xp.sum(H[:, a:b, :] * w[:, :, None], axis=1)
        here = present[:, j : j + 1]
        pooled.append(here * mean + (1.0 - here) * P[f"m{j}.missing"])
    Z = xp.concat(pooled, axis=1)
    hidden = drop(_relu(xp, xp.matmul(Z, P["head.W1"]) + P["head.b1"]))
    logits = xp.matmul(hidden, P["head.W2"]) + P["head.b2"]
    return logits, attention


def modality_attention(attention, present):
    """Average the per-layer (n, M, M) shares; a missing query modality's row becomes NaN.

    Rows of a present query modality sum to 1 over the present modalities.
    """
    W = np.mean(np.stack(attention), axis=0).astype(np.float64)
    W[~present.astype(bool)] = np.nan
    return W
