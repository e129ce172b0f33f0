"""The COCO reader, transforms and batch iterator on small hand-made datasets."""
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from conftest_data import coco_dict, rect_polygon, shapes_dir, write_json, write_png  # noqa: F401
from mrcnn_np.data import (BatchLoader, CocoDataset, CocoFormatError, ImageNotFoundError,
                           boxes_to_original, hflip, iterate_batches, masks_to_original,
                           predictions_to_original, resize_and_pad)
from mrcnn_np.data.coco import image_to_float_chw

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

H, W = 10, 12


def _dataset(tmp_path, images, annotations, categories=None, pixels=None):
    """Write the images (random RGB unless ``pixels`` gives one per file) and the JSON; open it."""
    rng = np.random.default_rng(0)
    for iid, name, w, h in images:
        arr = pixels[name] if pixels and name in pixels else rng.integers(0, 256, (h, w, 3))
        write_png(tmp_path / "images" / name, arr)
    path = write_json(tmp_path / "ann.json", coco_dict(images, annotations, categories))
    return CocoDataset(tmp_path / "images", path)


def _ann(aid, image_id, seg, cat=1, bbox=None, iscrowd=0):
    a = {"id": aid, "image_id": image_id, "category_id": cat, "segmentation": seg, "iscrowd": iscrowd}
    if bbox is not None:
        a["bbox"] = bbox
    return a


# ---- segmentations -----------------------------------------------------------------------------------

def test_polygon_rectangle_rasterises_to_the_hand_computed_pixels(tmp_path):
    # The rectangle [2, 8) x [3, 7): pixel centres inside are columns 2..7 and rows 3..6.
    ds = _dataset(tmp_path, [(1, "a.png", W, H)],
                  [_ann(5, 1, [rect_polygon(2, 3, 8, 7)], bbox=[2, 3, 6, 4])])
    _, t = ds[0]
    expected = np.zeros((H, W), np.uint8)
    expected[3:7, 2:8] = 1
    assert t["masks"].shape == (1, H, W) and t["masks"].dtype == np.uint8
    np.testing.assert_array_equal(t["masks"][0], expected)
    np.testing.assert_array_equal(t["boxes"], [[2, 3, 8, 7]])
    assert t["boxes"].dtype == np.float32 and t["labels"].dtype == np.int64


def test_two_polygons_are_one_mask_and_short_polygons_are_skipped(tmp_path):
    seg = [rect_polygon(0, 0, 2, 2), [5, 5, 6, 6], rect_polygon(8, 6, 10, 9)]
    ds = _dataset(tmp_path, [(1, "a.png", W, H)], [_ann(1, 1, seg, bbox=[0, 0, 10, 9])])
    m = ds[0][1]["masks"][0]
    assert m.sum() == 4 + 6 and m[:2, :2].all() and m[6:9, 8:10].all()


def test_uncompressed_rle_by_hand(tmp_path):
    # 4 x 5 image read column by column: 5 zeros (column 0 and row 0 of column 1), 3 ones (rows 1..3
    # of column 1), then 12 zeros.
    seg = {"size": [4, 5], "counts": [5, 3, 12]}
    ds = _dataset(tmp_path, [(3, "r.png", 5, 4)], [_ann(1, 3, seg, bbox=[1, 1, 1, 3])])
    expected = np.zeros((4, 5), np.uint8)
    expected[1:4, 1] = 1
    np.testing.assert_array_equal(ds[0][1]["masks"][0], expected)


def test_compressed_rle_string_round_trip(tmp_path):
    truth = np.zeros((H, W), np.uint8)
    truth[2:5, 3:9] = 1
    truth[7, 1] = 1
    rle = mask_utils.encode(np.asfortranarray(truth))
    seg = {"size": [H, W], "counts": rle["counts"].decode("ascii")}
    ds = _dataset(tmp_path, [(1, "a.png", W, H)], [_ann(1, 1, seg, bbox=[1, 2, 8, 6])])
    np.testing.assert_array_equal(ds[0][1]["masks"][0], truth)


