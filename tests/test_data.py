"""Tests for data.py: synthetic landscapes, make_segmap, preprocessing, and every real-dataset layout on tiny
fake folder trees built in tmp_path."""

import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

import data
from data import DataError, DatasetInfo, build_dataset, make_segmap

# ----------------------------------------------------------------------------------------------------
# helpers for fake trees
# ----------------------------------------------------------------------------------------------------


def write_label(path, arr, mode="L"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    arr = np.asarray(arr)
    img = Image.fromarray(arr.astype(np.uint16 if mode == "I;16" else np.uint8))
    img.save(path)


def write_image(path, h, w, seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def blocks(h, w, values):
    """Label map made of vertical stripes holding `values` in turn."""
    arr = np.zeros((h, w), dtype=np.int64)
    for i, v in enumerate(values):
        arr[:, i * w // len(values):(i + 1) * w // len(values)] = v
    return arr


def no_aug(**kw):
    return dict(preprocess_mode="none", flip=False, **kw)


# ----------------------------------------------------------------------------------------------------
# synthetic landscapes
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [64, 128, 256, (48, 80), (80, 40)])
def test_synthetic_sample_format(size):
    ds = build_dataset("synthetic", size=size)
    s = ds[5]
    hw = (size, size) if isinstance(size, int) else size
    assert s["label"].shape == hw and s["label"].dtype == torch.int64
    assert s["image"].shape == (3, *hw) and s["image"].dtype == torch.float32
    assert s["image"].min() >= -1 and s["image"].max() <= 1
    assert s["style"].shape == (ds.info.label_nc, data.STYLE_DIM)
    assert 0 <= s["label"].min() and s["label"].max() < ds.info.label_nc
    assert isinstance(s["path"], str)
    assert ds.info.label_nc >= 8 and ds.info.semantic_nc() == ds.info.label_nc
    assert len(ds.info.class_names) == ds.info.label_nc


def test_synthetic_deterministic_and_seeded():
    a, b = data.SyntheticLandscapes(size=48, seed=3), data.SyntheticLandscapes(size=48, seed=3)
    c = data.SyntheticLandscapes(size=48, seed=4)
    for i in (0, 7):
        sa, sb, sc = a[i], b[i], c[i]
        assert torch.equal(sa["label"], sb["label"]) and torch.equal(sa["image"], sb["image"])
        assert torch.equal(sa["style"], sb["style"])
        assert not torch.equal(sa["image"], sc["image"])
    assert not torch.equal(a[0]["image"], a[1]["image"])


def test_synthetic_splits_disjoint():
    train = data.SyntheticLandscapes("train", size=32)
    val = data.SyntheticLandscapes("val", size=32)
    test = data.SyntheticLandscapes("test", size=32)
    hashes = [{hash(ds[i]["image"].numpy().tobytes()) for i in range(40)} for ds in (train, val, test)]
    assert all(len(h) == 40 for h in hashes)
    assert not (hashes[0] & hashes[1]) and not (hashes[0] & hashes[2]) and not (hashes[1] & hashes[2])
    assert len(train) > len(val)


def test_synthetic_region_style_is_local():
    """Repainting one class with another style changes only that class's pixels."""
    ds = data.SyntheticLandscapes(size=64)
    for i in range(6):
        label = ds.layout(i)
        style = ds.sample_style(i)
        own = ds.render(i, style, label)
        assert torch.equal(own, ds[i]["image"])
        c = int(np.bincount(label.ravel()).argmax())
        other = style.copy()
        other[c] = ds.sample_style(i + 100)[c]
        new = ds.render(i, other, label)
        mask = torch.from_numpy(label == c)
        assert torch.equal(new[:, ~mask], own[:, ~mask])
        assert not torch.equal(new[:, mask], own[:, mask])


def test_synthetic_styles_independent_across_regions_and_of_layout():
    ds = data.SyntheticLandscapes(size=32)
    styles = np.stack([ds.sample_style(i) for i in range(400)])  # (N, K, S)
    base_r = styles[:, :, 0]
    corr = np.corrcoef(base_r.T)
    off_diag = corr[~np.eye(len(corr), dtype=bool)]
    assert np.abs(off_diag).max() < 0.25
    # the same layout appears with very different colours: style is not a function of the label map
    assert styles[:, data.SKY, :3].std(0).min() > 0.1


def test_synthetic_mean_colour_is_style_base():
    ds = data.SyntheticLandscapes(size=64)
    errs = []
    for i in range(20):
        s = ds[i]
        for c in s["label"].unique():
            m = s["label"] == c
            errs.append((s["image"][:, m].mean(1) - s["style"][c, :3]).abs().max().item())
    assert np.median(errs) < 0.01 and np.percentile(errs, 80) < 0.05


def test_region_mean_colours_recover_transferred_style():
    """SEAN-style check: paint sample 0's layout with sample 1's style for one class, measure it back."""
    ds = data.SyntheticLandscapes(size=64)
    label = ds.layout(0)
    own, donor = ds.sample_style(0), ds.sample_style(1)
    c = int(np.bincount(label.ravel()).argmax())
    mixed = own.copy()
    mixed[c] = donor[c]
    image = ds.render(0, mixed, label)
    means, counts = data.region_mean_colours(image[None], torch.from_numpy(label)[None], ds.info.label_nc)
    assert counts[0].sum() == label.size and counts[0, c] == (label == c).sum()
    assert (means[0, c] - torch.from_numpy(donor[c, :3])).abs().max() < 0.05
    others = [k for k in np.unique(label) if k != c]
    assert all((means[0, k] - torch.from_numpy(own[k, :3])).abs().max() < 0.1 for k in others)


def test_synthetic_layout_variety_and_plausibility():
    ds = data.SyntheticLandscapes(size=48)
    seen, near_uniform, sky_above = set(), 0, []
    for i in range(150):
        label = ds.layout(i)
        counts = np.bincount(label.ravel(), minlength=ds.info.label_nc)
        seen |= set(np.flatnonzero(counts))
        near_uniform += counts.max() > 0.9 * label.size
        rows = np.arange(label.shape[0])[:, None].repeat(label.shape[1], 1)
        for below in (data.WATER, data.GRASS, data.SAND):
            if counts[data.SKY] > 20 and counts[below] > 20:
                sky_above.append(rows[label == data.SKY].mean() < rows[label == below].mean())
    assert seen == set(range(ds.info.label_nc))
    assert 3 <= near_uniform <= 40
    assert np.mean(sky_above) > 0.97


def test_synthetic_textures_present_but_colour_dominates():
    ds = data.SyntheticLandscapes(size=64)
    within, between = [], []
    for i in range(20):
        s = ds[i]
        for c in s["label"].unique():
            m = s["label"] == c
            if m.sum() > 50:
                within.append(s["image"][:, m].std(1).mean().item())
                between.append(s["style"][c, :3])
    between = torch.stack(between).std(0).mean().item()
    assert 0.02 < np.median(within) < between


# ----------------------------------------------------------------------------------------------------
# make_segmap / colorize
# ----------------------------------------------------------------------------------------------------


def test_make_segmap_onehot_dontcare_and_edges():
    info = DatasetInfo(name="t", label_nc=4, contain_dontcare=True, dontcare_label=4, has_instance=True)
    label = torch.tensor([[[0, 1, 2, 3], [4, 255, 0, 0]]])
    inst = torch.tensor([[[5, 5, 6, 6], [5, 5, 5, 6]]])
    seg = make_segmap(label, info, inst)
    assert seg.shape == (1, info.semantic_nc(), 2, 4) == (1, 6, 2, 4)
    assert torch.equal(seg[0, :5].argmax(0), torch.tensor([[0, 1, 2, 3], [4, 4, 0, 0]]))
    assert torch.equal(seg[:, :5].sum(1), torch.ones(1, 2, 4))
    assert torch.equal(seg[0, 5], torch.tensor([[0., 1, 1, 0], [0, 0, 1, 1]]))
    # [B, 1, H, W] input and no instance -> no edge channel
    assert make_segmap(label[:, None], info).shape == (1, 5, 2, 4)


def test_instance_edges_hand_cases():
    one = torch.zeros(4, 5, dtype=torch.long)
    one[1, 2] = 7  # a lone pixel: it and its 4 neighbours are edges, diagonal neighbours are not
    assert torch.equal(data.instance_edges(one), torch.tensor([[0., 0, 1, 0, 0],
                                                               [0, 1, 1, 1, 0],
                                                               [0, 0, 1, 0, 0],
                                                               [0, 0, 0, 0, 0]]))
    assert data.instance_edges(torch.full((3, 3), 4)).sum() == 0  # one instance: no edges
    halves = torch.tensor([[1, 1, 2], [1, 1, 2]])  # a vertical border marks the pixels on both sides
    assert torch.equal(data.instance_edges(halves), torch.tensor([[0., 1, 1], [0, 1, 1]]))


def test_instance_edges_match_a_morphological_formulation():
    """A pixel is on an edge iff the max and min of its 4-neighbourhood (borders repeated) differ."""
    g = torch.Generator().manual_seed(0)
    inst = torch.randint(0, 3, (2, 1, 9, 11), generator=g)
    cross = ndimage.generate_binary_structure(2, 1)
    expect = np.stack([[ndimage.maximum_filter(m, footprint=cross, mode="nearest")
                        != ndimage.minimum_filter(m, footprint=cross, mode="nearest") for m in b]
                       for b in inst.numpy()])
    assert torch.equal(data.instance_edges(inst), torch.from_numpy(expect).float())


def test_make_segmap_rejects_invalid_values():
    info = DatasetInfo(name="t", label_nc=3)
    with pytest.raises(DataError, match="3"):
        make_segmap(torch.tensor([[0, 3]]), info)
    with pytest.raises(DataError):
        make_segmap(torch.tensor([[0, 255]]), info)  # 255 only allowed with a don't-care label
    with pytest.raises(DataError):
        make_segmap(torch.tensor([[-1, 0]]), info)


def test_colorize():
    label = torch.tensor([[[0, 1], [2, 255]]])
    img = data.colorize(label, data.PALETTE)
    assert img.shape == (1, 3, 2, 2) and img.dtype == torch.uint8
    assert torch.equal(img[0, :, 0, 1], torch.as_tensor(data.PALETTE[1]))
    assert img[0, :, 1, 1].sum() == 0
    assert data.colorize(torch.zeros(5, 6, dtype=torch.long)).shape == (3, 5, 6)


# ----------------------------------------------------------------------------------------------------
# preprocessing geometry
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode,load,crop,expect", [
    ("resize_and_crop", 72, (64, 64), (64, 64)),
    ("crop", 0, (40, 40), (40, 40)),
    ("scale_width", 60, (0, 0), (45, 60)),
    ("scale_width_and_crop", 96, (64, 64), (64, 64)),
    ("fixed", 0, (30, 60), (30, 60)),
    ("none", 0, (0, 0), (64, 64)),  # round(60 / 32) = 2, round(80 / 32) = round(2.5) = 2, as Python
])
def test_preprocess_modes_keep_image_and_label_aligned(mode, load, crop, expect):
    h, w = 60, 80
    label = torch.from_numpy(blocks(h, w, [0, 1, 2, 3])[None])
    image = (label.float() / 3 * 2 - 1).expand(3, h, w).clone()  # photo colour encodes the class
    g = torch.Generator().manual_seed(1)
    for _ in range(4):
        geo = data.sample_geometry((h, w), mode, load, crop, train=True, generator=g)
        lab = data.apply_geometry(label, geo, is_label=True)
        img = data.apply_geometry(image, geo, is_label=False)
        assert lab.shape[1:] == expect and img.shape[1:] == expect and lab.dtype == torch.int64
        assert set(lab.unique().tolist()) <= {0, 1, 2, 3}
        # away from stripe borders the photo still shows its pixel's class
        interior = (lab == torch.roll(lab, 3, -1)) & (lab == torch.roll(lab, -3, -1))
        assert (img[0][interior[0]] - (lab[0][interior[0]].float() / 3 * 2 - 1)).abs().max() < 0.05


