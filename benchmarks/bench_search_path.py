"""What a query costs beyond the search: refine=1 against a default query, and the HTTP embedding
endpoint against the library call (results: benchmarks/results/search_path.json).

One query at a time, interleaved in rounds (every variant once a round, the same query, the
variants' order rotating), medians; FAISS on one thread in this process, as the server runs it.
The bar (issue 36 item 6): ``refine=1`` <= 3x a default query, the HTTP endpoint <= 1.5x the
library call, both at p50.

* ``default``: ``Geolocator.locate(xq[i:i+1])`` with ``QueryOptions()``;
* ``refine1_default_threads`` / ``refine1_one_thread``: the same with ``search="refine=1"``, the
  refinement's location encoder on torch's default threads or on one
  (``geoindex.encoders.location.SMALL_WORK_THREADS``, the library's setting since issue 36);
  ``refine1_batched``: all the queries in one ``locate`` call (their climbs share each encoder
  pass), per query, once a round;
* ``library`` / ``http``: the library call, and ``POST /v1/locate/embedding`` with one embedding on
  a ``geoindex serve --embeddings-only`` process on this machine over one kept-alive connection of
  the standard library's ``http.client`` (headers and body in one write); ``http_route``: the same
  request with ``?format=json``, which takes FastAPI's route instead of the shortcut
  (``geoindex/serve/fastpath.py``); ``httpx``: the same request from an ``httpx.Client`` (its own
  cost per request is most of the difference); ``http_parts``: the request's own steps timed in
  process (body validation, JSON of the answer).

    python benchmarks/bench_search_path.py --index idx-r5          # any index; default: res 3 land built here
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine, noisy, photo_locations, save, table


def _p50(xs):
    return statistics.median(xs) * 1e3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rotated(names: list[str], i: int) -> list[str]:
    """``names`` starting at the i-th: each variant in turn runs first (after another process's
    work, a call pays for cold caches and woken threads: no variant always pays it)."""
    k = i % len(names)
    return names[k:] + names[:k]


def bench_refine(geo, xq, rounds: int) -> dict:
    from geoindex import QueryOptions
    from geoindex.encoders import location

    default, refine = QueryOptions(), QueryOptions(search="refine=1")
    geo.locate(xq[:1], refine)  # load the location encoder
    times = {"default": [], "refine1_default_threads": [], "refine1_one_thread": []}
    batched = []
    names = list(times)
    for r in range(rounds):
        for i, q in enumerate(xq):
            q = q[None]
            for name in _rotated(names, r * len(xq) + i):
                location.SMALL_WORK_THREADS = 0 if name == "refine1_default_threads" else 1
                options = default if name == "default" else refine
                t = time.perf_counter()
                geo.locate(q, options)
                times[name].append(time.perf_counter() - t)
        location.SMALL_WORK_THREADS = 1
        t = time.perf_counter()
        geo.locate(xq, refine)  # over SMALL_WORK_POINTS when there are many queries: torch's threads
        batched.append((time.perf_counter() - t) / len(xq))
    p50 = {k: _p50(v) for k, v in times.items()}
    p50["refine1_batched"] = _p50(batched)
    return {"p50_ms": p50, "calls": len(times["default"]), "batched_calls": len(batched),
            "refine1_over_default": {k: p50[k] / p50["default"] for k in p50 if k != "default"}}


def _start_server(index: Path):
    """A ``geoindex serve --embeddings-only`` subprocess on a free port, once it answers: (process, port)."""
    import httpx

    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                         os.environ.get("PYTHONPATH", "")])}
    server = subprocess.Popen([sys.executable, "-m", "geoindex", "serve", "--index", str(index), "--port", str(port),
                               "--embeddings-only"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                return server, port
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.kill()
    raise RuntimeError(f"the server did not start: {server.stderr.read().decode()[-500:]}")


def bench_http(index: Path, geo, xq, rounds: int) -> dict:
    import http.client

    import httpx
    import orjson

    from geoindex import QueryOptions

    server, port = _start_server(index)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        bodies = [orjson.dumps({"embeddings": [q.tolist()]}) for q in xq]
        headers = {"content-type": "application/json"}

        def stdlib(body: bytes, path: str) -> None:
            conn.request("POST", path, body=body, headers=headers)
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                raise RuntimeError(f"{path} answered {r.status}")

        calls = {"http": lambda b: stdlib(b, "/v1/locate/embedding"),
                 "http_route": lambda b: stdlib(b, "/v1/locate/embedding?format=json"),
                 "httpx": lambda b: client.post("/v1/locate/embedding", content=b, headers=headers).raise_for_status()}
        for body in bodies[:5]:  # warm
            for call in calls.values():
                call(body)
        times = {"library": [], **{name: [] for name in calls}}
        options = QueryOptions()
        calls["library"] = lambda i: geo.locate(xq[i:i + 1], options)
        for r in range(rounds):
            for i, body in enumerate(bodies):
                for name in _rotated(list(times), r * len(xq) + i):
                    t = time.perf_counter()
                    calls[name](i if name == "library" else body)
                    times[name].append(time.perf_counter() - t)
    finally:
        server.terminate()
        server.wait(30)
    p50 = {k: _p50(v) for k, v in times.items()}
    return {"p50_ms": p50, "http_over_library": p50["http"] / p50["library"],
            "over_library": {k: p50[k] / p50["library"] for k in times if k != "library"}, "calls": len(times["http"]),
            "parts_ms": http_parts(geo, xq, bodies)}


def http_parts(geo, xq, bodies) -> dict:
    """p50 ms of the request's own steps, in this process: parse + validate the body as the route
    does, and the answer's dict + JSON."""
    import orjson

    from geoindex.locate.options import validate_embeddings
    from geoindex.serve.requests import EmbeddingRequest as request
    results = [geo.locate(q[None]) for q in xq]
    parse, answer = [], []
    for body, result in zip(bodies, results):
        t = time.perf_counter()
        validate_embeddings(request.model_validate(orjson.loads(body)).embeddings)
        parse.append(time.perf_counter() - t)
        t = time.perf_counter()
        orjson.dumps({"results": [r.to_dict() for r in result]})
        answer.append(time.perf_counter() - t)
    return {"parse_validate": _p50(parse), "answer_json": _p50(answer)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--index", type=Path, default=None, help="index directory (default: res 3 land, built in a tmp dir)")
    p.add_argument("--queries", type=int, default=50)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default="search_path.json")
    p.add_argument("--busy", action="store_true", help="label the numbers as measured on a shared, busy machine")
    args = p.parse_args(argv)
    import torch

    from geoindex import BuildConfig, Geolocator, build_gallery
    from geoindex.encoders.location import encode_latlng, load_location_encoder

    import faiss

    faiss.omp_set_num_threads(1)  # as the server searches (geoindex serve): one query needs no team of threads
    with tempfile.TemporaryDirectory(prefix="bench-search-path-") as tmp:
        index = args.index
        if index is None:
            index = Path(tmp) / "r3"
            build_gallery(BuildConfig(out=index, resolution=3, progress=False))
        geo = Geolocator(index)
        xq = noisy(encode_latlng(load_location_encoder(), photo_locations(args.queries, seed=36)), 0.9)
        load = os.getloadavg()
        refine = bench_refine(geo, xq, args.rounds)
        print(refine)
        http = bench_http(index, geo, xq, args.rounds)
        print(http)
    rows = [{"what": "default query (library)", "p50_ms": refine["p50_ms"]["default"], "ratio": 1.0},
            *({"what": what, "p50_ms": refine["p50_ms"][k], "ratio": refine["refine1_over_default"][k]} for what, k in (
                ("refine=1, default threads", "refine1_default_threads"), ("refine=1, one thread", "refine1_one_thread"),
                ("refine=1, all queries in one call (per query)", "refine1_batched"))),
            {"what": "library call (embedding)", "p50_ms": http["p50_ms"]["library"], "ratio": 1.0},
            *({"what": what, "p50_ms": http["p50_ms"][k], "ratio": http["over_library"][k]} for what, k in (
                ("POST /v1/locate/embedding (http.client, kept alive)", "http"),
                ("... the same through FastAPI's route (?format=json)", "http_route"),
                ("... the same from httpx.Client", "httpx")))]
    print(table([{**r, "p50_ms": f"{r['p50_ms']:.2f}", "ratio": f"{r['ratio']:.2f}"} for r in rows],
                ["what", "p50_ms", "ratio"]))
    note = ("measured on a shared, busy machine (2 cores, other engineers' jobs running): absolute times inflated; "
            "ratios compare calls interleaved in the same run (medians)") if args.busy else "quiet machine"
    result = {"machine": {**machine(), "torch_threads": torch.get_num_threads(), "faiss_threads": 1,
                          "load_average_at_start": load,
                          "load_average_at_end": os.getloadavg(), "note": note},
              "parameters": {"index": str(args.index or "res 3 land, built here"), "queries": args.queries,
                             "rounds": args.rounds, "query_noise_cos": 0.9},
              "rows": rows, "refine": refine, "http": http}
    print("wrote", save(args.out, result))


if __name__ == "__main__":
    main()
