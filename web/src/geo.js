// Geometry on the page's side: great-circle distances, H3 rings that cross the antimeridian or hold
// a pole, boxes drawn across the antimeridian, the probability colour scale. Plain functions, no DOM.
// lat, lng order and degrees everywhere (as the API), distances in km.

export const EARTH_RADIUS_KM = 6371.0088; // mean radius (IUGG), as the Python side

const rad = (deg) => (deg * Math.PI) / 180;

/** Great-circle (haversine) distance in km between two [lat, lng] points. */
export function distanceKm([lat1, lng1], [lat2, lng2]) {
  const a = Math.sin(rad(lat2 - lat1) / 2) ** 2
    + Math.cos(rad(lat1)) * Math.cos(rad(lat2)) * Math.sin(rad(lng2 - lng1) / 2) ** 2;
  return 2 * EARTH_RADIUS_KM * Math.asin(Math.min(1, Math.sqrt(a)));
}

/** "48.85, 2.29" (or "48.85 2.29", "48.85;2.29") -> [lat, lng]; anything else -> null. */
export function parseLatLng(text) {
  const parsed = parseCoordinates(text);
  return parsed?.latlng ?? null;
}

/**
 * Text that is two numbers -> {latlng: [lat, lng]} when they are a valid point, {error: "why"} when
 * they are not (never to be sent as a description); text that is not two numbers -> null.
 */
export function parseCoordinates(text) {
  const m = /^\s*([-+]?\d+(?:\.\d+)?)\s*[,; ]\s*([-+]?\d+(?:\.\d+)?)\s*$/.exec(text);
  if (!m) return null;
  const lat = Number(m[1]), lng = Number(m[2]);
  const problems = [];
  if (!(Math.abs(lat) <= 90)) problems.push(`latitude ${m[1]} is outside -90..90`);
  if (!(Math.abs(lng) <= 180)) problems.push(`longitude ${m[2]} is outside -180..180`);
  if (problems.length) {
    const swapped = Math.abs(lng) <= 90 && Math.abs(lat) <= 180 ? ` (did you mean ${m[2]}, ${m[1]}? the order is lat, lng)` : "";
    return { error: `${text.trim()}: ${problems.join(" and ")}${swapped}; give lat, lng in degrees, e.g. 48.8584, 2.2945` };
  }
  return { latlng: [lat, lng] };
}

/** "1 cell", "2 cells". */
export function plural(n, one, many = one + "s") {
  return `${Number(n).toLocaleString("en-US")} ${n === 1 ? one : many}`;
}

/** A file name for a download: the label's characters that are safe in file names, dots kept
 * ("48.8584, 2.2945" -> "48.8584_2.2945"); a photo's own extension dropped. */
export function safeStem(label, isFile = false) {
  const stem = isFile ? label.replace(/\.[a-z0-9]+$/i, "") : label;
  return stem.replace(/[^\w.-]+/g, "_").replace(/^[_.]+|_+$/g, "").slice(0, 60) || "query";
}

/** The OpenStreetMap page of a point (a link the user follows; the page itself loads nothing from it). */
export function osmUrl(lat, lng, zoom = 10) {
  const f = (x) => x.toFixed(5);
  return `https://www.openstreetmap.org/?mlat=${f(lat)}&mlon=${f(lng)}#map=${zoom}/${f(lat)}/${f(lng)}`;
}

/** Wrap a longitude into [-180, 180). */
export function wrapLng(lng) {
  return ((((lng + 180) % 360) + 360) % 360) - 180;
}

/** A ring [[lat, lng], ...] made continuous in longitude (steps of at most 180 degrees; values may
 * pass +-180), and its winding: the sum of its steps, about +-360 when it goes round a pole. */
function unwrapRing(ring) {
  const out = [ring[0].slice()];
  let winding = 0;
  for (let i = 1; i <= ring.length; i++) {
    const [lat, lng] = ring[i % ring.length];
    const prev = out[out.length - 1][1];
    const step = wrapLng(lng - prev);
    winding += step;
    if (i < ring.length) out.push([lat, prev + step]);
  }
  return { ring: out, winding };
}

const lngRange = (rings) => {
  const lngs = rings.flat().map((p) => p[1]);
  return [Math.min(...lngs), Math.max(...lngs)];
};
const shifted = (rings, by) => rings.map((ring) => ring.map(([lat, lng]) => [lat, lng + by]));

