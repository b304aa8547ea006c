"""A fixed-shape pool of slots for one stepwise attack (PGD): the device always steps `capacity` rows.

A row leaves the moment an iterate is misclassified (worst case over iterates, so stopping it
changes nothing) or its iterations run out; a fresh row takes the free slot before the next step.
Every step runs the same batch shape and a free slot holds an inert row that is computed and
ignored. Kernels chosen by batch shape therefore never change with packing: a row's arithmetic
is the same whichever rows share its batch and wherever it sits (checked bitwise on CPU), so
records do not depend on packing, shard size or world size for a given capacity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .attacks.base import PoolState, StepwiseAttack
from .attacks.pgd import PGD
from .engine_data import Block


@dataclass
class PoolExit:
    """Rows that left the pool after one step."""

    rows: Block  # the rows' clean inputs (on the pool's device), labels, ids, shard and position
    broken: np.ndarray  # bool: an iterate was misclassified
    step: np.ndarray  # int64: the iterate that broke the row (0 = start point), -1 when not broken
    nonfinite: np.ndarray  # bool: a non-finite logit was seen at some iterate


class SlotPool:
    """Fixed-capacity pool for one stepwise attack; `add` fills free slots, `step` advances all of them."""

    def __init__(
        self,
        attack: StepwiseAttack,
        capacity: int,
        seed: int,
        device: torch.device | str,
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"pool capacity must be >= 1, got {capacity}")
        self.attack = attack
        self.capacity = int(capacity)
        self.seed = int(seed)
        self.device = torch.device(device)
        self.memory_format = memory_format
        self.state: PoolState | None = None
        self.active = np.zeros(capacity, dtype=bool)
        self.shard = np.zeros(capacity, dtype=np.int64)
        self.pos = np.zeros(capacity, dtype=np.int64)
        self.restart = np.zeros(capacity, dtype=np.int64)
        self.nonfinite = np.zeros(capacity, dtype=bool)
        self.iterate = np.zeros(capacity, dtype=np.int64)  # host copy of state.step
        self.steps_run = 0  # device steps (each over `capacity` rows)
        self.forward_only_steps = 0  # of which needed no gradient (every occupied row at its last iterate)
        self.row_steps = 0  # steps of occupied slots

    def __len__(self) -> int:
        return int(self.active.sum())

    def room(self) -> int:
        """Free slots."""
        return self.capacity - len(self)

    def add(self, block: Block) -> None:
        """Start the attack on `block`'s rows (random start per sample id) in free slots."""
        k = len(block)
        if k == 0:
            return
        free = np.flatnonzero(~self.active)[:k]
        if free.shape[0] < k:
            raise ValueError(f"{k} rows do not fit in {self.room()} free slots")
        x = block.x.to(self.device, non_blocking=True)
        y = block.y.to(self.device, non_blocking=True)
        fresh = self.attack.init(x, y, block.ids, self.seed, restart=0)
        if self.state is None:
            self.state = _blank_like(fresh, self.capacity, self.memory_format)
        _write(self.state, free, fresh)
        self.active[free] = True
        self.shard[free] = block.shard
        self.pos[free] = block.pos
        self.restart[free] = 0
        self.nonfinite[free] = False
        self.iterate[free] = 0

    def step(self, model: nn.Module) -> PoolExit | None:
        """One iteration over every slot; returns the rows that left (None when none did)."""
        if self.state is None or not self.active.any():
            raise RuntimeError("step() on an empty pool")
        attack = self.attack
        if self._last_iterate_only():
            state, hit = _pgd_final_iterate(attack, model, self.state)
            self.forward_only_steps += 1
        elif getattr(attack, "compact_tail", False) and len(self) * 4 <= self.capacity:
            state, hit = self._compact_step(model)
        else:
            state, hit = attack.step(model, self.state)
        self.state = state
        done = attack.finished(state)
        bad = state.extra.get("nonfinite")
        bad = bad if bad is not None else torch.zeros_like(done)
        # one device-to-host copy per step
        flags = torch.stack([hit.long(), done.long(), bad.long(), state.step - 1]).cpu().numpy()
        act = self.active
        hit, done, bad, evaluated = (
            flags[0].astype(bool) & act,
            flags[1].astype(bool) & act,
            flags[2] != 0,
            flags[3],
        )
        self.iterate = evaluated + 1
        self.steps_run += 1
        self.row_steps += int(act.sum())
        self.nonfinite |= bad & act
        again = done & ~hit & (self.restart + 1 < attack.restarts)
        leave = hit | (done & ~again)
        if again.any():
            self._restart(again)
        if not leave.any():
            return None
        slots = np.flatnonzero(leave)
        t = torch.from_numpy(slots)
        td = t.to(self.device)
        rows = Block(
            state.x[td], state.y[td], state.ids[t].clone(), self.shard[slots].copy(), self.pos[slots].copy()
        )
        out = PoolExit(
            rows=rows,
            broken=hit[slots],
            step=np.where(hit[slots], evaluated[slots], -1).astype(np.int64),
            nonfinite=self.nonfinite[slots].copy(),
        )
        self.active[slots] = False
        return out

    def _compact_step(self, model: nn.Module) -> tuple[PoolState, torch.Tensor]:
        """Step only the occupied slots (pool at most a quarter full: the queue ran dry, long runs left).

        For attacks that opt in (`compact_tail`): APGD's restarts and targets leave a tail of a few
        robust rows running up to runs * (n_iter + 1) steps, which a full-shape pool would pay for at
        full capacity. The batch shape then follows occupancy, so bitwise packing independence is
        traded for speed in the tail (outcomes agree; float noise can differ with the kernels).
        """
        assert self.state is not None
        slots = np.flatnonzero(self.active)
        t = torch.from_numpy(slots)
        td = t.to(self.device)
        sub, sub_hit = self.attack.step(model, self.state.select(td))
        _write(self.state, slots, sub)
        hit = torch.zeros(self.capacity, dtype=torch.bool, device=self.device)
        hit[td] = sub_hit
        return self.state, hit

    def _restart(self, rows: np.ndarray) -> None:
        """Finished, unbroken rows with restarts left start again from a new random point, in place."""
        assert self.state is not None
        for r in np.unique(self.restart[rows]):
            slots = np.flatnonzero(rows & (self.restart == r))
            t = torch.from_numpy(slots)
            td = t.to(self.device)
            st = self.state
            fresh = self.attack.init(st.x[td], st.y[td], st.ids[t], self.seed, restart=int(r) + 1)
            _write(st, slots, fresh)
            self.restart[slots] = r + 1
            self.iterate[slots] = 0

    def _last_iterate_only(self) -> bool:
        """Whether every occupied slot is at its last PGD iterate (its gradient would be thrown away)."""
        attack = self.attack
        return (
            isinstance(attack, PGD)
            and type(attack).step is PGD.step
            and bool((self.iterate[self.active] == attack.total_steps).all())
        )


