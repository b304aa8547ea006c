"""APGD-CE and APGD-T (Croce & Hein 2020) as stepwise attacks the engine's slot pool drives.

Each step evaluates one iterate per row and moves the row to the next one, exactly as one pass of
the loop in the reference `APGDAttack.attack_single_run` (pyautoattack/autopgd_base.py; the same
code as fra31/auto-attack autoattack/autopgd_base.py): step size starting at 2*eps, momentum 0.75
(1.0 on the first move), checkpoints after n_iter_2 = max(int(0.22 n), 1) iterations then every
max(k - size_decr, n_iter_min) (size_decr = max(int(0.03 n), 1), n_iter_min = max(int(0.06 n), 1)),
the step halved and the row moved back to its best point when the loss rose in at most rho*k of the
last k moves or the best loss did not improve since the last unreduced checkpoint, x_best tracked
on a strict loss increase. The oscillation count reads the loss history with the reference's
indexing (its first check reads the not-yet-written last entry, a zero); that is kept.

A row is broken as soon as any iterate (start point included) is misclassified, as the reference's
`acc = min(acc, pred)` counts it, so the row leaves the pool then. Restarts and APGD-T's targets
become more runs of the row (run r = target index * n_restarts + restart index); the target of
target index t is the (t+2)-th highest clean logit, computed from the clean input when the run
starts, as `APGDAttack_targeted.perturb` does.

Deliberate difference: the random start is drawn per sample from (run seed, attack, sample id,
run) instead of from one batch-wide generator, so outcomes do not depend on batch, shard or world
size. Its distribution is the reference's: t ~ U[-1,1]^d, start = clamp(x + eps * t / max|t|, 0, 1).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import PoolState, StepwiseAttack, sample_generator
from .settings import APGDSettings, recorded_header

# pyautoattack/autopgd_base.py APGDAttack.__init__ / attack_single_run (fra31/auto-attack same lines)
ALPHA_LINF = 2.0  # initial step size = 2 * eps ("alpha = 2." for Linf and L2)
MOMENTUM = 0.75  # "a = 0.75 if i > 0 else 1.0"


def ce_per_sample(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy (the reference's `nn.CrossEntropyLoss(reduction='none')`)."""
    del target
    return F.cross_entropy(logits, y, reduction="none")


