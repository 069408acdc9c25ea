"""A small photo archive for the archive tests (tests/archive/): JPEG bytes with EXIF GPS and dates,
a folder of good, broken and skipped files, and ``locate``: the ``geolocate`` command in process with the
tiny random CLIP."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from geoindex.archive import exif as exif_mod
from geoindex.cli.locate import main

TOWER = (48.8584, 2.2945)
OPERA = (-33.8568, 151.2153)


def rational(v: float, den: int = 100) -> IFDRational:
    return IFDRational(int(round(v * den)), den)


def dms(value: float) -> tuple:
    v = abs(value)
    d, m = int(v), int((v - int(v)) * 60)
    return (IFDRational(d, 1), IFDRational(m, 1), rational(((v - d) * 60 - m) * 60))


def gps_ifd(lat: float, lng: float) -> dict:
    return {1: "N" if lat >= 0 else "S", 2: dms(lat), 3: "E" if lng >= 0 else "W", 4: dms(lng)}


def jpeg_bytes(color=(30, 120, 200), size=(160, 120), gps: dict | None = None, taken: str | None = None) -> bytes:
    w, h = size
    img = Image.new("RGB", size, color)
    for x in range(0, w, 8):  # some structure, so photos embed apart
        for y in range(h // 2, h):
            img.putpixel((x, y), tuple(255 - c for c in color))
    exif = Image.Exif()
    if gps is not None:
        exif[exif_mod.GPS_IFD] = gps
    if taken is not None:
        exif[exif_mod.EXIF_IFD] = {exif_mod.DATETIME_ORIGINAL: taken}
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, exif=exif.tobytes())
    return buf.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def colour(i: int) -> tuple[int, int, int]:
    return ((37 * i) % 256, (91 * i + 50) % 256, (53 * i + 100) % 256)


def archive(root: Path) -> dict[str, str]:
    """A small photo folder: GPS, no GPS, nested, upper-case suffix, hidden, broken files. Returns
    {name: what the row should say} for the files that must become rows."""
    write(root / "paris.jpg", jpeg_bytes((30, 120, 200), gps=gps_ifd(*TOWER), taken="2023:07:14 18:03:22"))
    write(root / "trip" / "SYDNEY.JPG", jpeg_bytes((210, 170, 90), gps=gps_ifd(*OPERA)))
    write(root / "trip" / "deeper" / "nogps.png", jpeg_bytes((10, 200, 10)))  # a JPEG named .png: PIL reads it
    write(root / "trip" / "truncated.jpg", jpeg_bytes((90, 20, 20), size=(400, 300))[:600])
    write(root / "notes.jpg", b"this is not an image")
    write(root / "empty.jpeg", b"")
    write(root / ".hidden.jpg", jpeg_bytes())  # skipped
    write(root / ".cache" / "thumb.jpg", jpeg_bytes())  # skipped
    write(root / "readme.txt", b"not a photo suffix")  # skipped
    return {"paris.jpg": "ok", "trip/SYDNEY.JPG": "ok", "trip/deeper/nogps.png": "ok",
            "trip/truncated.jpg": "error", "notes.jpg": "error", "empty.jpeg": "error"}


def locate(index, *args) -> int:
    return main([*map(str, args), "--index", str(index), "--clip-model", "tiny-test", "--workers", "2"])
