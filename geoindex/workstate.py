"""Fingerprinted work folders: resume a long job only when what its files depend on is unchanged.

The build's work dir, the feature cache and training checkpoints all keep a fingerprint (a JSON
dict of everything their finished pieces depend on, normalised: ints as ints, resolved weights
as hashes) beside those pieces. :class:`WorkState` is the one rule for it: the same fingerprint
resumes; a different one either starts afresh (the build: its shards are a cache) or is refused
naming the keys that differ (the feature cache and training, whose folders the user named).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from geoindex.atomic import write_json

log = logging.getLogger(__name__)


def changed_keys(old: dict, new: dict) -> list[str]:
    """The keys whose values differ between two fingerprints (sorted)."""
    return sorted(k for k in {*old, *new} if old.get(k) != new.get(k))


@dataclass(frozen=True)
class WorkState:
    """A folder whose finished pieces depend on ``folder/stamp`` (a JSON fingerprint)."""

    folder: Path
    stamp: str = "work.json"

    @property
    def stamp_path(self) -> Path:
        return self.folder / self.stamp

    def read(self) -> dict | None:
        """The fingerprint the folder was started with; None when there is none (or unreadable)."""
        try:
            data = json.loads(self.stamp_path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def start(self, fingerprint: dict, subdirs: tuple[str, ...] = ()) -> None:
        """Create the folder (and ``subdirs``) and stamp it with ``fingerprint``."""
        for sub in ("", *subdirs):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        write_json(self.stamp_path, fingerprint)

    def resume_or_restart(self, fingerprint: dict, subdirs: tuple[str, ...] = ()) -> bool:
        """True when the folder holds work of ``fingerprint`` (resume); else empty it and start
        afresh (False). For work dirs that are a cache of the job, never the user's files."""
        if self.folder.is_dir():
            previous = self.read()
            if previous == fingerprint:
                for sub in subdirs:
                    (self.folder / sub).mkdir(exist_ok=True)
                return True
            log.warning("%s holds the work of a different job (%s): starting afresh", self.folder,
                        "no fingerprint" if previous is None else
                        f"{', '.join(changed_keys(previous, fingerprint))} changed")
            shutil.rmtree(self.folder)
        self.start(fingerprint, subdirs)
        return False

    def resume_or_refuse(self, fingerprint: dict, refuse, subdirs: tuple[str, ...] = ()) -> bool:
        """True when the folder holds work of ``fingerprint``; False after starting it when it has
        no fingerprint yet; ``raise refuse(changed_keys)`` when it was started differently."""
        previous = self.read()
        if previous is None:
            self.start(fingerprint, subdirs)
            return False
        check_same(previous, fingerprint, refuse)
        for sub in subdirs:
            (self.folder / sub).mkdir(exist_ok=True)
        return True


def check_same(previous: dict, fingerprint: dict, refuse) -> None:
    """``raise refuse(changed keys)`` unless the two fingerprints are equal."""
    if previous != fingerprint:
        raise refuse(changed_keys(previous, fingerprint))
