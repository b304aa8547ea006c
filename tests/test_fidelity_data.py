"""Protocol fidelity of the data: preprocessing, FARE's sample choice, FARE's datasets, templates and
class names equal what the sources use (issue 15, items 2-5)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_data_loaders import _png, _rand, _tar
from torchvision import transforms

from zsrobust_bench.data.catalog import load_prompt_set
from zsrobust_bench.data.loaders import open_eval_dataset
from zsrobust_bench.data.preprocess import OPEN_CLIP_PREPROCESS, TECOA_PREPROCESS
from zsrobust_bench.data.readers.imagefolder import FileListSource
from zsrobust_bench.data.registry import get_dataset, suite
from zsrobust_bench.data.subsets import (
    _fare_subset,
    buffer_shuffle,
    evaluation_subset,
    fare_stream_order,
    protocol_indices,
    robustbench_imagenet_ids,
    select_indices,
)
from zsrobust_bench.data.userfolder import spec_for_imagefolder
from zsrobust_bench.protocols import get_protocol

FIXTURE = Path(__file__).parent / "data" / "clip_benchmark_fare14.json"


# ---------------------------------------------------------------- item 5: preprocessing


def _photos(tmp_path: Path) -> Path:
    """A user folder of real (PIL-written) photos of odd sizes and modes."""
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    sizes = [(300, 200), (257, 400), (96, 96), (640, 481), (224, 224)]
    for i, (w, h) in enumerate(sizes):
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        img = Image.fromarray(arr)
        img = img.convert("L").convert("RGB") if i == 2 else img
        img.save(root / f"c{i % 2}" / f"{i}.jpg" if i % 2 else root / f"c{i % 2}" / f"{i}.png", quality=90)
    return root


def _reference_pixels(path: Path, transform) -> torch.Tensor:
    with Image.open(path) as img:
        return transform(img.convert("RGB"))


def test_tecoa_preprocessing_equals_torchvision_resize256_centercrop224(tmp_path):
    """TeCoA's test transform (finetuning.py#L321-327: Resize(256), CenterCrop(224), ToTensor), byte for
    byte, through the same loader path evaluation uses."""
    root = _photos(tmp_path)
    ds = open_eval_dataset(spec_for_imagefolder(root), None, image_size=224, preprocess=TECOA_PREPROCESS)
    tecoa = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()])
    for i in range(len(ds)):
        ours = ds[i][0]
        assert ours.shape == (3, 224, 224)
        assert torch.equal(ours, _reference_pixels(root / ds.items.files[i], tecoa)), ds.describe(i)
    # teeth: the bicubic default differs from TeCoA's bilinear on these images
    default = open_eval_dataset(spec_for_imagefolder(root), None, image_size=224)
    assert not torch.equal(default[0][0], ds[0][0])


def test_fare_preprocessing_equals_open_clip_eval_transform(tmp_path):
    """FARE uses open_clip's eval transform without its Normalize (RVLM CLIP_benchmark cli.py#L236)."""
    from open_clip import image_transform

    root = _photos(tmp_path)
    for size in (224, 32):
        ds = open_eval_dataset(
            spec_for_imagefolder(root), None, image_size=size, preprocess=OPEN_CLIP_PREPROCESS
        )
        steps = image_transform(size, is_train=False).transforms
        assert type(steps[-1]).__name__ == "Normalize"
        reference = transforms.Compose(steps[:-1])
        for i in range(len(ds)):
            assert torch.equal(ds[i][0], _reference_pixels(root / ds.items.files[i], reference)), (size, i)


def test_native_datasets_skip_preprocessing_in_every_protocol(tmp_path):
    """CIFAR/STL are attacked at their stored size by TeCoA (ToTensor only, finetuning.py#L316-320) and
    FARE (cli.py#L231-234) alike: the protocol's resize never applies to them."""
    from test_data_loaders import _chw, _write_cifar10

    images = _rand(2, 32, 32, 1)
    _write_cifar10(tmp_path, images, [3, 4])
    for p in ("tecoa-pgd", "fare-aa"):
        ds = open_eval_dataset(
            get_dataset("cifar10"), tmp_path, 224, preprocess=get_protocol(p).effective_preprocess()
        )
        assert torch.equal(ds[0][0], _chw(images[0]))


