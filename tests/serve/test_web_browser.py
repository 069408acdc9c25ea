"""The web page driven in a real headless browser (Debian's chromium, through Playwright) against a
running server with the tiny test CLIP model. Marker ``browser``: ``pytest -m browser``.

These tests skip when /usr/bin/chromium, playwright or the built page is absent, unless
GEOINDEX_REQUIRE_BROWSER=1 (CI sets it), which turns those skips into failures. Screenshots are
kept in ``test-artifacts/``: web-radius.png is docs/web-page.png, web-batch.png docs/web-batch.png.
"""

import base64
import io
import json
import math
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.helpers import REPO
from tests.helpers.web import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, need_built_page, running, skip_or_fail

pytestmark = pytest.mark.browser

ARTIFACTS = REPO / "test-artifacts"
EARTH_RADIUS_KM = 6371.0088


def jpeg(color, w=160, h=120) -> bytes:
    img = Image.new("RGB", (w, h), color)
    for x in range(0, w, 8):  # some structure, so two photos embed apart
        for y in range(h // 2, h):
            img.putpixel((x, y), (255 - color[0], 255 - color[1], 255 - color[2]))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def haversine_km(a, b) -> float:
    (lat1, lng1), (lat2, lng2) = (map(math.radians, p) for p in (a, b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lng2 - lng1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


# -- in a browser ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(app):
    with running(app) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        skip_or_fail(f"{CHROMIUM} is missing: apt-get install -y chromium (never a downloaded browser)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("playwright is missing: pip install -e '.[dev]'")
    need_built_page()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    """The page, loaded and ready (basemap drawn); fails the test on any script error or any request
    to another origin than the server's (the page works offline: no CDN)."""
    context = browser.new_context(viewport={"width": 1360, "height": 1000}, accept_downloads=True)
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    errors, foreign = [], []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: m.type == "error" and errors.append(m.text))
    pg.on("request", lambda r: r.url.startswith((server + "/", "data:", "blob:")) or foreign.append(r.url))
    pg.expected_errors = []  # a test that provokes an error lists its text here
    pg.goto(server + "/")
    pg.wait_for_selector("body[data-ready=true]")
    assert pg.get_attribute("#map", "data-basemap") == "ready"
    yield pg
    unexpected = [e for e in errors if not any(x in e for x in pg.expected_errors)]
    context.close()
    assert not unexpected, unexpected
    assert not foreign, f"requests to other origins: {foreign}"


def table_rows(pg) -> list[dict]:
    return pg.eval_on_selector_all("#results-table tbody tr[data-cell]", """rows => rows.map(tr => ({
        cell: tr.dataset.cell, probability: Number(tr.dataset.probability), rank: Number(tr.dataset.rank),
        lat: Number(tr.dataset.lat), lng: Number(tr.dataset.lng),
        place: tr.cells[1].textContent, admin1: tr.cells[2].textContent, country: tr.cells[3].textContent,
        from_top: Number(tr.querySelector('.from-top').dataset.km),
        to_true: tr.querySelector('.to-true')?.textContent ?? null}))""")


def assert_table_matches(pg, result: dict):
    """The table of the selected result holds the API's predictions: cells, probabilities (the same
    floats), names, in order; distances from #1 as the haversine of the API's coordinates."""
    rows = table_rows(pg)
    preds = result["predictions"]
    assert [r["cell"] for r in rows] == [p["cell_h3"] for p in preds]
    assert [r["probability"] for r in rows] == [p["probability"] for p in preds]
    assert [(r["place"], r["admin1"], r["country"]) for r in rows] == [
        (p["place"] or "", p["admin1"] or "", p["country"] or "") for p in preds]
    top = (preds[0]["lat"], preds[0]["lng"])
    for r, p in zip(rows, preds):
        assert r["from_top"] == pytest.approx(haversine_km(top, (p["lat"], p["lng"])), rel=1e-9, abs=1e-6)
    hexes = pg.eval_on_selector_all("#map path.geoindex-cell", """ps => ps.map(p => ({
        cell: p.dataset.cell, rank: Number(p.dataset.rank), fill: p.getAttribute('fill')}))""")
    assert len(hexes) == len(preds)  # one path per cell: antimeridian copies are parts of the same path
    assert sorted(h["cell"] for h in hexes) == sorted(p["cell_h3"] for p in preds)
    fills = {h["rank"]: h["fill"] for h in hexes}
    assert fills[1] == "rgb(253, 231, 37)"  # the most likely cell takes the top of the scale (viridis yellow)
    if len(preds) > 1 and preds[-1]["probability"] < 0.9 * preds[0]["probability"]:
        assert fills[len(preds)] != fills[1]


def latlng_to_page_xy(pg, lat, lng):
    """Where (lat, lng) is on the page: the map is moved there first, without animation."""
    return pg.evaluate("""([lat, lng]) => {
        const m = window.geoindex.view.map;
        if (!m.getBounds().pad(-0.1).contains([lat, lng])) m.setView([lat, lng], m.getZoom(), {animate: false});
        const p = m.latLngToContainerPoint([lat, lng]);
        const box = m.getContainer().getBoundingClientRect();
        return [box.left + p.x, box.top + p.y]; }""", [lat, lng])


def test_photos_on_the_map_and_in_the_table(page, server):
    photos = [("harbour.jpg", jpeg((30, 120, 200))), ("desert.jpg", jpeg((210, 170, 90)))]
    page.fill("#top-k", "4")
    page.fill("#confidence", "0.9")
    with page.expect_response(lambda r: r.url.startswith(server + "/v1/locate") and r.request.method == "POST") as answer:
        page.set_input_files("#files", [{"name": n, "mimeType": "image/jpeg", "buffer": b} for n, b in photos])
    assert answer.value.status == 200
    page.wait_for_selector("#results-table tbody tr[data-cell]")

    # the same photos and fields posted directly
    direct = httpx.post(server + "/v1/locate", files=[("images", (n, b, "image/jpeg")) for n, b in photos],
                        data={"top_k": "4", "confidence": "0.9"}, timeout=60)
    assert direct.status_code == 200, direct.text
    expected = direct.json()["results"]
    assert len(expected) == 2 and all(len(r["predictions"]) == 4 for r in expected)

    assert page.locator("#result-list button[data-result]").count() == 2
    assert_table_matches(page, expected[0])
    assert page.locator("#map path.geoindex-region").count() >= 1  # the 90% confidence region
    assert page.locator("#legend").is_visible()
    assert "confidence region" in page.inner_text("#summary")
    page.click('#result-list button[data-result="1"]')
    assert_table_matches(page, expected[1])

    # a click on the map marks the true location; the table gains the distance to it
    top = expected[1]["predictions"][0]
    aim = (max(-60.0, min(60.0, top["lat"] + 4)), top["lng"] + (4 if top["lng"] < 170 else -4))
    page.mouse.click(*latlng_to_page_xy(page, *aim))
    marker = page.locator("#map path.geoindex-true")
    marker.wait_for()
    true_latlng = (float(marker.get_attribute("data-lat")), float(marker.get_attribute("data-lng")))
    assert haversine_km(true_latlng, aim) < 150  # a pixel is up to tens of km at the zooms used
    assert page.locator("th.true-col").is_visible()
    for row, p in zip(table_rows(page), expected[1]["predictions"]):
        d = haversine_km(true_latlng, (p["lat"], p["lng"]))
        assert float(row["to_true"].replace(",", "")) == pytest.approx(d, abs=0.5 if d >= 10 else 0.05)
    assert "from the true location" in page.inner_text("#summary")

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "web-page.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"\nscreenshot: {shot}")

    # downloads: the JSON as the API answered it (int64 cell ids intact), the GeoJSON of the same query
    with page.expect_download() as download:
        page.click("#download-json")
    assert json.loads(Path(download.value.path()).read_text()) == direct.json()
    with page.expect_download() as download:
        page.click("#download-geojson")
    assert download.value.suggested_filename.endswith(".geojson")
    fc = json.loads(Path(download.value.path()).read_text())
    points = [f for f in fc["features"] if f["geometry"]["type"] == "Point"]
    assert [f["properties"]["cell_h3"] for f in points] == [p["cell_h3"] for r in expected for p in r["predictions"]]
    assert sum(f["properties"].get("kind") == "confidence_region" for f in fc["features"]) == 2

    page.click("#clear-true")
    assert page.locator("#map path.geoindex-true").count() == 0 and not page.locator("th.true-col").is_visible()


def test_dropped_photo(page, server):
    """A photo dropped on the drop zone is located like a picked one."""
    photo = jpeg((90, 160, 60))
    drop = page.evaluate_handle("""([b64, name]) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], name, {type: "image/jpeg"}));
        return dt; }""", [base64.b64encode(photo).decode(), "field.jpg"])
    page.fill("#top-k", "2")
    with page.expect_response(lambda r: r.url.startswith(server + "/v1/locate")) as answer:
        page.dispatch_event("#drop", "drop", {"dataTransfer": drop})
    assert answer.value.status == 200
    page.wait_for_selector("#results-table tbody tr[data-cell]")
    expected = httpx.post(server + "/v1/locate", files=[("images", ("field.jpg", photo, "image/jpeg"))],
                          data={"top_k": "2", "confidence": "0.9"}, timeout=60).json()["results"][0]
    assert_table_matches(page, expected)
    assert page.inner_text("#result-list").startswith("field.jpg")


def test_text_query_country_and_box_filters(page, server):
    page.fill("#top-k", "3")
    page.fill("#country", "fr")
    text = "a beach with palm trees"
    with page.expect_response(lambda r: r.url.startswith(server + "/v1/locate/text")) as answer:
        page.fill("#text", text)
        page.click("#text-go")
    assert answer.value.status == 200
    body = json.loads(answer.value.request.post_data)
    assert body == {"texts": [text], "top_k": 3, "confidence": 0.9, "country": ["FR"]}
    page.wait_for_selector("#results-table tbody tr[data-cell]")
    expected = httpx.post(server + "/v1/locate/text", json=body, timeout=60).json()["results"][0]
    assert {p["country"] for p in expected["predictions"]} == {"FR"}
    assert_table_matches(page, expected)
    assert page.locator("#map path.geoindex-region").count() >= 1
    assert "Note:" not in page.inner_text("#summary")

    # a filter country with no cells in this index (the Vatican, at res 2): the answer's warning is
    # shown in the summary, the answer comes from France
    with page.expect_response(lambda r: r.url.startswith(server + "/v1/locate/text")) as answer:
        page.fill("#country", "fr, va")
        page.press("#country", "Enter")
    assert json.loads(answer.value.request.post_data)["country"] == ["FR", "VA"]
    [warning] = answer.value.json()["results"][0]["warnings"]
    assert "VA" in warning and "FR" in warning
    page.wait_for_function("w => document.getElementById('summary').textContent.includes(w)", arg=warning)
    assert page.locator("#summary").is_visible() and f"Note: {warning}" in page.inner_text("#summary")
    with page.expect_response(lambda r: r.url.startswith(server + "/v1/locate/text")):
        page.fill("#country", "fr")
        page.press("#country", "Enter")
    page.wait_for_function("() => !document.getElementById('summary').textContent.includes('Note:')")

    # no confidence: no region (a change of a control re-runs the query)
    with page.expect_response(lambda r: r.url.startswith(server + "/v1/locate/text")) as answer:
        page.fill("#confidence", "")
        page.press("#confidence", "Enter")
    assert "confidence" not in json.loads(answer.value.request.post_data)
    page.wait_for_function("() => document.querySelectorAll('#map path.geoindex-region').length === 0")

    # a box dragged over western Europe becomes the bbox filter
    with page.expect_response(lambda r: r.url.startswith(server + "/v1/locate/text")):
        page.fill("#country", "")
        page.press("#country", "Enter")
    page.click("#draw-box")
    page.evaluate("() => { window.geoindex.view.map.setView([45, 5], 3, {animate: false}); }")
    (x1, y1), (x2, y2) = latlng_to_page_xy(page, 55, -8), latlng_to_page_xy(page, 38, 20)
    with page.expect_response(lambda r: r.url.startswith(server + "/v1/locate/text")) as answer:
        page.mouse.move(x1, y1)
        page.mouse.down()
        page.mouse.move(x2, y2, steps=6)
        page.mouse.up()
    body = json.loads(answer.value.request.post_data)
    [[w, s, e, n]] = body["bbox"]
    assert "country" not in body and abs(w + 8) < 1 and abs(s - 38) < 1 and abs(e - 20) < 1 and abs(n - 55) < 1
    assert page.locator("#map path.geoindex-bbox").count() == 1
    page.wait_for_function("() => document.querySelectorAll('#results-table tbody tr[data-cell]').length === 3")
    expected = httpx.post(server + "/v1/locate/text", json=body, timeout=60).json()["results"][0]
    assert all(s <= p["lat"] <= n and w <= p["lng"] <= e for p in expected["predictions"])
    assert_table_matches(page, expected)
    assert page.locator("#map path.geoindex-true").count() == 0  # ending a drag is not a click on the map

    # a refused filter shows the API's message
    page.fill("#country", "ZZ")
    page.expected_errors.append("422")
    with page.expect_response(lambda r: r.url.startswith(server + "/v1/locate/text")) as answer:
        page.press("#country", "Enter")
    assert answer.value.status == 422
    page.wait_for_selector("#error:not([hidden])")
    assert "422" in page.inner_text("#error")


def test_lat_lng_query(page, server):
    """"lat, lng" in the text box: the location encoder's embedding of the point, located; the point
    becomes the true location. Without the embed route the page shows the 404."""
    has_embed = "/v1/embed/locations" in httpx.get(server + "/openapi.json").json()["paths"]
    page.fill("#top-k", "3")
    page.fill("#text", "48.8584, 2.2945")
    if not has_embed:
        page.expected_errors.append("404")
    with page.expect_response(lambda r: r.url.startswith(server + "/v1/embed/locations")) as answer:
        page.click("#text-go")
    assert page.locator("#map path.geoindex-true").count() == 1
    if not has_embed:
        assert answer.value.status == 404
        page.wait_for_selector("#error:not([hidden])")
        assert "404" in page.inner_text("#error")
        return
    assert answer.value.status == 200
    page.wait_for_selector("#results-table tbody tr[data-cell]")
    embedding = httpx.post(server + "/v1/embed/locations", json={"coordinates": [[48.8584, 2.2945]]}).json()
    expected = httpx.post(server + "/v1/locate/embedding", timeout=60,
                          json={"embeddings": embedding["embeddings"], "top_k": 3, "confidence": 0.9}).json()
    assert_table_matches(page, expected["results"][0])
    assert page.locator("th.true-col").is_visible()


def test_rings_across_the_antimeridian_and_over_the_poles(page):
    """The page's geometry (web/src/geo.js), run in the browser: an H3 cell across the antimeridian
    is drawn as two compact copies, one on each side, never one ring smeared across the map; a polar
    cell is closed over its pole; a box dragged across the antimeridian becomes two boxes."""
    import h3

    fiji, north, south = (h3.latlng_to_cell(lat, lng, 2) for lat, lng in ((-17, 180), (90, 0), (-90, 0)))
    out = page.evaluate("""async ([fiji, north, south]) => {
        const geo = await import('/static/geo.js');
        const rings = (c) => geo.ringToPolygons(h3.cellToBoundary(c));
        return {fiji: rings(fiji), north: rings(north), south: rings(south),
                box: geo.boxToBboxes([-10, 170], [-25, 190]), plain: geo.boxToBboxes([50, 2], [40, -5]),
                wrapped: geo.boxToBboxes([50, 362], [40, 355])};
    }""", [fiji, north, south])
    lngs = [[p[1] for p in ring] for ring in out["fiji"]]
    assert len(lngs) == 2 and all(max(r) - min(r) < 10 for r in lngs)
    assert any(max(r) > 180 for r in lngs) and any(min(r) < -180 for r in lngs)
    for name, pole in (("north", 90), ("south", -90)):
        rings = out[name]
        assert len(rings) == 2 and all(any(p[0] == pole for p in ring) for ring in rings)
        spans = [max(p[1] for p in ring) - min(p[1] for p in ring) for ring in rings]
        assert spans == pytest.approx([360, 360])
        covered = (min(p[1] for ring in rings for p in ring), max(p[1] for ring in rings for p in ring))
        assert covered[0] <= -180 and covered[1] >= 180
    assert out["box"] == [[170, -25, 180, -10], [-180, -25, -170, -10]]
    assert out["plain"] == [[-5, 40, 2, 50]] and out["wrapped"] == [[-5, 40, 2, 50]]


def test_tile_layer_when_configured(browser, server):
    """--tiles URL: the page adds the tile layer (tiles answered here by the test, offline)."""
    tile = io.BytesIO()
    Image.new("RGB", (256, 256), (200, 220, 200)).save(tile, "PNG")
    context = browser.new_context(viewport={"width": 1000, "height": 800})
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    requested = []
    pg.route("**/config.json", lambda route: route.fulfill(json={
        "tiles": server + "/test-tiles/{z}/{x}/{y}.png", "max_top_k": 100, "max_images": 16}))
    pg.route("**/test-tiles/**", lambda route: (requested.append(route.request.url),
                                                route.fulfill(body=tile.getvalue(), content_type="image/png")))
    pg.goto(server + "/")
    pg.wait_for_selector("body[data-ready=true]")
    pg.wait_for_selector(".geoindex-tiles img.leaflet-tile-loaded")
    context.close()
    assert requested and all(u.startswith(server + "/test-tiles/") and u.endswith(".png") for u in requested)


def jpeg_with_gps(color, lat: float, lng: float) -> bytes:
    """A photo whose EXIF says where it was taken (GPS IFD: degrees, minutes, seconds; N/S, E/W)."""
    from PIL.TiffImagePlugin import IFDRational

    def dms(v):
        v = abs(v)
        d, m = int(v), int((v - int(v)) * 60)
        return (IFDRational(d, 1), IFDRational(m, 1), IFDRational(round(((v - d) * 60 - m) * 60 * 100), 100))

    exif = Image.Exif()
    exif[0x8825] = {1: "N" if lat >= 0 else "S", 2: dms(lat), 3: "E" if lng >= 0 else "W", 4: dms(lng)}
    img = Image.open(io.BytesIO(jpeg(color)))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, exif=exif.tobytes())
    return buf.getvalue()


def test_exif_position_is_the_true_location_and_refine_toggle(page, server):
    """A photo with EXIF GPS: the answer carries it, the page marks it as the photo's true location
    with the distance to the best guess; a photo without keeps no marker. The refine toggle sends
    refine and shows the refined answer."""
    tower = (48.8584, 2.2945)
    photos = [("paris.jpg", jpeg_with_gps((40, 90, 160), *tower)), ("plain.jpg", jpeg((160, 40, 90)))]
    page.fill("#top-k", "3")
    with page.expect_response(lambda r: r.url.startswith(server + "/v1/locate") and r.request.method == "POST") as answer:
        page.set_input_files("#files", [{"name": n, "mimeType": "image/jpeg", "buffer": b} for n, b in photos])
    paris, plain = answer.value.json()["results"]
    assert (paris["exif_lat"], paris["exif_lng"]) == pytest.approx(tower, abs=1e-6) and plain["exif_lat"] is None
    marker = page.locator("#map path.geoindex-true")
    marker.wait_for()
    assert (float(marker.get_attribute("data-lat")), float(marker.get_attribute("data-lng"))) == pytest.approx(tower)
    km = haversine_km(tower, (paris["predictions"][0]["lat"], paris["predictions"][0]["lng"]))
    assert paris["km_from_exif"] == pytest.approx(km, rel=1e-6)
    summary = page.inner_text("#summary")
    assert "from the photo's EXIF position" in summary
    assert f"{km:,.0f}" in summary.replace("\u202f", ",") or f"{km:,.1f}" in summary
    for row, p in zip(table_rows(page), paris["predictions"]):
        d = haversine_km(tower, (p["lat"], p["lng"]))
        assert float(row["to_true"].replace(",", "")) == pytest.approx(d, abs=0.5 if d >= 10 else 0.05)
    page.click('#result-list button[data-result="1"]')  # no EXIF: no true location
    page.wait_for_function("() => !document.querySelector('#map path.geoindex-true')")
    assert not page.locator("th.true-col").is_visible()
    page.click('#result-list button[data-result="0"]')
    marker.wait_for()

    with page.expect_response(lambda r: r.url.startswith(server + "/v1/locate") and r.request.method == "POST") as again:
        page.check("#refine")
    assert again.value.status == 200
    refined = again.value.json()["results"][0]
    direct = httpx.post(server + "/v1/locate", files=[("images", (n, b, "image/jpeg")) for n, b in photos[:1]],
                        data={"top_k": "3", "confidence": "0.9", "refine": "4"}, timeout=60).json()["results"][0]
    # the page sent refine=4: the same answer (to float noise: the batches the photo ran in differ)
    assert [p["cell"] for p in refined["predictions"]] == [p["cell"] for p in direct["predictions"]]
    assert [x for p in refined["predictions"] for x in (p["lat"], p["lng"])] == pytest.approx(
        [x for p in direct["predictions"] for x in (p["lat"], p["lng"])], abs=0.01)
    # what the request was built from: the page stores it once it has read the response, after Playwright has it
    page.wait_for_function("() => window.geoindex.state.filters.refine === 4")
    page.wait_for_function("(lat) => Number(document.querySelector('#results-table tbody tr[data-cell]')"
                           ".dataset.lat) === lat", arg=refined["predictions"][0]["lat"])
    assert_table_matches(page, refined)
    with page.expect_response(lambda r: r.url.startswith(server + "/v1/locate") and r.request.method == "POST"):
        page.uncheck("#refine")
    page.wait_for_function("() => window.geoindex.state.filters.refine === null")  # stored once the answer is read


# -- state: what a query leaves behind (issue 35) ---------------------------------------------------
def wait_answer(pg):
    pg.wait_for_selector("#results-table tbody tr[data-cell]")
    pg.wait_for_function("() => document.body.dataset.state === 'idle'")


def test_the_map_fits_the_answer_and_links_to_openstreetmap(page, server):
    """After a lat, lng query the view holds the top prediction and spans under 10x the confidence
    region's extent (the res-2 cell nearest Paris, whose centre the query is: a one-cell region, the
    next cells in France and Spain); each row links to its point on OpenStreetMap; the download's
    name keeps the coordinates' dots; "1 cell", not "1 cells"; the radius line and circle follow
    radius_km when the answer carries one."""
    page.fill("#top-k", "3")
    page.fill("#confidence", "0.9")
    page.fill("#text", "48.32093, 2.91118")  # the centre of res-2 cell 821fb7fffffffff
    with page.expect_response(lambda r: r.url.startswith(server + "/v1/locate/embedding")) as answer:
        page.click("#text-go")
    result = answer.value.json()["results"][0]
    wait_answer(page)
    top = result["predictions"][0]
    s, w, n, e = page.evaluate("""() => { const b = window.geoindex.view.map.getBounds();
        return [b.getSouth(), b.getWest(), b.getNorth(), b.getEast()]; }""")
    region = result["confidence_region"]["geometry"]
    polygons = region["coordinates"] if region["type"] == "MultiPolygon" else [region["coordinates"]]
    lngs, lats = zip(*(pt for poly in polygons for ring in poly for pt in ring))
    assert s <= top["lat"] <= n and w <= top["lng"] <= e
    assert n - s < 10 * (max(lats) - min(lats)) and e - w < 10 * (max(lngs) - min(lngs)), ((s, w, n, e), lats, lngs)
    links = page.locator("#results-table tbody tr[data-cell] a.osm")
    assert links.count() == 3
    href = links.first.get_attribute("href")
    assert href.startswith("https://www.openstreetmap.org/?mlat=") and f"mlat={top['lat']:.5f}&mlon={top['lng']:.5f}" in href
    assert links.first.get_attribute("target") == "_blank"
    summary = page.inner_text("#summary")
    cells = len(result["confidence_region"]["properties"]["cells"])
    assert f"confidence region: {cells} cell{'s' if cells != 1 else ''} (" in summary and "1 cells" not in summary
    # the radius circle and the "90% within X km" line, from the answer's radius_km / radius_confidence
    radius, share = result["radius_km"], result["radius_confidence"]
    assert radius > 0 and share == pytest.approx(0.9)
    assert page.locator("#map path.geoindex-radius").count() == 1
    drawn = page.evaluate("""() => { const out = []; window.geoindex.view.map.eachLayer(l => {
        if (l.options?.className === "geoindex-radius") out.push([l.getRadius(), l.getLatLng().lat, l.getLatLng().lng]); });
        return out; }""")
    assert drawn == [[pytest.approx(radius * 1000), pytest.approx(top["lat"]), pytest.approx(top["lng"])]], drawn
    shown = f"{radius:.1f}" if radius < 10 else f"{int(radius + 0.5):,}"  # as the page rounds (half up)
    assert f"{round(share * 100)}% within {shown} km of the best guess" in summary, summary
    page.wait_for_function("() => [...document.querySelectorAll('.geoindex-place')].some(e => e.textContent === 'Paris')")
    with page.expect_download() as download:
        page.click("#download-json")
    assert download.value.suggested_filename == "geoindex-48.32093_2.91118.json"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-single.png"), full_page=True)


def test_a_few_cell_answer_with_its_radius_circle(page, server):
    """A point between res-2 cells in central France: a confidence region of a few cells, outlined,
    and the radius circle around the best guess; the screenshot is docs/web-page.png."""
    page.fill("#top-k", "5")
    page.fill("#confidence", "0.9")
    page.fill("#text", "47.0, 3.0")
    with page.expect_response(lambda r: r.url.startswith(server + "/v1/locate/embedding")) as answer:
        page.click("#text-go")
    result = answer.value.json()["results"][0]
    wait_answer(page)
    cells = len(result["confidence_region"]["properties"]["cells"])
    assert cells > 1 and page.locator("#map path.geoindex-region").count() >= 1
    assert page.locator("#map path.geoindex-radius").count() == 1
    assert f"{cells} cells" in page.inner_text("#summary") and "90% within" in page.inner_text("#summary")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-radius.png"), full_page=True)


def test_a_new_query_clears_the_last_one_unless_pinned(page, server):
    """A lat, lng query's point is its true location; the next (text) query drops it, its marker
    and the 'to true' column. A location pinned on the map stays across queries. Plurals: 1 result."""
    page.fill("#top-k", "2")
    page.fill("#text", "48.8584, 2.2945")
    page.click("#text-go")
    wait_answer(page)
    assert page.locator("#map path.geoindex-true").count() == 1 and page.locator("th.true-col").is_visible()
    assert "from the point you gave" in page.inner_text("#summary")
    assert page.inner_text("#status").startswith("1 result,")
    page.fill("#text", "a harbour with fishing boats")
    with page.expect_response(lambda r: r.url.startswith(server + "/v1/locate/text")):
        page.click("#text-go")
    page.wait_for_function("() => document.body.dataset.state === 'idle'")
    wait_answer(page)
    assert page.locator("#map path.geoindex-true").count() == 0
    assert not page.locator("th.true-col").is_visible()
    assert page.locator("td.to-true").count() == 0 and " km from " not in page.inner_text("#summary")

    page.mouse.click(*latlng_to_page_xy(page, 10.0, 20.0))  # a pin: the user's own true location
    page.locator("#map path.geoindex-true").wait_for()
    page.fill("#text", "snowy mountains above a lake")
    with page.expect_response(lambda r: r.url.startswith(server + "/v1/locate/text")):
        page.click("#text-go")
    wait_answer(page)
    page.wait_for_function("() => window.geoindex.state.query.text === 'snowy mountains above a lake'")
    assert page.locator("#map path.geoindex-true").count() == 1 and page.locator("th.true-col").is_visible()
    assert "from the true location" in page.inner_text("#summary")


def test_an_error_replaces_the_answer_and_bad_coordinates_are_never_sent(page, server):
    page.fill("#top-k", "2")
    page.fill("#text", "a harbour with fishing boats")
    page.click("#text-go")
    wait_answer(page)
    sent = []
    page.on("request", lambda r: "/v1/" in r.url and sent.append(r.url))
    page.fill("#text", "91, 500")
    page.click("#text-go")
    page.wait_for_selector("#error:not([hidden])")
    error = page.inner_text("#error")
    assert "latitude 91 is outside -90..90" in error and "longitude 500 is outside -180..180" in error
    assert sent == []  # refused on the page: never sent as a description
    page.fill("#country", "XX")  # no cells in this index: the server's 422
    page.expected_errors.append("422")
    page.fill("#text", "a harbour with fishing boats")
    with page.expect_response(lambda r: r.url.startswith(server + "/v1/locate/text")) as answer:
        page.click("#text-go")
    assert answer.value.status == 422
    page.wait_for_selector("#error:not([hidden])")
    assert "422" in page.inner_text("#error")
    assert page.locator("#results-table").is_hidden() and page.locator("#result-list li").count() == 0
    assert page.locator("#map path.geoindex-cell").count() == 0 and page.inner_text("#summary") == ""
    assert page.locator("#download-json").is_disabled()


@pytest.fixture(scope="module")
def coordinates_only_server(settings):
    from dataclasses import replace

    from geoindex.serve.app import create_app

    with running(create_app(replace(settings, embeddings_only=True))) as url:
        yield url


def test_inputs_the_server_cannot_answer_are_off_with_the_reason(browser, coordinates_only_server):
    """--embeddings-only: the photo drop and descriptions are off, the page says why; lat, lng works."""
    server = coordinates_only_server
    config = httpx.get(server + "/config.json").json()
    assert config["images"] is False and config["texts"] is False and "--embeddings-only" in config["reason"]
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    try:
        pg.goto(server + "/")
        pg.wait_for_selector("body[data-ready=true]")
        assert pg.locator("#files").is_disabled()
        assert pg.get_attribute("#drop", "aria-disabled") == "true"
        assert "--embeddings-only" in pg.inner_text("#capability-note")
        sent = []
        pg.on("request", lambda r: "/v1/locate" in r.url and sent.append(r.url))
        pg.fill("#text", "a harbour with fishing boats")
        pg.click("#text-go")
        pg.wait_for_selector("#error:not([hidden])")
        assert "descriptions" in pg.inner_text("#error") and sent == []
        pg.fill("#text", "48.8584, 2.2945")
        pg.click("#text-go")
        pg.wait_for_selector("#results-table tbody tr[data-cell]")
        assert pg.locator("#error").is_hidden()
    finally:
        context.close()


def test_a_batch_of_20_photos_yields_20_grid_items_and_a_20_row_csv(page, server):
    """20 photos, over the server's 16 a request: sent in two requests, 20 thumbnails in the grid,
    each with its best guess; a click shows one on the map; CSV, GeoJSON and KML of all 20."""
    import csv

    photos = [(f"batch-{i:02d}.jpg", jpeg(((i * 47) % 256, (i * 91) % 256, (i * 13) % 256))) for i in range(20)]
    posts = []
    page.on("request", lambda r: r.url.startswith(server + "/v1/locate") and r.method == "POST" and posts.append(r))
    page.set_input_files("#files", [{"name": n, "mimeType": "image/jpeg", "buffer": b} for n, b in photos])
    page.wait_for_function("() => document.querySelectorAll('#result-list button[data-result]').length === 20")
    page.wait_for_function("() => document.body.dataset.state === 'idle'")
    assert len(posts) == 2  # 16 + 4: the server's --max-images
    assert page.inner_text("#status").startswith("20 results,")
    labels = page.eval_on_selector_all("#result-list .label", "els => els.map(e => e.textContent)")
    assert labels == [n for n, _ in photos]
    assert page.locator("#result-list img").count() == 20
    page.click('#result-list button[data-result="17"]')
    page.wait_for_function("() => window.geoindex.state.selected === 17")
    expected = httpx.post(server + "/v1/locate", files=[("images", photos[17][:1] + (photos[17][1], "image/jpeg"))],
                          data={"top_k": "5", "confidence": "0.9"}, timeout=60).json()["results"][0]
    assert [r["cell"] for r in table_rows(page)] == [p["cell_h3"] for p in expected["predictions"]]
    # a radius of thousands of km is only the summary's line: on a flat map its circle is a false oval
    assert "% within" in page.inner_text("#summary")
    assert page.locator("#map path.geoindex-radius").count() == (1 if expected["radius_km"] <= 3000 else 0)

    with page.expect_download() as download:
        page.click("#export-csv")
    assert download.value.suggested_filename == "geoindex-20-photos.csv"
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert len(rows) == 20 and [r["label"] for r in rows] == labels
    assert rows[17]["cell_h3"] == expected["predictions"][0]["cell_h3"]
    assert float(rows[17]["lat"]) == pytest.approx(expected["predictions"][0]["lat"], abs=1e-9)
    with page.expect_download() as download:
        page.click("#export-geojson")
    assert len(json.loads(Path(download.value.path()).read_text())["features"]) == 20
    with page.expect_download() as download:
        page.click("#export-kml")
    assert Path(download.value.path()).read_text().count("<Placemark>") == 20
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-batch.png"), full_page=True)


def test_a_200_photo_batch_does_not_freeze_the_page(page, server):
    """200 photos: 13 requests of at most 16, 200 grid items, and the page stays responsive the
    whole time (a 50 ms heartbeat on the page's main thread never stalls for a second)."""
    photos = [{"name": f"p{i:03d}.jpg", "mimeType": "image/jpeg", "buffer": jpeg(((i * 37) % 256, (i * 11) % 256, 90),
                                                                                 w=96, h=72)} for i in range(200)]
    page.evaluate("""() => { window.__gaps = []; let last = performance.now();
        window.__beat = setInterval(() => { const now = performance.now(); window.__gaps.push(now - last); last = now; }, 50); }""")
    posts = []
    page.on("request", lambda r: r.url.startswith(server + "/v1/locate") and r.method == "POST" and posts.append(r))
    page.set_input_files("#files", photos)
    page.wait_for_function("() => document.querySelectorAll('#result-list button[data-result]').length === 200",
                           timeout=120_000)
    worst = page.evaluate("() => { clearInterval(window.__beat); return Math.max(...window.__gaps); }")
    assert len(posts) == 13
    assert page.inner_text("#status").startswith("200 results,")
    print(f"200-photo batch: longest main-thread stall {worst:.0f} ms")
    assert worst < 1000, f"the page froze for {worst:.0f} ms"


def image_bytes(color, fmt: str, w: int, h: int) -> bytes:
    img = Image.new("RGB", (w, h), color)
    for x in range(0, w, 16):  # some structure, so the photos embed apart
        for y in range(h // 2, h, 4):
            img.putpixel((x, y), (255 - color[0], 255 - color[1], 255 - color[2]))
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


PIXELS = 640 * 480 * 4  # what one 640x480 PNG or TIFF decodes to on the server


@pytest.fixture(scope="module")
def small_decode_server(settings):
    from dataclasses import replace

    from geoindex.serve.app import create_app

    with running(create_app(replace(settings, max_decoded_bytes=int(3.5 * PIXELS)))) as url:
        yield url


def test_a_batch_over_the_decoded_bytes_limit_is_split_and_no_photo_is_lost(browser, small_decode_server):
    """--max-decoded-bytes 3.5 photos' worth: the page budgets the PNGs from their headers (3 a
    request, never refused); TIFFs, whose size the page does not read, go with them, are refused
    (413) and sent again in halves; a photo over the limit alone is its own error entry. Every photo
    has an entry, in order, and the others are located exactly as sent one by one."""
    server = small_decode_server
    config = httpx.get(server + "/config.json").json()
    assert config["max_decoded_bytes"] == int(3.5 * PIXELS) and config["max_pixels"] > 0
    photos = [(f"png-{i}.png", "image/png", image_bytes((i * 40, 90, 200 - i * 20), "PNG", 640, 480)) for i in range(8)]
    photos += [(f"tif-{i}.tif", "image/tiff", image_bytes((200, i * 50, 30), "TIFF", 640, 480)) for i in range(4)]
    photos += [("huge.png", "image/png", image_bytes((10, 200, 10), "PNG", 1400, 1000))]  # 5.6 MB decoded
    context = browser.new_context(viewport={"width": 1360, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: m.type == "error" and "413" not in m.text and errors.append(m.text))
    # each locate request's (status, photos in it), from the page's own fetch
    pg.add_init_script("""(() => { const f = window.fetch; window.__answers = [];
        window.fetch = async (url, init) => { const r = await f(url, init);
            if (String(url).startsWith("/v1/locate") && init?.body instanceof FormData)
                window.__answers.push([r.status, init.body.getAll("images").length]);
            return r; }; })()""")
    try:
        pg.goto(server + "/")
        pg.wait_for_selector("body[data-ready=true]")
        pg.set_input_files("#files", [{"name": n, "mimeType": t, "buffer": b} for n, t, b in photos])
        pg.wait_for_function(f"() => document.querySelectorAll('#result-list button[data-result]').length === {len(photos)}")
        pg.wait_for_function("() => document.body.dataset.state === 'idle'")
        assert pg.locator("#error").is_hidden()
        labels = pg.eval_on_selector_all("#result-list .label", "els => els.map(e => e.textContent)")
        assert labels == [n for n, _, _ in photos]
        # PNGs 3 + 3; then 2 PNGs + 4 TIFFs refused and halved; the huge PNG alone, refused
        answers = [tuple(a) for a in pg.evaluate("() => window.__answers")]
        assert answers == [(200, 3), (200, 3), (413, 6), (200, 3), (200, 3), (413, 1)], answers
        results = pg.evaluate("() => window.geoindex.state.entries.map(e => e.result)")
        assert "413" in results[-1]["error"] and results[-1]["predictions"] == []
        assert "413" in pg.inner_text('#result-list button[data-result="12"]')
        for (name, mime, data), result in zip(photos[:-1], results[:-1]):
            expected = httpx.post(server + "/v1/locate", files=[("images", (name, data, mime))],
                                  data={"top_k": "5", "confidence": "0.9"}, timeout=60).json()["results"][0]
            assert [p["cell_h3"] for p in result["predictions"]] == [p["cell_h3"] for p in expected["predictions"]], name
        pg.click('#result-list button[data-result="12"]')
        assert "413" in pg.inner_text("#summary")
    finally:
        context.close()
    assert not errors, errors
