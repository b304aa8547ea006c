"""The training loop: TeCoA finetuning / visual prompting (and the clean and one-hot baselines), FARE
(unsupervised embedding-space adversarial finetuning) and CLIP-style contrastive training, with DDP,
AMP on CUDA, exact resume, logging and validation.

Every random choice is a pure function of (seed, step): batch composition, PGD random starts and
captions are drawn for the whole global batch and sliced per process, so a run gives the same
weights for any number of processes at a fixed global batch, and a resumed run continues exactly.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from ..attacks.losses import sq_l2_loss
from ..attacks.pgd import PGD
from ..distributed import DistInfo, all_gather_with_grad, all_reduce_sum, barrier, init_distributed
from ..errors import ZSBenchError
from ..fileio import atomic_write_json, atomic_write_text, run_lock, sha256_json
from .captions import CaptionSampler, matches, vocabulary_token_ids
from .checkpoint import (
    TRAIN_STATE,
    export_native,
    export_tecoa,
    load_train_state,
    rng_state,
    save_train_state,
    set_rng_state,
)
from .data import (
    TASK_ORDER,
    BatchPlan,
    ImageFolderTrain,
    global_uniform,
    imagefolder_batches,
    rank_rows,
    shared_render,
)
from .modules import (
    BaseModel,
    ContrastiveCLIP,
    ImageClassifier,
    Preprocess,
    load_base,
    make_prompted,
    select_trainable,
    text_embeddings,
)
from .optim import build_optimizer, lr_at, set_lr
from .trainlog import TrainLog, plot_log
from .validate import Validator, load_eval_set


@dataclass
class Run:
    """Everything one training run holds."""

    cfg: dict[str, Any]
    out: Path
    dist: DistInfo
    base: BaseModel
    module: nn.Module  # ImageClassifier or ContrastiveCLIP (unwrapped)
    tower: nn.Module  # the image tower being trained (PromptedVisual when prompting)
    pre: Preprocess
    plan: BatchPlan
    total_steps: int
    original: ImageClassifier | None = None  # frozen original classifier (pseudo labels, FARE's phi_orig)
    classnames: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)
    images: torch.Tensor | None = None  # pre-rendered uint8 synthetic images
    attrs: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    folder: ImageFolderTrain | None = None
    captions: CaptionSampler | None = None


def _class_prompts(cfg: dict[str, Any]) -> tuple[list[str], list[str]]:
    from ..data.registry import dataset_spec

    data = cfg["data"]
    name = f"synth-{data['task']}" if data["kind"] == "synthetic" else data.get("dataset")
    if not name:
        raise ZSBenchError(
            "data.dataset must name the registry dataset whose class names label the training folders"
        )
    ps = dataset_spec(name).prompt_set(cfg["text"]["prompt_set"])
    templates = list(cfg["text"]["templates"] or ps.templates)
    for t in templates:
        if t.count("{}") != 1:
            raise ZSBenchError(f"text.templates entry {t!r} must contain exactly one '{{}}'")
    return list(ps.classnames), templates


def _autocast(cfg: dict[str, Any], device: torch.device) -> contextlib.AbstractContextManager:
    if cfg["amp"] and device.type == "cuda":
        return torch.autocast("cuda", dtype=getattr(torch, cfg["amp_dtype"]))
    return contextlib.nullcontext()


def _setup(cfg: dict[str, Any], out: Path, dist: DistInfo) -> Run:
    torch.manual_seed(cfg["seed"])
    base = load_base(cfg["model"], cfg["seed"])
    model = base.model.to(dist.device)
    pre = Preprocess(base.image_size, base.mean, base.std).to(dist.device)
    data = cfg["data"]
    images = attrs = labels = None
    folder = None
    if data["kind"] in ("synthetic", "synthetic-captions"):
        images, attrs = shared_render("train", int(data["size"]), dist, workers=max(1, int(data["workers"])))
        n = images.shape[0]
        if data["kind"] == "synthetic":
            labels = attrs[:, TASK_ORDER.index(data["task"])]
    elif data["kind"] == "imagefolder":
        folder = ImageFolderTrain(
            data["root"], int(data["image_size"]), data["resize"], data["interpolation"]
        )
        n = len(folder)
    else:
        raise ZSBenchError(
            f"data.kind={data['kind']!r} is not one of synthetic, synthetic-captions, imagefolder"
        )
    plan = BatchPlan(n, int(cfg["batch_size"]), int(cfg["seed"]))
    total = int(cfg["steps"]) if cfg["steps"] is not None else int(cfg["epochs"]) * plan.steps_per_epoch
    run_kw: dict[str, Any] = {"images": images, "attrs": attrs, "labels": labels, "folder": folder}
    if cfg["method"] == "contrastive":
        for p in model.parameters():
            p.requires_grad_(True)
        with torch.no_grad():
            model.logit_scale.fill_(math.log(float(cfg["contrastive"]["init_logit_scale"])))
        module: nn.Module = ContrastiveCLIP(model, pre)
        return Run(
            cfg,
            out,
            dist,
            base,
            module,
            model.visual,
            pre,
            plan,
            total,
            captions=CaptionSampler(base.tokenizer, int(cfg["seed"]), cfg["contrastive"]["caption_keep"]),
            **run_kw,
        )
    for p in model.parameters():
        p.requires_grad_(False)
    classnames, templates = _class_prompts(cfg)
    if folder is not None and cfg["labels"] == "true" and len(folder.classes) != len(classnames):
        raise ZSBenchError(
            f"{data['root']} has {len(folder.classes)} class folders but {data['dataset']} has {len(classnames)} classes"
        )
    text_emb = text_embeddings(model, base.tokenizer, classnames, templates, dist.device)
    original = None
    if cfg["labels"] == "pseudo" or cfg["method"] == "fare":
        original = ImageClassifier(copy.deepcopy(model.visual), pre, text_emb, None).eval()
    tower: nn.Module = model.visual
    if cfg["trainable"] == "prompt":
        tower = make_prompted(model.visual, base.image_size, cfg["prompt"], int(cfg["seed"])).to(dist.device)
    select_trainable(tower, cfg["trainable"], int(cfg["partial_blocks"]), int(cfg["partial_params"]))
    linear = None
    if cfg["head"] == "onehot":
        torch.manual_seed(cfg["seed"] + 17)
        linear = nn.Linear(int(base.arch_config["embed_dim"]), len(classnames)).to(dist.device)
    module = ImageClassifier(tower, pre, None if linear is not None else text_emb, linear)
    return Run(
        cfg, out, dist, base, module, tower, pre, plan, total, original, classnames, templates, **run_kw
    )


def _batches(run: Run, start: int) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """(step, images in [0,1], labels) of this process's rows of the global batches from `start`."""
    rows = rank_rows(run.plan.global_batch, run.dist)
    if run.folder is not None:
        it = imagefolder_batches(
            run.folder, run.plan, rows, start, run.total_steps, int(run.cfg["data"]["workers"])
        )
        for step, (x, y, _) in zip(range(start, run.total_steps), it, strict=True):
            yield step, x, y
        return
    for step in range(start, run.total_steps):
        idx = run.plan.global_indices(step)[rows]
        x = run.images[idx].float() / 255
        y = run.labels[idx] if run.labels is not None else torch.zeros(len(idx), dtype=torch.int64)
        yield step, x, y


