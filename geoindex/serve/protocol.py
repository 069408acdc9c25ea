"""uvicorn's HTTP protocol with a deadline on a request's headers (slowloris).

uvicorn (0.55) has no timeout covering the receipt of a request: ``timeout_keep_alive`` runs only
between two requests, after a response, and is cancelled by any byte received; ASGI middleware
sees a request only once its headers are complete. So a client that connects and sends nothing,
or sends half its headers and stops (or trickles a byte a second), holds a connection forever.
These subclasses arm a deadline when a connection opens (and when the first byte of a next
request on a kept-alive connection arrives) and close the connection if the headers are not
complete by then: an absolute deadline, not reset per byte. Once the headers are in, the body has
the server's ``--body-timeout`` (:class:`geoindex.serve.http.BodyLimit`).

uvicorn loads the class by name (``Config(http="geoindex.serve.protocol:GuardedHTTP")``), so it
reaches worker processes too; the deadline travels on the config as ``geoindex_header_timeout``.
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("geoindex.serve")
DEFAULT_HEADER_TIMEOUT = 10.0


class HeaderDeadline:
    """Mixin over a uvicorn HTTP protocol (h11 or httptools): close a connection whose request
    headers are not complete ``config.geoindex_header_timeout`` seconds after it opened, or after
    the first byte of its next request."""

    _header_timer: asyncio.TimerHandle | None = None

    def _header_timeout(self) -> float:
        timeout = getattr(self.config, "geoindex_header_timeout", None)
        return float(timeout if timeout is not None else _env_header_timeout())

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self._header_timeout(), self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _awaiting_headers(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._awaiting_headers():
            self._arm()  # a no-op while armed: the deadline is absolute, bytes do not extend it
        super().data_received(data)
        if not self._awaiting_headers():
            self._disarm()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self._awaiting_headers() and not self.transport.is_closing():
            client = "%s:%d" % self.client if self.client else "a client"
            log.info("closing %s: no complete request headers within %g s (--header-timeout)", client,
                     self._header_timeout())
            self.transport.close()


def _env_header_timeout() -> float:
    """In a worker process (``--workers N``) the settings come from the environment."""
    import os

    from geoindex.serve.settings import ENV_VAR, ServeSettings

    text = os.environ.get(ENV_VAR)
    return ServeSettings.from_json(text).header_timeout if text else DEFAULT_HEADER_TIMEOUT


def uvicorn_kwargs(settings) -> dict:
    """The uvicorn settings that carry the server's connection limits (:class:`ServeSettings`)."""
    return {"http": "geoindex.serve.protocol:GuardedHTTP", "timeout_keep_alive": settings.keep_alive_timeout,
            "limit_concurrency": settings.max_connections}


def server_config(app, settings, **kw):
    """A ``uvicorn.Config`` for ``app`` with the connection limits of ``settings`` (one process)."""
    import uvicorn

    config = uvicorn.Config(app, **uvicorn_kwargs(settings), **kw)
    config.geoindex_header_timeout = settings.header_timeout
    return config


def _classes():
    from uvicorn.protocols.http.h11_impl import H11Protocol

    h11 = type("GuardedH11", (HeaderDeadline, H11Protocol), {})
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # httptools not installed: uvicorn's own fallback is h11 too
        return h11, h11
    return h11, type("GuardedHttpTools", (HeaderDeadline, HttpToolsProtocol), {})


GuardedH11, GuardedHTTP = _classes()  # GuardedHTTP: httptools when installed (as uvicorn's "auto")
