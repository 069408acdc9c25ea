"""The add in parts (a Ray build, or lists on disk): the trained empty index saved once, then every
part (a run of consecutive shards) added to its own copy and kept as ``parts/NNNNN.faiss`` (its
inverted lists) until the merge. A killed build resumes with the same trained index and redoes
only the missing parts.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import faiss
import numpy as np

from geoindex.atomic import atomic_path, reserve, write_json
from geoindex.pipeline import distributed
from geoindex.pipeline.encode import progress_bar
from geoindex.index.h3lists import list_numbers
from geoindex.store.shards import ShardFile, iter_vectors

TRAINED, TRAINED_KEY, PARTS = "trained.faiss", "trained.json", "parts"
DISK_FULL_FIX = ("free space on that disk and run the same command again: the finished shards and parts are kept "
                 "and resumed from")


def _key(choice, seed: int) -> dict:
    return {"faiss_factory": choice.index_plan.faiss_factory, "factory": choice.index_plan.factory,
            "search": str(choice.search), "seed": seed, "train_size": choice.train_size, "parts": "inverted lists"}


def saved_trained(work: Path, choice, seed: int) -> faiss.Index | None:
    """The trained empty index a killed build saved, when it was trained for the same choice;
    else None, and the parts of another training are removed (they are worthless)."""
    try:
        if json.loads((work / TRAINED_KEY).read_text()) == _key(choice, seed):
            return faiss.read_index(str(work / TRAINED))
    except (OSError, ValueError, RuntimeError):
        pass
    shutil.rmtree(work / PARTS, ignore_errors=True)
    return None


def filled_parts(work: Path) -> int:
    """How many filled parts the work dir holds."""
    return len(list((work / PARTS).glob("*.faiss")))


def save_trained(work: Path, index: faiss.Index, choice, seed: int) -> faiss.Index:
    with atomic_path(work / TRAINED) as tmp:
        faiss.write_index(index, str(tmp))
    write_json(work / TRAINED_KEY, _key(choice, seed))
    return index


def fill_parts(plan, shards: list[ShardFile], counts: list[int], trained: faiss.Index, choice) -> list[Path]:
    """Add every part's vectors to its own copy of the trained empty index (Ray tasks, or here);
    return the part files in order (those already on disk are not redone)."""
    folder = plan.work / PARTS
    folder.mkdir(exist_ok=True)
    runs = distributed.part_runs(counts)
    files = [folder / f"{i:05d}.faiss" for i in range(len(runs))]

    def loader(run: list[int]):
        def load():
            ids, xb = zip(*iter_vectors([shards[i] for i in run], as_spilled=True))
            ids, xb = np.concatenate(ids), np.concatenate(xb)
            lists = None if choice.parents is None else list_numbers(ids, choice.parents, choice.index_plan.h3_list_res)
            return ids, xb, lists
        return load

    todo = [(i, loader(run)) for i, run in enumerate(runs) if not files[i].is_file()]
    sizes = [sum(counts[i] for i in run) for run in runs]
    with progress_bar(plan, sum(sizes), "add to index", "vec") as bar:
        bar.update(sum(sizes) - sum(sizes[i] for i, _ in todo))
        for i, blob in distributed.fill_parts(trained, todo, plan.ray_actors):
            with atomic_path(files[i]) as tmp:  # allocated first: a full disk is one line, the part file removed
                tmp.touch()
                reserve(tmp, blob.nbytes, DISK_FULL_FIX)
                with open(tmp, "r+b") as f:
                    blob.tofile(f)
            bar.update(sizes[i])
    return files
