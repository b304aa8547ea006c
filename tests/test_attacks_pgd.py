"""PGD: agreement with torchattacks, seeding, batch-packing independence, restarts, losses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchattacks
from attack_toys import CLIP_MEAN, CLIP_STD, ToyZeroShot, batch, one_thread  # noqa: F401

from zsrobust_bench.attacks.base import PoolState
from zsrobust_bench.attacks.loop import run_stepwise
from zsrobust_bench.attacks.losses import ce_loss, ce_mean_loss, cw_margin_loss, get_loss, sq_l2_loss
from zsrobust_bench.attacks.pgd import PGD
from zsrobust_bench.attacks.registry import build_attack

pytestmark = pytest.mark.usefixtures("one_thread")

N, C, K = 16, 10, 10


@pytest.fixture(scope="module")
def vit_classifier(tiny_model):
    """The production classifier (zeroshot.ZeroShotClassifier) over the tiny open_clip ViT."""
    from zsrobust_bench.zeroshot import ZeroShotClassifier

    g = torch.Generator().manual_seed(5)
    emb = torch.randn(C, tiny_model.visual.output_dim, generator=g)
    return ZeroShotClassifier(tiny_model.visual, emb, 32, CLIP_MEAN, CLIP_STD)


def _iterates(attack: PGD, model, x, y, seed: int = 0):
    """Drive our attack by hand over all K+1 iterates, no early stop: (per-iterate wrong masks, final delta)."""
    state = attack.init(x, y, torch.arange(x.shape[0]), seed)
    wrong = []
    while not bool(attack.finished(state).all()):
        state, hit = attack.step(model, state)
        wrong.append(hit)
    return torch.stack(wrong), state.delta


@pytest.mark.parametrize(
    ("norm", "eps", "alpha"),
    [("Linf", 2 / 255, 0.5 / 255), ("L2", 0.25, 0.05)],
)
def test_pgd_matches_torchattacks(vit_classifier, norm, eps, alpha):
    """Same model, data and settings as torchattacks' PGD / PGDL2: same iterates, same robust accuracy.

    torchattacks returns the last iterate; ours counts a sample broken if any iterate (start
    included) is misclassified. Random starts cannot be matched (torchattacks draws from the global
    RNG, ours from per-sample generators), so both run without random start: the trajectories are
    then deterministic and must coincide. The comparison is made for both notions:
    1. last iterate: our delta after K steps equals torchattacks(steps=K) up to float rounding
       (ours stores delta, theirs the image, so a rounding step differs), and the predictions on it match;
    2. worst case: for every k in 0..K, our k-th iterate is misclassified exactly when
       torchattacks(steps=k)'s output is, so our robust accuracy equals the worst case over
       torchattacks runs with steps 0..K. The mean-reduced loss of torchattacks only rescales the
       gradient (sign and direction unchanged in fp32), so it does not change any step.
    """
    model = vit_classifier
    x, y = batch(model, N, C, size=32, seed=11, n_wrong=2)
    ours = PGD(eps, steps=K, step_size=alpha, norm=norm, random_start=False)
    wrong, delta = _iterates(ours, model, x, y)

    cls = torchattacks.PGD if norm == "Linf" else torchattacks.PGDL2
    theirs_wrong = []
    for k in range(K + 1):
        atk = cls(model, eps=eps, alpha=alpha, steps=k, random_start=False)
        x_adv = atk(x, y)
        with torch.no_grad():
            theirs_wrong.append(model(x_adv).argmax(dim=1) != y)
    theirs_wrong = torch.stack(theirs_wrong)

    torch.testing.assert_close(x + delta, x_adv, atol=2e-6, rtol=0)
    assert torch.equal(wrong[-1], theirs_wrong[-1])
    assert torch.equal(wrong, theirs_wrong)
    robust_ours = int((~wrong.any(dim=0)).sum())
    robust_theirs = int((~theirs_wrong.any(dim=0)).sum())
    assert robust_ours == robust_theirs
    # The comparison has teeth: clean-wrong samples, broken samples and robust samples all occur.
    assert bool(wrong[0, :2].all())
    assert 2 < N - robust_ours < N


class _Zigzag(torch.nn.Module):
    """2 classes; the margin of class 0 is cos(pi * s / a) with s the mean pixel shift from 0.5.

    Its gradient is a fixed surrogate that always pushes s up, so sign-PGD with step a visits
    s = 0, a, 2a, 2a, ...: correct, wrong, correct, correct. Only the worst case over iterates sees the break.
    """

    def __init__(self, a: float) -> None:
        super().__init__()
        self.a = a

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1).mean(dim=1) - 0.5
        m = torch.cos(torch.pi * s / self.a).detach() - (s - s.detach())
        return torch.stack([m, torch.zeros_like(m)], dim=1)


def test_worst_case_counts_every_iterate():
    """A sample misclassified at an intermediate iterate is broken even when the last iterate is right."""
    a = 2 / 255
    model = _Zigzag(a)
    x = torch.full((3, 3, 4, 4), 0.5)
    y = torch.zeros(3, dtype=torch.long)
    attack = PGD(2 * a, steps=4, step_size=a, random_start=False)
    wrong, delta = _iterates(attack, model, x, y)
    assert wrong[:, 0].tolist() == [False, True, False, False, False]
    with torch.no_grad():
        assert int(model(x + delta).argmax(dim=1).sum()) == 0  # last iterate: correct
    out = run_stepwise(attack, model, x, y, torch.arange(3), seed=0)
    assert out.broken.tolist() == [True, True, True]
    assert out.step.tolist() == [1, 1, 1]
    torch.testing.assert_close(out.x_adv - x, torch.full_like(x, a))


class _Stall(torch.nn.Module):
    """2 classes; class 0's margin is relu(b - mean pixel), never negative (never misclassified). Its
    gradient vanishes once the mean passes b: sign-PGD stops there, FARE's momentum keeps stepping."""

    def __init__(self, b: float) -> None:
        super().__init__()
        self.b = b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = torch.relu(self.b - x.flatten(1).mean(dim=1))
        return torch.stack([m, torch.zeros_like(m)], dim=1)


