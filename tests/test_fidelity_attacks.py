"""Protocol fidelity of the attacks: fare-aa is AutoAttack exactly as FARE calls it, and an eps override
keeps a stepwise attack able to reach eps (issue 15, items 1 and 6)."""

from __future__ import annotations

import json

import pytest
import torch
from attack_toys import ToyZeroShot, batch, one_thread  # noqa: F401
from pyautoattack import AutoAttack
from pyautoattack.autopgd_base import APGDAttack

from zsrobust_bench.attacks.loop import eval_mode, run_sequence
from zsrobust_bench.attacks.pgd import PGD
from zsrobust_bench.attacks.registry import build_attacks
from zsrobust_bench.protocols import apply_overrides, following_step_fraction, get_protocol
from zsrobust_bench.sanity import reach_checks

pytestmark = pytest.mark.usefixtures("one_thread")


ITERATION_ATTRS = ("n_iter", "n_iter_orig", "n_iter_2", "n_iter_min", "size_decr")


def fare_reference(model, x, y, *, eps, seed, batch_size, n_iter=100, n_target_classes=None):
    """pyautoattack called as FARE calls AutoAttack (RVLM CLIP_benchmark/clip_benchmark/metrics/
    zeroshot_classification.py#L129-136 and #L152): version='custom', APGD-CE then APGD-T, nothing
    else set. pyautoattack names `attacks_to_run` `attacks`. FARE passes no seed (AutoAttack then
    seeds every batch with time.time()); we pass the run seed so both sides draw the same numbers.
    `n_iter` below 100 plays FARE's own `iterations_apgd` constructor argument (RVLM
    autoattack/autoattack.py#L15, #L34, #L47), which pyautoattack lacks: the iteration attributes are
    copied from an APGD object constructed with it. `n_target_classes` is only for C < 10, where
    FARE's call (9 targets) cannot run at all."""
    with eval_mode(model), torch.random.fork_rng():
        aa = AutoAttack(
            model, norm="Linf", eps=eps, version="custom", attacks=["apgd-ce", "apgd-t"], seed=seed
        )
        built = APGDAttack(model, n_iter=n_iter, eps=eps)
        for part in (aa.apgd, aa.apgd_targeted):
            for attr in ITERATION_ATTRS:
                setattr(part, attr, getattr(built, attr))
        if n_target_classes is not None:
            aa.apgd_targeted.n_target_classes = n_target_classes
        x_adv, y_adv = aa.run_standard_evaluation(x, y, batch_size=batch_size)
    return (y_adv == y).cpu(), x_adv


class Counted(ToyZeroShot):
    """Counts the samples it is run on: equal work on both sides, more with more restarts."""

    seen = 0

    def forward(self, x):
        type(self).seen += int(x.shape[0])
        return super().forward(x)


def _count(fn) -> tuple[object, int]:
    Counted.seen = 0
    out = fn()
    return out, Counted.seen


def test_fare_aa_values_are_autoattack_custom_constructor_values():
    """Every fare-aa APGD value equals what AutoAttack(version='custom') leaves on its attack objects."""
    aa = AutoAttack(
        ToyZeroShot(10), norm="Linf", eps=2 / 255, version="custom", attacks=["apgd-ce", "apgd-t"]
    )
    ours = {a.name: a.params for a in get_protocol("fare-aa").attacks}
    assert aa.attacks_to_run == list(ours)  # the order: APGD-CE, then APGD-T
    for name, ref in (("apgd-ce", aa.apgd), ("apgd-t", aa.apgd_targeted)):
        got = {
            "n_iter": ref.n_iter,
            "n_restarts": ref.n_restarts,
            "rho": ref.thr_decr,
            "eot_iter": ref.eot_iter,
        }
        assert {k: ours[name][k] for k in got} == got, name
    assert ours["apgd-ce"]["n_restarts"] == 5 and aa.apgd.loss == "ce"
    assert ours["apgd-t"]["n_target_classes"] == aa.apgd_targeted.n_target_classes == 9
    assert aa.apgd.use_largereps is False and aa.apgd_targeted.use_largereps is False
    assert get_protocol("synthetic-aa").attacks == get_protocol("fare-aa").attacks


