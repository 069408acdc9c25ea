"""Stage 5, the build: the streaming, resumable pipeline behind ``geoindex build``.

:func:`~.pipeline.build` turns a :class:`~.config.BuildConfig` into a frozen
:class:`~.plan.BuildPlan` (every argument checked and decided before any work), then runs
cells -> encoders -> index -> store; its work directory (lock, resume, atomic publish) is
:mod:`.workdir` and the finished index's self-check :mod:`.self_check`.
"""

from geoindex.pipeline.config import BuildConfig, BuildResult
from geoindex.pipeline.pipeline import build, summary_line
from geoindex.pipeline.plan import BuildPlan, make_plan
from geoindex.pipeline.workdir import work_dir_for

__all__ = ["BuildConfig", "BuildPlan", "BuildResult", "build", "make_plan", "summary_line", "work_dir_for"]
