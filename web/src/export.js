// Every located photo (or query) of the page as one file: CSV, GeoJSON or KML, built on the page from
// the answers it holds (a batch of hundreds of photos is never uploaded again to be exported).
// One row per entry: its best guess, the radius holding the confidence mass (radius_km, when the
// server sends it), and the photo's own EXIF position with the distance to it.

const COLUMNS = ["label", "lat", "lng", "probability", "place", "admin1", "country", "cell_h3", "radius_km",
  "exif_lat", "exif_lng", "km_from_exif", "taken_at"];

/** entries: [{label, result}] -> one flat row each (the best guess; empty when there is none). */
export function rows(entries) {
  return entries.map(({ label, result }) => {
    const p = result.predictions[0] ?? {};
    return {
      label, lat: p.lat, lng: p.lng, probability: p.probability, place: p.place, admin1: p.admin1,
      country: p.country, cell_h3: p.cell_h3, radius_km: result.radius_km ?? null, exif_lat: result.exif_lat,
      exif_lng: result.exif_lng, km_from_exif: result.km_from_exif, taken_at: result.taken_at,
    };
  });
}

const csvCell = (v) => {
  if (v == null) return "";
  const s = String(v);
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
};

export function toCsv(entries) {
  const lines = [COLUMNS.join(",")];
  for (const row of rows(entries)) lines.push(COLUMNS.map((c) => csvCell(row[c])).join(","));
  return lines.join("\r\n") + "\r\n";
}

export function toGeoJson(entries) {
  return JSON.stringify({
    type: "FeatureCollection",
    features: rows(entries).filter((r) => r.lat != null).map((r) => ({
      type: "Feature", geometry: { type: "Point", coordinates: [r.lng, r.lat] }, properties: r,
    })),
  });
}

const xml = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;",
  '"': "&quot;", "'": "&apos;" })[c]);

export function toKml(entries) {
  const marks = rows(entries).filter((r) => r.lat != null).map((r) => {
    const where = [r.place, r.admin1, r.country].filter(Boolean).join(", ");
    const data = COLUMNS.filter((c) => r[c] != null && c !== "label")
      .map((c) => `<Data name="${c}"><value>${xml(r[c])}</value></Data>`).join("");
    return `<Placemark><name>${xml(r.label)}</name><description>${xml(where)}</description>`
      + `<ExtendedData>${data}</ExtendedData><Point><coordinates>${r.lng},${r.lat},0</coordinates></Point></Placemark>`;
  });
  return `<?xml version="1.0" encoding="UTF-8"?>\n<kml xmlns="http://www.opengis.net/kml/2.2"><Document>`
    + `<name>geoindex</name>${marks.join("\n")}</Document></kml>\n`;
}

/**
 * Files -> requests the server takes: at most maxImages files and about maxBytes a request (a file
 * alone over maxBytes still goes alone: the server says why it refuses it).
 */
export function chunk(files, maxImages, maxBytes) {
  const out = [];
  let current = [], bytes = 0;
  for (const f of files) {
    if (current.length && (current.length >= maxImages || bytes + f.size > maxBytes)) {
      out.push(current);
      current = [];
      bytes = 0;
    }
    current.push(f);
    bytes += f.size;
  }
  if (current.length) out.push(current);
  return out;
}