def _equal_to_fare(protocol: str, n_iter: int, eps: float, n: int) -> None:
    model = Counted(10, seed=4)
    x, y = batch(model, n, 10, seed=3, n_wrong=1)
    overrides = {} if n_iter == 100 else {"steps": n_iter}
    proto, _ = apply_overrides(get_protocol(protocol), overrides)
    attacks, records = build_attacks(proto.attack_steps(), eps, 10)
    assert [(r["ran"], r["params"]["n_restarts"]) for r in records] == [("apgd-ce", 5), ("apgd-t", 1)]
    ids = torch.arange(n)
    ours, work = _count(lambda: run_sequence(attacks, model, x, y, ids, seed=0, batch_size=4))
    (reference, reference_x_adv), ref_work = _count(
        lambda: fare_reference(model, x, y, eps=eps, seed=0, batch_size=4, n_iter=n_iter)
    )
    assert torch.equal(ours.robust, reference)
    assert torch.equal(ours.x_adv, reference_x_adv)
    assert 0 < int(ours.robust.sum()) < n - 1 and {"apgd-ce", "apgd-t"} <= set(ours.broken_by)
    # teeth: fare-aa version 1 (APGD-CE with one restart) does a fifth of the APGD-CE work on the
    # survivors; the reference does exactly our amount of work (forward passes, not counting the
    # reference's own clean and sanity-check passes, which are the same on every run)
    v1, _ = apply_overrides(get_protocol("fare-aa", 1), overrides)
    _, weak_work = _count(
        lambda: run_sequence(build_attacks(v1.attack_steps(), eps, 10)[0], model, x, y, ids, 0, 4)
    )
    assert weak_work < work <= ref_work


def test_fare_aa_per_sample_equals_autoattack_as_fare_calls_it_fast():
    """Our attack sequence (worst case over attacks, clean-wrong samples skipped) breaks exactly the
    samples FARE's AutoAttack call breaks, with bit-identical adversarial images; 10 classes, so 9
    targets as in FARE's call; 10 iterations (FARE's `iterations_apgd`) to stay fast."""
    _equal_to_fare("fare-aa", 10, 8 / 255, 12)


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["fare-aa", "synthetic-aa"])
def test_fare_aa_per_sample_equals_autoattack_as_fare_calls_it(protocol):
    """The same with the protocols' own 100 iterations: FARE's call to the letter."""
    _equal_to_fare(protocol, 100, 10 / 255, 8)


@pytest.mark.slow
def test_fare_aa_equals_autoattack_on_the_trained_demo_clip(demo_model):
    """The same equality on the shipped trained CLIP (synthetic colour task, 6 classes: targets
    min(9, C-1) = 5 on both sides, since FARE's fixed 9 cannot run with 6 classes)."""
    from zsrobust_bench.data.registry import get_dataset
    from zsrobust_bench.data.synthetic import SyntheticTask
    from zsrobust_bench.models.loader import load_model
    from zsrobust_bench.zeroshot import build_classifier

    lm = load_model(str(demo_model))
    spec = get_dataset("synth-color")
    model = build_classifier(lm, spec.prompt_set("clip"), "cpu", None)
    data = SyntheticTask("color", "test")
    x = torch.stack([data[i][0] for i in range(12)])
    y = torch.tensor([data[i][1] for i in range(12)])
    eps = 4 / 255
    attacks, _ = build_attacks(get_protocol("synthetic-aa").attack_steps(), eps, 6)
    ours = run_sequence(attacks, model, x, y, torch.arange(12), seed=0, batch_size=6)
    reference, reference_x_adv = fare_reference(
        model, x, y, eps=eps, seed=0, batch_size=6, n_target_classes=5
    )
    assert torch.equal(ours.robust, reference)
    assert torch.equal(ours.x_adv, reference_x_adv)
    assert 0 < int(ours.robust.sum()) < int(ours.clean_correct.sum())


# ---------------------------------------------------------------- item 6: overrides keep attacks able to reach eps


def test_following_step_rule():
    assert following_step_fraction(1.0, 100) == 0.25  # TeCoA's step = eps becomes eps/4
    assert following_step_fraction(0.25, 20) == 0.25
    assert following_step_fraction(0.1, 100) == 0.1  # a smaller protocol ratio is kept ...
    assert following_step_fraction(0.1, 10) == 0.2  # ... unless steps * step < 2 eps
    assert following_step_fraction(1.0, 5) == pytest.approx(0.4)
    assert following_step_fraction(1.0, 1) == 1.0
    for steps in range(1, 101):
        assert following_step_fraction(1.0, steps) * steps >= min(2.0, steps)


@pytest.mark.parametrize("protocol", ["tecoa-pgd", "tecoa-cw", "synthetic-pgd"])
def test_eps_override_moves_the_step_and_explicit_steps_stay(protocol):
    base = get_protocol(protocol)
    new, custom = apply_overrides(base, {"eps": "0.5", "steps": 10})
    p = new.attacks[0].params
    assert custom and p["step_size"] is None and p["step_fraction"] == 0.25
    attacks, records = build_attacks(new.attack_steps(), 0.5, 10)
    assert attacks[0].step_size == 0.125 and records[0]["params"]["step_fraction"] == 0.25
    kept, _ = apply_overrides(base, {"eps": "0.5", "steps": 10, "step_size": "1/255"})
    assert kept.attacks[0].params["step_size"] == 1 / 255 and "step_fraction" not in kept.attacks[0].params
    assert apply_overrides(base, {"samples": 10})[0].attacks == base.attacks  # nothing else moves the step


