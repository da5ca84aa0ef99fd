"""Datasets for semantic image synthesis: procedural landscapes that need no download, and loaders for the
real datasets of SPADE (Park et al., CVPR 2019) and SEAN (Zhu et al., CVPR 2020) in their official layouts.

Every dataset returns the same sample dict:
    label    LongTensor [H, W]    class ids in [0, label_nc); don't-care pixels hold info.dontcare_label
    image    FloatTensor [3, H, W] in [-1, 1]
    instance LongTensor [H, W]    raw instance ids (only when the dataset has instance maps and they are used)
    style    FloatTensor [label_nc, STYLE_DIM] per-region style parameters (synthetic set only)
    path     str
`make_segmap` turns a batch of labels (+ instances) into the generator input: one-hot classes, a don't-care
channel and an instance edge channel, concatenated in the official code's order.

    python data.py                       # preview grid -> assets/synthetic_preview.png, class frequencies
    python data.py --export DIR --n 500  # write samples as images/ labels/ (custom folder layout)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import time
import urllib.parse
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF
from torchvision.utils import make_grid, save_image


class DataError(ValueError):
    """Bad dataset input (missing, unpaired or corrupt files, invalid label values); names the file."""


# --- Dataset description, label ids and colours -------------------------------------------------------------
@dataclass
class DatasetInfo:
    """What a model needs to know about a dataset's labels, and the paper's default preprocessing for it."""

    name: str  # as accepted by `build_dataset`
    label_nc: int  # classes are ids 0..label_nc-1 (official --label_nc)
    contain_dontcare: bool = False  # official --contain_dontcare_label
    dontcare_label: int | None = None  # id of don't-care pixels in `label` (= label_nc, its one-hot channel)
    has_instance: bool = False  # the dataset ships instance maps (-> one instance edge channel)
    class_names: tuple[str, ...] = ()  # index = class id; empty for datasets whose names we do not ship
    preprocess_mode: str = "resize_and_crop"  # the paper's default (see PREPROCESS_MODES)
    load_size: int = 286  # the paper's training load size (images are resized to it before cropping)
    crop_size: int = 256  # the paper's crop size (the network's output width)
    aspect_ratio: float = 1.0  # width / height of the network output (Cityscapes: 2)
    style_dim: int = 0  # length of a row of the sample's `style` (0: no style ground truth)

    def semantic_nc(self, use_instance: bool = True) -> int:
        """Generator input channels: classes + don't-care + instance edges (official opt.semantic_nc)."""
        return self.label_nc + int(self.contain_dontcare) + int(self.has_instance and use_instance)


def invalid_ids(ids, label_nc: int, dontcare: int | None = None):
    """Mask (numpy or torch, like `ids`) of ids outside 0..label_nc-1 other than `dontcare`."""
    bad = (ids < 0) | (ids >= label_nc)
    return bad if dontcare is None else bad & (ids != dontcare)


def check_raw_ids(raw: np.ndarray, bad: np.ndarray, path: str, valid: str) -> None:
    """DataError naming the file, the bad ids and the first bad pixel, if any pixel of `bad` is set."""
    if bad.any():
        y, x = (int(v) for v in np.argwhere(bad)[0])
        values = np.unique(raw[bad])[:10].tolist()
        raise DataError(f"{path}: label ids {values} are not classes of this dataset (valid: {valid}); "
                        f"first at pixel (x={x}, y={y})")


def make_palette(n: int = 256) -> np.ndarray:
    """Distinct colours for n classes, uint8 (n, 3): PASCAL-VOC style, bit 3b + c of id -> bit 7 - b of c."""
    ids = np.arange(n)
    pal = np.zeros((n, 3), dtype=np.int64)
    for bit in range(8):
        for ch in range(3):
            pal[:, ch] |= ((ids >> (3 * bit + ch)) & 1) << (7 - bit)
    return pal.astype(np.uint8)


def spade_colormap(n: int) -> np.ndarray:
    """The official SPADE code's colours for ids 0..n-1: the VOC colour of id + 1, so id 0 is not black."""
    return make_palette(n + 1)[1:]


def colorize(label: torch.Tensor, palette=None) -> torch.Tensor:
    """Class ids [..., H, W] -> uint8 colours [..., 3, H, W]; ids outside the palette (don't-care): black."""
    pal = torch.as_tensor(make_palette(256) if palette is None else np.asarray(palette), dtype=torch.uint8)
    pal = torch.cat([pal, torch.zeros(1, 3, dtype=torch.uint8)])  # last row: black for anything out of range
    idx = torch.where((label < 0) | (label >= len(pal) - 1), len(pal) - 1, label.long())
    return pal[idx].movedim(-1, -3)


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """Photo in [-1, 1] -> uint8 0..255, what a PNG stores (the rounding of quantize_png)."""
    return ((image.clamp(-1, 1) + 1) * 127.5).round().byte()


# --- Generator input: one-hot label map (+ don't-care) (+ instance edges) -----------------------------------
def instance_edges(instance: torch.Tensor) -> torch.Tensor:
    """Float [..., H, W]: 1 where a 4-neighbour has another instance id (both pixels, as in get_edges)."""
    edge = torch.zeros(instance.shape, dtype=torch.bool, device=instance.device)
    dx = instance[..., :, 1:] != instance[..., :, :-1]
    dy = instance[..., 1:, :] != instance[..., :-1, :]
    edge[..., :, 1:] |= dx
    edge[..., :, :-1] |= dx
    edge[..., 1:, :] |= dy
    edge[..., :-1, :] |= dy
    return edge.float()


def _batched(x: torch.Tensor) -> torch.Tensor:
    """[H, W], [B, H, W] or [B, 1, H, W] -> [B, H, W]."""
    x = x[None] if x.dim() == 2 else x
    return x[:, 0] if x.dim() == 4 else x


def make_segmap(label: torch.Tensor, info: DatasetInfo, instance: torch.Tensor | None = None,
                check: bool = True) -> torch.Tensor:
    """Label ids [B, H, W] (or [B, 1, H, W] or [H, W]) -> float segmap [B, semantic_nc, H, W]: one-hot
    classes, then don't-care (dontcare_label or a raw 255) if info.contain_dontcare, then `instance` edges if
    given. Other ids raise DataError; check=False skips that test (a device sync on GPU)."""
    label = _batched(label).long()
    nc = info.label_nc + int(info.contain_dontcare)
    if info.contain_dontcare:
        label = torch.where((label == 255) | (label == info.dontcare_label), info.label_nc, label)
    if check and (bad := invalid_ids(label, nc)).any():
        raise DataError(
            f"make_segmap: label values {torch.unique(label[bad])[:10].tolist()} are outside [0, "
            f"{info.label_nc}) and not the don't-care label ({info.dontcare_label}) of dataset '{info.name}'")
    segmap = torch.zeros(label.shape[0], nc, *label.shape[1:], device=label.device)
    segmap.scatter_(1, label[:, None], 1.0)
    if instance is not None:
        segmap = torch.cat([segmap, instance_edges(_batched(instance))[:, None]], dim=1)
    return segmap


# --- Synthetic landscapes -----------------------------------------------------------------------------------
CLASS_NAMES = ("sky", "cloud", "mountain", "water", "grass", "tree", "sand", "rock", "building", "road")
SKY, CLOUD, MOUNTAIN, WATER, GRASS, TREE, SAND, ROCK, BUILDING, ROAD = range(len(CLASS_NAMES))
PALETTE = np.array(  # label colours for `colorize` (not the photo colours)
    [[70, 130, 180], [220, 220, 235], [140, 90, 60], [30, 60, 200], [110, 200, 60],
     [20, 100, 30], [240, 210, 110], [120, 120, 120], [200, 40, 40], [60, 40, 90]], dtype=np.uint8)


def dataset_palette(name: str, n: int = 256) -> np.ndarray:
    """Colours for drawing label maps: the synthetic set's own, else the first n of the VOC-style map."""
    return PALETTE if name == "synthetic" else make_palette(n)


