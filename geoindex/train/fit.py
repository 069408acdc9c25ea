"""``geoindex train fit``: GeoCLIP's training on a feature cache, split by concern.

:mod:`.config` (the run's settings and schedule), :mod:`.queue` (the GPS queue), :mod:`.model`
(the trained parts and where they start from), :mod:`.evaluation` (held-out accuracy),
:mod:`.checkpoint` (resumable state and the weights folder) and :mod:`.loop` (the steps). The
result is a weights folder in GeoCLIP's own file layout (the three ``.pth`` files) plus
``weights.json``: ``geoindex build``, ``locate`` and ``serve`` take it as ``--weights``.
"""

from geoindex.train.checkpoint import CHECKPOINTS, KEEP_CHECKPOINTS, latest_checkpoint, save_checkpoint, write_weights
from geoindex.train.config import FORMAT, SCHEDULES, FitConfig, FitReport
from geoindex.train.evaluation import EvalGallery, IndexGallery, eval_galleries, evaluate
from geoindex.train.loop import KILL_ENV, MAX_LOGIT_SCALE, fit, split
from geoindex.train.model import GeoCLIPModel, initial_model, random_location_encoder
from geoindex.train.queue import KM_PER_DEGREE, GPSQueue

__all__ = ["CHECKPOINTS", "FORMAT", "KEEP_CHECKPOINTS", "KILL_ENV", "KM_PER_DEGREE", "MAX_LOGIT_SCALE", "SCHEDULES",
           "EvalGallery", "FitConfig", "FitReport", "GPSQueue", "GeoCLIPModel", "IndexGallery", "eval_galleries",
           "evaluate", "fit", "initial_model", "latest_checkpoint", "random_location_encoder", "save_checkpoint",
           "split", "write_weights"]
