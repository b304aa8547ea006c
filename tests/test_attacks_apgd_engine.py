"""Engine APGD-CE / APGD-T against pyautoattack's APGD, sample by sample.

Random starts differ by design (ours: one generator per sample; pyautoattack: one per batch), so the
exact tests hand the reference our start points through `attack_single_run(x_init=...)` and replay
`perturb`'s restart/target bookkeeping around it (attack the still-robust samples, target = the
(t+2)-th highest clean logit). From the same start, every iterate is the reference's bit for bit:
the broken masks agree on every sample and x_best / loss_best are equal. The slow test compares
robust accuracy over seeds with pyautoattack's own `AutoAttack(version='custom')` random starts.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from attack_toys import ToyZeroShot, batch, one_thread  # noqa: F401
from engine_support import pool_broken
from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted

from zsrobust_bench.attacks.apgd import EngineAPGD
from zsrobust_bench.attacks.loop import run_stepwise
from zsrobust_bench.attacks.registry import build_attack

pytestmark = pytest.mark.usefixtures("one_thread")


def _reference(model, attack: EngineAPGD):
    if attack.targeted:
        ref = APGDAttack_targeted(
            model,
            n_iter=attack.n_iter,
            eps=attack.eps,
            rho=attack.rho,
            n_target_classes=attack.n_target_classes,
        )
    else:
        ref = APGDAttack(model, n_iter=attack.n_iter, eps=attack.eps, rho=attack.rho, loss=attack.loss_name)
    return ref


def reference_from_our_starts(model, attack: EngineAPGD, x, y, ids, seed: int) -> torch.Tensor:
    """Broken mask of pyautoattack's APGD (perturb's loop over restarts/targets) started at our points."""
    ref = _reference(model, attack)
    ref.init_hyperparam(x)
    with torch.no_grad():
        robust = model(x).argmax(1) == y
    for run in range(attack.restarts):
        idx = robust.nonzero().flatten()
        if idx.numel() == 0:
            break
        start = attack.init(x[idx], y[idx], ids[idx], seed, restart=run).extra["xa"]
        if attack.targeted:
            with torch.no_grad():
                ref.y_target = model(x[idx]).sort(dim=1)[1][:, -(2 + run // attack.n_restarts)]
        _, acc, _, _ = ref.attack_single_run(x[idx], y[idx], x_init=start)
        robust[idx[~acc]] = False
    with torch.no_grad():
        return (model(x).argmax(1) == y) & ~robust


def _no_exit(model, attack: EngineAPGD, x, y, ids, seed: int):
    """Our steps over the whole batch with no early exit (one run): final state and broken mask."""
    st = attack.init(x, y, ids, seed, restart=0)
    broken = torch.zeros(len(y), dtype=torch.bool)
    while not bool(attack.finished(st).all()):
        st, hit = attack.step(model, st)
        broken |= hit
    return st, broken


@pytest.mark.parametrize("loss", ["ce", "dlr", "dlr-targeted"])
def test_trajectory_is_the_reference_bit_for_bit(loss):
    """From the same start, x_best and loss_best equal the reference's exactly and the same samples break."""
    C, eps = 10, 6 / 255
    model = ToyZeroShot(C, seed=4)
    x, y = batch(model, 16, C, seed=3)
    ids = torch.arange(16)
    attack = EngineAPGD(eps, C, loss=loss, n_iter=30)
    st, broken = _no_exit(model, attack, x, y, ids, seed=0)
    ref = _reference(model, attack)
    ref.init_hyperparam(x)
    if attack.targeted:
        ref.y_target = model(x).sort(dim=1)[1][:, -2]
    x_best, acc, loss_best, _ = ref.attack_single_run(x, y, x_init=attack.init(x, y, ids, 0).extra["xa"])
    assert torch.equal(broken, ~acc)
    assert torch.equal(st.extra["xbest"], x_best)
    assert torch.equal(st.extra["lbest"], loss_best)
    # teeth: some samples break, some survive, and the step size was halved for some rows
    assert 0 < int(broken.sum()) < 16
    assert bool((st.extra["ss"] < 2 * eps).any())


@pytest.mark.parametrize(
    ("name", "params", "eps_px", "n_iter", "later"),
    [("apgd-ce", {"n_restarts": 3}, 4, 20, False), ("apgd-t", {"n_target_classes": 4}, 6, 2, True)],
)
def test_restarts_and_targets_agree_with_reference(name, params, eps_px, n_iter, later):
    """Restarts and targets as pool runs: the in-memory loop, the engine's slot pool (capacity 5,
    refilled across rows and runs) and the reference replay break exactly the same samples."""
    C, eps = 10, eps_px / 255
    model = ToyZeroShot(C, seed=4)
    x, y = batch(model, 24, C, seed=5, n_wrong=2)
    ids = torch.arange(100, 124)
    attack = build_attack(name, eps, C, backend="engine", n_iter=n_iter, **params)
    assert isinstance(attack, EngineAPGD) and attack.restarts == max(params.values())
    ours = run_stepwise(attack, model, x, y, ids, seed=7)
    reference = reference_from_our_starts(model, attack, x, y, ids, seed=7)
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    pooled = pool_broken(attack, model, x[correct], y[correct], ids[correct], capacity=5, seed=7)
    assert torch.equal(ours.broken & correct, reference)
    assert torch.equal(pooled, reference[correct])
    # teeth: some samples break, some survive; with few iterations a later target breaks a sample
    # the first one did not (the toy model's APGD-CE needs no restart at 4/255)
    assert 0 < int(reference.sum()) < int(correct.sum())
    assert bool((ours.restart > 0).any()) == later


