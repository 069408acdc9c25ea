"""What the API answers, as pydantic models, and the field types and words its requests share.

The request bodies are in :mod:`geoindex.serve.requests`, with the server's limits. Checks JSON
Schema cannot say (an all-zero embedding, a region with no cells in the index, image bytes that
decode) stay in the routes and answer 422/415 with the fix.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field

from geoindex.encoders.clip import MAX_TEXT_CHARS

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
