"""Refinement below the grid: settle each answer at a local maximum of cos(q, f(lat, lng)).

The gallery is the location encoder ``f`` sampled at H3 cell centres, so a grid answer is off by
up to half a cell (res 6: median 2.4 km on real photo locations). ``f`` is smooth: the index only
has to find the basin, and the encoder can settle the point inside it. Each query's best ``M``
candidate cells are starts; every start moves to a nearby local maximum of the exact score; the
refined points are ranked by that exact score. All queries' starts share each encoder pass.

Movement happens on the sphere: a start ``c`` (unit 3-vector) with its east/north tangent basis,
and a point at tangent offset (x, y) km is ``exp_c(x e + y n)``, read back as lat = asin(z),
lng = atan2(y, x). So nothing jumps 360 degrees at the antimeridian and no latitude passes 90,
and a polar cell is refined like any other (at a pole the basis follows the centre's longitude).

Three ways to climb, measured side by side in ``benchmarks/bench_refine.py``:

- ``newton``: a 7-point hexagonal stencil of radius h around the current point (one
  batched pass), a least-squares quadratic through the 7 exact scores, and a step to its maximum
  (a gradient step of length h where the fit is not concave), clipped to a trust radius of 2h;
  h shrinks 4x per iteration; one last pass scores the final points. 7T + 1 encoder points a
  start, T + 1 passes.
- ``descent`` (default: the most accurate per unit of time, and the most robust, on real photo
  locations): H3 child descent, the 7 children of the current cell one resolution finer, keep the
  best, down ``levels`` resolutions (6 new points a level, the centre child shares its parent's
  centre). The climb holds the two slow branches (sigma 2^0, 2^4) at the start's value and
  evaluates only the fine one (sigma 2^8): a third of the encoder per point; over the few km a
  climb covers the slow branches move ~5% as much as the fine one. The slow branches held come
  from the last level that ran every branch (a res-3 start's first level) when there was one, so
  they cost no pass of their own. One last full pass scores the points reached exactly (~8 encoder
  points a start at the default 3 levels). Beyond ``POLAR_LAT`` every branch runs (near a pole the
  slow branches are not slow).
- ``adam``: torch autograd through the encoder on the tangent offset, a fixed number of Adam steps
  (one forward and one backward pass each).

Whatever the method, a start's answer is the best point it evaluated, its own centre included: a
refined score is never below the starting cell's exact score.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from geoindex.cells import geocode
from geoindex.cells.geocode import EARTH_RADIUS_KM
from geoindex.errors import InvalidArgumentError

HOLD_KM = 20.0  # descent holds the slow branches on levels whose cells are at most this far apart
REANCHOR_KM = 8.0  # ... evaluated anew once the climb is this far from where they were (res 4 starts)
# Equal Earth maps each pole to a line, so there a few km across meridians are a long way for the
# encoder: a start at 89.96 S scores 0.13 against a place 21 km away. Beyond this latitude the
# descent evaluates every branch.
POLAR_LAT = 70.0
METHODS = ("newton", "descent", "adam")
DEFAULT_REFINE = 4  # starts per query when ``--refine`` is given without a number

# hexagonal stencil: the centre and 6 points at unit distance; the quadratic basis on it
_STENCIL = np.array([[0.0, 0.0]] + [[np.cos(a), np.sin(a)] for a in np.arange(6) * np.pi / 3])
_BASIS = np.column_stack([np.ones(7), _STENCIL[:, 0], _STENCIL[:, 1], _STENCIL[:, 0] ** 2,
                          _STENCIL[:, 0] * _STENCIL[:, 1], _STENCIL[:, 1] ** 2])
_FIT = np.linalg.pinv(_BASIS)  # (6, 7): scores at the stencil -> quadratic coefficients


def cell_spacing_km(resolution: int) -> float:
    """Mean distance between neighbouring H3 cell centres at ``resolution`` (edge x sqrt 3)."""
    import h3

    return float(h3.average_hexagon_edge_length(resolution, unit="km") * np.sqrt(3))


# -- the sphere ----------------------------------------------------------------------------------
def to_xyz(latlng: np.ndarray) -> np.ndarray:
    lat, lng = np.radians(latlng[..., 0]), np.radians(latlng[..., 1])
    return np.stack((np.cos(lat) * np.cos(lng), np.cos(lat) * np.sin(lng), np.sin(lat)), axis=-1)


def to_latlng(xyz: np.ndarray) -> np.ndarray:
    xyz = xyz / np.linalg.norm(xyz, axis=-1, keepdims=True)
    lat = np.degrees(np.arcsin(np.clip(xyz[..., 2], -1.0, 1.0)))
    lng = np.degrees(np.arctan2(xyz[..., 1], xyz[..., 0]))
    return np.stack((lat, lng), axis=-1)


def tangent_basis(latlng: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit east and north vectors at each point (defined at the poles too: from the longitude)."""
    lat, lng = np.radians(latlng[..., 0]), np.radians(latlng[..., 1])
    east = np.stack((-np.sin(lng), np.cos(lng), np.zeros_like(lng)), axis=-1)
    north = np.stack((-np.sin(lat) * np.cos(lng), -np.sin(lat) * np.sin(lng), np.cos(lat)), axis=-1)
    return east, north


