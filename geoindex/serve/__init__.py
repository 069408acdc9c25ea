"""``geoindex-serve``: the HTTP API over the query layer (FastAPI on uvicorn)."""
