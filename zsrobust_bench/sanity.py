"""Sanity checks the engine runs and records with every evaluation.

Each check returns a JSON-ready dict with `check`, `status` ("ok", "warning" or "skipped") and a
one-line `message`, plus its numbers. None of them stops a run: they say when a number should not
be trusted (a weak attack, gradient masking, a model the attacks cannot see through).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .attacks.loop import eval_mode, run_sequence
from .attacks.losses import margin
from .attacks.pgd import PGD
from .engine.device import autocast
from .protocols import eps_label, parse_eps

TOL = 1e-9  # accuracies are exact fractions; allow only float rounding
# 100 * cos(...) is never piecewise linear: equal gradients 4/255 apart mean a fake Jacobian.
CONSTANT_FRACTION = 0.5
MAX_MESSAGES = 5  # distinct warning texts kept per dataset (zero-gradient ones differ only in their count)


def _result(check: str, ok: bool, message: str, **numbers: Any) -> dict[str, Any]:
    return {"check": check, "status": "ok" if ok else "warning", "message": message, **numbers}


def _input_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
    """Gradient of the summed margin loss w.r.t. the input (None when no gradient path exists)."""
    xr = x.detach().float().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model(xr)
        if not logits.requires_grad:
            return None
        loss = -margin(logits, y).sum()
        (grad,) = torch.autograd.grad(loss, xr, allow_unused=True)
    return grad


def gradient_check(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> dict[str, Any]:
    """Input gradients must exist, be non-zero and finite, and change when the input changes.

    Uses the margin loss z_y - max_{j!=y} z_j, which does not saturate, so a zero gradient means the
    model's own gradient is zero (quantised or piecewise-constant forward), not a saturated softmax.
    The gradient is also taken at a point 4/255 away (seeded signs); identical gradients for at
    least half the samples mean a constant Jacobian (e.g. a straight-through forward), which PGD cannot follow.
    Flags: no gradient path, all gradients zero, any gradient non-finite, half or more constant.
    """
    n = int(x.shape[0])
    if n == 0:
        return {"check": "gradients", "status": "skipped", "message": "no samples", "n": 0}
    with eval_mode(model):
        grad = _input_gradients(model, x, y)
        if grad is None:
            return _result(
                "gradients",
                False,
                "no gradient path from the input to the logits (forward detaches or runs without grad)",
                n=n,
                zero_fraction=1.0,
                nonfinite_fraction=0.0,
                constant_fraction=0.0,
            )
        flat = grad.flatten(1)
        nonfinite = ~torch.isfinite(flat).all(dim=1)
        zero = (flat == 0).all(dim=1)
        g = torch.Generator().manual_seed(int(seed))
        signs = torch.randint(0, 2, tuple(x.shape), generator=g).to(x.device, torch.float32) * 2 - 1
        probe = (x.detach().float() + signs * (4 / 255)).clamp(0, 1)
        grad2 = _input_gradients(model, probe, y)
    flat2 = grad2.flatten(1) if grad2 is not None else torch.zeros_like(flat)
    constant = ~zero & ~nonfinite & (flat2 == flat).all(dim=1)
    numbers = {
        "n": n,
        "zero_fraction": float(zero.float().mean()),
        "nonfinite_fraction": float(nonfinite.float().mean()),
        "constant_fraction": float(constant.float().mean()),
    }
    problems = []
    if bool(nonfinite.any()):
        problems.append(f"{int(nonfinite.sum())}/{n} samples have non-finite input gradients")
    if bool(zero.all()):
        problems.append(
            "every input gradient is exactly zero (non-differentiable or piecewise-constant forward)"
        )
    if float(constant.float().mean()) >= CONSTANT_FRACTION:
        problems.append(
            f"{int(constant.sum())}/{n} input gradients do not change with the input "
            "(constant Jacobian, e.g. a straight-through forward)"
        )
    if problems:
        return _result(
            "gradients", False, "; ".join(problems) + ": gradient attacks are unreliable", **numbers
        )
    return _result("gradients", True, "input gradients are non-zero, finite and input-dependent", **numbers)


def masking_check(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    *,
    eps: float = 64 / 255,
    steps: int = 20,
    n_samples: int = 16,
    max_robust_fraction: float = 0.05,
    seed: int = 0,
) -> dict[str, Any]:
    """PGD (CE, then CW margin) at a huge Linf eps must break nearly every correctly classified sample.

    At 64/255 an undefended or honestly defended classifier reaches ~0% accuracy; a higher number
    means the attack cannot follow the model's gradients (masking), not that the model is robust.
    """
    if int(y.max()) >= num_classes or int(y.min()) < 0:
        raise ValueError(f"labels outside [0, {num_classes})")
    with eval_mode(model), torch.no_grad():
        correct = (model(x).argmax(dim=1) == y).cpu()
    rows = torch.nonzero(correct).flatten()[:n_samples]
    numbers: dict[str, Any] = {
        "eps": eps,
        "eps_label": eps_label(eps),
        "steps": steps,
        "n": int(rows.numel()),
    }
    if rows.numel() == 0:
        return {
            "check": "gradient_masking",
            "status": "skipped",
            "message": "no correctly classified samples",
            **numbers,
        }
    attacks = [
        PGD(eps, steps=steps, step_size=eps / 4, loss=loss, name=f"masking-{loss}", random_start=True)
        for loss in ("ce", "cw")
    ]
    dev_rows = rows.to(x.device)
    out = run_sequence(attacks, model, x[dev_rows], y[dev_rows], rows, seed, batch_size=max(1, rows.numel()))
    robust = int(out.robust.sum())
    frac = robust / int(rows.numel())
    numbers.update(robust=robust, robust_fraction=frac, max_robust_fraction=max_robust_fraction)
    if frac > max_robust_fraction:
        return _result(
            "gradient_masking",
            False,
            f"PGD at {eps_label(eps)} left {robust}/{rows.numel()} samples correct (expected ~0): "
            "likely gradient masking; robust accuracy from gradient attacks is not trustworthy",
            **numbers,
        )
    return _result(
        "gradient_masking", True, f"PGD at {eps_label(eps)} reaches {frac:.0%} accuracy", **numbers
    )


def attack_checks(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    *,
    seed: int = 0,
    n_samples: int = 16,
) -> list[dict[str, Any]]:
    """The per-dataset model checks in one call: gradient health and the huge-eps masking check."""
    rows = slice(0, n_samples)
    return [
        gradient_check(model, x[rows], y[rows], seed=seed),
        masking_check(model, x, y, num_classes, n_samples=n_samples, seed=seed),
    ]


def reach_checks(attack_records: Mapping[str, list[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Every stepwise attack must be able to reach its eps: steps * step_size >= eps.

    Input: per eps label, the attack records of `attacks.registry.build_attacks` (what ran, with
    its parameters). An attack whose steps cannot add up to eps never touches the boundary of its
    threat model (e.g. ten steps of 1/255 at eps 0.5), so its robust accuracy means nothing.
    Attacks without a fixed step (APGD adapts 2*eps) are not checked.
    """
    out: list[dict[str, Any]] = []
    for label, records in attack_records.items():
        for rec in records:
            params = rec.get("params") or {}
            if params.get("step_size") is None or params.get("steps") is None:
                continue
            eps, steps, step = float(params["eps"]), int(params["steps"]), float(params["step_size"])
            travel = steps * step
            ok = travel >= eps * (1 - 1e-9)
            message = (
                f"{rec['ran']} at {label}: {steps} steps of {eps_label(step)} reach {eps_label(travel)} >= eps"
                if ok
                else f"{rec['ran']} at {label}: {steps} steps of {eps_label(step)} move at most "
                f"{eps_label(travel)}, less than eps {label}: the attack cannot reach its threat model; "
                "its robust accuracy is meaningless (give a step size of at least eps/steps)"
            )
            out.append(
                _result(
                    "reach",
                    ok,
                    message,
                    attack=rec["ran"],
                    eps=label,
                    steps=steps,
                    step_size=step,
                    travel=travel,
                )
            )
    return out


