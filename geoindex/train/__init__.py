"""Fine-tuning GeoCLIP on your own geotagged photos (``geoindex-train``).

Two steps, each resumable: :mod:`~geoindex.pipeline.image_features` (shared with the photo gallery build) runs the frozen CLIP image tower over
``image,lat,lng`` rows once into a feature cache, and :mod:`~geoindex.train.fit` trains the image
head and the location encoder on it with GeoCLIP's objective, writing a weights folder that every
command takes as ``--weights``.
"""