def test_flip_and_eval_crop():
    label = torch.from_numpy(blocks(8, 8, [0, 1])[None])
    g = torch.Generator().manual_seed(0)
    flips = [data.sample_geometry((8, 8), "crop", 0, (8, 8), train=True, generator=g).flip for _ in range(30)]
    assert any(flips) and not all(flips)
    geo = data.sample_geometry((8, 8), "crop", 0, (8, 8), train=True, generator=g)
    geo.flip = True
    assert torch.equal(data.apply_geometry(label, geo, True), label.flip(-1))
    ev = data.sample_geometry((10, 12), "crop", 0, (4, 4), train=False)
    assert ev.crop == (3, 4, 4, 4) and not ev.flip
    with pytest.raises(DataError, match="smaller"):
        data.sample_geometry((10, 12), "crop", 0, (16, 16), train=True, path="x.png")
    with pytest.raises(ValueError):
        data.sample_geometry((10, 12), "bogus", 0, (4, 4), train=True)


# ----------------------------------------------------------------------------------------------------
# real dataset layouts
# ----------------------------------------------------------------------------------------------------


def make_cityscapes(root, phase="train"):
    for city, frame in (("aachen", "000000_000019"), ("bonn", "000001_000042")):
        stem = f"{city}_{frame}"
        write_image(f"{root}/leftImg8bit/{phase}/{city}/{stem}_leftImg8bit.png", 16, 32)
        gt = f"{root}/gtFine/{phase}/{city}/{stem}_gtFine"
        write_label(f"{gt}_labelIds.png", blocks(16, 32, [7, 26, 26, 0]))
        inst = blocks(16, 32, [7, 26001, 26002, 0])
        write_label(f"{gt}_instanceIds.png", inst, mode="I;16")
        write_image(f"{gt}_color.png", 16, 32)  # RGB colour rendering, must be ignored