def _inner_attack(
    run: Run,
    step: int,
    x: torch.Tensor,
    target: torch.Tensor,
    fn: Callable[[torch.Tensor], torch.Tensor],
    loss: str,
) -> torch.Tensor:
    """The configured PGD's final iterate on `loss(fn(x + delta), target)` (x itself when the attack is
    off); the forward runs under the run's autocast, the loss outside it in fp32, summed."""
    cfg, dev = run.cfg, run.dist.device
    atk = cfg["attack"]
    if float(atk["eps"]) <= 0 or int(atk["steps"]) <= 0:
        return x
    noise = None
    if atk["random_start"]:
        rows = rank_rows(run.plan.global_batch, run.dist)
        noise = global_uniform(
            int(cfg["seed"]), step, (run.plan.global_batch, *x.shape[1:]), rows, device=x.device
        )
    pgd = PGD(
        float(atk["eps"]),
        int(atk["steps"]),
        step_size=float(atk["step_size"]),
        loss=loss,
        random_start=bool(atk["random_start"]),
        momentum=float(atk["momentum"]),
    )

    def forward(z: torch.Tensor) -> torch.Tensor:
        with _autocast(cfg, dev):
            return fn(z)

    return pgd.final_iterate(forward, x, target, pgd.start_from(x, noise, clamp=bool(atk["clamp_start"])))