# Columns of the synthetic `style`: base_* the region's mean colour in [-1, 1] (texture and gradient are
# zero-mean inside the region), accent_* the colour the texture moves towards, brightness (already folded
# into base), grad_v/grad_h the colour ramp per image height/width, tex_amp the texture strength, tex_scale in
# [0, 1] the texture's spatial scale (coarse -> fine, or period).
STYLE_FIELDS = ("base_r", "base_g", "base_b", "accent_r", "accent_g", "accent_b",
                "brightness", "grad_v", "grad_h", "tex_amp", "tex_scale")
STYLE_DIM = len(STYLE_FIELDS)

# Four photo palettes per class (RGB in [0, 1]); a region picks one, jitters it and scales its brightness.
_PHOTO_PALETTES = np.array([
    [[.35, .60, .95], [.95, .55, .35], [.45, .35, .70], [.70, .75, .80]],  # sky: day, sunset, dusk, overcast
    [[.95, .95, .97], [.75, .75, .80], [1.0, .80, .75], [.55, .55, .62]],  # cloud
    [[.45, .42, .45], [.50, .40, .30], [.35, .40, .55], [.62, .60, .64]],  # mountain
    [[.15, .35, .65], [.10, .50, .55], [.20, .30, .35], [.35, .55, .75]],  # water
    [[.30, .60, .20], [.55, .65, .25], [.20, .45, .15], [.60, .55, .30]],  # grass
    [[.10, .35, .12], [.20, .45, .15], [.70, .40, .10], [.60, .20, .10]],  # tree (incl. autumn)
    [[.90, .80, .55], [.85, .70, .45], [.95, .90, .75], [.75, .60, .40]],  # sand
    [[.45, .43, .40], [.35, .30, .27], [.55, .50, .45], [.30, .32, .35]],  # rock
    [[.70, .35, .25], [.75, .75, .72], [.85, .80, .65], [.40, .42, .48]],  # building
    [[.30, .30, .32], [.40, .38, .35], [.22, .22, .24], [.50, .45, .40]],  # road
], dtype=np.float32)

# Texture basis fields: noise with (rows, cols) random values per shorter image side, or periodic (windows,
# ripples; period set by the building / sand tex_scale).
_F_SMOOTH, _F_COARSE, _F_MID, _F_FINE, _F_GRAIN, _F_HSTREAK, _F_HSTREAK2, _F_VSTREAK, _F_VSTREAK2, \
    _F_RIDGED, _F_RIDGED2, _F_WINDOWS, _F_RIPPLES = range(_N_FIELDS := 13)
_FIELD_CELLS = [(2, 3), (5, 5), (10, 10), (24, 24), (64, 64), (16, 2), (40, 4), (3, 24), (5, 56), (8, 8),
                (20, 20), None, (4, 4)]  # by field id; windows are not noise
_TEXTURE = [  # per class: two basis fields mixed by tex_scale, (low, high) texture amplitude, max |grad_v|
    (_F_SMOOTH, _F_COARSE, (0.3, 0.8), 2.5), (_F_COARSE, _F_MID, (0.5, 1.0), 1.0),  # sky, cloud
    (_F_RIDGED, _F_RIDGED2, (0.6, 1.1), 1.0), (_F_HSTREAK, _F_HSTREAK2, (0.5, 1.0), 1.0),  # mountain, water
    (_F_VSTREAK, _F_VSTREAK2, (0.5, 0.9), 1.0), (_F_MID, _F_FINE, (0.8, 1.4), 0.6),  # grass, tree
    (_F_RIPPLES, _F_GRAIN, (0.3, 0.7), 1.0), (_F_RIDGED2, _F_FINE, (0.6, 1.1), 0.8),  # sand, rock
    (_F_WINDOWS, _F_WINDOWS, (0.5, 0.9), 0.6), (_F_GRAIN, _F_FINE, (0.3, 0.7), 0.6)]  # building, road
_FAMILY_A, _FAMILY_B = (np.array([t[j] for t in _TEXTURE]) for j in (0, 1))
_AMP_RANGE, _GRAD_V_MAX = (np.array([t[j] for t in _TEXTURE], dtype=np.float32) for j in (2, 3))

# Scene types: probability, chance of a mountain range, ground bands from the horizon down (class, thickness
# range; thickness 0 = absent), (min, max) counts of trees / rocks / buildings, chance of a road.
_SCENES = {
    "lake": (0.20, 0.8, [(WATER, (.3, .5)), (SAND, (0, .12)), (GRASS, (.4, .6))], (2, 12), (0, 3), (0, 0), 0),
    "coast": (0.14, 0.3, [(WATER, (.4, .7)), (SAND, (.3, .6))], (0, 3), (0, 5), (0, 0), 0.0),
    "meadow": (0.18, 0.6, [(GRASS, (1, 1))], (0, 15), (0, 4), (0, 0), 0.0),
    "town": (0.16, 0.3, [(GRASS, (1, 1))], (0, 6), (0, 0), (2, 7), 0.9),
    "desert": (0.10, 0.8, [(SAND, (1, 1))], (0, 0), (1, 6), (0, 0), 0.2),
    "alpine": (0.12, 1.0, [(ROCK, (0, .25)), (GRASS, (.5, 1))], (0, 8), (0, 4), (0, 0), 0.0),
    "uniform": (0.10, 0.0, [], (0, 0), (0, 0), (0, 0), 0.0),
}
_SCENE_NAMES = list(_SCENES)
_SCENE_P = np.array([_SCENES[s][0] for s in _SCENE_NAMES]) / sum(_SCENES[s][0] for s in _SCENE_NAMES)
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


@lru_cache(maxsize=256)
def _interp_matrix(n_out: int, n_grid: int) -> np.ndarray:
    """(n_out, n_grid) Catmull-Rom weights upsampling a 1-D grid to n_out pixels (2-D noise: R_y @ grid @
    R_x^T). Cubic, not bilinear: no blocky, axis-aligned contours when thresholded."""
    pos = (np.arange(n_out) + 0.5) / n_out * n_grid - 0.5
    i = np.floor(pos).astype(int)
    f = pos - i
    taps = [(-1, -0.5 * f**3 + f**2 - 0.5 * f), (0, 1.5 * f**3 - 2.5 * f**2 + 1),
            (1, -1.5 * f**3 + 2 * f**2 + 0.5 * f), (2, 0.5 * f**3 - 0.5 * f**2)]
    m = np.zeros((n_out, n_grid), dtype=np.float32)
    for offset, weight in taps:
        np.add.at(m, (np.arange(n_out), np.clip(i + offset, 0, n_grid - 1)), weight)
    return m


def _random_grid(rng: np.random.Generator, shape: tuple[int, int], cells) -> np.ndarray:
    """Uniform [-1, 1] grid with `cells` = (rows, cols) values per shorter side of an image of `shape`."""
    h, w = shape
    s = min(h, w)
    size = max(2, round(cells[0] * h / s)), max(2, round(cells[1] * w / s))
    return rng.uniform(-1, 1, size=size).astype(np.float32)