def test_start_is_per_sample_and_in_the_ball():
    """Random starts depend on (seed, sample id, run) only, lie in the eps ball and [0,1], and reach
    the ball's surface on some coordinate (the reference scales t by 1/max|t|)."""
    C, eps = 10, 4 / 255
    model = ToyZeroShot(C, seed=4)
    x, y = batch(model, 8, C, seed=3)
    ids = torch.arange(8)
    attack = EngineAPGD(eps, C, n_iter=10)
    a = attack.init(x, y, ids, seed=1).extra["xa"]
    b = attack.init(x[3:], y[3:], ids[3:], seed=1).extra["xa"]
    assert torch.equal(a[3:], b)
    assert not torch.equal(a, attack.init(x, y, ids, seed=1, restart=1).extra["xa"])
    d = (a - x).flatten(1).abs()
    assert float(d.max()) <= eps * (1 + 1e-6) and float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.allclose(d.amax(dim=1), torch.full((8,), eps), rtol=1e-5)


def _demo(demo_model: Path, dataset: str, n: int):
    from zsrobust_bench.data.registry import get_dataset
    from zsrobust_bench.models import load_model
    from zsrobust_bench.train.validate import load_eval_set
    from zsrobust_bench.zeroshot import build_classifier

    lm = load_model(str(demo_model))
    spec = get_dataset(dataset)
    clf = build_classifier(lm, spec.prompt_set("tecoa")).eval()
    for p in clf.parameters():
        p.requires_grad_(False)
    es = load_eval_set(dataset, "test", n, lm.image_size, "tecoa")
    return clf, es.x, es.y, spec.num_classes


@pytest.mark.slow
@pytest.mark.parametrize(("dataset", "eps_px"), [("synth-shape", 1), ("synth-color", 4)])
def test_demo_model_agrees_sample_by_sample(demo_model, dataset, eps_px):
    """Demo CLIP on a synthetic task: APGD-CE and APGD-T (engine pool) break exactly the samples the
    reference APGD breaks from the same starts (agreement rate 100%)."""
    clf, x, y, C = _demo(demo_model, dataset, 24)
    ids = torch.arange(len(y))
    eps = eps_px / 255
    for name in ("apgd-ce", "apgd-t"):
        attack = build_attack(name, eps, C, backend="engine", n_iter=20, n_restarts=1)
        reference = reference_from_our_starts(clf, attack, x, y, ids, seed=0)
        with torch.no_grad():
            correct = clf(x).argmax(1) == y
        ours = pool_broken(attack, clf, x[correct], y[correct], ids[correct], capacity=8, seed=0)
        assert torch.equal(ours, reference[correct]), name


def test_backends_pick_the_implementation_and_are_recorded():
    """aa-standard on the engine backend runs engine APGD-CE/APGD-T and pyautoattack FAB-T/Square; the
    reference backend runs all four through pyautoattack; the backend is recorded in params but leaves
    the fingerprint alone; an unknown backend fails with the known ones."""
    from zsrobust_bench.attacks.autoattack import APGD, APGDTargeted, FABTargeted, Square
    from zsrobust_bench.errors import ZSBenchError
    from zsrobust_bench.evaluate import build_plan
    from zsrobust_bench.protocols import get_protocol, with_backend

    proto = get_protocol("aa-standard")
    assert proto.attack_backend == "engine" and proto.params()["attack_backend"] == "engine"
    engine_plan, records = build_plan(proto, 10)
    assert [type(a) for a in engine_plan[0].attacks] == [EngineAPGD, EngineAPGD, FABTargeted, Square]
    assert records["1/255"][1]["params"]["n_target_classes"] == 9
    ref = with_backend(proto, "reference")
    ref_plan, _ = build_plan(ref, 10)
    assert [type(a) for a in ref_plan[0].attacks] == [APGD, APGDTargeted, FABTargeted, Square]
    assert ref.params()["attack_backend"] == "reference" and ref.fingerprint() == proto.fingerprint()
    with pytest.raises(ZSBenchError, match="engine, reference"):
        with_backend(proto, "fast")
    # three classes: APGD-T becomes untargeted APGD-DLR on both backends
    small, _ = build_plan(proto, 3)
    assert small[0].attacks[1].name == "apgd-dlr"