def test_cityscapes(tmp_path):
    make_cityscapes(tmp_path)
    ds = build_dataset("cityscapes", tmp_path, size=32)
    assert ds.info.label_nc == 35 and ds.info.has_instance and not ds.info.contain_dontcare
    assert ds.info.preprocess_mode == "fixed" and ds.info.aspect_ratio == 2
    assert len(ds) == 2 and "aachen" in ds[0]["path"]
    s = ds[0]
    assert s["label"].shape == (16, 32) and s["image"].shape == (3, 16, 32)
    assert set(s["label"].unique().tolist()) == {0, 7, 26}
    seg = make_segmap(s["label"][None], ds.info, s["instance"][None])
    assert seg.shape == (1, 36, 16, 32)
    # edges between the two car instances (same class 26, different instance) appear in the edge channel only
    assert seg[0, 26, :, 8:24].eq(1).all() and seg[0, :35, :, 15:17].sum(0).eq(1).all()
    assert seg[0, 35, :, 15:17].eq(1).all() and seg[0, 35, :, 0:7].eq(0).all()
    no_inst = build_dataset("cityscapes", tmp_path, size=32, use_instance=False)
    assert no_inst[0].keys() == {"label", "image", "path"}


def test_ade20k_unknown_is_dontcare(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    for phase, folder in (("train", "training"), ("val", "validation")):
        for i in range(2):
            write_image(f"{root}/images/{folder}/ADE_{phase}_0000000{i}.jpg", 32, 32, seed=i)
            labels = blocks(32, 32, [0, 1, 150, 7])
            write_label(f"{root}/annotations/{folder}/ADE_{phase}_0000000{i}.png", labels)
    ds = build_dataset("ade20k", root, split="val", **no_aug())
    assert len(ds) == 2 and "_val_" in ds[0]["path"]
    assert ds.info.label_nc == 150 and ds.info.contain_dontcare and ds.info.semantic_nc() == 151
    label = ds[0]["label"]
    assert label[0, 0] == 150 and label[0, 8] == 0 and label[0, 16] == 149 and label[0, 24] == 6
    seg = make_segmap(label[None], ds.info)
    assert seg.shape == (1, 151, 32, 32) and seg[0, 150, :, :8].eq(1).all() and seg[0, 150, :, 8:].eq(0).all()
    assert len(build_dataset("ade20k", root, split="train", size=32)) == 2
    raw = build_dataset("ade20k", root, split="val", official_ids=True, **no_aug())[0]["label"]
    assert raw[0, 0] == 0 and raw[0, 16] == 150  # the released code's effective (unshifted) ids


def test_out_of_range_raw_ids_are_errors_not_dontcare(tmp_path):
    """ADE20K 151 would become 150 (don't-care) after k -> k - 1, COCO-Stuff 182 equals the internal
    don't-care id: both must stop with the file named, not vanish into the don't-care class."""
    root = tmp_path / "ade"
    write_image(f"{root}/images/validation/ADE_val_00000000.jpg", 32, 32)
    write_label(f"{root}/annotations/validation/ADE_val_00000000.png", blocks(32, 32, [0, 1, 151, 7]))
    for official_ids in (False, True):
        ds = build_dataset("ade20k", root, split="val", official_ids=official_ids, **no_aug())
        with pytest.raises(DataError, match=r"ADE_val_00000000\.png: label ids \[151\].*x=16, y=0"):
            ds[0]
    coco = tmp_path / "coco"
    write_image(f"{coco}/val_img/0.jpg", 32, 32)
    write_label(f"{coco}/val_label/0.png", blocks(32, 32, [0, 182, 255, 254]))
    write_label(f"{coco}/val_inst/0.png", blocks(32, 32, [1, 2, 2, 3]))
    with pytest.raises(DataError, match=r"0\.png: label ids \[182, 254\]"):
        build_dataset("coco", coco, split="val", **no_aug())[0]


def test_map_label_uses_only_info():
    """sample.read_label_map calls map_label on a stand-in that holds only info (and official_ids)."""
    coco = SimpleNamespace(info=data.CocoStuffDataset.INFO)
    label = data.CocoStuffDataset.map_label(coco, np.array([[0, 181, 255]]), "x.png")
    assert label.tolist() == [[0, 181, 182]]
    ade = SimpleNamespace(info=data.ADE20KDataset.INFO, official_ids=False)
    assert data.ADE20KDataset.map_label(ade, np.array([[0, 1, 150]]), "x.png").tolist() == [[150, 0, 149]]
    with pytest.raises(DataError, match=r"x\.png: label ids \[-1\].*x=1, y=0"):
        data.CocoStuffDataset.map_label(coco, np.array([[0, -1]]), "x.png")


def make_coco(root, phase="train"):
    for i in range(3):
        write_image(f"{root}/{phase}_img/00000{i}.jpg", 32, 32, seed=i)
        write_label(f"{root}/{phase}_label/00000{i}.png", blocks(32, 32, [0, 181, 255, 40]))
        write_label(f"{root}/{phase}_inst/00000{i}.png", blocks(32, 32, [1, 2, 2, 3]))


def test_coco_stuff(tmp_path):
    make_coco(tmp_path)
    write_image(f"{tmp_path}/train_img_portrait/p1.jpg", 40, 32)
    write_label(f"{tmp_path}/train_label_portrait/p1.png", np.zeros((40, 32)))
    write_label(f"{tmp_path}/train_inst_portrait/p1.png", np.zeros((40, 32)))
    ds = build_dataset("coco", tmp_path, split="train", **no_aug())
    assert len(ds) == 4  # portraits included in training, as the official loader
    assert ds.info.label_nc == 182 and ds.info.contain_dontcare and ds.info.has_instance
    s = ds[0]
    assert set(s["label"].unique().tolist()) == {0, 181, 182, 40}
    seg = make_segmap(s["label"][None], ds.info, s["instance"][None])
    assert seg.shape == (1, ds.info.semantic_nc(), 32, 32) == (1, 184, 32, 32)
    assert seg[0, 182, :, 16:24].eq(1).all() and seg[0, 182].sum() == 32 * 8
    assert seg[0, 183, :, 7:9].eq(1).all() and seg[0, 183, :, 15:17].eq(0).all()  # 2|2 is one instance
    assert len(build_dataset("coco", tmp_path, split="train", portraits=False, size=32)) == 3
    # default paper preprocessing at a smaller size: resize to 286/256 * 32, random crop 32
    s = build_dataset("coco", tmp_path, size=32)[1]
    assert s["image"].shape == (3, 32, 32) and s["instance"].shape == (32, 32)


def test_celebamask_and_facades(tmp_path):
    for sub in ("train", "test"):
        for i in range(2):
            write_image(f"{tmp_path}/celeb/{sub}/images/{i}.jpg", 32, 32)
            write_label(f"{tmp_path}/celeb/{sub}/labels/{i}.png", blocks(32, 32, [0, 13, 18]))
    ds = build_dataset("celebamask", tmp_path / "celeb", split="val", size=32)
    assert ds.info.label_nc == 19 and ds.info.preprocess_mode == "resize_and_crop"  # SEAN README
    assert len(ds.info.class_names) == 19 and "test" in ds[0]["path"]
    assert set(ds[1]["label"].unique().tolist()) == {0, 13, 18}
    assert make_segmap(ds[0]["label"][None], ds.info).shape == (1, 19, 32, 32)

    for phase in ("train", "val"):
        for i in range(2):
            write_image(f"{tmp_path}/facades/{phase}_img/cmp_b000{i}.jpg", 32, 32)
            write_label(f"{tmp_path}/facades/{phase}_label/cmp_b000{i}.png", blocks(32, 32, [1, 12]))
    ds = build_dataset("facades", tmp_path / "facades", split="test", size=32)
    assert ds.info.label_nc == 13 and not ds.info.contain_dontcare and not ds.info.has_instance
    assert set(ds[0]["label"].unique().tolist()) == {1, 12}


def test_custom_folder_and_export_roundtrip(tmp_path):
    syn = data.SyntheticLandscapes("val", size=32, length=5)
    data.export_folder(syn, tmp_path / "exp", n=3)
    assert sorted(os.listdir(tmp_path / "exp")) == ["images", "info.json", "labels", "styles.npy"]
    ds = build_dataset("custom", tmp_path / "exp", split="val", preprocess_mode="none")
    assert ds.info.label_nc == syn.info.label_nc and ds.info.class_names == syn.info.class_names
    assert len(ds) == 3
    for i in range(3):
        assert torch.equal(ds[i]["label"], syn[i]["label"])
        assert (ds[i]["image"] - syn[i]["image"]).abs().max() <= 1 / 127.5 + 1e-6
    assert np.load(tmp_path / "exp" / "styles.npy").shape == (3, syn.info.label_nc, data.STYLE_DIM)
    # without options the export loads at its own size with the paper's resize_and_crop (load 286/256 x size)
    s = build_dataset("custom", tmp_path / "exp")[0]
    assert s["image"].shape == (3, 32, 32) and s["label"].shape == (32, 32)

    root = tmp_path / "custom"
    for i in range(2):
        write_image(f"{root}/images/img{i}.png", 32, 32)
        write_label(f"{root}/labels/img{i}.png", blocks(32, 32, [0, 2, 255]))
        write_label(f"{root}/instances/img{i}.png", blocks(32, 32, [1, 1, 2]))
    ds = build_dataset("custom", root, label_nc=3, contain_dontcare=True, **no_aug())
    assert ds.info.has_instance and ds.info.semantic_nc() == 5
    s = ds[0]
    assert set(s["label"].unique().tolist()) == {0, 2, 3}
    assert make_segmap(s["label"][None], ds.info, s["instance"][None]).shape == (1, 5, 32, 32)
    with pytest.raises(DataError, match="label_nc"):
        build_dataset("custom", root)


# ----------------------------------------------------------------------------------------------------
# errors name the file
# ----------------------------------------------------------------------------------------------------


def make_custom(root, n=2, size=16):
    for i in range(n):
        write_image(f"{root}/images/{i}.png", size, size)
        write_label(f"{root}/labels/{i}.png", blocks(size, size, [0, 1]))


def test_error_label_value_out_of_range(tmp_path):
    make_custom(tmp_path)
    write_label(f"{tmp_path}/labels/1.png", blocks(16, 16, [0, 5]))
    ds = build_dataset("custom", tmp_path, label_nc=3, **no_aug())
    ds[0]
    with pytest.raises(DataError, match=r"1\.png.*\[5\]"):
        ds[1]
    # 255 is only a don't-care value when the dataset has one
    write_label(f"{tmp_path}/labels/1.png", blocks(16, 16, [0, 255]))
    with pytest.raises(DataError, match="255"):
        ds[1]


def test_error_rgb_label(tmp_path):
    make_custom(tmp_path)
    write_image(f"{tmp_path}/labels/0.png", 16, 16)
    ds = build_dataset("custom", tmp_path, label_nc=3, **no_aug())
    with pytest.raises(DataError, match=r"0\.png.*colour image \(RGB\); pass a palette"):
        ds[0]


def test_builtin_palettes_are_the_official_colours():
    # hand values of the official SPADE colour map: bits of id + 1 spread over r, g, b
    pal = data.spade_colormap(151)
    assert pal[0].tolist() == [128, 0, 0] and pal[1].tolist() == [0, 128, 0] and pal[7].tolist() == [64, 0, 0]
    coco = data.load_palette("coco")
    assert coco[(95 << 16) | (219 << 8) | 255] == 156  # GauGAN's sky-other
    city = data.load_palette("cityscapes")
    assert city[(128 << 16) | (64 << 8) | 128] == 7 and city[0] == 0  # road; black: the first void id
    assert city[(153 << 16) | (153 << 8) | 153] == 17  # pole and polegroup share a colour: the first wins


def test_colour_label_maps_with_a_palette(tmp_path):
    make_custom(tmp_path, n=2)
    ids = blocks(16, 16, [0, 2, 1])
    colours = np.array([[10, 20, 30], [200, 0, 0], [0, 200, 0]], np.uint8)
    Image.fromarray(colours[ids]).save(tmp_path / "labels" / "1.png")
    (tmp_path / "pal.json").write_text(json.dumps({"#0a141e": 0, "#c80000": 1, "#00c800": 2}))
    for palette in (tmp_path / "pal.json", colours.tolist()):
        ds = build_dataset("custom", tmp_path, label_nc=3, palette=palette, **no_aug())
        assert torch.equal(ds[1]["label"][::2, ::2], torch.from_numpy(ids))  # "none" resizes 16 -> 32
        assert ds[0]["label"].max() <= 1  # single-channel id maps still read as ids
    # a colour outside the palette: the file, the colour and where it is
    bad = colours[ids].copy()
    bad[5, 9] = (1, 2, 3)
    Image.fromarray(bad).save(tmp_path / "labels" / "1.png")
    ds = build_dataset("custom", tmp_path, label_nc=3, palette=tmp_path / "pal.json", **no_aug())
    with pytest.raises(DataError, match=r"1\.png: colour \(1, 2, 3\) at pixel \(x=9, y=5\) is not in "
                                        r"the palette"):
        ds[1]
    # info.json can name the palette; a built-in one by name
    Image.fromarray(data.CITYSCAPES_COLOURS[blocks(16, 16, [7, 8, 26])]).save(tmp_path / "labels" / "1.png")
    (tmp_path / "info.json").write_text(json.dumps({"label_nc": 35, "palette": "cityscapes"}))
    assert set(build_dataset("custom", tmp_path, **no_aug())[1]["label"].unique().tolist()) == {7, 8, 26}
    with pytest.raises(DataError, match="not a built-in name"):
        build_dataset("custom", tmp_path, label_nc=3, palette="no-such-palette")


def test_error_unpaired_files(tmp_path):
    make_custom(tmp_path, n=3)
    write_image(f"{tmp_path}/images/extra_a.png", 16, 16)
    write_image(f"{tmp_path}/images/extra_b.png", 16, 16)
    with pytest.raises(DataError, match=r"2 image file\(s\) have no matching label.*extra_a\.png, extra_b"):
        build_dataset("custom", tmp_path, label_nc=3)
    os.remove(f"{tmp_path}/images/extra_a.png")
    os.remove(f"{tmp_path}/images/extra_b.png")
    os.remove(f"{tmp_path}/images/0.png")
    with pytest.raises(DataError, match=r"label file.*no matching image.*0\.png"):
        build_dataset("custom", tmp_path, label_nc=3)
    # cityscapes with a missing instance map
    make_cityscapes(tmp_path / "cs")
    os.remove(next((tmp_path / "cs" / "gtFine" / "train" / "bonn").glob("*instanceIds.png")))
    with pytest.raises(DataError, match="bonn_000001_000042_gtFine_labelIds.png"):
        build_dataset("cityscapes", tmp_path / "cs")


def test_error_empty_or_wrong_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        build_dataset("facades", tmp_path / "nowhere")
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match="contains no image files"):
        build_dataset("custom", tmp_path, label_nc=3)
    make_coco(tmp_path / "coco", phase="val")
    with pytest.raises(DataError, match="train_label"):  # asked for a split that is not there
        build_dataset("coco", tmp_path / "coco", split="train")
    with pytest.raises(ValueError, match="unknown dataset"):
        build_dataset("imagenet", tmp_path)