@pytest.mark.parametrize(("momentum", "moved"), [(0.0, 2), (0.9, 4)])
def test_momentum_keeps_stepping_where_the_gradient_vanishes(momentum, moved):
    """Steps of a: the mean crosses b after 2; plain PGD then stands still, momentum walks on to eps = 4a.
    The stepwise attack and the trainer's final_iterate take the same path."""
    a = 1 / 255
    model = _Stall(0.5 + 1.5 * a)
    x = torch.full((2, 3, 4, 4), 0.5)
    y = torch.zeros(2, dtype=torch.long)
    attack = PGD(4 * a, steps=6, step_size=a, random_start=False, momentum=momentum)
    wrong, delta = _iterates(attack, model, x, y)
    assert not bool(wrong.any())
    torch.testing.assert_close(delta, torch.full_like(x, moved * a))
    assert torch.equal(attack.final_iterate(model, x, y, attack.start_from(x, None)), x + delta)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_final_iterate_is_the_stepwise_last_iterate(vit_classifier, momentum):
    """From the stepwise attack's own random start, final_iterate (adversarial training's inner attack)
    ends bit for bit where the stepwise attack's K-th iterate is."""
    model = vit_classifier
    x, y = batch(model, N, C, size=32, seed=11, n_wrong=2)
    attack = PGD(2 / 255, steps=K, step_size=0.5 / 255, momentum=momentum)
    start = attack.init(x, y, torch.arange(N), seed=0).delta
    _, delta = _iterates(attack, model, x, y)
    final = attack.final_iterate(model, x, y, start)
    assert torch.equal(final, x + delta)
    assert not torch.equal(final, (x + start).clamp(0, 1))  # it moved


def test_training_options_are_checked_and_recorded():
    x, y = batch(ToyZeroShot(C), 2, C)
    assert PGD(1 / 255, momentum=0.9).params()["momentum"] == 0.9
    assert "momentum" not in PGD(1 / 255).params()
    with pytest.raises(ValueError, match="Linf only"):
        PGD(0.5, norm="L2", momentum=0.9)
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        PGD(1 / 255, momentum=1.0)
    with pytest.raises(ValueError, match="needs class labels"):
        PGD(1 / 255, loss="sq-l2").init(x, y, torch.arange(2), 0)
    # start_from: noise in units of eps, clamped into the box unless told otherwise
    x0 = torch.tensor([[0.0, 0.5]])
    noise = torch.tensor([[-1.0, 1.0]])
    attack = PGD(0.25, steps=1)
    assert attack.start_from(x0, noise).tolist() == [[0.0, 0.25]]
    assert attack.start_from(x0, noise, clamp=False).tolist() == [[-0.25, 0.25]]


def test_random_start_depends_only_on_seed_and_sample_id():
    """Outcomes do not depend on batch packing or order, and the global RNG is never touched."""
    model = ToyZeroShot(C)
    x, y = batch(model, 24, C, seed=4)
    ids = torch.arange(100, 124)
    attack = PGD(2 / 255, steps=5, step_size=0.5 / 255)
    rng = torch.get_rng_state()
    whole = run_stepwise(attack, model, x, y, ids, seed=7)
    assert torch.equal(torch.get_rng_state(), rng)
    perm = torch.randperm(24, generator=torch.Generator().manual_seed(0))
    shuffled = run_stepwise(attack, model, x[perm], y[perm], ids[perm], seed=7)
    assert torch.equal(shuffled.broken, whole.broken[perm])
    assert torch.equal(shuffled.step, whole.step[perm])
    parts = [
        run_stepwise(attack, model, x[i : i + 5], y[i : i + 5], ids[i : i + 5], seed=7)
        for i in range(0, 24, 5)
    ]
    assert torch.equal(torch.cat([p.broken for p in parts]), whole.broken)
    # the start differs with the seed and between samples, and stays inside the ball
    s7 = attack.init(x, y, ids, seed=7).delta
    s8 = attack.init(x, y, ids, seed=8).delta
    assert not torch.equal(s7, s8)
    assert not torch.equal(s7[0], s7[1])
    assert float(s7.abs().max()) <= 2 / 255 + 1e-7
    assert 0 < int(whole.broken.sum()) < 24


