"""Evaluation during training: the held-out photos' accuracy table against each gallery
(GeoCLIP's 100K gallery, a CSV of coordinates, or an index's cells)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from geoindex.cells.geocode import haversine_km
from geoindex.train.config import FitConfig
from geoindex.train.accuracy import accuracy_table
from geoindex.pipeline.image_features import FeatureCache
from geoindex.train.model import GeoCLIPModel

log = logging.getLogger(__name__)


class EvalGallery:
    """A set of candidate coordinates, encoded with the model being trained at each evaluation."""

    def __init__(self, name: str, latlng: np.ndarray):
        self.name = name
        self.latlng = np.ascontiguousarray(latlng, dtype=np.float64)

    def predict(self, model: GeoCLIPModel, images: torch.Tensor, device: torch.device, trained: bool) -> np.ndarray:
        """(n, 512) unit image vectors -> (n, 2) lat, lng of the best gallery point each (encoded now,
        so ``trained`` changes nothing here)."""
        best = torch.full((len(images),), -2.0, device=device)
        arg = torch.zeros(len(images), dtype=torch.long, device=device)
        coords = torch.from_numpy(self.latlng).float()
        for start in range(0, len(coords), 16384):
            vectors = model.gps(coords[start : start + 16384].to(device))
            score, idx = (images @ vectors.T).max(dim=1)
            better = score > best
            best = torch.where(better, score, best)
            arg = torch.where(better, idx + start, arg)
        return self.latlng[arg.cpu().numpy()]


class IndexGallery:
    """An index's cells. While the location encoder is the one the index was built with, the index
    answers as it does when served (its FAISS search, re-ranking and all); once training has changed
    the encoder, its cell centres are re-encoded as an exact gallery."""

    def __init__(self, path: Path, base_weights: Path | None, base_sha: str | None, frozen: bool):
        from geoindex.locate.geolocator import Geolocator
        from geoindex.store.cell_table import load_cell_table
        from geoindex.store.manifest import open_index_dir

        self.name = f"index {path}"
        index_dir = open_index_dir(path)
        same = base_sha is not None and index_dir.manifest["encoder"].get("weights_sha256") == base_sha
        self.geo = Geolocator(path, weights=base_weights) if same else None  # it answers as served
        self.frozen = frozen
        table = self.geo.table if self.geo is not None else load_cell_table(index_dir.cells_path)
        self.exact = EvalGallery(self.name, np.column_stack((table.lat, table.lng)))

    def predict(self, model: GeoCLIPModel, images: torch.Tensor, device: torch.device, trained: bool) -> np.ndarray:
        if self.geo is not None and (self.frozen or not trained):
            from geoindex.locate.options import QueryOptions

            results = self.geo.locate(images.cpu().numpy(), QueryOptions(k=1))
            return np.array([[r.predictions[0].lat, r.predictions[0].lng] for r in results])
        return self.exact.predict(model, images, device, trained)


def evaluate(model: GeoCLIPModel, cache: FeatureCache, rows: np.ndarray, galleries: list, device: torch.device,
             trained: bool) -> dict:
    """The accuracy table of ``rows`` (held-out photos, their plain view) against each gallery."""
    model.eval()
    out = {}
    with torch.no_grad():
        images = torch.cat([model.images(torch.from_numpy(cache.take(rows[s : s + 4096])).to(device))
                            for s in range(0, len(rows), 4096)])
        truth = cache.latlng[rows]
        for gallery in galleries:
            pred = gallery.predict(model, images, device, trained)
            out[gallery.name] = accuracy_table(haversine_km(truth[:, 0], truth[:, 1], pred[:, 0], pred[:, 1]))
    model.train()
    return out


def eval_galleries(config: FitConfig, base_sha: str | None) -> list:
    galleries: list = []
    if config.eval_gallery == "100k":
        from geoindex.cells.csv_gallery import read_gallery_csv
        from geoindex.encoders.weights import gallery_100k_path

        galleries.append(EvalGallery("GeoCLIP 100K gallery", read_gallery_csv(gallery_100k_path())))
    elif config.eval_gallery != "none":
        from geoindex.cells.coordinates import read_latlng

        galleries.append(EvalGallery(f"gallery {config.eval_gallery}", read_latlng(config.eval_gallery,
                                                                                  what="--eval-gallery")))
    if config.eval_index is not None:
        galleries.append(IndexGallery(config.eval_index, config.base_weights, base_sha, config.freeze_location))
    return galleries


def log_eval(record: dict) -> None:
    for name, table in record.items():
        if isinstance(table, dict):
            log.info("epoch %d, %s: %s", record["epoch"], name,
                     ", ".join(f"{k} {v}" for k, v in table.items() if k != "n"))

