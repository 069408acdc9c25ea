import h3
import h3.api.basic_int as h3i
import numpy as np
import pytest

from geoindex.cells import csv_gallery, gallery
from geoindex.errors import GalleryFileError, InvalidArgumentError
from geoindex.cells.h3ids import cell_to_parent
from geoindex.cells.landmask import is_land


@pytest.mark.slow  # over ~4 s: the full suite (make test-all) runs it
def test_land_mask_agrees_with_package():
    from global_land_mask import globe

    rng = np.random.default_rng(3)
    lat, lng = rng.uniform(-90, 90, 50_000), rng.uniform(-180, 180, 50_000)
    assert (is_land(lat, lng) == globe.is_land(lat.copy(), lng.copy())).all()
    assert is_land(np.array([48.8566, 0.0]), np.array([2.3522, -140.0])).tolist() == [True, False]


@pytest.mark.parametrize("res,count", [(0, 122), (1, 842), (2, 5882)])
def test_all_cells_cover_the_globe(res, count):
    cells = np.concatenate([gallery.h3_shard(r, res, "all").cell for r in gallery.h3_shard_roots(res)])
    assert len(cells) == count == h3.get_num_cells(res)
    assert len(np.unique(cells)) == count


def test_land_gallery_rule_keeps_coastal_cells():
    res = 2
    land = [gallery.h3_shard(r, res, "land") for r in gallery.h3_shard_roots(res)]
    cells = np.concatenate([b.cell for b in land])
    lat = np.concatenate([b.lat for b in land])
    lng = np.concatenate([b.lng for b in land])
    assert 1500 < len(cells) < 3500  # ~30% land plus coasts
    centre_on_land = is_land(lat, lng)
    coastal = cells[~centre_on_land]
    assert len(coastal) > 50  # cells kept only for a vertex on land
    for c in coastal[:20]:
        boundary = np.array(h3i.cell_to_boundary(int(c)))
        assert is_land(boundary[:, 0], boundary[:, 1]).any()
    # and every dropped cell really has no land at its centre or vertices
    all_cells = np.concatenate([gallery.h3_shard(r, res, "all").cell for r in gallery.h3_shard_roots(res)])
    dropped = np.setdiff1d(all_cells, cells)
    for c in dropped[::50]:
        pts = np.array([h3i.cell_to_latlng(int(c)), *h3i.cell_to_boundary(int(c))])
        assert not is_land(pts[:, 0], pts[:, 1]).any()


@pytest.mark.parametrize("bad,match", [
    ("-1", "out of range"), ("16", "out of range"), ("10", "distributed"), ("abc", "not an integer"),
    ("3.5", "not an integer"), ("", "not an integer"),
])
def test_resolution_errors(bad, match):
    with pytest.raises(InvalidArgumentError, match=match):
        gallery.validate_resolution(bad)


def test_vectorised_parent_matches_h3():
    cells = gallery.h3_shard(gallery.h3_shard_roots(3)[7], 3, "all").cell
    for pr in range(4):
        expected = [h3i.cell_to_parent(int(c), pr) for c in cells]
        assert cell_to_parent(cells, pr).tolist() == expected


def test_csv_gallery_with_and_without_header(tmp_path):
    a = tmp_path / "a.csv"
    a.write_text("LAT,LON\n48.85,2.35\n-33.86,151.21\n")
    b = tmp_path / "b.csv"
    b.write_text("id,longitude,latitude\n1,2.35,48.85\n2,151.21,-33.86\n")
    c = tmp_path / "c.csv"
    c.write_text("48.85,2.35\n-33.86,151.21\n")
    for f in (a, b, c):
        assert np.allclose(csv_gallery.read_gallery_csv(f), [[48.85, 2.35], [-33.86, 151.21]])


@pytest.mark.parametrize("text,match", [
    ("lat,lng\n1,2\nx,3\n", "line 3"),
    ("lat,lng\n1,2\n95,3\n", "outside"),
    ("lat,lng\n1,2\n3\n", "line 3"),
    ("", "empty"),
    ("lat,lng\n", "no rows"),
    ("foo,bar\n1,2\n", "no lat and lng"),
    ("lat,lng\nnan,2\n", "outside"),
    ("lat,lng\n1,2\n1,2,3\n", "line 3: '1,2,3' has 3 fields, the header has 2"),
    ("1,2\n3,4,5\n", "line 2: '3,4,5' has 3 fields, a lat,lng row has 2"),
])
def test_csv_errors_name_the_row(tmp_path, text, match):
    f = tmp_path / "g.csv"
    f.write_text(text)
    with pytest.raises(GalleryFileError, match=match):
        csv_gallery.read_gallery_csv(f)
