"""The cross-modal attention network, written once for numpy and torch.

The forward pass uses only array-API functions (``xp.matmul``, ``xp.exp``, ...), so the same
code runs on numpy arrays at predict time (no torch import) and on torch tensors, through the
array-API wrapper that scikit-learn vendors, while training (autograd works through it).
Weights live in a flat ``dict`` of arrays: numpy ``float32`` in a fitted estimator, torch
tensors during training.
"""

# SPDX-License-Identifier: BSD-3-Clause

import math

import numpy as np

__all__ = []

_LN_EPS = 1e-5
_MASKED = -1e9  # added to the scores of keys a query may not see


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


def attention_bias(token_modality, token_valid):
    """Additive attention mask of shape (n, 1, L, L), float32.

    A query token sees the valid tokens of the *other* modalities and itself. Seeing itself
    means a row with one present modality (or a padding/missing token) still has a key, so the
    softmax never meets a row of masked scores.
    """
    L = token_modality.shape[0]
    other = token_modality[:, None] != token_modality[None, :]
    allowed = other[None, :, :] & token_valid[:, None, :]
    allowed |= np.eye(L, dtype=bool)[None]
    return np.where(allowed, np.float32(0.0), np.float32(_MASKED))[:, None, :, :]


def batch_arrays(data, rows, present):
    """Inputs, token validity and attention bias of some rows, with a given presence matrix."""
    inputs, valid = [], []
    for j, (values, tok_valid) in enumerate(zip(data["inputs"], data["token_valid"])):
        inputs.append(values[rows])
        valid.append(tok_valid[rows] & present[:, j : j + 1])
    token_valid = np.concatenate(valid, axis=1)
    bias = attention_bias(data["token_modality"], token_valid)
    return inputs, [v.astype(np.float32) for v in valid], present.astype(np.float32), bias


def _layer_norm(xp, x, g, b):
    mean = xp.mean(x, axis=-1, keepdims=True)
    var = xp.mean((x - mean) ** 2, axis=-1, keepdims=True)
    return (x - mean) / xp.sqrt(var + _LN_EPS) * g + b


def _softmax(xp, s):
    e = xp.exp(s - xp.max(s, axis=-1, keepdims=True))
    return e / xp.sum(e, axis=-1, keepdims=True)


def _relu(xp, x):
    return xp.where(x > 0, x, x * 0)


def forward(
    P, inputs, token_valid, present, bias, *, n_heads, n_layers, xp, dropout=None, keep_attention=False
):
    """Logits (n, n_out) and, optionally, the attention matrices of every layer.

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
    bias : array of shape (n, 1, L, L)
        From :func:`attention_bias`.
    dropout : callable or None
        Applied to the attention and feed-forward outputs while training.
    """
    drop = dropout or (lambda t: t)
    n = inputs[0].shape[0]
    tokens = []
    for j, X in enumerate(inputs):
        tok = P[f"m{j}.tok"]
        H = xp.matmul(X, P[f"m{j}.W"]) + P[f"m{j}.b"]
        if X.ndim == 2:  # pooled vector -> n_tokens tokens
            H = xp.reshape(H, (n, tok.shape[0], tok.shape[1]))
        tokens.append(H + tok)
    H = xp.concat(tokens, axis=1)
    L, d = H.shape[1], H.shape[2]
    dh = d // n_heads
    attention = []

    def heads(T):
        return xp.permute_dims(xp.reshape(T, (n, L, n_heads, dh)), (0, 2, 1, 3))

    for i in range(n_layers):
        p = f"l{i}."
        Q = heads(xp.matmul(H, P[p + "Wq"]) + P[p + "bq"])
        K = heads(xp.matmul(H, P[p + "Wk"]) + P[p + "bk"])
        V = heads(xp.matmul(H, P[p + "Wv"]) + P[p + "bv"])
        A = _softmax(xp, xp.matmul(Q, xp.permute_dims(K, (0, 1, 3, 2))) / math.sqrt(dh) + bias)
        if keep_attention:
            attention.append(A)
        out = xp.reshape(xp.permute_dims(xp.matmul(A, V), (0, 2, 1, 3)), (n, L, d))
        out = xp.matmul(out, P[p + "Wo"]) + P[p + "bo"]
        H = _layer_norm(xp, H + drop(out), P[p + "n1g"], P[p + "n1b"])
        ff = xp.matmul(_relu(xp, xp.matmul(H, P[p + "W1"]) + P[p + "b1"]), P[p + "W2"]) + P[p + "b2"]
        H = _layer_norm(xp, H + drop(ff), P[p + "n2g"], P[p + "n2b"])

    pooled, start = [], 0
    for j, valid in enumerate(token_valid):
        stop = start + valid.shape[1]
        w = valid / xp.clip(xp.sum(valid, axis=1, keepdims=True), 1.0, None)
        mean = xp.sum(H[:, start:stop, :] * w[:, :, None], axis=1)
        here = present[:, j : j + 1]
        pooled.append(here * mean + (1.0 - here) * P[f"m{j}.missing"])
        start = stop
    Z = xp.concat(pooled, axis=1)
    hidden = drop(_relu(xp, xp.matmul(Z, P["head.W1"]) + P["head.b1"]))
    logits = xp.matmul(hidden, P["head.W2"]) + P["head.b2"]
    return logits, attention


def modality_attention(attention, token_modality, token_valid, present):
    """Per row, how much each modality's tokens attended to each modality: (n, M, M).

    The attention of every layer and head is averaged, summed over the key tokens of each
    modality and averaged over the valid query tokens of each modality. Rows of a present
    query modality sum to 1; rows of a missing one are NaN.
    """
    A = np.mean([a.mean(axis=1) for a in attention], axis=0)  # (n, L, L)
    n_mod = present.shape[1]
    onehot = (token_modality[:, None] == np.arange(n_mod)[None, :]).astype(np.float64)
    to_mod = A @ onehot  # (n, L_query, M)
    q = token_valid[:, :, None] * onehot[None]  # (n, L, M): valid query tokens per modality
    counts = q.sum(axis=1)  # (n, M)
    with np.errstate(invalid="ignore", divide="ignore"):
        W = np.einsum("nlq,nlk->nqk", q, to_mod) / counts[:, :, None]
    W[~present.astype(bool)] = np.nan
    return W
