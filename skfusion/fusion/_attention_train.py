"""Training of the attention network with torch (imported only here, only while fitting)."""

# SPDX-License-Identifier: BSD-3-Clause

import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from .._utils import import_optional_dependency
from ._attention_net import batch_arrays, forward

__all__ = []


def drop_modalities(rng, present, rate):
    """Hide each present modality of a row with probability ``rate``, keeping at least one."""
    if rate <= 0:
        return present
    keep = present & (rng.random(present.shape) >= rate)
    lost = ~keep.any(axis=1) & present.any(axis=1)  # rows with nothing present stay so
    for i in np.flatnonzero(lost):
        keep[i, rng.choice(np.flatnonzero(present[i]))] = True
    return keep


class _Trainer:
    """Mini-batch Adam on a weighted loss, with sklearn-style stopping rules."""

    def __init__(self, est, task, device, rng):
        self.torch = import_optional_dependency("torch", purpose="training AttentionFusion")
        from .._compat import xp_torch

        self.xp = xp_torch
        self.est = est
        self.task = task
        self.device = device
        self.rng = rng
        self.generator = self.torch.Generator(device=device)
        self.generator.manual_seed(int(rng.integers(2**31 - 1)))

    def _tensor(self, a):
        return self.torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

    def _dropout(self, rate):
        torch = self.torch
        if rate <= 0:
            return None

        def drop(t):
            keep = torch.rand(t.shape, generator=self.generator, device=t.device) >= rate
            return t * keep / (1.0 - rate)

        return drop

    def _loss(self, params, data, rows, present, train):
        torch = self.torch
        inputs, valid, pres = batch_arrays(data, rows, present)
        est = self.est
        logits, _ = forward(
            params,
            [self._tensor(a) for a in inputs],
            [self._tensor(v) for v in valid],
            self._tensor(pres),
            n_heads=est.n_heads,
            n_layers=est.n_layers,
            xp=self.xp,
            dropout=self._dropout(est.dropout) if train else None,
        )
        target = self._tensor(data["y"][rows])
        weight = self._tensor(data["sample_weight"][rows])
        if self.task == "classification":
            losses = torch.nn.functional.cross_entropy(logits, target, reduction="none")
        else:
            losses = 0.5 * (logits[:, 0] - target) ** 2
        return (losses * weight).sum(), weight.sum()

    def fit(self, params_np, data, train_rows, val_rows):
        if self.device == "cpu":
            # Tiny matrices: torch's OpenMP threads cost more than they save (40x slower on
            # a busy 2-core machine). Train on one thread, restored afterwards; parallelism
            # belongs to the level above (n_jobs of GridSearchCV and friends).
            with threadpool_limits(1, user_api="openmp"):
                return self._fit(params_np, data, train_rows, val_rows)
        return self._fit(params_np, data, train_rows, val_rows)

    def _fit(self, params_np, data, train_rows, val_rows):
        torch = self.torch
        est = self.est
        params = {k: self._tensor(v).requires_grad_(True) for k, v in params_np.items()}
        decay = [p for k, p in params.items() if ".W" in k]
        rest = [p for k, p in params.items() if ".W" not in k]
        optimizer = torch.optim.Adam(
            [{"params": decay, "weight_decay": est.alpha}, {"params": rest, "weight_decay": 0.0}],
            lr=est.learning_rate_init,
        )
        n_train = train_rows.size
        batch = min(200, n_train) if est.batch_size == "auto" else min(est.batch_size, n_train)
        present = data["present"]
        loss_curve, val_curve = [], []
        best, best_params, no_improve = np.inf, None, 0
        n_iter = 0
        for epoch in range(est.max_iter):
            tic = time.perf_counter()
            order = train_rows[self.rng.permutation(n_train)]
            total, total_w = 0.0, 0.0
            for start in range(0, n_train, batch):
                rows = order[start : start + batch]
                pres = drop_modalities(self.rng, present[rows], est.modality_dropout)
                loss_sum, w_sum = self._loss(params, data, rows, pres, train=True)
                if float(w_sum) <= 0:
                    continue
                optimizer.zero_grad(set_to_none=True)
                (loss_sum / w_sum).backward()
                optimizer.step()
                total += float(loss_sum.detach())
                total_w += float(w_sum)
            n_iter = epoch + 1
            loss_curve.append(total / max(total_w, 1e-300))
            if val_rows is not None:
                v_sum, v_w = 0.0, 0.0
                with torch.no_grad():
                    for start in range(0, val_rows.size, batch):
                        rows = val_rows[start : start + batch]
                        s, w = self._loss(params, data, rows, present[rows], train=False)
                        v_sum, v_w = v_sum + float(s), v_w + float(w)
                score = v_sum / max(v_w, 1e-300)
                val_curve.append(score)
            else:
                score = loss_curve[-1]
            if est.verbose:
                extra = f", validation loss = {val_curve[-1]:.6f}" if val_curve else ""
                print(
                    f"Iteration {n_iter}, loss = {loss_curve[-1]:.6f}{extra} "
                    f"({time.perf_counter() - tic:.2f}s)"
                )
            if score < best - est.tol:
                no_improve = 0
            else:
                no_improve += 1
            if score < best:
                best = score
                if val_rows is not None:
                    best_params = {k: p.detach().clone() for k, p in params.items()}
            if no_improve >= est.n_iter_no_change:
                if est.verbose:
                    what = "Validation loss" if val_rows is not None else "Training loss"
                    print(
                        f"{what} did not improve more than tol={est.tol} for "
                        f"{est.n_iter_no_change} consecutive epochs. Stopping."
                    )
                break
        else:
            warnings.warn(
                f"AttentionFusion: the maximum number of iterations ({est.max_iter}) was reached "
                "and the optimisation hasn't converged yet.",
                ConvergenceWarning,
            )
        final = best_params if best_params is not None else params
        weights = {k: p.detach().cpu().numpy().astype(np.float32) for k, p in final.items()}
        return weights, loss_curve, (val_curve or None), n_iter