def test_reach_check_flags_attacks_that_cannot_reach_eps():
    weak, _ = apply_overrides(get_protocol("tecoa-pgd"), {"eps": "0.5", "steps": 10, "step_size": "1/255"})
    good, _ = apply_overrides(get_protocol("tecoa-pgd"), {"eps": "0.5", "steps": 10})
    (bad,) = reach_checks({"0.5": build_attacks(weak.attack_steps(), 0.5, 10)[1]})
    assert (
        bad["status"] == "warning"
        and "cannot reach" in bad["message"]
        and bad["travel"] == pytest.approx(10 / 255)
    )
    (ok,) = reach_checks({"0.5": build_attacks(good.attack_steps(), 0.5, 10)[1]})
    assert ok["status"] == "ok" and ok["travel"] == pytest.approx(1.25)
    aa = build_attacks(get_protocol("fare-aa").attack_steps(), 2 / 255, 10)[1]
    assert reach_checks({"2/255": aa}) == []  # APGD adapts its own step (2 eps, halving)


EPS_SWEEP = [1 / 255, 4 / 255, 16 / 255, 64 / 255, 0.5]
STEP_SWEEP = [5, 7, 10, 20, 100]


def test_every_override_is_at_least_as_strong_as_standard_pgd():
    """eps from 1/255 to 0.5 and steps from 5 to 100, overridden on tecoa-pgd (whose frozen step
    is 1/255): never more samples survive than under standard PGD with step eps/4 on the same
    samples; per sample the same where the rule gives eps/4 (steps >= 8), and never robust where
    standard PGD breaks the sample when the steps are few."""
    model = ToyZeroShot(10, seed=7)
    x, y = batch(model, 32, 10, seed=5, n_wrong=2)
    ids = torch.arange(32)
    survivors = {}
    for eps in EPS_SWEEP:
        for steps in STEP_SWEEP:
            proto, _ = apply_overrides(get_protocol("tecoa-pgd"), {"eps": [eps], "steps": steps})
            (attack,), _ = build_attacks(proto.attack_steps(), eps, 10)
            standard = PGD(eps, steps=steps, step_size=eps / 4)
            ours = run_sequence([attack], model, x, y, ids, seed=0, batch_size=32).robust
            ref = run_sequence([standard], model, x, y, ids, seed=0, batch_size=32).robust
            assert attack.step_size * steps >= eps
            assert int(ours.sum()) <= int(ref.sum()), (eps, steps)
            if steps >= 8:
                assert torch.equal(ours, ref), (eps, steps)
            survivors[(eps, steps)] = int(ref.sum())
    assert survivors[(1 / 255, 5)] > 0 and survivors[(0.5, 10)] == 0  # the sweep spans robust and broken


def test_cli_eps_override_breaks_what_pgd_64_breaks(demo_model, tmp_path, capsys):
    """`zsbench evaluate M --eps 0.5 --steps 10` breaks every sample of a model that PGD at 64/255
    breaks (the run's own masking check runs that PGD); the same run with the old absolute step
    (1/255) is flagged in results.json and on the terminal."""
    from zsrobust_bench.cli import main

    common = [str(demo_model), "--protocol", "tecoa-pgd", "--datasets", "synth-shape", "--samples", "8"]
    assert main(["evaluate", *common, "--eps", "0.5", "--steps", "10", "--out", str(tmp_path / "a")]) == 0
    followed = json.loads((tmp_path / "a" / "results.json").read_text())
    masking = {c["check"]: c for c in followed["datasets"]["synth-shape"]["sanity"]}["gradient_masking"]
    assert masking["eps_label"] == "64/255" and masking["robust"] == 0 and masking["n"] > 0
    assert followed["means"]["clean_acc"] > 0 and followed["means"]["robust_acc"] == 0.0
    assert followed["sanity"]["reach"]["passed"]
    capsys.readouterr()
    weak = ["--eps", "0.5", "--steps", "10", "--step-size", "1/255", "--out", str(tmp_path / "b")]
    assert main(["evaluate", *common, *weak]) == 0
    out = capsys.readouterr().out
    flagged = json.loads((tmp_path / "b" / "results.json").read_text())
    assert not flagged["sanity"]["reach"]["passed"] and not flagged["sanity"]["passed"]
    assert any("cannot reach" in w for w in flagged["sanity"]["warnings"])
    assert "SANITY WARNING: pgd at 0.5: 10 steps of 1/255" in out
