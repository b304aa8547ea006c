"""The catalog of real evaluation datasets: one entry per dataset (data), turned into specs by a pure
function (``catalog_specs``) that the registry calls on first use.

Prompt data ships as package files, in label order, one item per line:

- ``classnames/<name>.txt``: class names of the ``"clip"`` prompt set (CLIP's wording),
- ``classnames/<name>.tecoa.txt``: class names of the ``"tecoa"`` prompt set (TeCoA's refinement),
- ``classnames/<name>.folders.txt``: the on-disk class folder names in label order, for datasets
  read from class folders (loaders check the folders against it),
- ``templates/<name>.clip.txt`` and ``templates/<name>.tecoa.txt``: the templates of each set.

Where each list comes from (R-TeCoA = cvlab-columbia/ZSRobust4FoundationModel, see
shared/reference/anchors.md 1.1; CLIP = openai/CLIP data/prompts.md, shared/reference/clip_prompts.md;
CB = LAION-AI/CLIP_benchmark ``en_classnames.json``; TeCoA's generic template is
``This is a photo of a {}`` with ``refine_classname`` = lower-case and ``_ - /`` -> space):

- imagenet, imagenet-sketch: clip = ``open_clip.zero_shot_metadata`` (CLIP's ImageNet names and
  80 templates); tecoa = 3rd column of ``imagenet_classes_names.txt`` (the ILSVRC devkit's
  ``map_clsloc.txt`` names) by sorted WordNet id, refined. folders = the 1000 sorted WordNet ids.
- imagenet-r: the 200 WordNet ids of ImageNet-R (hendrycks/imagenet-r), names as for ImageNet
  restricted to them; clip templates = ImageNet's 80 (what CLIP_benchmark/FARE use); tecoa as in
  TGA-ZSR's ImageNet-R loader (map_clsloc names, generic template).
- tiny-imagenet: 200 sorted WordNet ids and names from TGA-ZSR ``tinyimagenet_classes_name.txt``
  (PMG-AFT/TGA-ZSR lineage, generic template); clip = CLIP's ImageNet names of the same ids with
  ImageNet's 80 templates (no CLIP list exists for Tiny-ImageNet).
- cifar10, cifar100, stl10: CLIP lists (= torchvision class names with ``_`` -> space); tecoa generic.
- caltech101: CLIP's list without its ``background`` entry (101 classes: torchvision drops
  ``BACKGROUND_Google``, and so did TeCoA); CLIP's 34 templates. R-TeCoA's Caltech101 class has no
  class names (its prompt code would crash); tecoa uses the refined folder names as TGA-ZSR does.
- caltech256: no CLIP list exists; both sets use R-TeCoA's names (folder name minus ``NNN.`` and
  ``-101``, refined); clip templates = CLIP's Caltech101 ensemble; tecoa ``A photo of a {}.``.
- pets: CLIP's names, reordered to the dataset's label order (CLIP's file sorts them
  case-sensitively; CB lists them in label order); tecoa = torchvision's names lower-cased with
  ``A photo of a {}, a type of pet.``.
- flowers102: CLIP; tecoa = R-TeCoA's hard-coded list refined. R-TeCoA's ``'cyclamen '`` and
  ``'hippeastrum '`` carry a trailing space (prompt ``...cyclamen , a type...``); we strip it.
- fgvc-aircraft: CLIP (= variants.txt); tecoa prefixes ``Boeing`` to names starting with 7.
- stanford-cars: CLIP (= devkit cars_meta names); tecoa drops the year (last 5 characters).
- sun397: folders = the 397 ``ClassName.txt`` paths, sorted; CLIP's names are the refined paths
  but CLIP's file swaps ``jail cell`` / ``jail indoor``: we follow the folder order.
- country211: folders = ISO 3166 codes (sorted; CLIP's names map one-to-one); tecoa = pycountry
  22.3.5 (R-TeCoA's pin) ``name`` of each code (XK -> Kosovo), ``_ -`` -> space, as R-TeCoA does.
- food101, dtd: CLIP; tecoa = refined with the dataset templates of R-TeCoA.
- eurosat: folders in torchvision order; CLIP's names reordered to it (as CB); tecoa = R-TeCoA's
  custom names with ``A centered satellite photo of {}.``.
- caltech101-vtab, eurosat-vtab (FARE's VTAB variants, ``clip`` set only): class names
  CB ``caltech101_vtab`` (102, with ``background``) and ``eurosat``, templates CB ``caltech101`` and
  ``eurosat`` (CB builder.py uses the last part of ``wds/vtab/<name>`` as the template key).
- pcam: clip = CB's names and CB's two templates (``a histopathology slide showing {c}``,
  ``histopathology image of {c}``); tecoa = R-TeCoA's two fixed sentences as class names with template ``{}``. R-TeCoA's
  first sentence reads "Tthis is a photo of healthy lymph node tissue." (typo in the code); we
  record the corrected sentence.
- hateful-memes: CLIP; R-TeCoA's prompts are NOT FOUND (its HatefulMemes class is not shipped), so
  tecoa uses CLIP's names with TeCoA's generic template (a reconstruction).

Every dataset can also be read from a local HF ``datasets`` copy (``save_to_disk`` folder or
parquet files) in ``<data root>/<name>/hf``, except the four whose test split zsbench defines
itself (see ``split_note``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .spec import DatasetSpec, PromptSet, Source, read_lines_resource

_PKG = "zsrobust_bench.data"
PROMPT_SET_FILES = {
    "clip": ("{name}.txt", "{name}.clip.txt"),
    "tecoa": ("{name}.tecoa.txt", "{name}.tecoa.txt"),
}
LOCAL_HF = Source(
    "hf",
    "",
    {"format": "auto", "dir": "hf"},
    instructions="put a local HF datasets copy (a save_to_disk folder or parquet files) in {path}",
)


@dataclass(frozen=True)
class Entry:
    """One catalog row; everything except the prompt files.

    Source instructions may use {dir} (the dataset's folder under the data root) and {path} (the
    source's own location there).
    """

    name: str
    num_classes: int
    sources: tuple[Source, ...]
    aliases: tuple[str, ...] = ()
    eval_split: str = "test"
    eval_resolution: str = "model"
    native_size: int | None = None
    size_hint: int | None = None
    split_note: str = ""
    homepage: str = ""
    license: str = ""
    local_hf: bool = True
    prompt_sets: tuple[str, ...] = tuple(PROMPT_SET_FILES)


def _wds(repo: str, split_dirs: Mapping[str, str] | None = None) -> Source:
    """A clip-benchmark WebDataset repo on the HF hub, kept in <data root>/<name>/wds."""
    return Source("hf", repo, {"format": "webdataset", "dir": "wds", "split_dirs": dict(split_dirs or {})})


def _tv(cls: str, splits: Mapping[str, Mapping[str, Any]], instructions: str = "", **options: Any) -> Source:
    """A torchvision dataset class, kept in <data root>/<name>/torchvision (its `root`)."""
    opts = {"dir": "torchvision", "splits": {k: dict(v) for k, v in splits.items()}, **options}
    return Source("torchvision", cls, opts, instructions=instructions)


def _folders(path: str, instructions: str = "", **options: Any) -> Source:
    """Class folders (or an annotation list) under <data root>/<name>/<path>."""
    return Source("imagefolder", path, options, instructions=instructions)


_SEEDED = (
    "No official test split. zsbench split v1: inside each class folder the image files are ordered by "
    "sha256('zsbench-split/v1:{name}:<class folder>/<file name>'); {rule}. Fixed forever; "
    "independent of file system order and library versions."
)

ENTRIES: tuple[Entry, ...] = (
    Entry(
        "imagenet",
        1000,
        (
            _wds("clip-benchmark/wds_imagenet1k", {"val": "test"}),
            _folders(
                "",
                classes="imagenet",
                splits={"val": {"path": "val"}, "train": {"path": "train"}},
                instructions=(
                    "ImageNet needs an account at https://image-net.org. Download ILSVRC2012_img_val.tar and "
                    "sort the 50,000 validation images into one folder per WordNet id (e.g. with the usual "
                    "valprep.sh), so that {dir}/val/n01440764/ILSVRC2012_val_00000293.JPEG exists."
                ),
            ),
        ),
        aliases=("imagenet1k", "imagenet-1k", "ilsvrc2012", "in1k"),
        eval_split="val",
        size_hint=50_000,
        split_note="ILSVRC-2012 validation set (50 images per class); TeCoA evaluates on it too.",
        homepage="https://www.image-net.org",
        license="ImageNet terms of access (non-commercial research and education)",
    ),
    Entry(
        "cifar10",
        10,
        (
            _wds("clip-benchmark/wds_vtab-cifar10"),
            _tv("CIFAR10", {"test": {"train": False}, "train": {"train": True}}, read="cifar-pickle"),
        ),
        aliases=("cifar-10", "vtab-cifar10"),
        eval_resolution="native",
        native_size=32,
        size_hint=10_000,
        split_note="official test batch",
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
        license="no license stated (free for research, see homepage)",
    ),
    Entry(
        "cifar100",
        100,
        (
            _wds("clip-benchmark/wds_vtab-cifar100"),
            _tv("CIFAR100", {"test": {"train": False}, "train": {"train": True}}, read="cifar-pickle"),
        ),
        aliases=("cifar-100", "vtab-cifar100"),
        eval_resolution="native",
        native_size=32,
        size_hint=10_000,
        split_note="official test set, 100 fine labels",
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
        license="no license stated (free for research, see homepage)",
    ),
    Entry(
        "stl10",
        10,
        (
            _wds("clip-benchmark/wds_stl10"),
            _tv("STL10", {"test": {"split": "test"}, "train": {"split": "train"}}, read="stl10-binary"),
        ),
        aliases=("stl-10",),
        eval_resolution="native",
        native_size=96,
        size_hint=8_000,
        split_note="official test set (800 per class)",
        homepage="https://cs.stanford.edu/~acoates/stl10/",
        license="no license stated (images from ImageNet, see homepage)",
    ),
    Entry(
        "caltech101",
        101,
        (
            _tv(
                "Caltech101",
                {"all": {"target_type": "category"}},
                read="folders",
                folders="caltech101/101_ObjectCategories",
                classes="caltech101",
                exclude=["BACKGROUND_Google"],
                split_rule={"train_per_class": 30},
            ),
        ),
        aliases=("caltech-101",),
        split_note=_SEEDED.format(
            name="caltech101", rule="the first 30 of each class are train, the rest is the test split"
        )
        + " BACKGROUND_Google is not a class (as in torchvision and TeCoA); TeCoA used all images.",
        homepage="https://data.caltech.edu/records/20086",
        license="CC BY 4.0",
        local_hf=False,
    ),
    Entry(
        "caltech256",
        257,
        (
            _tv(
                "Caltech256",
                {"all": {}},
                read="folders",
                folders="caltech256/256_ObjectCategories",
                classes="caltech256",
                glob="*.jpg",
                split_rule={"train_per_class": 60},
            ),
        ),
        aliases=("caltech-256",),
        size_hint=15_187,
        split_note=_SEEDED.format(
            name="caltech256", rule="the first 60 of each class are train, the rest is the test split"
        )
        + " 257 classes including 257.clutter (as TeCoA); TeCoA used all 30,607 images.",
        homepage="https://data.caltech.edu/records/20087",
        license="CC BY 4.0",
        local_hf=False,
    ),
    Entry(
        "pets",
        37,
        (
            _wds("clip-benchmark/wds_vtab-pets"),
            _tv("OxfordIIITPet", {"test": {"split": "test"}, "train": {"split": "trainval"}}),
        ),
        aliases=("oxfordpet", "oxford-iiit-pet", "oxford-pets", "oxfordpets", "vtab-pets"),
        size_hint=3_669,
        split_note="official test split",
        homepage="https://www.robots.ox.ac.uk/~vgg/data/pets/",
        license="CC BY-SA 4.0",
    ),
    Entry(
        "flowers102",
        102,
        (
            _wds("clip-benchmark/wds_vtab-flowers"),
            _tv("Flowers102", {"test": {"split": "test"}, "train": {"split": "train"}}),
        ),
        aliases=("flowers", "flowers-102", "oxford-flowers102", "vtab-flowers"),
        size_hint=6_149,
        split_note="official test split",
        homepage="https://www.robots.ox.ac.uk/~vgg/data/flowers/102/",
        license="no license stated (see homepage)",
    ),
    Entry(
        "fgvc-aircraft",
        100,
        (
            _wds("clip-benchmark/wds_fgvc_aircraft"),
            _tv(
                "FGVCAircraft",
                {
                    "test": {"split": "test", "annotation_level": "variant"},
                    "train": {"split": "trainval", "annotation_level": "variant"},
                },
            ),
        ),
        aliases=("aircraft", "fgvcaircraft"),
        size_hint=3_333,
        split_note="official test split, 100 variants",
        homepage="https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/",
        license="non-commercial research purposes only",
    ),
    Entry(
        "stanford-cars",
        196,
        (
            _wds("clip-benchmark/wds_cars"),
            _tv(
                "StanfordCars",
                {"test": {"split": "test"}, "train": {"split": "train"}},
                instructions=(
                    "torchvision can no longer download Stanford Cars; put devkit/, cars_test/ and "
                    "cars_test_annos_withlabels.mat in {path}/stanford_cars/"
                ),
            ),
        ),
        aliases=("stanfordcars", "cars"),
        size_hint=8_041,
        split_note="official test split",
        homepage="https://ai.stanford.edu/~jkrause/cars/car_dataset.html",
        license="non-commercial research purposes only",
    ),
    Entry(
        "sun397",
        397,
        (
            _tv(
                "SUN397",
                {"all": {}},
                read="folders",
                folders="SUN397",
                classes="sun397",
                glob="sun_*.jpg",
                split_rule={"test_per_class": 50},
            ),
        ),
        aliases=("sun-397",),
        size_hint=19_850,
        split_note=_SEEDED.format(
            name="sun397", rule="the first 50 of each class are the test split, the rest is train"
        )
        + " (50 per class like the official partitions, which torchvision does not ship); TeCoA used all 108,754 images.",
        homepage="https://vision.princeton.edu/projects/2010/SUN/",
        license="no license stated (see homepage)",
        local_hf=False,
    ),
    Entry(
        "country211",
        211,
        (
            _wds("clip-benchmark/wds_country211"),
            _tv("Country211", {"test": {"split": "test"}, "train": {"split": "train"}}),
        ),
        size_hint=21_100,
        split_note="official test split (100 per country)",
        homepage="https://github.com/openai/CLIP/blob/main/data/country211.md",
        license="YFCC100M subset (Creative Commons licences per image)",
    ),
    Entry(
        "food101",
        101,
        (_tv("Food101", {"test": {"split": "test"}, "train": {"split": "train"}}),),
        aliases=("food-101",),
        size_hint=25_250,
        split_note="official test split (250 per class)",
        homepage="https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/",
        license="no license stated (images from foodspotting.com, see homepage)",
    ),
    Entry(
        "eurosat",
        10,
        (
            _tv(
                "EuroSAT",
                {"all": {}},
                read="folders",
                folders="eurosat/2750",
                classes="eurosat",
                split_rule={"test_per_class": 540},
            ),
        ),
        size_hint=5_400,
        split_note=_SEEDED.format(
            name="eurosat", rule="the first 540 of each class are the test split, the rest is train"
        )
        + " (5,400 test images, the size of VTAB's test split); TeCoA used all 27,000 images.",
        homepage="https://github.com/phelber/eurosat",
        license="MIT",
        local_hf=False,
    ),
    Entry(
        "caltech101-vtab",
        102,
        (_wds("clip-benchmark/wds_vtab-caltech101"),),
        aliases=("vtab-caltech101", "caltech101_vtab"),
        size_hint=6_084,
        split_note=(
            "FARE's Caltech-101: VTAB's test split = the TFDS caltech101:3.* 'test' split "
            "(google-research/task_adaptation data/caltech.py: tfds_splits['test'] = 'test'), 6,084 images "
            "(tensorflow/datasets docs/catalog/caltech101.md, version 3.0.0), 102 classes including "
            "'background' (CLIP_benchmark en_classnames.json 'caltech101_vtab'), read from the "
            "clip-benchmark webdataset FARE evaluates (RVLM CLIP_benchmark/benchmark/datasets.txt: "
            "wds/vtab/caltech101). TeCoA's 101-class Caltech-101 is `caltech101`."
        ),
        homepage="https://data.caltech.edu/records/20086",
        license="CC BY 4.0",
        local_hf=False,
        prompt_sets=("clip",),
    ),
    Entry(
        "eurosat-vtab",
        10,
        (_wds("clip-benchmark/wds_vtab-eurosat"),),
        aliases=("vtab-eurosat",),
        size_hint=5_400,
        split_note=(
            "FARE's EuroSAT: VTAB's test split = the last 20% of TFDS eurosat/rgb 'train' (27,000 images; "
            "google-research/task_adaptation data/eurosat.py: test = 'train[80%:]', 5,400 images), read "
            "from the clip-benchmark webdataset FARE evaluates (RVLM CLIP_benchmark/benchmark/datasets.txt: "
            "wds/vtab/eurosat). TeCoA's EuroSAT is `eurosat`."
        ),
        homepage="https://github.com/phelber/eurosat",
        license="MIT",
        local_hf=False,
        prompt_sets=("clip",),
    ),
    Entry(
        "dtd",
        47,
        (
            _wds("clip-benchmark/wds_vtab-dtd"),
            _tv(
                "DTD",
                {"test": {"split": "test", "partition": 1}, "train": {"split": "train", "partition": 1}},
            ),
        ),
        aliases=("describable-textures", "describabletextures", "vtab-dtd"),
        size_hint=1_880,
        split_note="official test split of partition 1 (40 per class)",
        homepage="https://www.robots.ox.ac.uk/~vgg/data/dtd/",
        license="research use (see homepage)",
    ),
    Entry(
        "pcam",
        2,
        (
            _wds("clip-benchmark/wds_vtab-pcam"),
            _tv("PCAM", {"test": {"split": "test"}, "train": {"split": "train"}}),
        ),
        aliases=("patchcamelyon", "patch-camelyon", "vtab-pcam"),
        native_size=96,
        size_hint=32_768,
        split_note="official test split (96x96 patches; needs h5py for the torchvision copy)",
        homepage="https://github.com/basveeling/pcam",
        license="CC0",
    ),
    Entry(
        "tiny-imagenet",
        200,
        (
            _folders(
                "tiny-imagenet-200",
                classes="tiny-imagenet",
                splits={
                    "val": {
                        "path": "val",
                        "index": "tsv",
                        "annotations": "val_annotations.txt",
                        "images": "images",
                    },
                    "train": {"path": "train", "class_subdir": "images"},
                },
                instructions=(
                    "download http://cs231n.stanford.edu/tiny-imagenet-200.zip and unzip it in {dir}, so that "
                    "{dir}/tiny-imagenet-200/val/val_annotations.txt exists"
                ),
            ),
        ),
        aliases=("tinyimagenet", "tiny-imagenet-200"),
        eval_split="val",
        native_size=64,
        size_hint=10_000,
        split_note="official validation set (50 per class; the test set has no labels), as PMG-AFT and TGA-ZSR",
        homepage="https://www.kaggle.com/c/tiny-imagenet",
        license="ImageNet terms of access (non-commercial research and education)",
    ),
    Entry(
        "imagenet-r",
        200,
        (
            _wds("clip-benchmark/wds_imagenet-r"),
            _folders(
                "imagenet-r",
                classes="imagenet-r",
                instructions=(
                    "download https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar and extract it in {dir}, "
                    "so that {dir}/imagenet-r/n01443537/ exists"
                ),
            ),
        ),
        aliases=("imagenetr", "imagenet-rendition"),
        size_hint=30_000,
        split_note="all images (the dataset is a test set)",
        homepage="https://github.com/hendrycks/imagenet-r",
        license="MIT",
    ),
    Entry(
        "imagenet-sketch",
        1000,
        (
            _wds("clip-benchmark/wds_imagenet_sketch"),
            _folders(
                "sketch",
                classes="imagenet-sketch",
                instructions=(
                    "download ImageNet-Sketch.zip (links at https://github.com/HaohanWang/ImageNet-Sketch) and "
                    "unzip it in {dir}, so that {dir}/sketch/n01440764/ exists"
                ),
            ),
        ),
        aliases=("imagenetsketch", "imagenet-s"),
        size_hint=50_889,
        split_note="all images (the dataset is a test set)",
        homepage="https://github.com/HaohanWang/ImageNet-Sketch",
        license="MIT",
    ),
    Entry(
        "hateful-memes",
        2,
        (
            _folders(
                "",
                splits={"test": {"index": "jsonl", "annotations": ["test_seen.jsonl", "test_unseen.jsonl"]}},
                instructions=(
                    "Hateful Memes is distributed by Meta AI after accepting its licence "
                    "(https://ai.meta.com/tools/hatefulmemes/); extract the final release in {dir} so that "
                    "{dir}/img/, {dir}/test_seen.jsonl and {dir}/test_unseen.jsonl (with labels) exist"
                ),
            ),
        ),
        aliases=("hatefulmemes",),
        split_note="test_seen + test_unseen, as TeCoA; label 1 = hateful. TeCoA resized to 224x224 without cropping.",
        homepage="https://ai.meta.com/tools/hatefulmemes/",
        license="Hateful Memes dataset licence (research use)",
    ),
)

SUITES: dict[str, tuple[str, ...]] = {
    "tecoa16": (
        "imagenet", "cifar10", "cifar100", "stl10", "caltech101", "caltech256", "pets", "flowers102",
        "fgvc-aircraft", "stanford-cars", "sun397", "country211", "food101", "eurosat", "dtd", "pcam",
    ),
    "pmg16": (
        "imagenet", "cifar10", "cifar100", "stl10", "caltech101", "caltech256", "pets", "flowers102",
        "fgvc-aircraft", "stanford-cars", "sun397", "tiny-imagenet", "food101", "eurosat", "dtd", "pcam",
    ),
    # FARE: ImageNet (CLIP_eval/clip_robustbench.py) + the 13 webdatasets of RVLM
    # CLIP_benchmark/benchmark/datasets.txt, with VTAB's Caltech-101 and EuroSAT
    "fare14": (
        "imagenet", "cifar10", "cifar100", "stl10", "stanford-cars", "caltech101-vtab", "pets", "flowers102",
        "dtd", "eurosat-vtab", "fgvc-aircraft", "pcam", "imagenet-r", "imagenet-sketch",
    ),
}  # fmt: skip


def load_prompt_set(name: str, key: str) -> PromptSet:
    """The shipped class names and templates of prompt set `key` for dataset `name`."""
    names_file, templates_file = (f.format(name=name) for f in PROMPT_SET_FILES[key])
    return PromptSet(
        classnames=read_lines_resource(_PKG, f"classnames/{names_file}"),
        templates=read_lines_resource(_PKG, f"templates/{templates_file}"),
    )


def build_spec(entry: Entry) -> DatasetSpec:
    """A DatasetSpec from a catalog entry plus its shipped prompt files."""
    return DatasetSpec(
        name=entry.name,
        num_classes=entry.num_classes,
        prompt_sets={key: load_prompt_set(entry.name, key) for key in entry.prompt_sets},
        eval_split=entry.eval_split,
        sources=entry.sources + ((LOCAL_HF,) if entry.local_hf else ()),
        aliases=entry.aliases,
        eval_resolution=entry.eval_resolution,
        native_size=entry.native_size,
        split_note=entry.split_note,
        homepage=entry.homepage,
        license=entry.license,
        size_hint=entry.size_hint,
    )


def catalog_specs() -> list[DatasetSpec]:
    """The spec of every catalog entry, in catalog order."""
    return [build_spec(entry) for entry in ENTRIES]


__all__ = ["ENTRIES", "SUITES", "Entry", "build_spec", "catalog_specs", "load_prompt_set"]
