"""A photo's own record of where and when: EXIF GPS position (with altitude and direction),
DateTimeOriginal (else DateTime), camera make and model, and the file's facts (SHA-256 of its bytes,
pixel width and height from the header).

GPS positions are degrees, minutes and seconds as three rationals plus an N/S or E/W reference
(EXIF 2.3, GPS IFD 0x8825). Anything malformed reads as missing, never as an error: a zero
denominator, minutes or seconds outside [0, 60), a latitude beyond 90 or a longitude beyond 180,
a reference other than N/S/E/W (a wrong sign is worse than none), a receiver status of "V" (void),
and exactly 0, 0 (what cameras without a fix often write). Reading the EXIF never decodes pixels.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from datetime import datetime

from PIL import Image

GPS_IFD = 0x8825
EXIF_IFD = 0x8769
GPS_STATUS, GPS_LAT_REF, GPS_LAT, GPS_LNG_REF, GPS_LNG = 9, 1, 2, 3, 4
GPS_ALT_REF, GPS_ALT, GPS_IMG_DIRECTION = 5, 6, 17
DATETIME_ORIGINAL = 0x9003
DATETIME, MAKE, MODEL = 0x0132, 0x010F, 0x0110  # IFD0


@dataclass(frozen=True)
class PhotoExif:
    """What a photo says about itself: ``lat, lng`` in degrees (both None when it has no usable
    GPS position) and ``taken_at`` (the camera's local clock, no time zone; None when absent)."""

    lat: float | None = None
    lng: float | None = None
    taken_at: datetime | None = None
    altitude_m: float | None = None  # GPSAltitude, negative below sea level (GPSAltitudeRef 1)
    direction_deg: float | None = None  # GPSImgDirection, degrees in [0, 360)
    camera_make: str | None = None
    camera_model: str | None = None
    sha256: str | None = None  # of the file's bytes (chain of custody)
    width: int | None = None  # pixels, from the header
    height: int | None = None

    @property
    def has_gps(self) -> bool:
        return self.lat is not None and self.lng is not None


def _number(value) -> float | None:
    """A rational (PIL IFDRational, a (num, den) pair, an int or float) -> finite float or None."""
    try:
        if isinstance(value, tuple) and len(value) == 2:
            num, den = (float(v) for v in value)
            out = num / den if den else math.nan
        else:
            out = float(value)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None
    return out if math.isfinite(out) else None


def _text(value) -> str:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return str(value).strip("\x00 ").upper() if value is not None else ""


def dms_to_degrees(dms, ref, positive: str, negative: str, limit: float) -> float | None:
    """(degrees, minutes, seconds) and a reference letter -> signed degrees, or None when any
    part is missing or out of range."""
    ref = _text(ref)
    if ref not in (positive, negative):
        return None
    if isinstance(dms, (int, float)) or (isinstance(dms, tuple) and len(dms) == 2):
        dms = (dms,)  # some writers store decimal degrees as one rational
    try:
        parts = [_number(v) for v in dms][:3]
    except TypeError:
        return None
    if not parts or any(p is None or p < 0 for p in parts):
        return None
    parts += [0.0] * (3 - len(parts))
    deg, minutes, seconds = parts
    if minutes >= 60 or seconds >= 60:
        return None
    value = deg + minutes / 60 + seconds / 3600
    if value > limit:
        return None
    value = round(value, 7)  # 1 cm: what a DMS rational holds, without binary noise (2.2944999999999998)
    return -value if ref == negative else value


def _gps(exif) -> tuple[float | None, float | None]:
    gps = exif.get_ifd(GPS_IFD)
    if not gps or _text(gps.get(GPS_STATUS)) == "V":
        return None, None
    lat = dms_to_degrees(gps.get(GPS_LAT), gps.get(GPS_LAT_REF), "N", "S", 90.0)
    lng = dms_to_degrees(gps.get(GPS_LNG), gps.get(GPS_LNG_REF), "E", "W", 180.0)
    if lat is None or lng is None or (lat == 0 and lng == 0):
        return None, None
    return lat, lng


def parse_exif_datetime(value) -> datetime | None:
    """EXIF "YYYY:MM:DD HH:MM:SS" -> naive datetime; None when blank or malformed."""
    text = _text(value)
    for fmt in ("%Y:%m:%d %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y:%m:%d %H:%M"):
        try:
            return datetime.strptime(text[:19], fmt)
        except ValueError:
            continue
    return None


def _quietly(read, exif, default):
    try:
        return read(exif)
    except Exception:  # noqa: BLE001 -- malformed EXIF raises anything from struct.error to SyntaxError: "absent"
        return default


def _gps_extras(exif) -> tuple[float | None, float | None]:
    gps = exif.get_ifd(GPS_IFD)
    if not gps:
        return None, None
    alt = _number(gps.get(GPS_ALT)) if gps.get(GPS_ALT) is not None else None
    ref = gps.get(GPS_ALT_REF, 0)
    if isinstance(ref, bytes):  # a BYTE tag: b"\x01" is below sea level
        ref = ref[0] if ref else 0
    if alt is not None and _number(ref) == 1:
        alt = -alt
    direction = _number(gps.get(GPS_IMG_DIRECTION)) if gps.get(GPS_IMG_DIRECTION) is not None else None
    if direction is not None and not 0 <= direction <= 360:
        direction = None
    return alt, (None if direction is None else direction % 360)


def _name(value) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = str(value).strip("\x00 ") if value is not None else ""
    return text or None


def _taken(exif) -> datetime | None:
    """DateTimeOriginal, else IFD0's DateTime (the file's last change, often the capture time)."""
    original = _quietly(lambda e: parse_exif_datetime(e.get_ifd(EXIF_IFD).get(DATETIME_ORIGINAL)), exif, None)
    return original or _quietly(lambda e: parse_exif_datetime(e.get(DATETIME)), exif, None)


def read_exif(data: bytes) -> PhotoExif:
    """The EXIF facts and file facts of an encoded image (any format PIL reads); what cannot be
    parsed reads as absent (one broken field does not hide the other). Never raises."""
    import hashlib

    digest = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as img:
            exif = img.getexif()
            width, height = img.size
    except Exception:  # noqa: BLE001 -- not an image at all: the decoder reports that, not this
        return PhotoExif(sha256=digest)
    lat, lng = _quietly(_gps, exif, (None, None))
    altitude, direction = _quietly(_gps_extras, exif, (None, None))
    return PhotoExif(lat, lng, _taken(exif), altitude, direction, _quietly(lambda e: _name(e.get(MAKE)), exif, None),
                     _quietly(lambda e: _name(e.get(MODEL)), exif, None), digest, int(width), int(height))
