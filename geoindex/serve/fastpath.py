"""The embedding route's short way through the app: ``POST /v1/locate/embedding`` with a plain JSON
body is answered by the route's own steps called directly, without FastAPI's request machinery.

FastAPI's routing, dependency solving and body handling cost ~0.3 ms a request (issue 36: a 0.4 ms
search answered in 0.75 ms in process), as much as the search itself. :class:`EmbeddingShortcut`
sits inside the body limit and the metrics and takes only the common case: the route's path, POST,
``content-type: application/json``, no query string, no GeoJSON asked for. It parses and validates
the body as the route does (:func:`geoindex.serve.routes.locate.embedding_request`) and answers with
the route's :func:`~geoindex.serve.routes.locate.answer`. Anything it does not take, and any request
it would refuse, goes through the app unchanged (the body it read replayed), so every refusal, its
status and its words are the route's own.
"""

from __future__ import annotations

PATH = "/v1/locate/embedding"


class EmbeddingShortcut:
    """ASGI middleware: the common ``POST /v1/locate/embedding`` straight to the route's steps."""

    def __init__(self, app, engine, route):
        self.app = app
        self.engine = engine
        self.route = route  # the app's route for PATH: what the metrics label a request by

    async def __call__(self, scope, receive, send):
        if not self._takes(scope):
            return await self.app(scope, receive, send)
        from geoindex.serve.routes.locate import answer, embedding_request

        chunks, more = [], True
        while more:
            try:
                message = await receive()  # the body limit's: over it, or stalled, it raises
            except Exception as e:  # noqa: BLE001 -- the route meets it where it would have
                return await self.app(scope, _replay(chunks, e, receive), send)
            if message["type"] != "http.request":  # the client went away: the app sees it as it would
                return await self.app(scope, _replay(chunks, message, receive), send)
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            xq, options = embedding_request(self.engine, body)
            response = await answer(self.engine, xq, options, list(range(len(xq))), geojson=False)
        except Exception:  # noqa: BLE001 -- the route refuses it, in its own words
            return await self.app(scope, _replay([body], None, receive), send)
        scope["route"] = self.route
        await response(scope, receive, send)

    def _takes(self, scope) -> bool:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST" or scope["query_string"]:
            return False
        ctype = accept = b""
        for name, value in scope["headers"]:
            if name == b"content-type":
                ctype = value
            elif name == b"accept":
                accept = value
        return ctype.split(b";")[0].strip().lower() == b"application/json" and b"geo+json" not in accept


def _replay(chunks: list[bytes], then, receive):
    """A ``receive`` that gives the body read so far, then ``then`` (a message, or an exception to
    raise; None: the body was whole), then the real ``receive``'s messages."""
    pending = [{"type": "http.request", "body": b"".join(chunks), "more_body": then is not None}]
    if then is not None:
        pending.append(then)

    async def replayed():
        if not pending:
            return await receive()
        message = pending.pop(0)
        if isinstance(message, BaseException):
            raise message
        return message

    return replayed
