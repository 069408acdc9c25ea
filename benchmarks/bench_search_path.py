"""What a query costs beyond the search: refine=1 against a default query, and the HTTP embedding
endpoint against the library call (results: benchmarks/results/search_path.json).

One query at a time, interleaved in rounds (every variant once a round, the same query), medians:

* ``default``: ``Geolocator.locate(xq[i:i+1])`` with ``QueryOptions()``;
* ``refine1_default_threads`` / ``refine1_one_thread``: the same with ``search="refine=1"``, the
  refinement's location encoder on torch's default threads or on one
  (``geoindex.encoders.location.SMALL_WORK_THREADS``, the library's setting since issue 36);
* ``library`` / ``http``: the library call, and ``POST /v1/locate/embedding`` with one embedding on
  a ``geoindex serve --embeddings-only`` process on this machine (httpx, one kept-alive
  connection); ``http_parts``: the request's own steps timed in process (body validation, JSON of
  the answer), to say where the difference goes.

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


def bench_refine(geo, xq, rounds: int) -> dict:
    from geoindex import QueryOptions
    from geoindex.encoders import location

    default, refine = QueryOptions(), QueryOptions(search="refine=1")
    geo.locate(xq[:1], refine)  # load the location encoder
    times = {"default": [], "refine1_default_threads": [], "refine1_one_thread": []}
    for _ in range(rounds):
        for q in xq:
            q = q[None]
            for name in times:
                location.SMALL_WORK_THREADS = 0 if name == "refine1_default_threads" else 1
                options = default if name == "default" else refine
                t = time.perf_counter()
                geo.locate(q, options)
                times[name].append(time.perf_counter() - t)
    location.SMALL_WORK_THREADS = 1
    p50 = {k: _p50(v) for k, v in times.items()}
    return {"p50_ms": p50, "calls": len(times["default"]),
            "refine1_over_default": {k: p50[k] / p50["default"] for k in p50 if k != "default"}}


def bench_http(index: Path, geo, xq, rounds: int) -> dict:
    import httpx
    import orjson

    from geoindex import QueryOptions

    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                         os.environ.get("PYTHONPATH", "")])}
    server = subprocess.Popen([sys.executable, "-m", "geoindex", "serve", "--index", str(index), "--port", str(port),
                               "--embeddings-only"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        for _ in range(600):
            try:
                if client.get("/healthz").status_code < 500:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"the server did not start: {server.stderr.read().decode()[-500:]}")
        bodies = [orjson.dumps({"embeddings": [q.tolist()]}) for q in xq]
        headers = {"content-type": "application/json"}
        for body in bodies[:5]:  # warm
            client.post("/v1/locate/embedding", content=body, headers=headers).raise_for_status()
        times = {"library": [], "http": []}
        options = QueryOptions()
        for _ in range(rounds):
            for q, body in zip(xq, bodies):
                t = time.perf_counter()
                geo.locate(q[None], options)
                times["library"].append(time.perf_counter() - t)
                t = time.perf_counter()
                r = client.post("/v1/locate/embedding", content=body, headers=headers)
                times["http"].append(time.perf_counter() - t)
                r.raise_for_status()
    finally:
        server.terminate()
        server.wait(30)
    p50 = {k: _p50(v) for k, v in times.items()}
    return {"p50_ms": p50, "http_over_library": p50["http"] / p50["library"], "calls": len(times["http"]),
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
            *({"what": f"refine=1, {k.split('_', 1)[1].replace('_', ' ')}", "p50_ms": refine["p50_ms"][k],
               "ratio": refine["refine1_over_default"][k]} for k in ("refine1_default_threads", "refine1_one_thread")),
            {"what": "library call (embedding)", "p50_ms": http["p50_ms"]["library"], "ratio": 1.0},
            {"what": "POST /v1/locate/embedding", "p50_ms": http["p50_ms"]["http"], "ratio": http["http_over_library"]}]
    print(table([{**r, "p50_ms": f"{r['p50_ms']:.2f}", "ratio": f"{r['ratio']:.2f}"} for r in rows],
                ["what", "p50_ms", "ratio"]))
    note = ("measured on a shared, busy machine (2 cores, other engineers' jobs running): absolute times inflated; "
            "ratios compare calls interleaved in the same run (medians)") if args.busy else "quiet machine"
    result = {"machine": {**machine(), "torch_threads": torch.get_num_threads(), "load_average_at_start": load,
                          "load_average_at_end": os.getloadavg(), "note": note},
              "parameters": {"index": str(args.index or "res 3 land, built here"), "queries": args.queries,
                             "rounds": args.rounds, "query_noise_cos": 0.9},
              "rows": rows, "refine": refine, "http": http}
    print("wrote", save(args.out, result))


if __name__ == "__main__":
    main()