def _pgd_final_iterate(attack: PGD, model: nn.Module, state: PoolState) -> tuple[PoolState, torch.Tensor]:
    """`PGD.step` for a pool whose rows are all at their last iterate: the same forward, no backward.

    The forward runs with gradients enabled exactly as in `PGD.step` (inference mode would pick
    other attention kernels), so the logits are bitwise those `PGD.step` would compute; no row
    takes an update at its last iterate, so skipping the backward changes nothing.
    """
    x_adv = (state.x + state.delta).detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x_adv)
    logits = logits.detach()
    finite = torch.isfinite(logits).all(dim=1)
    broken = (logits.argmax(dim=1) != state.y) & finite
    state.extra["nonfinite"] = ~finite
    new = PoolState(
        x=state.x,
        y=state.y,
        ids=state.ids,
        delta=state.delta,
        step=state.step + 1,
        restart=state.restart,
        extra=state.extra,
    )
    return new, broken


def _blank_like(fresh: PoolState, capacity: int, memory_format: torch.memory_format) -> PoolState:
    """A full-capacity state of inert zero rows shaped like `fresh` (computed, never reported).

    Image-shaped buffers get `memory_format` (channels-last on CUDA); in-place refills keep it.
    """

    def blank(t: torch.Tensor) -> torch.Tensor:
        z = torch.zeros((capacity, *t.shape[1:]), dtype=t.dtype, device=t.device)
        return z.contiguous(memory_format=memory_format) if z.dim() == 4 else z

    return PoolState(
        x=blank(fresh.x),
        y=blank(fresh.y),
        ids=torch.full((capacity,), -1, dtype=torch.int64),
        delta=blank(fresh.delta),
        step=blank(fresh.step),
        restart=blank(fresh.restart),
        extra={k: blank(v) for k, v in fresh.extra.items()},
    )


def _write(state: PoolState, slots: np.ndarray, fresh: PoolState) -> None:
    """Copy `fresh`'s rows into `state` at `slots` (in place)."""
    t = torch.from_numpy(np.ascontiguousarray(slots, dtype=np.int64))
    td = t.to(state.x.device)
    state.x[td] = fresh.x
    state.y[td] = fresh.y
    state.ids[t] = fresh.ids.to(state.ids.device)
    state.delta[td] = fresh.delta.to(state.delta.dtype)
    state.step[td] = fresh.step
    state.restart[td] = fresh.restart
    for k, v in fresh.extra.items():
        if k not in state.extra:
            raise RuntimeError(f"attack state lost its {k!r} field between steps")
        state.extra[k][td] = v
