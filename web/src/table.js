// The result list (one entry per photo or query) and the predictions table of the selected one.
import { distanceKm, osmUrl, plural } from "./geo.js";
import { escapeHtml } from "./map.js";

const km = (d) => (d < 10 ? d.toFixed(1) : Math.round(d).toLocaleString("en-US"));
const pct = (p) => `${(p * 100).toFixed(p >= 0.0995 ? 1 : 2)}%`;
const where = (p) => [p.place, p.admin1, p.country].filter(Boolean).join(", ") || "(no place)";

/** entries: [{label, thumb|null, result}]; the selected one is pressed. */
export function renderResultList(ol, entries, selected, onSelect) {
  ol.replaceChildren(...entries.map((entry, i) => {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.result = String(i);
    button.setAttribute("aria-pressed", String(i === selected));
    const top = entry.result.predictions[0];
    button.innerHTML = `${entry.thumb ? `<img src="${entry.thumb}" alt="" loading="lazy" decoding="async">` : `<span class="thumb-text">Aa</span>`}
      <span><span class="label">${escapeHtml(entry.label)}</span>
      <span class="muted small">${top ? `${escapeHtml(where(top))} &middot; ${pct(top.probability)}`
    : entry.result.error ? `<span class="photo-error">${escapeHtml(entry.result.error)}</span>` : "no cells"}</span>
      ${facts(entry.result)}
      </span>`;
    button.addEventListener("click", () => onSelect(i));
    li.append(button);
    return li;
  }));
}

/** Under a result's label: its radius (radius_km, when sent) and the distance to the photo's EXIF position. */
function facts(result) {
  const out = [];
  if (result.radius_km != null) out.push(`<span class="radius">within ${km(result.radius_km)} km</span>`);
  if (result.km_from_exif != null) out.push(`<span class="exif-km">${km(result.km_from_exif)} km from EXIF</span>`);
  return out.length ? `<span class="muted small facts">${out.join(" &middot; ")}</span>` : "";
}

/** The table of one result's predictions; distances to the true location when one is set. */
export function renderTable(table, result, trueLatLng, onHover) {
  const tbody = table.tBodies[0];
  table.hidden = !result;
  table.querySelectorAll(".true-col").forEach((th) => { th.hidden = !trueLatLng; });
  if (!result) {
    tbody.replaceChildren();
    return;
  }
  const preds = result.predictions;
  const top = preds.length ? [preds[0].lat, preds[0].lng] : null;
  tbody.replaceChildren(...preds.map((p, rank) => {
    const tr = document.createElement("tr");
    Object.assign(tr.dataset, {
      cell: p.cell_h3 ?? "", rank: String(rank + 1), probability: String(p.probability),
      lat: String(p.lat), lng: String(p.lng),
    });
    const fromTop = distanceKm(top, [p.lat, p.lng]);
    const cells = [
      [String(rank + 1), "num"], [p.place ?? "", ""], [p.admin1 ?? "", ""], [p.country ?? "", ""],
      [pct(p.probability), "num"], [`${p.lat.toFixed(3)}, ${p.lng.toFixed(3)}`, "num"],
      [km(fromTop), "num from-top"],
    ];
    if (trueLatLng) cells.push([km(distanceKm(trueLatLng, [p.lat, p.lng])), "num to-true"]);
    for (const [text, cls] of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      if (cls) td.className = cls;
      tr.append(td);
    }
    if (p.place_km != null) tr.cells[1].title = `${km(p.place_km)} km from ${p.place}`;
    const osm = Object.assign(document.createElement("a"), {
      href: osmUrl(p.lat, p.lng), target: "_blank", rel: "noopener noreferrer", textContent: "OSM",
      className: "osm", title: "open this prediction in OpenStreetMap (online)" });
    const td = document.createElement("td");
    td.append(osm);
    tr.append(td);
    tr.querySelector(".from-top").dataset.km = String(fromTop);
    tr.title = p.cell_h3 ? `cell ${p.cell_h3}, score ${p.score.toFixed(4)}` : `row ${p.cell}`;
    tr.addEventListener("mouseenter", () => onHover?.(p.cell_h3, true));
    tr.addEventListener("mouseleave", () => onHover?.(p.cell_h3, false));
    return tr;
  }));
}

/** "90% within 120 km of the best guess", from the answer's radius_km (when the server sends one). */
export function radiusLine(result) {
  const radius = result?.radius_km ?? result?.predictions?.[0]?.radius_km;
  if (radius == null) return "";
  // the share radius_km holds: the answer's own word for it, else the asked confidence
  const confidence = result.radius_confidence ?? result.confidence_region?.properties?.confidence ?? null;
  return `${confidence != null ? `${Math.round(confidence * 100)}%` : "The confidence mass is"} within `
    + `${km(radius)} km of the best guess`;
}

/** One line under the map: the best guess, its region, and how far off it is. */
export function summaryText(result, trueLatLng, trueName = "the true location") {
  if (result?.error) return `Not located: ${result.error}`; // a photo the server refused (e.g. 413)
  if (!result || !result.predictions.length) return "";
  const p = result.predictions[0];
  let text = `Best guess: ${where(p)} (${pct(p.probability)}).`;
  const region = result.confidence_region?.properties;
  if (region) {
    text += ` ${Math.round(region.confidence * 100)}% confidence region: ${plural(region.cells.length, "cell")}`
      + ` (${pct(region.mass)} of the mass).`;
  }
  const radius = radiusLine(result);
  if (radius) text += ` ${radius}.`;
  if (trueLatLng) text += ` The best guess is ${km(distanceKm(trueLatLng, [p.lat, p.lng]))} km from ${trueName}.`;
  for (const warning of result.warnings ?? []) text += ` Note: ${warning}`;  // e.g. filter countries with no cells here
  return text;
}

/** The nearest reference photos (server run with --photos) as thumbnails with similarity and distance. */
export function renderNeighbours(el, result) {
  const neighbours = result?.neighbours ?? [];
  el.replaceChildren();
  el.hidden = neighbours.length === 0;
  neighbours.forEach((n, i) => {
    const fig = document.createElement("figure");
    fig.className = "neighbour";
    fig.dataset.photo = String(n.id);
    const img = Object.assign(document.createElement("img"), { src: `/v1/photos/${Number(n.id)}/image`,
      alt: n.image, loading: "lazy", title: n.image });
    img.addEventListener("error", () => img.classList.add("missing"));
    const cap = document.createElement("figcaption");
    cap.textContent = `${i + 1}. sim ${n.similarity.toFixed(3)}, ${Math.round(n.km_from_top).toLocaleString()} km from #1`;
    fig.append(img, cap);
    el.append(fig);
  });
}
