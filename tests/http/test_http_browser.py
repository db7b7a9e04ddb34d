"""The listing page in a real browser: Debian's chromium, headless, driven by selenium.

Walk into a folder, download a file and compare its bytes, upload one through the form (with
JavaScript, by drop-in PUT; without it, by the plain form), see a hostile name shown as text with
no script run, and see a wrong token refused where the right one opens the page.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from sockkit.testing import running
from tests.http.browser import available, chromium

pytestmark = pytest.mark.skipif(not available(), reason="chromium and chromedriver not installed "
                                                         "(Debian packages chromium, chromium-driver)")
HOSTILE = '<img src=x onerror="window.pwned=1">.txt'


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "shared"
    (root / "photos").mkdir(parents=True)
    (root / "notes.txt").write_bytes(b"remember the milk\n")
    (root / "photos" / "cat.bin").write_bytes(os.urandom(300_000))
    (root / HOSTILE).write_bytes(b"harmless\n")
    return root


def wait_for(check, timeout: float = 20.0):
    """Poll ``check`` (a page condition, not a timing guess) until it holds or ``timeout`` passes."""
    from selenium.common.exceptions import StaleElementReferenceException

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
        except StaleElementReferenceException:  # the page was replaced while we read it: look again
            result = None
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError("the browser never got there")


def test_walk_download_and_a_hostile_name(tree, tmp_path):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with running("getfile", "--root", str(tree), "--port", "0") as server, chromium(str(downloads)) as browser:
        browser.get(f"http://127.0.0.1:{server.port}/")
        names = [a.text for a in browser.find_elements("css selector", "td.n a.f")]
        assert names == ["photos/", HOSTILE, "notes.txt"]  # folders first; the hostile name is text
        assert browser.execute_script("return window.pwned") is None  # its onerror never ran
        browser.find_element("link text", "photos/").click()
        wait_for(lambda: browser.current_url.endswith("/photos/"))
        assert "photos" in browser.find_element("tag name", "h1").text
        browser.find_element("css selector", 'a.g[href="cat.bin?dl"]').click()
        target = downloads / "cat.bin"
        wait_for(lambda: target.exists() and target.stat().st_size == 300_000)
        assert target.read_bytes() == (tree / "photos" / "cat.bin").read_bytes()


@pytest.mark.parametrize("javascript", [True, False], ids=["script", "no-script"])
def test_upload_through_the_form(tree, tmp_path, javascript):
    upload = tmp_path / "report.pdf"
    upload.write_bytes(os.urandom(200_000))
    with running("getfile", "--root", str(tree), "--port", "0", "--allow-upload") as server, \
            chromium(javascript=javascript) as browser:
        browser.get(f"http://127.0.0.1:{server.port}/photos/")
        browser.find_element("css selector", "input[type=file]").send_keys(str(upload))
        browser.find_element("css selector", "#upload button").click()
        wait_for(lambda: "report.pdf" in [a.text for a in browser.find_elements("css selector", "td.n a.f")])
        assert (tree / "photos" / "report.pdf").read_bytes() == upload.read_bytes()
        assert sorted(p.name for p in (tree / "photos").iterdir()) == ["cat.bin", "report.pdf"]


def test_a_wrong_token_is_refused_and_the_right_one_opens_the_page(tree):
    with running("getfile", "--root", str(tree), "--port", "0", "--token", "s3cret") as server, \
            chromium() as browser:
        port = server.port
        browser.get(f"http://anyone:wrong@127.0.0.1:{port}/")
        assert "notes.txt" not in browser.page_source
        server.wait_for_log("wrong token")
        browser.get(f"http://anyone:s3cret@127.0.0.1:{port}/photos/")
        assert "cat.bin" in browser.page_source
        browser.get(f"http://127.0.0.1:{port}/")  # the browser now answers the challenge itself
        assert "notes.txt" in browser.page_source


def save_screenshot(out: Path) -> None:
    """docs/img/http-listing.png: the listing page of a small demo folder (make screenshots)."""
    import tempfile
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "shared"
        (root / "photos").mkdir(parents=True)
        (root / "music").mkdir()
        for name, size in [("report.pdf", 1_234_567), ("notes.txt", 4_210), ("backup.tar.gz", 73_400_320),
                           ("slides.odp", 2_310_000)]:
            with open(root / name, "wb") as file:
                file.truncate(size)
        with running("getfile", "--root", str(root), "--port", "0", "--allow-upload") as server, \
                chromium() as browser:
            browser.set_window_size(900, 640)
            browser.get(f"http://127.0.0.1:{server.port}/")
            browser.save_screenshot(str(out))


if __name__ == "__main__":
    import sys
    save_screenshot(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img/http-listing.png"))
