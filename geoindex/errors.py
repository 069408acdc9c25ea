"""Exceptions raised by geoindex.

Every error subclasses :class:`GeoindexError` and the builtin that fits (as h3-py's
``H3ValueError``), so callers can catch either. Messages name the bad value and the fix.
"""

from __future__ import annotations


class GeoindexError(Exception):
    """Base class of every geoindex error."""


class InvalidArgumentError(GeoindexError, ValueError):
    """A parameter (resolution, factory string, k, ...) is out of range or malformed."""


class InvalidCoordinateError(GeoindexError, ValueError):
    """A latitude/longitude is not a finite number inside [-90, 90] x [-180, 180]."""


class GalleryFileError(GeoindexError, ValueError):
    """A custom gallery CSV cannot be read or holds a bad row."""


class TrainingDataError(GeoindexError, ValueError):
    """A photos CSV, a feature cache or a training folder cannot be used as given."""


class WeightsNotFoundError(GeoindexError, FileNotFoundError):
    """Pretrained weights are not on disk (and cannot be downloaded here)."""


class IndexDirError(GeoindexError, OSError):
    """An index directory is missing, incomplete, corrupt, or not ours to overwrite."""


class MissingDependencyError(GeoindexError, ImportError):
    """An optional package is needed for this feature; the message gives the pip command."""


class InvalidImageError(GeoindexError, ValueError):
    """An input is not a readable image (empty, truncated, not an image format)."""


class ImageTooLargeError(GeoindexError, ValueError):
    """An image has more pixels than the configured limit (decompression-bomb guard)."""


class InvalidQueryError(GeoindexError, ValueError):
    """A query (embedding, k, filter, text) is malformed or out of range."""


class WriteError(GeoindexError, OSError):
    """A file cannot be written: the disk is full, or the path is read-only or not ours to write."""


class ResultsFileError(GeoindexError, OSError):
    """A results file (``geolocate --out``) cannot be written, or its saved progress belongs to another run."""


class BackendError(GeoindexError, RuntimeError):
    """An inference backend (ONNX Runtime, int8) cannot be used: its export failed, its output
    disagrees with torch beyond the bound, or its cached file is damaged."""