def move(latlng: np.ndarray, offset_km: np.ndarray) -> np.ndarray:
    """Points ``offset_km`` (..., 2: east, north) away from ``latlng`` along great circles."""
    c = to_xyz(latlng)
    east, north = tangent_basis(latlng)
    d = np.linalg.norm(offset_km, axis=-1, keepdims=True)
    direction = offset_km[..., :1] * east + offset_km[..., 1:] * north
    safe = np.where(d > 0, d, 1.0)
    angle = d / EARTH_RADIUS_KM
    return to_latlng(c * np.cos(angle) + direction / safe * np.sin(angle))


# -- the climb -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RefineSettings:
    """How starts climb. ``radius_km``: the first stencil radius (newton), Adam's step (adam);
    None = half the index's cell spacing."""

    method: str = "descent"
    iterations: int = 1  # newton: stencil fits; adam: steps
    levels: int = 3  # descent: resolutions below the start's
    hold_coarse: bool = True  # descent: climb on the fine branch, the slow ones held at the start
    shrink: float = 4.0
    radius_km: float | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InvalidArgumentError(f"refine method {self.method!r} is not one of {', '.join(METHODS)}")


class Refiner:
    """Refines starts with a location encoder (loaded on first use by ``model_of``)."""

    def __init__(self, model_of, settings: RefineSettings | None = None):
        self._model_of = model_of  # () -> LocationEncoder
        self.settings = settings or RefineSettings()
        self._lock = threading.Lock()
        self.points_encoded = 0  # encoder points evaluated so far (benchmarks read it)

    def scores(self, xq: np.ndarray, latlng: np.ndarray, slow: bool = False):
        """Exact cosines: (n, 512) unit queries, (n, p, 2) points -> (n, p) float64. With ``slow``
        also the slow branches' sum at each point, (n, p, 512) torch, kept from the same pass (the
        descent holds them from the point a full pass picked, :meth:`_coarse` without its pass)."""
        import torch

        model = self._model_of()
        n, p = latlng.shape[:2]
        # no_grad, not inference_mode, when the slow branches are kept: they are updated in place
        with torch.no_grad() if slow else torch.inference_mode():
            pts = torch.as_tensor(latlng.reshape(-1, 2), dtype=torch.float32).to(model.w1.device)
            out, part = model.branches(pts, tuple(range(len(model.b))), partial=2)  # forward's operations
            f = torch.nn.functional.normalize(out, dim=1).reshape(n, p, -1)
            q = torch.as_tensor(xq, dtype=torch.float32).to(f.device)
            s = torch.einsum("npd,nd->np", f, q)
        with self._lock:
            self.points_encoded += n * p
        s = s.cpu().numpy().astype(np.float64)
        return (s, part.reshape(n, p, -1)) if slow else s

    def _coarse(self, latlng: np.ndarray):
        """(n, m, 2) -> (n, m, 512) torch: the slow branches (sigma 2^0, 2^4) at each point."""
        import torch

        model = self._model_of()
        with torch.no_grad():  # not inference_mode: the result is updated in place where starts move
            pts = torch.as_tensor(latlng.reshape(-1, 2), dtype=torch.float32).to(model.w1.device)
            out = model.branches(pts, (0, 1))
        with self._lock:
            self.points_encoded += 2 * len(pts) / 3
        return out.reshape(*latlng.shape[:2], -1)

    def _held_scores(self, xq: np.ndarray, latlng: np.ndarray, coarse):
        """Cosines with the slow branches held at ``coarse`` (n, m, 512) and the fine one (sigma
        2^8) evaluated at (n, m, p, 2) points: a third of an encoder pass. Over the few km a climb
        covers the slow branches move ~5% as much as the fine one (measured at 1-12 km). Returns
        the (n, m, p) scores and the fine branch's (n, m, p, 512) vectors."""
        import torch

        model = self._model_of()
        n, m, p = latlng.shape[:3]
        with torch.inference_mode():
            pts = torch.as_tensor(latlng.reshape(-1, 2), dtype=torch.float32).to(model.w1.device)
            fine = model.branches(pts, (len(model.b) - 1,)).reshape(n, m, p, -1)
            f = torch.nn.functional.normalize(fine + coarse[:, :, None, :], dim=-1)
            s = torch.einsum("nmpd,nd->nmp", f, torch.as_tensor(xq, dtype=torch.float32).to(f.device))
        with self._lock:
            self.points_encoded += n * m * p / 3
        return s.cpu().numpy().astype(np.float64), fine

    def _exact_from_fine(self, xq: np.ndarray, latlng: np.ndarray, fine) -> np.ndarray:
        """Exact cosines at (k, 2) points whose fine-branch vectors (k, 512) are known: only the
        slow branches are evaluated (two thirds of an encoder pass)."""
        import torch

        coarse = self._coarse(latlng[:, None, :])[:, 0]
        with torch.no_grad():
            f = torch.nn.functional.normalize(coarse + fine, dim=-1)
            s = (f * torch.as_tensor(xq, dtype=torch.float32).to(f.device)).sum(-1)
        return s.cpu().numpy().astype(np.float64)

    def refine(self, xq: np.ndarray, starts: np.ndarray, cells: np.ndarray | None = None,
               resolution: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(n, 512) unit queries and (n, m, 2) start points (cell centres; ``cells`` their (n, m)
        H3 ids for ``descent``) -> refined (n, m, 2) lat, lng and their (n, m) exact scores."""
        from geoindex.encoders.location import small_work_threads

        with small_work_threads(starts.shape[0] * starts.shape[1] * 7):  # the largest pass: 7 points a start
            return self._refine(xq, starts, cells, resolution)

    def _refine(self, xq, starts, cells, resolution):
        s = self.settings
        radius = s.radius_km or cell_spacing_km(resolution if resolution is not None else 6) / 2
        if s.method == "newton":
            return self._newton(xq, starts, radius)
        if s.method == "descent":
            if cells is None or resolution is None:
                raise InvalidArgumentError("refine method 'descent' needs an H3 index (cells to descend from)")
            polar = np.abs(starts[..., 0]) > POLAR_LAT
            if not (s.hold_coarse and polar.any()):
                return self._descent(xq, starts, cells, resolution, s.hold_coarse)
            # near a pole the slow branches are not slow: every branch runs for those starts, each
            # start its own row, so that no start climbs twice
            pts, scores = np.empty(starts.shape), np.empty(starts.shape[:2])
            for group, hold in ((~polar, True), (polar, False)):
                i, j = np.nonzero(group)
                if len(i):
                    pts[i, j], scores[i, j] = (a[:, 0] for a in self._descent(
                        xq[i], starts[i, j][:, None], cells[i, j][:, None], resolution, hold))
            return pts, scores
        return self._adam(xq, starts, radius)

    def _newton(self, xq, starts, radius):
        n, m = starts.shape[:2]
        s = self.settings
        centre, h = starts.astype(np.float64), radius
        best_pt, best = centre.copy(), np.full((n, m), -np.inf)
        for _ in range(s.iterations):
            offsets = h * _STENCIL  # (7, 2) km
            pts = move(np.repeat(centre[:, :, None, :], 7, axis=2), np.broadcast_to(offsets, (n, m, 7, 2)))
            sc = self.scores(xq, pts.reshape(n, m * 7, 2)).reshape(n, m, 7)
            best_pt, best, _, _ = _keep_best(best_pt, best, pts, sc)
            c = sc @ _FIT.T  # (n, m, 6): a, gx, gy, xx, xy, yy in units of h
            g = c[..., 1:3]
            hxx, hxy, hyy = 2 * c[..., 3], c[..., 4], 2 * c[..., 5]
            det = hxx * hyy - hxy**2
            concave = (hxx < 0) & (det > 0)
            safe = np.where(concave, det, 1.0)
            newton = -np.stack((hyy * g[..., 0] - hxy * g[..., 1], hxx * g[..., 1] - hxy * g[..., 0]), -1) / safe[..., None]
            gnorm = np.linalg.norm(g, axis=-1, keepdims=True)
            ascent = g / np.where(gnorm > 0, gnorm, 1.0)
            step = np.where(concave[..., None], newton, ascent)
            length = np.linalg.norm(step, axis=-1, keepdims=True)
            step = step * np.minimum(1.0, 2.0 / np.where(length > 0, length, 1.0))  # trust radius 2h
            centre = move(centre, step * h)
            h /= s.shrink
        sc = self.scores(xq, centre)
        return _keep_best(best_pt, best, centre[:, :, None, :], sc[:, :, None])[:2]

    def _descent(self, xq, starts, cells, resolution, hold_coarse: bool):
        """Greedy H3 child descent; the start's own score rides in the first level's pass (its
        centre child has the same centre). With ``hold_coarse`` the levels score the fine branch
        only and one last full pass scores the points reached exactly."""
        import h3
        import torch

        n, m = starts.shape[:2]
        best_pt = starts.astype(np.float64).copy()
        best = np.full((n, m), -np.inf)
        coarse, anchor = None, None  # the slow branches, and where they were evaluated
        held = None  # the slow branches at the best points of a level that ran every branch
        fine_best, exact_known = None, np.zeros((n, m), bool)  # the best points' fine vectors
        current = cells.astype(np.int64).copy()
        last = min(15, resolution + self.settings.levels)
        for level in range(resolution + 1, last + 1):
            kids = np.full((n, m, 6), -1, dtype=np.int64)
            centre_kids = np.full((n, m), -1, dtype=np.int64)
            for i, j in zip(*np.nonzero(current >= 0)):
                parent = h3.int_to_str(int(current[i, j]))
                centre = h3.cell_to_center_child(parent, level)
                others = [h3.str_to_int(c) for c in h3.cell_to_children(parent, level) if c != centre]
                kids[i, j, : len(others)] = others  # a pentagon has 5
                centre_kids[i, j] = h3.str_to_int(centre)
            pts = np.array([h3.cell_to_latlng(h3.int_to_str(int(c))) if c >= 0 else (0.0, 0.0)
                            for c in kids.ravel()]).reshape(n, m, 6, 2)
            if level == resolution + 1:
                pts = np.concatenate((best_pt[:, :, None, :], pts), axis=2)
                kids = np.concatenate((current[:, :, None], kids), axis=2)
            hold = hold_coarse and cell_spacing_km(level) <= HOLD_KM
            fine = slow = None
            if hold:
                # the slow branches anew where the climb has gone more than REANCHOR_KM from where
                # they were evaluated (a res-4 or -5 start's first levels); a res-6 start keeps its own
                stale = (np.ones((n, m), bool) if anchor is None
                         else geocode.haversine_km(anchor[..., 0], anchor[..., 1], best_pt[..., 0],
                                                    best_pt[..., 1]) > REANCHOR_KM)
                if anchor is None and held is not None:  # kept from the last level's full pass
                    coarse, anchor = held, best_pt.copy()
                elif stale.all():
                    coarse, anchor = self._coarse(best_pt), best_pt.copy()
                elif stale.any():
                    coarse[on(stale, coarse)] = self._coarse(best_pt[stale][None])[0]
                    anchor[stale] = best_pt[stale]
                sc, fine = self._held_scores(xq, pts, coarse)
            elif hold_coarse:  # every branch runs: the slow ones' sum kept for the first level held
                sc, slow = self.scores(xq, pts.reshape(n, -1, 2), slow=True)
                sc, slow = sc.reshape(n, m, -1), None if slow is None else slow.reshape(n, m, pts.shape[2], -1)
            else:
                sc = self.scores(xq, pts.reshape(n, -1, 2)).reshape(n, m, -1)
            if level == resolution + 1:
                start_score = sc[:, :, 0].copy()  # exact: the slow branches are the start's own
            sc[kids < 0] = -np.inf
            best_pt, best, pick, better = _keep_best(best_pt, best, pts, sc)
            if slow is not None:  # the slow branches at the best points so far (the first level has the starts)
                now = torch.take_along_dim(slow, on(pick, slow)[:, :, None, None], dim=2)[:, :, 0]
                held = now if held is None else torch.where(on(better, now)[..., None], now, held)
            exact_known = np.where(better, fine is None, exact_known)
            if fine is not None:
                chosen = torch.take_along_dim(fine, on(pick, fine)[:, :, None, None], dim=2)[:, :, 0]
                fine_best = chosen if fine_best is None else torch.where(on(better, chosen)[..., None], chosen, fine_best)
            # next level: the best child's cell, or the centre child when none beat the current point
            moved = better & (np.take_along_axis(kids, pick[..., None], 2)[..., 0] != current)
            current = np.where(moved, np.take_along_axis(kids, pick[..., None], 2)[..., 0], centre_kids)
        if last == resolution:  # nothing finer to descend into: just score the starts
            return best_pt, self.scores(xq, best_pt)
        if fine_best is not None:  # exact scores where a start moved; the start itself where not better
            moved = np.any(best_pt != starts, axis=-1)
            exact = np.where(exact_known, best, start_score)
            todo = moved & ~exact_known
            if todo.any():
                exact[todo] = self._exact_from_fine(xq[np.nonzero(todo)[0]], best_pt[todo], fine_best[on(todo, fine_best)])
            better = exact > start_score
            best_pt = np.where(better[..., None], best_pt, starts)
            best = np.where(better, exact, start_score)
        return best_pt, best

    def _adam(self, xq, starts, radius):
        """Adam on each start's tangent offset (km), gradients by torch autograd through the
        Equal Earth projection, the Fourier features and the MLPs."""
        import torch

        n, m = starts.shape[:2]
        model = self._model_of()
        dev = model.w1.device
        c = torch.as_tensor(to_xyz(starts), dtype=torch.float64, device=dev)
        east, north = (torch.as_tensor(v, dtype=torch.float64, device=dev) for v in tangent_basis(starts))
        q = torch.as_tensor(xq, dtype=torch.float32, device=dev)
        offset = torch.zeros((n, m, 2), dtype=torch.float64, device=dev, requires_grad=True)
        opt = torch.optim.Adam([offset], lr=radius / 2)
        best_pt, best = starts.astype(np.float64).copy(), np.full((n, m), -np.inf)
        for step in range(self.settings.iterations + 1):
            with torch.enable_grad():
                d = offset.norm(dim=-1, keepdim=True).clamp_min(1e-12)
                direction = offset[..., :1] * east + offset[..., 1:] * north
                p = c * torch.cos(d / EARTH_RADIUS_KM) + direction / d * torch.sin(d / EARTH_RADIUS_KM)
                p = p / p.norm(dim=-1, keepdim=True)
                lat = torch.rad2deg(torch.asin(p[..., 2].clamp(-1, 1)))
                lng = torch.rad2deg(torch.atan2(p[..., 1], p[..., 0]))
                latlng = torch.stack((lat, lng), -1).reshape(-1, 2).float()
                f = torch.nn.functional.normalize(model(latlng), dim=1).reshape(n, m, -1)
                sc = torch.einsum("nmd,nd->nm", f, q)
                pts = torch.stack((lat, lng), -1).detach().cpu().numpy()
                best_pt, best, _, _ = _keep_best(best_pt, best, pts[:, :, None, :],
                                                 sc.detach().cpu().numpy().astype(np.float64)[:, :, None])
                if step == self.settings.iterations:
                    break
                opt.zero_grad()
                (-sc.sum()).backward()
                opt.step()
        with self._lock:
            self.points_encoded += n * m * (self.settings.iterations + 1)
        return best_pt, best


def on(index: np.ndarray, like):
    """A numpy index or mask as a tensor on ``like``'s device (CUDA when the encoder is there)."""
    import torch

    return torch.as_tensor(index, device=like.device)


def _keep_best(best_pt, best, pts, sc):
    """Fold (n, m, p) scored points into the best-so-far (n, m) points and scores; also the (n, m)
    column picked and where it beat the best so far."""
    pick = sc.argmax(axis=2)
    top = np.take_along_axis(sc, pick[..., None], 2)[..., 0]
    better = top > best
    chosen = np.take_along_axis(pts, pick[..., None, None], 2)[:, :, 0]
    return np.where(better[..., None], chosen, best_pt), np.where(better, top, best), pick, better
