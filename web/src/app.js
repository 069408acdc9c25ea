// The page: photos (picked or dropped) or a text -> POST /v1/locate[/text|/embedding] with the
// filters -> the selected result on the map and in the table; the true location by a click.
import { ApiError, getJson, locate } from "./api.js";
import { chunk, decodedCosts, toCsv, toGeoJson, toKml } from "./export.js";
import { parseCoordinates, plural, safeStem } from "./geo.js";
import { createMap } from "./map.js";
import { renderNeighbours, renderResultList, renderTable, summaryText } from "./table.js";

const $ = (id) => document.getElementById(id);
const REFINE_CELLS = 4; // the CLI's default for --refine

const state = {
  config: { tiles: null, max_top_k: 100, max_images: 16, images: true, texts: true, reason: null },
  query: null, // the query shown: {kind: "images", files} | {kind: "text", text} | {kind: "point", latlng}
  filters: null, // the filters it ran with
  raw: null, // the server's answer, as text (cell ids are int64: JSON.parse would round them)
  entries: [], // one per photo or text: {label, thumb, result}
  selected: 0,
  trueLatLng: null,
  // "click": pinned by the user on the map, kept across queries until cleared; "point": the lat, lng
  // query's own point; "exif": the selected photo's own GPS position. Only a pin survives a new query.
  trueSource: null,
  bboxes: [],
  run: 0, // answers to an older run than the latest are dropped
  thumbs: [],
};

function showError(message) {
  const el = $("error");
  el.textContent = message ?? "";
  el.hidden = !message;
}

function setStatus(text, busy = false) {
  $("status").textContent = text;
  document.body.classList.toggle("busy", busy);
  document.body.dataset.state = busy ? "busy" : "idle";
}

/** The filter controls as the API's fields; throws a message when one is not valid. */
function readFilters() {
  const topK = Number($("top-k").value || 5);
  if (!Number.isInteger(topK) || topK < 1 || topK > state.config.max_top_k) {
    throw `top k must be a whole number in 1..${state.config.max_top_k} (this server's limit)`;
  }
  const c = $("confidence").value.trim();
  const confidence = c === "" ? null : Number(c);
  if (confidence !== null && !(confidence > 0 && confidence <= 1)) {
    throw `confidence ${c} must be in (0, 1], e.g. 0.9, or empty for no region`;
  }
  const countries = $("country").value.split(/[\s,;]+/).filter(Boolean).map((s) => s.toUpperCase());
  const bad = countries.find((s) => !/^[A-Z]{2}$/.test(s));
  if (bad) throw `country ${bad} should be an ISO 3166-1 alpha-2 code (e.g. FR, US, JP)`;
  const refine = $("refine").checked ? REFINE_CELLS : null;
  return { topK, confidence, countries, bboxes: state.bboxes.slice(), refine };
}

function labelsOf(query) {
  if (query.kind === "images") return query.files.map((f) => f.name || "photo");
  if (query.kind === "text") return [query.text];
  return [query.latlng.join(", ")];
}

async function run(query) {
  let filters;
  try {
    filters = readFilters();
  } catch (message) {
    showError(String(message));
    return;
  }
  const id = ++state.run;
  showError(null);
  if (query !== state.query) { // a new query: nothing of the last one stays on the page
    forgetAnswer(query);
    render();
  }
  const what = query.kind === "images" ? plural(query.files.length, "photo") : "the query";
  setStatus(`Locating ${what}...`, true);
  const t0 = performance.now();
  try {
    const raw = query.kind === "images" ? await locateBatch(query, filters, id) : await locate(query, filters);
    if (raw === null || id !== state.run) return;
    const data = JSON.parse(raw);
    if (query !== state.query) {
      state.thumbs.forEach((u) => URL.revokeObjectURL(u));
      state.thumbs = query.kind === "images" ? query.files.map((f) => URL.createObjectURL(f)) : [];
      state.selected = 0;
    }
    const labels = labelsOf(query);
    Object.assign(state, { query, filters, raw });
    state.entries = data.results.map((result, i) => ({ label: labels[i], thumb: state.thumbs[i] ?? null, result }));
    state.selected = Math.min(state.selected, state.entries.length - 1);
    setStatus(`${plural(state.entries.length, "result")}, top ${filters.topK}, `
      + `in ${Math.round(performance.now() - t0)} ms.`);
    render();
  } catch (e) {
    if (id !== state.run) return;
    setStatus("");
    if (!(e instanceof ApiError)) console.error(e); // the API's refusals are shown, not logged
    forgetAnswer(null); // the error replaces the answer: no old result beside it
    render();
    showError(e instanceof ApiError ? `${e.status || ""} ${e.type}: ${e.message}`.trim() : String(e));
  }
}

