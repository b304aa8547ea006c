"""Why the loss is summed in fp32: a mean-reduced loss under fp16 compute underflows and weakens PGD."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from attack_toys import Half, ToyZeroShot, batch, margins, one_thread  # noqa: F401

from zsrobust_bench.attacks.loop import run_stepwise
from zsrobust_bench.attacks.pgd import PGD
from zsrobust_bench.sanity import precision_check

pytestmark = pytest.mark.usefixtures("one_thread")

B = 64


def _confident_batch():
    """64 correctly classified samples with a top-2 logit gap of 14 to 16.

    Their softmax error p_wrong is about exp(-15) ~ 3e-7: summed, that is representable in fp16
    (smallest subnormal 6e-8); divided by the batch size (mean reduction) it is ~5e-9 and rounds to
    zero when autocast hands the gradient to the fp16 network.
    """
    model = ToyZeroShot(10)
    x, y = batch(model, 2000, 10, seed=1)
    gap = margins(model, x)
    rows = ((gap > 14) & (gap < 16)).nonzero().flatten()[:B]
    assert rows.numel() == B
    return model, x[rows], y[rows]


def _robust(model, x, y, loss: str) -> torch.Tensor:
    # the same name for every variant: identical per-sample random starts
    attack = PGD(4 / 255, steps=10, step_size=1 / 255, loss=loss, name="pgd")
    return ~run_stepwise(attack, model, x, y, torch.arange(x.shape[0]), seed=0).broken


def test_fp32_sum_is_at_least_as_strong_as_fp16_mean():
    """The fp16 network is the fp32 one cast to half on CPU (fp16 conv/matmul run there), i.e. what
    autocast does on a GPU; the loss itself is fp32 either way (as autocast does for cross-entropy)."""
    model, x, y = _confident_batch()
    half = Half(model)
    with torch.no_grad():
        assert torch.equal(half(x).argmax(dim=1), y)  # same clean predictions in fp16

    # the mechanism: input gradients vanish for many samples with mean reduction in fp16, never with sum
    zero = {}
    for reduction in ("mean", "sum"):
        xr = x.clone().requires_grad_(True)
        loss = F.cross_entropy(half(xr).float(), y, reduction=reduction)
        (g,) = torch.autograd.grad(loss, xr)
        zero[reduction] = int((g.flatten(1).abs().amax(dim=1) == 0).sum())
    assert zero["sum"] == 0
    assert zero["mean"] >= B // 4

    fp32_sum = _robust(model, x, y, "ce")
    fp32_mean = _robust(model, x, y, "ce-mean")
    fp16_sum = _robust(half, x, y, "ce")
    fp16_mean = _robust(half, x, y, "ce-mean")
    # in fp32 the reduction only rescales the gradient: sign steps, hence outcomes, are identical
    assert torch.equal(fp32_sum, fp32_mean)
    # summing rescues fp16 as well
    assert int(fp16_sum.sum()) <= int(fp16_mean.sum())
    # ours (fp32, summed) is at least as strong everywhere and much stronger than TeCoA's fp16 mean
    assert int(fp32_sum.sum()) <= int(fp16_mean.sum())
    assert int(fp16_mean.sum()) - int(fp32_sum.sum()) >= B // 4
    assert int(fp32_sum.sum()) < B // 4


def test_low_precision_refused_on_cpu():
    model, x, y = ToyZeroShot(10), *batch(ToyZeroShot(10), 4, 10)
    with pytest.raises(ValueError, match="only supported on CUDA"):
        precision_check(model, x, y, eps=1 / 255, precision="bf16")
    with pytest.raises(ValueError, match="unknown precision"):
        precision_check(model, x, y, eps=1 / 255, precision="fp8")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="autocast precision check needs CUDA")
def test_precision_check_on_cuda():
    model, x, y = _confident_batch()
    model, x, y = model.cuda(), x.cuda(), y.cuda()
    out = precision_check(model, x, y, eps=4 / 255, precision="bf16")
    assert out["check"] == "precision" and set(out["robust"]) == {"fp32", "bf16"}
