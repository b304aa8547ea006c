"""Thin adapters over pyautoattack (the PyPI packaging of the reference AutoAttack).

Each adapter builds the reference attack object with the settings `AutoAttack(version='standard')`
gives it, runs `perturb` on one batch and reports which samples the returned points misclassify.

- Seeds: the run seed is passed to pyautoattack exactly as `AutoAttack(seed=...)` would, so the
  outcome equals the reference's on the same batches. pyautoattack reseeds the global CPU and CUDA
  generators in every `perturb`; the adapters fork and restore that state, so the caller's RNG is
  untouched. Random draws depend on the batch (pyautoattack draws per batch), so identical
  batching gives identical results.
- Targets: `n_target_classes = min(requested, C - 1)`.
- Few classes: targeted attacks, FAB-T and Square do not apply with C <= 2 (APGD-CE alone, as in
  TeCoA and RobustVLM). With C == 3 the reference targeted DLR loss indexes the 4th-largest logit
  and raises IndexError, so `apgd-t` runs untargeted APGD-DLR instead and says so in its params.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pyautoattack
import torch
from pyautoattack import AutoAttack
from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted
from pyautoattack.fab_pt import FABAttack_PT
from pyautoattack.square import SquareAttack
from torch import nn

from ..protocols.enums import ATTACK_NORMS
from .base import BatchAttack
from .loop import eval_mode

_LOGGER_NAME = "zsrobust_bench.autoattack"


def n_targets(requested: int, num_classes: int) -> int:
    """Number of target classes actually used: min(requested, C - 1)."""
    if requested < 1:
        raise ValueError(f"n_target_classes must be >= 1, got {requested}")
    return min(int(requested), int(num_classes) - 1)


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Save and restore the global CPU RNG and, when CUDA exists, every CUDA generator."""
    cuda_devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=cuda_devices, device_type="cuda"):
        yield


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def captured_warnings(logger: logging.Logger) -> Iterator[list[str]]:
    """Collect WARNING+ messages pyautoattack logs (e.g. its zero-gradient check) during a run."""
    handler = _Capture()
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