def _tecoa_step(
    run: Run, ddp: nn.Module, step: int, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    cfg, dev = run.cfg, run.dist.device
    x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
    module = run.module
    module.eval()
    with torch.no_grad(), _autocast(cfg, dev):
        if run.original is not None:
            y = run.original(x).argmax(dim=1)
        clean_pred = module(x).argmax(dim=1)
    x_in = _inner_attack(run, step, x, y, module, "ce")
    module.train()
    with _autocast(cfg, dev):
        logits = ddp(x_in)
    loss = F.cross_entropy(logits.float(), y)
    n = float(len(y))
    stats = {
        "n": n,
        "loss": float(loss.detach()) * n,
        "clean": float((clean_pred == y).sum()),
        "adv": float((logits.detach().argmax(dim=1) == y).sum()),
    }
    return loss, stats


def _fare_step(
    run: Run, ddp: nn.Module, step: int, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """FARE (R-FARE train/adversarial_training_clip.py:296-361): the attack maximises and the update
    minimises ||phi(x_adv) - phi_orig(x)||_2^2 (sum over the embedding, mean over the batch); labels
    (true or pseudo) only feed the logged zero-shot accuracies."""
    cfg, dev = run.cfg, run.dist.device
    x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
    module, original = run.module, run.original
    module.eval()
    with torch.no_grad(), _autocast(cfg, dev):
        target = original.embed(x).float()
        if cfg["labels"] == "pseudo":
            y = original.head(target).argmax(dim=1)
        clean_pred = module(x).argmax(dim=1)
    x_in = _inner_attack(run, step, x, target, module.embed, "sq-l2")
    module.train()
    with _autocast(cfg, dev):
        z = ddp(x_in, features=True)
    n = float(len(y))
    loss = sq_l2_loss(z, target) / n
    with torch.no_grad():
        adv_pred = module.head(z.detach()).argmax(dim=1)
    stats = {
        "n": n,
        "loss": float(loss.detach()) * n,
        "clean": float((clean_pred == y).sum()),
        "adv": float((adv_pred == y).sum()),
    }
    return loss, stats


def _contrastive_step(
    run: Run, ddp: nn.Module, step: int, x: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    cfg, dev = run.cfg, run.dist.device
    gidx = run.plan.global_indices(step)
    attrs = run.attrs[gidx]
    tokens, keep, _ = run.captions.sample(attrs, step)
    rows = rank_rows(run.plan.global_batch, run.dist)
    run.module.train()
    with _autocast(cfg, dev):
        fi, ft, scale = ddp(x.to(dev), tokens[rows].to(dev))
    fi, ft = all_gather_with_grad(fi.float()), all_gather_with_grad(ft.float())
    logits = scale * fi @ ft.t()
    if cfg["contrastive"]["positives"] == "matching":
        m = matches(attrs, keep).float().to(dev)
        t_img, t_txt = m / m.sum(1, keepdim=True), (m / m.sum(0, keepdim=True)).t()
    else:
        m = torch.eye(len(gidx), device=dev)
        t_img = t_txt = m
    loss = (F.cross_entropy(logits, t_img) + F.cross_entropy(logits.t(), t_txt)) / 2
    with torch.no_grad():
        hit = m.gather(1, logits.argmax(dim=1, keepdim=True)).squeeze(1)
    n = float(len(gidx)) / run.dist.world_size  # each process reports its share of the global numbers
    share = 1.0 / run.dist.world_size
    stats = {
        "n": n,
        "loss": float(loss.detach()) * n,
        "clean": float(hit.sum()) * share,
        "adv": float(hit.sum()) * share,
    }
    return loss, stats


STEPS = {"tecoa": _tecoa_step, "fare": _fare_step}  # supervised-shape steps: (run, ddp, step, x, y)


def _trainable_state(run: Run) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in run.module.state_dict().items()}


def _export(run: Run, path: Path, best: float, opt: torch.optim.Optimizer | None, step: int) -> None:
    exp = run.cfg["export"]
    clip = run.base.model
    dtype = getattr(torch, exp["dtype"]) if exp["dtype"] else None
    rows = vocabulary_token_ids(run.base.tokenizer) if exp["compact_tokens"] else None
    extra = {
        "trained_with": "zsbench train",
        "train_config": run.cfg.get("name"),
        "train_step": step,
        "method": run.cfg["method"],
        "trainable": run.cfg["trainable"],
    }
    export_native(path, run.base, clip, run.tower, dtype=dtype, compact_rows=rows, extra=extra)
    if exp["tecoa_dict"] and run.cfg["method"] == "tecoa":
        tecoa = path.with_name(path.name.replace(".safetensors", "") + ".pth.tar")
        epoch = step // run.plan.steps_per_epoch
        export_tecoa(
            tecoa,
            run.tower,
            epoch=epoch,
            best_acc1=best,
            optimizer=opt.state_dict() if opt is not None else None,
        )


def _prune(ckpt_dir: Path, keep: int) -> None:
    files = sorted(ckpt_dir.glob("step-*.safetensors"))
    for f in files[: max(0, len(files) - keep)]:
        f.unlink()
        f.with_name(f.name.replace(".safetensors", "") + ".pth.tar").unlink(missing_ok=True)


def train(config: dict[str, Any], out_dir: Path, *, resume: bool = False) -> Path:
    """Run a resolved training config into `out_dir`; returns the final checkpoint path."""
    dist = init_distributed(config.get("device"))
    out_dir = Path(out_dir)
    lock = run_lock(out_dir) if dist.is_main else contextlib.nullcontext(out_dir)
    with lock:
        return _train(config, out_dir, dist, resume)


def _train(cfg: dict[str, Any], out: Path, dist: DistInfo, resume: bool) -> Path:
    cfg_hash = sha256_json(
        {k: v for k, v in cfg.items() if k not in ("progress", "checkpoint_every", "log_every", "export")}
    )
    state_path = out / TRAIN_STATE
    state = None
    if state_path.is_file():
        if not resume:
            raise ZSBenchError(
                f"{out} already holds a training run", "pass --resume to continue it or choose another --out"
            )
        state = load_train_state(state_path)
        if state["config_hash"] != cfg_hash:
            raise ZSBenchError(
                f"{out} holds a run of a different config", "resume with the same config and --set values"
            )
    elif (out / "final.safetensors").is_file() and not resume:
        raise ZSBenchError(f"{out} already holds a finished run", "choose another --out")
    if dist.is_main:
        atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg, sort_keys=True))
    run = _setup(cfg, out, dist)
    params = [(n, p) for n, p in run.module.named_parameters() if p.requires_grad]
    opt = build_optimizer(params, cfg["optimizer"])
    use_scaler = cfg["amp"] and dist.device.type == "cuda" and cfg["amp_dtype"] == "float16"
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    start, best, best_step = 0, -1.0, -1
    acc = dict.fromkeys(LOG_WINDOW, 0.0)
    if state is not None:
        run.module.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if use_scaler and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        start, best, best_step = int(state["step"]), float(state["best_robust"]), int(state["best_step"])
        if dist.is_main:  # the window's sums over all processes live on rank 0 after a resume
            acc = dict(zip(LOG_WINDOW, state["log_window"].tolist(), strict=True))
        if dist.is_main:
            print(
                f"resuming from step {start} (epoch {state['data_epoch']}, batch {state['data_batch']})",
                flush=True,
            )
        if state["world_size"] != dist.world_size and dist.is_main:
            print(
                f"note: resuming a {state['world_size']}-process run with {dist.world_size} processes (same global batch)"
            )
    ddp: nn.Module = run.module
    if dist.distributed:
        ddp = DDP(
            run.module,
            device_ids=[dist.device.index] if dist.device.type == "cuda" else None,
            broadcast_buffers=False,
        )
    validator = _make_validator(run) if dist.is_main else None
    log = TrainLog(out / "log.jsonl", start if state is not None else None) if dist.is_main else None
    bar = None
    if dist.is_main and cfg["progress"]:
        from tqdm import tqdm

        bar = tqdm(total=run.total_steps, initial=start, desc=cfg.get("name") or "train", dynamic_ncols=True)
    t0 = time.time()
    step = start
    for step, x, y in _batches(run, start):
        set_lr(
            opt,
            lr_at(
                step,
                float(cfg["optimizer"]["lr"]),
                run.total_steps,
                int(cfg["schedule"]["warmup"]),
                cfg["schedule"]["kind"],
            ),
        )
        if cfg["method"] == "contrastive":
            loss, stats = _contrastive_step(run, ddp, step, x)
        else:
            loss, stats = STEPS[cfg["method"]](run, ddp, step, x, y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg["grad_clip"]:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_([p for _, p in params], float(cfg["grad_clip"]))
        scaler.step(opt)
        scaler.update()
        if cfg["method"] == "contrastive":
            with torch.no_grad():
                run.base.model.logit_scale.clamp_(0, math.log(float(cfg["contrastive"]["max_logit_scale"])))
        for k in acc:
            acc[k] += stats[k]
        done = step + 1
        if done % int(cfg["log_every"]) == 0 or done == run.total_steps:
            tot = _window_total(acc)
            n = max(1.0, float(tot[0]))
            rec = {
                "kind": "train",
                "step": done,
                "epoch": done / run.plan.steps_per_epoch,
                "lr": opt.param_groups[0]["lr"],
                "loss": float(tot[1]) / n,
                "clean_acc": 100 * float(tot[2]) / n,
                "adv_acc": 100 * float(tot[3]) / n,
                "elapsed_s": time.time() - t0,
            }
            acc = dict.fromkeys(acc, 0.0)
            if log is not None:
                log.write(rec)
            if bar is not None:
                bar.set_postfix(
                    loss=f"{rec['loss']:.3f}", clean=f"{rec['clean_acc']:.1f}", adv=f"{rec['adv_acc']:.1f}"
                )
        if bar is not None:
            bar.update(1)
        val_every = int(cfg["validation"]["every"])
        if validator is not None and (done % val_every == 0 or done == run.total_steps):
            res = validator.run(run.base, run.tower, dist.device, cfg["method"] == "contrastive")
            log.write({"kind": "val", "step": done, **res})
            if res["mean_robust_acc"] > best:
                best, best_step = res["mean_robust_acc"], done
                _export(run, out / "best.safetensors", best, opt, done)
                atomic_write_json(out / "best.json", {"step": done, **res})
        if done % int(cfg["checkpoint_every"]) == 0 and done < run.total_steps:
            _checkpoint(run, opt, scaler, done, best, best_step, cfg_hash, _window_total(acc))
    window = _window_total(acc)  # every process takes part in the reduction
    barrier()
    final = out / "final.safetensors"
    if dist.is_main:
        if bar is not None:
            bar.close()
        _export(run, final, best, opt, run.total_steps)
        _checkpoint(run, opt, scaler, run.total_steps, best, best_step, cfg_hash, window)
        _final_eval(run)
        plot_log(out / "log.jsonl", out / "training.png")
        copy_to = cfg["export"]["copy_final_to"]
        if copy_to:
            from ..fileio import atomic_write_bytes

            atomic_write_bytes(Path(copy_to), final.read_bytes())
    barrier()
    return final


LOG_WINDOW = ("n", "loss", "clean", "adv")  # sums over the steps since the last logged train record


def _window_total(acc: dict[str, float]) -> torch.Tensor:
    """The logging window's sums over all processes (float64), in LOG_WINDOW order."""
    return all_reduce_sum(torch.tensor([acc[k] for k in LOG_WINDOW], dtype=torch.float64))


def _make_validator(run: Run) -> Validator | None:
    v = run.cfg["validation"]
    if not v["datasets"]:
        return None
    eps = float(v["eps"]) if v["eps"] is not None else float(run.cfg["attack"]["eps"])
    sets = [
        load_eval_set(name, v["split"], v["n"], run.base.image_size, v["prompt_set"], v["data_root"])
        for name in v["datasets"]
    ]
    return Validator(sets, v, eps)


def _checkpoint(
    run: Run,
    opt: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    step: int,
    best: float,
    best_step: int,
    cfg_hash: str,
    log_window: torch.Tensor,
) -> None:
    """Resumable state (every process has identical weights; rank 0 writes; the logging window's
    sums too, so a resumed run logs what an uninterrupted one does) plus the step export."""
    if not run.dist.is_main:
        return
    epoch, pos = run.plan.position(step)
    save_train_state(
        run.out / TRAIN_STATE,
        {
            "model": _trainable_state(run),
            "optimizer": opt.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else {},
            "rng": rng_state(),
            "step": step,
            "data_epoch": epoch,
            "data_batch": pos,
            "best_robust": best,
            "best_step": best_step,
            "world_size": run.dist.world_size,
            "config_hash": cfg_hash,
            "log_window": log_window,
        },
    )
    if step < run.total_steps:
        ckdir = run.out / "checkpoints"
        _export(run, ckdir / f"step-{step:06d}.safetensors", best, opt, step)
        _prune(ckdir, int(run.cfg["keep_checkpoints"]))


def _final_eval(run: Run) -> None:
    fe = run.cfg["final_eval"]
    if not fe["datasets"]:
        return
    eps = float(fe["eps"]) if fe["eps"] is not None else 0.0
    sets = [
        load_eval_set(name, fe["split"], fe["n"], run.base.image_size, run.cfg["validation"]["prompt_set"])
        for name in fe["datasets"]
    ]
    v = Validator(sets, {"steps": fe["steps"], "step_size": None, "batch_size": 256}, eps)
    res = v.run(run.base, run.tower, run.dist.device, True)
    res["eps"] = eps
    atomic_write_json(run.out / "final_eval.json", res)
    print(
        json.dumps(
            {k: round(d["robust_acc"] if eps else d["clean_acc"], 2) for k, d in res["datasets"].items()}
        )
    )