def test_bicubic_model_resize_is_identity_at_224():
    """TeCoA's model-side bicubic upsample to 224 (finetuning.py#L148-153) leaves a 224 crop unchanged."""
    x = torch.rand(2, 3, 224, 224)
    assert torch.equal(
        torch.nn.functional.interpolate(x, size=(224, 224), mode="bicubic", align_corners=False), x
    )


# ---------------------------------------------------------------- item 4: FARE's sample choice


def test_buffer_shuffle_equals_webdatasets_shuffle():
    from webdataset.filters import _shuffle

    for n, bufsize, initial in [
        (0, 10, 10),
        (7, 10, 10),
        (25, 10, 10),
        (25, 10, 3),
        (100, 7, 1),
        (50, 10000, 10000),
    ]:
        ours = list(buffer_shuffle(range(n), bufsize, initial, random.Random(0)))
        theirs = list(_shuffle(iter(range(n)), bufsize=bufsize, initial=initial, rng=random.Random(0)))
        assert ours == theirs, (n, bufsize, initial)
    assert sorted(ours) == list(range(50)) and ours != list(range(50))


SHARD_SIZES = [37, 5, 23, 11, 19]  # 5 shards over 4 workers: worker 0 reads two, worker 1 a small one


def _vtab_caltech(tmp_path: Path) -> tuple[Path, list[str]]:
    """caltech101-vtab as clip-benchmark webdataset shards (keys s<global index>); returns the split dir."""
    split = tmp_path / "caltech101-vtab" / "wds" / "test"
    split.mkdir(parents=True)
    pixels = _png(_rand(1, 8, 8, 0)[0])
    keys, k = [], 0
    for s, size in enumerate(SHARD_SIZES):
        members = [(f"s{k + j:05d}", pixels, (k + j) % 102) for j in range(size)]
        _tar(split / f"{s}.tar", members)
        keys += [m[0] for m in members]
        k += size
    (split / "nshards.txt").write_text(f"{len(SHARD_SIZES)}\n")
    return split, keys


@pytest.mark.filterwarnings("ignore:This DataLoader will create 4 worker processes")
@pytest.mark.parametrize(("batch", "bufsize"), [(50, 10_000), (4, 8)], ids=["fare-constants", "streaming"])
def test_fare_stream_order_equals_the_webdataset_loader(tmp_path, batch, bufsize):
    """FARE's pipeline (builder.py#L682-698, cli.py#L258 and #L276-279) run by webdataset 0.2.48 and a
    4-worker torch DataLoader yields the samples in the order `fare_stream_order` computes. (Decoding
    and the transform do not reorder samples; keys are read instead of images.)"""
    import webdataset as wds
    from torch.utils.data import DataLoader

    split, keys = _vtab_caltech(tmp_path)
    pattern = str(split / f"{{0..{len(SHARD_SIZES) - 1}}}.tar")
    pipeline = (
        wds.WebDataset(pattern)
        .to_tuple("__key__", "cls")
        .shuffle(bufsize, initial=bufsize, rng=random.Random(0))
        .batched(batch)
    )
    loader = DataLoader(pipeline, batch_size=None, shuffle=False, num_workers=4)
    streamed = [key for b in loader for key in b[0]]
    order = fare_stream_order(SHARD_SIZES, 0, workers=4, batch=batch, bufsize=bufsize, initial=bufsize)
    assert [keys[i] for i in order] == streamed
    assert sorted(streamed) == keys and streamed[: len(keys)] != keys
    # our webdataset reader indexes the same samples in the same global order
    ds = open_eval_dataset(get_dataset("caltech101-vtab"), tmp_path, image_size=8)
    assert [ds.describe(i).rsplit(":", 1)[1].split(".")[0] for i in range(len(ds))] == keys