/**
 * Photos in as many requests as the server's limits need (--max-images files, about
 * --max-request-bytes uploaded and --max-decoded-bytes decoded each, the decoded size read from each
 * file's header), one after another, the progress shown; the answers' texts joined as one (int64
 * cell ids stay text). A request of several photos the server still refuses as too large (413) is
 * split in halves and sent again; one photo refused so is that photo's error entry. null when a
 * newer query replaced this one.
 */
async function locateBatch(query, filters, id) {
  const maxBytes = Math.max(1, (state.config.max_request_bytes ?? 64 * 2 ** 20) * 0.9);
  const maxDecoded = Math.max(1, (state.config.max_decoded_bytes ?? 2 ** 30) * 0.95);
  const costs = await decodedCosts(query.files);
  if (id !== state.run) return null;
  const parts = chunk(query.files, state.config.max_images, maxBytes, costs, maxDecoded);
  const arrays = [];
  const progress = $("batch-progress");
  progress.max = query.files.length;
  progress.value = 0;
  progress.hidden = parts.length < 2;
  let done = 0, requests = 0;
  async function send(files) {
    if (parts.length > 1 || requests) setStatus(`Locating photos: ${done} of ${query.files.length} done...`, true);
    let raw;
    try {
      requests += 1;
      raw = await locate({ kind: "images", files }, filters);
    } catch (e) {
      if (!(e instanceof ApiError) || e.status !== 413 || query.files.length < 2) throw e;
      if (id !== state.run) return false;
      if (files.length > 1) {
        const half = Math.ceil(files.length / 2);
        return (await send(files.slice(0, half))) && send(files.slice(half));
      }
      raw = `{"results":[${JSON.stringify({ predictions: [], error: `${e.status} ${e.type}: ${e.message}` })}]}`;
    }
    if (id !== state.run) return false;
    arrays.push(raw.slice(raw.indexOf("[") + 1, raw.lastIndexOf("]")).trim());
    done += files.length;
    progress.value = done;
    return true;
  }
  try {
    for (const files of parts) {
      if (!(await send(files))) return null;
    }
  } finally {
    progress.hidden = true;
  }
  query.requests = requests;
  return `{"results":[${arrays.filter(Boolean).join(",")}]}`;
}

/** The image files under dropped folders too (DataTransfer entries, read recursively). */
async function droppedFiles(dataTransfer) {
  const entries = [...(dataTransfer?.items ?? [])].map((item) => item.webkitGetAsEntry?.()).filter(Boolean);
  if (!entries.some((e) => e.isDirectory)) return [...(dataTransfer?.files ?? [])];
  const out = [];
  async function walk(entry) {
    if (entry.isFile) {
      const file = await new Promise((ok, fail) => entry.file(ok, fail));
      if (file.type.startsWith("image/") || /\.(jpe?g|png|webp|gif|bmp|tiff?|heic)$/i.test(file.name)) out.push(file);
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) { // readEntries answers in pages
        const page = await new Promise((ok, fail) => reader.readEntries(ok, fail));
        if (!page.length) break;
        for (const child of page) await walk(child);
      }
    }
  }
  for (const entry of entries) await walk(entry);
  return out.sort((a, b) => a.name.localeCompare(b.name));
}

