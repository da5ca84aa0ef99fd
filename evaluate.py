"""Evaluation protocol of the SPADE and SEAN papers (synthesis from label maps and style editing: sample.py).

Neither official repository ships its evaluation code; this file writes it out:

* mIoU / pixel accuracy of a segmenter run on images synthesized from the validation label maps (SPADE and
  SEAN Table 1): a compact U-Net trained here on the real training images (cached), or any TorchScript
  segmenter. Its score on the real validation images is the "ground truth" row.
* FID on pytorch-fid's Inception-v3 pool3 features. Without that weight file the Frechet distance is computed
  on the segmenter's features and named "FSD (segmenter features)", never FID: it is not comparable.
* Reconstruction from an image's own style (SEAN Table 2): PSNR, SSIM, RMSE. Diversity of SPADE+VAE samples
  (pairwise L1, MS-SSIM, LPIPS); SEAN per-region style transfer on the synthetic landscapes; the same
  segmenter and features during training (TrainingEvaluator, train.py --eval-every).

    python evaluate.py metrics --ckpt runs/spade/ckpt.pt runs/sean/ckpt.pt --out results/
    python evaluate.py figures --ckpt runs/spade runs/sean --sean runs/sean --out assets
    python evaluate.py segmenter --dataset synthetic --size 64      # train (or load) the cached segmenter

Protocol choices the papers leave open (written into every JSON result): images are quantized as a PNG stores
them (uint8) before any metric; Inception takes [0, 1] images resized to 299x299 (bilinear); covariances are
unbiased (N - 1); the confusion matrix is summed over the whole set before mIoU; PSNR, SSIM and RMSE are per
image on [0, 1] pixels, then averaged. A few hundred images bias the FID upwards: compare rows of one table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import statistics
import sys
import warnings
import zipfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from unittest import mock

import numpy as np
import pytorch_fid.inception
import torch
import torch.nn as nn
import torch.nn.functional as F
from matplotlib.figure import Figure
from pytorch_fid.inception import InceptionV3
from torch.utils.data import DataLoader
from torchmetrics.functional.image import multiscale_structural_similarity_index_measure
from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

import data
import models
import sample

FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + FID_WEIGHTS_NAME
FID_RESIZE = 299  # pytorch-fid's InceptionV3(resize_input=True) input size, recorded in every result
FALLBACK_NAME = "FSD (segmenter features)"
DEFAULT_CACHE = Path(__file__).resolve().parent / "data_cache" / "segmenters"
# Committed segmenters (the synthetic landscapes' at 64x64): the same checkpoint scores the same on every
# machine, because the metric's feature extractor is one file, not a per-machine training run.
SHIPPED = Path(__file__).resolve().parent / "weights"
LPIPS_BACKBONE = "alexnet-owt-7be5be79.pth"  # torchvision's ImageNet AlexNet (LPIPS heads: torchmetrics)
MS_SSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, five scales


# --- 1. Metrics on tensors ----------------------------------------------------------------------------------


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int | None = None) -> torch.Tensor:
    """(K, K) int64 counts, rows = ground-truth class, columns = predicted class; ignore_index dropped."""
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
    if target.numel() and (target.min() < 0 or target.max() >= num_classes):
        bad = sorted(set(target.unique().tolist()) - set(range(num_classes)))[:10]
        raise ValueError(f"ground-truth ids must lie in [0, {num_classes}) or be the don't-care id "
                         f"{ignore_index}; found {bad}")
    if pred.numel() and (pred.min() < 0 or pred.max() >= num_classes):
        raise ValueError(f"predicted ids must lie in [0, {num_classes})")
    counts = torch.bincount(target * num_classes + pred, minlength=num_classes**2)
    return counts.reshape(num_classes, num_classes)


def miou_and_accuracy(conf: torch.Tensor) -> dict:
    """mIoU and pixel accuracy of a confusion matrix summed over the whole set. A class absent from both
    ground truth and predictions has an undefined IoU (NaN) and is left out of the mean, as DRN's
    ``np.nanmean`` and the ADE20K toolkit do; a class predicted but never present counts with IoU 0."""
    conf = conf.double()
    tp = conf.diag()
    fp = conf.sum(0) - tp
    fn = conf.sum(1) - tp
    # $\mathrm{mIoU} = \frac{1}{K} \sum_k \frac{TP_k}{TP_k + FP_k + FN_k}$
    iou = tp / (tp + fp + fn)
    present = ~torch.isnan(iou)
    miou = iou[present].mean().item() if present.any() else float("nan")
    # $\text{pixel accuracy} = \frac{\sum_k TP_k}{\#\text{pixels not don't-care}}$
    accuracy = (tp.sum() / conf.sum()).item() if conf.sum() > 0 else float("nan")
    return {"miou": miou, "accuracy": accuracy, "iou_per_class": iou.tolist(),
            "classes_counted": int(present.sum())}


def feature_statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased covariance (N - 1, as np.cov) of (N, D) features, in float64."""
    f = features.double()
    if f.shape[0] < 2:
        raise ValueError("the Frechet distance needs at least 2 images per set")
    mu = f.mean(0)
    centered = f - mu
    return mu, centered.T @ centered / (f.shape[0] - 1)


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor,
                     sigma2: torch.Tensor) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64. S1 S2 is similar to the PSD
    matrix S1^{1/2} S2 S1^{1/2}, so Tr((S1 S2)^{1/2}) is the sum of the square roots of its eigenvalues: exact
    and real even for singular covariances, where scipy's sqrtm needs pytorch-fid's diagonal offset."""
    mu1, mu2, sigma1, sigma2 = (t.double() for t in (mu1, mu2, sigma1, sigma2))
    eigval, eigvec = torch.linalg.eigh(sigma1)
    root1 = (eigvec * eigval.clamp(min=0).sqrt()) @ eigvec.T
    middle = root1 @ sigma2 @ root1
    tr_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    # $\mathrm{FID} = \lVert \mu_r - \mu_g \rVert^2
    #                 + \mathrm{Tr}\left(\Sigma_r + \Sigma_g - 2 (\Sigma_r \Sigma_g)^{1/2}\right)$
    fid = (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * tr_sqrt
    return float(fid)


def frechet_distance_features(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Frechet distance between two (N, D) feature sets. With fewer images than dimensions it avoids D x D
    matrices: for centred features A, Tr((S_r S_g)^{1/2}) is the nuclear norm of A_r A_g^T / sqrt((N_r - 1)
    (N_g - 1)) and Tr(S) = ||A||_F^2 / (N - 1). Same value as ``frechet_distance``."""
    real, fake = real.double().flatten(1), fake.double().flatten(1)
    if min(real.shape[0], fake.shape[0]) >= real.shape[1]:
        return frechet_distance(*feature_statistics(real), *feature_statistics(fake))
    if min(real.shape[0], fake.shape[0]) < 2:
        raise ValueError("the Frechet distance needs at least 2 images per set")
    mu_r, mu_g = real.mean(0), fake.mean(0)
    a_r, a_g = real - mu_r, fake - mu_g
    n_r, n_g = real.shape[0] - 1, fake.shape[0] - 1
    tr_sqrt = torch.linalg.svdvals(a_r @ a_g.T / math.sqrt(n_r * n_g)).sum()
    # $\mathrm{FID} = \lVert \mu_r - \mu_g \rVert^2
    #                 + \mathrm{Tr}\left(\Sigma_r + \Sigma_g - 2 (\Sigma_r \Sigma_g)^{1/2}\right)$
    fid = (mu_r - mu_g).square().sum() + a_r.square().sum() / n_r + a_g.square().sum() / n_g - 2 * tr_sqrt
    return float(fid)


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, window: int = 11, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Per-image SSIM (B,) of (B, C, H, W) images with a Gaussian window, averaged where the window fits in
    the image (Wang et al.'s code and skimage; torchmetrics also averages a reflect-padded border)."""
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"ssim needs two (B, C, H, W) tensors of one shape, got {tuple(x.shape)}, "
                         f"{tuple(y.shape)}")
    if min(x.shape[-2:]) < window:
        raise ValueError(f"ssim needs images of at least {window}x{window} pixels, got {tuple(x.shape[-2:])}")
    x, y = x.double(), y.double()
    channels = x.shape[1]
    coords = torch.arange(window, dtype=torch.float64, device=x.device) - (window - 1) / 2
    g = torch.exp(-coords.square() / (2 * sigma**2))
    kernel = torch.outer(g, g) / g.sum() ** 2
    blur = lambda t: F.conv2d(t, kernel.expand(channels, 1, window, window), groups=channels)  # noqa: E731
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x.square()
    var_y = blur(y * y) - mu_y.square()
    cov_xy = blur(x * y) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    # $\mathrm{SSIM} = \frac{(2\mu_x\mu_y + C_1)(2\sigma_{xy} + C_2)}
    #                     {(\mu_x^2 + \mu_y^2 + C_1)(\sigma_x^2 + \sigma_y^2 + C_2)}$,
    # $C_1 = (0.01 L)^2,\ C_2 = (0.03 L)^2$, Gaussian window 11, $\sigma = 1.5$
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)
    ssim_map = numerator / ((mu_x.square() + mu_y.square() + c1) * (var_x + var_y + c2))
    return ssim_map.mean(dim=(1, 2, 3))


