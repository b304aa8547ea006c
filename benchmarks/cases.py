"""Models and data for the engine benchmarks: the shipped demo model on the synthetic suite, a
ViT-B-32-size random model at 224 px, and helpers shared by the benchmark modes."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from zsrobust_bench.attacks.pgd import PGD  # noqa: E402
from zsrobust_bench.engine.blocks import ShardSpec  # noqa: E402
from zsrobust_bench.engine.plan import EngineConfig, EpsAttacks  # noqa: E402
from zsrobust_bench.engine.run import evaluate_shards, shard_bounds  # noqa: E402
from zsrobust_bench.zeroshot import ZeroShotClassifier  # noqa: E402

TINY_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@dataclass
class Task:
    """One dataset of a case: the engine's classifier, the research-style model, the data and indices."""

    name: str
    model: nn.Module
    dataset: Dataset
    indices: np.ndarray
    research: nn.Module | None = None  # text tower in every forward (see reference_loop.ResearchCLIP)

    def subset(self, n: int) -> Task:
        return Task(self.name, self.model, self.dataset, self.indices[:n], self.research)


@dataclass
class EngineRun:
    """What the engine produced for one task."""

    n: int
    clean_correct: int
    robust_correct: int
    row_steps: int
    device_steps: int


def demo_model_path() -> Path:
    from zsrobust_bench.demo import demo_model_path as path

    return path()


def demo_tasks(samples: int | None, seed: int, model: str | None = None) -> tuple[list[Task], str]:
    """The synthetic suite with the shipped demo model (a random tiny CLIP when the asset is missing), or
    with the checkpoint `model` (e.g. a shipped miniature finetune, on which most samples stay robust)."""
    from zsrobust_bench.data.loaders import open_eval_dataset
    from zsrobust_bench.data.registry import expand, get_dataset
    from zsrobust_bench.data.subsets import select_indices
    from zsrobust_bench.models import load_model
    from zsrobust_bench.zeroshot import build_classifier

    path = Path(model) if model else demo_model_path()
    if model:
        lm, label = load_model(str(path)), f"{path.stem} ({path.name})"
    elif path.is_file():
        lm, label = load_model(str(path)), f"demo ({path.name})"
    else:
        lm, label = _tiny_loaded(), "tiny random CLIP (demo asset missing)"
    tasks = []
    for name in expand(["synthetic"]):
        spec = get_dataset(name)
        ds = open_eval_dataset(spec, None, lm.image_size)
        clf = build_classifier(lm, spec.prompt_set("tecoa"))
        idx = select_indices(len(ds), samples, seed, spec.name)
        tasks.append(Task(name, frozen(clf), ds, idx, research_model(lm, spec.prompt_set("tecoa"))))
    return tasks, label


def research_model(lm, prompts) -> nn.Module:
    """The research-style model for a loaded CLIP and a prompt set (shares the CLIP's weights)."""
    from reference_loop import ResearchCLIP

    texts = [t.format(c) for c in prompts.classnames for t in prompts.templates]
    return ResearchCLIP(
        lm.model, lm.tokenizer(texts), len(prompts.templates), lm.image_size, lm.mean, lm.std
    ).eval()


def _tiny_loaded():
    import json
    import tempfile

    import open_clip

    from zsrobust_bench.models import load_model

    d = Path(tempfile.mkdtemp(prefix="zsbench-bench-"))
    (d / "tiny.json").write_text(json.dumps(TINY_CFG))
    torch.manual_seed(0)
    torch.save(open_clip.CLIP(**TINY_CFG).state_dict(), d / "tiny.pt")
    return load_model(str(d / "tiny.pt"), arch=str(d / "tiny.json"))


def vit_b32_task(samples: int, num_classes: int = 10, seed: int = 0) -> Task:
    """A random-init ViT-B-32 CLIP at 224 px, prompts "a photo of class i.", labels = clean predictions."""
    import open_clip
    from reference_loop import ResearchCLIP

    from zsrobust_bench.data.spec import PromptSet
    from zsrobust_bench.zeroshot import compute_class_embeddings

    torch.manual_seed(seed)
    model = open_clip.create_model("ViT-B-32", pretrained=None).eval()
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    prompts = PromptSet(tuple(f"class {i}" for i in range(num_classes)), ("a photo of {}.",))
    emb = compute_class_embeddings(model, tokenizer, prompts)
    mean, std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
    clf = frozen(ZeroShotClassifier(model.visual, emb, 224, mean, std))
    research = ResearchCLIP(
        model, tokenizer([f"a photo of class {i}." for i in range(num_classes)]), 1, 224, mean, std
    )
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(samples, 3, 224, 224, generator=g)
    with torch.inference_mode():
        y = torch.cat([clf(x[i : i + 16]).argmax(dim=1) for i in range(0, samples, 16)])
    return Task("random-224", clf, TensorDataset(x, y.clone()), np.arange(samples), research.eval())


def frozen(model: nn.Module) -> nn.Module:
    """Eval mode and no parameter gradients (both loops attack the input only)."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def pgd_plan(eps: float, steps: int, step_size: float) -> tuple[PGD, list[EpsAttacks]]:
    attack = PGD(eps, steps=steps, step_size=step_size)
    return attack, [EpsAttacks(eps, [attack], [])]


def run_engine(
    task: Task,
    plan: list[EpsAttacks],
    cfg: EngineConfig,
    shard_size: int = 512,
    on_shard: Callable | None = None,
) -> EngineRun:
    """Evaluate one task with the engine, keeping only counts (records are dropped as shards finish)."""
    shards = [
        ShardSpec(k, task.indices[a:b])
        for k, (a, b) in enumerate(shard_bounds(len(task.indices), shard_size))
    ]
    counts = {"clean": 0, "robust": 0}

    def take(key: int, records: list[dict]) -> None:
        counts["clean"] += sum(r["clean_correct"] for r in records)
        counts["robust"] += sum(bool(r["robust_correct"]) for r in records)
        if on_shard is not None:
            on_shard(key, records)

    stats = evaluate_shards(task.model, task.dataset, shards, plan, cfg, take)
    return EngineRun(
        len(task.indices), counts["clean"], counts["robust"], stats.row_steps, stats.device_steps
    )


@contextmanager
def timer() -> Iterator[list[float]]:
    """Wall time, then CPU time of this process (all its threads), of the block, appended to the list.

    CPU time is the steadier measure on a shared machine: other processes' load inflates wall time.
    """
    out: list[float] = []
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        yield out
    finally:
        out.extend([time.perf_counter() - t0, time.process_time() - c0])


def peak_rss_mb() -> float:
    """Peak resident set size of this process, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> str:
    import platform

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
