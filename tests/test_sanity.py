"""Sanity checks: gradient health, gradient masking at huge eps, result consistency."""

from __future__ import annotations

import pytest
import torch
from attack_toys import (  # noqa: F401
    ChannelMeans,
    NaNGradient,
    NoGradPath,
    Quantized,
    StraightThrough,
    ToyZeroShot,
    batch,
    channel_batch,
    one_thread,
)

from zsrobust_bench.attacks.loop import run_stepwise
from zsrobust_bench.attacks.pgd import PGD
from zsrobust_bench.sanity import (
    MAX_MESSAGES,
    attack_checks,
    attack_warnings_check,
    consistency_checks,
    gradient_check,
    masking_check,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def channels():
    x, y = channel_batch(12)
    return ChannelMeans(), x, y


def test_gradient_check_passes_honest_models(channels):
    model, x, y = channels
    out = gradient_check(model, x, y)
    assert out["status"] == "ok", out
    assert (
        out["zero_fraction"] == 0.0 and out["nonfinite_fraction"] == 0.0 and out["constant_fraction"] == 0.0
    )
    toy = ToyZeroShot(10)
    assert gradient_check(toy, *batch(toy, 8, 10))["status"] == "ok"


@pytest.mark.parametrize(
    ("wrap", "expected", "field", "value"),
    [
        (NoGradPath, "no gradient path", "zero_fraction", 1.0),
        (Quantized, "every input gradient is exactly zero", "zero_fraction", 1.0),
        (NaNGradient, "1/12 samples have non-finite input gradients", "nonfinite_fraction", 1 / 12),
    ],
    ids=["no-grad", "quantized", "nan"],
)
def test_gradient_check_flags_broken_gradients(channels, wrap, expected, field, value):
    model, x, y = channels
    x = x.clone()
    x[0, 0, 0, 0] = 0.0  # sqrt'(0) = inf for NaNGradient; harmless for the others
    out = gradient_check(wrap(model), x, y)
    assert out["status"] == "warning"
    assert expected in out["message"]
    assert out[field] == pytest.approx(value)


def test_constant_gradient_flagged_by_both_checks(channels):
    """A straight-through forward (the model's value, a fixed random Jacobian) passes a naive
    non-zero/finite test; the gradient check sees gradients that do not move with the input and the
    masking check sees PGD at 64/255 fail on a model it breaks completely without the wrapper."""
    model, x, y = channels
    masked = StraightThrough(model, (3, 8, 8), 3)
    grad = gradient_check(masked, x, y)
    assert grad["status"] == "warning" and "do not change with the input" in grad["message"]
    assert grad["zero_fraction"] == 0.0 and grad["nonfinite_fraction"] == 0.0
    assert grad["constant_fraction"] >= 0.5

    honest = masking_check(model, x, y, 3)
    assert honest["status"] == "ok" and honest["robust"] == 0 and honest["n"] == 12
    fooled = masking_check(masked, x, y, 3)
    assert fooled["status"] == "warning" and "gradient masking" in fooled["message"]
    assert fooled["robust"] == 12 and fooled["eps_label"] == "64/255"


def test_attack_checks_bundle(channels):
    model, x, y = channels
    masked = StraightThrough(model, (3, 8, 8), 3)
    assert [(r["check"], r["status"]) for r in attack_checks(model, x, y, 3)] == [
        ("gradients", "ok"),
        ("gradient_masking", "ok"),
    ]
    assert [r["status"] for r in attack_checks(masked, x, y, 3, n_samples=6)] == ["warning", "warning"]


def test_masking_check_uses_only_correct_samples_and_restores_rng(channels):
    model, x, y = channels
    y = y.clone()
    y[:4] = (y[:4] + 1) % 3
    rng = torch.get_rng_state()
    out = masking_check(model, x, y, 3, n_samples=5)
    assert torch.equal(torch.get_rng_state(), rng)
    assert out["n"] == 5 and out["robust"] == 0
    wrong = masking_check(model, x[:4], y[:4], 3)
    assert wrong["status"] == "skipped" and wrong["n"] == 0
    with pytest.raises(ValueError, match="labels outside"):
        masking_check(model, x, y + 3, 3)


def test_masking_check_needs_the_margin_loss(channels):
    """ChannelMeans' logit gap is ~120 (100 * cos): the softmax error underflows in fp32 and CE-PGD gets
    no gradient even at 64/255, so the check follows it with CW-margin PGD, which does not saturate."""
    model, x, y = channels
    ce_only = PGD(64 / 255, steps=20, step_size=16 / 255, random_start=True, name="masking-ce")
    assert int(run_stepwise(ce_only, model, x, y, torch.arange(12), 0).broken.sum()) == 0
    assert masking_check(model, x, y, 3)["robust"] == 0
    toy = ToyZeroShot(10)
    out = masking_check(toy, *batch(toy, 16, 10), 10)
    assert out["status"] == "ok" and out["robust"] == 0 and out["n"] == 16


def test_consistency_checks():
    results = {
        "fine": {"clean_acc": 80.0, "robust_acc": {"2/255": 30.0, "4/255": 10.0}},
        "more-robust-than-clean": {"clean_acc": 50.0, "robust_acc": 50.5},
        "non-monotone": {"clean_acc": 70.0, "robust_acc": {4 / 255: 12.0, 2 / 255: 11.0, 1 / 255: 40.0}},
        "clean-only": {"clean_acc": 60.0, "robust_acc": None},
    }
    out = consistency_checks(results)
    status = {(r["check"], r["dataset"], r.get("eps")): r["status"] for r in out}
    assert status[("robust_le_clean", "fine", "2/255")] == "ok"
    assert status[("robust_le_clean", "fine", "4/255")] == "ok"
    assert status[("monotone_eps", "fine", None)] == "ok"
    assert status[("robust_le_clean", "more-robust-than-clean", None)] == "warning"
    assert ("monotone_eps", "more-robust-than-clean", None) not in status
    assert status[("monotone_eps", "non-monotone", None)] == "warning"
    bad = next(r for r in out if r["check"] == "monotone_eps" and r["dataset"] == "non-monotone")
    assert "2/255: 11 < 4/255: 12" in bad["message"]
    assert list(bad["robust_acc"]) == ["1/255", "2/255", "4/255"]
    assert not any(r["dataset"] == "clean-only" for r in out)
    assert len(out) == 2 + 1 + 1 + 3 + 1
    # the evaluator's layout: a headline robust_acc plus robust_acc_by_eps
    by_eps = consistency_checks(
        {"d": {"clean_acc": 50.0, "robust_acc": 9.0, "robust_acc_by_eps": {"2/255": 9.0, "4/255": 9.5}}}
    )
    assert [(r["check"], r["status"]) for r in by_eps][-1] == ("monotone_eps", "warning")
    # equality is not a violation
    flat = consistency_checks({"d": {"clean_acc": 10.0, "robust_acc": {"1/255": 10.0, "2/255": 10.0}}})
    assert all(r["status"] == "ok" for r in flat)


def test_attack_warnings_check_counts_by_attack_and_keeps_distinct_texts():
    """Nothing fired: no record (a clean run's results stay as they were); otherwise one warning with
    the count per attack and eps and the first distinct messages."""
    assert attack_warnings_check([]) is None
    fired = [
        {"attack": "apgd-t", "eps": "4/255", "message": f"there are {n} points with zero gradient!"}
        for n in (8, 8, 3, 1, 2, 4, 5, 6)
    ] + [{"attack": "apgd-dlr", "eps": "1/255", "message": "there are 8 points with zero gradient!"}]
    out = attack_warnings_check(fired)
    assert out["check"] == "attack_warnings" and out["status"] == "warning"
    assert out["warnings"] == 9
    assert out["by_attack"] == {"apgd-t at 4/255": 8, "apgd-dlr at 1/255": 1}
    assert out["messages"] == [f"there are {n} points with zero gradient!" for n in (8, 3, 1, 2, 4)]
    assert len(out["messages"]) == MAX_MESSAGES
    assert out["message"].startswith("pyautoattack warned 9 times (apgd-t at 4/255: 8, apgd-dlr at 1/255: 1)")