def test_crowd_annotations_are_kept_out_of_targets_but_accessible(tmp_path):
    anns = [_ann(1, 1, [rect_polygon(0, 0, 4, 4)], bbox=[0, 0, 4, 4]),
            _ann(2, 1, {"size": [H, W], "counts": [20, 30, 70]}, bbox=[1, 0, 4, 10], iscrowd=1)]
    ds = _dataset(tmp_path, [(1, "a.png", W, H)], anns)
    t = ds.get_target(0)
    assert len(t["boxes"]) == 1 and t["masks"][0].sum() == 16
    c = ds.crowd_target(0)
    assert len(c["boxes"]) == 1 and c["masks"][0].sum() == 30
    assert [a["id"] for a in ds.annotations(0)] == [1, 2]
    assert [a["id"] for a in ds.annotations(0, include_crowd=False)] == [1]


def test_negative_image_has_empty_targets(tmp_path):
    ds = _dataset(tmp_path, [(1, "a.png", W, H), (2, "b.png", W, H)],
                  [_ann(1, 2, [rect_polygon(0, 0, 4, 4)], bbox=[0, 0, 4, 4])])
    image, t = ds[0]
    assert image.shape == (H, W, 3)
    assert t["boxes"].shape == (0, 4) and t["boxes"].dtype == np.float32
    assert t["labels"].shape == (0,) and t["labels"].dtype == np.int64
    assert t["masks"].shape == (0, H, W) and t["masks"].dtype == np.uint8
    assert t["image_id"] == 1 and t["orig_size"] == (H, W)


def test_bbox_xywh_to_xyxy_and_missing_bbox_from_mask(tmp_path):
    anns = [_ann(1, 1, [rect_polygon(1, 2, 5, 6)], bbox=[1.5, 2.0, 3.0, 4.0]),
            _ann(2, 1, [rect_polygon(6, 1, 9, 8)])]
    ds = _dataset(tmp_path, [(1, "a.png", W, H)], anns)
    np.testing.assert_allclose(ds[0][1]["boxes"], [[1.5, 2, 4.5, 6], [6, 1, 9, 8]])


def test_box_only_annotation_gets_its_box_as_mask_and_degenerate_boxes_are_dropped(tmp_path):
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 1, 3, 2]},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [4, 4, 0, 3], "segmentation": []}]
    ds = _dataset(tmp_path, [(1, "a.png", W, H)], anns)
    t = ds[0][1]
    expected = np.zeros((H, W), np.uint8)
    expected[1:3, 2:5] = 1
    assert len(t["boxes"]) == 1
    np.testing.assert_array_equal(t["masks"][0], expected)


# ---- categories and image modes ---------------------------------------------------------------------

def test_category_ids_map_to_contiguous_labels_and_back(tmp_path):
    cats = [{"id": 17, "name": "dog"}, {"id": 3, "name": "cat"}, {"id": 40, "name": "bird"}]
    anns = [_ann(1, 1, [rect_polygon(0, 0, 3, 3)], cat=40, bbox=[0, 0, 3, 3]),
            _ann(2, 1, [rect_polygon(4, 4, 8, 8)], cat=3, bbox=[4, 4, 4, 4]),
            _ann(3, 1, [rect_polygon(8, 0, 12, 3)], cat=17, bbox=[8, 0, 4, 3])]
    ds = _dataset(tmp_path, [(1, "a.png", W, H)], anns, cats)
    assert ds.cat_id_to_label == {3: 1, 17: 2, 40: 3}
    assert ds.label_to_cat_id == {1: 3, 2: 17, 3: 40}
    assert ds.class_names == ["background", "cat", "dog", "bird"] and ds.num_classes == 3
    labels = ds[0][1]["labels"]
    np.testing.assert_array_equal(labels, [3, 1, 2])
    assert [ds.label_to_cat_id[int(k)] for k in labels] == [40, 3, 17]


