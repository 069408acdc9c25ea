"""Stage 3, the vector index: FAISS factory strings and the measured default (:mod:`.factory`),
search settings parsed once (:mod:`.search`), IVFH3 lists that follow H3 parents
(:mod:`.h3lists`), and training and adding, on the GPU when there is one (:mod:`.builder`)."""