def psnr(x: torch.Tensor, y: torch.Tensor, max_val: float = 1.0) -> torch.Tensor:
    """Per-image PSNR (B,) in dB; identical images give +inf."""
    mse = (x.double() - y.double()).square().flatten(1).mean(1)
    # $\mathrm{PSNR} = 10 \log_{10}\left(\mathrm{MAX}^2 / \mathrm{MSE}\right)$
    return 10 * torch.log10(max_val**2 / mse)


def rmse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image root-mean-square error (B,), in the images' units ([0, 1] here)."""
    # $\mathrm{RMSE} = \sqrt{\frac{1}{CHW} \sum (x - y)^2}$
    return (x.double() - y.double()).square().flatten(1).mean(1).sqrt()


def mean_pairwise_l1(samples: torch.Tensor) -> float:
    """Diversity of (S, C, H, W) samples of one label map: mean per-pixel L1 over all S(S-1)/2 pairs."""
    s = samples.shape[0]
    if s < 2:
        raise ValueError("diversity needs at least 2 samples per label map")
    flat = samples.double().flatten(1)
    dist = torch.cdist(flat, flat, p=1) / flat.shape[1]
    return float(dist.triu(diagonal=1).sum() / (s * (s - 1) / 2))


def mean_pairwise_ms_ssim(samples: torch.Tensor) -> float:
    """torchmetrics' MS-SSIM of (S, 3, H, W) samples in [0, 1], averaged over all pairs (lower = more
    diverse). Each scale halves the image, which must stay larger than the 11-pixel window: small images use
    the first k scales that fit (k = 3 at 64x64), their weights renormalized to sum to 1."""
    s, side = samples.shape[0], min(samples.shape[-2:])
    k = 5
    while k > 1 and side <= (11 - 1) * 2 ** (k - 1):
        k -= 1
    betas = tuple(b / sum(MS_SSIM_BETAS[:k]) for b in MS_SSIM_BETAS[:k])
    i, j = torch.triu_indices(s, s, offset=1)
    x, y = samples[i].double(), samples[j].double()
    return float(multiscale_structural_similarity_index_measure(x, y, data_range=1.0, betas=betas,
                                                                 reduction="elementwise_mean"))


def load_lpips(device: str = "cpu", log=print):
    """torchmetrics' AlexNet LPIPS if torchvision's AlexNet file is in torch hub's checkpoint folder, else
    None with a message: LPIPS never runs on random features."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_BACKBONE
    if not path.is_file():
        log(f"[evaluate] LPIPS diversity: n/a, the AlexNet weights {LPIPS_BACKBONE} are not in "
            f"{data.shown(path.parent)} "
            "(put torchvision's ImageNet AlexNet file there to get it)")
        return None
    return LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True).to(device).eval()


@torch.no_grad()
def mean_pairwise_lpips(samples: torch.Tensor, lpips) -> float:
    """LPIPS between (S, 3, H, W) samples in [0, 1], averaged over all pairs (higher = more diverse)."""
    i, j = torch.triu_indices(samples.shape[0], samples.shape[0], offset=1)
    lpips.reset()
    return float(lpips(samples[i].float(), samples[j].float()))


# --- 2. Inception-v3 for FID: pytorch-fid's network, loaded from a located file -----------------------------


def find_inception_weights(path: str | os.PathLike | None = None,
                           download: bool = True) -> tuple[Path | None, str]:
    """The FID weight file: ``path`` if given (must exist), else torch hub's checkpoint cache, else one
    download into that cache. Returns (path, "") or (None, why not)."""
    if path:
        if not Path(path).is_file():
            raise FileNotFoundError(f"--inception-weights {path} does not exist")
        return Path(path), ""
    return data.hub_file(FID_WEIGHTS_URL, allow_download=download)


def load_fid_inception(path: str | os.PathLike) -> tuple[InceptionV3, str]:
    """pytorch-fid's InceptionV3 up to the 2048-d pool3 features (eval mode), and a warning note when the
    file is not pytorch-fid's release (sha256 6726825d...). A file that does not fit is a ValueError."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{path} is not a loadable weight file ({type(err).__name__})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not an FID Inception-v3 weight file: not a state dict")
    # pytorch-fid's constructor would download its weights: hand it the located file instead (loaded strictly)
    try:
        with mock.patch.object(pytorch_fid.inception, "load_state_dict_from_url", lambda *a, **k: state):
            net = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
    except RuntimeError as err:  # missing / unexpected keys, other shapes
        reason = " ".join(str(err).split())
        raise ValueError(f"{path} is not an FID Inception-v3 weight file: "
                         f"{reason[:400]}{'...' if len(reason) > 400 else ''}") from None
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    note = "" if digest.startswith("6726825d") else (
        f"Inception weights {Path(path).name} (sha256 {digest[:8]}) are not pytorch-fid's release 6726825d: "
        "FID values are not comparable to published ones")
    return net.eval(), note


# --- 3. The evaluation segmenter: a compact U-Net trained on the real training images -----------------------


def _conv_block(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(),
        nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU())


class SegUNet(nn.Module):
    """Three-level U-Net: images in [-1, 1] -> class logits (B, label_nc, H, W). ``features`` (the pooled
    bottleneck) is what the Frechet distance falls back to without the Inception weights."""

    def __init__(self, label_nc: int, width: int = 32):
        super().__init__()
        w = width
        self.enc1, self.enc2, self.enc3 = _conv_block(3, w), _conv_block(w, 2 * w), _conv_block(2 * w, 4 * w)
        self.dec2, self.dec1 = _conv_block(6 * w, 2 * w), _conv_block(3 * w, w)
        self.head = nn.Conv2d(w, label_nc, 1)

    def _encode(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        e3 = self.enc3(F.max_pool2d(e2, 2))
        return e1, e2, e3

    def forward(self, x):
        e1, e2, e3 = self._encode(x)
        d2 = self.dec2(torch.cat([F.interpolate(e3, size=e2.shape[-2:], mode="bilinear", align_corners=False),
                                  e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, size=e1.shape[-2:], mode="bilinear", align_corners=False),
                                  e1], 1))
        return self.head(d1)

    @torch.jit.export
    def features(self, x):
        e3 = self._encode(x)[2]
        return torch.cat([e3.mean(dim=(2, 3)), e3.amax(dim=(2, 3))], 1)


