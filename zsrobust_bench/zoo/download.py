"""Fetch a zoo checkpoint into the cache: https (http only to loopback), Range resume, sha256 pinning.

Layout: $ZSBENCH_CACHE/zoo/<name>/<file>, a partial download as <file>.part, and for entries
without a published sha256 the digest of the first complete download in <file>.sha256
(pin_on_first_download: later downloads must match it).
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from tqdm.auto import tqdm

from ..fileio import atomic_write_text, sha256_file
from ..zeroshot import cache_root
from .registry import ZooEntry, ZooError

CHUNK = 1 << 20
TIMEOUT_S = 60


def zoo_dir(entry: ZooEntry) -> Path:
    """Cache folder of one zoo entry."""
    return cache_root() / "zoo" / entry.name


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def check_url(url: str) -> None:
    """Only https, or plain http to the loopback address (local mirrors and tests)."""
    parts = urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(parts.hostname)):
        return
    raise ZooError(f"refusing to download {url!r}: only https URLs (http only to 127.0.0.1/localhost)")


def expected_sha(entry: ZooEntry, target: Path) -> str | None:
    """The published sha256, else the one pinned at first download, else None."""
    if entry.sha256:
        return entry.sha256.lower()
    pin = target.with_name(target.name + ".sha256")
    return pin.read_text().strip() if pin.is_file() else None


def _fetch(url: str, part: Path, desc: str) -> None:
    """Append the rest of URL to PART, asking for a Range when PART already holds bytes."""
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(req, timeout=TIMEOUT_S)  # noqa: S310 (scheme checked by check_url)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to fetch: the .part is complete
            return
        raise ZooError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise ZooError(f"download of {url} failed: {exc.reason}") from exc
    with resp:
        if have and resp.status != 206:  # server ignored the Range: start over
            have = 0
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        mode = "ab" if have else "wb"
        with (
            open(part, mode) as fh,
            tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=desc, dynamic_ncols=True) as bar,
        ):
            try:
                while block := resp.read(CHUNK):
                    fh.write(block)
                    bar.update(len(block))
            except (http.client.IncompleteRead, OSError) as exc:
                raise ZooError(
                    f"download of {url} was interrupted ({type(exc).__name__})",
                    "run the same command again: it resumes from the partial file",
                ) from exc
    if total is not None and part.stat().st_size != total:
        raise ZooError(
            f"download of {url} ended early ({part.stat().st_size} of {total} bytes)",
            "run the same command again: it resumes from the partial file",
        )


def download(entry: ZooEntry) -> Path:
    """The cached checkpoint file of a url entry, downloading (or resuming) it when needed."""
    if entry.kind != "url":
        raise ZooError(f"zoo entry {entry.name!r} is published as {entry.kind}, not a URL")
    url = entry.location["url"]
    check_url(url)
    target = zoo_dir(entry) / str(entry.file)
    want = expected_sha(entry, target)
    if target.is_file():
        _verify(target, want, entry)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    _fetch(url, part, entry.name)
    _verify(part, want, entry)
    if want is None:
        atomic_write_text(target.with_name(target.name + ".sha256"), sha256_file(part) + "\n")
    os.replace(part, target)
    return target


def _verify(path: Path, want: str | None, entry: ZooEntry) -> None:
    """Refuse (and delete) a file whose sha256 differs from the published or pinned one."""
    if want is None:
        return
    got = sha256_file(path)
    if got != want:
        path.unlink()
        raise ZooError(
            f"sha256 of {entry.name} is {got}, expected {want}; the file was deleted",
            "the publisher's file changed or the download is corrupt; report it before trusting a re-download",
        )
