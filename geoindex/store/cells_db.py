"""Per-cell metadata: computed per shard, stored in DuckDB table ``cells``.

Columns: ``cell`` BIGINT primary key (H3 id; the CSV row number for CSV galleries), ``lat``,
``lng`` DOUBLE (cell centre, degrees), ``res`` TINYINT (NULL for CSV rows), ``area_km2`` DOUBLE
(NULL for CSV rows), ``is_land`` BOOLEAN, ``country`` VARCHAR (ISO 3166-1 alpha-2), ``admin1``
VARCHAR, ``place`` VARCHAR (nearest GeoNames place of that country), ``place_km`` DOUBLE (distance to it;
NULL where the country has no place). Labels follow :mod:`geoindex.cells.countries` (label version 2).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from geoindex.cells.gallery import CellBatch, cell_areas_km2
from geoindex.cells.countries import cell_radius_km
from geoindex.cells.geocode import reverse_geocode

CELLS_DDL = """
CREATE TABLE cells (
    cell BIGINT PRIMARY KEY,
    lat DOUBLE NOT NULL,
    lng DOUBLE NOT NULL,
    res TINYINT,
    area_km2 DOUBLE,
    is_land BOOLEAN NOT NULL,
    country VARCHAR,
    admin1 VARCHAR,
    place VARCHAR,
    place_km DOUBLE
)
"""
STRING_COLUMNS = ("country", "admin1", "place")
DUCKDB_MEMORY_LIMIT = "1GB"  # the build's RSS budget is 4 GiB; DuckDB defaults to 80% of RAM


def shard_metadata(batch: CellBatch, resolution: int | None) -> dict[str, np.ndarray]:
    """Metadata columns for one shard. Strings are fixed-width unicode ('' = NULL) so shards
    save without pickle."""
    geo = reverse_geocode(batch.lat, batch.lng, snap_km=cell_radius_km(resolution))
    n = len(batch)
    if resolution is None:
        res = np.full(n, -1, dtype=np.int8)
        area = np.full(n, np.nan)
    else:
        res = np.full(n, resolution, dtype=np.int8)
        area = cell_areas_km2(batch.cell)

    def text(values: np.ndarray) -> np.ndarray:
        return np.array(["" if v is None else v for v in values], dtype=str).reshape(n)

    return {
        "cell": batch.cell,
        "lat": batch.lat,
        "lng": batch.lng,
        "res": res,
        "area_km2": area,
        "is_land": batch.is_land,
        "country": text(geo.country),
        "admin1": text(geo.admin1),
        "place": text(geo.place),
        "place_km": geo.place_km,
    }


def write_cells_table(db_path: Path, shards: Iterable[dict[str, np.ndarray]]) -> int:
    """Create ``cells`` in a new DuckDB file from shard metadata (in cell order); returns rows."""
    import duckdb
    import pandas as pd

    con = duckdb.connect(str(db_path), config={"memory_limit": DUCKDB_MEMORY_LIMIT})
    try:
        con.execute(CELLS_DDL)
        rows = 0
        for meta in shards:
            frame = pd.DataFrame({k: meta[k] for k in (
                "cell", "lat", "lng", "res", "area_km2", "is_land", *STRING_COLUMNS, "place_km")})
            con.register("shard", frame)
            con.execute(
                """INSERT INTO cells SELECT cell, lat, lng, NULLIF(res, -1), CASE WHEN isnan(area_km2)
                   THEN NULL ELSE area_km2 END, is_land, NULLIF(country, ''), NULLIF(admin1, ''),
                   NULLIF(place, ''), CASE WHEN isnan(place_km) THEN NULL ELSE place_km END FROM shard"""
            )
            con.unregister("shard")
            rows += len(frame)
        con.execute("CHECKPOINT")
    finally:
        con.close()
    return rows
