// The page's requests to geoindex-serve: one query (photos, a text, or a lat, lng point) plus the
// filters -> the locate route's request, JSON or GeoJSON. The server's answer text is kept as it came:
// cell ids are int64 and JSON.parse would round them, so downloads use the text, the page cell_h3.

export class ApiError extends Error {
  constructor(status, type, message) {
    super(message);
    this.status = status;
    this.type = type;
  }
}

async function send(url, init) {
  let response;
  try {
    response = await fetch(url, init);
  } catch (e) {
    throw new ApiError(0, "NetworkError", `cannot reach the server (${e.message}): is geoindex-serve running?`);
  }
  const text = await response.text();
  if (!response.ok) {
    let error = null;
    try {
      error = JSON.parse(text).error;
    } catch { /* not one of the API's error bodies */ }
    throw new ApiError(response.status, error?.type ?? "HTTPError",
      error?.message ?? `${response.status} ${response.statusText}: ${text.slice(0, 200)}`);
  }
  return text;
}

const postJson = (url, body) => send(url, {
  method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
});

/** The filter fields of a JSON request body (only those set). */
function jsonFilters(f) {
  const body = { top_k: f.topK };
  if (f.confidence != null) body.confidence = f.confidence;
  if (f.countries.length) body.country = f.countries;
  if (f.bboxes.length) body.bbox = f.bboxes;
  if (f.refine != null) body.refine = f.refine;
  return body;
}

/** The same filters as multipart form fields (country and bbox repeat; a box is "w,s,e,n"). */
function formFilters(form, f) {
  form.append("top_k", String(f.topK));
  if (f.confidence != null) form.append("confidence", String(f.confidence));
  for (const c of f.countries) form.append("country", c);
  for (const b of f.bboxes) form.append("bbox", b.join(","));
  if (f.refine != null) form.append("refine", String(f.refine));
}

/**
 * Locate one query with filters f = {topK, confidence|null, countries: ["FR"], bboxes: [[w,s,e,n]],
 * refine: M|null (refine the M best cells below the grid)}.
 * query: {kind: "images", files: [File]} | {kind: "text", text} | {kind: "point", latlng: [lat, lng]}.
 * Returns the answer's text (JSON or GeoJSON, as format says). A point is embedded by the location
 * encoder first (POST /v1/embed/locations), once: the embedding is kept on the query.
 */
export async function locate(query, f, format = "json") {
  const suffix = format === "geojson" ? "?format=geojson" : "";
  if (query.kind === "images") {
    const form = new FormData();
    for (const file of query.files) form.append("images", file, file.name);
    formFilters(form, f);
    return send(`/v1/locate${suffix}`, { method: "POST", body: form });
  }
  if (query.kind === "text") {
    return postJson(`/v1/locate/text${suffix}`, { texts: [query.text], ...jsonFilters(f) });
  }
  if (query.kind === "point") {
    if (!query.embedding) {
      const answer = JSON.parse(await postJson("/v1/embed/locations", { coordinates: [query.latlng] }));
      query.embedding = answer.embeddings[0];
    }
    return postJson(`/v1/locate/embedding${suffix}`, { embeddings: [query.embedding], ...jsonFilters(f) });
  }
  throw new Error(`unknown query kind ${query.kind}`);
}

export const getJson = async (url) => JSON.parse(await send(url, {}));