@dataclass
class SegmenterConfig:
    """How the evaluation segmenter is trained (part of its cache key)."""

    steps: int = 800
    """optimizer steps on the real training images"""
    batch_size: int = 16
    """images per step"""
    lr: float = 2e-3
    """Adam learning rate, decayed linearly to 0"""
    width: int = 16
    """U-Net base width (channels of the first level)"""
    seed: int = 0
    """seed of initialisation and data order"""


def train_segmenter(train_set, info, cfg: SegmenterConfig, device: str = "cpu", log=print) -> SegUNet:
    """Train a SegUNet with cross-entropy (don't-care ignored) on the real training images."""
    g = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    net = SegUNet(info.label_nc, cfg.width).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1 - step / cfg.steps)
    loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, generator=g)
    ignore = _label_ignore(info)
    step = 0
    while step < cfg.steps:
        for batch in loader:
            image, label = batch["image"].to(device), batch["label"].to(device).long()
            if ignore is not None:
                label = label.masked_fill(label == ignore, -100)
            if torch.rand((), generator=g) < 0.5:  # horizontal flip augmentation
                image, label = image.flip(-1), label.flip(-1)
            loss = F.cross_entropy(net(image), label, ignore_index=-100)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % max(1, cfg.steps // 5) == 0 or step == cfg.steps:
                log(f"[segmenter] step {step}/{cfg.steps} cross-entropy {loss.item():.3f}")
            if step >= cfg.steps:
                break
    return net.eval()


def get_segmenter(dataset: str, size: tuple[int, int], info, train_set_fn, cfg: SegmenterConfig,
                  cache_dir: str | os.PathLike = DEFAULT_CACHE, device: str = "cpu", log=print,
                  retrain: bool = False) -> SegUNet:
    """The segmenter of (dataset, size, cfg): the committed one in weights/, else the cached one, else trained
    with ``train_set_fn()`` and cached (retrain: always trained, written to cache_dir)."""
    tag = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode()).hexdigest()[:8]
    name = f"{dataset}_{size[0]}x{size[1]}_unet-{tag}.pt"
    path = Path(cache_dir) / name
    for stored in [] if retrain else [SHIPPED / name, path]:
        if stored.is_file():
            net = load_unet_weights(stored)
            if net is None:
                raise ValueError(f"{stored}: not a U-Net weights file: delete it to retrain it")
            log(f"[segmenter] loaded {data.shown(stored)}")
            return net.to(device).eval()
    log(f"[segmenter] training on the real {dataset} training images at {size[0]}x{size[1]} "
        f"(cached in {path})")
    net = train_segmenter(train_set_fn(), info, cfg, device=device, log=log)
    path.parent.mkdir(parents=True, exist_ok=True)
    sample.atomic_save({"state_dict": {k: v.cpu() for k, v in net.state_dict().items()},
                        "label_nc": info.label_nc, "config": asdict(cfg), "dataset": dataset,
                        "size": list(size)}, path)
    return net


def is_program_archive(path: str | os.PathLike) -> bool:
    """A TorchScript or torch.export archive (zip members code/..., constants.pkl or archive_format): code,
    not only weights. torch.load would hand a TorchScript zip to torch.jit.load even with weights_only."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        inner = [name.split("/", 1)[-1] for name in z.namelist()]
    return any(n.startswith("code/") or n in ("constants.pkl", "archive_format") for n in inner)


def load_unet_weights(path: str | os.PathLike) -> SegUNet | None:
    """A U-Net weights file (what get_segmenter caches and weights/ holds) loaded with weights_only=True, or
    None if the file is something else (nothing in it is run either way)."""
    if is_program_archive(path):
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - not a weights file: TorchScript, a pickle of objects, text...
        return None
    if not (isinstance(blob, dict) and {"state_dict", "label_nc", "config"} <= set(blob)):
        return None
    try:
        net = SegUNet(int(blob["label_nc"]), int(blob["config"]["width"]))
        net.load_state_dict(blob["state_dict"])
    except (RuntimeError, KeyError, TypeError, ValueError) as err:
        reason = (str(err).splitlines() or [""])[0]
        raise ValueError(f"{path}: a segmenter weights file that does not fit the U-Net ({reason})") from None
    return net.eval()


class TorchScriptSegmenter(nn.Module):
    """A user's TorchScript (or torch.export .pt2) segmenter: images in [-1, 1] -> logits (B, >= label_nc,
    h, w), cut to label_nc and resized to the image here. Loading such a file runs code stored in it (a .pt2
    is partly unpickled), so it is only done when the user says they trust the file (--trust-segmenter)."""

    def __init__(self, path: str | os.PathLike, label_nc: int):
        super().__init__()
        with warnings.catch_warnings():  # TorchScript is deprecated upstream but still the common export
            warnings.simplefilter("ignore", FutureWarning)
            try:
                if str(path).endswith(".pt2"):
                    self.net = torch.export.load(str(path)).module()
                else:
                    self.net = torch.jit.load(str(path), map_location="cpu").eval()
            except Exception as err:  # noqa: BLE001 - any failure of a foreign file: one line
                reason = (str(err).splitlines() or [""])[0][:200]
                raise ValueError(f"--segmenter {path}: not a loadable TorchScript / torch.export file "
                                 f"({type(err).__name__}: {reason})") from None
        self.label_nc = label_nc
        self.has_features = hasattr(self.net, "features")

    def forward(self, x):
        logits = self.net(x)
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        if logits.dim() != 4 or logits.shape[1] < self.label_nc:
            raise ValueError(f"the TorchScript segmenter must return (B, >= {self.label_nc}, h, w) logits, "
                             f"got {tuple(logits.shape)}")
        return F.interpolate(logits[:, : self.label_nc], size=x.shape[-2:], mode="bilinear",
                             align_corners=False)

    def features(self, x):
        if self.has_features:
            return self.net.features(x)
        # no exported features: spatially pooled class probabilities (label_nc dims)
        return self.forward(x).softmax(1).mean(dim=(2, 3))


def user_segmenter(path: str, label_nc: int, trust: bool = False) -> tuple[nn.Module, str]:
    """--segmenter FILE: U-Net weights (loaded safely) or, trusted, a TorchScript / torch.export program."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"--segmenter {path} does not exist")
    net = load_unet_weights(path)
    if net is not None:
        if net.head.out_channels != label_nc:
            raise ValueError(f"--segmenter {path}: a U-Net of {net.head.out_channels} classes, the dataset "
                             f"has {label_nc}")
        return net, f"U-Net weights {path}"
    if not trust:
        raise ValueError(f"--segmenter {path} is not a U-Net weights file (as `evaluate.py segmenter` "
                         "writes to data_cache/segmenters/). If it is a TorchScript or torch.export program, "
                         "loading it runs the code stored in it: pass --trust-segmenter if you trust it")
    return TorchScriptSegmenter(path, label_nc), f"TorchScript {path}"


