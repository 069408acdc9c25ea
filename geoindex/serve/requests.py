"""What the API accepts: request models, defined once at module level, and this server's limits.

The models state what every server accepts (types, bounds that hold everywhere: an embedding is
512 finite numbers, a latitude is in [-90, 90]). The limits that are settings (embeddings per
request, top_k, the index's resolution, ...) live in one table, :data:`LIMITS`, that does two things:
:func:`check_limits` refuses a request over them with the same 422 pydantic would give (naming the
field, the value and the flag that sets the limit), and :func:`stamp_limits` writes them into the
OpenAPI schema, so ``/docs`` states exactly what the running server enforces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field

from geoindex.encoders.clip import MAX_TEXT_CHARS
from geoindex.encoders.location import EMBED_DIM
from geoindex.index.search import MAX_REFINE
from geoindex.serve.schema import COUNTRY, H3_OR_DECIMAL, BBox, Text, number

MAX_RES = 15  # H3's finest resolution: the bound where the index has none (a CSV gallery)


@dataclass(frozen=True)
class Limits:
    """One server's limits on requests (from :class:`ServeSettings` and the index)."""

    max_top_k: int = 100
    max_candidates: int = 4096
    resolution: int = MAX_RES
    max_texts: int = 64
    max_embeddings: int = 256
    max_coordinates: int = 1024
    max_images: int = 16

    @classmethod
    def of(cls, settings, resolution: int | None) -> Limits:
        return cls(settings.max_top_k, settings.max_candidates, MAX_RES if resolution is None else resolution,
                   settings.max_texts, settings.max_embeddings, settings.max_coordinates, settings.max_images)


# field -> (Limits attribute, JSON Schema keyword, the flag that sets it); one table for the check and the schema
LIMITS = {
    "top_k": ("max_top_k", "maximum", "--max-top-k"),
    "candidates": ("max_candidates", "maximum", "--max-candidates"),
    "aggregate_res": ("resolution", "maximum", "the index's resolution"),
    "texts": ("max_texts", "maxItems", "--max-texts"),
    "embeddings": ("max_embeddings", "maxItems", "--max-embeddings"),
    "coordinates": ("max_coordinates", "maxItems", "--max-coordinates"),
    "images": ("max_images", "maxItems", "--max-images"),
}


def check_limits(values: dict, limits: Limits) -> None:
    """Refuse (422, as pydantic would) the first field of ``values`` over this server's limit."""
    for name, value in values.items():
        if name not in LIMITS or value is None:
            continue
        attr, keyword, flag = LIMITS[name]
        limit = getattr(limits, attr)
        if keyword == "maxItems" and len(value) > limit:
            error = {"type": "too_long", "input": None, "ctx": {"max_length": limit},
                     "msg": f"List should have at most {limit} items, not {len(value)} (this server's {flag})"}
        elif keyword == "maximum" and value > limit:
            error = {"type": "less_than_equal", "input": value, "ctx": {"le": limit},
                     "msg": f"Input should be less than or equal to {limit} (this server's {flag})"}
        else:
            continue
        raise RequestValidationError([{**error, "loc": ("body", name)}])


def stamp_limits(spec: dict, limits: Limits) -> dict:
    """Write ``limits`` into every request schema of an OpenAPI document (in place; returns it): the
    bodies of this module and the multipart forms (``Body_...``), never an answer's schema."""
    requests = {model.__name__ for model in (Filters, TextRequest, EmbeddingRequest, CoordinatesRequest)}
    for title, schema in spec.get("components", {}).get("schemas", {}).items():
        if title not in requests and not title.startswith("Body_"):
            continue
        for name, prop in schema.get("properties", {}).items():
            if name not in LIMITS:
                continue
            attr, keyword, _ = LIMITS[name]
            for branch in prop.get("anyOf", [prop]):  # X | None: the non-null branch
                if branch.get("type") in ("integer", "number", "array"):
                    branch[keyword] = getattr(limits, attr)
    return spec


# -- the bodies ----------------------------------------------------------------------------------------
class Filters(BaseModel):
    """The fields every locate route shares. Numbers are JSON numbers as the schema says: "5" or
    true is refused, not coerced (2.0 is the integer 2)."""

    top_k: number(int, ge=1) = Field(5, description="predictions per query")
    candidates: number(int, ge=1) = Field(256, description="cells the softmax runs over")
    country: list[Annotated[str, Field(pattern=COUNTRY)]] = Field(
        default_factory=list, description="ISO 3166-1 alpha-2 codes (OR)")
    bbox: list[BBox] | BBox | None = Field(None, description="[w,s,e,n] or a list of them (OR); s < n, w < e")
    cells: list[Annotated[str, Field(pattern=H3_OR_DECIMAL)]] = Field(
        default_factory=list, description="H3 cells at the index's resolution or coarser (OR)")
    aggregate_res: number(int, ge=0, le=MAX_RES) | None = Field(None, description="sum probability into H3 parents")
    confidence: number(float, gt=0, le=1) | None = Field(None, description="also return the region holding this mass")
    joint: bool = Field(False, description=("the queries are photos of one place: one answer from all of them "
                                            "(summed embedding, n x the logit scale; docs/querying.md)"))
    refine: number(int, ge=0, le=MAX_REFINE) | None = Field(None, description=(
        "refine the best M cells below the grid with the location encoder: lat, lng become the refined "
        "points, score their exact cosine (0: off; default: the index's)"))


class TextRequest(Filters):
    texts: list[Text] = Field(..., min_length=1, examples=[["a beach with palm trees"]],
                              description=f"descriptions of places, each 1..{MAX_TEXT_CHARS} characters")


# "not all zero" as JSON Schema says it (pydantic leaves it to validate_embeddings)
Vector = Annotated[list[float], Field(min_length=EMBED_DIM, max_length=EMBED_DIM,
                                      json_schema_extra={"contains": {"not": {"const": 0}}})]


class EmbeddingRequest(Filters):
    embeddings: list[Vector] = Field(..., min_length=1, description=(
        f"GeoCLIP embeddings of {EMBED_DIM} finite numbers, not all zero"))


class CoordinatesRequest(BaseModel):
    """The body of POST /v1/embed/locations: [lat, lng] pairs in degrees."""

    coordinates: list[tuple[number(float, ge=-90, le=90), number(float, ge=-180, le=180)]] = Field(
        ..., min_length=1, examples=[[[48.8584, 2.2945]]], description="[lat, lng] pairs in degrees")
