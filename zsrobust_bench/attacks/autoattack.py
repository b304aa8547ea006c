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
- Warnings: what the reference logs (APGD's zero-gradient check on DLR losses) stays on the
  adapter until `drain_warnings`; the evaluation records it in the dataset's sanity checks.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar

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
from .settings import (
    APGDSettings,
    APGDTargetedSettings,
    AttackSettings,
    FABTargetedSettings,
    SquareSettings,
    n_targets,
    recorded_header,
)

_LOGGER_NAME = "zsrobust_bench.autoattack"


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
    """Common run(): eval mode, forked RNG, reference call, threat-model check, broken mask.

    Each adapter declares its parameters once, as `settings_type` (attacks.settings); `params()`
    and the pyautoattack call are derived from it. `_fixed()` is what the adapter fixes itself
    (recorded first, passed to the reference unless named in `internal`).
    """

    reference: ClassVar[type]  # the pyautoattack attack class
    settings_type: ClassVar[type[AttackSettings]]
    takes_logger: ClassVar[bool] = False  # the reference logs warnings (APGD's zero-gradient check)
    internal: ClassVar[tuple[str, ...]] = ()  # fixed entries the reference sets itself

    def __init__(
        self, eps: float, num_classes: int, norm: str = "Linf", note: str | None = None, **settings: Any
    ) -> None:
        super().__init__(eps)
        if norm not in ATTACK_NORMS:
            raise ValueError(
                f"{self.name}: norm must be one of {[str(n) for n in ATTACK_NORMS]}, got {norm!r}"
            )
        if num_classes < 2:
            raise ValueError(f"{self.name}: needs at least 2 classes, got {num_classes}")
        self.norm = norm
        self.num_classes = int(num_classes)
        self.settings = self.settings_type(**settings)
        self.note = note
        self.warnings: list[str] = []  # what the reference logged since the last `drain_warnings`

    def _fixed(self) -> dict[str, Any]:
        """Settings this adapter fixes rather than takes (e.g. the loss)."""
        return {}

    def params(self) -> dict[str, Any]:
        implementation = f"pyautoattack {pyautoattack.__version__} {self.reference.__name__}"
        return {
            **recorded_header(self, self.num_classes, implementation),
            **self._fixed(),
            **self.settings.recorded(self.num_classes),
            **({"note": self.note} if self.note else {}),
        }

    def _reference(self, model: nn.Module, seed: int, device: torch.device, logger: logging.Logger) -> Any:
        """The pyautoattack attack object for one run, seeded with the run seed."""
        fixed = {k: v for k, v in self._fixed().items() if k not in self.internal}
        return self.reference(
            model,
            norm=self.norm,
            eps=self.eps,
            seed=seed,
            verbose=False,
            device=device,
            **fixed,
            **self.settings.reference_kwargs(self.num_classes),
            **({"logger": logger} if self.takes_logger else {}),
        )

    def drain_warnings(self) -> list[str]:
        """The warnings the reference logged since the last call (e.g. zero gradients), then forget them."""
        out, self.warnings = self.warnings, []
        return out

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
        self.warnings.extend(warned)
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
    """Untargeted APGD on CE (`apgd-ce`) or DLR (`apgd-dlr`) loss; settings: `APGDSettings`."""

    reference = APGDAttack
    settings_type = APGDSettings
    takes_logger = True

    def __init__(
        self,
        eps: float,
        num_classes: int,
        loss: str = "ce",
        norm: str = "Linf",
        note: str | None = None,
        **settings: Any,
    ) -> None:
        if loss not in ("ce", "dlr"):
            raise ValueError(f"APGD loss must be 'ce' or 'dlr', got {loss!r}")
        self.name = f"apgd-{loss}"
        super().__init__(eps, num_classes, norm, note, **settings)
        if loss == "dlr" and num_classes < 3:
            raise ValueError("the DLR loss needs at least 3 classes")
        self.loss = loss

    def _fixed(self) -> dict[str, Any]:
        return {"loss": self.loss}


class APGDTargeted(PyAutoAttackAdapter):
    """APGD on the targeted DLR loss over the top min(9, C-1) non-true classes (`apgd-t`); C >= 4;
    settings: `APGDTargetedSettings`."""

    name = "apgd-t"
    reference = APGDAttack_targeted
    settings_type = APGDTargetedSettings
    takes_logger = True
    internal = ("loss",)  # APGDAttack_targeted fixes its loss itself

    def __init__(self, eps: float, num_classes: int, norm: str = "Linf", **settings: Any) -> None:
        super().__init__(eps, num_classes, norm, **settings)
        if num_classes < 4:
            raise ValueError("the targeted DLR loss needs at least 4 classes")

    @property
    def n_target_classes(self) -> int:
        """Targets actually used: min(requested, C - 1)."""
        return n_targets(self.settings.n_target_classes, self.num_classes)

    def _fixed(self) -> dict[str, Any]:
        return {"loss": "dlr-targeted"}


class FABTargeted(PyAutoAttackAdapter):
    """Targeted FAB over the top min(9, C-1) non-true classes (`fab-t`); settings: `FABTargetedSettings`."""

    name = "fab-t"
    reference = FABAttack_PT
    settings_type = FABTargetedSettings

    def _fixed(self) -> dict[str, Any]:
        return {"targeted": True}


class Square(PyAutoAttackAdapter):
    """Square Attack (black-box, margin loss) with the standard AutoAttack schedule (`square`);
    settings: `SquareSettings`."""

    name = "square"
    reference = SquareAttack
    settings_type = SquareSettings

    def _fixed(self) -> dict[str, Any]:
        return {"loss": "margin"}


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
