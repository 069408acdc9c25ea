"""Maps: predictions, confidence regions and errors drawn on world boundaries, as PNG files.

The basemap is Natural Earth's 1:50m countries (TopoJSON from the npm package ``world-atlas``,
pinned by ``web/package-lock.json`` and copied here by the page's build), the same file the web
page draws: a map in a report and the page agree.
"""

from geoindex.maps.draw import draw_errors, draw_result

__all__ = ["draw_errors", "draw_result"]
