"""A photo archive in one command: folders of photos in, one results table out.

The data path: :mod:`~geoindex.archive.walk` finds the photos (folders, lists), :mod:`~.exif`
reads their camera GPS and time, :mod:`~.pipeline` decodes them on a thread pool and runs CLIP
and the search in batches, :mod:`~.rows` turns each answer into one flat row, :mod:`~.parts`
commits rows in batches (part files renamed into place, so a run killed at any moment resumes
where it stopped) and :mod:`~.writers` assembles the final Parquet, CSV, JSON Lines or GeoJSON
file atomically. :func:`~.runner.run_archive` ties them together.
"""
