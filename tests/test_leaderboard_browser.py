"""The generated index.html in a real headless Chromium, driven over the W3C WebDriver protocol.

Chromium and chromedriver come from Debian (`apt-get install chromium chromium-driver`); the session
fixture installs them when missing and running as root, and skips with the reason otherwise.
The WebDriver client is a few stdlib HTTP calls, so no extra Python package is needed.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from leaderboard_support import REPO

from zsrobust_bench.leaderboard import build_leaderboard

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
DRIVER = "/usr/bin/chromedriver"
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"
EVIL = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


def _install_browser() -> str | None:
    """Install Debian's chromium + chromium-driver when missing; return why not when impossible."""
    if os.path.exists(CHROMIUM) and os.path.exists(DRIVER):
        return None
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("apt-get"):
        return "chromium/chromedriver missing and cannot be installed (needs root and apt-get)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium", "chromium-driver"]
    try:
        if subprocess.run(cmd, env=env, capture_output=True, timeout=900).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=300)
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
            if done.returncode != 0:
                return f"apt-get install chromium chromium-driver failed: {done.stderr.strip()[-300:]}"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"could not install chromium: {exc}"
    return (
        None
        if os.path.exists(CHROMIUM) and os.path.exists(DRIVER)
        else "chromium still missing after install"
    )


class WebDriver:
    """Just enough of the W3C WebDriver protocol: navigate, run a script, click, read browser logs."""

    def __init__(self, port: int, user_data_dir: Path) -> None:
        self.base = f"http://127.0.0.1:{port}"
        args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={user_data_dir}",
            "--window-size=1400,1000",
        ]
        caps = {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }
        self.sid = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})["sessionId"]

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return json.loads(resp.read())["value"]
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"WebDriver {method} {path}: {exc.read().decode()[:500]}") from exc

    def s(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._call(method, f"/session/{self.sid}{path}", body)

    def get(self, url: str) -> None:
        self.s("POST", "/url", {"url": url})

    def js(self, script: str, *args: Any) -> Any:
        return self.s("POST", "/execute/sync", {"script": script, "args": list(args)})

    def click(self, css: str) -> None:
        element = self.s("POST", "/element", {"using": "css selector", "value": css})[ELEMENT]
        self.s("POST", f"/element/{element}/click", {})

    def logs(self) -> list[dict[str, Any]]:
        return self.s("POST", "/se/log", {"type": "browser"})

    def quit(self) -> None:
        self._call("DELETE", f"/session/{self.sid}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    why = _install_browser()
    if why:
        pytest.skip(why)
    port = _free_port()
    driver = subprocess.Popen(
        [DRIVER, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2).read()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.1)
        wd = WebDriver(port, tmp_path_factory.mktemp("chromium-profile"))
        try:
            yield wd
        finally:
            wd.quit()
    finally:
        driver.terminate()
        driver.wait(timeout=10)


@pytest.fixture(scope="module")
def evil_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed submissions plus one entry whose name is an XSS attempt, built into a page."""
    root = tmp_path_factory.mktemp("evil")
    subs = root / "submissions"
    shutil.copytree(REPO / "submissions", subs)
    card = subs / "tga-zsr-vit-b32" / "card.yaml"
    card.write_text(card.read_text().replace('name: "TGA-ZSR (ViT-B/32)"', f"name: {json.dumps(EVIL)}"))
    build_leaderboard(subs, root / "leaderboard")
    return root / "leaderboard" / "index.html"


def _severe(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e.get("level") == "SEVERE"]


def _column(browser: WebDriver, section: str, header: str) -> list[str]:
    return browser.js(
        """const sec = document.getElementById(arguments[0]);
           const heads = Array.from(sec.querySelectorAll('thead th')).map(h => h.textContent);
           const col = heads.indexOf(arguments[1]);
           return Array.from(sec.querySelectorAll('tbody tr')).map(r => r.cells[col].getAttribute('data-v'));""",
        section,
        header,
    )


def test_committed_page_loads_without_console_errors(browser: WebDriver) -> None:
    browser.logs()  # drop anything from before
    browser.get((REPO / "leaderboard" / "index.html").as_uri())
    assert browser.js("return document.readyState") == "complete"
    assert browser.js("return document.querySelectorAll('table.lb tbody tr').length") > 0
    assert not _severe(browser.logs())


def test_sorting_a_column_reorders_rows(browser: WebDriver) -> None:
    browser.get((REPO / "leaderboard" / "index.html").as_uri())
    before = _column(browser, "p-tga-zsr-paper", "Clean avg")
    browser.click("#p-tga-zsr-paper thead th:nth-child(7) button")
    first = [float(v) for v in _column(browser, "p-tga-zsr-paper", "Clean avg")]
    assert first == sorted(first, reverse=True) and [str(v) for v in first] != before
    browser.click("#p-tga-zsr-paper thead th:nth-child(7) button")
    second = [float(v) for v in _column(browser, "p-tga-zsr-paper", "Clean avg")]
    assert second == sorted(second)
    sort_state = browser.js(
        "return document.querySelector('#p-tga-zsr-paper thead th:nth-child(7)').getAttribute('aria-sort')"
    )
    assert sort_state == "ascending"
    assert not _severe(browser.logs())


def test_filters_hide_rows_and_sections(browser: WebDriver) -> None:
    browser.get((REPO / "leaderboard" / "index.html").as_uri())
    visible = "return Array.from(document.querySelectorAll(arguments[0])).filter(e => getComputedStyle(e).display !== 'none').length"
    total = browser.js("return document.querySelectorAll('#p-fare-paper tbody tr').length")
    browser.click("#f-threat option[value='Linf 4/255']")
    shown = browser.js(visible, "#p-fare-paper tbody tr")
    assert 0 < shown < total
    assert browser.js(visible, "#p-fare-paper tbody tr:not([data-threat='Linf 4/255'])") == 0
    assert browser.js(visible, "#p-fare-paper svg g.pt:not([data-threat='Linf 4/255'])") == 0
    browser.click("#f-threat option[value='']")
    browser.click("#f-protocol option[value='tecoa-readme']")
    assert browser.js(visible, "section.protocol") == 1
    assert browser.js(visible, "#p-tecoa-readme") == 1
    assert not _severe(browser.logs())


def test_script_in_a_name_is_shown_not_run(browser: WebDriver, evil_page: Path) -> None:
    browser.logs()
    browser.get(evil_page.as_uri())
    assert browser.js("return window.__pwned === undefined")
    texts = browser.js(
        "return Array.from(document.querySelectorAll('#p-tga-zsr-paper tbody a')).map(a => a.textContent)"
    )
    assert EVIL in texts
    assert browser.js("return document.querySelectorAll('main script, main img').length") == 0
    assert not _severe(browser.logs())