def test_restarts_only_add_breaks():
    """Restart 0 reproduces the single-run outcome; later restarts start elsewhere and can only break more."""
    model = ToyZeroShot(C)
    x, y = batch(model, 48, C, seed=5)
    ids = torch.arange(48)
    one = run_stepwise(PGD(1.5 / 255, steps=3, step_size=0.5 / 255, restarts=1), model, x, y, ids, 0)
    three = run_stepwise(PGD(1.5 / 255, steps=3, step_size=0.5 / 255, restarts=3), model, x, y, ids, 0)
    assert bool((three.broken >= one.broken).all())
    assert torch.equal(three.restart[one.broken], torch.zeros(int(one.broken.sum()), dtype=torch.int64))
    assert int(three.broken.sum()) > int(one.broken.sum())
    assert set(three.restart[three.broken & ~one.broken].tolist()) <= {1, 2}


def test_l2_start_and_steps_stay_in_ball():
    model = ToyZeroShot(C)
    x, y = batch(model, 8, C, seed=6)
    attack = PGD(0.5, steps=4, step_size=0.3, norm="L2")
    out = run_stepwise(attack, model, x, y, torch.arange(8), 0)
    norms = (out.x_adv - x).flatten(1).norm(dim=1)
    assert float(norms.max()) <= 0.5 + 1e-5
    assert float(out.x_adv.min()) >= 0 and float(out.x_adv.max()) <= 1


def test_pool_state_cat_after_step():
    """A stepped pool and a freshly started one carry the same extra keys, so the engine can mix them."""
    model = ToyZeroShot(C)
    x, y = batch(model, 6, C)
    attack = PGD(1 / 255, steps=3)
    stepped, _ = attack.step(model, attack.init(x[:3], y[:3], torch.arange(3), 0))
    fresh = attack.init(x[3:], y[3:], torch.arange(3, 6), 0)
    assert set(stepped.extra) == set(fresh.extra)
    both = PoolState.cat([fresh, stepped])
    assert len(both) == 6 and both.extra["nonfinite"].shape == (6,)


def test_nonfinite_gradient_keeps_delta_finite():
    """NaN input gradients give no direction: delta stays finite, the sample is not counted broken by NaN."""

    class NaNGrad(torch.nn.Module):
        def forward(self, x):
            return ToyZeroShot(C)(x) + 0 * torch.sqrt(x - x.detach()).flatten(1).sum(1, keepdim=True)

    model = NaNGrad()
    x, y = batch(ToyZeroShot(C), 4, C)
    attack = PGD(1 / 255, steps=2, random_start=False)
    state, _ = attack.step(model, attack.init(x, y, torch.arange(4), 0))
    assert bool(torch.isfinite(state.delta).all())


def test_no_gradient_path_fails_loudly():
    from attack_toys import NoGradPath

    model = NoGradPath(ToyZeroShot(C))
    x, y = batch(ToyZeroShot(C), 2, C)
    attack = PGD(1 / 255, steps=2)
    with pytest.raises(RuntimeError, match="no gradient path"):
        attack.step(model, attack.init(x, y, torch.arange(2), 0))


def test_losses_are_fp32_sums():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 5.0]], dtype=torch.float16)
    y = torch.tensor([0, 1])
    ce = ce_loss(logits, y)
    assert ce.dtype == torch.float32
    expected = F.cross_entropy(logits.float(), y, reduction="none")
    torch.testing.assert_close(ce, expected.sum())
    torch.testing.assert_close(ce_mean_loss(logits, y), expected.mean())
    # margins: 3-1 = 2 and 2-5 = -3 -> -(relu(52) + relu(47)) = -99
    assert float(cw_margin_loss(logits, y)) == -99.0
    assert float(cw_margin_loss(logits, y, kappa=0.0)) == -2.0
    with pytest.raises(KeyError, match="unknown attack loss"):
        get_loss("hinge")
    # FARE's loss: squared L2 summed over dimensions and samples, (1 + 4) + (4 + 9) = 18
    emb = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float16)
    sq = sq_l2_loss(emb, torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    assert sq.dtype == torch.float32 and float(sq) == 18.0


def test_registry_pgd_names_and_params():
    pgd = build_attack("pgd", 1 / 255, 10, steps=7, step_size=0.5 / 255)
    cw = build_attack("pgd-cw", 1 / 255, 2, steps=7)
    assert pgd.params()["loss"] == "ce" and pgd.params()["loss_reduction"] == "sum"
    assert cw.name == "pgd-cw" and cw.params()["loss"] == "cw" and cw.total_steps == 7
    with pytest.raises(ValueError, match="has no parameter"):
        build_attack("pgd", 1 / 255, 10, stepz=3)
    with pytest.raises(ValueError, match="at least 2 classes"):
        build_attack("pgd", 1 / 255, 1)
