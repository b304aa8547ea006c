"""AutoAttack adapters: equality with pyautoattack's reference runner, few classes, seeding, RNG hygiene."""

from __future__ import annotations

import pytest
import torch
from attack_toys import CLIP_MEAN, CLIP_STD, Quantized, ToyZeroShot, batch, one_thread  # noqa: F401
from pyautoattack.autopgd_base import APGDAttack_targeted

from zsrobust_bench.attacks.autoattack import APGD, APGDTargeted, FABTargeted, Square, reference_autoattack
from zsrobust_bench.attacks.loop import run_sequence
from zsrobust_bench.attacks.registry import build_attack, build_attacks, skip_reason
from zsrobust_bench.protocols import apply_overrides, get_protocol

pytestmark = pytest.mark.usefixtures("one_thread")

# Fast-test schedule: the standard one with fewer FAB iterations and Square queries, set on the
# reference through the same attributes AutoAttack._set_version uses, and on ours through overrides.
FAST = {"fab-t.n_iter": 20, "square.n_queries": 300}
FAST_REFERENCE = {"fab": {"n_iter": 20}, "square": {"n_queries": 300}}


def _ours(protocol: str, overrides: dict, eps: float, num_classes: int):
    proto, custom = apply_overrides(get_protocol(protocol), overrides)
    assert custom == bool(overrides)
    return build_attacks(proto.attack_steps(), eps, num_classes, norm=proto.norm)


@pytest.mark.parametrize(("num_classes", "model_seed"), [(10, 4), (5, 4)])
def test_standard_autoattack_equals_reference(num_classes, model_seed):
    """Our aa-standard attacks, run with the worst-case bookkeeping of run_sequence, break exactly the
    samples pyautoattack's AutoAttack.run_standard_evaluation breaks (same model, samples, seed, batches).

    Equality is exact, not statistical: pyautoattack seeds each attack's perturb with the run seed and
    draws per batch, so the same batches give the same random numbers on both sides.
    """
    eps = 6 / 255
    model = ToyZeroShot(num_classes, seed=model_seed)
    x, y = batch(model, 16, num_classes, seed=3, n_wrong=3)
    ids = torch.arange(16)
    attacks, records = _ours("aa-standard", FAST, eps, num_classes)
    assert [r["ran"] for r in records] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert records[1]["params"]["n_target_classes"] == min(9, num_classes - 1)

    rng = torch.get_rng_state()
    ours = run_sequence(attacks, model, x, y, ids, seed=3, batch_size=8)
    reference, reference_x_adv = reference_autoattack(
        model, x, y, eps=eps, num_classes=num_classes, seed=3, batch_size=8, settings=FAST_REFERENCE
    )
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(ours.robust, reference)
    # bit-identical adversarial examples: a different seed, batching, target count, iteration count
    # or APGD rho each changes them here, even where the robust mask would not notice
    assert torch.equal(ours.x_adv, reference_x_adv)
    # teeth: clean-wrong samples are not robust, some samples break, some survive, and more than
    # one attack contributes
    assert not bool(ours.robust[:3].any())
    assert 0 < int(ours.robust.sum()) < 13
    assert len({b for b in ours.broken_by if b is not None}) >= 2


@pytest.mark.slow
@pytest.mark.parametrize(("num_classes", "eps"), [(10, 1 / 255), (4, 4 / 255)])
def test_standard_autoattack_equals_reference_vit(tiny_model, num_classes, eps):
    """Full standard settings (APGD-CE 100 it, APGD-T 9 targets, FAB-T, Square 5000) on the tiny ViT."""
    from zsrobust_bench.zeroshot import ZeroShotClassifier

    emb = torch.randn(num_classes, tiny_model.visual.output_dim, generator=torch.Generator().manual_seed(5))
    model = ZeroShotClassifier(tiny_model.visual, emb, 32, CLIP_MEAN, CLIP_STD)
    x, y = batch(model, 16, num_classes, size=32, seed=9, n_wrong=2)
    attacks, _ = _ours("aa-standard", {}, eps, num_classes)
    ours = run_sequence(attacks, model, x, y, torch.arange(16), seed=0, batch_size=16)
    reference, reference_x_adv = reference_autoattack(
        model, x, y, eps=eps, num_classes=num_classes, seed=0, batch_size=16
    )
    assert torch.equal(ours.robust, reference)
    assert torch.equal(ours.x_adv, reference_x_adv)
    assert 0 < int(ours.robust.sum()) < 14


