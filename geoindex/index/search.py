"""Search settings: how a query searches an index, parsed once, at the edge, from a string.

A search string is FAISS's parameter string (``faiss.ParameterSpace``: ``"nprobe=16"``,
``"efSearch=64"``, ``"k_factor=8"``) plus geoindex's own knobs: ``"rerank=32"`` re-scores the 32
best candidates exactly (:mod:`geoindex.locate.rerank`), ``"refine=4"`` moves the 4 best below the
grid to local maxima of the exact score (:mod:`geoindex.locate.refine`). The builder stores one in the manifest as
the index's default; ``geolocate --search`` and ``QueryOptions(search=...)`` give one per call. Each
becomes a :class:`SearchSettings` where it enters (CLI flag, manifest, QueryOptions) and travels as
that object: the core never splits a string.

A per-call setting is laid over the index's default with :meth:`SearchSettings.over`: every knob
the call names wins, the rest come from the index.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace

import faiss

from geoindex.errors import InvalidArgumentError

MAX_RERANK = 4096
MAX_REFINE = 64
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# FAISS knobs the core reads: string key -> field; any other name goes to ParameterSpace as is
_KNOBS = {"nprobe": "nprobe", "efSearch": "ef_search"}
_PER_CALL_HINT = "use e.g. nprobe=16 for IVF, efSearch=64 for HNSW, or an empty string for Flat"


def _number(text: str) -> int | float:
    value = float(text)  # ValueError for non-numbers; ParameterSpace reads doubles
    return int(value) if value.is_integer() and re.fullmatch(r"[+-]?\d+", text.strip()) else value


@dataclass(frozen=True)
class SearchSettings:
    """One search's settings (frozen). Usually made from a search string with :meth:`parse`.

    ``None`` means "not named here" (a per-call setting then takes the index's); ``rerank=0``
    turns a stored re-ranking off, ``refine=0`` a stored refinement.

    Args:
        nprobe: IVF lists probed.
        ef_search: HNSW beam width.
        rerank: candidates re-scored exactly per query, 0..MAX_RERANK (4,096).
        refine: best candidates refined below the grid per query, 0..MAX_REFINE (64).
        faiss_extra: other FAISS ``ParameterSpace`` pairs in the order given (``k_factor``,
            ``quantizer_efSearch``, ...): applied to the index object when it opens, not per call.
    """

    nprobe: int | None = None
    ef_search: int | None = None
    rerank: int | None = None
    refine: int | None = None
    faiss_extra: tuple[tuple[str, int | float], ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> SearchSettings:
        """Parse a search string.

        Args:
            text: comma-separated ``name=number`` pairs, e.g. ``"nprobe=16,rerank=32"``; None or
                ``""`` names nothing.

        Returns:
            The settings, e.g. ``SearchSettings(nprobe=16, rerank=32)``.

        Raises:
            InvalidArgumentError: a part that is not ``name=number`` or a value out of range; the
                message names the bad part and the fix.
        """
        values: dict[str, int] = {}
        extra: list[tuple[str, int | float]] = []
        for part in (text or "").split(","):
            part = part.strip()
            if not part:
                continue
            name, eq, raw = (s.strip() for s in part.partition("="))
            if name in _OWN:
                values[name] = _own_knob(part, name, raw)
                continue
            try:
                if not (eq and _NAME.match(name)):
                    raise ValueError(part)
                value = _number(raw)
            except ValueError:
                raise InvalidArgumentError(
                    f"search parameters {text!r}: {part!r} is not name=number; {_PER_CALL_HINT}, "
                    "rerank=R for exact re-ranking and refine=M to refine the M best below the grid"
                ) from None
            if name in _KNOBS:
                if not isinstance(value, int) or value < 1:
                    raise InvalidArgumentError(
                        f"search parameters {text!r}: {name} takes an integer >= 1, e.g. {name}=16"
                    )
                values[_KNOBS[name]] = value
            else:
                extra.append((name, value))
        return cls(**values, faiss_extra=tuple(extra))

    def over(self, default: SearchSettings) -> SearchSettings:
        """These settings laid over ``default``: a knob named here wins.

        Args:
            default: the settings underneath, usually the index's stored ones.

        Returns:
            The merged settings (FAISS extras merged by name, these last).
        """
        named = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "faiss_extra"}
        merged = replace(default, **{k: v for k, v in named.items() if v is not None})
        if self.faiss_extra:
            mine = dict(self.faiss_extra)
            merged = replace(merged, faiss_extra=tuple(
                [(k, v) for k, v in default.faiss_extra if k not in mine] + list(self.faiss_extra)))
        return merged

    @property
    def rerank_depth(self) -> int:
        """Candidates to re-score exactly (0: none)."""
        return self.rerank or 0

    @property
    def refine_starts(self) -> int:
        """Candidates refined below the grid (0: none)."""
        return self.refine or 0

    @property
    def names_faiss(self) -> bool:
        """Whether any FAISS parameter is named (a per-call one then overrides the index's)."""
        return self.nprobe is not None or self.ef_search is not None or bool(self.faiss_extra)

    def faiss_pairs(self) -> list[tuple[str, int | float]]:
        """The FAISS parameters named here as ``(name, value)`` pairs, in ParameterSpace's names."""
        pairs = [("nprobe", self.nprobe), ("efSearch", self.ef_search), *self.faiss_extra]
        return [(k, v) for k, v in pairs if v is not None]

    def faiss_string(self) -> str:
        """The FAISS part as ParameterSpace reads it: ``"nprobe=16"`` ("" when none)."""
        return ",".join(f"{k}={v}" for k, v in self.faiss_pairs())

    def __str__(self) -> str:
        """The canonical search string (what a manifest stores): FAISS's part, then rerank, refine."""
        own = [f"{k}={getattr(self, k)}" for k in _OWN if getattr(self, k) is not None]
        return ",".join([p for p in [self.faiss_string()] if p] + own)


# geoindex's own knobs: name -> (upper bound, what it does, an example)
_OWN = {
    "rerank": (MAX_RERANK, "the candidates re-scored exactly per query", "rerank=32"),
    "refine": (MAX_REFINE, "the best candidates refined below the grid per query", "refine=4"),
}


def _own_knob(part: str, name: str, raw: str) -> int:
    top, what, example = _OWN[name]
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= top:
        raise InvalidArgumentError(
            f"search parameter {part!r}: {name} takes an integer 0..{top}, {what}, e.g. {example} (0: off)"
        )
    return value


def faiss_reason(e: RuntimeError) -> str:
    """FAISS's own sentence from a C++ exception, without the source location."""
    return str(e).strip().splitlines()[-1].rsplit(": ", 1)[-1][:200]


def apply_search_settings(index: faiss.Index, settings: SearchSettings) -> None:
    """Set the FAISS part on ``index`` itself (its default for every search); InvalidArgumentError
    when FAISS refuses. Re-ranking is geoindex's: applied at query time."""
    search = settings.faiss_string()
    if not search:
        return
    try:
        faiss.ParameterSpace().set_index_parameters(index, search)
    except RuntimeError as e:
        raise InvalidArgumentError(
            f"search parameters {search!r} do not fit this index ({faiss_reason(e)}): {_PER_CALL_HINT}"
        ) from e


def per_call_params(index: faiss.Index, settings: SearchSettings) -> faiss.SearchParameters:
    """A thread-safe per-query override of ``nprobe`` (IVF) or ``efSearch`` (HNSW) as a
    SearchParameters object, leaving the index's own defaults untouched."""
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index
    is_ivf, is_hnsw = isinstance(inner, faiss.IndexIVF), isinstance(inner, faiss.IndexHNSW)
    allowed = ["nprobe"] if is_ivf else ["efSearch"] if is_hnsw else []
    if is_ivf and isinstance(faiss.downcast_index(inner.quantizer), faiss.IndexHNSW):
        allowed.append("quantizer_efSearch")
    named = [k for k, _ in settings.faiss_pairs()]
    if any(k not in allowed for k in named):
        raise InvalidArgumentError(
            f"search parameters {settings.faiss_string()!r} do not fit this index: it takes "
            f"{' and '.join(f'{a}=N (N >= 1)' for a in allowed) if allowed else 'no FAISS search parameters (exact)'}"
            ", and rerank=R for exact re-ranking"
        )
    extra = dict(settings.faiss_extra)
    if is_ivf and (settings.nprobe is not None or "quantizer_efSearch" in extra):
        params = faiss.SearchParametersIVF()
        params.nprobe = min(settings.nprobe or inner.nprobe, inner.nlist)
        if "quantizer_efSearch" in extra:
            quantizer = faiss.SearchParametersHNSW()
            quantizer.efSearch = int(extra["quantizer_efSearch"])
            params.quantizer_params = quantizer
            params.referenced_objects = [quantizer]  # FAISS holds a raw pointer: keep it alive
    elif settings.ef_search is not None:
        params = faiss.SearchParametersHNSW()
        params.efSearch = settings.ef_search
    else:
        params = faiss.SearchParameters()
    return params
