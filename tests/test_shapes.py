"""The shapes generator: masks match the PNG pixel for pixel, geometry, occlusion, options, determinism."""
import json
import os

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from conftest_data import shapes_dir  # noqa: F401  (fixture)
from mrcnn_np.data import CocoDataset
from mrcnn_np.data.shapes import generate_shapes, random_shapes_image, shape_mask

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _load_split(root, split):
    data = json.loads((root / split / "annotations.json").read_text())
    by_image = {im["id"]: [] for im in data["images"]}
    for ann in data["annotations"]:
        by_image[ann["image_id"]].append(ann)
    return data, by_image


# ---- geometry: hand-computed and brute-force truths ------------------------------------------------

def test_square_covers_the_hand_computed_pixels():
    # centre (10, 12), half-side 4: x in [6, 14), y in [8, 16) -> columns 6..13, rows 8..15
    m = shape_mask("square", 10.0, 12.0, 4.0, 32)
    expected = np.zeros((32, 32), bool)
    expected[8:16, 6:14] = True
    np.testing.assert_array_equal(m, expected)


def test_circle_pixel_count_by_hand():
    # centre on a pixel corner, radius 3: the 6x6 block of centres at offsets +-0.5, +-1.5, +-2.5
    # minus its 4 corners (2.5^2 + 2.5^2 = 12.5 >= 9) -> 32 pixels, rows/columns 7..12
    m = shape_mask("circle", 10.0, 10.0, 3.0, 24)
    assert m.sum() == 32
    ys, xs = np.nonzero(m)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (7, 12, 7, 12)
    assert not m[7, 7] and not m[12, 12] and m[7, 8]


def test_triangle_matches_a_brute_force_barycentric_test():
    cx, cy, s, n = 15.3, 16.7, 9.1, 32
    a = np.array([cx, cy - s])
    b = np.array([cx - s * np.sqrt(3) / 2, cy + s / 2])
    c = np.array([cx + s * np.sqrt(3) / 2, cy + s / 2])
    expected = np.zeros((n, n), bool)
    det = (b[1] - c[1]) * (a[0] - c[0]) + (c[0] - b[0]) * (a[1] - c[1])
    for py in range(n):
        for px in range(n):
            x, y = px + 0.5, py + 0.5
            l1 = ((b[1] - c[1]) * (x - c[0]) + (c[0] - b[0]) * (y - c[1])) / det
            l2 = ((c[1] - a[1]) * (x - c[0]) + (a[0] - c[0]) * (y - c[1])) / det
            expected[py, px] = l1 >= 0 and l2 >= 0 and 1 - l1 - l2 >= 0
    got = shape_mask("triangle", cx, cy, s, n)
    np.testing.assert_array_equal(got, expected)
    # area close to the continuous one, (3 sqrt(3) / 4) s^2
    assert abs(got.sum() - 3 * np.sqrt(3) / 4 * s * s) < 0.1 * got.sum()


def test_unknown_kind_is_a_value_error():
    with pytest.raises(ValueError, match="kind"):
        shape_mask("hexagon", 5, 5, 2, 16)


# ---- the written dataset -----------------------------------------------------------------------------

@pytest.mark.parametrize("split", ["train", "val"])
def test_masks_match_the_png_pixels_exactly(shapes_dir, split):
    data, by_image = _load_split(shapes_dir, split)
    assert len(data["images"]) == (24 if split == "train" else 10)
    assert [(c["id"], c["name"]) for c in data["categories"]] == [(1, "square"), (2, "circle"),
                                                                  (3, "triangle")]
    for im in data["images"]:
        png = np.asarray(Image.open(shapes_dir / split / "images" / im["file_name"]))
        assert png.shape == (128, 128, 3) and png.dtype == np.uint8
        anns = by_image[im["id"]]
        assert 1 <= len(anns) <= 4
        masks = np.stack([mask_utils.decode(a["segmentation"]) for a in anns]).astype(bool)
        assert masks.sum(axis=0).max() <= 1, "masks overlap"
        background = ~masks.any(axis=0)
        # the background is one colour ...
        bg_colours = np.unique(png[background], axis=0)
        assert len(bg_colours) == 1
        colours = [bg_colours[0]]
        for a, m in zip(anns, masks):
            c = np.unique(png[m], axis=0)
            assert len(c) == 1, f"image {im['id']} annotation {a['id']}: mask has several colours"
            colours.append(c[0])
            # ... and the pixels of the instance's colour are exactly its mask (an independent truth:
            # the PNG as decoded by PIL, not the generator's arrays)
            np.testing.assert_array_equal((png == c[0]).all(axis=-1), m)
        assert len(np.unique(np.stack(colours), axis=0)) == len(colours), "colours not distinct"
        assert background.sum() + masks.sum() == 128 * 128


def test_bbox_area_and_fields(shapes_dir):
    data, _ = _load_split(shapes_dir, "train")
    ids = [a["id"] for a in data["annotations"]]
    assert ids == list(range(1, len(ids) + 1))
    for a in data["annotations"]:
        assert isinstance(a["segmentation"]["counts"], str)
        m = mask_utils.decode(a["segmentation"])
        ys, xs = np.nonzero(m)
        assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert a["area"] == m.sum() >= 48
        assert a["iscrowd"] == 0 and a["category_id"] in (1, 2, 3)


def test_layout_and_no_leftover_temporary_files(shapes_dir):
    for split, n in (("train", 24), ("val", 10)):
        files = sorted(os.listdir(shapes_dir / split / "images"))
        assert files == [f"{i:06d}.png" for i in range(1, n + 1)]
        assert sorted(os.listdir(shapes_dir / split)) == ["annotations.json", "images"]


