"""Protocols: frozen definitions, overrides that mark a run custom, `zsbench protocols list|show`."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
from pathlib import Path

import pytest

from zsrobust_bench.attacks.registry import build_attacks
from zsrobust_bench.cli.protocols import COLUMNS, register_cli
from zsrobust_bench.errors import ZSBenchError
from zsrobust_bench.protocols import (
    AttackStep,
    Norm,
    Precision,
    Protocol,
    add_protocol_dir,
    all_protocol_versions,
    apply_overrides,
    eps_label,
    get_protocol,
    list_protocols,
    lookup_protocol,
    parse_eps,
    reported_protocols,
    superseded,
)

REPO = Path(__file__).resolve().parents[1]

# Every protocol version ever released, in release order: (name, version, fingerprint, link). A released
# version never changes: changing any parameter means a new file `<name>-v<N+1>.yaml` (the old file
# stays) and a new LAST row here, with an empty link; the failing test then prints the link to write.
# `link` chains each row to every row before it, so a row edited in place (a parameter changed and the
# new fingerprint pasted over the old one) breaks the chain instead of passing. Never edit a row.
Row = tuple[str, int, str, str]
RELEASED: list[Row] = [
    ("tecoa-pgd", 1, "40c7cba46528449e4a1d80667f1c226c240e9ef800eb8a19bdbb173643aefe98", "a5432f73a503a81c"),
    ("tecoa-cw", 1, "3ae7e07da273f51bb7fd4679d4208666bbaeeef028dcab219210a5d8b5791cfa", "53ff148a404428cd"),
    ("fare-aa", 1, "635c5efd9d3050a1cd653775d747f254df26cc4f34589eba6e14ca695ce99220", "59e991ea23397c88"),
    (
        "aa-standard",
        1,
        "b3c0d1ad14d08746f71efc98ae401d49ceb268ae6b518260626341b2533f44c0",
        "4629396d0940cae6",
    ),
    ("clean", 1, "8277233173e9a8442581b96c96f6b4b21ad667b9de18dfefdc74da236da787ad", "0c2384091fad51d8"),
    (
        "synthetic-pgd",
        1,
        "4d59a5a43409fa8674bda6e47108d88a92b5f82b0d39e462b45ba8e5c9192de1",
        "2f460d80cc04afe4",
    ),
    # issue 15: TeCoA's Resize(256)+CenterCrop(224) declared; fare-aa as FARE calls AutoAttack
    ("tecoa-pgd", 2, "c977909d7888c1e606fabe6afcb85e807e8038207989cdd3983e55bb27a5a641", "6a48495c0c9ec547"),
    ("tecoa-cw", 2, "5e4f1aca85bd27b7783cc2023fde8684143392f97f973b5af3e7b05a39499d04", "718ae1649ffc94f5"),
    ("fare-aa", 2, "24854135b2a738a5ebe7c00b8b89a7d63c8ef5c82ce18acadf9e69f83e4ea50e", "95d1e419d297daab"),
    (
        "aa-standard",
        2,
        "95e5cd50d6759bbeb314a1c7963615da634974665820c01f8e4e7872633db3ee",
        "885cd6505e861281",
    ),
    (
        "synthetic-aa",
        1,
        "5d616a41bd612ef98a6445b5ae63b6c07c58303e9a79faac47ad5160cb0a98fd",
        "9c2ae1721fdb1764",
    ),
]
FINGERPRINT = {(name, version): fp for name, version, fp, _ in RELEASED}


def _link(previous: str, name: str, version: int, fingerprint: str) -> str:
    return hashlib.sha256(f"{previous} {name} {version} {fingerprint}".encode()).hexdigest()[:16]


def released_problems(protocols: list[Protocol], released: list[Row]) -> list[str]:
    """Why the registered versions `protocols` and the ledger `released` disagree; empty when they agree."""
    problems = []
    previous = ""
    for i, (name, version, fp, link) in enumerate(released):
        expected = _link(previous, name, version, fp)
        if link != expected:
            if i == len(released) - 1 and not link:
                problems.append(f"new row {name} v{version}: write its link {expected!r}")
            else:
                problems.append(
                    f"row {i} ({name} v{version}) of RELEASED was changed: released rows never change; "
                    f"restore the row and {name}-v{version}.yaml, and write the change as a new version"
                )
        previous = link
    produced = {(p.name, p.version): p.fingerprint() for p in protocols}
    rows = [(name, version) for name, version, _, _ in released]
    problems += [
        f"{n} v{v} has {rows.count((n, v))} rows in RELEASED" for n, v in set(rows) if rows.count((n, v)) > 1
    ]
    problems += [
        f"{name} v{version} was released with fingerprint {fp[:12]}, which its file no longer gives: restore "
        f"{name}-v{version}.yaml and write the change as a new version"
        for name, version, fp, _ in released
        if produced.get((name, version), fp) != fp
    ]
    problems += [f"{n} v{v}: released, but no protocol file has it" for n, v in set(rows) - set(produced)]
    problems += [
        f"{n} v{v} (fingerprint {produced[(n, v)]}) is not released: add it as the last row of RELEASED"
        for n, v in sorted(set(produced) - set(rows))
    ]
    return problems


def test_released_versions_are_unchanged():
    """Every registered version is released once, with the fingerprint its file gives; the ledger is intact."""
    assert released_problems(all_protocol_versions(), RELEASED) == []


def _edited_tecoa_pgd() -> tuple[Protocol, Protocol]:
    current = get_protocol("tecoa-pgd")
    step = AttackStep(current.attacks[0].name, {**current.attacks[0].params, "steps": 50})
    return current, dataclasses.replace(current, attacks=(step,))


def test_a_parameter_change_needs_a_new_version():
    """Editing a released version fails, also after its new fingerprint is pasted over the old one; the same
    change as a new version (old file kept, one row appended) passes."""
    current, edited = _edited_tecoa_pgd()
    others = [p for p in all_protocol_versions() if p is not current]
    assert any("tecoa-pgd v2 was released" in m for m in released_problems([*others, edited], RELEASED))
    pasted = [
        (n, v, edited.fingerprint() if (n, v) == ("tecoa-pgd", 2) else fp, link)
        for n, v, fp, link in RELEASED
    ]
    assert any("RELEASED was changed" in m for m in released_problems([*others, edited], pasted))
    bumped = dataclasses.replace(edited, version=3)
    appended = [*RELEASED, ("tecoa-pgd", 3, bumped.fingerprint(), "")]
    (hint,) = released_problems([*others, current, bumped], appended)
    link = hint.split("'")[1]
    appended[-1] = ("tecoa-pgd", 3, bumped.fingerprint(), link)
    assert released_problems([*others, current, bumped], appended) == []
    assert released_problems([*others, bumped], appended)  # the old version's file must stay


def test_committed_results_pin_their_versions():
    """Results committed under a version recorded its parameters; the version's file still gives them."""
    checked = 0
    for path in sorted(REPO.glob("submissions/*/results/*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        proto = doc.get("protocol") or {}
        if "params" not in proto or proto.get("custom"):
            continue  # reported results record no parameters
        frozen = json.loads(json.dumps(get_protocol(proto["name"], proto["version"]).params()))
        recorded = {k: v for k, v in proto["params"].items() if k != "attack_backend"}
        assert recorded == {k: v for k, v in frozen.items() if k != "attack_backend"}, path
        checked += 1
    assert checked >= 2


def test_superseded_versions_are_kept_and_distinct():
    for old in superseded():
        current = get_protocol(old.name)
        assert old.version < current.version and get_protocol(old.name, old.version) is old
        assert old.fingerprint() != current.fingerprint()
    assert {(p.name, p.version) for p in superseded()} == {
        ("tecoa-pgd", 1),
        ("tecoa-cw", 1),
        ("fare-aa", 1),
        ("aa-standard", 1),
    }
    with pytest.raises(ZSBenchError, match="has no version 7"):
        get_protocol("tecoa-pgd", 7)


def test_design_table_values():
    pgd = get_protocol("tecoa-pgd")
    assert pgd.eps == (1 / 255,) and pgd.norm == "Linf" and pgd.samples is None and pgd.precision == "fp32"
    assert pgd.attacks[0].name == "pgd" and pgd.attacks[0].params["steps"] == 100
    assert pgd.attacks[0].params["step_size"] == 1 / 255 and pgd.attacks[0].params["random_start"] is True
    assert get_protocol("tecoa-cw").attacks[0].name == "pgd-cw"
    fare = get_protocol("fare-aa")
    assert [eps_label(e) for e in fare.eps] == ["2/255", "4/255"] and fare.prompt_set == "clip"
    assert [a.name for a in fare.attacks] == ["apgd-ce", "apgd-t"]
    assert fare.samples_for("imagenet") == 5000 and fare.samples_for("cifar10") == 1000
    aa = get_protocol("aa-standard")
    assert [a.name for a in aa.attacks] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert aa.attacks[3].params["n_queries"] == 5000 and aa.attacks[2].params["n_target_classes"] == 9
    assert get_protocol("clean").attacks == ()
    with pytest.raises(ZSBenchError, match="unknown protocol"):
        get_protocol("pgd-100")


@pytest.mark.parametrize("protocol", [p.name for p in list_protocols()])
def test_every_attack_builds_and_records_its_params(protocol):
    proto = get_protocol(protocol)
    for eps in proto.eps:
        attacks, records = build_attacks(proto.attack_steps(), eps, 1000, norm=proto.norm)
        assert [a.name for a in attacks] == [a.name for a in proto.attacks]
        for step, rec in zip(proto.attacks, records, strict=True):
            assert rec["params"]["eps"] == eps
            for key, value in step.params.items():
                if key != "n_target_classes":
                    assert rec["params"][key] == value, (protocol, step.name, key)
            if "n_target_classes" in step.params:
                assert rec["params"]["n_target_classes"] == 9


def test_overrides_mark_custom_only_on_change():
    base = get_protocol("tecoa-pgd")
    assert apply_overrides(base, {}) == (base, False)
    same, custom = apply_overrides(base, {"steps": 100, "eps": ["1/255"], "seed": 0, "samples": None})
    assert not custom and same == base
    new, custom = apply_overrides(base, {"steps": 10, "step_size": "0.5/255"})
    assert custom and new.attacks[0].params["steps"] == 10 and new.attacks[0].params["step_size"] == 0.5 / 255
    assert base.attacks[0].params["steps"] == 100  # the frozen protocol is untouched
    assert new.fingerprint() != base.fingerprint()
    assert apply_overrides(base, {"seed": 1})[1]


def test_override_aliases_and_scoped_names():
    aa = get_protocol("aa-standard")
    new, custom = apply_overrides(aa, {"steps": 10, "restarts": 2, "square.n_queries": "100"})
    params = {a.name: a.params for a in new.attacks}
    assert custom
    assert params["apgd-ce"]["n_iter"] == params["apgd-t"]["n_iter"] == params["fab-t"]["n_iter"] == 10
    assert params["apgd-ce"]["n_restarts"] == params["square"]["n_restarts"] == 2
    assert params["square"]["n_queries"] == 100  # text coerced to the frozen type
    only_t, _ = apply_overrides(aa, {"apgd-t.n_target_classes": 3})
    assert {
        a.name: a.params["n_target_classes"] for a in only_t.attacks if "n_target_classes" in a.params
    } == {
        "apgd-t": 3,
        "fab-t": 9,
    }


def test_samples_override_applies_to_every_dataset():
    fare, custom = apply_overrides(get_protocol("fare-aa"), {"samples": 200})
    assert custom and fare.samples_for("imagenet") == 200 and fare.samples_for("dtd") == 200
    full, _ = apply_overrides(get_protocol("fare-aa"), {"samples": "full"})
    assert full.samples_for("imagenet") is None


@pytest.mark.parametrize(
    ("protocol", "overrides", "message"),
    [
        ("tecoa-pgd", {"stepz": 3}, "no attack of this protocol has that parameter"),
        ("aa-standard", {"step_size": 1 / 255}, "no attack of this protocol has that parameter"),
        ("tecoa-pgd", {"square.n_queries": 10}, "it runs no attack 'square'"),
        ("tecoa-pgd", {"pgd.n_iter": 10}, "no attack of this protocol has that parameter"),
        ("tecoa-pgd", {"steps": -1}, "needs steps >= 0"),
        ("tecoa-pgd", {"norm": "L1"}, "norm must be one of"),
        ("tecoa-pgd", {"precision": "fp8"}, "precision must be one of"),
        ("tecoa-pgd", {"eps": [-1 / 255]}, "non-negative"),
        ("tecoa-pgd", {"pgd.random_start": "maybe"}, "expected true or false"),
        ("tecoa-pgd", {"samples": 0}, "samples must be positive"),
        ("clean", {"eps": ["1/255"]}, "runs no attack"),
    ],
)
def test_bad_overrides_fail_clearly(protocol, overrides, message):
    with pytest.raises(ZSBenchError, match=message):
        apply_overrides(get_protocol(protocol), overrides)


def test_eps_label_and_parse():
    assert eps_label(1 / 255) == "1/255" and eps_label(4 / 255) == "4/255" and eps_label(0.5) == "0.5"
    assert parse_eps("4/255") == 4 / 255 and parse_eps(" 0.25 ") == 0.25
    with pytest.raises(ZSBenchError, match="cannot parse epsilon"):
        parse_eps("four")


def _cli(argv: list[str], capsys) -> str:
    parser = argparse.ArgumentParser(prog="zsbench")
    register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    return capsys.readouterr().out


def test_cli_list_table_shows_every_parameter(capsys):
    out = _cli(["protocols", "list"], capsys)
    header = out.splitlines()[0]
    assert all(c.upper() in header for c in COLUMNS)
    for p in list_protocols():
        assert p.name in out
        for step in p.attacks:
            for key in step.params:
                assert f"{key}=" in out
    assert "Linf 2/255, 4/255" in out and "1000 (imagenet 5000)" in out
    assert "square(n_queries=5000, p_init=0.8, n_restarts=1, rescale_schedule=False)" in out
    assert "pgd(steps=100, step_size=1/255, random_start=True, restarts=1)" in out


def test_cli_list_json_rows(capsys):
    rows = json.loads(_cli(["protocols", "list", "--json"], capsys))
    assert [r["name"] for r in rows] == [p.name for p in list_protocols()]
    for row in rows:
        assert set(COLUMNS) <= set(row)
        proto = get_protocol(row["name"])
        assert row["params"] == json.loads(json.dumps(proto.params()))
        assert row["fingerprint"] == FINGERPRINT[(proto.name, proto.version)]


def test_cli_show(capsys):
    out = _cli(["protocols", "show", "aa-standard"], capsys)
    assert "fab-t(n_iter=100" in out and "fingerprint: " + FINGERPRINT[("aa-standard", 2)] in out
    row = json.loads(_cli(["protocols", "show", "fare-aa", "--json"], capsys))
    assert row["threat"] == "Linf 2/255, 4/255" and row["templates"] == "clip"


def test_eps_zero_is_allowed_and_custom():
    """eps=0 is a legal (custom) run: it must reproduce clean accuracy exactly."""
    new, custom = apply_overrides(get_protocol("tecoa-pgd"), {"eps": [0.0]})
    assert custom and new.eps == (0.0,)


def test_readme_protocol_table_is_the_registry():
    """README's Protocols table is `zsbench protocols list --markdown`, byte for byte."""
    from pathlib import Path

    from zsrobust_bench.cli.protocols import markdown_table

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- protocols-table:start", 1)[1].split("<!-- protocols-table:end -->", 1)[0]
    assert block.split("\n", 1)[1] == markdown_table(list_protocols())
    assert "`fare-aa` | 2 |" in block and "APGD-CE (100 it, 5 restarts)" in block


def test_listing_order_names_every_shipped_protocol_once():
    """defs/ORDER.txt (release order, what `protocols list` shows) names each shipped protocol exactly once."""
    from zsrobust_bench.protocols.registry import _listing_order

    order = _listing_order()
    assert len(order) == len(set(order))
    assert set(order) == {p.name for p in list_protocols()}
    assert [p.name for p in list_protocols()] == order


def test_cli_list_shows_each_protocols_preprocessing(capsys):
    out = _cli(["protocols", "list"], capsys)
    assert "PREPROCESS" in out.splitlines()[0] and "Resize(256, bilinear) + CenterCrop(224)" in out
    rows = {r["name"]: r for r in json.loads(_cli(["protocols", "list", "--json"], capsys))}
    assert rows["tecoa-pgd"]["preprocess_params"] == {"resize": 256, "interpolation": "bilinear", "crop": 224}
    assert rows["fare-aa"]["preprocess_params"] == {
        "resize": "model",
        "interpolation": "bicubic",
        "crop": "model",
    }
    assert rows["fare-aa"]["params"]["attacks"][0] == {
        "name": "apgd-ce",
        "n_iter": 100,
        "n_restarts": 5,
        "rho": 0.75,
        "eot_iter": 1,
    }
    assert rows["tecoa-pgd"]["version"] == rows["fare-aa"]["version"] == rows["aa-standard"]["version"] == 2
    assert "Resize(model, bicubic) + CenterCrop(model) (default)" in rows["clean"]["preprocess"]
    old = json.loads(_cli(["protocols", "show", "fare-aa", "--version", "1", "--json"], capsys))
    assert old["version"] == 1 and old["params"]["attacks"][0]["n_restarts"] == 1


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty directory for a user's protocol files; the registry forgets what the test adds."""
    from zsrobust_bench.protocols import registry

    monkeypatch.setattr(registry, "_ADDED", {})
    return tmp_path


def _shipped(name: str) -> str:
    return (REPO / "zsrobust_bench" / "protocols" / "defs" / f"{name}.yaml").read_text(encoding="utf-8")


def test_add_protocol_dir_registers_a_users_files(user_dir: Path):
    text = _shipped("synthetic-pgd-v1").replace("name: synthetic-pgd\n", "name: my-pgd\n")
    (user_dir / "my-pgd-v1.yaml").write_text(text.replace("samples: 500\n", "samples: 7\n"))
    (user_dir / "my-pgd-v2.yaml").write_text(text.replace("version: 1\n", "version: 2\n"))
    (added_v1, added_v2) = add_protocol_dir(user_dir)
    assert get_protocol("my-pgd") == added_v2 and get_protocol("my-pgd", 1).samples == 7
    assert [p.name for p in superseded()].count("my-pgd") == 1
    info = lookup_protocol("my-pgd", 1)
    assert info is not None and info.superseded_by == 2 and info.synthetic and info.slug == "my-pgd-v1"
    with pytest.raises(ZSBenchError, match="my-pgd' version 1 is already registered"):
        add_protocol_dir(user_dir)


@pytest.mark.parametrize(
    ("file", "edit", "message"),
    [
        ("clean-v1.yaml", lambda t: t, "'clean' version 1 is already registered"),
        ("mine-v3.yaml", lambda t: t.replace("name: clean", "name: mine"), "must be named mine-v1.yaml"),
        (
            "mine-v1.yaml",
            lambda t: t.replace("name: clean", "name: mine") + "steps: 3\n",
            "unknown keys steps",
        ),
        (
            "mine-v1.yaml",
            lambda t: t.replace("name: clean", "name: mine").replace("kind: registered", ""),
            "kind",
        ),
        (
            "mine-v1.yaml",
            lambda t: t.replace("name: clean", "name: mine").replace("norm: none", "norm: L1"),
            "norm must",
        ),
        (
            "mine-v1.yaml",
            lambda t: t.replace("name: clean", "name: mine").replace("precision: fp32", "precision: fp8"),
            "precision must",
        ),
        (
            "mine-v1.yaml",
            lambda t: t.replace("name: clean", "name: mine").replace("samples: null\n", ""),
            "needs 'samples'",
        ),
    ],
)
def test_bad_protocol_files_fail_clearly(user_dir: Path, file: str, edit, message: str):
    (user_dir / file).write_text(edit(_shipped("clean-v1")))
    with pytest.raises(ZSBenchError, match=message):
        add_protocol_dir(user_dir)


def test_reported_files_share_the_registry(user_dir: Path):
    reported = reported_protocols()
    assert set(reported) == {"tecoa-readme", "fare-paper", "tga-zsr-paper", "tga-zsr-paper-aa"}
    fare = reported["fare-paper"]
    assert fare.kind == "reported" and fare.version == 2 and fare.primary_eps == "2/255"
    assert fare.source_url == "https://arxiv.org/abs/2402.12336" and lookup_protocol("fare-paper", 1) is None
    with pytest.raises(ZSBenchError, match="unknown protocol 'fare-paper'"):
        get_protocol("fare-paper")  # reported protocols are never run
    text = _shipped("tecoa-readme-v1")
    (user_dir / "tecoa-readme-v2.yaml").write_text(
        text.replace("version: 1", "version: 2").replace("[1/255]", "[0.00392156862745098]")
    )
    with pytest.raises(ZSBenchError, match="eps labels must be written as eps_label writes them"):
        add_protocol_dir(user_dir)
    (user_dir / "tecoa-readme-v2.yaml").unlink()
    (user_dir / "tecoa-pgd-v3.yaml").write_text(
        text.replace("name: tecoa-readme", "name: tecoa-pgd").replace("version: 1", "version: 3")
    )
    with pytest.raises(ZSBenchError, match="cannot be both registered and reported"):
        add_protocol_dir(user_dir)


def test_norm_and_precision_are_enums_from_the_boundary():
    pgd = get_protocol("tecoa-pgd")
    assert (
        pgd.norm is Norm.LINF and pgd.precision is Precision.FP32 and get_protocol("clean").norm is Norm.NONE
    )
    assert json.dumps(pgd.params()["norm"]) == '"Linf"' and f"{pgd.norm}" == "Linf"
    new, _ = apply_overrides(pgd, {"norm": "L2", "precision": "bf16"})
    assert new.norm is Norm.L2 and new.precision is Precision.BF16
    with pytest.raises(ZSBenchError, match="norm must be one of"):
        dataclasses.replace(pgd, norm="l-inf")


def test_one_eps_label():
    """One eps module: 0 is '0/255' like every other multiple of 1/255, and labels parse back."""
    assert eps_label(0.0) == "0/255" and parse_eps("0/255") == 0.0
    for eps in (0.0, 1 / 255, 2 / 255, 4 / 255, 0.5, 0.031):
        assert parse_eps(eps_label(eps)) == pytest.approx(eps)
