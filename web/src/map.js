// The Leaflet map: the offline basemap (Natural Earth countries, TopoJSON served by this server),
// an optional tile layer (geoindex-serve --tiles URL), the predictions as H3 hexagons coloured by
// probability with a legend, the confidence region, the true location, and boxes drawn by dragging.
// Uses the globals of the vendor scripts: L (leaflet), h3 (h3-js), topojson (topojson-client).
import { boxToBboxes, colorAt, colorStops, ringToPolygons, unwrapGeometry } from "./geo.js";

export const MAX_CIRCLE_KM = 3000;

const BASEMAP_URL = "/static/vendor/countries-50m.json";

export function createMap(element, config) {
  // one world, never its copies: the least zoom fits the world's width to the map's (the basemap and
  // the cells are drawn once, plus copies of what crosses the antimeridian)
  const map = L.map(element, {
    maxBounds: [[-85.06, -180], [85.06, 180]], maxBoundsViscosity: 1, maxZoom: 12, zoomSnap: 0.25,
    zoomDelta: 0.5,
  });
  const fitWidth = () => map.setMinZoom(Math.max(0, Math.log2(map.getSize().x / 256)));
  fitWidth();
  map.on("resize", fitWidth);
  map.setView([25, 10], map.getMinZoom());
  const base = {};
  const overlays = {};
  const canvas = L.canvas({ padding: 0.5 });
  const countries = L.geoJSON(null, {
    renderer: canvas, interactive: false,
    style: { color: "#8c8c8c", weight: 0.6, fillColor: "#f3efe6", fillOpacity: 1 },
  });
  overlays["Countries (offline)"] = countries;
  const placesLayer = L.layerGroup();
  overlays["Place names (offline)"] = placesLayer;
  if (config.tiles) {
    const tiles = L.tileLayer(config.tiles, {
      maxZoom: 19, crossOrigin: true, className: "geoindex-tiles",
      attribution: config.tiles_attribution || "tiles: " + new URL(config.tiles.replace(/\{s\}/g, "a"),
        location.href).host,
    });
    base["Tiles"] = tiles.addTo(map);
    countries.setStyle({ fillOpacity: 0, weight: 0.8, color: "#555" });
  }
  countries.addTo(map);
  placesLayer.addTo(map);
  map.attributionControl.setPrefix(false);
  map.attributionControl.addAttribution("Natural Earth (world-atlas)");
  L.control.layers(base, overlays, { collapsed: true }).addTo(map);
  L.control.scale({ imperial: false }).addTo(map);

  const loaded = fetch(BASEMAP_URL)
    .then((r) => {
      if (!r.ok) throw new Error(`${BASEMAP_URL}: ${r.status}`);
      return r.json();
    })
    .then((topo) => {
      const fc = topojson.feature(topo, topo.objects.countries);
      countries.addData(fc.features.filter((f) => f.geometry)
        .map((f) => ({ ...f, geometry: unwrapGeometry(f.geometry) })));
      element.dataset.basemap = "ready";
    })
    .catch((e) => {
      element.dataset.basemap = "failed";
      console.error("basemap", e);
    });

  // place names from this server's gazetteer (GET /v1/places), where they help: zoomed in past the
  // world view, the most populous first, none closer than LABEL_GAP_PX to a bigger one
  const LABEL_MIN_ZOOM = 3, LABEL_GAP_PX = 70;
  let labelsAsked = 0;
  async function updateLabels() {
    const asked = ++labelsAsked;
    if (map.getZoom() < LABEL_MIN_ZOOM || !map.hasLayer(placesLayer)) return placesLayer.clearLayers();
    const b = map.getBounds();
    const clamp = (x, lo, hi) => Math.max(lo, Math.min(hi, x)).toFixed(4);
    const bbox = [clamp(b.getWest(), -180, 180), clamp(b.getSouth(), -90, 90), clamp(b.getEast(), -180, 180),
      clamp(b.getNorth(), -90, 90)].join(",");
    let found;
    try {
      const r = await fetch(`/v1/places?bbox=${bbox}&limit=150`);
      if (!r.ok) return;
      found = (await r.json()).places;
    } catch {
      return; // labels are a help, never an error
    }
    if (asked !== labelsAsked) return;
    placesLayer.clearLayers();
    const taken = [];
    for (const p of found) {
      const xy = map.latLngToContainerPoint([p.lat, p.lng]);
      if (taken.some((t) => t.distanceTo(xy) < LABEL_GAP_PX)) continue;
      taken.push(xy);
      L.marker([p.lat, p.lng], {
        interactive: false, keyboard: false,
        icon: L.divIcon({ className: "geoindex-place", iconSize: null, html: `<span>${escapeHtml(p.name)}</span>` }),
      }).addTo(placesLayer);
    }
  }
  map.on("moveend overlayadd", updateLabels);

  const cellsLayer = L.featureGroup().addTo(map);
  const regionLayer = L.featureGroup().addTo(map);
  const boxLayer = L.featureGroup().addTo(map);
  let trueMarker = null;
  const byCell = new Map();

  const legend = L.control({ position: "bottomright" });
  legend.onAdd = () => {
    const div = L.DomUtil.create("div", "legend");
    div.id = "legend";
    div.hidden = true;
    return div;
  };
  legend.addTo(map);
  const legendEl = legend.getContainer();

  function setLegend(maxP, confidence) {
    const gradient = `linear-gradient(to right, ${colorStops().join(", ")})`;
    legendEl.innerHTML = `<div class="legend-title">probability</div>
      <div class="legend-bar" style="background: ${gradient}"></div>
      <div class="legend-ticks"><span>0</span><span>${(maxP * 50).toFixed(1)}%</span>
      <span>${(maxP * 100).toFixed(1)}%</span></div>
      ${confidence != null ? `<div class="legend-region"><span class="swatch"></span>
        ${Math.round(confidence * 100)}% confidence region</div>` : ""}`;
    legendEl.hidden = false;
  }

  /** Draw one result: its predictions as hexagons (a point for a CSV gallery's rows) and its region. */
  function showResult(result) {
    cellsLayer.clearLayers();
    regionLayer.clearLayers();
    byCell.clear();
    if (!result) {
      legendEl.hidden = true;
      return;
    }
    const preds = result.predictions;
    const maxP = Math.max(...preds.map((p) => p.probability), 1e-12);
    const bounds = L.latLngBounds([]);
    // draw the least likely first, so the best cells lie on top
    preds.map((p, rank) => [p, rank]).reverse().forEach(([p, rank]) => {
      const style = {
        className: "geoindex-cell", color: "#222", weight: 1, opacity: 0.9,
        fillColor: colorAt(p.probability / maxP), fillOpacity: 0.75,
      };
      let layer;
      if (p.cell_h3) {
        const rings = ringToPolygons(h3.cellToBoundary(p.cell_h3));
        layer = L.polygon(rings.map((ring) => [ring]), style);
        bounds.extend(L.latLngBounds(rings[0]));
      } else {
        layer = L.circleMarker([p.lat, p.lng], { ...style, radius: 8 });
        bounds.extend([p.lat, p.lng]);
      }
      const where = [p.place, p.admin1, p.country].filter(Boolean).join(", ") || "(no place)";
      layer.bindTooltip(`#${rank + 1} ${escapeHtml(where)}<br>${(p.probability * 100).toFixed(2)}%`, { sticky: true });
      layer.addTo(cellsLayer);
      const path = layer.getElement();
      if (path) {
        path.dataset.cell = p.cell_h3 ?? String(p.lng) + "," + String(p.lat);
        path.dataset.rank = String(rank + 1);
        path.dataset.probability = String(p.probability);
      }
      byCell.set(p.cell_h3, layer);
    });
    // rank badges at the predicted points: readable at any zoom, where a cell may be a few pixels
    preds.map((p, rank) => [p, rank]).reverse().forEach(([p, rank]) => {
      const t = p.probability / maxP;
      L.marker([p.lat, p.lng], {
        interactive: false, keyboard: false, zIndexOffset: 1000 - rank,
        icon: L.divIcon({
          className: "geoindex-rank", iconSize: [20, 20],
          html: `<span style="background: ${colorAt(t)}; color: ${t > 0.55 ? "#111" : "#fff"}">${rank + 1}</span>`,
        }),
      }).addTo(cellsLayer);
    });
    // the radius circle, up to a size a flat map still draws as a circle: a radius of thousands of km
    // (a vague answer) is a distorted oval across half the world, so then only the summary line says it
    const radius = result.radius_km ?? null;
    if (radius != null && radius <= MAX_CIRCLE_KM && preds.length) {
      L.circle([preds[0].lat, preds[0].lng], {
        radius: radius * 1000, className: "geoindex-radius", interactive: false, color: "#1f4e9c", weight: 1.5,
        dashArray: "6 4", fill: false,
      }).addTo(regionLayer);
    }
    if (result.confidence_region) {
      const feature = result.confidence_region;
      L.geoJSON({ ...feature, geometry: unwrapGeometry(feature.geometry) }, {
        interactive: false, className: "geoindex-region",
        style: { className: "geoindex-region", color: "#d7263d", weight: 1.5, opacity: 0.9, fill: true,
          fillColor: "#d7263d", fillOpacity: 0.14 },
      }).addTo(regionLayer);
    }
    // the nearest reference photos (server run with --photos): small pins, a thumbnail on hover
    (result.neighbours ?? []).forEach((n, i) => {
      L.circleMarker([n.lat, n.lng], { className: "geoindex-photo", radius: 5, color: "#1f4e9c", weight: 1.5,
        fillColor: "#6fa8ff", fillOpacity: 0.9 })
        .bindTooltip(`<img class="photo-tip" src="/v1/photos/${Number(n.id)}/image" alt="">`
          + `<br>photo ${i + 1}: ${escapeHtml(n.image)}<br>similarity ${n.similarity.toFixed(3)}`)
        .addTo(cellsLayer);
    });
    cellsLayer.bringToFront();
    setLegend(maxP, result.confidence_region?.properties?.confidence ?? null);
  }

  /** The view that shows the answer: its cells, its confidence region and radius circle, and the
   * true location (the user's pin, the point queried, or the photo's EXIF position). */
  function answerBounds(result, trueLatLng) {
    const bounds = L.latLngBounds([]);
    if (!result) return bounds;
    for (const p of result.predictions) {
      if (p.cell_h3) bounds.extend(L.latLngBounds(ringToPolygons(h3.cellToBoundary(p.cell_h3))[0]));
      else bounds.extend([p.lat, p.lng]);
    }
    regionLayer.eachLayer((layer) => bounds.extend(layer.getBounds()));
    if (trueLatLng) bounds.extend(trueLatLng);
    return bounds;
  }

  function fitAnswer(result, trueLatLng) {
    const bounds = answerBounds(result, trueLatLng);
    if (bounds.isValid()) map.fitBounds(bounds, { padding: [30, 30], maxZoom: 10, animate: false });
  }

  function highlight(cellH3, on) {
    const layer = byCell.get(cellH3);
    if (layer) layer.setStyle({ weight: on ? 3.5 : 1, color: on ? "#d7263d" : "#222" });
  }

  function setTrue(latlng, label = "true location") {
    if (trueMarker) trueMarker.remove();
    trueMarker = null;
    if (!latlng) return;
    trueMarker = L.circleMarker(latlng, {
      className: "geoindex-true", radius: 7, color: "#000", weight: 3, fillColor: "#fff", fillOpacity: 1,
      interactive: false,
    }).bindTooltip(label, { permanent: false }).addTo(map);
    trueMarker.getElement()?.setAttribute("data-lat", String(latlng[0]));
    trueMarker.getElement()?.setAttribute("data-lng", String(latlng[1]));
  }

  function setBoxes(bboxes) {
    boxLayer.clearLayers();
    for (const [w, s, e, n] of bboxes) {
      L.rectangle([[s, w], [n, e]], {
        className: "geoindex-bbox", color: "#1f6feb", weight: 2, fillOpacity: 0.08, interactive: false,
      }).addTo(boxLayer);
    }
  }

  // drawing a box: while on, a drag on the map draws a rectangle instead of panning; a click (not
  // the end of drawing a box) sets the true location
  let drawing = null;
  let onBox = null;
  let justDrew = false;
  let onClick = null;
  function startBox(callback) {
    onBox = callback;
    map.dragging.disable();
    element.classList.add("drawing");
  }
  function stopBox() {
    onBox = null;
    drawing = null;
    map.dragging.enable();
    element.classList.remove("drawing");
  }
  map.on("mousedown", (e) => {
    if (!onBox) return;
    drawing = { start: e.latlng, rect: L.rectangle([e.latlng, e.latlng], { className: "geoindex-bbox-draft",
      color: "#1f6feb", weight: 2, dashArray: "4 3", fillOpacity: 0.05, interactive: false }).addTo(map) };
  });
  map.on("mousemove", (e) => {
    if (drawing) drawing.rect.setBounds([drawing.start, e.latlng]);
  });
  map.on("mouseup", (e) => {
    if (!drawing) return;
    drawing.rect.remove();
    const a = drawing.start, b = e.latlng;
    const callback = onBox;
    stopBox();
    justDrew = true;
    callback(boxToBboxes([a.lat, a.lng], [b.lat, b.lng]));
  });

  map.on("click", (e) => {
    if (justDrew || onBox) {
      justDrew = false;
      return;
    }
    const ll = e.latlng.wrap();
    onClick?.([Math.round(ll.lat * 1e5) / 1e5, Math.round(ll.lng * 1e5) / 1e5]);
  });

  return {
    map, loaded, showResult, fitAnswer, answerBounds, highlight, setTrue, setBoxes, startBox, stopBox,
    onMapClick: (callback) => { onClick = callback; },
  };
}

export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;",
    "'": "&#39;" })[c]);
}
