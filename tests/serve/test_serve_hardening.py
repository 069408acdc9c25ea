"""The server under a hostile client (issue 29): slow headers and idle connections closed, decoded
images within a budget and decoded small, a large request that does not block a small one, a
corrupt index refused or reported."""

from __future__ import annotations

import asyncio
import io
import shutil
import socket
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from geoindex.serve.app import create_app
from geoindex.serve.settings import ServeSettings


@pytest.fixture(scope="module")
def settings(built_r2):
    return ServeSettings(index=str(built_r2), clip_model="tiny-test", max_images=4, max_embeddings=256)


@pytest.fixture(scope="module")
def embeddings(built_r2):
    """(256, 512) GeoCLIP embeddings of gallery cells."""
    from geoindex.encoders.location import encode_latlng, load_location_encoder
    from geoindex.store.cell_table import load_cell_table

    table = load_cell_table(built_r2 / "cells.duckdb")
    return encode_latlng(load_location_encoder(), np.column_stack((table.lat[:256], table.lng[:256])))


def image_bytes(w: int, h: int, fmt: str, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    small = (rng.random((max(1, h // 16), max(1, w // 16), 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(small).resize((w, h)).save(buf, fmt)
    return buf.getvalue()


class RealServer:
    """``app`` on uvicorn on a free loopback port, in a thread, with the settings' connection limits."""

    def __init__(self, app, settings):
        import uvicorn

        from geoindex.serve.protocol import server_config

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(server_config(app, settings, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self):
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


def closed_after(conn: socket.socket, limit: float) -> float | None:
    """Seconds until the server closes ``conn`` (recv returns b""), None if open after ``limit``."""
    conn.settimeout(limit)
    start = time.monotonic()
    try:
        while True:
            data = conn.recv(65536)
            if not data:
                return time.monotonic() - start
    except (TimeoutError, socket.timeout):
        return None
    except ConnectionResetError:
        return time.monotonic() - start


def test_slow_headers_and_idle_connections_are_closed(settings):
    """On a real socket: a client that sends half its headers and stops, one that connects and sends
    nothing, and an idle kept-alive connection are all closed within their timeouts; the server
    keeps answering."""
    import httpx

    s = replace(settings, embeddings_only=True, header_timeout=0.5, keep_alive_timeout=0.5)
    with RealServer(create_app(s), s) as srv:
        half = socket.create_connection(("127.0.0.1", srv.port))
        half.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\nuser-ag")
        silent = socket.create_connection(("127.0.0.1", srv.port))
        trickle = socket.create_connection(("127.0.0.1", srv.port))
        for byte in b"GET /h":  # a byte at a time: the deadline is absolute, bytes do not extend it
            trickle.sendall(bytes([byte]))
            time.sleep(0.1)
        assert (t := closed_after(half, 5)) is not None and t < 3, "half-sent headers held open"
        assert closed_after(silent, 5) is not None, "a silent connection held open"
        assert closed_after(trickle, 5) is not None, "a trickling connection held open"
        kept = socket.create_connection(("127.0.0.1", srv.port))
        kept.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        assert kept.recv(65536).startswith(b"HTTP/1.1 200")
        assert closed_after(kept, 5) is not None, "an idle kept-alive connection held open"
        assert httpx.get(f"http://127.0.0.1:{srv.port}/healthz").status_code == 200


def test_request_over_the_decoded_bytes_budget_gets_413_naming_the_limit(settings):
    s = replace(settings, max_decoded_bytes=20 * 2**20, max_upload_bytes=20 * 2**20, max_request_bytes=40 * 2**20)
    png = image_bytes(2000, 2000, "PNG")  # 16 MB decoded (PIL keeps RGB in 4 bytes a pixel)
    with TestClient(create_app(s), raise_server_exceptions=False) as c:
        one = c.post("/v1/locate", files=[("images", ("a.png", png, "image/png"))])
        assert one.status_code == 200, one.text
        two = c.post("/v1/locate", files=[("images", (f"{i}.png", png, "image/png")) for i in range(2)])
        assert two.status_code == 413
        message = two.json()["error"]["message"]
        assert "--max-decoded-bytes" in message and "fewer or smaller images" in message


@pytest.mark.slow  # over ~4 s: the full suite (make test-all) runs it
def test_uploads_decode_small_but_never_below_clip_size():
    from geoindex.serve.images import CLIP_SIDE, decode_small, decoded_bytes

    for fmt, w, h in (("JPEG", 4000, 3000), ("PNG", 3000, 4000), ("JPEG", 300, 5000), ("PNG", 200, 150)):
        data = image_bytes(w, h, fmt)
        img = decode_small(data, max_pixels=64_000_000, name="x")
        assert img.mode == "RGB" and min(img.size) >= min(CLIP_SIDE, w, h)
        if min(w, h) >= 2 * CLIP_SIDE:
            assert min(img.size) < 2 * CLIP_SIDE, (fmt, img.size)  # reduced, not full size
            if fmt == "JPEG":  # draft mode: what the decoder allocates is small too
                assert decoded_bytes(data) <= w * h * 4 / 4


@pytest.mark.slow  # over ~4 s: the full suite (make test-all) runs it
def test_decoded_pixels_in_flight_stay_within_the_server_budget(settings):
    """Four requests of two 16 MB-decoded PNGs each, at once, under a 40 MB server budget: all
    answered, and never more than the budget decoded at a time."""
    import httpx

    s = replace(settings, server_decoded_bytes=40 * 2**20, max_upload_bytes=20 * 2**20,
                max_request_bytes=40 * 2**20, decode_threads=4)
    app = create_app(s)
    pngs = [image_bytes(2000, 2000, "PNG", seed) for seed in range(2)]

    async def main():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=300) as c:
            return await asyncio.gather(*(c.post("/v1/locate", files=[
                ("images", (f"{i}.png", png, "image/png")) for i, png in enumerate(pngs)]) for _ in range(4)))

    replies = asyncio.run(main())
    assert [r.status_code for r in replies] == [200] * 4, replies[0].text
    budget = app.state.engine.decode_budget
    assert budget.in_use == 0 and 16 * 2**20 <= budget.peak <= 40 * 2**20


def test_refine_work_over_the_limit_is_refused_before_any_work(settings, embeddings):
    with TestClient(create_app(replace(settings, embeddings_only=True, max_refine_work=64)),
                    raise_server_exceptions=False) as c:
        r = c.post("/v1/locate/embedding", json={"embeddings": embeddings[:8].tolist(), "refine": 16})
        assert r.status_code == 422
        assert "--max-refine-work" in r.json()["error"]["message"]


@pytest.mark.slow
def test_a_small_request_waits_at_most_about_a_second_behind_a_large_one(settings, embeddings):
    """256 embeddings with refine, top_k 100, every candidate; a 1-embedding request sent while it
    runs is answered in about a second (before: after the whole large one)."""
    import httpx

    s = replace(settings, embeddings_only=True)
    app = create_app(s)
    big = {"embeddings": embeddings.tolist(), "refine": 1, "top_k": 100, "candidates": 4096}

    async def main():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=900) as c:
            await c.post("/v1/locate/embedding", json={"embeddings": embeddings[:2].tolist(), "refine": 1})  # warm

            async def timed(body):
                start = time.perf_counter()
                r = await c.post("/v1/locate/embedding", json=body)
                return r.status_code, time.perf_counter() - start

            large = asyncio.create_task(timed(big))
            await asyncio.sleep(0.5)
            small = await timed({"embeddings": embeddings[:1].tolist()})
            return small, await large

    (small_status, small_s), (large_status, large_s) = asyncio.run(main())
    assert small_status == large_status == 200
    assert large_s > 3 * small_s and small_s < 1.5, (small_s, large_s)


# -- corruption -----------------------------------------------------------------------------------------
def flipped(src, tmp_path, name: str, offset: float = 0.5):
    """A copy of the index at ``src`` with one byte of ``name`` flipped (same size)."""
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    data = bytearray((dst / name).read_bytes())
    data[int(len(data) * offset)] ^= 0xFF
    (dst / name).write_bytes(bytes(data))
    return dst


@pytest.fixture
def no_serving(monkeypatch):
    """A server that would start returns at once instead of serving forever (main then returns 0)."""
    import uvicorn

    monkeypatch.setattr(uvicorn.Server, "run", lambda self, *a, **kw: None)
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: None)


@pytest.mark.parametrize("name", ["hot/cell.npy", "hot/lat.npy", "vectors.faiss"])
def test_server_refuses_a_flipped_byte_with_one_line(built_r2, tmp_path, capsys, name, no_serving):
    from geoindex.cli.serve import main

    bad = flipped(built_r2, tmp_path, name)
    assert main(["--index", str(bad), "--embeddings-only"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert str(bad / name) in err and "--resolution 2" in err and "--overwrite" in err


def test_large_files_verified_in_the_background_and_a_corrupt_one_refuses_queries(built_r2, tmp_path, embeddings):
    """Files over --checksum-at-start-mb are hashed after start: a flipped SQ8 code (no structural
    check can see it) makes /healthz and every query 503, and /metrics say -1."""
    bad = flipped(built_r2, tmp_path, "vectors.faiss", 0.6)
    s = ServeSettings(index=str(bad), embeddings_only=True, checksum_at_start_mb=0.5)
    with TestClient(create_app(s), raise_server_exceptions=False) as c:
        c.app.state.engine.integrity.join(60)
        health = c.get("/healthz")
        assert health.status_code == 503 and "vectors.faiss" in health.json()["error"]["message"]
        assert c.get("/readyz").status_code == 503
        q = c.post("/v1/locate/embedding", json={"embeddings": embeddings[:1].tolist()})
        assert q.status_code == 503 and "rebuild it with" in q.json()["error"]["message"]
        assert "geoindex_index_integrity -1.0" in c.get("/metrics").text
    good = ServeSettings(index=str(built_r2), embeddings_only=True, checksum_at_start_mb=0.5)
    with TestClient(create_app(good)) as c:
        c.app.state.engine.integrity.join(60)
        assert c.get("/healthz").json()["integrity"]["state"] == "ok"
        assert "geoindex_index_integrity 1.0" in c.get("/metrics").text


def test_damaged_cells_duckdb_at_server_start_is_one_line(built_r2, tmp_path, capsys, no_serving):
    from geoindex.cli.serve import main

    bad = tmp_path / "copy"
    shutil.copytree(built_r2, bad)
    size = (bad / "cells.duckdb").stat().st_size
    (bad / "cells.duckdb").write_bytes(bytes(size))  # zeroed, same size
    # checksums at start would name it too; this is the path of a file too large to hash first
    assert main(["--index", str(bad), "--embeddings-only", "--checksum-at-start-mb", "0.001"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cells.duckdb" in err and "not a readable DuckDB file" in err
