"""What the server loads once per process (:class:`Engine`) and how it spends it: searches split
into chunks that interleave with other requests' (:meth:`Engine.locate`), image decodes inside the
server's decoded-pixel budget (:meth:`Engine.decode`), the index's integrity check.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from geoindex.errors import IndexDirError, InvalidQueryError, WeightsNotFoundError
from geoindex.locate.joint import joint_options
from geoindex.serve.batching import MicroBatcher
from geoindex.serve.images import DecodeBudget, MemoryReturn, check_request_budget, decode_small
from geoindex.serve.integrity import BackgroundVerifier
from geoindex.serve.requests import Limits
from geoindex.serve.settings import ServeSettings

log = logging.getLogger("geoindex.serve")
MAX_CHUNK = 64  # queries per search chunk at most (FAISS gains little from larger batches)
# A request whose search took under this the last times (per query options) searches on the event
# loop: the hop to the search thread and back cost ~0.1-0.3 ms of a ~1 ms request (issue 36), and a
# loop held this long delays no other request by more than one such search.
INLINE_S = 0.001
TIMED_OPTIONS = 64  # the query options whose last time per query is kept


class Engine:
    """Everything loaded once per process: the Geolocator, the CLIP encoder, thread pools."""

    def __init__(self, settings: ServeSettings):
        import faiss

        from geoindex.locate.geolocator import Geolocator

        faiss.omp_set_num_threads(1)  # one thread per query; concurrency comes from the pool
        self.settings = settings
        small = int(settings.checksum_at_start_mb * 2**20)
        from geoindex.serve.photos import photos_root_of

        self.photos_root = photos_root_of(settings)  # a bad --photos-root stops the start before anything loads
        if not settings.embeddings_only:  # absent CLIP weights: refused in seconds, before the index loads
            from geoindex.encoders.clip import require_clip_weights

            require_clip_weights(settings.clip_model, settings.clip_checkpoint, settings.weights)
        self.photos = None  # the reference photo gallery as evidence (geoindex.photos.PhotoEvidence)
        if settings.photos is not None:
            from geoindex.photos.evidence import open_photos

            self.photos = open_photos(settings.photos, settings.weights, small_file_bytes=small)
        self.geolocator = Geolocator(settings.index, weights=settings.weights, small_file_bytes=small,
                                     evidence=self.photos)
        self.limits = Limits.of(settings, self.geolocator.resolution)
        self.warmed = False
        self._per_query: dict = {}  # QueryOptions -> seconds a query took the last time (Engine.locate)
        self.db = _connect(self.geolocator.dir.cells_path)
        self.encoder = None
        if self.photos is not None and not settings.embeddings_only:  # before loading CLIP
            from geoindex.encoders.weights import clip_model_for, geoclip_files

            self.photos.gallery.check_encoder(
                clip_model_for(settings.clip_model, geoclip_files(settings.weights)), None, None)
        if not settings.embeddings_only:
            from geoindex.encoders.clip import load_image_encoder

            self.encoder = load_image_encoder(settings.clip_model, settings.clip_checkpoint, settings.device,
                                              batch_size=settings.max_batch, weights=settings.weights,
                                              backend=settings.backend, precision=settings.precision)
        self.int8_check = self._guard_int8() if settings.precision == "int8" and self.encoder else None
        # OpenMP settings are per thread: a pool thread left at the default would start a team of
        # spinning threads per query and oversubscribe the cores under load.
        self.search_pool = ThreadPoolExecutor(settings.search_threads, thread_name_prefix="search",
                                              initializer=faiss.omp_set_num_threads, initargs=(1,))
        self.decode_pool = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="decode")
        window = settings.batch_window_ms / 1000
        self.image_batcher = MicroBatcher(self._encode_images, settings.max_batch, window)
        self.text_batcher = MicroBatcher(self._encode_texts, settings.max_batch, window)
        self.decode_budget = DecodeBudget(settings.server_decoded_bytes)
        self.memory = MemoryReturn()
        self.integrity = BackgroundVerifier([self.geolocator.dir, self.photos and self.photos.gallery], small).start()

    def warm(self) -> None:
        """Take once every path a first query takes, each in the thread that will take it, so that the
        first real query costs what later ones do: an image decode and its EXIF, one image and one
        text encode (CLIP's first forward passes), one search with a confidence region and the index's
        refinement (FAISS, the metadata columns, the location encoder), one metadata row, and the
        answer's JSON and GeoJSON (modules the routes import on first use). Idempotent."""
        if self.warmed:
            return
        import io

        from PIL import Image

        from geoindex.archive.exif import read_exif
        from geoindex.archive.rows import exif_fields
        from geoindex.encoders.location import encode_latlng
        from geoindex.locate.geojson import results_to_geojson
        from geoindex.locate.options import QueryOptions

        began = time.perf_counter()
        buf = io.BytesIO()
        Image.effect_noise((320, 240), 64).convert("RGB").save(buf, "JPEG")
        data = buf.getvalue()
        image = self.decode_pool.submit(decode_small, data, max_pixels=self.settings.max_pixels,
                                        name="warm-up").result()
        exif = read_exif(data)
        geo = self.geolocator
        point = np.array([[float(geo.table.lat[0]), float(geo.table.lng[0])]])

        def search(xq):
            confidence = 0.9 if geo.resolution is not None else None  # regions need H3 cells
            results = geo.locate(xq, QueryOptions(k=min(5, geo.ntotal), confidence=confidence))
            results_to_geojson(results, ["warm-up"])
            [r.to_dict() | exif_fields(exif, r) for r in results]
            encode_latlng(geo.encoder_reranker.model, point)  # the embed route's encoder
            geo.covers(point[:, 0], point[:, 1])
            self.db.cursor().execute("SELECT * FROM cells LIMIT 1").fetchone()

        if self.encoder is not None:
            xq = self.image_batcher.executor.submit(self._encode_images, [image]).result()
            self.text_batcher.executor.submit(self._encode_texts, ["a harbour at dusk"]).result()
        else:
            xq = encode_latlng(geo.encoder_reranker.model, point)
        self.search_pool.submit(search, xq).result()
        self.warmed = True
        log.info("warmed the encoders and the index in %.2f s", time.perf_counter() - began)

    def capabilities(self) -> dict:
        """What this server answers, for the page: ``images`` and ``texts`` need CLIP weights;
        ``reason`` says why they are off."""
        clip = self.encoder is not None
        return {"images": clip, "texts": clip, "embeddings": True, "photos": self.photos is not None,
                "reason": None if clip else "this server runs with --embeddings-only (no CLIP weights): "
                                            "photo and text queries are off; coordinates still work"}

    def _guard_int8(self) -> dict:
        """``--precision int8``: the self-check of :func:`geoindex.locate.int8_check.guard` on this
        index, on the photos of ``--int8-probe`` (a cached check needs none); refused below the agreement."""
        from geoindex.archive.walk import find_photos
        from geoindex.errors import InvalidArgumentError
        from geoindex.locate.int8_check import PROBES, guard, read_probes

        def probes():
            if self.settings.int8_probe is None:
                raise InvalidArgumentError("--precision int8 checks itself on photos at start and this index has no "
                                           f"cached check: pass --int8-probe DIR with 8-{PROBES} photos like those "
                                           "you will serve")
            return read_probes(find_photos([self.settings.int8_probe]), self.settings.max_pixels)

        return guard(self.encoder, self.geolocator, probes, self.settings.int8_min_agreement)

    def encoder_info(self) -> dict | None:
        """The image encoder's provenance (``/v1/index``): model, runtime, precision, the int8 check."""
        if self.encoder is None:
            return None
        precision = "int8" if self.int8_check else {"torch.float16": "fp16"}.get(str(self.encoder.dtype), "fp32")
        return {"clip_model": self.encoder.name, "backend": self.encoder.backend, "precision": precision,
                "int8_check": self.int8_check}

    def _encode_images(self, images):
        return self.encoder.encode_images(images)

    def _encode_texts(self, texts):
        return self.encoder.encode_texts(texts)

    def require_intact(self) -> None:
        """Refuse queries (503) once the background check found a corrupt file."""
        if self.integrity.state == "corrupt":
            raise IndexCorruptError(f"this server's index or reference photos failed their integrity check and it "
                                    f"answers no queries: "
                                    f"{self.integrity.error}; then restart the server")

    async def locate(self, xq: np.ndarray, options) -> list:
        """``geolocator.locate`` in chunks of queries, each its own task on the search pool, the
        next submitted only when the last is done: another request's search queues between two
        chunks, so a small request waits at most about one chunk (``--search-chunk-s``) behind a
        large one. The chunk size starts at one query and adapts (at most doubling) to the time
        chunks take, per request: requests of different costs do not share an estimate. A request
        whose options took under ``INLINE_S`` a query the last time searches on the event loop."""
        self.require_intact()
        xq, options = joint_options(xq, options)  # one joint query: before the chunks split them
        work = options.search.refine_starts * len(xq)
        if work > self.settings.max_refine_work:
            raise InvalidQueryError(
                f"refine = {options.search.refine_starts} for {len(xq)} queries refines {work:,} candidates, over this "
                f"server's limit of {self.settings.max_refine_work:,} per request (--max-refine-work; each costs about "
                "as much as a whole unrefined query): send fewer queries per request or a smaller refine")
        if len(xq) * self._per_query.get(options, INLINE_S) < INLINE_S:
            return self._timed_locate(xq, options, inline=True)  # sub-ms: no hop to the search thread
        loop = asyncio.get_running_loop()
        results, start, size = [], 0, 1  # one query first: its time says how many fit in a chunk
        while start < len(xq):
            chunk = xq[start:start + size]
            results += await loop.run_in_executor(self.search_pool, self._timed_locate, chunk, options)
            start += len(chunk)
            per_query = self._per_query.get(options, INLINE_S)  # (another request's options may have evicted it)
            size = int(np.clip(min(2 * size, self.settings.search_chunk_s / max(per_query, 1e-6)), 1, MAX_CHUNK))
        return results

    def _timed_locate(self, xq: np.ndarray, options, inline: bool = False) -> list:
        """``geolocator.locate``, its time per query remembered per options (the last TIMED_OPTIONS)."""
        if inline:
            import faiss

            faiss.omp_set_num_threads(1)  # per thread: the loop's thread too searches on one thread
        began = time.perf_counter()
        results = self.geolocator.locate(xq, options)
        if options not in self._per_query and len(self._per_query) >= TIMED_OPTIONS:
            self._per_query.pop(next(iter(self._per_query)))
        self._per_query[options] = (time.perf_counter() - began) / len(xq)
        return results

    async def decode(self, blobs: list[tuple[bytes, str]]) -> list:
        """Uploads -> small RGB images (:func:`decode_small`), in the decode pool, each holding its
        decoded size of the server's budget while it decodes; 413 when the request's images
        decode to more than ``--max-decoded-bytes``."""
        costs = check_request_budget(blobs, self.settings.max_decoded_bytes)
        loop = asyncio.get_running_loop()
        s = self.settings

        async def one(data: bytes, name: str, cost: int):
            async with self.decode_budget.hold(cost):
                image = await loop.run_in_executor(self.decode_pool, lambda: decode_small(
                    data, max_pixels=s.max_pixels, name=name))
            self.memory.freed(cost, idle=self.decode_budget.in_use == 0)
            return image

        return list(await asyncio.gather(*(one(d, n, c) for (d, n), c in zip(blobs, costs))))

    async def close(self) -> None:
        await self.image_batcher.close()
        await self.text_batcher.close()
        self.search_pool.shutdown(wait=False)
        self.decode_pool.shutdown(wait=False)
        self.db.close()


class IndexCorruptError(IndexDirError):
    """The server's index failed its background integrity check (503)."""


def _connect(path):
    """A read-only DuckDB connection to cells.duckdb; a damaged or unreadable file is one line."""
    import duckdb

    from geoindex.store.cell_table import duckdb_error

    try:
        return duckdb.connect(str(path), read_only=True)
    except (duckdb.Error, OSError) as e:
        raise IndexDirError(duckdb_error(path, e)) from e


def require_encoder(engine: Engine) -> None:
    if engine.encoder is None:
        raise WeightsNotFoundError("this server runs with --embeddings-only: image and text queries are off; "
                                   "restart it with CLIP weights (--clip-checkpoint PATH)")
