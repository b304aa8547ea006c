"""The dataset catalog: class lists, templates, suites, aliases, listing and offline prepare."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import time
from importlib import resources
from pathlib import Path

import pytest

from zsrobust_bench.data import catalog, synthetic
from zsrobust_bench.data.loaders import source_kind
from zsrobust_bench.data.manage import LIST_COLUMNS, list_datasets, prepare
from zsrobust_bench.data.registry import all_datasets, build_table, expand, get_dataset, suite, suites
from zsrobust_bench.errors import DataError

CATALOG = [e.name for e in catalog.ENTRIES]

# Published class counts of the TeCoA suite (Caltech-101: 101 object classes; the background
# category is not a class, as in torchvision, TeCoA and CLIP_benchmark's caltech101 list minus it).
TECOA16 = {
    "imagenet": 1000, "cifar10": 10, "cifar100": 100, "stl10": 10, "caltech101": 101, "caltech256": 257,
    "pets": 37, "flowers102": 102, "fgvc-aircraft": 100, "stanford-cars": 196, "sun397": 397,
    "country211": 211, "food101": 101, "eurosat": 10, "dtd": 47, "pcam": 2,
}  # fmt: skip


def _lines(path: str) -> list[str]:
    text = resources.files("zsrobust_bench.data").joinpath(path).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("name", CATALOG)
def test_class_and_template_files_match_spec(name: str) -> None:
    spec = get_dataset(name)
    keys = (
        ("clip",) if name.endswith("-vtab") else ("clip", "tecoa")
    )  # FARE's VTAB variants: CLIP_benchmark's only
    assert set(spec.prompt_sets) == set(keys)
    files = [f"classnames/{name}.txt"] + ([f"classnames/{name}.tecoa.txt"] if "tecoa" in keys else [])
    if resources.files("zsrobust_bench.data").joinpath(f"classnames/{name}.folders.txt").is_file():
        files.append(f"classnames/{name}.folders.txt")
    for f in files:
        assert len(_lines(f)) == spec.num_classes, f
    for key in keys:
        templates = _lines(f"templates/{name}.{key}.txt")
        assert templates and all(t.count("{}") == 1 for t in templates)
        assert spec.prompt_set(key).templates == tuple(templates)


def test_suites_are_exactly_the_published_lists() -> None:
    assert (
        dict(zip(suite("tecoa16"), [get_dataset(n).num_classes for n in suite("tecoa16")], strict=True))
        == TECOA16
    )
    assert list(suite("tecoa16")) == list(TECOA16)
    pmg = list(suite("pmg16"))
    assert pmg == [("tiny-imagenet" if n == "country211" else n) for n in TECOA16]
    assert get_dataset("tiny-imagenet").num_classes == 200
    assert list(suite("fare14")) == [
        "imagenet",
        "cifar10",
        "cifar100",
        "stl10",
        "stanford-cars",
        "caltech101-vtab",
        "pets",
        "flowers102",
        "dtd",
        "eurosat-vtab",
        "fgvc-aircraft",
        "pcam",
        "imagenet-r",
        "imagenet-sketch",
    ]  # fmt: skip (FARE's: VTAB's Caltech-101 and EuroSAT)
    assert expand(["tecoa16", "fare14"])[-2:] == ["imagenet-r", "imagenet-sketch"]
    assert get_dataset("hateful-memes").num_classes == 2


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("oxfordpet", "pets"), ("StanfordCars", "stanford-cars"), ("cars", "stanford-cars"),
        ("fgvc_aircraft", "fgvc-aircraft"), ("flowers", "flowers102"), ("imagenet1k", "imagenet"),
        ("imagenet_sketch", "imagenet-sketch"), ("tinyImageNet", "tiny-imagenet"), ("Caltech101", "caltech101"),
        ("EuroSAT", "eurosat"), ("PCAM", "pcam"), ("hateful_memes", "hateful-memes"), ("dtd", "dtd"),
    ],
)  # fmt: skip
def test_aliases(alias: str, name: str) -> None:
    assert get_dataset(alias).name == name


def test_resolution_and_splits() -> None:
    native = {n for n in CATALOG if get_dataset(n).eval_resolution == "native"}
    assert native == {"cifar10", "cifar100", "stl10"}
    assert {n: get_dataset(n).native_size for n in native} == {"cifar10": 32, "cifar100": 32, "stl10": 96}
    for n in ("caltech101", "caltech256", "sun397", "eurosat"):
        note = get_dataset(n).split_note
        assert "zsbench split v1" in note and f"zsbench-split/v1:{n}:" in note
        assert all(s.kind != "hf" for s in get_dataset(n).sources)  # no copy with another split
    # Test-split sizes: 60 train per Caltech-256 class out of 30,607 images; 50 and 540 test per class.
    assert get_dataset("caltech256").size_hint == 30_607 - 257 * 60
    assert get_dataset("sun397").size_hint == 397 * 50
    assert get_dataset("eurosat").size_hint == 10 * 540
    assert get_dataset("imagenet").eval_split == "val" and get_dataset("imagenet").size_hint == 50_000


def test_class_lists_are_in_label_order() -> None:
    imagenet = get_dataset("imagenet")
    wnids = _lines("classnames/imagenet.folders.txt")
    assert wnids == sorted(wnids) and len(set(wnids)) == 1000 and wnids[0] == "n01440764"
    clip, tecoa = imagenet.prompt_set("clip").classnames, imagenet.prompt_set("tecoa").classnames
    assert (clip[0], clip[1], clip[7]) == ("tench", "goldfish", "rooster")
    assert (tecoa[7], tecoa[wnids.index("n02012849")], tecoa[wnids.index("n03126707")]) == (
        "cock",
        "crane",
        "crane",
    )
    assert tecoa[wnids.index("n02119789")] == "kit fox"  # map_clsloc's 'kit_fox', refined
    # ImageNet-R and Tiny-ImageNet reuse CLIP's ImageNet names of their WordNet ids.
    for sub in ("imagenet-r", "tiny-imagenet"):
        ids = _lines(f"classnames/{sub}.folders.txt")
        assert ids == sorted(ids) and set(ids) <= set(wnids)
        assert get_dataset(sub).prompt_set("clip").classnames == tuple(clip[wnids.index(w)] for w in ids)
    assert get_dataset("tiny-imagenet").prompt_set("tecoa").classnames[0] == "goldfish"
    pets = get_dataset("pets").prompt_set("clip").classnames
    assert pets[:6] == (
        "Abyssinian",
        "american bulldog",
        "american pit bull terrier",
        "basset hound",
        "beagle",
        "Bengal",
    )
    eurosat = get_dataset("eurosat").prompt_set("clip").classnames
    assert (
        _lines("classnames/eurosat.folders.txt")[2] == "HerbaceousVegetation"
        and eurosat[2] == "brushland or shrubland"
    )
    sun = _lines("classnames/sun397.folders.txt")
    assert sun.index("j/jail/indoor") + 1 == sun.index("j/jail_cell")
    sun_clip = get_dataset("sun397").prompt_set("clip").classnames
    assert sun_clip[sun.index("j/jail/indoor")] == "jail indoor"
    caltech = get_dataset("caltech101")
    assert caltech.prompt_set("clip").classnames[:2] == ("off-center face", "centered face")
    assert _lines("classnames/caltech101.folders.txt")[:2] == ["Faces", "Faces_easy"]
    codes = _lines("classnames/country211.folders.txt")
    bo = codes.index("BO")
    assert get_dataset("country211").prompt_set("clip").classnames[bo] == "Bolivia"
    assert get_dataset("country211").prompt_set("tecoa").classnames[bo] == "Bolivia, Plurinational State of"


def test_tecoa_prompts_follow_the_reference_code() -> None:
    pcam = get_dataset("pcam").prompt_set("tecoa")
    assert [pcam.prompts(i)[0] for i in (0, 1)] == [
        "This is a photo of healthy lymph node tissue.",
        "This is a photo of lymph node tumor tissue.",
    ]
    assert get_dataset("flowers102").prompt_set("tecoa").prompts(15) == [
        "A photo of a globe flower, a type of flower."
    ]
    assert get_dataset("fgvc-aircraft").prompt_set("tecoa").prompts(0) == [
        "A photo of a boeing 707-320, a type of aircraft."
    ]
    assert get_dataset("stanford-cars").prompt_set("tecoa").prompts(0) == [
        "A photo of a am general hummer suv."
    ]
    assert get_dataset("cifar100").prompt_set("tecoa").prompts(1) == ["This is a photo of a aquarium fish"]
    assert get_dataset("eurosat").prompt_set("tecoa").prompts(1) == [
        "A centered satellite photo of a forest."
    ]
    assert get_dataset("dtd").prompt_set("tecoa").prompts(30) == ["A surface with a polka dotted texture."]
    assert get_dataset("caltech256").prompt_set("tecoa").prompts(1) == ["A photo of a american flag."]
    counts = {
        n: len(get_dataset(n).prompt_set("clip").templates)
        for n in ("imagenet", "cifar10", "caltech101", "stanford-cars")
    }
    assert counts == {"imagenet": 80, "cifar10": 18, "caltech101": 34, "stanford-cars": 8}


def test_list_marks_present_datasets(tmp_path) -> None:
    (tmp_path / "cifar10" / "torchvision").mkdir(parents=True)
    rows = {r["name"]: r for r in list_datasets(suite="tecoa16", data_root=tmp_path)}
    assert list(rows) == list(TECOA16)
    assert rows["cifar10"]["present"] and rows["cifar10"]["location"] == str(
        tmp_path / "cifar10" / "torchvision"
    )
    assert not rows["cifar100"]["present"] and rows["cifar100"]["location"] is None
    assert rows["sun397"]["eval_size"] == 19_850 and rows["stl10"]["resolution"] == "native"


def test_datasets_list_json_command(tmp_path, capsys) -> None:
    from zsrobust_bench.cli.data import register_cli

    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        ["datasets", "list", "--suite", "fare14", "--json", "--data-root", str(tmp_path)]
    )
    assert args.func(args) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list(suite("fare14"))
    assert all(list(r) == list(LIST_COLUMNS) for r in rows)
    assert rows[0]["classes"] == 1000 and rows[0]["present"] is False
    args = parser.parse_args(["datasets", "list", "--suite", "fare14", "--data-root", str(tmp_path)])
    assert args.func(args) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == list(LIST_COLUMNS) and len(table) == 1 + 14


def test_prepare_offline_says_so_and_prints_steps(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.time()
    rows = {r["name"]: r for r in prepare(["cifar10", "hateful-memes"], tmp_path)}
    assert time.time() - t0 < 5
    assert rows["cifar10"]["status"] == "offline" and "HF_HUB_OFFLINE" in rows["cifar10"]["message"]
    steps = " ".join(rows["cifar10"]["steps"])
    assert "hf download clip-benchmark/wds_vtab-cifar10 --repo-type dataset" in steps
    assert (
        f"torchvision.datasets.CIFAR10(root='{tmp_path / 'cifar10' / 'torchvision'}', download=True, train=False)"
        in steps
    )
    assert rows["hateful-memes"]["status"] == "manual" and "test_seen.jsonl" in " ".join(
        rows["hateful-memes"]["steps"]
    )
    assert not (tmp_path / "cifar10").exists()  # nothing half-downloaded

    from zsrobust_bench.cli.data import register_cli

    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["datasets", "prepare", "pets", "--data-root", str(tmp_path)])
    assert args.func(args) == 1
    out = capsys.readouterr().out
    assert "pets: offline" in out and "torchvision.datasets.OxfordIIITPet" in out


def test_registry_table_comes_from_pure_functions() -> None:
    """The catalog, the synthetic world and the loaders describe datasets without the registry (no import
    circle, nothing registered on import); the registry's table is their specs and suites, catalog first."""
    data = Path(catalog.__file__).parent
    for path in [*data.glob("*.py"), *data.glob("readers/*.py")]:
        imported = {
            name.rsplit(".", 1)[-1]
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.ImportFrom) and node.level
            for name in ([node.module] if node.module else [a.name for a in node.names])
        }
        if path.stem not in ("registry", "manage", "cli"):
            assert not {"registry", "manage", "cli"} & imported, path
    specs = [*catalog.catalog_specs(), *synthetic.synthetic_specs()]
    assert all_datasets() == specs
    assert suites() == {**catalog.SUITES, **synthetic.SUITES}
    cifar = get_dataset("cifar10")
    with pytest.raises(ValueError, match="'cifar-10' already registered for 'cifar10'"):
        build_table([cifar, dataclasses.replace(cifar, name="other", aliases=("cifar-10",))], {})


def test_every_source_kind_is_registered_once() -> None:
    """Every source of every dataset dispatches through the one table of source kinds; unknown kinds fail."""
    kinds = {source.kind for spec in all_datasets() for source in spec.sources}
    assert kinds == {"hf", "torchvision", "imagefolder", "synthetic"}
    assert all(source_kind(k).generate is None for k in kinds - {"synthetic"})
    assert source_kind("synthetic").generate is not None and source_kind("synthetic").locate is None
    with pytest.raises(DataError, match="no loader for source kind 'ftp'"):
        source_kind("ftp")
