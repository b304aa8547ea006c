"""torchattacks as an attack library in custom runs: `torchattacks:NAME` with literal keyword arguments.

The torchattacks attack gets our classifier (pixels in [0,1] in, logits out; normalisation happens
inside the model, so torchattacks' set_normalization_used is not needed) and the run's eps. Only
attacks with an `eps` argument are accepted: an unbounded attack (e.g. torchattacks' L2 CW) does not
measure robust accuracy at a radius. Never part of a frozen protocol (any use makes the run custom).
"""

from __future__ import annotations

import ast
import inspect
import json
from typing import Any

import torch
from torch import nn

from ..errors import ZSBenchError
from .autoattack import PyAutoAttackAdapter, preserved_rng
from .base import BatchAttack
from .loop import eval_mode

PREFIX = "torchattacks:"


class TorchattacksMissing(ZSBenchError):
    """torchattacks is an optional extra."""


def _module() -> Any:
    try:
        import torchattacks
    except ImportError as exc:
        raise TorchattacksMissing(
            "torchattacks is not installed", "pip install 'zsrobust-bench[torchattacks]'"
        ) from exc
    return torchattacks


def parse_attack_spec(text: str) -> tuple[str, dict[str, Any]]:
    """'torchattacks:PGD(steps=50, alpha=1/255)' -> ('torchattacks:PGD', {...}); literals only, no eval."""
    name, _, rest = text.partition("(")
    name = name.strip()
    if not name.startswith(PREFIX) or not name[len(PREFIX) :].isidentifier():
        raise ZSBenchError(
            f"bad attack {text!r}", "use torchattacks:NAME or torchattacks:NAME(key=value, ...)"
        )
    if not rest:
        return name, {}
    if not rest.endswith(")"):
        raise ZSBenchError(f"bad attack {text!r}: missing ')'")
    try:
        call = ast.parse(f"f({rest}", mode="eval").body
    except SyntaxError as exc:
        raise ZSBenchError(f"bad attack arguments in {text!r}: {exc.msg}") from exc
    if not isinstance(call, ast.Call) or call.args:
        raise ZSBenchError(f"bad attack arguments in {text!r}: keyword arguments only")
    return name, {kw.arg: _literal(kw.value, text) for kw in call.keywords}


def parse_attack_specs(specs: list[str], kwargs_json: str | None) -> list[tuple[str, dict[str, Any]]]:
    """CLI --attack values plus --attack-kwargs (a JSON object merged into each) -> attack steps."""
    extra: dict[str, Any] = {}
    if kwargs_json:
        try:
            extra = json.loads(kwargs_json)
        except json.JSONDecodeError as exc:
            raise ZSBenchError(f"--attack-kwargs is not JSON: {exc.msg}") from exc
        if not isinstance(extra, dict):
            raise ZSBenchError("--attack-kwargs must be a JSON object")
    steps = []
    for text in specs:
        name, kw = parse_attack_spec(text)
        attack_class(name)  # fail now, with one line, on an unknown or unbounded attack
        steps.append((name, {**extra, **kw}))
    return steps


def _literal(node: ast.expr, text: str) -> Any:
    """A literal, or a fraction of two numbers (1/255)."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        return _literal(node.left, text) / _literal(node.right, text)
    try:
        return ast.literal_eval(node)
    except ValueError as exc:
        raise ZSBenchError(f"bad attack arguments in {text!r}: only literal values are allowed") from exc


def attack_class(name: str) -> type:
    """The torchattacks class called NAME (after the prefix), which must take `eps`."""
    ta = _module()
    cls = getattr(ta, name[len(PREFIX) :], None)
    if not isinstance(cls, type):
        raise ZSBenchError(
            f"torchattacks has no attack {name[len(PREFIX) :]!r}", f"torchattacks {ta.__version__}"
        )
    if "eps" not in inspect.signature(cls.__init__).parameters:
        raise ZSBenchError(
            f"{name} takes no eps: it is unbounded and cannot measure robust accuracy at a radius",
            "see docs/torchattacks.md for the bounded attacks",
        )
    return cls


def accepted_params(name: str) -> tuple[str, ...]:
    """The constructor arguments of the torchattacks class, minus model and eps (set by the run)."""
    sig = inspect.signature(attack_class(name).__init__)
    return tuple(p for p in sig.parameters if p not in ("self", "model", "eps", "device"))


class TorchattacksAttack(BatchAttack):
    """Run one torchattacks attack on a batch, check the threat model, report broken samples."""

    def __init__(self, name: str, eps: float, num_classes: int, norm: str = "Linf", **kwargs: Any) -> None:
        super().__init__(eps)
        self.name, self.norm, self.num_classes = name, norm, int(num_classes)
        self.cls = attack_class(name)
        if "n_classes" in inspect.signature(self.cls.__init__).parameters:
            kwargs.setdefault("n_classes", self.num_classes)  # torchattacks defaults to 10 (CIFAR-10)
        self.kwargs = kwargs

    def params(self) -> dict[str, Any]:
        return {
            "attack": self.name,
            "implementation": f"torchattacks {_module().__version__} {self.cls.__name__}",
            "norm": self.norm,
            "eps": self.eps,
            **self.kwargs,
        }

    def run(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor, seed: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attack one batch; returns (broken mask, adversarial inputs)."""
        if x.shape[0] == 0:
            return torch.zeros(0, dtype=torch.bool, device=x.device), x.clone()
        x32 = x.detach().float()
        with eval_mode(model), preserved_rng():
            torch.manual_seed(int(seed))
            attack = self.cls(model, eps=self.eps, **self.kwargs)
            x_adv = attack(x32.clone(), y.clone()).detach()
            with torch.no_grad():
                pred = model(x_adv).argmax(dim=1)
        PyAutoAttackAdapter._check_threat(self, x32, x_adv)  # same ball and [0,1] check as the others
        return pred != y, x_adv


def torchattacks_info(name: str) -> Any:
    """A registry entry (attacks.registry.AttackInfo) for `torchattacks:NAME`."""
    from .registry import AttackInfo

    def build(eps: float, num_classes: int, norm: str = "Linf", **kwargs: Any) -> TorchattacksAttack:
        return TorchattacksAttack(name, eps, num_classes, norm=norm, **kwargs)

    return AttackInfo(name, build, (*accepted_params(name), "norm"), 2, f"torchattacks {name[len(PREFIX) :]}")
