"""Loaders read miniature copies of the real on-disk formats, offline, with exact pixels and labels."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Subset

from zsrobust_bench.data.loaders import open_eval_dataset, seeded_split
from zsrobust_bench.data.manage import verify
from zsrobust_bench.data.registry import get_dataset
from zsrobust_bench.data.spec import Source
from zsrobust_bench.data.subsets import select_indices
from zsrobust_bench.data.userfolder import spec_for_imagefolder
from zsrobust_bench.errors import DataError


def _rand(n: int, h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _chw(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(arr)).permute(2, 0, 1).float() / 255


def _write_cifar10(root: Path, images: np.ndarray, labels: list[int]) -> None:
    folder = root / "cifar10" / "torchvision" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batch = {
        "batch_label": "testing batch 1 of 1",
        "labels": labels,
        "data": images.transpose(0, 3, 1, 2).reshape(len(images), -1),
    }
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))


# ----------------------------------------------------------------------------------------------
# Formats
# ----------------------------------------------------------------------------------------------


def test_cifar10_python_pickle(tmp_path: Path) -> None:
    images, labels = _rand(6, 32, 32, 0), [3, 1, 4, 1, 5, 9]
    _write_cifar10(tmp_path, images, labels)
    ds = open_eval_dataset(get_dataset("cifar10"), tmp_path, image_size=224)
    assert len(ds) == 6 and ds.source.ref == "CIFAR10"
    for i in range(6):
        x, y = ds[i]
        assert y == labels[i] and x.dtype == torch.float32 and x.shape == (3, 32, 32)  # native: no resize
        assert torch.equal(x, _chw(images[i]))


def test_cifar_pickle_with_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    folder = tmp_path / "cifar10" / "torchvision" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    (folder / "test_batch").write_bytes(pickle.dumps({"data": Evil(), "labels": [0]}))
    with pytest.raises(DataError, match="test_batch"):
        open_eval_dataset(get_dataset("cifar10"), tmp_path, image_size=32)
    assert not marker.exists()


def test_hf_save_to_disk(tmp_path: Path) -> None:
    import datasets

    images, labels = _rand(5, 32, 32, 1), [0, 9, 2, 2, 7]
    feats = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})
    ds = datasets.Dataset.from_dict(
        {"img": [Image.fromarray(a) for a in images], "label": labels}, features=feats
    )
    datasets.DatasetDict({"test": ds, "train": ds.select([0])}).save_to_disk(str(tmp_path / "cifar100x"))
    # A save_to_disk copy of CIFAR-10 in <root>/cifar10/hf is read through the same entry point.
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar100x").rename(tmp_path / "cifar10" / "hf")
    ev = open_eval_dataset(get_dataset("cifar10"), tmp_path, image_size=224)
    assert len(ev) == 5 and ev.source.options["dir"] == "hf"
    assert [ev[i][1] for i in range(5)] == labels
    assert all(torch.equal(ev[i][0], _chw(images[i])) for i in range(5))
    assert len(open_eval_dataset(get_dataset("cifar10"), tmp_path, 224, split="train")) == 1


def test_hf_parquet_with_out_of_range_label(tmp_path: Path) -> None:
    import datasets

    images = _rand(3, 96, 96, 2)
    ds = datasets.Dataset.from_dict(
        {"image": [Image.fromarray(a) for a in images], "label": [4, 10, 0]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")}),
    )
    (tmp_path / "stl10" / "hf").mkdir(parents=True)
    ds.to_parquet(str(tmp_path / "stl10" / "hf" / "test-00000-of-00001.parquet"))
    ev = open_eval_dataset(get_dataset("stl10"), tmp_path, image_size=224)
    x, y = ev[0]
    assert y == 4 and torch.equal(x, _chw(images[0]))
    with pytest.raises(DataError, match=r"label 10 of row 1 of .*stl10/hf .*outside 0\.\.9"):
        ev[1]


def _tar(path: Path, samples: list[tuple[str, bytes, int]]) -> None:
    with tarfile.open(path, "w") as tf:
        for key, data, label in samples:
            for name, payload in ((f"{key}.png", data), (f"{key}.cls", f"{label}\n".encode())):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))


def test_webdataset_layout(tmp_path: Path) -> None:
    wds = tmp_path / "cifar10" / "wds"
    (wds / "test").mkdir(parents=True)
    (wds / "classnames.txt").write_text(
        "\n".join(get_dataset("cifar10").prompt_set("clip").classnames) + "\n"
    )
    images, labels = _rand(5, 32, 32, 3), [8, 0, 5, 5, 1]
    _tar(wds / "test" / "1.tar", [(f"s{i:07d}", _png(images[i]), labels[i]) for i in (3, 4)])
    _tar(wds / "test" / "0.tar", [(f"s{i:07d}", _png(images[i]), labels[i]) for i in (0, 1, 2)])
    (wds / "test" / "nshards.txt").write_text("2\n")
    ds = open_eval_dataset(get_dataset("cifar10"), tmp_path, image_size=224)
    assert ds.source.ref == "clip-benchmark/wds_vtab-cifar10" and len(ds) == 5
    assert [ds[i][1] for i in range(5)] == labels  # shard 0 before shard 1, members in order
    assert all(torch.equal(ds[i][0], _chw(images[i])) for i in range(5))
    assert ds.describe(4).endswith("1.tar:s0000004.png")

    (wds / "test" / "nshards.txt").write_text("3\n")
    with pytest.raises(DataError, match="nshards.txt says 3"):
        open_eval_dataset(get_dataset("cifar10"), tmp_path, image_size=224)
    (wds / "test" / "nshards.txt").unlink()
    (wds / "classnames.txt").write_text("a\nb\n")
    with pytest.raises(DataError, match="lists 2 classes; dataset cifar10 has 10"):
        open_eval_dataset(get_dataset("cifar10"), tmp_path, image_size=224)


def test_truncated_webdataset_shard(tmp_path: Path) -> None:
    split = tmp_path / "cifar10" / "wds" / "test"
    split.mkdir(parents=True)
    _tar(split / "0.tar", [("a", _png(_rand(1, 32, 32, 4)[0]), 1)])
    data = (split / "0.tar").read_bytes()
    (split / "0.tar").write_bytes(data[:700])  # cut inside the image member
    with pytest.raises(DataError, match=r"0\.tar"):
        open_eval_dataset(get_dataset("cifar10"), tmp_path, image_size=224)


def test_webdataset_fifo_shard_and_huge_label_are_refused(tmp_path: Path) -> None:
    split = tmp_path / "cifar10" / "wds" / "test"
    split.mkdir(parents=True)
    os.mkfifo(split / "0.tar")
    with pytest.raises(DataError, match=r"0\.tar is a FIFO, not a regular file"):  # not read forever
        open_eval_dataset(get_dataset("cifar10"), tmp_path, image_size=224)
    (split / "0.tar").unlink()
    with tarfile.open(split / "0.tar", "w") as tf:
        for name, payload in (("a.png", _png(_rand(1, 32, 32, 5)[0])), ("a.cls", b"1" + b" " * 4096)):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
    with pytest.raises(DataError, match=r"label file a\.cls is 4097 bytes"):
        open_eval_dataset(get_dataset("cifar10"), tmp_path, image_size=224)


def test_tiny_imagenet_val_layout(tmp_path: Path) -> None:
    val = tmp_path / "tiny-imagenet" / "tiny-imagenet-200" / "val"
    (val / "images").mkdir(parents=True)
    wnids = (
        (Path(__file__).parents[1] / "zsrobust_bench/data/classnames/tiny-imagenet.folders.txt")
        .read_text()
        .split()
    )
    picks = [("val_0.JPEG", "n03444034"), ("val_1.JPEG", "n01443537"), ("val_2.JPEG", "n12267677")]
    for j, (fname, _) in enumerate(picks):
        Image.fromarray(_rand(1, 64, 64, 10 + j)[0]).save(val / "images" / fname, format="JPEG", quality=95)
    (val / "val_annotations.txt").write_text("".join(f"{f}\t{w}\t0\t0\t63\t63\n" for f, w in picks))
    ds = open_eval_dataset(get_dataset("tiny-imagenet"), tmp_path, image_size=64)
    assert [ds[i][1] for i in range(3)] == [wnids.index(w) for _, w in picks] == [107, 0, 199]
    expected = np.asarray(Image.open(val / "images" / "val_1.JPEG").convert("RGB"))
    assert torch.equal(ds[1][0], _chw(expected))  # 64 px at image_size 64: decoded pixels, untouched


def test_imagefolder_catalog_layout_checks_class_folders(tmp_path: Path) -> None:
    spec = get_dataset("imagenet-r")
    wnids = (
        (Path(__file__).parents[1] / "zsrobust_bench/data/classnames/imagenet-r.folders.txt")
        .read_text()
        .split()
    )
    root = tmp_path / "imagenet-r" / "imagenet-r"
    for w in wnids[:199]:
        (root / w).mkdir(parents=True)
    with pytest.raises(DataError, match=rf"1 of 200 class folders are missing in {root}.*{wnids[199]}"):
        open_eval_dataset(spec, tmp_path, image_size=224)
    (root / wnids[199]).mkdir()
    for i, w in enumerate(wnids):
        Image.fromarray(_rand(1, 8, 8, i)[0]).save(root / w / "x.png")
    ds = open_eval_dataset(spec, tmp_path, image_size=16)
    assert len(ds) == 200 and ds[150][1] == 150 and ds[150][0].shape == (3, 16, 16)
    (root / "train").mkdir()
    with pytest.raises(DataError, match="folders that are not classes of this dataset: train"):
        open_eval_dataset(spec, tmp_path, image_size=16)


def test_stl10_binary_orientation(tmp_path: Path) -> None:
    folder = tmp_path / "stl10" / "torchvision" / "stl10_binary"
    folder.mkdir(parents=True)
    images = _rand(2, 96, 96, 5)
    images[0, :10, :, 0] = 255  # a red band at the top: wrong if rows and columns were swapped
    images.transpose(0, 3, 2, 1).tofile(folder / "test_X.bin")  # the published column-major layout
    np.array([1, 10], dtype=np.uint8).tofile(folder / "test_y.bin")
    ds = open_eval_dataset(get_dataset("stl10"), tmp_path, image_size=224)
    assert [ds[0][1], ds[1][1]] == [0, 9]
    assert torch.equal(ds[0][0], _chw(images[0])) and torch.equal(ds[1][0], _chw(images[1]))


def test_hateful_memes_jsonl(tmp_path: Path) -> None:
    root = tmp_path / "hateful-memes"
    (root / "img").mkdir(parents=True)
    rows = {
        "test_seen.jsonl": [("img/01.png", 1)],
        "test_unseen.jsonl": [("img/02.png", 0), ("img/03.png", 1)],
    }
    for name, items in rows.items():
        for j, (img, _) in enumerate(items):
            Image.fromarray(_rand(1, 20, 30, j)[0]).save(root / img)
        (root / name).write_text(
            "".join(json.dumps({"id": 1, "img": i, "label": y, "text": "t"}) + "\n" for i, y in items)
        )
    ds = open_eval_dataset(get_dataset("hateful-memes"), tmp_path, image_size=12)
    assert [ds[i][1] for i in range(3)] == [1, 0, 1] and ds[0][0].shape == (3, 12, 12)


# ----------------------------------------------------------------------------------------------
# Pixels
# ----------------------------------------------------------------------------------------------


def test_resize_and_centre_crop_and_rgb_conversion(tmp_path: Path) -> None:
    root = tmp_path / "user"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, :10] = (255, 0, 0)  # left quarter red: cropped away by the centre crop
    wide[:, 10:30] = (0, 0, 255)
    Image.fromarray(wide).save(root / "a" / "0_wide.png")
    Image.fromarray(np.full((16, 16), 77, np.uint8), "L").save(root / "a" / "1_grey.png")
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = (10, 200, 30), 128
    Image.fromarray(rgba, "RGBA").save(root / "b" / "2_rgba.png")
    pal = Image.fromarray(np.zeros((16, 16), np.uint8), "P")
    pal.putpalette([250, 5, 6] + [0] * 765)
    pal.save(root / "b" / "3_palette.png")
    Image.fromarray(np.full((16, 16), 257 * 100, np.uint16)).save(root / "b" / "4_grey16.png")

    ds = open_eval_dataset(spec_for_imagefolder(root), None, image_size=10)
    assert [ds[i][1] for i in range(5)] == [0, 0, 1, 1, 1]
    x = ds[0][0]
    ref = Image.fromarray(wide).resize((20, 10), Image.BICUBIC).crop((5, 0, 15, 10))
    assert x.shape == (3, 10, 10) and torch.allclose(x, _chw(np.asarray(ref)))
    assert x[0].max() < 0.1 and x[2].min() > 0.9  # the red quarter is outside the 10 px centre
    grey, rgba_x, pal_x, g16 = (ds[i][0] for i in (1, 2, 3, 4))
    assert torch.allclose(grey, torch.full((3, 10, 10), 77 / 255))
    assert torch.allclose(rgba_x[:, 0, 0], torch.tensor([10, 200, 30]) / 255)
    assert torch.allclose(pal_x[:, 0, 0], torch.tensor([250, 5, 6]) / 255)
    assert torch.allclose(g16, torch.full((3, 10, 10), 100 / 255))


# ----------------------------------------------------------------------------------------------
# Subsets and splits
# ----------------------------------------------------------------------------------------------


def test_subset_is_independent_of_batch_size(tmp_path: Path) -> None:
    images = _rand(150, 32, 32, 6)
    labels = [int(v) for v in np.random.default_rng(7).integers(0, 10, 150)]
    _write_cifar10(tmp_path, images, labels)
    ds = open_eval_dataset(get_dataset("cifar10"), tmp_path, image_size=224)
    idx = select_indices(len(ds), 40, seed=0, dataset="cifar10")
    expected_labels = [labels[i] for i in idx]
    expected_pixels = torch.stack([_chw(images[i]) for i in idx])
    for bs in (1, 7, 64):
        xs, ys = zip(*DataLoader(Subset(ds, idx.tolist()), batch_size=bs, shuffle=False), strict=True)
        assert torch.cat(ys).tolist() == expected_labels
        assert torch.equal(torch.cat(xs), expected_pixels)
    assert len(set(idx.tolist())) == 40 and idx.tolist() == sorted(idx.tolist())


def test_seeded_split_follows_the_documented_hash_rule() -> None:
    keys = [f"c{c}/img_{j:03d}.jpg" for c in range(3) for j in range(7)]
    labels = [c for c in range(3) for _ in range(7)]
    test = seeded_split(keys, labels, {"train_per_class": 4}, "toy", "test")
    train = seeded_split(keys, labels, {"train_per_class": 4}, "toy", "train")
    assert sorted(test + train) == list(range(21)) and len(test) == 9
    for c in range(3):
        members = [i for i in range(21) if labels[i] == c]
        ranked = sorted(
            members, key=lambda i: hashlib.sha256(f"zsbench-split/v1:toy:{keys[i]}".encode()).digest()
        )
        assert sorted(ranked[4:]) == [i for i in test if labels[i] == c]
    # The listing order does not matter: the same files are chosen.
    perm = np.random.default_rng(0).permutation(21)
    test_p = seeded_split(
        [keys[i] for i in perm], [labels[i] for i in perm], {"train_per_class": 4}, "toy", "test"
    )
    assert sorted(keys[perm[i]] for i in test_p) == sorted(keys[i] for i in test)
    assert seeded_split(keys, labels, {"test_per_class": 2}, "toy", "test") == sorted(
        i for c in range(3) for i in sorted(
            (i for i in range(21) if labels[i] == c),
            key=lambda i: hashlib.sha256(f"zsbench-split/v1:toy:{keys[i]}".encode()).digest(),
        )[:2]
    )  # fmt: skip
    with pytest.raises(DataError, match="needs more than 7"):
        seeded_split(keys, labels, {"test_per_class": 7}, "toy", "test")


def test_seeded_split_on_a_torchvision_tree(tmp_path: Path) -> None:
    folders = (
        (Path(__file__).parents[1] / "zsrobust_bench/data/classnames/eurosat.folders.txt").read_text().split()
    )
    tree = tmp_path / "eurosat" / "torchvision" / "eurosat" / "2750"
    for c in folders:
        (tree / c).mkdir(parents=True)
        for j in range(3):
            Image.fromarray(_rand(1, 8, 8, j)[0]).save(tree / c / f"{c}_{j + 1}.jpg")
    with pytest.raises(DataError, match="has 3 images; its split needs more than 540"):
        open_eval_dataset(get_dataset("eurosat"), tmp_path, image_size=8)
    spec = get_dataset("eurosat")
    (src,) = spec.sources
    small = dataclasses.replace(
        spec, sources=(Source(src.kind, src.ref, {**src.options, "split_rule": {"test_per_class": 1}}),)
    )
    test = open_eval_dataset(small, tmp_path, image_size=8)
    train = open_eval_dataset(small, tmp_path, image_size=8, split="train")
    assert len(test) == 10 and len(train) == 20
    assert [test[i][1] for i in range(10)] == list(range(10))
    assert not {test.describe(i) for i in range(10)} & {train.describe(i) for i in range(20)}


# ----------------------------------------------------------------------------------------------
# Failures
# ----------------------------------------------------------------------------------------------


def test_missing_dataset_names_paths_and_prepare(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        open_eval_dataset(get_dataset("cifar100"), tmp_path, image_size=224)
    text = str(err.value)
    assert "dataset cifar100 (test split) not found" in text
    assert (
        str(tmp_path / "cifar100" / "torchvision") in text
        and str(tmp_path / "cifar100" / "wds" / "test") in text
    )
    assert "zsbench datasets prepare cifar100" in text and "does not exist" not in text


def test_wrong_data_root(tmp_path: Path) -> None:
    root = tmp_path / "no-such-root"
    with pytest.raises(DataError, match=rf"the data root {root} does not exist"):
        open_eval_dataset(get_dataset("pets"), root, image_size=224)


def test_corrupt_image_names_the_file(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    (root / "cat").mkdir(parents=True)
    (root / "dog").mkdir()
    Image.fromarray(_rand(1, 8, 8, 0)[0]).save(root / "cat" / "good.png")
    (root / "dog" / "bad.png").write_bytes(_png(_rand(1, 64, 64, 1)[0])[:200])  # truncated
    ds = open_eval_dataset(spec_for_imagefolder(f"imagefolder:{root}"), tmp_path, image_size=8)
    assert ds[0][1] == 0
    with pytest.raises(DataError, match=rf"cannot read image {root / 'dog' / 'bad.png'}"):
        ds[1]
    rows = verify([f"imagefolder:{root}"], tmp_path)
    assert rows[0]["unreadable"] == 1 and rows[0]["n"] == 2 and not rows[0]["ok"]


def test_imagefolder_spec(tmp_path: Path) -> None:
    root = tmp_path / "pets"
    for c in ("b_dog", "a_cat"):
        (root / c).mkdir(parents=True)
    spec = spec_for_imagefolder(root)
    assert spec.name == f"imagefolder:{root.resolve()}" and spec.num_classes == 2
    assert spec.prompt_set("clip").prompts(1) == ["a photo of a b_dog."]
    (root / "classnames.txt").write_text("cat\ndog\n")
    (root / "templates.txt").write_text("a {} pet.\nart of a {}.\n")
    spec = spec_for_imagefolder(root)
    assert spec.prompt_set("tecoa").prompts(0) == ["a cat pet.", "art of a cat."]
    (root / "classnames.txt").write_text("cat\n")
    with pytest.raises(DataError, match=r"classnames.txt has 1 names for 2 class folders"):
        spec_for_imagefolder(root)
    (root / "classnames.txt").unlink()
    (root / "templates.txt").write_text("no placeholder\n")
    with pytest.raises(DataError, match="templates.txt"):
        spec_for_imagefolder(root)
    with pytest.raises(DataError, match="is not a directory"):
        spec_for_imagefolder(tmp_path / "nope")


@pytest.mark.parametrize("template", ["{} {0}", "a {{}} shape", "a {} {x}"])
def test_imagefolder_template_must_insert_the_class_name(tmp_path: Path, template: str) -> None:
    """Issue 14: '{} {0}' used to raise ValueError; 'a {{}} shape' passed and never named the class."""
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
    (tmp_path / "templates.txt").write_text(template + "\n")
    with pytest.raises(DataError, match="formats to the class name"):
        spec_for_imagefolder(tmp_path)


def test_imagefolder_one_class_and_duplicate_names_are_refused(tmp_path: Path) -> None:
    (tmp_path / "only").mkdir()
    with pytest.raises(DataError, match="has 1 class sub-folder"):
        spec_for_imagefolder(tmp_path)
    (tmp_path / "other").mkdir()
    (tmp_path / "classnames.txt").write_text("cat\ncat\n")
    with pytest.raises(DataError, match=r"duplicate class names \['cat'\]"):
        spec_for_imagefolder(tmp_path)


def _path_only_parquet(folder: Path, paths: list[str]) -> None:
    """A parquet copy whose image cells hold only a path (as a crafted or half-converted file can)."""
    import datasets
    import pyarrow.parquet as pq

    cells = [{"bytes": None, "path": p} for p in paths]
    feats = datasets.Features(
        {
            "image": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")},
            "label": datasets.Value("int64"),
        }
    )
    folder.mkdir(parents=True)
    target = folder / "test-00000-of-00001.parquet"
    datasets.Dataset.from_dict({"image": cells, "label": [0] * len(cells)}, features=feats).to_parquet(
        str(target)
    )
    table = pq.read_table(target)
    meta = dict(table.schema.metadata)
    info = json.loads(meta[b"huggingface"])
    info["info"]["features"]["image"] = {"_type": "Image"}
    pq.write_table(table.replace_schema_metadata({**meta, b"huggingface": json.dumps(info).encode()}), target)


def test_hf_image_paths_stay_inside_the_dataset_folder(tmp_path: Path) -> None:
    folder = tmp_path / "stl10" / "hf"
    _path_only_parquet(folder, ["/etc/passwd", "../../outside.png", "pipe.png", "inside.png"])
    os.mkfifo(folder / "pipe.png")
    Image.fromarray(_rand(1, 96, 96, 3)[0]).save(folder / "inside.png")
    Image.fromarray(_rand(1, 96, 96, 4)[0]).save(tmp_path / "outside.png")
    ev = open_eval_dataset(get_dataset("stl10"), tmp_path, image_size=96)
    for i in range(2):
        with pytest.raises(DataError, match=f"row {i} of .*lies outside the dataset folder"):
            ev[i]
    with pytest.raises(DataError, match="row 2 of .*FIFO, not a regular file"):  # never read forever
        ev[2]
    x, y = ev[3]
    assert y == 0 and torch.equal(x, _chw(np.asarray(Image.open(folder / "inside.png"))))