@pytest.mark.parametrize(
    ("protocol", "overrides"),
    [
        ("fare-aa", {}),
        ("aa-standard", FAST),
        pytest.param("aa-standard", {}, marks=pytest.mark.slow, id="aa-standard-frozen"),
    ],
    ids=["fare-aa", "aa-standard-fast", "aa-standard-frozen"],
)
def test_two_and_three_classes_run(protocol, overrides):
    """C=2 runs APGD-CE alone; C=3 replaces APGD-T (whose targeted DLR needs 4 classes) by APGD-DLR.
    Both record what ran and what was skipped, and finish without error."""
    for num_classes in (2, 3):
        model = ToyZeroShot(num_classes, seed=4)
        x, y = batch(model, 10, num_classes, seed=5, n_wrong=1)
        for eps in get_protocol(protocol).eps:
            attacks, records = _ours(protocol, overrides, eps, num_classes)
            out = run_sequence(attacks, model, x, y, torch.arange(10), seed=0, batch_size=10)
            assert not bool(out.robust[0]) and int(out.robust.sum()) <= int(out.clean_correct.sum())
            ran = [r["ran"] for r in records]
            if num_classes == 2:
                assert ran[0] == "apgd-ce" and all(r is None for r in ran[1:])
                assert all("needs at least 3 classes" in r["skipped"] for r in records[1:])
            else:
                assert ran[:2] == ["apgd-ce", "apgd-dlr"]
                assert "targeted DLR needs >= 4 classes" in records[1]["params"]["note"]
                if protocol == "aa-standard":
                    assert ran[2:] == ["fab-t", "square"]
                    assert records[2]["params"]["n_target_classes"] == 2


def test_reference_targeted_dlr_fails_with_three_classes():
    """Why apgd-t is replaced at C=3: the reference indexes the 4th-largest logit."""
    model = ToyZeroShot(3)
    x, y = batch(model, 4, 3)
    ref = APGDAttack_targeted(model, n_iter=2, eps=1 / 255, n_target_classes=2, device=x.device, seed=0)
    with pytest.raises(IndexError):
        ref.perturb(x, y)
    with pytest.raises(ValueError, match="at least 4 classes"):
        APGDTargeted(1 / 255, 3)


def test_targets_and_applicability():
    for c, expected in [(4, 3), (10, 9), (1000, 9)]:
        assert build_attack("apgd-t", 1 / 255, c).n_target_classes == expected
        assert build_attack("fab-t", 1 / 255, c).params()["n_target_classes"] == expected
    assert build_attack("apgd-t", 1 / 255, 100, n_target_classes=3).n_target_classes == 3
    for name in ("apgd-t", "fab-t", "square", "apgd-dlr"):
        assert build_attack(name, 1 / 255, 2) is None
        assert "needs at least 3 classes; the dataset has 2" in skip_reason(name, 2)
    assert skip_reason("apgd-ce", 2) is None
    assert isinstance(build_attack("apgd-ce", 1 / 255, 2), APGD)
    with pytest.raises(ValueError, match="has no parameter"):
        build_attack("square", 1 / 255, 10, n_iter=10)


@pytest.mark.parametrize(
    "attack",
    [
        APGD(2 / 255, 10, n_iter=10),
        APGDTargeted(2 / 255, 10, n_iter=5, n_target_classes=3),
        FABTargeted(2 / 255, 10, n_iter=5, n_target_classes=3),
        Square(2 / 255, 10, n_queries=50),
    ],
    ids=lambda a: a.name,
)
def test_adapter_seeded_rng_restored_eval_enforced(attack):
    """Same seed, same outcome; the caller's RNG stream is untouched; the model runs in eval mode and
    gets its training flag back; the perturbation stays in the ball."""
    seen = []

    class Spy(ToyZeroShot):
        def forward(self, x):
            seen.append(self.training)
            return super().forward(x)

    model = Spy(10, seed=6)
    x, y = batch(model, 8, 10, seed=7)
    model.train()
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    b1, x1 = attack.run(model, x, y, torch.arange(8), seed=11)
    assert torch.equal(torch.rand(3), expected_next)
    b2, x2 = attack.run(model, x, y, torch.arange(8), seed=11)
    assert torch.equal(b1, b2) and torch.equal(x1, x2)
    assert model.training and seen and not any(seen)
    assert float((x1 - x).abs().max()) <= 2 / 255 + 1e-6
    assert attack.params()["implementation"].startswith("pyautoattack")