def dlr_targeted_per_sample(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR: -(z_y - z_t) / (z_(1) - (z_(3) + z_(4)) / 2 + 1e-12) (reference `dlr_loss_targeted`)."""
    z_sorted = logits.sort(dim=1)[0]
    u = torch.arange(logits.shape[0], device=logits.device)
    return -(logits[u, y] - logits[u, target]) / (
        z_sorted[:, -1] - 0.5 * (z_sorted[:, -3] + z_sorted[:, -4]) + 1e-12
    )


def dlr_per_sample(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Untargeted DLR: -(z_y - max_{j!=y} z_j) / (z_(1) - z_(3) + 1e-12) (reference `dlr_loss`)."""
    del target
    z_sorted, ind_sorted = logits.sort(dim=1)
    ind = (ind_sorted[:, -1] == y).float()
    u = torch.arange(logits.shape[0], device=logits.device)
    return -(logits[u, y] - z_sorted[:, -2] * ind - z_sorted[:, -1] * (1.0 - ind)) / (
        z_sorted[:, -1] - z_sorted[:, -3] + 1e-12
    )


LOSSES = {"ce": ce_per_sample, "dlr": dlr_per_sample, "dlr-targeted": dlr_targeted_per_sample}


def linf_start_noise(
    ids: torch.Tensor, shape: tuple[int, ...], seed: int, name: str, run: int
) -> torch.Tensor:
    """Per-sample t / max|t| with t ~ U[-1,1]^d from the sample's own generator (reference start, per row)."""
    rows = []
    for i in ids.tolist():
        t = 2 * torch.rand(shape, generator=sample_generator(seed, name, int(i), run)) - 1
        rows.append(t / (t.abs().max() + 1e-12))
    return torch.stack(rows) if rows else torch.zeros((0, *shape))


class EngineAPGD(StepwiseAttack):
    """APGD (Linf) on CE (`apgd-ce`), DLR (`apgd-dlr`) or targeted DLR over n_target_classes targets (`apgd-t`)."""

    norm = "Linf"
    compact_tail = (
        True  # once the feeder is dry the slot pool starts later runs early, then steps occupied rows only
    )

    def __init__(
        self,
        eps: float,
        num_classes: int,
        loss: str = "ce",
        n_target_classes: int = 1,
        norm: str = "Linf",
        name: str | None = None,
        **settings: Any,
    ) -> None:
        """`settings`: the fields of `APGDSettings` (n_iter, n_restarts, rho, eot_iter), as the reference takes them."""
        super().__init__(eps)
        self.settings = APGDSettings(**settings)
        if norm != "Linf":
            raise ValueError(f"the engine APGD runs Linf only; use the reference backend for {norm}")
        if loss not in LOSSES:
            raise ValueError(f"engine APGD loss must be one of {sorted(LOSSES)}, got {loss!r}")
        if loss == "dlr-targeted" and num_classes < 4:
            raise ValueError("the targeted DLR loss needs at least 4 classes")
        if loss == "dlr" and num_classes < 3:
            raise ValueError("the DLR loss needs at least 3 classes")
        if min(self.settings.n_iter, self.settings.n_restarts, self.settings.eot_iter, n_target_classes) < 1:
            raise ValueError("APGD needs n_iter, n_restarts, eot_iter and n_target_classes >= 1")
        self.loss_name = loss
        self.loss = LOSSES[loss]
        self.num_classes = int(num_classes)
        self.n_iter = self.settings.n_iter
        self.total_steps = self.n_iter
        self.n_restarts = self.settings.n_restarts
        self.rho = self.settings.rho
        self.eot_iter = self.settings.eot_iter
        self.targeted = loss == "dlr-targeted"
        self.n_target_classes = int(n_target_classes) if self.targeted else 1
        self.restarts = self.n_restarts * self.n_target_classes
        self.name = name or {"ce": "apgd-ce", "dlr": "apgd-dlr", "dlr-targeted": "apgd-t"}[loss]
        # checkpoint lengths (reference APGDAttack.__init__: n_iter_2, n_iter_min, size_decr)
        self._k0 = max(int(0.22 * self.n_iter), 1)
        self._n_iter_min = max(int(0.06 * self.n_iter), 1)
        self._size_decr = max(int(0.03 * self.n_iter), 1)

    def params(self) -> dict[str, Any]:
        return {
            **recorded_header(self, self.num_classes, "zsbench engine (slot pool, per-sample early exit)"),
            "loss": self.loss_name,
            **self.settings.recorded(self.num_classes),
            "random_start": "per sample (run seed, sample id, run)",
            **({"n_target_classes": self.n_target_classes} if self.targeted else {}),
        }

    def init(
        self, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor, seed: int, restart: int = 0
    ) -> PoolState:
        ids = ids.to("cpu", torch.int64)
        noise = linf_start_noise(ids, tuple(x.shape[1:]), seed, self.name, restart).to(x.device, x.dtype)
        return self.init_from(x, y, ids, (x + self.eps * torch.ones_like(x) * noise).clamp(0.0, 1.0), restart)

    def init_from(
        self, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor, start: torch.Tensor, restart: int = 0
    ) -> PoolState:
        """Start rows at the given points (already in the ball and in [0,1]); `init` draws them."""
        n = x.shape[0]
        dev = x.device
        zeros = torch.zeros(n, dtype=torch.float32, device=dev)
        rank = 2 + restart // self.n_restarts
        return PoolState(
            x=x,
            y=y,
            ids=ids.to("cpu", torch.int64),
            delta=start - x,
            step=torch.zeros(n, dtype=torch.int64, device=dev),
            restart=torch.full((n,), restart, dtype=torch.int64, device=dev),
            extra={
                "xa": start.clone(),
                "xold": start.clone(),
                "xbest": start.clone(),
                "grad": torch.zeros_like(x),
                "gbest": torch.zeros_like(x),
                "ss": torch.full((n,), ALPHA_LINF * self.eps, dtype=torch.float32, device=dev),
                "lbest": zeros.clone(),
                "lbest_last": zeros.clone(),
                "reduced_last": torch.ones(n, dtype=torch.float32, device=dev),
                "lsteps": torch.zeros((n, self.n_iter), dtype=torch.float32, device=dev),
                "counter": torch.zeros(n, dtype=torch.int64, device=dev),
                "k": torch.full((n,), self._k0, dtype=torch.int64, device=dev),
                "rank": torch.full((n,), rank, dtype=torch.int64, device=dev),
                "target": torch.full((n,), -1 if self.targeted else 0, dtype=torch.int64, device=dev),
                "nonfinite": torch.zeros(n, dtype=torch.bool, device=dev),
            },
        )

    def _set_targets(self, model: nn.Module, state: PoolState) -> torch.Tensor:
        """Targets for rows starting a targeted run: the rank-th highest clean logit (reference perturb)."""
        target = state.extra["target"]
        need = target < 0
        if not bool(need.any()):
            return target
        with torch.no_grad():
            order = model(state.x[need]).sort(dim=1)[1]
        rank = state.extra["rank"][need]
        picked = order.gather(1, (order.shape[1] - rank)[:, None]).squeeze(1)
        target = target.clone()
        target[need] = picked
        return target

    def _evaluate(
        self, model: nn.Module, xa: torch.Tensor, y: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits, per-sample loss, gradient averaged over eot_iter) at points xa."""
        grad = torch.zeros_like(xa)
        xg = xa.detach().clone().requires_grad_(True)
        for _ in range(self.eot_iter):
            with torch.enable_grad():
                logits = model(xg)
                loss_indiv = self.loss(logits.float(), y, target)
                loss = loss_indiv.sum()
            if not loss.requires_grad:
                raise RuntimeError(
                    f"{self.name}: the logits have no gradient path to the input (forward detached or under "
                    "no_grad); gradient attacks cannot evaluate this model"
                )
            grad += torch.autograd.grad(loss, [xg])[0].detach()
        grad /= float(self.eot_iter)
        return logits.detach(), loss_indiv.detach(), grad

    def step(self, model: nn.Module, state: PoolState) -> tuple[PoolState, torch.Tensor]:
        e = dict(state.extra)
        x, y, s = state.x, state.y, state.step
        dev = x.device
        view = (-1, *([1] * (x.dim() - 1)))
        target = self._set_targets(model, state) if self.targeted else e["target"]
        e["target"] = target
        xa = e["xa"]
        logits, loss, grad = self._evaluate(model, xa, y, target)
        finite = torch.isfinite(logits).all(dim=1)
        broken = (logits.max(1)[1] != y) & finite
        e["nonfinite"] = ~finite
        grad = torch.where(torch.isfinite(grad), grad, torch.zeros_like(grad))

        first = s == 0
        later = ~first
        i = (s - 1).clamp(min=0, max=self.n_iter - 1)
        # start point: its loss and gradient are the first bests (reference lines before the loop)
        lbest = torch.where(first, loss, e["lbest"])
        lbest_last = torch.where(first, loss, e["lbest_last"])
        gbest = torch.where(first.view(view), grad, e["gbest"])
        xbest = e["xbest"]
        # later iterates: loss history, strict-improvement bests
        rows = torch.arange(x.shape[0], device=dev)
        lsteps = e["lsteps"].clone()
        lsteps[rows[later], i[later]] = loss[later]
        improve = later & (loss > lbest)
        xbest = torch.where(improve.view(view), xa, xbest)
        gbest = torch.where(improve.view(view), grad, gbest)
        lbest = torch.where(improve, loss, lbest)
        counter = torch.where(later, e["counter"] + 1, e["counter"])
        k = e["k"]
        check = later & (counter == k)
        reduced_last = e["reduced_last"]
        ss = e["ss"]
        if bool(check.any()):
            kmax = int(k.max())
            c = torch.arange(kmax, device=dev)
            cur = (i[:, None] - c[None, :]) % self.n_iter
            prev = (i[:, None] - c[None, :] - 1) % self.n_iter
            rose = (lsteps.gather(1, cur) > lsteps.gather(1, prev)) & (c[None, :] < k[:, None])
            osc = (rose.float().sum(dim=1) <= (k.double() * self.rho).float()).float()
            no_impr = (1.0 - reduced_last) * (lbest_last >= lbest).float()
            fl = torch.maximum(osc, no_impr)
            reduce = check & (fl > 0)
            reduced_last = torch.where(check, fl, reduced_last)
            lbest_last = torch.where(check, lbest, lbest_last)
            ss = torch.where(reduce, ss / 2.0, ss)
            xa = torch.where(reduce.view(view), xbest, xa)
            grad = torch.where(reduce.view(view), gbest, grad)
            k = torch.where(check, (k - self._size_decr).clamp(min=self._n_iter_min), k)
            counter = torch.where(check, torch.zeros_like(counter), counter)

        # move to the next iterate (rows with iterations left)
        move = (s < self.n_iter).view(view)
        a = torch.where(first, 1.0, MOMENTUM).to(x.dtype).view(view)
        grad2 = xa - e["xold"]
        step_size = ss.to(x.dtype).view(view)
        x1 = xa + step_size * torch.sign(grad)
        x1 = torch.clamp(torch.min(torch.max(x1, x - self.eps), x + self.eps), 0.0, 1.0)
        x1 = torch.clamp(
            torch.min(torch.max(xa + (x1 - xa) * a + grad2 * (1 - a), x - self.eps), x + self.eps), 0.0, 1.0
        )
        e.update(
            xa=torch.where(move, x1, xa).detach(),
            xold=torch.where(move, xa, e["xold"]).detach(),
            xbest=xbest.detach(),
            grad=grad,
            gbest=gbest,
            ss=ss,
            lbest=lbest,
            lbest_last=lbest_last,
            reduced_last=reduced_last,
            lsteps=lsteps,
            counter=counter,
            k=k,
        )
        new = PoolState(
            x=x, y=y, ids=state.ids, delta=e["xa"] - x, step=s + 1, restart=state.restart, extra=e
        )
        return new, broken

    def finished(self, state: PoolState) -> torch.Tensor:
        # iterates 0..n_iter are all evaluated, as in the reference (start point + n_iter moves)
        return state.step > self.n_iter
