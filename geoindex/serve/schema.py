"""What the API accepts and answers, as pydantic models built from one server's limits.

The limits (embeddings per request, top_k, the index's resolution, ...) are settings, so the
request models are made per app: the OpenAPI schema then states exactly what the server enforces,
and pydantic enforces it (a 422 naming the field) before a route runs. Checks JSON Schema cannot
say (an all-zero embedding, a region with no cells in the index, image bytes that decode) stay in
the routes and answer 422/415 with the fix.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field, create_model

from geoindex.encoders.clip import MAX_TEXT_CHARS
from geoindex.index.search import MAX_REFINE

# An H3 cell id is 0x08... (mode 1): 15 hex digits starting with 8, or 18 decimal digits in
# [0x0800000000000000, 0x0900000000000000). What /v1/cells/{cell} and the cells filter take.
H3_OR_DECIMAL = r"^(8[0-9a-fA-F]{14}|(5[7-9]|6[0-4])[0-9]{16})$"
COUNTRY = r"^[A-Za-z]{2}$"
_NUM = r" *-?[0-9]{1,3}(\.[0-9]{1,12})? *"
BBOX_TEXT = rf"^{_NUM}(,{_NUM}){{3}}$"  # "w,s,e,n" in a multipart form
Lng = Annotated[float, Field(ge=-180, le=180)]
Lat = Annotated[float, Field(ge=-90, le=90)]
BBox = tuple[Lng, Lat, Lng, Lat]  # west, south, east, north
NOT_BLANK = r"\S"
Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS, pattern=NOT_BLANK)]

# what a refused value should have looked like, in words (pydantic would quote the regex)
PATTERN_WORDS = {
    H3_OR_DECIMAL: "should be an H3 cell id: 15 hex digits starting with 8 (e.g. 851fb467fffffff) or its decimal form",
    COUNTRY: "should be an ISO 3166-1 alpha-2 code (e.g. FR, US, JP)",
    BBOX_TEXT: "should be west,south,east,north in degrees (e.g. -5.2,41.3,9.6,51.1)",
    NOT_BLANK: "should be a description such as 'a beach with palm trees', not blank",
    "^(json|geojson)$": "should be json or geojson",
}


# -- answers ---------------------------------------------------------------------------------------
class ErrorDetail(BaseModel):
    status: int
    type: str = Field(description="e.g. ValidationError, InvalidQueryError, RequestTooLarge")
    message: str = Field(description="what was wrong and how to fix it")
    detail: Any = Field(None, description="per-field validation errors, when there are several")


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Prediction(BaseModel):
    cell: int = Field(description="H3 cell id (int64), or the row number in a CSV gallery")
    cell_h3: str | None = Field(description="the cell id in hex; null for CSV galleries")
    lat: float
    lng: float
    probability: float = Field(description="softmax over the candidates, summed per aggregate cell")
    score: float = Field(description="cosine similarity of the query and the best cell")
    country: str | None = Field(description="ISO 3166-1 alpha-2 of the admin-0 polygon holding this point; null at sea")
    admin1: str | None
    place: str | None = Field(description="the nearest GeoNames place of that country")
    place_km: float | None = Field(None, description="great-circle km from this point to `place`")


class Neighbour(BaseModel):
    id: int = Field(description="the reference photo's id: its image is GET /v1/photos/{id}/image (with --photos-root)")
    image: str = Field(description="its path as the reference CSV wrote it")
    lat: float
    lng: float
    similarity: float = Field(description="cosine similarity of the query and the photo's embedding")
    km_from_top: float = Field(description="great-circle km from the top prediction")
    metadata: dict = Field(description="the CSV's other columns")
    place: str | None = None
    admin1: str | None = None
    country: str | None = None


class Result(BaseModel):
    predictions: list[Prediction]
    confidence_region: dict | None = Field(None, description="GeoJSON Feature: the cells holding the asked mass")
    neighbours: list[Neighbour] | None = Field(None, description="nearest reference photos (server run with --photos)")
    radius_km: float | None = Field(None, description="great-circle km around the top prediction holding "
                                                      "`radius_confidence` of the mass (uncalibrated: docs/querying.md)")
    radius_confidence: float | None = Field(None, description="the share of the mass `radius_km` holds (the asked "
                                                              "confidence, default 0.9)")
    warnings: list[str] | None = Field(None, description="e.g. filter countries that have no cells in this index")
    # uploaded photos only (POST /v1/locate): what the photo's own EXIF says
    exif_lat: float | None = Field(None, description="uploaded photos: the EXIF GPS latitude (null when none)")
    exif_lng: float | None = Field(None, description="uploaded photos: the EXIF GPS longitude (null when none)")
    km_from_exif: float | None = Field(None, description="uploaded photos: km from the top prediction to the EXIF position")
    taken_at: str | None = Field(None, description="uploaded photos: EXIF DateTimeOriginal (else DateTime), ISO 8601, camera clock")
    exif_country: str | None = Field(None, description="uploaded photos: the EXIF position's country (admin-0 polygon)")
    exif_admin1: str | None = Field(None, description="uploaded photos: the EXIF position's first-level division")
    exif_place: str | None = Field(None, description="uploaded photos: the nearest place of that country to the EXIF position")


class LocateResponse(BaseModel):
    results: list[Result] = Field(description="one per query, in request order")


class EmbeddingsResponse(BaseModel):
    embeddings: list[list[float]] = Field(description="one 512-d L2-normalised GeoCLIP location vector per coordinate, in order")
    inside_region: list[bool] = Field(description="per coordinate: inside the region this index was built for "
                                                  "(always true for a global index)")


class FeatureCollection(BaseModel):
    type: str = Field(description="FeatureCollection")
    features: list[dict] = Field(description="one Point per prediction (and a region per query when asked)")


def locate_responses(*extra: int) -> dict:
    """OpenAPI responses of a locate route: JSON or GeoJSON, and the refusals every route can give."""
    ok = {"model": LocateResponse, "content": {"application/geo+json": {"schema": FeatureCollection.model_json_schema()}},
          "description": "predictions per query (GeoJSON with ?format=geojson or Accept: application/geo+json)"}
    return {200: ok, **refusals(408, 413, 415, 422, *extra)}


_REASONS = {
    400: "malformed multipart body",
    404: "no such cell in this index",
    408: "the request body stalled (this server's --body-timeout)",
    413: "request body, image file or decoded pixels over this server's limits",
    415: "not an image, or not a JSON body on a JSON route",
    422: "a value outside what this schema states, or a query this index cannot answer",
    503: "image and text queries need CLIP weights (the server runs with --embeddings-only)",
}


def refusals(*codes: int) -> dict:
    return {code: {"model": ErrorResponse, "description": _REASONS[code]} for code in codes}


# -- requests ----------------------------------------------------------------------------------------
def _number_only(value):
    """pydantic's lax mode reads "0.5" and true as numbers; the schema says number: refuse them."""
    if isinstance(value, (str, bool)):
        raise ValueError(f"{value!r} is a {type(value).__name__}, give a JSON number")
    return value