def _eps_value(key: Any) -> float:
    return parse_eps(key) if isinstance(key, str) else float(key)


def consistency_checks(per_dataset_results: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Robust <= clean per dataset and eps; robust accuracy non-increasing in eps where several ran.

    Input: {dataset: {"clean_acc": float, "robust_acc": float | {eps (float or "4/255"): float}}};
    a "robust_acc_by_eps" mapping, where present, is used instead of "robust_acc".
    One record per dataset and check, passing ones included.
    """
    out: list[dict[str, Any]] = []
    for dataset, res in per_dataset_results.items():
        clean = res.get("clean_acc")
        robust = res.get("robust_acc_by_eps") or res.get("robust_acc")
        if clean is None or robust is None:
            continue
        by_eps = (
            sorted(((_eps_value(k), float(v)) for k, v in robust.items() if v is not None))
            if isinstance(robust, Mapping)
            else [(None, float(robust))]
        )
        for eps, acc in by_eps:
            label = eps_label(eps) if eps is not None else None
            ok = acc <= float(clean) + TOL
            msg = (
                f"robust {acc:g} <= clean {float(clean):g}"
                if ok
                else f"robust accuracy {acc:g} exceeds clean accuracy {float(clean):g}: bookkeeping error"
            )
            out.append(
                _result(
                    "robust_le_clean", ok, msg, dataset=dataset, eps=label, clean_acc=clean, robust_acc=acc
                )
            )
        if len(by_eps) > 1:
            values = {eps_label(e): a for e, a in by_eps}
            bad = [
                f"{eps_label(e1)}: {a1:g} < {eps_label(e2)}: {a2:g}"
                for (e1, a1), (e2, a2) in zip(by_eps, by_eps[1:], strict=False)
                if a2 > a1 + TOL
            ]
            msg = (
                "robust accuracy is non-increasing in eps"
                if not bad
                else "robust accuracy increases with eps (" + "; ".join(bad) + "): the attack is too weak"
            )
            out.append(_result("monotone_eps", not bad, msg, dataset=dataset, robust_acc=values))
    return out


def precision_check(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    precision: str,
    steps: int = 10,
    seed: int = 0,
) -> dict[str, Any]:
    """Low-precision autocast (CUDA only) is allowed only if PGD under it is no weaker than in fp32 here."""
    ids = torch.arange(x.shape[0])
    robust = {}
    for prec in ("fp32", precision):
        attack = PGD(eps, steps=steps, step_size=eps / 4, name="precision-check")
        with autocast(prec, x.device):
            robust[prec] = int(run_sequence([attack], model, x, y, ids, seed).robust.sum())
    ok = robust[precision] <= robust["fp32"]
    numbers = {"precision": precision, "eps": eps, "steps": steps, "n": int(x.shape[0]), "robust": robust}
    if ok:
        return _result(
            "precision", True, f"{precision} PGD is at least as strong as fp32 on these samples", **numbers
        )
    return _result(
        "precision",
        False,
        f"{precision} PGD leaves {robust[precision]} samples robust against {robust['fp32']} in fp32: use fp32",
        **numbers,
    )


def attack_warnings_check(fired: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """What pyautoattack warned during the run (its zero-gradient check): one warning record, or None.

    Input: one {"attack", "eps" (label), "message"} per warning logged. The reference APGD on a DLR
    loss (apgd-t, apgd-dlr) warns when a sample's input gradient is exactly zero at the start of a
    run: the attack cannot move it, so robust accuracy is overstated. None when nothing fired, so a
    clean run's results do not change.
    """
    if not fired:
        return None
    by_attack = Counter(f"{w['attack']} at {w['eps']}" for w in fired)
    messages = list(dict.fromkeys(str(w["message"]) for w in fired))
    where = ", ".join(f"{k}: {v}" for k, v in by_attack.items())
    return _result(
        "attack_warnings",
        False,
        f"pyautoattack warned {len(fired)} times ({where}), e.g. {messages[0]}",
        warnings=len(fired),
        by_attack=dict(by_attack),
        messages=messages[:MAX_MESSAGES],
    )
