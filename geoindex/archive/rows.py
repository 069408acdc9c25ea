"""One flat row per photo: the schema of the results table and how an answer becomes a row.

Columns (Arrow types; every format writes the same names):

========================  ==============================================================
``path``                  string: the photo's absolute path
``lat``, ``lng``          float64 degrees: the top prediction (refined with ``--refine``),
                          or the EXIF position when ``source`` is ``exif``
``probability``           float64: the top prediction's probability (null for ``exif``)
``cell``                  string: its H3 cell (hex), or the row number in a CSV gallery
``country``, ``admin1``,  string: where that is (ISO alpha-2, first-level division, nearest
``place``                 GeoNames place)
``top_k``                 list of structs (rank, lat, lng, probability, score, cell, country,
                          admin1, place), best first; JSON text in CSV
``confidence_km``         float64 (only with ``--confidence``): the radius around the top
                          prediction that holds the confidence region's cells
``radius_km``             float64: km around the top prediction holding 90% of the mass (the
                          asked ``--confidence``; docs/querying.md)
``place_km``              float64: km from the top prediction (or EXIF position) to ``place``
``exif_lat``, ``exif_lng``  float64: the photo's own GPS position (null when it has none)
``km_from_exif``          float64: great-circle km from the top prediction to it
``taken_at``              timestamp (ms): EXIF DateTimeOriginal, else DateTime; camera clock, no time zone
``exif_altitude_m``       float64: GPSAltitude (negative below sea level)
``exif_direction_deg``    float64: GPSImgDirection, degrees
``camera_make``,          string: EXIF Make and Model
``camera_model``
``sha256``                string: SHA-256 of the file's bytes (null when it could not be read)
``width``, ``height``     int32: pixels, from the image header
``source``                string: ``model``, or ``exif`` (``--exif trust``: the model skipped); null on failure
``error``                 string: empty when the photo was located, else why it was not
``run_id``                string: joins the row to the provenance in the Parquet file's key-value
                          metadata (key ``geoindex.provenance``: index, its manifest's SHA-256,
                          models, weights hashes, geoindex version, options)
========================  ==============================================================
"""

from __future__ import annotations

import h3
import numpy as np
import pyarrow as pa

from geoindex.archive.exif import PhotoExif
from geoindex.cells.geocode import haversine_km
from geoindex.locate.options import LocateResult

TOP_K_TYPE = pa.list_(pa.struct([
    ("rank", pa.int32()), ("lat", pa.float64()), ("lng", pa.float64()), ("probability", pa.float64()),
    ("score", pa.float64()), ("cell", pa.string()), ("country", pa.string()), ("admin1", pa.string()),
    ("place", pa.string()),
]))


PROVENANCE_KEY = b"geoindex.provenance"


def provenance(settings: dict) -> dict:
    """Where rows come from: the run's settings (index, models, options) with the index manifest's
    SHA-256, the location encoder's weights hash, the label version and the geoindex version;
    ``run_id``: the first 16 hex digits of the SHA-256 of the settings (a resumed run, which must
    have the same settings, keeps it)."""
    import hashlib
    import json
    from pathlib import Path

    from geoindex.constants import __version__
    from geoindex.cells.countries import LABEL_VERSION

    out = {**settings, "geoindex_version": __version__, "label_version": LABEL_VERSION}
    manifest = Path(str(settings.get("index", ""))) / "manifest.json"
    try:
        raw = manifest.read_bytes()
        out["index_manifest_sha256"] = hashlib.sha256(raw).hexdigest()
        out["location_weights_sha256"] = json.loads(raw).get("encoder", {}).get("weights_sha256")
    except (OSError, ValueError):
        out["index_manifest_sha256"] = out["location_weights_sha256"] = None
    out["run_id"] = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return out


def stamp(rows: list[dict], table_schema: pa.Schema) -> list[dict]:
    """Set each row's ``run_id`` from the schema's provenance (rows built before it is known)."""
    import json

    meta = table_schema.metadata or {}
    run_id = json.loads(meta[PROVENANCE_KEY])["run_id"] if PROVENANCE_KEY in meta else None
    for row in rows:
        row["run_id"] = run_id
    return rows


def schema(with_confidence: bool, provenance: dict | None = None) -> pa.Schema:
    """The results table's Arrow schema; ``confidence_km`` only when ``--confidence`` was given;
    ``provenance`` (:func:`provenance`) as key-value metadata, which Parquet keeps."""
    fields = [("path", pa.string()), ("lat", pa.float64()), ("lng", pa.float64()), ("probability", pa.float64()),
              ("cell", pa.string()), ("country", pa.string()), ("admin1", pa.string()), ("place", pa.string()),
              ("top_k", TOP_K_TYPE)]
    if with_confidence:
        fields.append(("confidence_km", pa.float64()))
    fields += [("radius_km", pa.float64()), ("place_km", pa.float64()),
               ("exif_lat", pa.float64()), ("exif_lng", pa.float64()), ("km_from_exif", pa.float64()),
               ("taken_at", pa.timestamp("ms")), ("exif_altitude_m", pa.float64()), ("exif_direction_deg", pa.float64()),
               ("camera_make", pa.string()), ("camera_model", pa.string()), ("sha256", pa.string()),
               ("width", pa.int32()), ("height", pa.int32()), ("source", pa.string()), ("error", pa.string()),
               ("run_id", pa.string())]
    if provenance is None:
        return pa.schema(fields)
    import json

    return pa.schema(fields, metadata={PROVENANCE_KEY: json.dumps(provenance, sort_keys=True, default=str).encode()})


