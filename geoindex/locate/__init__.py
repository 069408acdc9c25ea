"""Stage 6, locate: embeddings -> ranked cells with probabilities, place names and regions.

:class:`~.geolocator.Geolocator` (search, region filters, exact re-ranking) with its inputs
and outputs (:mod:`.options`), the softmax and aggregation (:mod:`.ranking`), region filters
(:mod:`.regions`), exact re-ranking (:mod:`.rerank`) and GeoJSON (:mod:`.geojson`).
"""