class PyAutoAttackAdapter(BatchAttack):
    """Common run(): eval mode, forked RNG, reference call, threat-model check, broken mask."""

    reference_name: str = ""

    def __init__(self, eps: float, num_classes: int, norm: str = "Linf") -> None:
        super().__init__(eps)
        if norm not in ATTACK_NORMS:
            raise ValueError(
                f"{self.name}: norm must be one of {[str(n) for n in ATTACK_NORMS]}, got {norm!r}"
            )
        if num_classes < 2:
            raise ValueError(f"{self.name}: needs at least 2 classes, got {num_classes}")
        self.norm = norm
        self.num_classes = int(num_classes)
        self.last_warnings: list[str] = []

    @abstractmethod
    def _reference(self, model: nn.Module, seed: int, device: torch.device, logger: logging.Logger) -> Any:
        """The pyautoattack attack object for one run, seeded with the run seed."""

    @abstractmethod
    def _own_params(self) -> dict[str, Any]:
        """This attack's settings, for params()."""

    def params(self) -> dict[str, Any]:
        return {
            "attack": self.name,
            "implementation": f"pyautoattack {pyautoattack.__version__} {self.reference_name}",
            "norm": self.norm,
            "eps": self.eps,
            "num_classes": self.num_classes,
            **self._own_params(),
        }

    def run(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor, seed: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attack one batch; returns (broken mask, adversarial inputs)."""
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{self.name}: {x.shape[0]} inputs but {y.shape[0]} labels")
        if x.shape[0] == 0:
            return torch.zeros(0, dtype=torch.bool, device=x.device), x.clone()
        if int(y.max()) >= self.num_classes or int(y.min()) < 0:
            raise ValueError(f"{self.name}: labels outside [0, {self.num_classes})")
        logger = logging.getLogger(_LOGGER_NAME)
        x32 = x.detach().float()
        with eval_mode(model), preserved_rng(), captured_warnings(logger) as warned, torch.no_grad():
            attack = self._reference(model, int(seed), x.device, logger)
            x_adv = attack.perturb(x32.clone(), y.clone()).detach()
            pred = model(x_adv).argmax(dim=1)
        self.last_warnings = list(warned)
        self._check_threat(x32, x_adv)
        return pred != y, x_adv

    def _check_threat(self, x: torch.Tensor, x_adv: torch.Tensor) -> None:
        delta = (x_adv - x).flatten(1)
        size = delta.abs().amax(dim=1) if self.norm == "Linf" else delta.norm(dim=1)
        bad = (size > self.eps * (1 + 1e-5) + 1e-6) | (x_adv.min() < 0) | (x_adv.max() > 1)
        if bad.any():
            raise RuntimeError(
                f"{self.name} returned points outside the {self.norm} ball of radius {self.eps} or outside [0,1] "
                f"(max size {float(size.max()):.6g}); this is a bug in the attack"
            )


class APGD(PyAutoAttackAdapter):
    """Untargeted APGD on CE (`apgd-ce`) or DLR (`apgd-dlr`) loss."""

    reference_name = "APGDAttack"

    def __init__(
        self,
        eps: float,
        num_classes: int,
        loss: str = "ce",
        n_iter: int = 100,
        n_restarts: int = 1,
        rho: float = 0.75,
        eot_iter: int = 1,
        norm: str = "Linf",
        note: str | None = None,
    ) -> None:
        if loss not in ("ce", "dlr"):
            raise ValueError(f"APGD loss must be 'ce' or 'dlr', got {loss!r}")
        self.name = f"apgd-{loss}"
        super().__init__(eps, num_classes, norm)
        if loss == "dlr" and num_classes < 3:
            raise ValueError("the DLR loss needs at least 3 classes")
        self.loss = loss
        self.n_iter, self.n_restarts, self.rho, self.eot_iter = (
            int(n_iter),
            int(n_restarts),
            float(rho),
            int(eot_iter),
        )
        self.note = note

    def _reference(self, model: nn.Module, seed: int, device: torch.device, logger: logging.Logger) -> Any:
        attack = APGDAttack(
            model,
            n_iter=self.n_iter,
            norm=self.norm,
            n_restarts=self.n_restarts,
            eps=self.eps,
            seed=seed,
            loss=self.loss,
            eot_iter=self.eot_iter,
            rho=self.rho,
            verbose=False,
            device=device,
            logger=logger,
        )
        return attack

    def _own_params(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "loss": self.loss,
            "n_iter": self.n_iter,
            "n_restarts": self.n_restarts,
            "rho": self.rho,
            "eot_iter": self.eot_iter,
        }
        if self.note:
            out["note"] = self.note
        return out


class APGDTargeted(PyAutoAttackAdapter):
    """APGD on the targeted DLR loss over the top min(9, C-1) non-true classes (`apgd-t`); C >= 4."""

    name = "apgd-t"
    reference_name = "APGDAttack_targeted"

    def __init__(
        self,
        eps: float,
        num_classes: int,
        n_iter: int = 100,
        n_restarts: int = 1,
        n_target_classes: int = 9,
        rho: float = 0.75,
        eot_iter: int = 1,
        norm: str = "Linf",
    ) -> None:
        super().__init__(eps, num_classes, norm)
        if num_classes < 4:
            raise ValueError("the targeted DLR loss needs at least 4 classes")
        self.n_iter, self.n_restarts, self.rho, self.eot_iter = (
            int(n_iter),
            int(n_restarts),
            float(rho),
            int(eot_iter),
        )
        self.n_target_classes_requested = int(n_target_classes)
        self.n_target_classes = n_targets(n_target_classes, num_classes)

    def _reference(self, model: nn.Module, seed: int, device: torch.device, logger: logging.Logger) -> Any:
        attack = APGDAttack_targeted(
            model,
            n_iter=self.n_iter,
            norm=self.norm,
            n_restarts=self.n_restarts,
            eps=self.eps,
            seed=seed,
            eot_iter=self.eot_iter,
            rho=self.rho,
            n_target_classes=self.n_target_classes,
            verbose=False,
            device=device,
            logger=logger,
        )
        return attack

    def _own_params(self) -> dict[str, Any]:
        return {
            "loss": "dlr-targeted",
            "n_iter": self.n_iter,
            "n_restarts": self.n_restarts,
            "n_target_classes": self.n_target_classes,
            "n_target_classes_requested": self.n_target_classes_requested,
            "rho": self.rho,
            "eot_iter": self.eot_iter,
        }


class FABTargeted(PyAutoAttackAdapter):
    """Targeted FAB over the top min(9, C-1) non-true classes (`fab-t`)."""

    name = "fab-t"
    reference_name = "FABAttack_PT"

    def __init__(
        self,
        eps: float,
        num_classes: int,
        n_iter: int = 100,
        n_restarts: int = 1,
        n_target_classes: int = 9,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        norm: str = "Linf",
    ) -> None:
        super().__init__(eps, num_classes, norm)
        self.n_iter, self.n_restarts = int(n_iter), int(n_restarts)
        self.alpha_max, self.eta, self.beta = float(alpha_max), float(eta), float(beta)
        self.n_target_classes_requested = int(n_target_classes)
        self.n_target_classes = n_targets(n_target_classes, num_classes)

    def _reference(self, model: nn.Module, seed: int, device: torch.device, logger: logging.Logger) -> Any:
        attack = FABAttack_PT(
            model,
            norm=self.norm,
            n_restarts=self.n_restarts,
            n_iter=self.n_iter,
            eps=self.eps,
            alpha_max=self.alpha_max,
            eta=self.eta,
            beta=self.beta,
            verbose=False,
            seed=seed,
            targeted=True,
            device=device,
            n_target_classes=self.n_target_classes,
        )
        return attack

    def _own_params(self) -> dict[str, Any]:
        return {
            "targeted": True,
            "n_iter": self.n_iter,
            "n_restarts": self.n_restarts,
            "n_target_classes": self.n_target_classes,
            "n_target_classes_requested": self.n_target_classes_requested,
            "alpha_max": self.alpha_max,
            "eta": self.eta,
            "beta": self.beta,
        }


class Square(PyAutoAttackAdapter):
    """Square Attack (black-box, margin loss) with the standard AutoAttack schedule (`square`)."""

    name = "square"
    reference_name = "SquareAttack"

    def __init__(
        self,
        eps: float,
        num_classes: int,
        n_queries: int = 5000,
        p_init: float = 0.8,
        n_restarts: int = 1,
        rescale_schedule: bool = False,
        norm: str = "Linf",
    ) -> None:
        super().__init__(eps, num_classes, norm)
        self.n_queries, self.p_init, self.n_restarts = int(n_queries), float(p_init), int(n_restarts)
        self.rescale_schedule = bool(rescale_schedule)

    def _reference(self, model: nn.Module, seed: int, device: torch.device, logger: logging.Logger) -> Any:
        return SquareAttack(
            model,
            norm=self.norm,
            n_queries=self.n_queries,
            eps=self.eps,
            p_init=self.p_init,
            n_restarts=self.n_restarts,
            seed=seed,
            verbose=False,
            loss="margin",
            resc_schedule=self.rescale_schedule,
            device=device,
        )

    def _own_params(self) -> dict[str, Any]:
        return {
            "loss": "margin",
            "n_queries": self.n_queries,
            "p_init": self.p_init,
            "n_restarts": self.n_restarts,
            "rescale_schedule": self.rescale_schedule,
        }


STANDARD_ATTACKS = ("apgd-ce", "apgd-t", "fab-t", "square")


REFERENCE_PARTS = ("apgd", "apgd_targeted", "fab", "square")


def reference_autoattack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    num_classes: int,
    seed: int,
    norm: str = "Linf",
    batch_size: int = 250,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(robust mask, x_adv) from pyautoattack's own `AutoAttack(version='standard').run_standard_evaluation`.

    Targets are set to min(9, C-1) on APGD-T and FAB-T. `settings` sets attributes on the reference
    attack objects after construction, as `AutoAttack._set_version` itself does (e.g.
    {"square": {"n_queries": 500}}); APGD's `n_iter` cannot be set this way (its step-size schedule
    is derived from it in the constructor). Needs C >= 4 (the reference targeted DLR loss). The
    global RNG is restored afterwards.
    """
    if num_classes < 4:
        raise ValueError(
            f"reference standard AutoAttack needs at least 4 classes (targeted DLR), got {num_classes}"
        )
    with eval_mode(model), preserved_rng():
        aa = AutoAttack(model, device=x.device, eps=eps, norm=norm, seed=seed, version="standard")
        aa.apgd_targeted.n_target_classes = n_targets(9, num_classes)
        aa.fab.n_target_classes = n_targets(9, num_classes)
        for part, attrs in (settings or {}).items():
            if part not in REFERENCE_PARTS:
                raise ValueError(f"unknown AutoAttack part {part!r}; known: {REFERENCE_PARTS}")
            for attr, value in attrs.items():
                if part.startswith("apgd") and attr == "n_iter":
                    raise ValueError(
                        "APGD n_iter is fixed at construction (its step-size schedule depends on it)"
                    )
                if not hasattr(getattr(aa, part), attr):
                    raise ValueError(f"AutoAttack.{part} has no attribute {attr!r}")
                setattr(getattr(aa, part), attr, value)
        x_adv, y_adv = aa.run_standard_evaluation(x.detach().float(), y, batch_size=batch_size)
    return (y_adv == y).cpu(), x_adv
