"""Shared fixtures. The indexes here are built once per session through the library
(``BuildConfig`` + ``geoindex.build_index``) and shared read-only by every test that queries them:
a test that changes an index copies it first (``index_copy``). Each shared index is fingerprinted
when built and checked again at the end of the session, so a test that writes into one fails
instead of quietly changing what the tests after it see. Markers and commands: docs/testing.md."""

import hashlib
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

logging.getLogger("faiss.loader").setLevel(logging.WARNING)


@pytest.fixture(scope="session", autouse=True)
def user_cache(tmp_path_factory):
    """The user cache (ONNX image towers exported on first use) in a session tmp folder, never
    ~/.cache; commands the tests start inherit it."""
    import os

    from geoindex.encoders.onnx_tower import CACHE_ENV

    saved = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("user-cache"))
    yield Path(os.environ[CACHE_ENV])
    if saved is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = saved


@pytest.fixture(scope="session")
def encoder():
    from geoindex.encoders.location import load_location_encoder

    return load_location_encoder()


@pytest.fixture(scope="session")
def gallery_100k():
    from geoindex.cells.csv_gallery import read_gallery_csv
    from geoindex.encoders.weights import gallery_100k_path

    return read_gallery_csv(gallery_100k_path())


def _fingerprint(root: Path) -> dict[str, str]:
    """{relative path: SHA-256} of every file under ``root`` (an index directory: a few MB)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _shared_index(tmp_path_factory, name: str, **config):
    """Build ``BuildConfig(out=..., **config)`` once; yield its directory; at the end of the session
    fail if any test added, removed or changed a file in it."""
    from geoindex import BuildConfig, build_gallery

    out = tmp_path_factory.mktemp("shared") / name
    build_gallery(BuildConfig(out=out, progress=False, **config))
    before = _fingerprint(out)
    yield out
    after = _fingerprint(out)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, (f"a test changed the shared index {name} ({', '.join(changed)}): tests share it "
                         "read-only; copy it first with the index_copy fixture")


@pytest.fixture(scope="session")
def built_r2(tmp_path_factory):
    """Res 2 land (2,203 cells), IVFH3 lists and SQ8 codes: what ``build_index --resolution 2
    --factory IVFH3,SQ8`` writes. Shared read-only."""
    yield from _shared_index(tmp_path_factory, "r2", resolution=2, factory="IVFH3,SQ8")


@pytest.fixture(scope="session")
def flat_r2(tmp_path_factory):
    """Res 2 land with the default factory at this size (Flat: exact scores). Shared read-only."""
    yield from _shared_index(tmp_path_factory, "r2-flat", resolution=2)


@pytest.fixture(scope="session")
def fr_r2(tmp_path_factory):
    """Res 2, France only (``build_index --resolution 2 --country FR``). Shared read-only."""
    from geoindex.cells.region import make_filter

    yield from _shared_index(tmp_path_factory, "r2-fr", resolution=2, region=make_filter(countries=["FR"]))


@pytest.fixture(scope="session")
def photos_ref(tmp_path_factory):
    """A reference photo gallery of 40 synthetic photos through the tiny random CLIP (Flat: ~6 s),
    what ``geoindex build --photos photos.csv --clip-model tiny-test`` writes. Shared read-only."""
    from geoindex.photos.build import PhotoBuildConfig, build_photos
    from geoindex.train.synthetic import write_photos

    root = tmp_path_factory.mktemp("shared-photos")
    csv = write_photos(root / "photos", 40, seed=0, size=16)
    build_photos(PhotoBuildConfig(csv=csv, out=root / "ref", clip_model="tiny-test", device="cpu", progress=False))
    before = _fingerprint(root / "ref")
    yield root / "ref"
    assert _fingerprint(root / "ref") == before, "a test changed the shared photo gallery: copy it first (index_copy)"


@pytest.fixture
def index_copy(tmp_path):
    """``index_copy(src, name=None) -> Path``: a private copy of a shared index in this test's
    tmp_path, to damage, edit or rebuild over."""
    def copy(src: Path, name: str | None = None) -> Path:
        return Path(shutil.copytree(src, tmp_path / (name or f"{src.name}-copy")))

    return copy


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local 2-CPU Ray cluster for one test module (skipped without Ray); its workers inherit
    the kill-switch folder it yields (distributed.KILL_ENV) from this process."""
    import os

    from geoindex.pipeline import distributed

    ray = pytest.importorskip("ray")
    kill_dir = tmp_path_factory.mktemp("kill")
    os.environ[distributed.KILL_ENV] = str(kill_dir)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield kill_dir
    ray.shutdown()
    os.environ.pop(distributed.KILL_ENV, None)


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty ONNX export cache for this test (the tower exported, checked and timed anew);
    returns the folder the graphs and their records go to."""
    from geoindex.encoders import onnx_tower

    monkeypatch.setenv(onnx_tower.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache" / "onnx"


@pytest.fixture
def probe_dir(tmp_path):
    """A folder of int8_check.MIN_PROBES random photos: the int8 self-check's probe set."""
    from PIL import Image

    from geoindex.locate import int8_check

    rng = np.random.default_rng(8)
    folder = tmp_path / "probes"
    folder.mkdir()
    for i in range(int8_check.MIN_PROBES):
        Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    return folder