def evaluation_segmenter(user_file: str | None, dataset: str, dataroot, size: tuple[int, int], info,
                         seed: int, cfg: SegmenterConfig, cache_dir, device: str, log=print,
                         retrain: bool = False, trust: bool = False):
    """(segmenter, description): the user's file if given (see user_segmenter), else the committed or
    cached U-Net of the dataset (trained on first use)."""
    if user_file:
        net, desc = user_segmenter(user_file, info.label_nc, trust)
        return net.to(device), desc
    net = get_segmenter(dataset, size, info,
                        lambda: data.build_split(dataset, dataroot, "train", size, seed=seed),
                        cfg, cache_dir, device, log, retrain)
    return net, f"U-Net (width {cfg.width}, {cfg.steps} steps) trained on the real training images"


# --- 5. The evaluation protocol -----------------------------------------------------------------------------


@dataclass
class MetricsArgs:
    """``python evaluate.py metrics``: one comparison table for one or more checkpoints of one dataset."""

    ckpt: list[str]
    """checkpoints written by train.py, or run folders (all of the same dataset and size)"""
    dataset: str = ""
    """check that the checkpoints were trained on this dataset (default: theirs)"""
    dataroot: str = ""
    """dataset folder (default: the one stored in the checkpoint)"""
    n_eval: int = 500
    """validation images synthesized and scored (fewer if the split is smaller)"""
    batch_size: int = 16
    """images per forward pass"""
    n_samples: int = 4
    """samples per label map for the diversity score"""
    n_diversity: int = 32
    """label maps used for the diversity score"""
    n_transfer: int = 64
    """image pairs (A, B) for per-region style transfer (synthetic dataset, SEAN)"""
    segmenter: str = ""
    """segmenter instead of the committed / cached U-Net: a U-Net weights file (safe), or a TorchScript /
    torch.export program (images in [-1, 1] -> logits), whose code runs when loaded (--trust-segmenter)"""
    trust_segmenter: bool = False
    """allow --segmenter to be a TorchScript / torch.export program file (its code runs when loaded)"""
    seg_steps: int = SegmenterConfig.steps
    """training steps of the cached U-Net segmenter"""
    cache_dir: str = str(DEFAULT_CACHE)
    """where trained segmenters are cached"""
    inception_weights: str = ""
    """pt_inception-2015-12-05-6726825d.pth (default: torch hub's checkpoint cache, else download)"""
    download: bool = True
    """try one download of the Inception weights if torch hub's cache lacks them (--no-download: never)"""
    out: str = ""
    """folder for metrics.md and metrics.json (default: print only)"""
    device: str = "cpu"
    """torch device"""
    seed: int = 0
    """seed of z samples, generator noise and pair choice"""
    over_seeds: bool = False
    """also a table of mean ± standard deviation over the checkpoints that differ only in their --seed"""


class FeatureExtractor:
    """Features for the Frechet distance: Inception pool3 when its weights are available, else the
    segmenter's (then named FALLBACK_NAME, never FID)."""

    def __init__(self, segmenter, weights: str | None, download: bool, device: str, log=print):
        self.device, self.segmenter = device, segmenter
        path, why = find_inception_weights(weights, download=download)
        if path is None:
            self.net, self.name = None, FALLBACK_NAME
            hub = data.shown(Path(torch.hub.get_dir()) / "checkpoints")
            self.note = (f"Inception weights {FID_WEIGHTS_NAME} not found ({why}; pass --inception-weights "
                         f"or put the file in {hub}): the Frechet distance is computed on the evaluation "
                         "segmenter's pooled bottleneck features instead. It is NOT comparable to published "
                         "Inception-based scores.")
        else:
            net, self.note = load_fid_inception(path)
            self.net, self.name = net.to(device), "FID"
        if self.note:
            log("[evaluate] " + self.note)

    @torch.no_grad()
    def __call__(self, images01: torch.Tensor) -> torch.Tensor:
        """(B, D) features of images in [0, 1] (Inception resizes and rescales them itself)."""
        if self.net is not None:
            return self.net(images01.float().to(self.device))[0].flatten(1).cpu()
        return self.segmenter.features((images01 * 2 - 1).to(self.device)).double().cpu()


def _label_ignore(info) -> int | None:
    return info.dontcare_label if getattr(info, "contain_dontcare", False) else None


@torch.no_grad()
def _confusion(segmenter, images01: torch.Tensor, label: torch.Tensor, info, device: str) -> torch.Tensor:
    """Confusion matrix of the segmenter's prediction on images in [0, 1] against the label maps."""
    pred = segmenter((images01 * 2 - 1).to(device)).argmax(1).cpu()
    return confusion_matrix(pred, label, info.label_nc, _label_ignore(info))


@torch.no_grad()
def evaluate_real(val_set, info, n: int, segmenter, features: FeatureExtractor | None,
                  args: MetricsArgs) -> dict:
    """The "ground truth" row: the segmenter on the real validation images, and their features (if asked)."""
    conf = torch.zeros(info.label_nc, info.label_nc, dtype=torch.long)
    feats = []
    for batch in data.batches(val_set, n, args.batch_size):
        real = data.quantize_png(batch["image"])
        conf += _confusion(segmenter, real, batch["label"], info, args.device)
        if features is not None:
            feats.append(features(real))
    return {"seg": miou_and_accuracy(conf), "features": torch.cat(feats) if feats else None}


@torch.no_grad()
def synthesis_scores(lm: models.LoadedModel, val_set, n: int, segmenter, features: FeatureExtractor,
                     real_features,
                     args: MetricsArgs, gen: torch.Generator) -> dict:
    """mIoU/accuracy and Frechet distance of images synthesized from the first n validation label maps, and
    PSNR/SSIM/RMSE of their reconstruction for models with a style input."""
    torch.manual_seed(args.seed)  # generator noise (SEAN) reproducible
    conf = torch.zeros(lm.info.label_nc, lm.info.label_nc, dtype=torch.long)
    feats, rec = [], {"psnr": [], "ssim": [], "rmse": []}
    for batch in data.batches(val_set, n, args.batch_size):
        segmap = lm.segmap(batch["label"], batch.get("instance")).to(args.device)
        image = batch["image"].to(args.device)
        # the papers' setting: SEAN takes the real image's style (its test protocol), SPADE+VAE a random z
        style = image if lm.model == "sean" else None
        fake = data.quantize_png(lm.generate(segmap, image=style, generator=gen).cpu())
        conf += _confusion(segmenter, fake, batch["label"], lm.info, args.device)
        feats.append(features(fake))
        if lm.has_style:
            recon = fake if lm.model == "sean" else data.quantize_png(lm.generate(segmap, image=image).cpu())
            real = data.quantize_png(batch["image"])
            for key, metric in (("psnr", psnr), ("ssim", ssim), ("rmse", rmse)):
                rec[key].append(metric(recon, real))
    result = {"name": lm.name, "checkpoint": data.shown(lm.path), "model": lm.model, "vae": lm.use_vae,
              **miou_and_accuracy(conf),
              "frechet": frechet_distance_features(real_features, torch.cat(feats))}
    return result | {k: float(torch.cat(v).mean()) if v else None for k, v in rec.items()}