def _upsample(grid: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return _interp_matrix(shape[0], grid.shape[0]) @ grid @ _interp_matrix(shape[1], grid.shape[1]).T


def _noise2d(rng: np.random.Generator, shape: tuple[int, int], cells: tuple[float, float]) -> np.ndarray:
    """Value noise in about [-1, 1] with `cells` = (rows, cols) random values per shorter image side."""
    return _upsample(_random_grid(rng, shape, cells), shape)


def _noise1d(rng: np.random.Generator, xn: np.ndarray, n_ctrl: int) -> np.ndarray:
    """Piecewise-linear 1-D noise in [-1, 1] over normalised x (linear -> peaky mountain ridges)."""
    return np.interp(xn, np.linspace(0, 1, n_ctrl), rng.uniform(-1, 1, n_ctrl)).astype(np.float32)


class SyntheticLandscapes(Dataset):
    """Procedural landscapes: 10 textured classes in plausible layouts, each region's style drawn per image
    and class and returned as `style`. Sample i is a pure function of (seed, split, i), with separate random
    streams for layout, style and noise, so `render(i, style=other)` repaints the same layout and noise with
    another style (SEAN style-transfer ground truth). About 2 ms of one core per 128x128 sample."""

    def __init__(self, split: str = "train", size: int | tuple[int, int] = 64, length: int | None = None,
                 seed: int = 0):
        if split not in _SPLIT_IDS:
            raise ValueError(f"split must be one of {list(_SPLIT_IDS)}, got {split!r}")
        self.split = split
        self.size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        if min(self.size) < 8:
            raise ValueError(f"size must be at least 8 pixels, got {self.size}")
        self.length = length if length is not None else (10000 if split == "train" else 1000)
        self.seed = seed
        h, w = self.size
        self.info = DatasetInfo(name="synthetic", label_nc=len(CLASS_NAMES), class_names=CLASS_NAMES,
                                preprocess_mode="none", load_size=w, crop_size=w, aspect_ratio=w / h,
                                style_dim=STYLE_DIM)
        # pixel coordinates in shorter-side units (aspect-independent shapes) and normalised [0, 1] ones
        s = min(h, w)
        self._Y = ((np.arange(h, dtype=np.float32) + 0.5) / s)[:, None]
        self._X = ((np.arange(w, dtype=np.float32) + 0.5) / s)[None, :]
        self._yn = ((np.arange(h, dtype=np.float32) + 0.5) / h)[:, None]
        self._xn = ((np.arange(w, dtype=np.float32) + 0.5) / w)

    def __len__(self) -> int:
        return self.length

    def _rng(self, index: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, _SPLIT_IDS[self.split], index, stream])

    # -- layout: all steps draw from one random stream, so reordering them would change every sample --------
    def layout(self, index: int) -> np.ndarray:
        """Label map (H, W) int64 of sample `index`."""
        rng = self._rng(index, 0)
        scene = _SCENE_NAMES[rng.choice(len(_SCENE_NAMES), p=_SCENE_P)]
        if scene == "uniform":
            return self._near_uniform(rng)
        _, p_mountain, bands, n_trees, n_rocks, n_buildings, p_road = _SCENES[scene]
        label = np.full(self.size, SKY, dtype=np.int64)
        horizon = self._horizon(rng, flat=any(c == WATER for c, _ in bands))
        below = self._yn > horizon
        if rng.random() < 0.8:
            self._add_clouds(rng, label, horizon)
        if rng.random() < p_mountain:
            self._add_mountains(rng, label, horizon, below, high=scene == "alpine")
        depth = np.clip((self._yn - horizon) / np.maximum(1 - horizon, 1e-3), 0, 1)  # perspective, in [0, 1]
        label[below] = self._ground_bands(rng, bands, depth)[below]
        self._add_buildings(rng, label, horizon, n_buildings)
        if rng.random() < p_road:
            self._add_road(rng, label, below, depth)
        lump = _noise2d(rng, self.size, (12, 12))
        self._add_objects(rng, label, depth, lump, TREE, n_trees, (GRASS,))
        self._add_objects(rng, label, depth, lump, ROCK, n_rocks, (GRASS, SAND, ROCK))
        return label

    def _near_uniform(self, rng: np.random.Generator) -> np.ndarray:
        """One class everywhere, often with one small blob of a fitting class."""
        main, extra = [(SKY, CLOUD), (WATER, ROCK), (GRASS, TREE), (SAND, ROCK), (CLOUD, SKY),
                       (TREE, GRASS), (MOUNTAIN, ROCK), (ROCK, GRASS)][rng.integers(8)]
        label = np.full(self.size, main, dtype=np.int64)
        if rng.random() < 0.6:
            X, Y = self._X, self._Y
            cx, cy = rng.uniform(0, X[0, -1]), rng.uniform(0, Y[-1, 0])
            rx, ry = rng.uniform(0.05, 0.2, 2)
            lump = 0.3 * _noise2d(rng, self.size, (6, 6))
            label[((X - cx) / rx) ** 2 + ((Y - cy) / ry) ** 2 < 1 + lump] = extra
        return label

    def _horizon(self, rng: np.random.Generator, flat: bool) -> np.ndarray:
        """(1, W) horizon height per column: tilted, and hilly unless water lies at it."""
        xn = self._xn
        # the noise is drawn even for flat horizons so that every later draw stays in place
        horizon = (rng.uniform(0.3, 0.65) + rng.uniform(-0.06, 0.06) * (xn - 0.5)
                   + (0 if flat else rng.uniform(0.0, 0.05)) * _noise1d(rng, xn, 6))
        return horizon.astype(np.float32)[None, :]

    def _add_clouds(self, rng, label, horizon) -> None:
        """Thresholded low-frequency noise, denser near the top, only well above the horizon."""
        hw, yn = self.size, self._yn
        cloud = (_noise2d(rng, hw, (3, 5)) + 0.5 * _noise2d(rng, hw, (7, 11))
                 + 0.25 * _noise2d(rng, hw, (16, 24)) + 0.8 * (0.3 - yn))
        label[(cloud > rng.uniform(0.15, 0.9)) & (yn < horizon - 0.03)] = CLOUD

    def _add_mountains(self, rng, label, horizon, below, high: bool) -> None:
        """A ridge of peaks rising from the horizon, behind everything on the ground."""
        xn = self._xn
        height = rng.uniform(0.5, 0.9) if high else rng.uniform(0.25, 0.7)
        profile = 0.5 + 0.5 * (0.7 * _noise1d(rng, xn, rng.integers(3, 7)) + 0.3 * _noise1d(rng, xn, 15))
        ridge = horizon - height * horizon * (0.2 + 0.8 * profile)
        label[(self._yn > ridge) & ~below] = MOUNTAIN

    def _ground_bands(self, rng, bands, depth) -> np.ndarray:
        """(H, W) class of the ground band at each depth; band boundaries are wavy."""
        thick = np.array([rng.uniform(*t) for _, t in bands], dtype=np.float32)
        bounds = np.cumsum(thick) / thick.sum()
        band_idx = np.zeros(self.size, dtype=np.int64)
        for k in range(len(bands) - 1):
            band_idx += depth > bounds[k] + 0.04 * _noise1d(rng, self._xn, rng.integers(4, 12))
        return np.array([c for c, _ in bands])[band_idx]

    def _add_buildings(self, rng, label, horizon, counts) -> None:
        """Boxes standing on the ground near the horizon and rising into the sky."""
        nb = rng.integers(counts[0], counts[1] + 1)
        if nb == 0:
            return
        w, xn, yn = self.size[1], self._xn, self._yn
        cx = rng.uniform(0, 1, nb)[:, None, None]
        half = rng.uniform(0.03, 0.1, nb)[:, None, None]
        base = horizon[0, np.clip((cx[:, 0, 0] * w).astype(int), 0, w - 1)][:, None, None] \
            + rng.uniform(0.01, 0.06, nb)[:, None, None]
        top = base - rng.uniform(0.08, 0.35, nb)[:, None, None]
        inside = (np.abs(xn[None, None, :] - cx) < half) & (yn[None] > top) & (yn[None] < base)
        label[inside.any(0)] = BUILDING

    def _add_road(self, rng, label, below, depth) -> None:
        """A trapezoid from the bottom edge to a vanishing point on the horizon."""
        vx, bx = rng.uniform(0.3, 0.7), rng.uniform(0.1, 0.9)
        centre = vx + (bx - vx) * depth
        label[below & (np.abs(self._xn - centre) < rng.uniform(0.08, 0.25) * depth + 0.003)] = ROAD

    def _add_objects(self, rng, label, depth, lump, cls, counts, ground) -> None:
        """Trees (tall) or rocks (flat): lumpy ellipses standing on `ground` pixels, bigger when nearer."""
        n = rng.integers(counts[0], counts[1] + 1)
        cand = np.flatnonzero(np.isin(label, ground))
        if n == 0 or cand.size == 0:
            return
        X, Y = self._X, self._Y
        py, px = np.divmod(cand[rng.integers(0, cand.size, n)], self.size[1])
        r = (0.03 + 0.08 * depth[py, px]) * rng.uniform(0.7, 1.3, n)
        if cls == TREE:
            rx, ry = r * rng.uniform(0.5, 0.8, n), r * rng.uniform(1.0, 1.6, n)
        else:
            rx, ry = r * rng.uniform(0.6, 1.0, n), r * rng.uniform(0.3, 0.5, n)
        bx, cy = X[0, px], Y[py, 0] - 0.8 * ry  # the ellipse's bottom sits on the picked pixel
        q = (((X[None] - bx[:, None, None]) / rx[:, None, None]) ** 2
             + ((Y[None] - cy[:, None, None]) / ry[:, None, None]) ** 2).min(0)
        label[q < 1 + 0.35 * lump] = cls

    # -- style and rendering --------------------------------------------------------------------------------
    def sample_style(self, index: int) -> np.ndarray:
        """Style parameters (label_nc, STYLE_DIM) float32 of sample `index`; classes drawn independently."""
        rng = self._rng(index, 1)
        k = len(CLASS_NAMES)
        which = rng.integers(0, _PHOTO_PALETTES.shape[1], k)
        brightness = rng.uniform(0.75, 1.15, k).astype(np.float32)
        base = np.clip((_PHOTO_PALETTES[np.arange(k), which] + rng.uniform(-0.07, 0.07, (k, 3)))
                       * brightness[:, None], 0, 1)
        # accent: mostly lighter or darker than base, with a small hue shift, so textures stay natural-looking
        direction = rng.choice([-1.0, 1.0], (k, 1)) * np.ones((1, 3)) + 0.6 * rng.normal(size=(k, 3))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        accent = np.clip(base + direction * rng.uniform(0.15, 0.35, (k, 1)), 0, 1)
        grad_v = rng.uniform(-1, 1, k) * _GRAD_V_MAX
        grad_h = rng.uniform(-0.8, 0.8, k)
        amp = rng.uniform(_AMP_RANGE[:, 0], _AMP_RANGE[:, 1])
        scale = rng.uniform(0, 1, k)
        style = np.concatenate([base * 2 - 1, accent * 2 - 1, brightness[:, None], grad_v[:, None],
                                grad_h[:, None], amp[:, None], scale[:, None]], axis=1)
        return style.astype(np.float32)

    def _fields(self, rng: np.random.Generator, style: np.ndarray, needed: set[int]) -> dict[int, np.ndarray]:
        """Zero-mean-ish basis textures; the periodic ones take their period from building/sand tex_scale."""
        hw, X, Y = self.size, self._X, self._Y
        px = 1.0 / min(hw)  # one pixel in shorter-side units: periods are at least 3 pixels
        # every grid is drawn, needed or not, so a field's noise never depends on which classes are present
        grids = {key: _random_grid(rng, hw, cells) for key, cells in enumerate(_FIELD_CELLS) if cells}
        f = {key: _upsample(g, hw) for key, g in grids.items() if key in needed}
        for key in (_F_RIDGED, _F_RIDGED2):  # ridges: folded noise, re-centred
            if key in f:
                r = np.abs(f[key])
                f[key] = 2.5 * (r.mean() - r)
        if _F_RIPPLES in needed:
            period = max(3 * px, 0.03 + 0.06 * float(style[SAND, 10]))
            f[_F_RIPPLES] = np.sin(2 * np.pi * (Y / period + 0.8 * f[_F_RIPPLES])).astype(np.float32) * 0.8
        if _F_WINDOWS in needed:
            period = max(3 * px, 0.035 + 0.05 * float(style[BUILDING, 10]))
            lit = ((X / period) % 1 < 0.55) & ((Y / (1.3 * period)) % 1 < 0.5)
            f[_F_WINDOWS] = (lit.astype(np.float32) - 0.275) * 2.0
        return f

    def render(self, index: int, style=None, label: np.ndarray | None = None) -> torch.Tensor:
        """Photo [3, H, W] in [-1, 1] of sample `index` (its own layout and texture noise) painted with
        `style` (default: its own). Each pixel depends only on its own class's style row."""
        label = self.layout(index) if label is None else label
        style = self.sample_style(index) if style is None else np.asarray(style, dtype=np.float32)
        k = len(CLASS_NAMES)
        h, w = self.size
        flat = label.ravel()
        count = np.bincount(flat, minlength=k)
        present = np.flatnonzero(count)
        needed = sorted(set(_FAMILY_A[present]) | set(_FAMILY_B[present]))
        fields = self._fields(self._rng(index, 2), style, set(needed))
        # texture: per class, a mix of its two basis fields (tex_scale picks the scale) times its amplitude
        amp, scale = style[:, 9], style[:, 10]
        weights = np.zeros((k, _N_FIELDS), dtype=np.float32)
        np.add.at(weights, (np.arange(k), _FAMILY_A), amp * (1 - scale))
        np.add.at(weights, (np.arange(k), _FAMILY_B), amp * scale)
        # the colour ramp turns around the region's own centroid, so it does not move the region's mean colour
        count = np.maximum(count, 1)
        ycen = np.bincount(flat, weights=np.repeat(self._yn[:, 0], w), minlength=k) / count
        xcen = np.bincount(flat, weights=np.tile(self._xn, h), minlength=k) / count
        offset = -(style[:, 7] * ycen + style[:, 8] * xcen)
        # one gather of every per-class number to the pixels: (rows, H*W)
        table = np.concatenate([weights[:, needed], style[:, 7:9], offset[:, None], style[:, 0:3],
                                style[:, 3:6] - style[:, 0:3]], axis=1).astype(np.float32).T
        per_pixel = table[:, flat].reshape(-1, h, w)
        nf = len(needed)
        t = per_pixel[nf] * self._yn + per_pixel[nf + 1] * self._xn[None] + per_pixel[nf + 2]
        for i, key in enumerate(needed):
            t += per_pixel[i] * fields[key]
        # exactly zero-mean inside every region, so the region's mean colour is its base (up to clipping)
        t -= (np.bincount(flat, weights=t.ravel(), minlength=k) / count).astype(np.float32)[label]
        img = per_pixel[nf + 3:nf + 6] + t[None] * per_pixel[nf + 6:nf + 9]  # base + t * (accent - base)
        return torch.from_numpy(np.clip(img, -1, 1, out=img))

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        label = self.layout(index)
        style = self.sample_style(index)
        return dict(label=torch.from_numpy(label), image=self.render(index, style, label),
                    style=torch.from_numpy(style), path=f"synthetic/{self.split}/{index:06d}")