def test_error_corrupt_and_mismatched_files(tmp_path):
    make_custom(tmp_path)
    (tmp_path / "images" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    ds = build_dataset("custom", tmp_path, label_nc=3, **no_aug())
    with pytest.raises(DataError, match=r"images/1\.png.*cannot read"):
        ds[1]
    write_image(f"{tmp_path}/images/0.png", 16, 24)
    with pytest.raises(DataError, match=r"0\.png"):
        ds[0]
    with pytest.raises(DataError, match=r"2 bad sample\(s\)(.|\n)*0\.png(.|\n)*1\.png"):
        ds.verify()


def test_preview_and_frequencies(tmp_path):
    ds = data.SyntheticLandscapes(size=32, length=8)
    path = data.preview(ds, tmp_path / "p.png", n=4, nrow=4)
    assert Image.open(path).size[0] > 4 * 32
    freq = data.class_frequencies(ds, n=8)
    assert freq.shape == (ds.info.label_nc,) and abs(freq.sum() - 1) < 1e-6


# ----------------------------------------------------------------------------------------------------
# the synthetic palettes, pinned by value to the class names
# ----------------------------------------------------------------------------------------------------

# The label colours of data.colorize, by class name (a swapped pair changes every figure's legend).
LABEL_COLOURS = {"sky": (70, 130, 180), "cloud": (220, 220, 235), "mountain": (140, 90, 60),
                 "water": (30, 60, 200), "grass": (110, 200, 60), "tree": (20, 100, 30),
                 "sand": (240, 210, 110), "rock": (120, 120, 120), "building": (200, 40, 40),
                 "road": (60, 40, 90)}


def test_synthetic_label_colours_are_pinned_to_their_class_names():
    assert dict(zip(data.CLASS_NAMES, map(tuple, data.PALETTE.tolist()), strict=True)) == LABEL_COLOURS
    ids = {name: k for k, name in enumerate(data.CLASS_NAMES)}
    assert (ids["sky"], ids["water"], ids["grass"]) == (data.SKY, data.WATER, data.GRASS)
    r, g, b = np.asarray(data.PALETTE, dtype=int).T
    assert b[data.WATER] > max(r[data.WATER], g[data.WATER])  # water is blue
    assert g[data.GRASS] > max(r[data.GRASS], b[data.GRASS])  # grass is green
    assert g[data.TREE] > max(r[data.TREE], b[data.TREE])
    assert b[data.SKY] > r[data.SKY]
    # a drawn label map shows each class in its own colour
    s = data.SyntheticLandscapes("val", size=64, length=20)[3]
    drawn = data.colorize(s["label"], data.PALETTE)
    for k in s["label"].unique().tolist():
        pixels = drawn[:, s["label"] == k]
        assert (pixels == torch.tensor(LABEL_COLOURS[data.CLASS_NAMES[k]])[:, None]).all(), k


def test_synthetic_photo_colours_follow_the_class_names():
    """The rendered photos: over many images water regions are blue, grass and trees green, sand yellow."""
    ds = data.SyntheticLandscapes("train", size=32, length=120)
    sums, counts = torch.zeros(len(data.CLASS_NAMES), 3), torch.zeros(len(data.CLASS_NAMES))
    for i in range(len(ds)):
        s = ds[i]
        K = len(data.CLASS_NAMES)
        means, n = data.region_mean_colours((s["image"][None] + 1) / 2, s["label"][None], K)
        sums += means[0] * n[0, :, None]
        counts += n[0]
    r, g, b = (sums / counts[:, None]).T
    assert b[data.WATER] > max(r[data.WATER], g[data.WATER])
    assert g[data.GRASS] > max(r[data.GRASS], b[data.GRASS])
    assert g[data.TREE] > b[data.TREE]
    assert min(r[data.SAND], g[data.SAND]) > b[data.SAND] + 0.1  # sand is yellow
    assert b[data.SKY] > g[data.SKY] > r[data.SKY] - 0.05 and r[data.CLOUD] > 0.7  # blue sky, white clouds


@pytest.mark.parametrize("palette, says", [
    ({"#ff0000": None}, "entry '#ff0000': None is not"),
    ({"#ff00": 1}, "entry '#ff00'"),
    ({"#ff0000": -1}, "entry '#ff0000': -1"),
    ([[1, 2, "x"]], "entry 0 is [1, 2, 'x']"),
    ([[1, 2, 3], [4, 5]], "entry 1 is [4, 5]"),
    ([[1, 2, 300]], "entry 0 is [1, 2, 300]"),
    (5, "got int"),
    ("[[1, 2, 3]", "not a built-in name"),
])
def test_malformed_palettes_name_the_file_and_entry(tmp_path, palette, says):
    path = tmp_path / "pal.json"
    path.write_text(palette if isinstance(palette, str) else json.dumps(palette))
    with pytest.raises(DataError) as err:
        data.load_palette(path)
    assert says in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_shown_writes_repository_paths_relative_and_the_home_folder_as_tilde(monkeypatch, tmp_path):
    monkeypatch.setattr(data.Path, "home", classmethod(lambda cls: tmp_path / "me"))
    assert data.shown(tmp_path / "me" / ".cache" / "x.pth") == "~/.cache/x.pth"
    assert data.shown(tmp_path / "me") == "~"
    assert data.shown(tmp_path / "meme" / "x") == str(tmp_path / "meme" / "x")  # a sibling, not home
    assert data.shown("runs/a") == "runs/a"
    assert data.shown(data.Path(data.__file__).resolve().parent / "weights" / "x.pt") == "weights/x.pt"
