"""A fixed-shape pool of slots for one stepwise attack (PGD): the device always steps `capacity` rows.

A row leaves the moment an iterate is misclassified (worst case over iterates, so stopping it
changes nothing) or its iterations run out; a fresh row takes the free slot before the next step.
Every step runs the same batch shape and a free slot holds an inert row that is computed and
ignored. Kernels chosen by batch shape therefore never change with packing: a row's arithmetic
is the same whichever rows share its batch and wherever it sits (checked bitwise on CPU), so
records do not depend on packing, shard size or world size for a given capacity.

Runs (restarts, APGD-T's targets) of one sample form a group. Once the feeder has nothing more to
add (the pool has free slots when it is stepped), an attack that opts in (`compact_tail`) has its
free slots filled with the next runs of the samples still in the pool, so a few robust samples run
their restarts side by side instead of one after another, and the pool then steps only its occupied
rows. A group's outcome is the sequential one: the lowest run that breaks decides, with the iterate
that broke it; runs after it are dropped, runs before it finish first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..attacks.base import PoolState, StepwiseAttack
from .blocks import Block


@dataclass
class PoolExit:
    """Rows that left the pool after one step."""

    rows: Block  # the rows' clean inputs (on the pool's device), labels, ids, shard and position
    broken: np.ndarray  # bool: an iterate was misclassified
    step: np.ndarray  # int64: the iterate that broke the row (0 = start point), -1 when not broken
    nonfinite: np.ndarray  # bool: a non-finite logit was seen at some iterate


@dataclass
class _Group:
    """The runs of one sample in the pool: which are in flight, the lowest that broke, non-finite runs."""

    next_run: int = 1  # the lowest run not started yet
    open: set[int] = field(default_factory=lambda: {0})  # runs in flight
    broken_run: int = -1  # the lowest run that broke so far (-1: none)
    broken_step: int = -1  # the iterate of `broken_run` that broke
    nonfinite_runs: set[int] = field(default_factory=set)


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
        self.group = np.full(capacity, -1, dtype=np.int64)  # the sample group of each slot
        self.groups: dict[int, _Group] = {}
        self._next_group = 0
        self.speculative_runs = 0  # runs started early, side by side with an earlier run of the sample
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
        for slot in free:
            self.group[slot] = self._next_group
            self.groups[self._next_group] = _Group()
            self._next_group += 1

    def step(self, model: nn.Module) -> PoolExit | None:
        """One iteration over every slot; returns the rows that left (None when none did)."""
        if self.state is None or not self.active.any():
            raise RuntimeError("step() on an empty pool")
        attack = self.attack
        tail = getattr(attack, "compact_tail", False)
        if tail and self.room() > 0:
            self._speculate()
        if self._all_at_last_iterate() and (last := attack.last_iterate_step(model, self.state)) is not None:
            state, hit = last
            self.forward_only_steps += 1
        elif tail and self.room() > 0:
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
        leaving = self._settle(np.flatnonzero(hit | done), hit, evaluated)
        if not leaving:
            return None
        slots = np.asarray([s for s, _ in leaving], dtype=np.int64)
        groups = [self.groups.pop(g) for _, g in leaving]
        t = torch.from_numpy(slots)
        td = t.to(self.device)
        rows = Block(
            state.x[td], state.y[td], state.ids[t].clone(), self.shard[slots].copy(), self.pos[slots].copy()
        )
        broken = np.asarray([g.broken_run >= 0 for g in groups], dtype=bool)
        return PoolExit(
            rows=rows,
            broken=broken,
            step=np.asarray([g.broken_step for g in groups], dtype=np.int64),
            nonfinite=np.asarray(
                [any(r <= g.broken_run or g.broken_run < 0 for r in g.nonfinite_runs) for g in groups],
                dtype=bool,
            ),
        )

    def _settle(self, ended: np.ndarray, hit: np.ndarray, evaluated: np.ndarray) -> list[tuple[int, int]]:
        """Close the runs that broke or ran out; returns (slot, group) of the samples whose outcome is decided.

        A group is decided when its lowest breaking run has no earlier run in flight (broken), or when
        all its runs ran out unbroken (robust). A finished, unbroken run with none of its sample's runs in
        flight restarts in place with the next run, as a sequential loop over restarts would.
        """
        restarts = self.attack.restarts
        touched: dict[int, int] = {}
        for slot in ended:
            g, run = int(self.group[slot]), int(self.restart[slot])
            info = self.groups[g]
            info.open.discard(run)
            if self.nonfinite[slot]:
                info.nonfinite_runs.add(run)
            if hit[slot] and (info.broken_run < 0 or run < info.broken_run):
                info.broken_run, info.broken_step = run, int(evaluated[slot])
            self.active[slot] = False
            touched[g] = int(slot)
        for g in touched:
            info = self.groups[g]
            if info.broken_run >= 0 and any(r > info.broken_run for r in info.open):
                drop = (self.group == g) & self.active & (self.restart > info.broken_run)
                self.active[drop] = False
                info.open = {r for r in info.open if r < info.broken_run}
        leaving: list[tuple[int, int]] = []
        again: list[tuple[int, int]] = []
        for g, slot in sorted(touched.items(), key=lambda kv: kv[1]):
            info = self.groups[g]
            if info.open:
                continue
            if info.broken_run < 0 and info.next_run < restarts:
                again.append((slot, g))
            else:
                leaving.append((slot, g))
        if again:
            self._start_runs([s for s, _ in again], [s for s, _ in again], [g for _, g in again])
        return leaving

    def _speculate(self) -> None:
        """Fill free slots with the next runs of undecided samples in the pool, one more run per sample per pass."""
        free = np.flatnonzero(~self.active)
        restarts = self.attack.restarts
        home: dict[int, int] = {}
        for slot in np.flatnonzero(self.active):
            home.setdefault(int(self.group[slot]), int(slot))
        want = [g for g in home if self.groups[g].broken_run < 0 and self.groups[g].next_run < restarts]
        src: list[int] = []
        groups: list[int] = []
        planned: dict[int, int] = {}
        while want and len(src) < free.shape[0]:
            nxt = []
            for g in want:
                if len(src) == free.shape[0]:
                    break
                src.append(home[g])
                groups.append(g)
                planned[g] = planned.get(g, 0) + 1
                if self.groups[g].next_run + planned[g] < restarts:
                    nxt.append(g)
            want = nxt
        if src:
            self.speculative_runs += len(src)
            self._start_runs(list(free[: len(src)]), src, groups)

    def _start_runs(self, dst: list[int], src: list[int], groups: list[int]) -> None:
        """Start each group's next run in slot dst[i] from the clean sample held in slot src[i] (in place)."""
        assert self.state is not None
        runs = []
        for g in groups:
            info = self.groups[g]
            runs.append(info.next_run)
            info.open.add(info.next_run)
            info.next_run += 1
        st = self.state
        dst_a, src_a, run_a = (np.asarray(v, dtype=np.int64) for v in (dst, src, runs))
        for r in np.unique(run_a):
            pick = run_a == r
            d, s_ = dst_a[pick], src_a[pick]
            ts = torch.from_numpy(s_)
            tsd = ts.to(self.device)
            fresh = self.attack.init(st.x[tsd], st.y[tsd], st.ids[ts], self.seed, restart=int(r))
            _write(st, d, fresh)
            self.shard[d] = self.shard[s_]
            self.pos[d] = self.pos[s_]
            self.group[d] = self.group[s_]
            self.restart[d] = r
            self.iterate[d] = 0
            self.nonfinite[d] = False
            self.active[d] = True

    def _compact_step(self, model: nn.Module) -> tuple[PoolState, torch.Tensor]:
        """Step only the occupied slots (the feeder ran dry and no run is left to start early).

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

    def _all_at_last_iterate(self) -> bool:
        """Whether every occupied slot is at its attack's last iterate (where a gradient would be thrown away)."""
        return bool((self.iterate[self.active] == self.attack.total_steps).all())


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
