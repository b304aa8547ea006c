"""Zoo: shipped entries, loopback downloads (resume, sha256 refusal, pinning), hf-hub cache, zoo: in evaluate."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from zoo_server import Publisher, serve, zoo_file

from zsrobust_bench.cli import main
from zsrobust_bench.zoo import add_zoo_file, get_entry, list_entries, registry
from zsrobust_bench.zoo.download import check_url, download, zoo_dir
from zsrobust_bench.zoo.registry import ZooError
from zsrobust_bench.zoo.resolve import fetch_entry


@pytest.fixture(autouse=True)
def _fresh_extra_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Entries added by one test do not leak into the next."""
    monkeypatch.setattr(registry, "_EXTRA", {})


def _url_entry(tmp_path: Path, base: str, name: str = "blob", sha: str | None = None) -> str:
    add_zoo_file(
        zoo_file(
            tmp_path,
            [
                {
                    "name": name,
                    "location": {"kind": "url", "url": f"{base}/{name}.bin"},
                    "file": f"{name}.bin",
                    "sha256": sha,
                }
            ],
        )
    )
    return name


def test_shipped_entries_name_a_source_and_a_leaderboard_entry():
    entries = list_entries()
    submissions = {p.name for p in (Path(__file__).parents[1] / "submissions").iterdir() if p.is_dir()}
    assert {e.leaderboard_entry for e in entries} <= submissions
    for e in entries:
        assert e.source.startswith("https://"), e.name
        if e.kind == "url":
            assert e.location["url"].startswith("https://") and e.location["url"].endswith(e.file)
    assert get_entry("fare2-vit-l14").location["url"].endswith("/download/fare_eps_2.pt")


def test_list_json_has_a_row_per_entry(capsys):
    assert main(["zoo", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == [e.name for e in list_entries()]
    assert all({"name", "arch", "format", "where", "leaderboard_entry"} <= set(r) for r in rows)


def test_only_https_or_loopback_http():
    check_url("https://example.org/a.pt")
    check_url("http://127.0.0.1:8000/a.pt")
    with pytest.raises(ZooError, match="only https"):
        check_url("http://example.org/a.pt")
    with pytest.raises(ZooError, match="only https"):
        check_url("file:///etc/passwd")


def test_download_pins_sha_on_first_download_and_enforces_it(tmp_path):
    data = bytes(range(256)) * 4000
    with serve(Publisher(files={"/blob.bin": data})) as pub:
        entry = get_entry(_url_entry(tmp_path, pub.base))
        path = download(entry)
        assert path.read_bytes() == data
        pin = path.with_name("blob.bin.sha256")
        assert pin.read_text().strip() == hashlib.sha256(data).hexdigest()
        assert download(entry) == path and len(pub.ranges) == 1  # cached: no second request
        path.write_bytes(data[:-1] + b"\x00")  # the cached file changed after pinning
        with pytest.raises(ZooError, match="expected"):
            download(entry)
        assert not path.exists()


def test_interrupted_download_resumes_with_a_range_request(tmp_path):
    data = bytes(range(256)) * 4000
    with serve(Publisher(files={"/blob.bin": data}, cut_next=300_000)) as pub:
        entry = get_entry(_url_entry(tmp_path, pub.base, sha=hashlib.sha256(data).hexdigest()))
        with pytest.raises(ZooError, match="resumes"):
            download(entry)
        part = zoo_dir(entry) / "blob.bin.part"
        assert part.stat().st_size == 300_000
        path = download(entry)
        assert pub.ranges == [None, "bytes=300000-"]
        assert path.read_bytes() == data and not part.exists()


def test_sha_mismatch_is_refused_and_deleted(tmp_path, capsys):
    with serve(Publisher(files={"/blob.bin": b"not the published bytes"})) as pub:
        _url_entry(tmp_path, pub.base, sha="0" * 64)
        assert main(["zoo", "download", "blob"]) == 2
    assert "sha256 of blob" in capsys.readouterr().err
    assert list(zoo_dir(get_entry("blob")).iterdir()) == []


def test_hf_hub_entry_resolves_from_an_offline_cache(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    snap = hub / "models--lab--robust-clip" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (snap / "visual.pt").write_bytes(b"weights")
    (hub / "models--lab--robust-clip" / "refs").mkdir()
    (hub / "models--lab--robust-clip" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    add_zoo_file(
        zoo_file(
            tmp_path,
            [
                {
                    "name": "hubbed",
                    "location": {"kind": "hf-hub", "repo": "lab/robust-clip"},
                    "file": "visual.pt",
                }
            ],
        )
    )
    assert fetch_entry(get_entry("hubbed")).read_bytes() == b"weights"


def test_zoo_spec_in_evaluate(tmp_path, demo_model, capsys):
    data = demo_model.read_bytes()
    with serve(Publisher(files={"/demo.bin": data})) as pub:
        add_zoo_file(
            zoo_file(
                tmp_path,
                [
                    {
                        "name": "demo",
                        "location": {"kind": "url", "url": f"{pub.base}/demo.bin"},
                        "file": "demo-clip.safetensors",
                    }
                ],
            )
        )
        args = ["--datasets", "synth-shape", "--protocol", "synthetic-pgd", "--samples", "32", "--steps", "2"]
        assert main(["evaluate", "zoo:demo", *args, "--out", str(tmp_path / "z"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["model"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert main(["evaluate", str(demo_model), *args, "--out", str(tmp_path / "d"), "--json"]) == 0
    direct = json.loads(capsys.readouterr().out)
    assert res["datasets"] == direct["datasets"]