/**
 * One polygon (exterior ring, then holes; [[lat, lng], ...] each) as the polygons to draw on a map
 * of longitudes -180..180: rings crossing the antimeridian are made continuous and the polygon is
 * drawn twice, once on each side, so it neither smears across the whole map nor is cut off; an
 * exterior ring that goes round a pole is closed over it (and spans 360 degrees: also drawn twice).
 * Returns a list of polygons (one or two), each a list of rings.
 */
export function polygonToPolygons(rings) {
  const { ring, winding } = unwrapRing(rings[0]);
  const holes = rings.slice(1).map((h) => {
    const hole = unwrapRing(h).ring;
    const by = Math.round((ring[0][1] - hole[0][1]) / 360) * 360; // next to the exterior
    return hole.map(([lat, lng]) => [lat, lng + by]);
  });
  if (Math.abs(winding) > 180) { // round a pole: close the ring over it
    const pole = ring.reduce((sum, p) => sum + p[0], 0) > 0 ? 90 : -90;
    const first = ring[0][1], end = first + Math.sign(winding) * 360;
    if (Math.abs(ring[ring.length - 1][0]) !== 90) ring.push([ring[0][0], end], [pole, end]);
    ring.push([pole, first]);
    const min = Math.min(first, end);
    const base = shifted([ring, ...holes], -(min - wrapLng(min))); // starts in [-180, 180)
    return [base, shifted(base, -360)];
  }
  const [min, max] = lngRange([ring]);
  const center = (min + max) / 2;
  const base = shifted([ring, ...holes], -(center - wrapLng(center))); // centre in [-180, 180)
  const [bmin, bmax] = lngRange([base[0]]);
  if (bmax > 180) return [base, shifted(base, -360)];
  if (bmin < -180) return [base, shifted(base, 360)];
  return [base];
}

/** An H3 cell's boundary ([[lat, lng], ...] from h3.cellToBoundary) as polygons to draw: one or two
 * single-ring polygons (see polygonToPolygons). */
export function ringToPolygons(boundary) {
  return polygonToPolygons([boundary]).map((polygon) => polygon[0]);
}

/** A GeoJSON Polygon or MultiPolygon ([lng, lat] positions) as a MultiPolygon drawn without smears
 * at the antimeridian (polygonToPolygons on each polygon); other geometries unchanged. */
export function unwrapGeometry(geometry) {
  const polygons = geometry.type === "Polygon" ? [geometry.coordinates]
    : geometry.type === "MultiPolygon" ? geometry.coordinates : null;
  if (!polygons) return geometry;
  const swap = (rings) => rings.map((ring) => ring.map(([a, b]) => [b, a]));
  return {
    type: "MultiPolygon",
    coordinates: polygons.flatMap((rings) => polygonToPolygons(swap(rings)).map(swap)),
  };
}

/**
 * A box dragged on the map (corners in any order, longitudes maybe beyond +-180 on a world copy)
 * -> the API's boxes [[w, s, e, n], ...]: one, or two when it crosses the antimeridian.
 * Degrees rounded to 1e-4 (the multipart form takes at most 12 decimals). Empty boxes -> [].
 */
export function boxToBboxes([lat1, lng1], [lat2, lng2]) {
  const r = (x) => Math.round(x * 1e4) / 1e4;
  const s = r(Math.max(-90, Math.min(lat1, lat2))), n = r(Math.min(90, Math.max(lat1, lat2)));
  let w = Math.min(lng1, lng2), e = Math.max(lng1, lng2);
  if (!(n > s) || !(e > w)) return [];
  if (e - w >= 360) return [[-180, s, 180, n]];
  const shift = w - wrapLng(w);
  w = r(w - shift);
  e = r(e - shift);
  if (e <= 180) return e > w ? [[w, s, e, n]] : [];
  return [[w, s, 180, n], [-180, s, r(e - 360), n]].filter(([bw, , be]) => be > bw);
}

// viridis, 9 stops (matplotlib): readable on the pale basemap and for colour-blind readers
const VIRIDIS = ["#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30", "#fde725"];

/** A colour for t in [0, 1] (0: dark purple, 1: yellow). */
export function colorAt(t) {
  const x = Math.max(0, Math.min(1, Number.isFinite(t) ? t : 0)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x));
  const f = x - i;
  const a = VIRIDIS[i], b = VIRIDIS[i + 1];
  const mix = (k) => Math.round(parseInt(a.slice(k, k + 2), 16) * (1 - f) + parseInt(b.slice(k, k + 2), 16) * f);
  return `rgb(${mix(1)}, ${mix(3)}, ${mix(5)})`;
}

export const colorStops = () => VIRIDIS.slice();