def test_fare_aa_attacks_fares_first_samples_and_says_when_it_cannot(tmp_path):
    _vtab_caltech(tmp_path)
    ds = open_eval_dataset(get_dataset("caltech101-vtab"), tmp_path, image_size=8)
    fare = get_protocol("fare-aa")
    chosen = evaluation_subset(ds, "caltech101-vtab", 30, fare.seed, fare.effective_selection())
    assert chosen.method == "fare-webdataset" and "5 shard(s)" in chosen.note
    assert chosen.indices.tolist() == sorted(fare_stream_order(SHARD_SIZES, 0)[:30])
    seeded = evaluation_subset(ds, "caltech101-vtab", 30, 0, "seeded")
    assert (
        seeded.method == "seeded"
        and seeded.indices.tolist() == select_indices(95, 30, 0, "caltech101-vtab").tolist()
    )
    assert seeded.indices.tolist() != chosen.indices.tolist()
    assert evaluation_subset(ds, "caltech101-vtab", None, 0, "fare").method == "all"
    # a copy that is not the webdataset (here: a user folder) cannot identify FARE's samples
    other = open_eval_dataset(spec_for_imagefolder(_photos(tmp_path)), None, image_size=8)
    fallback = evaluation_subset(other, "pets", 3, 0, "fare")
    assert fallback.method == "seeded" and "cannot be identified" in fallback.note


def test_validate_rebuilds_fares_selection_from_the_recorded_shard_sizes(tmp_path):
    """The results file records the shard sizes; `protocol_indices` (what validate compares with)
    rebuilds exactly the evaluated indices from them, and refuses sizes that do not add up."""
    _vtab_caltech(tmp_path)
    ds = open_eval_dataset(get_dataset("caltech101-vtab"), tmp_path, image_size=8)
    fare = dataclasses.replace(get_protocol("fare-aa"), samples=30, samples_by_dataset={})
    chosen = evaluation_subset(ds, "caltech101-vtab", fare.samples_for("caltech101-vtab"), 0, "fare")
    record = chosen.as_dict()
    assert record["shard_sizes"] == list(SHARD_SIZES)
    rebuilt = protocol_indices(fare, "caltech101-vtab", sum(SHARD_SIZES), record)
    assert rebuilt is not None and rebuilt.tolist() == chosen.indices.tolist()
    with pytest.raises(ValueError, match="add up to"):
        protocol_indices(fare, "caltech101-vtab", sum(SHARD_SIZES) + 1, record)
    assert protocol_indices(fare, "imagenet", 50_000, {"method": "robustbench-imagenet"}) is None


def test_robustbench_imagenet_list_is_robustbenchs():
    """The shipped list rebuilds RobustBench's helper_files/imagenet_test_image_ids.txt (RobustBench@78fcc9e)."""
    ids = robustbench_imagenet_ids()
    assert len(ids) == len(set(ids)) == 5000
    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()
    assert digest == "d4121626d07722a0126c35b1563042e46a546f1a05ce705f2cdc635896d58574"


def test_imagenet_fare_selection_is_robustbenchs_first_n(tmp_path):
    ids = robustbench_imagenet_ids()
    files = sorted(ids[:40] + [f"n01440764/ILSVRC2012_val_{k:08d}.JPEG" for k in range(90000, 90030)])
    items = FileListSource(tmp_path, files, [0] * len(files))
    chosen = _fare_subset(items, len(files), 25, 0, "imagenet")
    assert chosen.method == "robustbench-imagenet"
    assert chosen.indices.tolist() == sorted(files.index(f) for f in ids[:25])
    assert _fare_subset(items, len(files), 60, 0, "imagenet") is None  # the 41st listed image is missing