def number(kind: type, **bounds):
    """An int or float field type with its bounds, as a JSON number only (see _number_only)."""
    return Annotated[kind, Field(**bounds), BeforeValidator(_number_only)]  # this order: the schema shows the bounds


def bounds_of(annotation) -> dict:
    """The ge/gt/le/lt of a field type made by :func:`number` (also inside ``| None``)."""
    from typing import get_args

    from pydantic.fields import FieldInfo

    out = {}
    for arg in get_args(annotation):
        if isinstance(arg, FieldInfo):
            out.update({k: getattr(m, k) for m in arg.metadata for k in ("ge", "gt", "le", "lt") if hasattr(m, k)})
        else:
            out.update(bounds_of(arg))
    return out


def filter_fields(max_top_k: int, max_candidates: int, resolution: int | None) -> dict:
    """The fields every locate route shares, bounded by the server's limits and the index. Numbers
    are JSON numbers as the schema says: "5" or true is refused, not coerced (2.0 is the integer 2)."""
    res = resolution if resolution is not None else 15
    return {
        "top_k": (number(int, ge=1, le=max_top_k), Field(5, description="predictions per query")),
        "candidates": (number(int, ge=1, le=max_candidates), Field(256, description="cells the softmax runs over")),
        "country": (list[Annotated[str, Field(pattern=COUNTRY)]],
                    Field(default_factory=list, description="ISO 3166-1 alpha-2 codes (OR)")),
        "bbox": (list[BBox] | BBox | None, Field(None, description="[w,s,e,n] or a list of them (OR); s < n, w < e")),
        "cells": (list[Annotated[str, Field(pattern=H3_OR_DECIMAL)]],
                  Field(default_factory=list, description="H3 cells at the index's resolution or coarser (OR)")),
        "aggregate_res": (number(int, ge=0, le=res) | None, Field(None, description="sum probability into H3 parents")),
        "confidence": (number(float, gt=0, le=1) | None, Field(None, description="also return the region holding this mass")),
        "joint": (bool, Field(False, description=(
            "the queries are photos of one place: one answer from all of them (summed embedding, "
            "n x the logit scale; docs/querying.md)"))),
        "refine": (number(int, ge=0, le=MAX_REFINE) | None, Field(None, description=(
            "refine the best M cells below the grid with the location encoder: lat, lng become the refined "
            "points, score their exact cosine (0: off; default: the index's)"))),
    }


def coordinates_model(max_coordinates: int) -> type[BaseModel]:
    """The body of POST /v1/embed/locations: 1..max_coordinates [lat, lng] pairs in degrees."""
    return create_model("CoordinatesRequest", coordinates=(
        list[tuple[number(float, ge=-90, le=90), number(float, ge=-180, le=180)]],
        Field(..., min_length=1, max_length=max_coordinates, examples=[[[48.8584, 2.2945]]],
              description=f"1..{max_coordinates} [lat, lng] pairs in degrees")))


def request_models(max_top_k: int, max_candidates: int, resolution: int | None, dim: int,
                   max_texts: int, max_embeddings: int) -> tuple[type[BaseModel], ...]:
    """(Filters, TextRequest, EmbeddingRequest) for one server."""
    shared = filter_fields(max_top_k, max_candidates, resolution)
    filters = create_model("Filters", **shared)
    text = create_model("TextRequest", texts=(
        list[Text], Field(..., min_length=1, max_length=max_texts, examples=[["a beach with palm trees"]],
                          description=f"descriptions of places, 1..{max_texts}, each 1..{MAX_TEXT_CHARS} characters")),
        **shared)
    # "not all zero" as JSON Schema says it (pydantic leaves it to validate_embeddings)
    vector = Annotated[list[float], Field(min_length=dim, max_length=dim,
                                          json_schema_extra={"contains": {"not": {"const": 0}}})]
    embedding = create_model("EmbeddingRequest", embeddings=(
        list[vector], Field(..., min_length=1, max_length=max_embeddings,
                            description=f"1..{max_embeddings} GeoCLIP embeddings of {dim} finite numbers, not all zero")),
        **shared)
    return filters, text, embedding