def test_loader_reads_the_generated_dataset(shapes_dir):
    ds = CocoDataset(shapes_dir / "val" / "images", shapes_dir / "val" / "annotations.json")
    data, by_image = _load_split(shapes_dir, "val")
    assert len(ds) == 10 and ds.class_names == ["background", "square", "circle", "triangle"]
    image, t = ds[0]
    anns = by_image[ds.image_ids[0]]
    np.testing.assert_array_equal(t["labels"], [a["category_id"] for a in anns])
    np.testing.assert_array_equal(t["boxes"], [[x, y, x + w, y + h] for x, y, w, h in
                                               (a["bbox"] for a in anns)])
    # every masked pixel of the image has one colour per instance
    for m in t["masks"].astype(bool):
        assert len(np.unique(image[m], axis=0)) == 1


# ---- occlusion and options ---------------------------------------------------------------------------

def test_last_drawn_shape_is_whole_and_earlier_ones_can_be_hidden():
    # The last instance is never occluded: a last square fills its box; a last circle is symmetric.
    rng = np.random.default_rng(123)
    seen_last_square = seen_occluded_square = 0
    for _ in range(200):
        image, masks, cats = random_shapes_image(rng)
        assert masks.shape[0] == len(cats) >= 1 and masks.sum(axis=0).max() <= 1
        for k, (m, cat) in enumerate(zip(masks, cats)):
            ys, xs = np.nonzero(m)
            box_area = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
            if cat == 1 and k == len(cats) - 1:
                seen_last_square += 1
                assert m.sum() == box_area
            elif cat == 1 and m.sum() < box_area:
                seen_occluded_square += 1
    assert seen_last_square > 10 and seen_occluded_square > 0


@pytest.mark.parametrize("min_area,min_frac", [(200, 0.0), (48, 0.8)])
def test_min_visible_area_and_fraction_are_honoured(min_area, min_frac):
    rng = np.random.default_rng(7)
    for _ in range(60):
        _, masks, cats = random_shapes_image(rng, min_visible_area=min_area,
                                             min_visible_fraction=min_frac, min_size=10)
        areas = masks.reshape(len(masks), -1).sum(axis=1)
        assert len(cats) >= 1 and areas.min() >= min_area
        if min_frac:
            # the whole-shape area is unknown here, but a triangle of size s >= 10 is at least
            # 3*sqrt(3)/4*100 ~ 130 pixels, so 0.8 of it is more than 100
            assert areas.min() >= 100


def test_instance_count_options():
    rng = np.random.default_rng(0)
    counts = [len(random_shapes_image(rng, min_instances=2, max_instances=3)[2]) for _ in range(50)]
    assert set(counts) <= {1, 2, 3} and max(counts) == 3


def test_bad_options_fail_before_writing(tmp_path):
    out = tmp_path / "never"
    with pytest.raises(ValueError, match="min_size"):
        generate_shapes(out, 2, 2, min_size=100)
    with pytest.raises(ValueError, match="n_train"):
        generate_shapes(out, -1, 2)
    with pytest.raises(ValueError, match="min_visible_area"):
        generate_shapes(out, 2, 2, min_visible_area=10_000)
    assert not out.exists()


# ---- determinism -------------------------------------------------------------------------------------

def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    a = generate_shapes(tmp_path / "a", 6, 3, seed=5)
    b = generate_shapes(tmp_path / "b", 6, 3, seed=5)
    c = generate_shapes(tmp_path / "c", 6, 3, seed=6)
    for split in ("train", "val"):
        ja, jb, jc = (r[split]["annotations"].read_bytes() for r in (a, b, c))
        assert ja == jb and ja != jc
        for name in sorted(os.listdir(a[split]["images"])):
            assert (a[split]["images"] / name).read_bytes() == (b[split]["images"] / name).read_bytes()
    assert a["train"]["num_images"] == 6 and a["val"]["num_instances"] >= 3
    # image i does not depend on how many images are asked for
    d = generate_shapes(tmp_path / "d", 2, 0, seed=5)
    assert "val" not in d
    assert (d["train"]["images"] / "000002.png").read_bytes() == \
        (a["train"]["images"] / "000002.png").read_bytes()


def test_regenerating_into_a_folder_replaces_the_split_stale_images_included(tmp_path):
    generate_shapes(tmp_path, 5, 3, seed=1, image_size=32)
    written = generate_shapes(tmp_path, 2, 3, seed=2, image_size=32)
    images = tmp_path / "train" / "images"
    listed = [im["file_name"] for im in json.loads(written["train"]["annotations"].read_text())["images"]]
    assert sorted(os.listdir(images)) == sorted(listed) == ["000001.png", "000002.png"]
    fresh = generate_shapes(tmp_path / "fresh", 2, 3, seed=2, image_size=32)
    assert (images / "000002.png").read_bytes() == (fresh["train"]["images"] / "000002.png").read_bytes()
    assert written["val"]["annotations"].read_bytes() == fresh["val"]["annotations"].read_bytes()


def test_regenerating_refuses_a_folder_with_files_it_did_not_write(tmp_path):
    generate_shapes(tmp_path, 3, 0, seed=1, image_size=32)
    before = (tmp_path / "train" / "annotations.json").read_bytes()
    (tmp_path / "train" / "images" / "holiday.jpg").write_bytes(b"someone's photo")
    with pytest.raises(ValueError, match=r"holiday\.jpg was not written by the shapes generator"):
        generate_shapes(tmp_path, 2, 0, seed=2, image_size=32)
    assert (tmp_path / "train" / "images" / "holiday.jpg").exists()          # nothing touched
    assert sorted(os.listdir(tmp_path / "train" / "images"))[:3] == ["000001.png", "000002.png",
                                                                    "000003.png"]
    assert (tmp_path / "train" / "annotations.json").read_bytes() == before