def test_grayscale_and_rgba_become_rgb(tmp_path):
    gray = np.arange(H * W, dtype=np.uint8).reshape(H, W)
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 10, 20, 30, 77
    images = [(1, "g.png", W, H), (2, "a.png", W, H)]
    for name, arr, mode in (("g.png", gray, "L"), ("a.png", rgba, "RGBA")):
        write_png(tmp_path / "images" / name, arr, mode=mode)
    ds = CocoDataset(tmp_path / "images", write_json(tmp_path / "ann.json", coco_dict(images, [])))
    g, a = ds.load_image(0), ds.load_image(1)
    assert g.shape == a.shape == (H, W, 3) and g.dtype == a.dtype == np.uint8
    for ch in range(3):
        np.testing.assert_array_equal(g[..., ch], gray)
    np.testing.assert_array_equal(a, np.broadcast_to([10, 20, 30], (H, W, 3)))
    f = image_to_float_chw(g)
    assert f.shape == (3, H, W) and f.dtype == np.float32
    np.testing.assert_allclose(f[0], gray / 255.0, rtol=1e-6)


def test_file_name_with_folder_falls_back_to_basename(tmp_path):
    write_png(tmp_path / "images" / "x.png", np.zeros((H, W, 3)))
    path = write_json(tmp_path / "ann.json", coco_dict([(1, "upload/7/x.png", W, H)], []))
    assert CocoDataset(tmp_path / "images", path).image_path(0).name == "x.png"


# ---- resize / pad / flip and their inverses --------------------------------------------------------

def _toy_target():
    masks = np.zeros((2, 40, 60), np.uint8)
    masks[0, 5:15, 10:30] = 1
    masks[1, 20:40, 0:7] = 1
    boxes = np.array([[10, 5, 30, 15], [0, 20, 7, 40]], np.float32)
    return {"boxes": boxes, "labels": np.array([1, 2]), "masks": masks, "image_id": 1}


def test_resize_and_pad_exact_factor_two():
    image = np.full((40, 60, 3), 200, np.uint8)
    t = _toy_target()
    out, t2 = resize_and_pad(image, t, 120)           # longer side 60 -> 120, scale 2
    assert out.shape == (120, 120, 3)
    assert (out[:80] == 200).all() and (out[80:] == 0).all()        # padded at the bottom
    assert t2["scale"] == 2.0 and t2["resized_size"] == (80, 120) and t2["orig_size"] == (40, 60)
    np.testing.assert_array_equal(t2["boxes"], t["boxes"] * 2)
    expected = np.zeros((2, 120, 120), np.uint8)
    expected[0, 10:30, 20:60] = 1                    # every pixel becomes a 2 x 2 block
    expected[1, 40:80, 0:14] = 1
    np.testing.assert_array_equal(t2["masks"], expected)
    # inverse mapping returns to the original pixels exactly
    np.testing.assert_allclose(boxes_to_original(t2["boxes"], t2), t["boxes"])
    np.testing.assert_array_equal(masks_to_original(t2["masks"], t2), t["masks"])


def test_resize_and_pad_tall_image_pads_the_right_and_maps_back():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (100, 50, 3)).astype(np.uint8)
    t = {"boxes": np.array([[3.0, 7.0, 41.0, 93.0]], np.float32),
         "masks": np.zeros((1, 100, 50), np.uint8), "labels": np.array([1])}
    out, t2 = resize_and_pad(image, t, (64, 48))     # scale = min(64/100, 48/50) = 0.64
    assert t2["resized_size"] == (64, 32) and abs(t2["scale"] - 0.64) < 1e-12
    assert (out[:, 32:] == 0).all() and out[:, :32].any()
    np.testing.assert_allclose(t2["boxes"], [[3 * .64, 7 * .64, 41 * .64, 93 * .64]], rtol=1e-6)
    np.testing.assert_allclose(boxes_to_original(t2["boxes"], t2), t["boxes"], rtol=1e-5)


def test_nearest_mask_downsampling_keeps_masks_binary():
    t = _toy_target()
    _, t2 = resize_and_pad(np.zeros((40, 60, 3), np.uint8), t, 45)   # scale 0.75
    assert set(np.unique(t2["masks"])) <= {0, 1}
    # a 10 x 20 block becomes about 7.5 x 15
    assert abs(int(t2["masks"][0].sum()) - 0.75 ** 2 * 200) <= 15