def test_adapter_empty_batch_and_bad_labels():
    attack = APGD(1 / 255, 10)
    model = ToyZeroShot(10)
    broken, x_adv = attack.run(
        model, torch.zeros(0, 3, 8, 8), torch.zeros(0, dtype=torch.long), torch.zeros(0), 0
    )
    assert broken.shape == (0,) and x_adv.shape == (0, 3, 8, 8)
    with pytest.raises(ValueError, match="labels outside"):
        attack.run(model, torch.rand(2, 3, 8, 8), torch.tensor([0, 10]), torch.arange(2), 0)


def test_zero_gradient_warnings_are_kept_until_drained():
    """pyautoattack checks the start gradient of every APGD run on a DLR loss and logs a warning when a
    sample's is exactly zero; the adapter keeps each one until drained (the evaluation records them
    in the sanity checks). A piecewise-constant model: 8 points, one warning per target; nothing
    breaks, so every target runs. APGD-CE is not checked by the reference (CE saturates honestly)."""
    model = Quantized(ToyZeroShot(10, seed=4))
    x, y = batch(model, 8, 10, seed=3)
    targeted = APGDTargeted(2 / 255, 10, n_iter=5, n_target_classes=3)
    broken, _ = targeted.run(model, x, y, torch.arange(8), seed=0)
    warned = targeted.drain_warnings()
    assert not bool(broken.any())
    assert len(warned) == 3 and all(w.startswith("there are 8 points with zero gradient!") for w in warned)
    assert targeted.drain_warnings() == []
    ce = APGD(2 / 255, 10, n_iter=5)
    ce.run(model, x, y, torch.arange(8), seed=0)
    assert ce.drain_warnings() == []
    smooth = ToyZeroShot(10, seed=4)
    targeted.run(smooth, *batch(smooth, 8, 10, seed=3), torch.arange(8), seed=0)
    assert targeted.drain_warnings() == []


def test_settings_reach_results_and_reference_once():
    """Each adapter's settings (declared once, attacks.settings) give both the recorded params, in a
    fixed order, and the attributes of the pyautoattack object it runs; a target count is recorded as
    used and as requested, and text from an override is coerced to the declared type."""
    import logging

    fab = build_attack("fab-t", 1 / 255, 5, n_iter="7", eta=2)
    expected = {
        "attack": "fab-t",
        "implementation": fab.params()["implementation"],
        "norm": "Linf",
        "eps": 1 / 255,
        "num_classes": 5,
        "targeted": True,
        "n_iter": 7,
        "n_restarts": 1,
        "n_target_classes": 4,
        "n_target_classes_requested": 9,
        "alpha_max": 0.1,
        "eta": 2.0,
        "beta": 0.9,
    }
    assert fab.params() == expected and list(fab.params()) == list(expected)
    ref = fab._reference(ToyZeroShot(5), 3, torch.device("cpu"), logging.getLogger("t"))
    assert (ref.n_iter, ref.n_target_classes, ref.eta, ref.targeted, ref.seed) == (7, 4, 2.0, True, 3)
    square = build_attack("square", 1 / 255, 5, n_queries=50, rescale_schedule=True)
    assert list(square.params())[5:] == ["loss", "n_queries", "p_init", "n_restarts", "rescale_schedule"]
    ref = square._reference(ToyZeroShot(5), 0, torch.device("cpu"), logging.getLogger("t"))
    assert (ref.n_queries, ref.rescale_schedule, ref.loss) == (50, True, "margin")
    apgd_t = build_attack("apgd-t", 1 / 255, 5, n_target_classes=2, rho=1)
    ref = apgd_t._reference(ToyZeroShot(5), 0, torch.device("cpu"), logging.getLogger("t"))
    assert (ref.n_target_classes, ref.thr_decr, ref.loss, ref.logger.name) == (2, 1.0, "dlr-targeted", "t")
    assert apgd_t.params()["loss"] == "dlr-targeted" and apgd_t.params()["rho"] == 1.0
    with pytest.raises(ValueError, match="n_target_classes must be >= 1"):
        build_attack("fab-t", 1 / 255, 5, n_target_classes=0)