# ---------------------------------------------------------------- items 2-3: FARE's datasets, templates, names


def test_fare14_lists_fares_vtab_caltech101_and_eurosat(capsys):
    from zsrobust_bench.cli import main

    assert main(["datasets", "list", "--suite", "fare14", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["caltech101-vtab"]["classes"] == 102 and rows["caltech101-vtab"]["eval_size"] == 6084
    assert rows["eurosat-vtab"]["classes"] == 10 and rows["eurosat-vtab"]["eval_size"] == 5400
    assert "caltech101" not in rows and "eurosat" not in rows
    assert set(suite("tecoa16")) >= {"caltech101", "eurosat"}  # TeCoA's variants stay in TeCoA's suite
    assert get_dataset("caltech101").num_classes == 101
    assert "background" in get_dataset("caltech101-vtab").prompt_set("clip").classnames


def _tokens(texts: list[str]) -> torch.Tensor:
    from open_clip import get_tokenizer

    return get_tokenizer("ViT-B-32")(texts)


def test_fare14_templates_and_class_names_equal_clip_benchmark():
    """Every fare14 template list, and every class-name list CLIP_benchmark's JSON holds, equals ours
    (values extracted into tests/data/clip_benchmark_fare14.json from the source commits it names).
    Pets: CLIP_benchmark capitalises every breed, CLIP's list (ours) only the cat breeds: CLIP's
    tokenizer lower-cases, so the prompts are the same tokens."""
    fixture = json.loads(FIXTURE.read_text())["datasets"]
    assert sorted(fixture) == sorted(suite("fare14"))
    for name, ref in fixture.items():
        ours = load_prompt_set(name, "clip")
        assert list(ours.templates) == ref["templates"], name
        if ref["classnames"] is None:
            continue
        if name == "pets":
            assert [c.lower() for c in ref["classnames"]] == [c.lower() for c in ours.classnames]
            prompts = [t.format(c) for c in ref["classnames"] for t in ref["templates"]]
            assert torch.equal(_tokens(prompts), _tokens([p.lower() for p in prompts]))
        else:
            assert list(ours.classnames) == ref["classnames"], name
    assert fixture["pcam"]["templates"] == ["a histopathology slide showing {}", "histopathology image of {}"]


def test_fare_aa_run_records_selection_preprocessing_and_clean_on_the_whole_split(tmp_path, demo_model):
    """A fare-aa run attacks FARE's first samples of the stream and reports clean accuracy on the whole
    split beside them (RVLM run_benchmark_clean.sh: n_samples -1), recording how both were chosen."""
    from zsrobust_bench.evaluate import evaluate

    _vtab_caltech(tmp_path)
    out = tmp_path / "run"
    res = evaluate(
        str(demo_model),
        ["caltech101-vtab"],
        protocol="fare-aa",
        out=out,
        data_root=tmp_path,
        overrides={"samples": 20},
        progress=False,
    )
    d = res["datasets"]["caltech101-vtab"]
    assert d["selection"]["method"] == "fare-webdataset" and d["n"] == 20 and d["n_split"] == 95
    assert d["n_clean_split"] == 95 and (out / d["clean_split_samples_file"]).is_file()
    records = [json.loads(line) for line in (out / d["clean_split_samples_file"]).read_text().splitlines()]
    assert [r["index"] for r in records] == list(range(95))
    assert d["clean_acc_split"] == round(100 * sum(r["clean_correct"] for r in records) / 95, 4)
    attacked = [json.loads(line)["index"] for line in (out / d["samples_file"]).read_text().splitlines()]
    assert attacked == sorted(fare_stream_order(SHARD_SIZES, 0)[:20])
    assert res["means"]["clean_acc_split"] == d["clean_acc_split"]
    assert res["protocol"]["preprocess"] == {"resize": "model", "interpolation": "bicubic", "crop": "model"}
    assert res["protocol"]["params"]["attacks"][0]["n_restarts"] == 5
