"""Stage 5, the build: the streaming, resumable pipeline behind ``build_index``.

:func:`~.pipeline.build` runs cells -> encoders -> index -> store for a
:class:`~.pipeline.BuildConfig`; its work directory (lock, resume, atomic publish) is
:mod:`.workdir` and the finished index's self-check :mod:`.self_check`.
"""

from geoindex.build.pipeline import BuildConfig, BuildResult, build, summary_line
from geoindex.build.workdir import work_dir_for

__all__ = ["BuildConfig", "BuildResult", "build", "summary_line", "work_dir_for"]