@torch.no_grad()
def _diversity(lm: models.LoadedModel, val_set, n: int, args: MetricsArgs, gen: torch.Generator,
               lpips=None) -> dict:
    """Pairwise L1, MS-SSIM and LPIPS of ``n_samples`` samples per label map; None for models without a
    latent to sample (all but SPADE+VAE map their inputs to one image)."""
    scores = {"diversity": [], "diversity_ms_ssim": [], "diversity_lpips": []}
    if lm.use_vae and args.n_samples >= 2 and n > 0:
        for batch in data.batches(val_set, n, args.batch_size):
            segmap = lm.segmap(batch["label"], batch.get("instance")).to(args.device)
            samples = torch.stack([data.quantize_png(lm.generate(segmap, generator=gen).cpu())
                                   for _ in range(args.n_samples)], 1)  # (B, S, 3, H, W)
            for one in samples:
                scores["diversity"].append(mean_pairwise_l1(one))
                scores["diversity_ms_ssim"].append(mean_pairwise_ms_ssim(one))
                if lpips is not None:
                    scores["diversity_lpips"].append(mean_pairwise_lpips(one.to(args.device), lpips))
    return {k: float(np.mean(v)) if v else None for k, v in scores.items()}


@torch.no_grad()
def _transfer_pair(lm: models.LoadedModel, val_set, i: int, j: int, min_area: float, dev: str,
                   s: dict[str, list]) -> None:
    """region_transfer for one pair (A = val_set[i], B = val_set[j]): appends each class's scores to s."""
    a, b, K = val_set[i], val_set[j], lm.info.label_nc

    def colours(image, label):  # (K, 3) mean colour of each class region, 0 for absent classes
        return data.region_mean_colours(image[None].double(), label[None], K)[0][0]

    area_a, area_b = (torch.bincount(x["label"].flatten().clamp(0, K), minlength=K + 1)[:K]
                      / x["label"].numel() for x in (a, b))
    classes = [k for k in range(K) if area_a[k] >= min_area and area_b[k] >= min_area]
    if not classes:
        return
    codes_a, codes_b = (lm.style_codes(x["image"][None], x["label"], x.get("instance")) for x in (a, b))
    seg_a = lm.segmap(a["label"], a.get("instance")).to(dev)
    recon = data.quantize_png(lm.generate(seg_a, style_codes=codes_a).cpu())[0]
    codes = torch.cat([models.with_region_style(codes_a, codes_b, k) for k in classes])
    outs = data.quantize_png(lm.generate(seg_a.repeat(len(classes), 1, 1, 1), style_codes=codes).cpu())
    col_a, col_b = (colours(data.quantize_png(x["image"]), x["label"]) for x in (a, b))
    col_rec = colours(recon, a["label"])
    for row, k in enumerate(classes):
        col_out = colours(outs[row], a["label"])
        d_b, d_a = (col_out[k] - col_b[k]).norm(), (col_out[k] - col_a[k]).norm()
        s["to_b"].append(float(d_b))
        s["to_b_before"].append(float((col_rec[k] - col_b[k]).norm()))
        s["success"].append(float(d_b < d_a))
        s["gap"].append(float((col_a[k] - col_b[k]).norm()))
        rest = [c for c in range(K) if c != k and area_a[c] > 0]
        if rest:
            s["others"].append(float((col_out[rest] - col_rec[rest]).norm(dim=1).mean()))
        if hasattr(val_set, "render") and "style" in a:
            style = a["style"].clone()
            style[k] = b["style"][k]
            target = data.quantize_png(val_set.render(i, style.numpy(), a["label"].numpy()))[None]
            s["gt_rmse"].append(float(rmse(outs[row][None], target)))
            s["gt_rmse_before"].append(float(rmse(recon[None], target)))


def region_transfer(lm: models.LoadedModel, val_set, n_pairs: int, args: MetricsArgs,
                    min_area: float = 0.05) -> dict:
    """SEAN per-region style transfer on the synthetic landscapes. For pairs (A, B) and each class k covering
    >= min_area of both, A's code of class k is replaced by B's. The dataset draws each region's palette
    independently, so region k should take B's mean colour (``transfer_to_B``, ``transfer_success``: closer
    to B than to A) while A's other regions keep theirs (``transfer_others_change``); ``transfer_gt_rmse``
    compares with the dataset's exact rendering of A with B's style row k. ``*_before``: the untransferred
    reconstruction of A, the baseline. ``transfer_gap_success``: per case, (|A's - B's region colour|,
    success), to see how success depends on how different the two regions are."""
    no_transfer = {"transfer_to_B": None, "transfer_success": None, "transfer_others_change": None}
    if lm.model != "sean" or lm.dataset != "synthetic":
        return no_transfer
    half = min(len(val_set), 2 * n_pairs) // 2
    torch.manual_seed(args.seed)
    s = {k: [] for k in ("to_b", "to_b_before", "success", "others", "gt_rmse", "gt_rmse_before", "gap")}
    for i in range(half):
        _transfer_pair(lm, val_set, i, i + half, min_area, args.device, s)
    if not s["to_b"]:
        return no_transfer
    mean = {k: float(np.mean(v)) if v else None for k, v in s.items()}
    return {"transfer_to_B": mean["to_b"], "transfer_to_B_before": mean["to_b_before"],
            "transfer_success": mean["success"], "transfer_others_change": mean["others"],
            "transfer_cases": len(s["to_b"]), "transfer_gt_rmse": mean["gt_rmse"],
            "transfer_gt_rmse_before": mean["gt_rmse_before"],
            "transfer_gap_success": list(zip(s["gap"], s["success"], strict=True))}


