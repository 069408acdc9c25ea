"""The web page at ``/``: filled in by the page's own change (web/ builds serve/static/)."""


def mount_web(app, settings) -> None:
    """Serve the built page and its static files on ``app`` (nothing yet)."""