# --- Preprocessing: one geometry for image, label and instance map ------------------------------------------
PREPROCESS_MODES = ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "fixed", "none")


@dataclass
class Geometry:
    """One sample's resize / crop / flip, applied alike to the photo (bicubic) and the maps (nearest)."""

    resize: tuple[int, int] | None  # (H, W) to resize to first
    crop: tuple[int, int, int, int] | None  # (top, left, height, width) after resizing
    flip: bool  # horizontal, last


def _check_mode(mode: str) -> None:
    if mode not in PREPROCESS_MODES:
        raise ValueError(f"unknown preprocess mode {mode!r}; choose from {PREPROCESS_MODES}")


def sample_geometry(hw: tuple[int, int], mode: str, load_size: int, crop_hw: tuple[int, int], train: bool,
                    flip: bool = True, generator: torch.Generator | None = None, path: str = "") -> Geometry:
    """Resize/crop/flip for an (H, W) input as the official preprocess modes; random crop and flip only in
    training, else centre crop."""
    _check_mode(mode)
    h, w = hw
    ch, cw = crop_hw
    scaled = (int(load_size * h / w), load_size)
    power_of_32 = (max(32, round(h / 32) * 32), max(32, round(w / 32) * 32))  # the official make_power_2
    resize = {"resize_and_crop": (load_size, load_size), "fixed": (ch, cw), "none": power_of_32,
              "scale_width": scaled, "scale_width_and_crop": scaled}.get(mode)  # "crop": no resize
    nh, nw = resize if resize is not None else (h, w)
    crop = None
    if mode.endswith("crop"):
        if nh < ch or nw < cw:
            raise DataError(f"{path}: after '{mode}' the image is {nh}x{nw}, smaller than the {ch}x{cw} "
                            f"crop; use a larger load_size or another preprocess mode")
        if train:
            top = int(torch.randint(0, nh - ch + 1, (1,), generator=generator))
            left = int(torch.randint(0, nw - cw + 1, (1,), generator=generator))
        else:
            top, left = (nh - ch) // 2, (nw - cw) // 2
        crop = (top, left, ch, cw)
    do_flip = bool(train and flip and torch.rand((), generator=generator) < 0.5)
    return Geometry(resize=resize if resize != (h, w) else None, crop=crop, flip=do_flip)


