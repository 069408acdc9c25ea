"""Stage 1, the cells: which coordinates the index holds and what is known about them.

H3 galleries in shards (:mod:`.gallery`) or CSV rows (:mod:`.csv_gallery`), the GLOBE land
mask (:mod:`.landmask`), offline reverse geocoding (:mod:`.geocode`) and vectorised H3 id
arithmetic (:mod:`.h3ids`). No torch, no FAISS.
"""
