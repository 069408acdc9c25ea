"""The page with a reference photo gallery: neighbours as thumbnails (served from --photos-root) and as
pins on the map, in a real headless browser (skipped as tests/serve/test_web_browser.py's tests are)."""

from __future__ import annotations

import shutil

import pytest

from geoindex.train.synthetic import write_photos
from tests.helpers.web import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, need_built_page, running, skip_or_fail


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from geoindex.cli.build import main as build
    from geoindex.serve.app import create_app
    from geoindex.serve.settings import ServeSettings

    root = tmp_path_factory.mktemp("web-photos")
    csv = write_photos(root / "photos", 12, seed=3)
    assert build(["--resolution", "1", "--factory", "Flat", "--out", str(root / "cells"), "--no-progress", "-q"]) == 0
    assert build(["--photos", str(csv), "--clip-model", "tiny-test", "--out", str(root / "ref"), "--no-progress",
                  "-q"]) == 0
    app = create_app(ServeSettings(index=str(root / "cells"), clip_model="tiny-test", photos=str(root / "ref"),
                                   photos_root=str(root / "photos")))
    with running(app, start_timeout_s=60) as url:
        yield url, root


@pytest.mark.slow
@pytest.mark.browser
def test_neighbours_as_thumbnails_and_pins(server):
    if not CHROMIUM.exists():
        skip_or_fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("playwright is missing: pip install -e '.[dev]'")
    need_built_page()
    url, root = server
    query = root / "query.png"
    shutil.copy(root / "photos" / "000004.png", query)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url + "/")
        page.wait_for_selector("body[data-ready=true]")
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        page.set_input_files("#files", str(query))
        page.wait_for_selector("#result-list button[data-result]", timeout=120_000)  # CLIP on a shared CPU
        assert not errors and page.locator("#error").is_hidden(), (errors, page.inner_text("#error"))
        page.wait_for_selector("#neighbours figure.neighbour")
        figures = page.locator("#neighbours figure.neighbour")
        assert figures.count() == 10
        first = figures.first
        assert first.get_attribute("data-photo") == "4"
        page.wait_for_function("() => document.querySelector('#neighbours img').naturalWidth > 0")
        assert page.evaluate("() => document.querySelector('#neighbours img').naturalWidth") == 64
        assert page.locator("#map path.geoindex-photo").count() == 10
        assert not errors, errors
        browser.close()