def _fmt(value, digits: int, scale: float = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{scale * value:.{digits}f}"


def markdown_table(real: dict, rows: list[dict], fd_name: str, notes: list[str]) -> str:
    """The paper-style comparison table (SPADE Table 1 / SEAN Tables 1-2 columns, plus this project's)."""
    columns = [("mIoU ↑", "miou", 1), ("accu ↑", "accuracy", 1), (f"{fd_name} ↓", "frechet", 2),
               ("PSNR ↑", "psnr", 2), ("SSIM ↑", "ssim", 3), ("RMSE ↓", "rmse", 3),
               ("diversity ↑", "diversity", 3), ("MS-SSIM ↓", "diversity_ms_ssim", 3),
               ("LPIPS ↑", "diversity_lpips", 3), ("region→B ↓", "transfer_to_B", 3),
               ("transfer success ↑", "transfer_success", 2),
               ("other regions Δ ↓", "transfer_others_change", 3),
               ("transfer RMSE vs GT ↓", "transfer_gt_rmse", 3)]
    head = ["Method"] + [title for title, _, _ in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    gt = {"name": "ground truth (real images)"} | real["seg"]
    for r in [gt] + rows:
        cells = [r["name"]]
        for _, key, digits in columns:
            scale = 100 if key in ("miou", "accuracy") else 1
            std = f" ± {_fmt(r[key + '_std'], digits, scale)}" if key + "_std" in r else ""
            cells.append(_fmt(r.get(key), digits, scale) + std)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + [""] + [f"- {n}" for n in notes]) + "\n"


# Run settings that do not change what is trained (besides the seed, which is what varies across a group).
NOT_TRAINING = ("seed", "name", "out_dir", "resume", "threads", "progress", "device", "num_workers",
                "log_every", "sample_every", "save_every", "keep_checkpoints", "overwrite")


def over_seeds(loaded: list[models.LoadedModel], rows: list[dict]) -> list[dict]:
    """One row per group of checkpoints that differ only in --seed (same step): every finite metric as its
    mean, and its sample standard deviation under key + "_std"."""
    groups: dict[str, list] = {}
    for lm, row in zip(loaded, rows, strict=True):
        setting = {k: v for k, v in lm.config.items() if k not in NOT_TRAINING}
        groups.setdefault(json.dumps(setting, sort_keys=True, default=str) + Path(lm.path).name, []).append(
            (lm, row))
    # a group's label names the settings in which the groups differ (beyond the model), e.g. --bf16 on / off
    settings = [{k: v for k, v in m[0][0].config.items() if k not in NOT_TRAINING} for m in groups.values()]
    differ = sorted(k for k in set().union(*settings) if k not in ("model", "vae")
                    and len({json.dumps(s.get(k), default=str) for s in settings}) > 1)
    out = []
    for members, setting in zip(groups.values(), settings, strict=True):
        lm = members[0][0]
        seeds = ", ".join(str(m.seed) for m, _ in members)
        flags = "".join(f"--{k.replace('_', '-')} {setting.get(k)}, " for k in differ)
        name = f"{lm.model}{'+VAE' if lm.use_vae else ''} ({Path(lm.path).name}, {flags}seeds {seeds})"
        agg = {"name": name, "n_seeds": len(members)}
        for key in members[0][1]:
            values = [r.get(key) for _, r in members]
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                   for v in values):
                agg[key] = statistics.mean(values)
                agg[key + "_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        out.append(agg)
    return out


def _jsonable(obj):
    """NaN / inf (undefined IoU of absent classes, PSNR of identical images) -> null: strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def _table_models(args: MetricsArgs) -> list[models.LoadedModel]:
    """The checkpoints of one table: all of one dataset, size and label count."""
    if not args.ckpt:
        raise ValueError("metrics needs at least one --ckpt")
    loaded = [sample.load_generator(p, args.device) for p in args.ckpt]
    first = loaded[0]
    for lm in loaded:
        if args.dataset and lm.dataset != args.dataset:
            raise ValueError(f"{lm.path} was trained on '{lm.dataset}', not on --dataset {args.dataset}")
        if (lm.dataset, lm.size, lm.info.label_nc) != (first.dataset, first.size, first.info.label_nc):
            raise ValueError(f"checkpoints of different datasets cannot share a table: {first.path} is "
                             f"{first.dataset} {first.size} with {first.info.label_nc} labels, {lm.path} is "
                             f"{lm.dataset} {lm.size} with {lm.info.label_nc} labels")
    return loaded


def _table_notes(first: models.LoadedModel, n: int, seg_desc: str, features: FeatureExtractor,
                 args: MetricsArgs) -> list[str]:
    fd_note = features.note
    if features.net is not None:
        fd_note = (f"FID: Frechet distance of Inception-v3 pool3 features ({FID_RESIZE}x{FID_RESIZE} "
                   f"bilinear), {n} vs {n} images. {features.note}").strip()
    return [
        f"{first.dataset} validation split, {n} images at {first.size[0]}x{first.size[1]}; images quantized "
        "to uint8 (PNG) before every metric.",
        f"mIoU / accuracy (%): segmenter = {seg_desc}; don't-care pixels ignored; classes absent from both "
        "prediction and ground truth left out of the mean. Ground truth row = the segmenter on real images.",
        fd_note,
        "PSNR (dB) / SSIM / RMSE ([0, 1] units): regenerated from the image's own style (SEAN style codes, "
        "SPADE+VAE encoder mean); n/a for models without a style input. SEAN's synthesis rows also use the "
        "real image's style, as its paper's test protocol.",
        f"diversity: mean pairwise L1 ([0, 1] units), MS-SSIM (lower = more diverse; fewer scales below "
        f"176 pixels) and LPIPS (AlexNet; n/a without its ImageNet weights) of {args.n_samples} random-z "
        "samples per label map (SPADE+VAE only; the other models are deterministic given their inputs).",
        "region transfer (synthetic, SEAN only; SPADE+VAE has one global code: n/a): RGB distance of the "
        "transferred region's mean colour to B's region, fraction closer to B than to A, colour change of "
        "A's other regions, RMSE against the dataset's exact rendering of A with B's style for that region."]


def run_metrics(args: MetricsArgs, log=print) -> dict:
    """Evaluate every checkpoint of ``args.ckpt`` on one validation set; returns the JSON-able result."""
    torch.manual_seed(args.seed)
    loaded = _table_models(args)
    first, dataroot = loaded[0], args.dataroot or loaded[0].dataroot
    val_set = data.build_split(first.dataset, dataroot, "val", first.size,
                               length=max(args.n_eval, 2 * args.n_transfer), seed=first.seed)
    n = min(len(val_set), args.n_eval)
    if n < 2:
        raise ValueError(f"the {first.dataset} validation split has {len(val_set)} images; 2 are needed")
    segmenter, seg_desc = evaluation_segmenter(args.segmenter, first.dataset, dataroot, first.size,
                                               first.info, first.seed, SegmenterConfig(steps=args.seg_steps),
                                               args.cache_dir, args.device, log,
                                               trust=args.trust_segmenter)
    features = FeatureExtractor(segmenter, args.inception_weights, args.download, args.device, log)
    log(f"[evaluate] real validation images: {n}")
    real = evaluate_real(val_set, first.info, n, segmenter, features, args)
    lpips = load_lpips(args.device, log) if any(lm.use_vae for lm in loaded) else None
    rows = []
    for lm in loaded:
        log(f"[evaluate] {lm.name}")
        gen = torch.Generator().manual_seed(args.seed)
        row = synthesis_scores(lm, val_set, n, segmenter, features, real["features"], args, gen)
        row |= _diversity(lm, val_set, min(n, args.n_diversity), args, gen, lpips)
        rows.append(row | region_transfer(lm, val_set, args.n_transfer, args))
    notes = _table_notes(first, n, seg_desc, features, args)
    fd_features = "inception_pool3" if features.net is not None else "segmenter_bottleneck"
    result = {"protocol": {"dataset": first.dataset, "size": list(first.size), "n_images": n,
                           "frechet_name": features.name, "frechet_features": fd_features,
                           "inception_resize": FID_RESIZE, "quantization": "uint8 PNG", "segmenter": seg_desc,
                           "seed": args.seed},
              "ground_truth": {k: real["seg"][k] for k in ("miou", "accuracy", "iou_per_class")},
              "rows": rows, "notes": notes, "markdown": markdown_table(real, rows, features.name, notes)}
    if args.over_seeds:
        result["seed_rows"] = over_seeds(loaded, rows)
        result["markdown"] += ("\n**Mean ± standard deviation over seeds**\n\n" + markdown_table(
            real, result["seed_rows"], features.name, ["sample standard deviation over the checkpoints that "
                                                       "differ only in --seed (the same step)"]))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "metrics.md").write_text(result["markdown"])
        (Path(args.out) / "metrics.json").write_text(json.dumps(_jsonable(result), indent=2, allow_nan=False))
    return result


class TrainingEvaluator:
    """train.py --eval-every: mIoU / accuracy and Frechet distance of the generator being trained, on a fixed
    validation subset, with the segmenter and features of ``metrics`` (Inception's only when the file is
    already present). The real side is computed once; each call is one synthesis pass."""

    def __init__(self, config: dict, n: int, segmenter: str | None = None, device: str = "cpu", log=print,
                 trust: bool = False):
        self.config, self.size = dict(config), models.config_size(config)
        dataset, dataroot, seed = config["dataset"], config.get("dataroot") or None, config["seed"]
        self.val_set = data.build_split(dataset, dataroot, "val", self.size, length=n, seed=seed)
        self.n = min(n, len(self.val_set))
        self.info = self.val_set.info
        self.metrics = MetricsArgs(ckpt=[], device=device, seed=seed)
        self.segmenter, _ = evaluation_segmenter(segmenter, dataset, dataroot, self.size, self.info, seed,
                                                 SegmenterConfig(), DEFAULT_CACHE, device, log,
                                                 trust=trust)
        self.features = FeatureExtractor(self.segmenter, None, False, device, log)
        self.real = evaluate_real(self.val_set, self.info, self.n, self.segmenter, self.features,
                                  self.metrics)
        self.frechet_name = self.features.name

    @torch.no_grad()
    def __call__(self, G: nn.Module, E: nn.Module | None) -> dict:
        """Scores of G (and E) as they are now: eval mode inside, the callers' mode and RNG left as found."""
        lm = models.LoadedModel.from_run("(training)", self.config["name"], self.config, G, E, self.info)
        modes = [(m, m.training) for m in (G, E) if m is not None]
        dev = next(G.parameters()).device
        with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
            for m, _ in modes:
                m.eval()
            try:
                row = synthesis_scores(lm, self.val_set, self.n, self.segmenter, self.features,
                                       self.real["features"], self.metrics,
                                       torch.Generator().manual_seed(self.config["seed"]))
            finally:
                for m, mode in modes:
                    m.train(mode)
        return {"miou": row["miou"], "accuracy": row["accuracy"], "frechet": row["frechet"]}


# --- 7. README figures: a side-by-side comparison and a SEAN per-region transfer grid -----------------------


def _save_grid(rows: list[list], titles: list[str], out: str | os.PathLike, cell_titles: dict | None = None,
               row_labels: list[str] | None = None) -> Path:
    """A grid of panels saved as a PNG at 120 dpi, 64-pixel images shown at 156 pixels. A panel is a (3, H, W)
    image (float in [0, 1] or uint8), an (H, W) map (drawn with the magma colour map from 0 to 0.5: a
    difference |x - y| in [0, 1] RGB units) or None (left blank). Titles along the top row, cell_titles
    {(row, column): title} under others, row_labels on the left."""
    fig = Figure(figsize=(1.3 * len(titles) + (0.3 if row_labels else 0), 1.45 * len(rows) + 0.3))
    axes = fig.subplots(len(rows), len(titles), squeeze=False)
    for r, row in enumerate(rows):
        for c in range(len(titles)):
            img, ax = row[c] if c < len(row) else None, axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if img is None:
                ax.axis("off")
            elif img.dim() == 2:
                ax.imshow(img.numpy(), cmap="magma", vmin=0, vmax=0.5, interpolation="nearest")
            else:
                img = img.float() / 255 if img.dtype == torch.uint8 else img
                ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
        if row_labels:
            axes[r, 0].set_ylabel(row_labels[r], fontsize=9)
    for c, title in enumerate(titles):
        axes[0, c].set_title(title, fontsize=9)
    for (r, c), title in (cell_titles or {}).items():
        axes[r, c].set_title(title, fontsize=9)
    fig.tight_layout(pad=0.3)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    return Path(out)


@torch.no_grad()
def comparison_figure(ckpts: list[str], out: str | os.PathLike, n: int = 6, titles: list[str] | None = None,
                      device: str = "cpu") -> Path:
    """Rows: validation label maps; columns: label | one output per checkpoint | real image. SEAN takes the
    real image's style (as in its paper), SPADE+VAE a fixed random z (seed 0)."""
    loaded = [sample.load_generator(c, device) for c in ckpts]
    first = loaded[0]
    for lm in loaded[1:]:
        if (lm.dataset, lm.size, lm.semantic_nc) != (first.dataset, first.size, first.semantic_nc):
            raise ValueError(f"{lm.path} and {first.path} were trained on different data")
    val = data.build_split(first.dataset, first.dataroot, "val", first.size, length=n, seed=first.seed)
    batch = next(data.batches(val, n, n))
    colours = data.dataset_palette(first.info.name, first.info.label_nc)
    columns = [[data.colorize(label, colours) for label in batch["label"]]]
    for lm in loaded:
        seg = lm.segmap(batch["label"], batch.get("instance")).to(device)
        image = batch["image"].to(device) if lm.model == "sean" else None
        fake = lm.generate(seg, image=image, generator=torch.Generator().manual_seed(0))
        columns.append(data.quantize_png(fake.cpu()))
    columns.append(data.quantize_png(batch["image"]))
    titles = titles or [lm.name.split(" (")[0] for lm in loaded]
    return _save_grid([list(row) for row in zip(*columns, strict=True)], ["label"] + titles + ["real"], out)


def contrasting_pairs(val_set, class_ids: list[int], n: int, min_gap: float = 0.3) -> list[tuple[int, int]]:
    """n pairs (A, B) of validation images, each image used once, where every class of class_ids is present in
    both and its region's mean colour differs between A and B by at least min_gap ([0, 1] RGB, the colour gap
    of region_transfer): a transfer then has a visible difference to show."""
    K = val_set.info.label_nc
    present = [i for i in range(len(val_set)) if all((val_set[i]["label"] == k).any() for k in class_ids)]
    colours = {i: data.region_mean_colours(data.quantize_png(val_set[i]["image"])[None].double(),
                                           val_set[i]["label"][None], K)[0][0] for i in present}
    pairs, used = [], set()
    for a in present:
        for b in present:
            if a in used or b in used or a == b:
                continue
            if all((colours[a][k] - colours[b][k]).norm() >= min_gap for k in class_ids):
                pairs.append((a, b))
                used |= {a, b}
                break
        if len(pairs) == n:
            return pairs
    raise ValueError(f"fewer than {n} validation pairs show all of the classes with colours {min_gap} apart")


@torch.no_grad()
def transfer_figure(ckpt: str, out: str | os.PathLike, n: int = 3, classes: tuple[str, ...] = ("sky", "water",
                    "grass", "mountain"), device: str = "cpu", min_gap: float = 0.3) -> Path:
    """SEAN per-region style transfer: per pair (A, B) of validation images (contrasting_pairs: each shown
    region's colour differs by >= min_gap), a row of A, B, A from its own style codes, and A with one class's
    code taken from B; under it A's label map and |A with B's class - A own style| (mean over RGB), titled
    with the share of that difference inside the class's region: only that region changes."""
    lm = sample.load_generator(ckpt, device)
    if lm.model != "sean":
        raise ValueError(f"{ckpt} is a {lm.model} checkpoint; per-region transfer needs SEAN")
    val = data.build_split(lm.dataset, lm.dataroot, "val", lm.size, length=400, seed=lm.seed)
    ids = [sample.class_id(c, lm.info) for c in classes]
    palette = data.dataset_palette(lm.info.name, lm.info.label_nc)
    rows, cell_titles, labels = [], {}, []
    for a_i, b_i in contrasting_pairs(val, ids, n, min_gap):
        a, b = val[a_i], val[b_i]
        codes_a, codes_b = (lm.style_codes(x["image"][None], x["label"][None]) for x in (a, b))
        seg_a = lm.segmap(a["label"][None]).to(device)
        outs = []
        for codes in [codes_a] + [models.with_region_style(codes_a, codes_b, k) for k in ids]:
            with torch.random.fork_rng():  # the same noise draw for every image: |Δ| is the style's doing
                torch.manual_seed(0)
                outs.append(data.quantize_png(lm.generate(seg_a, style_codes=codes).cpu())[0])
        diffs = [(o - outs[0]).abs().mean(0) for o in outs[1:]]
        r = len(rows) + 1
        for c, (k, d) in enumerate(zip(ids, diffs, strict=True)):
            inside = 100 * d[a["label"] == k].sum() / d.sum().clamp_min(1e-12)
            cell_titles[(r, 3 + c)] = f"|Δ|: {inside:.0f}% in {lm.info.class_names[k]}"
        rows.append([data.quantize_png(a["image"]), data.quantize_png(b["image"])] + list(outs))
        rows.append([data.colorize(a["label"], palette), data.colorize(b["label"], palette), None] + diffs)
        labels += [f"pair {a_i}/{b_i}", "labels, |Δ|"]
    return _save_grid(rows, ["A", "B", "A, own style"] + [f"A, {c} of B" for c in classes], out, cell_titles,
                      labels)


@torch.no_grad()
def samples_figure(ckpt: str, out: str | os.PathLike, n: int = 4, n_samples: int = 5,
                   device: str = "cpu") -> Path:
    """SPADE+VAE multi-modal synthesis: rows are validation label maps; columns show the label map, the real
    image, its reconstruction from z = mu(x), then n_samples images from z ~ N(0, I) (seed 0)."""
    lm = sample.load_generator(ckpt, device)
    if not lm.use_vae:
        raise ValueError(f"{ckpt} is a {lm.model} checkpoint without the VAE; samples need SPADE+VAE")
    val = data.build_split(lm.dataset, lm.dataroot, "val", lm.size, length=n, seed=lm.seed)
    batch = next(data.batches(val, n, n))
    seg = lm.segmap(batch["label"], batch.get("instance")).to(device)
    gen = torch.Generator().manual_seed(0)
    columns = [[data.colorize(label, data.dataset_palette(lm.info.name, lm.info.label_nc))
                for label in batch["label"]], data.quantize_png(batch["image"]),
               data.quantize_png(lm.generate(seg, image=batch["image"].to(device)).cpu())]
    columns += [data.quantize_png(lm.generate(seg, generator=gen).cpu()) for _ in range(n_samples)]
    titles = ["label", "real", "z = mu(real)"] + [f"z ~ N(0, I) #{i + 1}" for i in range(n_samples)]
    return _save_grid([list(row) for row in zip(*columns, strict=True)], titles, out)


# --- 8. Command line ----------------------------------------------------------------------------------------


def segmenter_command(ns: argparse.Namespace) -> None:
    """``python evaluate.py segmenter``: train (or load) the cached segmenter and score the real images."""
    size = (ns.size[0], ns.size[-1])
    val = data.build_split(ns.dataset, ns.dataroot, "val", size, length=ns.n_eval)
    net, _ = evaluation_segmenter(None, ns.dataset, ns.dataroot, size, val.info, 0,
                                  SegmenterConfig(steps=ns.seg_steps), ns.cache_dir, ns.device,
                                  retrain=ns.retrain)
    n = min(len(val), ns.n_eval)
    score = evaluate_real(val, val.info, n, net, None, MetricsArgs(ckpt=[], device=ns.device))["seg"]
    print(f"real {ns.dataset} validation images ({n}): mIoU {100 * score['miou']:.1f}  "
          f"accuracy {100 * score['accuracy']:.1f}")
    if ns.export:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.script(net.cpu()).save(ns.export)
        print(f"TorchScript segmenter written to {ns.export}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sample.add_dataclass_args(sub.add_parser("metrics", help="evaluation table of one or more checkpoints"),
                              MetricsArgs)
    fig = sub.add_parser("figures", help="README figures: model comparison, SEAN region transfer, "
                                         "SPADE+VAE samples")
    fig.add_argument("--ckpt", nargs="+", required=True, help="checkpoints or run folders, one column each")
    fig.add_argument("--titles", nargs="+", default=None, help="column titles (default: model names)")
    fig.add_argument("--sean", default=None, help="SEAN checkpoint for the region-transfer figure")
    fig.add_argument("--vae", default=None, help="SPADE+VAE checkpoint for the multi-modal samples figure")
    fig.add_argument("--out", default="assets", help="output folder (default: assets)")
    fig.add_argument("--n", type=int, default=6, help="rows of the comparison figure (default: 6)")
    fig.add_argument("--name", default="comparison.png", help="file name of the comparison figure in --out "
                                                              "(default: comparison.png)")
    seg = sub.add_parser("segmenter", help="train/load the cached evaluation segmenter, score real images")
    seg.add_argument("--dataset", default="synthetic", help="dataset name (default: synthetic)")
    seg.add_argument("--dataroot", default=None, help="dataset folder (real datasets)")
    seg.add_argument("--size", type=int, nargs="+", default=[64], help="H [W] (default: 64)")
    seg.add_argument("--seg-steps", type=int, default=SegmenterConfig.steps, help="training steps")
    seg.add_argument("--n-eval", type=int, default=500, help="validation images scored")
    seg.add_argument("--cache-dir", default=str(DEFAULT_CACHE), help="segmenter cache folder")
    seg.add_argument("--retrain", action="store_true",
                     help="train it even if weights/ or the cache holds one (with --cache-dir weights: "
                          "replace the committed file)")
    seg.add_argument("--export", default=None, help="also write it as TorchScript (usable as --segmenter)")
    seg.add_argument("--device", default="cpu")
    return parser


def check_figure_inputs(ns: argparse.Namespace) -> None:
    """`figures`: everything that can be wrong is found before the first PNG is written."""
    if ns.titles is not None and len(ns.titles) != len(ns.ckpt):
        raise ValueError(f"--titles gives {len(ns.titles)} titles for {len(ns.ckpt)} checkpoints (one each)")
    if ns.n < 1:
        raise ValueError(f"--n {ns.n}: the comparison needs at least one row")
    taken = {"sean_region_transfer.png": ns.sean, "vae_samples.png": ns.vae}
    if Path(ns.name).name != ns.name or not ns.name.lower().endswith(".png") or taken.get(ns.name):
        raise ValueError(f"--name {ns.name!r}: a file name ending in .png, written into --out (not a path, "
                         "not the name of another figure of this command), e.g. ablation.png")
    for flag, path, fits, what in (("--sean", ns.sean, lambda lm: lm.model == "sean", "SEAN"),
                                   ("--vae", ns.vae, lambda lm: lm.use_vae, "SPADE+VAE")):
        if path and not fits(lm := sample.load_generator(path)):
            raise ValueError(f"{flag} {path} is a {lm.model}{' +VAE' if lm.use_vae else ''} checkpoint; "
                             f"{flag} needs {what}")
    if Path(ns.out).exists() and not Path(ns.out).is_dir():
        raise ValueError(f"--out {ns.out} is a file; figures are written into a folder")


def _from_namespace(cls, ns: argparse.Namespace):
    return cls(**{f.name: getattr(ns, f.name) for f in fields(cls)})


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] in (["synthesize"], ["export"]):
        print(f"error: `evaluate.py {argv[0]}` moved to `python sample.py {argv[0]}` (same flags)",
              file=sys.stderr)
        return 2
    ns = build_parser().parse_args(argv)
    try:
        if ns.command == "metrics":
            print(run_metrics(_from_namespace(MetricsArgs, ns))["markdown"])
        elif ns.command == "figures":
            check_figure_inputs(ns)
            print(comparison_figure(ns.ckpt, Path(ns.out) / ns.name, ns.n, ns.titles))
            if ns.sean:
                print(transfer_figure(ns.sean, Path(ns.out) / "sean_region_transfer.png"))
            if ns.vae:
                print(samples_figure(ns.vae, Path(ns.out) / "vae_samples.png"))
        else:
            segmenter_command(ns)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sample.tune_allocator()
    sys.exit(main())