/** Drop the shown answer (and its query's true location, unless the user pinned one on the map). */
function forgetAnswer(query) {
  Object.assign(state, { entries: [], raw: null, selected: 0 });
  if (query === null) state.filters = null;
  if (state.trueSource !== "click" && !(query?.kind === "point")) {
    state.trueLatLng = null;
    state.trueSource = null;
    view.setTrue(null);
  }
}

function render() {
  const entry = state.entries[state.selected];
  renderResultList($("result-list"), state.entries, state.selected, (i) => {
    state.selected = i;
    render();
  });
  view.showResult(entry?.result ?? null);
  followExif(entry?.result ?? null);
  renderDetails();
  view.fitAnswer(entry?.result ?? null, state.trueLatLng);
  $("locate").disabled = !state.query;
  $("download-json").disabled = !state.raw;
  $("download-geojson").disabled = !state.raw || (state.query?.requests ?? 1) > 1; // the export below does it
  for (const id of ["export-csv", "export-geojson", "export-kml"]) $(id).disabled = !state.entries.length;
  $("exports").hidden = !state.entries.length;
}

/** A photo with an EXIF GPS position: that is its true location (the user's click stays otherwise). */
function followExif(result) {
  const exif = result?.exif_lat != null && result?.exif_lng != null ? [result.exif_lat, result.exif_lng] : null;
  if (exif) {
    state.trueLatLng = exif;
    state.trueSource = "exif";
  } else if (state.trueSource === "exif") {
    state.trueLatLng = null;
    state.trueSource = null;
  } else {
    return;
  }
  view.setTrue(state.trueLatLng, "EXIF position (from the photo)");
}

/** What depends on the true location: the table and the summary line. */
function renderDetails() {
  const entry = state.entries[state.selected];
  renderTable($("results-table"), entry?.result ?? null, state.trueLatLng, view.highlight);
  renderNeighbours($("neighbours"), entry?.result ?? null);
  $("summary").textContent = summaryText(entry?.result ?? null, state.trueLatLng,
    { exif: "the photo's EXIF position", point: "the point you gave" }[state.trueSource] ?? "the true location");
  $("clear-true").disabled = !state.trueLatLng;
}

function setTrue(latlng, source = "click") {
  state.trueLatLng = latlng;
  state.trueSource = latlng ? source : null;
  view.setTrue(latlng);
  renderDetails();
}

function rerun() {
  if (state.query) run(state.query);
}

