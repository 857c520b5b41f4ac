"""Headless Chromium for tests/test_ui.py: Debian's `chromium` driven by Playwright, loopback only.

Playwright's own browser download needs the internet, which a self-hosted,
offline machine does not have; Playwright drives the system browser instead
(`apt-get install -y chromium`, through `executable_path`).

Every request the page makes goes through one route: a request to anything but
loopback is aborted and recorded, and the test fails on it, because a Prefect UI
that Stratos starts must make no outside call. A failing test leaves a
full-page screenshot in its tmp dir and prints the path.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

INSTALL = "apt-get install -y chromium"
LOCAL_SCHEMES = {"data", "blob", "about", "chrome", "chrome-extension"}  # never leave the machine


def chromium_path() -> str:
    """The system Chromium, or a skip that says how to install it."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip(f"no chromium on PATH; install it with `{INSTALL}`")
    return found


def is_loopback(url: str) -> bool:
    """Whether a request stays on this machine (loopback address, localhost, or an in-page scheme)."""
    parts = urlsplit(url)
    if parts.scheme in LOCAL_SCHEMES:
        return True
    host = parts.hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost needs a DNS lookup: outside


@dataclass
class Browser:
    """One page of a headless Chromium, with the outside requests it tried."""

    page: object  # playwright.sync_api.Page (the import is deferred: optional dev dependency)
    shots: Path
    outside: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # API answers >= 400, printed when a test fails

    def until(self, action: Callable[[], None], done: Callable[[], bool], timeout_s: float = 30) -> None:
        """Do `action` (a click that writes) until `done()`; again, twice at most, if the server said 503.

        Prefect on SQLite answers 503 ("database is locked") when a write collides with another on a
        busy machine, and its UI then shows "Something went wrong" without retrying; a user clicks
        again, and so does this.
        """
        for _ in range(3):
            seen = len(self.errors)
            action()
            deadline = time.monotonic() + timeout_s
            while not done():
                if any(e.startswith("503 ") for e in self.errors[seen:]):
                    break
                assert time.monotonic() < deadline, f"nothing came of the click in {timeout_s:g}s"
                # Not time.sleep: the route guard runs in this thread, only while Playwright waits.
                self.page.wait_for_timeout(500)
            else:
                return
        raise AssertionError(f"the server answered 503 three times: {self.errors[-3:]}")

    def shot(self, name: str) -> Path:
        """A full-page screenshot under the test's tmp dir."""
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@contextmanager
def browser(shots: Path) -> Iterator[Browser]:
    """A loopback-only page; a screenshot on failure; fails if the page tried to reach outside."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extras)")
    executable = chromium_path()
    shots.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, headless=True)
        context = chromium.new_context(viewport={"width": 1400, "height": 900})
        context.set_default_timeout(30_000)
        page = context.new_page()
        view = Browser(page, shots)

        def guard(route) -> None:
            if is_loopback(route.request.url):
                route.continue_()
            else:
                view.outside.append(route.request.url)
                route.abort("blockedbyclient")

        def guard_socket(socket) -> None:
            if is_loopback(socket.url):
                socket.connect_to_server()
            else:
                view.outside.append(socket.url)
                socket.close()

        def record_error(response) -> None:
            if response.status >= 400:
                view.errors.append(f"{response.status} {response.request.method} {response.url}")

        page.on("response", record_error)
        context.route("**/*", guard)
        context.route_web_socket(re.compile(".*"), guard_socket)  # the UI's event stream is a websocket
        try:
            yield view
            assert not view.outside, f"the UI tried to reach outside this machine: {view.outside}"
        except BaseException:
            print(f"screenshot of the failure: {view.shot('failure')}")
            print(
                "failed requests:",
                view.errors or "none",
                "| blocked outside requests:",
                view.outside or "none",
            )
            raise
        finally:
            chromium.close()
