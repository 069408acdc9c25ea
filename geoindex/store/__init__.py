"""Stage 4, the store: what an index directory holds and how it is read back.

The directory contract and its verification (:mod:`.manifest`), the DuckDB ``cells`` table
(:mod:`.cells_db`), its hot columns in memory (:mod:`.cell_table`) and the build's finished
shard files (:mod:`.shards`).
"""
