"""The web page served at ``/`` from the build of ``web/`` (without a browser: the routes, the CSP,
the tiles setting, the 503 before the page is built). The page in a real browser is
tests/serve/test_web_browser.py (marker ``browser``).

The tests skip when the built page is absent, unless GEOINDEX_REQUIRE_BROWSER=1 (CI sets it), which
turns those skips into failures.
"""

import re
from dataclasses import replace

from fastapi.testclient import TestClient

import geoindex.serve.web as serve_web
from geoindex.serve.app import create_app
from tests.helpers.web import need_built_page


# -- without a browser ---------------------------------------------------------------------------
def test_page_and_static_files_served(app):
    need_built_page()
    client = TestClient(app)  # no lifespan: the engine stays open for the other tests
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    html = r.text
    refs = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
    assert {"/static/app.js", "/static/style.css", "/static/vendor/leaflet.js", "/static/vendor/h3-js.umd.js",
            "/static/vendor/topojson-client.min.js"} <= set(refs)
    assert "//" not in "".join(re.findall(r'(?:src|href)="([^"]+)"', html))  # nothing from another host
    for ref in refs:
        r = client.get(ref)
        assert r.status_code == 200, ref
        kind = "javascript" if ref.endswith(".js") else "css" if ref.endswith(".css") else ""
        assert kind in r.headers["content-type"], (ref, r.headers["content-type"])
    topo = client.get("/static/vendor/countries-50m.json").json()
    assert topo["type"] == "Topology" and len(topo["objects"]["countries"]["geometries"]) > 200
    assert client.get("/config.json").json() == {
        "tiles": None, "max_top_k": 100, "max_images": 16, "max_request_bytes": 64 * 2**20,
        "max_decoded_bytes": 2**30, "max_pixels": 64_000_000, "images": True, "texts": True, "embeddings": True, "photos": False, "reason": None}
    missing = client.get("/static/nope.js")
    assert missing.status_code == 404 and missing.json()["error"]["status"] == 404
    paths = client.get("/openapi.json").json()["paths"]
    assert not any(p == "/" or p.startswith(("/static", "/config")) for p in paths)


def test_tiles_setting_reaches_the_page(app, settings):
    need_built_page()
    tiles = "https://{s}.tile.example.org/{z}/{x}/{y}.png"
    client = TestClient(create_app(replace(settings, tiles=tiles), engine=app.state.engine))
    assert client.get("/config.json").json()["tiles"] == tiles
    csp = client.get("/").headers["content-security-policy"]
    assert "img-src 'self' data: blob: https://*.tile.example.org;" in csp and "connect-src 'self';" in csp
    assert serve_web.tile_source("http://localhost:8080/t/{z}/{x}/{y}.png") == "http://localhost:8080"
    assert serve_web.tile_source("https://{server}.example/{z}/{x}/{y}") == "https:"
    assert serve_web.tile_source("file:///tiles/{z}/{x}/{y}.png") == ""


def test_unbuilt_page_answers_503_and_the_api_still_works(app, settings, tmp_path, monkeypatch):
    monkeypatch.setattr(serve_web, "STATIC_DIR", tmp_path / "static")
    client = TestClient(create_app(settings, engine=app.state.engine))
    for path in ("/", "/static/app.js"):
        r = client.get(path)
        assert r.status_code == 503, path
        err = r.json()["error"]
        assert err["type"] == "PageNotBuilt" and "npm ci && npm run build" in err["message"]
    assert client.get("/healthz").status_code == 200
    assert client.get("/v1/index").status_code == 200
