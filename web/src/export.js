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
 * Files -> requests the server takes: at most maxImages files, about maxBytes uploaded and (with
 * costs, each file's decoded bytes, 0 when unknown) about maxDecoded decoded a request. A file alone
 * over a limit still goes alone: the server says why it refuses it.
 */
export function chunk(files, maxImages, maxBytes, costs = null, maxDecoded = Infinity) {
  const out = [];
  let current = [], bytes = 0, decoded = 0;
  files.forEach((f, i) => {
    const cost = costs?.[i] ?? 0;
    if (current.length && (current.length >= maxImages || bytes + f.size > maxBytes || decoded + cost > maxDecoded)) {
      out.push(current);
      current = [];
      bytes = 0;
      decoded = 0;
    }
    current.push(f);
    bytes += f.size;
    decoded += cost;
  });
  if (current.length) out.push(current);
  return out;
}

const CLIP_SIDE = 224;

/**
 * (width, height) of a PNG, JPEG, GIF, WebP or BMP from its first bytes (a DataView), or null.
 * Cheap: no decoding, as the server reads it from the header too.
 */
export function headerSize(v) {
  const u8 = (i) => v.getUint8(i), u16 = (i, le) => v.getUint16(i, le), u32 = (i, le) => v.getUint32(i, le);
  try {
    if (u32(0) === 0x89504e47) return [u32(16), u32(20)]; // PNG: IHDR
    if (u16(0) === 0x4749) return [u16(6, true), u16(8, true)]; // GIF
    if (u16(0) === 0x424d) return [Math.abs(v.getInt32(18, true)), Math.abs(v.getInt32(22, true))]; // BMP
    if (u32(0) === 0x52494646 && u32(8) === 0x57454250) { // WebP: VP8 / VP8L / VP8X
      const kind = u32(12);
      if (kind === 0x56503820) return [u16(26, true) & 0x3fff, u16(28, true) & 0x3fff];
      if (kind === 0x5650384c) {
        const b = u32(21, true);
        return [(b & 0x3fff) + 1, ((b >> 14) & 0x3fff) + 1];
      }
      if (kind === 0x56503858) return [1 + (u32(24, true) & 0xffffff), 1 + (u32(27, true) & 0xffffff)];
      return null;
    }
    if (u16(0) === 0xffd8) { // JPEG: the first start-of-frame segment
      let i = 2;
      while (i + 9 < v.byteLength) {
        if (u8(i) !== 0xff) return null;
        const marker = u8(i + 1);
        if (marker === 0xff) { i += 1; continue; }
        if (marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker)) return [u16(i + 7), u16(i + 5)];
        i += 2 + u16(i + 2);
      }
    }
  } catch { /* shorter than its header says: unknown */ }
  return null;
}

/**
 * The bytes the server holds decoding an image of this size (its --max-decoded-bytes counts the
 * same): 4 a pixel; a JPEG at the draft size the server decodes it at (a 1/2, 1/4 or 1/8 DCT scale
 * keeping the short side >= 224), anything else whole.
 */
export function decodedCost(size, isJpeg) {
  if (!size) return 0;
  let [w, h] = size;
  if (isJpeg) {
    const s = CLIP_SIDE / Math.max(1, Math.min(w, h));
    if (s < 1) {
      const rw = Math.max(1, Math.ceil(w * s)), rh = Math.max(1, Math.ceil(h * s));
      const fit = Math.min(Math.floor(w / rw), Math.floor(h / rh));
      const scale = [8, 4, 2, 1].find((k) => k <= fit) ?? 1;
      [w, h] = [Math.ceil(w / scale), Math.ceil(h / scale)];
    }
  }
  return w * h * 4;
}

/** Each file's decoded cost from its header (the first 256 KiB read; 0 when unknown). */
export async function decodedCosts(files) {
  return Promise.all(files.map(async (f) => {
    try {
      const v = new DataView(await f.slice(0, 256 * 1024).arrayBuffer());
      return decodedCost(headerSize(v), v.byteLength > 2 && v.getUint16(0) === 0xffd8);
    } catch {
      return 0;
    }
  }));
}