def test_hflip_moves_image_boxes_and_masks_together():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (40, 60, 3)).astype(np.uint8)
    t = _toy_target()
    f_img, f_t = hflip(image, t)
    np.testing.assert_array_equal(f_img[:, 0], image[:, 59])
    for box, mask in zip(f_t["boxes"], f_t["masks"]):
        ys, xs = np.nonzero(mask)        # the flipped box is the tight box of the flipped mask
        np.testing.assert_array_equal(box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    np.testing.assert_array_equal(f_img[:, ::-1], image)
    np.testing.assert_array_equal(f_t["masks"][:, :, ::-1], t["masks"])
    back_img, back_t = hflip(f_img, f_t)
    np.testing.assert_array_equal(back_img, image)
    np.testing.assert_array_equal(back_t["boxes"], t["boxes"])
    assert f_t["flipped"] and not back_t["flipped"]
    _, resized = resize_and_pad(image, t, 64)
    with pytest.raises(ValueError, match="flip before resize_and_pad"):
        hflip(np.zeros((64, 64, 3), np.uint8), resized)


def test_predictions_of_a_flipped_resized_image_map_back_to_the_original():
    image = np.zeros((40, 60, 3), np.uint8)
    t = _toy_target()
    f_img, f_t = hflip(image, t)
    _, in_t = resize_and_pad(f_img, f_t, 120)
    pred = {"boxes": in_t["boxes"], "masks": in_t["masks"], "scores": np.array([.9, .8]),
            "labels": np.array([1, 2])}
    back = predictions_to_original(pred, in_t)
    np.testing.assert_allclose(back["boxes"], t["boxes"])
    np.testing.assert_array_equal(back["masks"], t["masks"])
    np.testing.assert_array_equal(back["scores"], pred["scores"])


# ---- batches -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shapes_train(shapes_dir):
    return CocoDataset(shapes_dir / "train" / "images", shapes_dir / "train" / "annotations.json")


def _ids(batches):
    return [t["image_id"] for _, ts in batches for t in ts]


def test_batches_have_the_documented_shapes(shapes_train):
    batches = list(iterate_batches(shapes_train, 5, 96, seed=0))
    assert [b[0].shape for b in batches] == [(5, 3, 96, 96)] * 4 + [(4, 3, 96, 96)]
    images, targets = batches[0]
    assert images.dtype == np.float32 and 0.0 <= images.min() and images.max() <= 1.0
    for t in targets:
        assert t["masks"].shape[1:] == (96, 96) and t["boxes"].shape == (len(t["labels"]), 4)
        assert t["scale"] == 0.75 and t["orig_size"] == (128, 128)
    assert sorted(_ids(batches)) == shapes_train.image_ids             # each image once per epoch
    assert len(list(iterate_batches(shapes_train, 5, 96, drop_last=True))) == 4


def test_batch_order_is_seeded_and_epoch_dependent(shapes_train):
    run = lambda **kw: _ids(iterate_batches(shapes_train, 4, 64, **kw))   # noqa: E731
    assert run(seed=3, epoch=0) == run(seed=3, epoch=0)
    assert run(seed=3, epoch=0) != run(seed=3, epoch=1)
    assert run(seed=3, epoch=0) != run(seed=4, epoch=0)
    assert run(shuffle=False) == shapes_train.image_ids
    a = [b[0] for b in iterate_batches(shapes_train, 4, 64, seed=1, hflip_prob=0.5)]
    b = [b[0] for b in iterate_batches(shapes_train, 4, 64, seed=1, hflip_prob=0.5)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    loader = BatchLoader(shapes_train, 4, 64, seed=3)
    assert len(loader) == 6
    assert _ids(loader) == run(seed=3, epoch=0) and _ids(loader) == run(seed=3, epoch=1)


def test_flip_augmentation_flips_some_samples_consistently(shapes_train):
    flipped = 0
    for images, targets in iterate_batches(shapes_train, 8, 128, seed=0, hflip_prob=0.5):
        for img, t in zip(images, targets):
            flipped += t["flipped"]
            raw, _ = shapes_train[t["index"]]
            expected = raw[:, ::-1] if t["flipped"] else raw
            np.testing.assert_allclose(img, image_to_float_chw(np.ascontiguousarray(expected)))
            for m in t["masks"].astype(bool):             # each mask still covers one colour
                assert len(np.unique(img[:, m], axis=1).T) == 1
    assert 0 < flipped < len(shapes_train)


# ---- bad input -----------------------------------------------------------------------------------

def _write_case(tmp_path, obj, files=("a.png",)):
    for name in files:
        write_png(tmp_path / "images" / name, np.zeros((H, W, 3)))
    return write_json(tmp_path / "bad.json", obj)


@pytest.mark.parametrize("case,exc,match", [
    ("missing_image", ImageNotFoundError, r"bad\.json: image id 2: file .*b\.png not found"),
    ("unknown_image", CocoFormatError, r"bad\.json: annotation id 9 references unknown image id 77"),
    ("unknown_category", CocoFormatError, r"bad\.json: annotation id 9 references unknown category id 5"),
    ("no_images", CocoFormatError, r"bad\.json: the dataset has no images"),
    ("duplicate_image", CocoFormatError, r"bad\.json: image id 1 appears twice"),
    ("no_width", CocoFormatError, r"bad\.json: image id 1 \(a\.png\) has no positive integer 'width'"),
    ("bad_bbox", CocoFormatError, r"bad\.json: annotation id 9 has a malformed bbox"),
])
def test_bad_json_fails_at_open_naming_file_and_id(tmp_path, case, exc, match):
    ann = _ann(9, 1, [rect_polygon(0, 0, 2, 2)], bbox=[0, 0, 2, 2])
    images = [(1, "a.png", W, H)]
    if case == "missing_image":
        images.append((2, "b.png", W, H))
    elif case == "unknown_image":
        ann["image_id"] = 77
    elif case == "unknown_category":
        ann["category_id"] = 5
    elif case == "no_images":
        images = []
    elif case == "duplicate_image":
        images.append((1, "a.png", W, H))
    elif case == "bad_bbox":
        ann["bbox"] = [0, 0, 2]
    obj = coco_dict(images, [] if case == "no_images" else [ann])
    if case == "no_width":
        del obj["images"][0]["width"]
    path = _write_case(tmp_path, obj)
    with pytest.raises(exc, match=match):
        CocoDataset(tmp_path / "images", path)


def test_malformed_and_missing_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"images": [')
    with pytest.raises(CocoFormatError, match=r"broken\.json: malformed JSON"):
        CocoDataset(tmp_path, path)
    with pytest.raises(FileNotFoundError, match=r"nothere\.json"):
        CocoDataset(tmp_path, tmp_path / "nothere.json")
    path.write_text(json.dumps([1, 2]))
    with pytest.raises(CocoFormatError, match=r"broken\.json: expected a JSON object"):
        CocoDataset(tmp_path, path)


@pytest.mark.parametrize("seg,match", [
    ([[0, 0, 4, 0, 4]], r"annotation id 9: polygon 0 has an odd number"),
    ({"size": [3, 3], "counts": [9]}, r"annotation id 9: RLE size \[3, 3\] does not match"),
    ({"size": [H, W], "counts": [5, 5]}, r"annotation id 9: RLE counts sum to 10"),
    ("abc", r"annotation id 9: segmentation must be"),
])
def test_bad_segmentation_names_the_annotation(tmp_path, seg, match):
    path = _write_case(tmp_path, coco_dict([(1, "a.png", W, H)], [_ann(9, 1, seg, bbox=[0, 0, 2, 2])]))
    ds = CocoDataset(tmp_path / "images", path)
    with pytest.raises(CocoFormatError, match=r"bad\.json: " + match):
        ds[0]


def test_image_size_disagreeing_with_json(tmp_path):
    path = _write_case(tmp_path, coco_dict([(1, "a.png", W + 1, H)], []))
    with pytest.raises(CocoFormatError, match=r"image id 1: .*a\.png is 12x10"):
        CocoDataset(tmp_path / "images", path).load_image(0)


@pytest.mark.parametrize("orientation, turn", [
    (1, lambda a: a),                              # upright already
    (3, lambda a: np.rot90(a, 2)),                 # stored upside down
    (6, lambda a: np.rot90(a, -1)),                # shown after a quarter turn clockwise
    (8, lambda a: np.rot90(a, 1)),                 # ... counter-clockwise
])
def test_jpeg_exif_orientation_is_applied(tmp_path, orientation, turn):
    from PIL import Image
    stored = np.zeros((20, 30, 3), np.uint8)     # 30 wide, 20 high as stored; one bright corner
    stored[:6, :6] = 255
    stored[..., 1] = np.arange(30, dtype=np.uint8)[None, :] * 8
    exif = Image.Exif()
    exif[0x0112] = orientation                   # the EXIF Orientation tag
    (tmp_path / "images").mkdir()
    Image.fromarray(stored).save(tmp_path / "images" / "p.jpg", quality=95, exif=exif)
    with Image.open(tmp_path / "images" / "p.jpg") as pil:   # the JPEG's pixels, as decoded
        decoded = np.asarray(pil.convert("RGB"))
    upright = turn(decoded)
    h, w = upright.shape[:2]
    ann = {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [rect_polygon(0, 0, 4, 4)],
           "iscrowd": 0}
    ds = CocoDataset(tmp_path / "images",
                     write_json(tmp_path / "a.json", coco_dict([(1, "p.jpg", w, h)], [ann])))
    image, target = ds[0]
    np.testing.assert_array_equal(image, upright)
    assert target["masks"].shape == (1, h, w)
    # the bright corner lands where the tag says: top-left stays for 1, goes top-right for 6 ...
    corner = {1: (0, 0), 3: (h - 1, w - 1), 6: (0, w - 1), 8: (h - 1, 0)}[orientation]
    assert image[corner][0] > 200


def test_a_json_with_the_stored_size_of_a_turned_jpeg_is_a_clear_error(tmp_path):
    from PIL import Image
    exif = Image.Exif()
    exif[0x0112] = 6
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "images" / "p.jpg", exif=exif)
    ds = CocoDataset(tmp_path / "images",
                     write_json(tmp_path / "a.json", coco_dict([(1, "p.jpg", 30, 20)], [])))
    with pytest.raises(CocoFormatError, match=r"20x30 \(width x height, upright after its EXIF"):
        ds.load_image(0)


def test_start_batch_skips_by_index_and_gives_the_same_batches(shapes_train):
    class Counting:
        reads = 0

        def __len__(self):
            return len(shapes_train)

        def __getitem__(self, i):
            Counting.reads += 1
            return shapes_train[i]

    whole = list(iterate_batches(shapes_train, 5, 64, seed=2, epoch=3, hflip_prob=0.5))
    tail = list(BatchLoader(Counting(), 5, 64, seed=2, hflip_prob=0.5).epoch(3, start_batch=2))
    assert Counting.reads == len(shapes_train) - 2 * 5          # nothing of batches 0 and 1 was read
    assert len(tail) == len(whole) - 2
    for (xa, ta), (xb, tb) in zip(whole[2:], tail):
        assert np.array_equal(xa, xb) and [t["image_id"] for t in ta] == [t["image_id"] for t in tb]
        assert [t["flipped"] for t in ta] == [t["flipped"] for t in tb]
    assert list(iterate_batches(shapes_train, 5, 64, start_batch=99)) == []
    with pytest.raises(ValueError, match="start_batch"):
        list(iterate_batches(shapes_train, 5, 64, start_batch=-1))


def test_predict_reads_images_upright_too(tmp_path):
    """``mrcnn-np predict`` reads files with the same EXIF rule as the loader (a phone's JPEG)."""
    from PIL import Image
    from mrcnn_np.commands import read_image_file
    stored = np.zeros((20, 30, 3), np.uint8)
    stored[:6, :6] = 255
    exif = Image.Exif()
    exif[0x0112] = 6                               # shown after a quarter turn clockwise
    Image.fromarray(stored).save(tmp_path / "p.jpg", quality=95, exif=exif)
    image = read_image_file(tmp_path / "p.jpg")
    assert image.shape == (30, 20, 3)              # upright: 20 wide, 30 high
    assert image[0, 19, 0] > 200 and image[0, 0, 0] < 50