def _cell_text(cell: int, cell_h3: str | None) -> str:
    return cell_h3 if cell_h3 is not None else str(cell)


def _km(a_lat, a_lng, b_lat, b_lng) -> float | None:
    if None in (a_lat, a_lng, b_lat, b_lng):
        return None
    return float(haversine_km(a_lat, a_lng, b_lat, b_lng))


def exif_fields(exif: PhotoExif, result: LocateResult) -> dict:
    """The EXIF columns of one answer as JSON values (the HTTP answer for an uploaded photo, a
    single photo's JSON): ``exif_lat``, ``exif_lng``, ``km_from_exif`` (from the top prediction),
    ``taken_at`` (ISO 8601), and the EXIF position's own labels ``exif_country``, ``exif_admin1``,
    ``exif_place`` (by the rule every point follows; null without a position)."""
    top = result.predictions[0] if result.predictions else None
    labels = {"exif_country": None, "exif_admin1": None, "exif_place": None}
    if exif.has_gps:
        from geoindex.cells.geocode import reverse_geocode

        geo = reverse_geocode([exif.lat], [exif.lng])
        labels = {"exif_country": geo.country[0], "exif_admin1": geo.admin1[0], "exif_place": geo.place[0]}
    return {"exif_lat": exif.lat, "exif_lng": exif.lng,
            "km_from_exif": None if top is None else _km(top.lat, top.lng, exif.lat, exif.lng),
            "taken_at": None if exif.taken_at is None else exif.taken_at.isoformat(), **labels}


def region_radius_km(region: dict, lat: float, lng: float) -> float:
    """The confidence region's radius around (lat, lng): the greatest great-circle km from there
    to a vertex of one of its cells, so every cell lies inside the circle."""
    hexes = region["properties"]["cells"]
    verts = np.array([v for h in hexes for v in h3.cell_to_boundary(h)], dtype=np.float64)
    return float(haversine_km(lat, lng, verts[:, 0], verts[:, 1]).max())


def _base(path: str, exif: PhotoExif, with_confidence: bool) -> dict:
    row = {"path": path, "lat": None, "lng": None, "probability": None, "cell": None, "country": None,
           "admin1": None, "place": None, "top_k": None}
    if with_confidence:
        row["confidence_km"] = None
    row.update(radius_km=None, place_km=None, exif_lat=exif.lat, exif_lng=exif.lng, km_from_exif=None,
               taken_at=exif.taken_at, exif_altitude_m=exif.altitude_m, exif_direction_deg=exif.direction_deg,
               camera_make=exif.camera_make, camera_model=exif.camera_model, sha256=exif.sha256,
               width=exif.width, height=exif.height, source="model", error="", run_id=None)
    return row


def located_row(path: str, result: LocateResult, exif: PhotoExif, with_confidence: bool) -> dict:
    """The row of a photo the model located."""
    row = _base(path, exif, with_confidence)
    preds = result.predictions
    if not preds:  # a region filter can leave nothing to rank
        row["error"] = "no cell matched the region filter"
        return row
    top = preds[0]
    row.update(lat=top.lat, lng=top.lng, probability=top.probability, cell=_cell_text(top.cell, top.cell_h3),
               country=top.country, admin1=top.admin1, place=top.place, place_km=top.place_km,
               radius_km=result.radius_km, km_from_exif=_km(top.lat, top.lng, exif.lat, exif.lng))
    row["top_k"] = [{"rank": i, "lat": p.lat, "lng": p.lng, "probability": p.probability, "score": p.score,
                     "cell": _cell_text(p.cell, p.cell_h3), "country": p.country, "admin1": p.admin1,
                     "place": p.place} for i, p in enumerate(preds, 1)]
    if with_confidence and result.confidence_region is not None:
        row["confidence_km"] = region_radius_km(result.confidence_region, top.lat, top.lng)
    return row


def exif_row(path: str, exif: PhotoExif, with_confidence: bool, resolution: int | None) -> dict:
    """The row of a photo whose EXIF position is trusted (``--exif trust``): no model, no
    probability; the cell at the index's resolution and the nearest place of that position."""
    from geoindex.cells.geocode import reverse_geocode

    row = _base(path, exif, with_confidence)
    names = reverse_geocode(np.array([exif.lat]), np.array([exif.lng]))
    row.update(lat=exif.lat, lng=exif.lng, km_from_exif=0.0, source="exif",
               country=names.country[0], admin1=names.admin1[0], place=names.place[0],
               place_km=None if np.isnan(names.place_km[0]) else float(names.place_km[0]),
               cell=h3.latlng_to_cell(exif.lat, exif.lng, resolution) if resolution is not None else None)
    return row


def error_row(path: str, error: str, exif: PhotoExif | None, with_confidence: bool) -> dict:
    """The row of a photo that could not be located: ``error`` says why."""
    row = _base(path, exif or PhotoExif(), with_confidence)
    row.update(source=None, error=error)
    return row