def apply_geometry(x: torch.Tensor, geo: Geometry, is_label: bool) -> torch.Tensor:
    """Apply `geo` to [C, H, W]: nearest for label / instance maps (no new ids), bicubic for photos."""
    if geo.resize is not None:
        mode = InterpolationMode.NEAREST_EXACT if is_label else InterpolationMode.BICUBIC
        x = TF.resize(x, list(geo.resize), interpolation=mode, antialias=True)  # ignored for nearest
    if geo.crop is not None:
        x = TF.crop(x, *geo.crop)
    return TF.horizontal_flip(x) if geo.flip else x


# --- Real datasets: finding, pairing and reading files ------------------------------------------------------
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tif", ".tiff", ".webp")


def _natural_key(path: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path)]


def list_images(folder: str | Path, recursive: bool = False, what: str = "images") -> list[str]:
    """Sorted (natural order) image files in `folder`; DataError if it is missing or holds none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{what} folder {folder} does not exist or is not a folder")
    files = folder.rglob("*") if recursive else folder.iterdir()
    paths = [str(p) for p in files if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS]
    if not paths:
        raise DataError(f"{what} folder {folder} contains no image files ({', '.join(IMG_EXTENSIONS)})")
    return sorted(paths, key=_natural_key)


def _folders(root: Path, what: str, **kinds: str) -> dict[str, list[str]]:
    """{kind: images of root/folder} for kind=folder; errors name the files as '<what> <kind>s'."""
    return {kind: list_images(Path(root) / sub, what=f"{what} {kind}s") for kind, sub in kinds.items()}


def _pair(named: dict[str, list[str]], key=None) -> list[tuple[str, ...]]:
    """Pair files of several kinds by key(path) (default: file name without extension), each key once in
    every kind; tuples in the order of `named`, sorted like the first kind."""
    key = key or (lambda p: os.path.splitext(os.path.basename(p))[0])
    tables = {}
    for kind, paths in named.items():
        tables[kind] = {}
        for p in paths:
            if (k := key(p)) in tables[kind]:
                raise DataError(f"two {kind} files share the name '{k}': {tables[kind][k]} and {p}")
            tables[kind][k] = p
    for a, table in tables.items():
        for b in tables:
            missing = [p for k, p in table.items() if k not in tables[b]]
            if missing:
                shown = ", ".join(os.path.basename(m) for m in missing[:5])
                more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
                raise DataError(f"{len(missing)} {a} file(s) have no matching {b} file: {shown}{more}")
    first = next(iter(tables.values()))
    return [tuple(t[k] for t in tables.values()) for k in sorted(first, key=lambda k: _natural_key(first[k]))]


# Built-in palettes: the official SPADE code's colours for each dataset's ids (its labelcolormap, which the
# GauGAN demo also used). Cityscapes: by labelId 0..34, as the Cityscapes label definitions.
CITYSCAPES_COLOURS = np.array([(0, 0, 0)] * 5 + [
    (111, 74, 0), (81, 0, 81), (128, 64, 128), (244, 35, 232), (250, 170, 160), (230, 150, 140), (70, 70, 70),
    (102, 102, 156), (190, 153, 153), (180, 165, 180), (150, 100, 100), (150, 120, 90), (153, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180),
    (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 0, 90), (0, 0, 110), (0, 80, 100),
    (0, 0, 230), (119, 11, 32), (0, 0, 142)], dtype=np.uint8)
# COCO-Stuff ids the GauGAN palette paints in natural colours: sea, sky-other, tree, clouds, grass.
COCO_NATURAL_COLOURS = {154: (54, 62, 167), 156: (95, 219, 255), 168: (140, 104, 47), 105: (170, 170, 170),
                        123: (29, 195, 49)}


def _coco_colours() -> np.ndarray:
    pal = spade_colormap(182)
    pal[list(COCO_NATURAL_COLOURS)] = list(COCO_NATURAL_COLOURS.values())
    return pal


BUILTIN_PALETTES = {  # name -> colours indexed by the id the dataset's files store
    "cityscapes": lambda: CITYSCAPES_COLOURS,
    "ade20k": lambda: spade_colormap(151),  # raw ids: 0 = unknown, 1..150 the classes
    "coco": _coco_colours,
    "synthetic": lambda: PALETTE,
}


def _colour_codes(rgb: np.ndarray) -> np.ndarray:
    """[..., 3] colours -> int64 0xRRGGBB."""
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def load_palette(spec) -> dict[int, int]:
    """A palette as {0xRRGGBB: id} from a built-in name (BUILTIN_PALETTES), colours indexed by id, or a JSON
    file holding [[r, g, b], ...] or {"#rrggbb": id}. A colour shared by two ids maps to the first."""
    source = ""
    if isinstance(spec, str) and spec in BUILTIN_PALETTES:
        spec = BUILTIN_PALETTES[spec]()
    elif isinstance(spec, (str, Path)):
        source = str(spec)
        try:
            spec = json.loads(Path(spec).read_text())
        except (OSError, ValueError) as e:
            raise DataError(f"palette {spec}: not a built-in name ({', '.join(BUILTIN_PALETTES)}) nor a "
                            f"readable JSON file ({e})") from e
    where = f"palette {source}" if source else "palette"
    if isinstance(spec, dict):
        lookup = {}
        for c, i in spec.items():
            code = str(c).lstrip("#")
            if not (re.fullmatch(r"[0-9a-fA-F]{6}", code) and isinstance(i, int) and not isinstance(i, bool)
                    and i >= 0):
                raise DataError(f"{where}: entry {c!r}: {i!r} is not \"#rrggbb\": class id (an integer >= 0)")
            lookup[int(code, 16)] = i
        return lookup
    if not isinstance(spec, (list, tuple, np.ndarray)):
        raise DataError(f"{where}: expected a list of [r, g, b] per id, or {{\"#rrggbb\": id}}, got "
                        f"{type(spec).__name__}")
    for i, c in enumerate(spec):
        if not (isinstance(c, (list, tuple, np.ndarray)) and len(c) == 3
                and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= v <= 255
                        for v in c)):
            raise DataError(f"{where}: entry {i} is {c!r}, not [r, g, b] with integers 0..255")
    colours = np.asarray(spec, dtype=np.int64).reshape(-1, 3)
    lookup: dict[int, int] = {}
    for i, c in enumerate(_colour_codes(colours).tolist()):
        lookup.setdefault(c, i)
    return lookup


def decode_colours(rgb: np.ndarray, palette: dict[int, int], path: str) -> np.ndarray:
    """(H, W, 3) uint8 colours -> int64 (H, W) ids; DataError for a colour outside the palette."""
    codes = _colour_codes(rgb)
    uniq, inverse = np.unique(codes, return_inverse=True)
    unknown = [c for c in uniq.tolist() if c not in palette]
    if unknown:
        c = unknown[0]
        y, x = (int(v) for v in np.argwhere(codes == c)[0])
        more = f" (and {len(unknown) - 1} more colours)" if len(unknown) > 1 else ""
        raise DataError(f"{path}: colour ({c >> 16}, {(c >> 8) & 255}, {c & 255}) at pixel (x={x}, y={y}) is "
                        f"not in the palette{more}")
    return np.array([palette[c] for c in uniq.tolist()], dtype=np.int64)[inverse].reshape(codes.shape)


def _open(path: str) -> Image.Image:
    try:
        im = Image.open(path)
        im.load()
        return im
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: cannot read image file ({e})") from e


def read_label_file(path: str, palette: dict[int, int] | None = None) -> np.ndarray:
    """Label map file -> int64 (H, W) ids as stored; colour maps (RGB/RGBA) are decoded with `palette`."""
    im = _open(path)
    if im.mode in ("RGB", "RGBA"):
        if palette is None:
            raise DataError(f"{path}: label image is a colour image ({im.mode}); pass a palette (--palette "
                            f"FILE.json or one of {', '.join(BUILTIN_PALETTES)}) to map its colours to class "
                            f"ids, or convert it to a single-channel map of ids")
        return decode_colours(np.asarray(im.convert("RGB")), palette, path)
    if im.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L", "1"):
        raise DataError(f"{path}: label/instance image has mode {im.mode}; expected a single-channel map of "
                        f"integer ids (mode L, P or 16-bit) or a colour image with a palette")
    return np.asarray(im).astype(np.int64)


def read_image_file(path: str) -> torch.Tensor:
    """Photo -> float [3, H, W] in [-1, 1] (grey / palette / RGBA converted to RGB as the official loader)."""
    im = _open(path).convert("RGB")
    return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 127.5 - 1


# --- Real datasets: one loader, one small class per official layout -----------------------------------------
class PairedFolderDataset(Dataset):
    """Reads, validates, maps and preprocesses paired label / photo (/ instance) files; subclasses (one per
    official layout) find and pair the files and may override `map_label`."""

    def __init__(self, pairs: list[tuple[str, ...]], info: DatasetInfo, split: str = "train",
                 size: int | tuple[int, int] | None = None, preprocess_mode: str | None = None,
                 load_size: int | None = None, flip: bool = True, use_instance: bool = True,
                 palette=None):
        self.pairs = pairs
        self.info = info
        self.palette = None if palette is None else load_palette(palette)  # for colour label maps
        self.train = split == "train"
        self.use_instance = use_instance and info.has_instance
        self.mode = preprocess_mode or info.preprocess_mode
        _check_mode(self.mode)
        size = info.crop_size if size is None else size
        if isinstance(size, int):
            # 'fixed' keeps the dataset's aspect ratio (Cityscapes 512 -> 256x512); crops are square
            self.crop_hw = (round(size / info.aspect_ratio), size) if self.mode == "fixed" else (size, size)
        else:
            self.crop_hw = (int(size[0]), int(size[1]))
        if load_size is None:  # the paper's load/crop ratio (286/256 when training), scaled to the asked size
            ratio = info.load_size / info.crop_size if self.train else 1.0
            load_size = round(self.crop_hw[1] * ratio)
        self.load_size = load_size
        self.flip = flip

    def __len__(self) -> int:
        return len(self.pairs)

    def map_label(self, raw: np.ndarray, path: str) -> np.ndarray:
        """Raw file ids -> training ids: 255 is don't-care (official: 255 -> label_nc), other ids outside
        0..label_nc-1 raise. Uses only self.info (sample.read_label_map calls it on a stand-in)."""
        info = self.info
        dontcare = 255 if info.contain_dontcare else None
        check_raw_ids(raw, invalid_ids(raw, info.label_nc, dontcare), path,
                      f"0..{info.label_nc - 1}" + (", 255 = don't-care" if dontcare else ""))
        return raw.copy() if dontcare is None else np.where(raw == 255, info.dontcare_label, raw)

    def check_files(self) -> None:
        """Cheap checks of every file before a long run: each opens as an image (its header only), the maps
        have the size of their photo, and colour label maps come with a palette. Then the first sample is
        read in full (ids, palette colours). DataError naming the first bad file."""
        for label_path, image_path, *rest in self.pairs:
            sizes = {}
            for path in (label_path, image_path, *rest):
                try:
                    with Image.open(path) as im:
                        sizes[path], mode = im.size, im.mode
                except (OSError, SyntaxError, ValueError) as e:
                    raise DataError(f"{path}: cannot read image file ({e})") from None
                if path == label_path and mode in ("RGB", "RGBA") and self.palette is None:
                    read_label_file(path)  # raises its "colour image, pass a palette" error
            if len(set(sizes.values())) > 1:
                (a, sa), (b, sb) = list(sizes.items())[0], next((p, s) for p, s in sizes.items()
                                                                if s != sizes[label_path])
                raise DataError(f"{b}: is {sb[1]}x{sb[0]} (HxW) but its label map {a} is {sa[1]}x{sa[0]}")
        if self.pairs:
            self[0]

    def verify(self, max_errors: int = 10) -> None:
        """Read every sample (e.g. before a long run); one DataError lists the first `max_errors` problems."""
        errors = []
        for i in range(len(self)):
            try:
                self[i]
            except DataError as e:
                errors.append(str(e))
                if len(errors) >= max_errors:
                    break
        if errors:
            raise DataError(f"{len(errors)} bad sample(s) in '{self.info.name}':\n  " + "\n  ".join(errors))

    def __getitem__(self, index: int) -> dict:
        label_path, image_path, *rest = self.pairs[index]
        label = self.map_label(read_label_file(label_path, self.palette), label_path)
        image = read_image_file(image_path)
        if tuple(image.shape[1:]) != label.shape:
            raise DataError(f"{image_path}: photo is {tuple(image.shape[1:])} but its label {label_path} is "
                            f"{label.shape}")
        geo = sample_geometry(label.shape, self.mode, self.load_size, self.crop_hw, self.train, self.flip,
                              path=label_path)
        sample = dict(label=apply_geometry(torch.from_numpy(label)[None], geo, True)[0],
                      image=apply_geometry(image, geo, False).clamp(-1, 1), path=image_path)
        if self.use_instance:
            inst = read_label_file(rest[0])
            if inst.shape != label.shape:
                raise DataError(f"{rest[0]}: instance map is {inst.shape} but its label is {label.shape}")
            sample["instance"] = apply_geometry(torch.from_numpy(inst)[None], geo, True)[0]
        return sample


def _phase(split: str) -> str:
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, got {split!r}")
    return "val" if split == "test" else split  # the official loaders read val/ for the test phase


class CityscapesDataset(PairedFolderDataset):
    """Cityscapes: root/leftImg8bit/{train,val}/<city>/*_leftImg8bit.png, root/gtFine/{train,val}/<city>/
    *_gtFine_labelIds.png (35 ids) and *_gtFine_instanceIds.png (16-bit). Paper: fixed 512x256."""

    INFO = DatasetInfo(name="cityscapes", label_nc=35, has_instance=True, preprocess_mode="fixed",
                       load_size=512, crop_size=512, aspect_ratio=2.0)

    def __init__(self, root, split="train", use_instance=True, **kw):
        phase = _phase(split)
        labels_all = list_images(Path(root) / "gtFine" / phase, recursive=True, what="Cityscapes gtFine")
        named = {"label": [p for p in labels_all if p.endswith("_labelIds.png")],
                 "image": list_images(Path(root) / "leftImg8bit" / phase, recursive=True,
                                      what="Cityscapes leftImg8bit")}
        if not named["label"]:
            raise DataError(f"no *_gtFine_labelIds.png files under {Path(root) / 'gtFine' / phase}")
        if use_instance:
            named["instance"] = [p for p in labels_all if p.endswith("_instanceIds.png")]
        # files pair by their first three name parts: <city>_<seq>_<frame>
        pairs = _pair(named, key=lambda p: "_".join(os.path.basename(p).split("_")[:3]))
        super().__init__(pairs, self.INFO, split, use_instance=use_instance, **kw)


class ADE20KDataset(PairedFolderDataset):
    """ADE20K (ADEChallengeData2016): images/.../ADE_{train,val}_*.jpg, annotations/.../*.png, 150 classes.
    Raw 0 ('unknown') is don't-care: raw k -> k - 1, 0 -> 150, the mapping the official postprocess meant
    but never wrote back; official_ids=True keeps the raw ids, as its released checkpoints saw them."""

    INFO = DatasetInfo(name="ade20k", label_nc=150, contain_dontcare=True, dontcare_label=150)

    def __init__(self, root, split="train", official_ids: bool = False, **kw):
        self.official_ids = official_ids
        tag = f"_{_phase(split)}_"
        files = [p for p in list_images(root, recursive=True, what="ADE20K") if tag in os.path.basename(p)]
        named = {"label": [p for p in files if p.lower().endswith(".png")],
                 "image": [p for p in files if p.lower().endswith(".jpg")]}
        for kind, paths in named.items():
            if not paths:
                raise DataError(f"no ADE20K {kind} files containing '{tag}' under {root}")
        super().__init__(_pair(named), self.INFO, split, **kw)

    def map_label(self, raw, path):
        # on disk only 0 ('unknown') and the classes 1..150 exist; 151 would silently become don't-care below
        nc = self.info.label_nc
        check_raw_ids(raw, invalid_ids(raw, nc + 1), path, f"1..{nc}, 0 = unknown")
        return raw.copy() if self.official_ids else np.where(raw == 0, self.info.dontcare_label, raw - 1)


class CocoStuffDataset(PairedFolderDataset):
    """COCO-Stuff: root/{train,val}_{label,img,inst} (182 classes, 255 = unlabeled -> don't-care), in
    training also the optional *_portrait folders, as the official loader."""

    INFO = DatasetInfo(name="coco", label_nc=182, contain_dontcare=True, dontcare_label=182,
                       has_instance=True)

    def __init__(self, root, split="train", use_instance=True, portraits=True, **kw):
        phase = _phase(split)
        kinds = {"label": "label", "image": "img"} | ({"instance": "inst"} if use_instance else {})
        named = {}
        for kind, suffix in kinds.items():
            named[kind] = list_images(Path(root) / f"{phase}_{suffix}", what=f"COCO-Stuff {kind}")
            portrait = Path(root) / f"{phase}_{suffix}_portrait"
            if portraits and split == "train" and portrait.is_dir():
                named[kind] += list_images(portrait, what=f"COCO-Stuff {kind} portrait")
        super().__init__(_pair(named), self.INFO, split, use_instance=use_instance, **kw)


class CelebAMaskHQDataset(PairedFolderDataset):
    """CelebAMask-HQ as prepared by SEAN: root/{train,test}/{images/*.jpg,labels/*.png}, 19 part ids. Resized
    to 256x256 as the official SEAN README's commands (the paper does not say)."""

    INFO = DatasetInfo(
        name="celebamask", label_nc=19, preprocess_mode="resize_and_crop", load_size=256, crop_size=256,
        class_names=("background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear",
                     "r_ear", "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth"))

    def __init__(self, root, split="train", **kw):
        root = Path(root)
        sub = root / ("train" if split == "train" else ("test" if (root / "test").is_dir() else "val"))
        named = _folders(sub, "CelebAMask-HQ", label="labels", image="images")
        super().__init__(_pair(named), self.INFO, split, **kw)


class FacadesDataset(PairedFolderDataset):
    """CMP Facades: root/{train,val}_label, root/{train,val}_img; 13 classes."""

    INFO = DatasetInfo(name="facades", label_nc=13)

    def __init__(self, root, split="train", **kw):
        phase = _phase(split)
        named = _folders(root, "Facades", label=f"{phase}_label", image=f"{phase}_img")
        super().__init__(_pair(named), self.INFO, split, **kw)


def read_info_json(path: Path) -> dict:
    """A custom dataset's info.json as a dict ({} if there is none); DataError naming the file otherwise."""
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path}: expected a JSON object like {{\"label_nc\": 10}}, got a "
                        f"{type(meta).__name__}")
    return meta


class CustomFolderDataset(PairedFolderDataset):
    """Any folder root/images, root/labels, optional root/instances, paired by file name; label_nc etc. from
    the arguments or root/info.json (see `export_folder`), which may name a palette for colour labels."""

    def __init__(self, root, split="train", label_nc: int | None = None, contain_dontcare: bool | None = None,
                 class_names=None, use_instance=True, **kw):
        root = Path(root)
        meta, where = read_info_json(root / "info.json"), root / "info.json"
        label_nc = label_nc if label_nc is not None else meta.get("label_nc")
        if label_nc is None:
            raise DataError(f"custom dataset {root}: write the number of classes as \"label_nc\" in {where} "
                            "(see data.py export_folder)")
        if not (isinstance(label_nc, int) and not isinstance(label_nc, bool) and 1 <= label_nc <= 65536):
            raise DataError(f"{where}: \"label_nc\" must be a whole number of classes (1 or more), got "
                            f"{label_nc!r}")
        dc = contain_dontcare if contain_dontcare is not None else meta.get("contain_dontcare", False)
        if kw.get("palette") is None and meta.get("palette"):  # a name, or a file beside info.json
            pal = meta["palette"]
            if not isinstance(pal, str):
                raise DataError(f"{where}: \"palette\" must be a built-in name "
                                f"({', '.join(BUILTIN_PALETTES)}) or a JSON file name beside it, got {pal!r}")
            kw["palette"] = pal if pal in BUILTIN_PALETTES else root / pal
        has_inst = (root / "instances").is_dir()
        try:  # an export remembers its size; the official custom default is 256
            crop, aspect = int(meta.get("crop_size", 256)), float(meta.get("aspect_ratio", 1.0))
            names = tuple(str(n) for n in (class_names or meta.get("class_names", ())))
        except (TypeError, ValueError) as e:
            raise DataError(f"{where}: crop_size, aspect_ratio or class_names has the wrong type "
                            f"({e})") from None
        info = DatasetInfo(name="custom", label_nc=label_nc, contain_dontcare=bool(dc),
                           dontcare_label=label_nc if dc else None, has_instance=has_inst,
                           class_names=names, crop_size=crop, load_size=round(crop * 286 / 256),
                           aspect_ratio=aspect)
        instances = {"instance": "instances"} if has_inst and use_instance else {}
        named = _folders(root, "custom", label="labels", image="images", **instances)
        super().__init__(_pair(named), info, split, use_instance=use_instance, **kw)


DATASETS = {"synthetic": SyntheticLandscapes, "cityscapes": CityscapesDataset, "ade20k": ADE20KDataset,
            "coco": CocoStuffDataset, "celebamask": CelebAMaskHQDataset, "facades": FacadesDataset,
            "custom": CustomFolderDataset}


def build_dataset(name: str, root: str | None = None, split: str = "train",
                  size: int | tuple[int, int] | None = None, **kw) -> Dataset:
    """Dataset by name (see DATASETS) at output `size` (int or (H, W); None: the paper's, synthetic 64).
    Extra keywords go to the dataset class (preprocess_mode, load_size, flip, length...)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {list(DATASETS)}")
    if name == "synthetic":
        return SyntheticLandscapes(split=split, size=64 if size is None else size, **kw)
    if root is None:
        raise ValueError(f"dataset {name!r} needs root=<folder in the official layout>")
    return DATASETS[name](root, split=split, size=size, **kw)


def build_split(dataset: str, dataroot, split: str, size: tuple[int, int], length: int | None = None,
                seed: int = 0):
    """build_dataset, with the synthetic set's length and seed (the training run's seed: then its val split
    never overlaps its train split)."""
    if dataset == "synthetic":
        return SyntheticLandscapes(split, size=size, length=length, seed=seed)
    if not dataroot:
        raise ValueError(f"the {dataset} dataset needs its folder: pass --dataroot")
    if not Path(dataroot).is_dir():
        raise FileNotFoundError(f"dataset folder {dataroot} does not exist")
    return build_dataset(dataset, root=dataroot, split=split, size=size)


def batches(dataset, n: int, batch_size: int):
    """Consecutive batches of the first n samples (stacked tensors), in order."""
    for start in range(0, n, batch_size):
        items = [dataset[i] for i in range(start, min(n, start + batch_size))]
        keys = [k for k in items[0] if isinstance(items[0][k], torch.Tensor)]
        yield {k: torch.stack([it[k] for it in items]) for k in keys}


def quantize_png(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float image -> what a PNG file stores (uint8) -> [0, 1] float; every metric sees this."""
    return torch.round((x.detach().float().clamp(-1, 1) + 1) * 127.5).div(255.0)


# --- Export, preview, statistics ----------------------------------------------------------------------------
def export_folder(dataset: Dataset, out_dir: str | Path, n: int, start: int = 0) -> Path:
    """Write samples start..start+n-1 as CustomFolderDataset reads them: images/, labels/ (uint8 ids),
    instances/, info.json and (synthetic) styles.npy."""
    out = Path(out_dir)
    if n < 1 or n > len(dataset) - start:
        raise ValueError(f"asked for {n} samples from {start} but the dataset has {len(dataset)}")
    info = dataset.info
    if info.label_nc + int(info.contain_dontcare) > 256:
        raise ValueError("export writes 8-bit label PNGs; label_nc too large")
    for sub in ("images", "labels"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    styles = []
    for i in range(start, start + n):
        s = dataset[i]
        name = f"{i:06d}.png"
        Image.fromarray(to_uint8(s["image"]).permute(1, 2, 0).numpy()).save(out / "images" / name)
        label = s["label"].clone()
        if info.contain_dontcare:
            label[label == info.dontcare_label] = 255
        Image.fromarray(label.numpy().astype(np.uint8), mode="L").save(out / "labels" / name)
        if "instance" in s:
            (out / "instances").mkdir(exist_ok=True)
            Image.fromarray(s["instance"].numpy().astype(np.int32)).save(out / "instances" / name)
        if "style" in s:
            styles.append(s["style"].numpy())
    h, w = s["label"].shape
    meta = dict(label_nc=info.label_nc, contain_dontcare=info.contain_dontcare,
                class_names=list(info.class_names), source=info.name, crop_size=w, aspect_ratio=w / h)
    (out / "info.json").write_text(json.dumps(meta, indent=1))
    if styles:
        np.save(out / "styles.npy", np.stack(styles))
    return out


def preview(dataset: Dataset, path: str | Path, n: int = 16, nrow: int = 8) -> Path:
    """Save a grid: each row of photos followed by the same samples' colourised labels."""
    samples = [dataset[i] for i in range(n)]
    images = torch.stack([to_uint8(s["image"]).float() / 255 for s in samples])
    pal = dataset_palette(dataset.info.name)
    labels = torch.stack([colorize(s["label"], pal).float() / 255 for s in samples])
    rows = [part[i:i + nrow] for i in range(0, n, nrow) for part in (images, labels)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(make_grid(torch.cat(rows), nrow=nrow, padding=2), path)
    return path


def region_mean_colours(image: torch.Tensor, label: torch.Tensor, label_nc: int):
    """Per-class mean colours [B, label_nc, 3] (0 where absent) and pixel counts [B, label_nc] of images
    [B, 3, H, W]; compare with the synthetic style[..., :3] to see where a transferred style landed."""
    b = image.shape[0]
    idx = label.reshape(b, 1, -1).long().clamp(0, label_nc)  # out-of-range / don't-care -> a spare bin
    sums = torch.zeros(b, 3, label_nc + 1, dtype=image.dtype, device=image.device)
    sums.scatter_add_(2, idx.expand(b, 3, -1), image.reshape(b, 3, -1))
    counts = torch.zeros(b, label_nc + 1, dtype=image.dtype, device=image.device)
    counts.scatter_add_(1, idx[:, 0], torch.ones_like(idx[:, 0], dtype=image.dtype))
    means = sums[:, :, :label_nc].transpose(1, 2) / counts[:, :label_nc, None].clamp(min=1)
    return means, counts[:, :label_nc]


def class_frequencies(dataset: Dataset, n: int = 200) -> np.ndarray:
    """Fraction of pixels per class over the first n samples."""
    counts = np.zeros(dataset.info.label_nc + 1)
    for i in range(min(n, len(dataset))):
        counts += np.bincount(dataset[i]["label"].clamp(max=dataset.info.label_nc).ravel().numpy(),
                              minlength=len(counts))
    return counts[: dataset.info.label_nc] / counts.sum()


# --- Files: how paths are printed, weight files in torch hub's folder ---------------------------------------
def shown(path: str | os.PathLike) -> str:
    """A path as messages print it: inside this repository relative to it (weights/...), under the home folder
    written with ~, so that a message (and a committed notebook output) reads the same on every machine."""
    repo, home, text = str(Path(__file__).resolve().parent), str(Path.home()), str(path)
    if text.startswith(repo + os.sep):
        return text[len(repo) + 1:]
    return "~" + text[len(home):] if text == home or text.startswith(home + os.sep) else text


def hub_file(url: str, allow_download: bool = True, timeout: float = 10.0) -> tuple[Path | None, str]:
    """A weight file in torch hub's checkpoint folder: (path, "") if there or downloaded (one try, with a
    socket timeout so that an offline machine fails fast; via a temp file), else (None, why not)."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urllib.parse.urlparse(url).path)
    if path.is_file():
        return path, ""
    if not allow_download:
        return None, "download disabled"
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), progress=False)
        return path, ""
    except Exception as e:  # no network, DNS failure, timeout, HTTP error...
        return None, f"download failed: {type(e).__name__}: {e}"
    finally:
        socket.setdefaulttimeout(old_timeout)


def _main():
    ap = argparse.ArgumentParser(description="Synthetic landscapes: preview, class frequencies, export")
    ap.add_argument("--out", default="assets/synthetic_preview.png", help="preview image path")
    ap.add_argument("--size", type=int, nargs="+", default=[64], help="H [W]")
    ap.add_argument("--split", default="train")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--export", default=None, help="write --n samples to this folder (custom layout)")
    ap.add_argument("--n", type=int, default=500, help="samples to export / to count class frequencies over")
    ap.add_argument("--bench", action="store_true", help="measure samples/s")
    args = ap.parse_args()
    size = args.size[0] if len(args.size) == 1 else tuple(args.size[:2])
    ds = SyntheticLandscapes(args.split, size=size, seed=args.seed, length=max(args.n, 10000))
    if args.bench:  # 3 seconds of samples, after a warm-up that caches the interpolation matrices
        ds[0]
        t0, c0, count = time.perf_counter(), time.process_time(), 0
        while time.perf_counter() - t0 < 3.0:
            ds[count]
            count += 1
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"{count / wall:.0f} samples/s wall, {count / cpu:.0f} samples/s per CPU-second, at "
              f"{ds.size[0]}x{ds.size[1]} (torch threads {torch.get_num_threads()})")
    elif args.export:
        print("exported to", export_folder(ds, args.export, args.n))
    else:
        print("preview saved to", preview(ds, args.out))
        freq = class_frequencies(ds, n=args.n)
        for name, f in sorted(zip(CLASS_NAMES, freq, strict=True), key=lambda t: -t[1]):
            print(f"  {name:9s} {100 * f:5.1f}%")


if __name__ == "__main__":
    _main()
