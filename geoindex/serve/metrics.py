"""Prometheus metrics: request counts by route and status, latency histograms, in-flight gauge.

A pure ASGI middleware (cheap on the hot path) labels each request by its route template
(``/v1/cells/{cell}``, not the concrete path) so label cardinality stays bounded.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("geoindex_http_requests_total", "HTTP requests", ("route", "method", "status"),
                                registry=self.registry)
        self.latency = Histogram("geoindex_http_request_seconds", "HTTP request latency", ("route", "method"),
                                 buckets=BUCKETS, registry=self.registry)
        self.in_flight = Gauge("geoindex_http_in_flight_requests", "HTTP requests being served",
                               registry=self.registry)
        self.batch_items = Histogram("geoindex_encoder_batch_items", "items per encoder micro-batch",
                                     buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=self.registry)
        self.integrity = Gauge("geoindex_index_integrity", "index files: 1 verified, 0 verifying in the "
                               "background, -1 corrupt (queries refused)", registry=self.registry)
        self.decoded_bytes = Gauge("geoindex_decoded_image_bytes", "bytes of decoded images in flight "
                                   "(bounded by --server-decoded-bytes)", registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("geoindex.warm_up"):  # the server's own warm-up (serve.warmup)
            return await self.app(scope, receive, send)
        status = {"code": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        start = time.perf_counter()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.in_flight.dec()
            route = scope.get("route")
            name = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.latency.labels(name, method).observe(time.perf_counter() - start)
            self.metrics.requests.labels(name, method, str(status["code"])).inc()
