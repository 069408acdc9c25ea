"""How errors become answers: every refusal is ``{"error": {"status", "type", "message"}}`` with the
status its kind deserves (:func:`status_for`); :data:`HANDLERS` is what ``FastAPI(exception_handlers=)`` takes."""

from __future__ import annotations

import logging

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from geoindex.errors import (
    GeoindexError,
    ImageTooLargeError,
    IndexDirError,
    InvalidArgumentError,
    InvalidImageError,
    InvalidQueryError,
    WeightsNotFoundError,
)
from geoindex.serve.http import error_response
from geoindex.serve.schema import PATTERN_WORDS

log = logging.getLogger("geoindex.serve")


def status_for(e: GeoindexError) -> int:
    if isinstance(e, ImageTooLargeError):
        return 413
    if isinstance(e, InvalidImageError):
        return 415
    if isinstance(e, (WeightsNotFoundError, IndexDirError)):
        return 503
    if isinstance(e, (InvalidQueryError, InvalidArgumentError)):
        return 422
    return 500


async def geoindex_error(request: Request, e: GeoindexError):
    status = status_for(e)
    if status >= 500:
        log.error("request failed: %s", e)
    return error_response(status, type(e).__name__, str(e))


async def validation_error(request: Request, e: RequestValidationError):
    """The first error in one line, ``field = value: what it should be``; all of them in ``detail``."""
    errors = e.errors()
    first = errors[0] if errors else {}
    where = ".".join(str(x) for x in first.get("loc", ()))
    value = first.get("input")
    shown = f" = {value!r}" if isinstance(value, (int, float, str)) and len(repr(value)) <= 60 else ""
    msg = first.get("msg", "invalid request")
    if first.get("type") == "string_pattern_mismatch":
        msg = PATTERN_WORDS.get(first.get("ctx", {}).get("pattern"), msg)
    message = f"{where}{shown}: {msg}"
    if first.get("type") == "json_invalid":
        message += (f" ({first.get('ctx', {}).get('error', 'malformed')}): send standard JSON; NaN and Infinity "
                    "are not JSON numbers, every value must be finite")
    return error_response(422, "ValidationError", message, errors)


async def http_error(request: Request, e: HTTPException):
    return error_response(e.status_code, "HTTPError", str(e.detail))


async def unexpected_error(request: Request, e: Exception):
    log.exception("unexpected error on %s", request.url.path)
    return error_response(500, "InternalError", "unexpected server error; the request was not processed")


HANDLERS = {GeoindexError: geoindex_error, RequestValidationError: validation_error, HTTPException: http_error,
            Exception: unexpected_error}
