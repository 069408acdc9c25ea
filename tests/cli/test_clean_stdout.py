"""stdout is the answer and nothing else, for every index kind and machine format, through the
installed commands (issue 29): FAISS prints a notice when it opens an index whose lists are on
disk, and `geoindex locate ... --format json | jq .` must still parse."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.helpers.cli_output import assert_clean_stdout, run

FORMATS = ("json", "geojson")


def lists_to_disk(src, dst):
    """A copy of the index at ``src`` whose IVF lists live in ``dst/lists.ivfdata`` (as
    ``--lists-on-disk`` writes them), its manifest updated: an on-disk index in a second."""
    import faiss

    from geoindex.store.manifest import file_entries, write_manifest

    shutil.copytree(src, dst)
    index = faiss.read_index(str(dst / "vectors.faiss"))
    ivf = faiss.extract_index_ivf(index)
    ondisk = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(dst / "lists.ivfdata"))
    lists = faiss.InvertedListsPtrVector()
    lists.push_back(ivf.invlists)
    ondisk.merge_from_multiple(lists.data(), lists.size(), False)
    ivf.replace_invlists(ondisk, True)
    ondisk.this.disown()
    ondisk.filename = "lists.ivfdata"
    faiss.write_index(index, str(dst / "vectors.faiss"))
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["index"]["lists"] = "disk"
    manifest["files"].update(file_entries(dst, ("vectors.faiss", "lists.ivfdata")))
    write_manifest(dst, manifest)
    return dst


@pytest.fixture(scope="module")
def queries(built_r2, tmp_path_factory):
    """Two GeoCLIP embeddings of gallery cells, as a .npy file."""
    from geoindex.encoders.location import encode_latlng, load_location_encoder
    from geoindex.store.cell_table import load_cell_table

    table = load_cell_table(built_r2 / "cells.duckdb")
    path = tmp_path_factory.mktemp("q") / "q.npy"
    np.save(path, encode_latlng(load_location_encoder(), np.column_stack((table.lat[:2], table.lng[:2]))))
    return path


@pytest.fixture(scope="module")
def ondisk_r2(built_r2, tmp_path_factory):
    return lists_to_disk(built_r2, tmp_path_factory.mktemp("ondisk") / "r2")


def locate_argv(index, queries, fmt):
    return ["geoindex", "locate", "--index", str(index), "--embedding", str(queries), "--format", fmt]


def check_answer(answer, fmt, n=2):
    if fmt == "json":
        assert len(answer) == n and all(r["predictions"] for r in answer)
    else:
        assert len({f["properties"]["query"] for f in answer["features"]}) == n


@pytest.mark.slow  # over ~4 s: the full suite (make test-all) runs it
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", ["in_memory", "lists_on_disk"])
def test_locate_stdout_is_only_the_answer(kind, fmt, built_r2, ondisk_r2, queries):
    index = {"in_memory": built_r2, "lists_on_disk": ondisk_r2}[kind]
    check_answer(assert_clean_stdout(locate_argv(index, queries, fmt), fmt), fmt)


def test_faiss_notice_goes_to_stderr(ondisk_r2, queries):
    """The notice is not lost: it is a log line, on stderr."""
    proc = run(locate_argv(ondisk_r2, queries, "json"))
    assert proc.returncode == 0
    assert "IO_FLAG_ONDISK_SAME_DIR" not in proc.stdout
    assert "IO_FLAG_ONDISK_SAME_DIR" in proc.stderr


BUILDS = {  # every index kind a res-2 build makes, through the installed command
    "lists_on_disk": ["--factory", "IVF16,Flat", "--lists-on-disk"],
    "exact_store": ["--factory", "IVF16,SQ8", "--search", "nprobe=4,rerank=16", "--store", "fp16"],
    "regional": ["--country", "FR", "--country", "ES"],
}


@pytest.fixture(scope="module")
def built_kinds(tmp_path_factory):
    root = tmp_path_factory.mktemp("kinds")
    out = {}
    for kind, extra in BUILDS.items():
        proc = run(["geoindex", "build", "--resolution", "2", "--out", str(root / kind), "--no-progress", "-q",
                    *extra], timeout=900)
        assert proc.returncode == 0, proc.stderr[-2000:]
        out[kind] = root / kind
    return out


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", list(BUILDS))
def test_built_index_kinds_stdout_is_only_the_answer(kind, fmt, built_kinds, queries):
    check_answer(assert_clean_stdout(locate_argv(built_kinds[kind], queries, fmt), fmt), fmt)


@pytest.mark.slow  # a res-2 build with its lists on disk, through the installed command
def test_build_stdout_is_only_the_summary_line(tmp_path):
    """Merging parts into on-disk lists makes FAISS print "resizing <file> to N bytes" on stdout:
    the build's stdout is its one summary line all the same."""
    proc = run(["geoindex", "build", "--resolution", "2", "--factory", "IVF,SQ8", "--lists-on-disk",
                "--out", str(tmp_path / "r2"), "-q", "--no-progress"])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("built "), proc.stdout
    assert (tmp_path / "r2" / "lists.ivfdata").is_file()