function save(text, type, name) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = Object.assign(document.createElement("a"), { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

function fileStem() {
  if (state.query.kind === "images" && state.query.files.length > 1) return `geoindex-${state.query.files.length}-photos`;
  const label = labelsOf(state.query)[0] ?? "query";
  return "geoindex-" + safeStem(label, state.query.kind === "images");
}

/** Inputs this server cannot answer are off, with the reason beside them (config.json says which). */
function applyCapabilities(config) {
  const note = $("capability-note");
  if (config.images === false) {
    $("files").disabled = true;
    $("drop").classList.add("disabled");
    $("drop").setAttribute("aria-disabled", "true");
    $("drop").tabIndex = -1;
    $("pick-photos").classList.add("disabled");
    $("pick-folder").classList.add("disabled");
    $("folder").disabled = true;
  }
  if (config.texts === false) {
    $("text").placeholder = "lat, lng (e.g. 48.8584, 2.2945)";
    $("text-label").textContent = "...give lat, lng (descriptions need CLIP weights)";
  }
  if (config.images === false || config.texts === false) {
    note.textContent = config.reason ?? "this server answers coordinates only";
    note.hidden = false;
  }
}

// -- wiring ------------------------------------------------------------------------------------
let view;

async function main() {
  try {
    state.config = { ...state.config, ...(await getJson("/config.json")) };
  } catch (e) {
    showError(`page configuration: ${e.message}`);
  }
  $("top-k").max = String(state.config.max_top_k);
  applyCapabilities(state.config);
  view = createMap($("map"), state.config);
  window.geoindex = { state, view }; // for the console and the browser tests
  view.onMapClick(setTrue);
  getJson("/v1/index").then((info) => {
    const g = info.gallery ?? {};
    const what = g.resolution != null ? `H3 res ${g.resolution}${g.cells ? ` ${g.cells}` : ""}` : (g.kind ?? "");
    $("index-info").textContent = `${what} gallery: ${plural(Number(info.ntotal), "cell")}, ${info.factory}`;
  }).catch((e) => { $("index-info").textContent = `index: ${e.message}`; });

  const files = $("files");
  for (const input of [files, $("folder")]) {
    input.addEventListener("change", () => {
      const picked = [...input.files].filter((f) => input === files || f.type.startsWith("image/"));
      if (picked.length && state.config.images !== false) run({ kind: "images", files: picked });
      input.value = "";
    });
  }
  const drop = $("drop");
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => {
      e.preventDefault();
      drop.classList.add("over");
    });
  }
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", async (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const dropped = await droppedFiles(e.dataTransfer);
    if (state.config.images === false) return showError(`photos: ${state.config.reason}`);
    if (dropped.length) run({ kind: "images", files: dropped });
  });
  drop.addEventListener("keydown", (e) => {
    if ((e.key === "Enter" || e.key === " ") && !files.disabled) files.click();
  });

  $("text-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("text").value.trim();
    if (!text) return showError("type a description of a place, or lat, lng");
    const coords = parseCoordinates(text);
    if (coords?.error) return showError(coords.error); // never sent as a description
    if (coords) {
      const query = { kind: "point", latlng: coords.latlng };
      forgetAnswer(query);
      if (state.trueSource !== "click") setTrue(coords.latlng, "point"); // how far the answer is from it
      run(query);
    } else if (state.config.texts === false) {
      showError(`descriptions: ${state.config.reason}`);
    } else {
      run({ kind: "text", text });
    }
  });

  for (const id of ["top-k", "confidence", "country", "refine"]) $(id).addEventListener("change", rerun);
  $("locate").addEventListener("click", rerun);
  $("clear-true").addEventListener("click", () => setTrue(null));

  const drawButton = $("draw-box");
  drawButton.addEventListener("click", () => {
    if (drawButton.getAttribute("aria-pressed") === "true") {
      view.stopBox();
      drawButton.setAttribute("aria-pressed", "false");
      return;
    }
    drawButton.setAttribute("aria-pressed", "true");
    setStatus("Drag on the map to draw the box to search in.");
    view.startBox((bboxes) => {
      drawButton.setAttribute("aria-pressed", "false");
      setBoxes(bboxes);
      rerun();
    });
  });
  $("clear-box").addEventListener("click", () => {
    setBoxes([]);
    rerun();
  });

  const all = () => state.entries;
  $("export-csv").addEventListener("click", () => save(toCsv(all()), "text/csv", fileStem() + ".csv"));
  $("export-geojson").addEventListener("click", () => save(toGeoJson(all()), "application/geo+json",
    fileStem() + "-all.geojson"));
  $("export-kml").addEventListener("click", () => save(toKml(all()), "application/vnd.google-earth.kml+xml",
    fileStem() + ".kml"));
  $("download-json").addEventListener("click", () => save(state.raw, "application/json", fileStem() + ".json"));
  $("download-geojson").addEventListener("click", async () => {
    try {
      save(await locate(state.query, state.filters, "geojson"), "application/geo+json", fileStem() + ".geojson");
    } catch (e) {
      showError(`GeoJSON download: ${e.message}`);
    }
  });
  await view.loaded;
  document.body.dataset.ready = "true";
}

function setBoxes(bboxes) {
  state.bboxes = bboxes;
  view.setBoxes(bboxes);
  $("bbox-text").textContent = bboxes.map((b) => b.join(", ")).join(" + ");
  $("clear-box").disabled = !bboxes.length;
}

main();
