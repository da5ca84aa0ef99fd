"""Every network of SPADE (Park et al., CVPR 2019, Sec. 3.2-3.3, App. A, Sec. 4 ablations) and SEAN (Zhu et
al., CVPR 2020, Sec. 3.3), at the papers' size by default; the norm layers live in norm.py.

Parameter layouts follow the official code (NVlabs/SPADE, ZPdesu/SEAN), so counts equal the official ones
(`python models.py` prints them next to the papers'). Official quirks: a conv followed by a parameter-free
norm has no bias (the mean subtraction removes it anyway); spectral norm wraps the residual-block convs, the
encoder's convs and the discriminator's middle convs, not the first and last layers of G and D.
"""

import argparse
import ast
import ctypes
import dataclasses
import inspect
import os
import re
import socket
import textwrap
import urllib.parse
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

import norm

__all__ = ["SPADEResBlock", "SPADEGenerator", "ConvEncoder", "StyleEncoder", "SEANGenerator",
           "ConcatGenerator", "CLADEGenerator", "Pix2PixHDGenerator", "NLayerDiscriminator",
           "MultiscaleDiscriminator", "build_generator", "count_parameters", "init_weights"]


# ----------------------------------------------------------------------------------------------------------
# Helpers


def tune_allocator() -> str:
    """Keep glibc's malloc from handing big freed blocks back to the kernel. Every training step frees and
    allocates again tensors of tens of MB (spectral norm's normalized weights, activations); by default glibc
    unmaps each (mmap above 32 MB, heap trimming) and the next step faults the pages back in: 1.2x the step
    time of SPADE at paper width on a CPU (see README, Performance). Same as running with
    GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647. Called by the command
    lines (train.py, evaluate.py, paint.py, bench.py), never on import: a notebook or script that imports the
    modules calls it itself or sets that variable. Freed memory stays with the process (its RSS stays at its
    peak). Left alone where the user chose: GLIBC_TUNABLES naming malloc, or another allocator in LD_PRELOAD
    (jemalloc, tcmalloc). Returns what was done, for the start-of-run line."""
    if "malloc" in os.environ.get("GLIBC_TUNABLES", "") or os.environ.get("LD_PRELOAD"):
        return "allocator as set by GLIBC_TUNABLES / LD_PRELOAD"
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not Linux with glibc (macOS, musl): nothing to tune
        return "allocator default (not glibc)"
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # from glibc's malloc.h
    if mallopt(M_MMAP_MAX, 0) and mallopt(M_TRIM_THRESHOLD, 2**31 - 1):
        return "glibc malloc keeps freed memory (no mmap, no trim)"
    return "allocator default (mallopt refused)"


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (spectral norm's u, v are buffers: not counted, as officially)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def _sn(layer: nn.Module, spectral: bool) -> nn.Module:
    return spectral_norm(layer) if spectral else layer


@torch.no_grad()
def init_weights(module: nn.Module, gain: float = 0.02) -> nn.Module:
    """The official init (xavier, gain 0.02): conv / linear weights xavier_normal (under spectral norm: the
    un-normalized weight, then u, v re-estimated), biases 0; affine batch norms N(1, gain); each slice of
    SEAN's stacked FC as its own Linear. Instance norms, SEAN's scalars, CLADE's tables keep their init."""
    for m in module.modules():
        if isinstance(m, _BatchNorm):
            if m.weight is not None:
                nn.init.normal_(m.weight, 1.0, gain)
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            sn = parametrize.is_parametrized(m, "weight")
            weight = m.parametrizations.weight.original if sn else m.weight
            nn.init.xavier_normal_(weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
            if sn and not weight.is_meta:
                # u, v were estimated for the default init; 15 power iterations, as at registration
                p = m.parametrizations.weight[0]
                p._power_method(p._reshape_weight_to_matrix(weight), 15)
        elif isinstance(m, norm.SEAN):
            for k in range(m.fc_mu_weight.shape[0]):
                nn.init.xavier_normal_(m.fc_mu_weight[k], gain=gain)
            nn.init.zeros_(m.fc_mu_bias)
    return module


# ----------------------------------------------------------------------------------------------------------
# Residual block (SPADE Fig. 4 right, App. A)


class SPADEResBlock(nn.Module):
    """norm -> LeakyReLU(0.2) -> conv3x3, twice, plus a shortcut (norm_s -> conv1x1 without bias when fin !=
    fout), middle width min(fin, fout), spectral norm on all convs. make_norm(nc) builds each norm (default
    norm.SPADE), called as norm(x, segmap, *cond); extra_in: channels a norm adds to its input (Concat)."""

    def __init__(self, fin: int, fout: int, semantic_nc: int, param_free: str = "batch",
                 spectral: bool = True, make_norm: Callable[[int], nn.Module] | None = None,
                 extra_in: int = 0):
        super().__init__()
        if make_norm is None:
            make_norm = lambda nc: norm.SPADE(nc, semantic_nc, param_free=param_free)
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        self.conv_0 = _sn(nn.Conv2d(fin + extra_in, fmiddle, 3, padding=1), spectral)
        self.conv_1 = _sn(nn.Conv2d(fmiddle + extra_in, fout, 3, padding=1), spectral)
        self.norm_0 = make_norm(fin)
        self.norm_1 = make_norm(fmiddle)
        if self.learned_shortcut:
            self.conv_s = _sn(nn.Conv2d(fin + extra_in, fout, 1, bias=False), spectral)
            self.norm_s = make_norm(fin)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor, *cond) -> torch.Tensor:
        # the official shortcut branch has no activation between its norm and conv
        x_s = self.conv_s(self.norm_s(x, segmap, *cond)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, segmap, *cond), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, segmap, *cond), 0.2))
        return x_s + dx


# ----------------------------------------------------------------------------------------------------------
# The SPADE decoder layout, shared by SPADE, SEAN, Concat and CLADE generators

NUM_UPSAMPLING = {"normal": 5, "more": 6, "most": 7}


class _Decoder(nn.Module):
    """fc -> head_0 -> G_middle_0 -> G_middle_1 -> up_0..up_3 (-> up_4) -> LeakyReLU -> conv_img -> tanh,
    widths 16, 16, 16, 8, 4, 2, 1 (x ngf), 2x nearest upsampling before each block but head_0 (and G_middle_1
    in "normal"). It starts at (sh, sw) = (crop / 2^n_up / aspect_ratio, crop / 2^n_up), from z (VAE) or the
    downsampled segmap. make_norm(nc, last) builds the blocks' norms; `last` marks the final block (SEAN)."""

    def __init__(self, semantic_nc: int, ngf: int, crop_size: int, aspect_ratio: float,
                 num_upsampling_layers: str, make_norm: Callable[[int, bool], nn.Module], spectral: bool,
                 extra_in: int = 0, z_dim: int | None = None):
        super().__init__()
        if num_upsampling_layers not in NUM_UPSAMPLING:
            raise ValueError(f"num_upsampling_layers must be one of {list(NUM_UPSAMPLING)}, "
                             f"got {num_upsampling_layers!r}")
        self.semantic_nc, self.ngf, self.z_dim = semantic_nc, ngf, z_dim
        self.num_upsampling_layers = num_upsampling_layers
        n_up = NUM_UPSAMPLING[num_upsampling_layers]
        self.sw = crop_size // 2**n_up
        self.sh = round(self.sw / aspect_ratio)
        if self.sw < 1 or self.sh < 1:
            raise ValueError(f"crop_size={crop_size}, aspect_ratio={aspect_ratio}: too small for "
                             f"{n_up} upsamplings")
        nf = ngf
        if z_dim is not None:  # VAE: z -> (16 ngf, sh, sw); else the segmap at (sh, sw) -> 3x3 conv
            self.fc = nn.Linear(z_dim, 16 * nf * self.sh * self.sw)
        else:
            self.fc = nn.Conv2d(semantic_nc, 16 * nf, 3, padding=1)
        widths = [("head_0", 16, 16), ("G_middle_0", 16, 16), ("G_middle_1", 16, 16),
                  ("up_0", 16, 8), ("up_1", 8, 4), ("up_2", 4, 2), ("up_3", 2, 1)]
        if num_upsampling_layers == "most":
            widths.append(("up_4", 1, 0.5))
        for i, (name, a, b) in enumerate(widths):
            last = i == len(widths) - 1
            self.add_module(name, SPADEResBlock(int(a * nf), int(b * nf), semantic_nc, spectral=spectral,
                                                make_norm=lambda nc, last=last: make_norm(nc, last),
                                                extra_in=extra_in))
        self.block_names = [name for name, _, _ in widths]
        self.conv_img = nn.Conv2d(int(widths[-1][2] * nf), 3, 3, padding=1)

    def start(self, segmap: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        if self.z_dim is None:
            return self.fc(F.interpolate(segmap, size=(self.sh, self.sw), mode="nearest"))
        if z is None:
            z = torch.randn(segmap.shape[0], self.z_dim, device=segmap.device, dtype=segmap.dtype)
        return self.fc(z).view(-1, 16 * self.ngf, self.sh, self.sw)

    def decode(self, x: torch.Tensor, segmap: torch.Tensor, *cond) -> torch.Tensor:
        more = self.num_upsampling_layers in ("more", "most")
        for name in self.block_names:
            if name != "head_0" and not (name == "G_middle_1" and not more):
                x = F.interpolate(x, scale_factor=2, mode="nearest")  # the official nn.Upsample(2)
            x = getattr(self, name)(x, segmap, *cond)
        return torch.tanh(self.conv_img(F.leaky_relu(x, 0.2)))

    def forward(self, segmap: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """segmap (B, semantic_nc, H, W) float, z (B, z_dim) or None -> image (B, 3, sh 2^n, sw 2^n)."""
        return self.decode(self.start(segmap, z), segmap)


class SPADEGenerator(_Decoder):
    """SPADE's generator (Fig. 4 left, App. A) at the paper's defaults. param_free: the norm inside SPADE
    (official: sync batch, "batch" on one process). use_vae: start from z (N(0, I) if not given)."""

    def __init__(self, semantic_nc: int, ngf: int = 64, crop_size: int = 256, aspect_ratio: float = 1.0,
                 num_upsampling_layers: str = "normal", use_vae: bool = False, z_dim: int = 256,
                 param_free: str = "batch", spectral: bool = True, norm_hidden: int = 128):
        super().__init__(semantic_nc, ngf, crop_size, aspect_ratio, num_upsampling_layers,
                         lambda nc, last: norm.SPADE(nc, semantic_nc, norm_hidden, param_free=param_free),
                         spectral,
                         z_dim=z_dim if use_vae else None)
        self.use_vae = use_vae
        init_weights(self)


# ----------------------------------------------------------------------------------------------------------
# SPADE's image encoder for the VAE (App. A, Fig. 14)


class ConvEncoder(nn.Module):
    """Image -> (mu, logvar) of q(z|x): stride-2 3x3 convs (spectral + instance norm, LeakyReLU 0.2), then two
    linear heads on the 4x4 map. Six convs at crop >= 256, five below; the official code always resizes to
    256, which breaks its 4x4 heads with five convs, so the input is resized to 4 * 2^n_convs here."""

    def __init__(self, ngf: int = 64, crop_size: int = 256, z_dim: int = 256, spectral: bool = True):
        super().__init__()
        n_convs = 6 if crop_size >= 256 else 5
        self.input_size = 4 * 2**n_convs
        widths = [3, ngf, 2 * ngf, 4 * ngf, 8 * ngf, 8 * ngf, 8 * ngf][: n_convs + 1]
        self.convs = nn.ModuleList(
            _sn(nn.Conv2d(a, b, 3, stride=2, padding=1, bias=False), spectral) for a, b in pairwise(widths)
        )
        self.norms = nn.ModuleList(nn.InstanceNorm2d(b, affine=False) for b in widths[1:])
        self.fc_mu = nn.Linear(8 * ngf * 4 * 4, z_dim)
        self.fc_var = nn.Linear(8 * ngf * 4 * 4, z_dim)
        init_weights(self)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """image (B, 3, H, W) in [-1, 1] -> mu, logvar, each (B, z_dim)."""
        s = self.input_size
        x = image if image.shape[2:] == (s, s) else F.interpolate(image, size=(s, s), mode="bilinear")
        for conv, inorm in zip(self.convs, self.norms, strict=True):
            x = F.leaky_relu(inorm(conv(x)), 0.2)
        x = x.flatten(1)
        return self.fc_mu(x), self.fc_var(x)


# ----------------------------------------------------------------------------------------------------------
# SEAN (Sec. 3.3, Fig. 4/5): style encoder + SEAN residual blocks


class StyleEncoder(nn.Module):
    """SEAN's style encoder (official 'Zencoder'): a conv encoder-decoder whose output (style_dim channels at
    half resolution) is pooled region by region into the style matrix ST; instance norm + LeakyReLU 0.2."""

    def __init__(self, style_dim: int = 512, nf: int = 32):
        super().__init__()
        self.style_dim = style_dim
        self.model = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(3, nf, 3), nn.InstanceNorm2d(nf), nn.LeakyReLU(0.2),
            nn.Conv2d(nf, 2 * nf, 3, stride=2, padding=1), nn.InstanceNorm2d(2 * nf), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * nf, 4 * nf, 3, stride=2, padding=1), nn.InstanceNorm2d(4 * nf), nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(4 * nf, 8 * nf, 3, stride=2, padding=1, output_padding=1),
            nn.InstanceNorm2d(8 * nf), nn.LeakyReLU(0.2),
            nn.ReflectionPad2d(1), nn.Conv2d(8 * nf, style_dim, 3), nn.Tanh(),
        )

    def forward(self, image: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        """image (B, 3, H, W), segmap (B, K, H', W') region channels -> ST (B, K, style_dim), 0 if absent."""
        features = self.model(image)
        # ST_{:,j} = \frac{1}{|M_j|} \sum_{p \in M_j} F_p   (norm.region_average_pool)
        return norm.region_average_pool(features, segmap)


class SPADEWithNoise(nn.Module):
    """The norm of SEAN's last block (official ACE with use_rgb=False): SPADE after SEAN's noise. Its two
    blending scalars are never read (no gradient); kept only so that the count equals the official one."""

    def __init__(self, norm_nc: int, label_nc: int, param_free: str = "batch", use_noise: bool = True,
                 hidden: int = 128):
        super().__init__()
        self.use_noise = use_noise
        self.spade = norm.SPADE(norm_nc, label_nc, hidden, param_free=param_free)
        self.blending_gamma = nn.Parameter(torch.zeros(1))
        self.blending_beta = nn.Parameter(torch.zeros(1))
        if use_noise:
            self.noise_var = nn.Parameter(torch.zeros(norm_nc))

    def forward(self, x: torch.Tensor, segmap: torch.Tensor, style_codes=None) -> torch.Tensor:
        if self.use_noise:
            x = norm.add_noise(x, self.noise_var)
        return self.spade(x, segmap)


class SEANGenerator(_Decoder):
    """SEAN's generator: the SPADE decoder with norm.SEAN in every block but the last, plus the style encoder.

    The last block (up_3; up_4 for "most", which the official code builds but never calls) uses the mask-only
    SPADEWithNoise, as officially (use_rgb=False). The paper does not say why (ZPdesu/SEAN issue #7); likely
    cost: a 512-channel style map and two 512-channel convs at full resolution per norm, on the 64 channels
    closest to RGB, whose content the mask and earlier style-modulated features already fix.
    num_regions = semantic_nc less the edge channel (official: 19, no edges). forward takes an image (style
    encoded from it) or style_codes (B, num_regions, style_dim). Noise is drawn in training and eval alike.
    """

    def __init__(self, semantic_nc: int, ngf: int = 64, crop_size: int = 256, aspect_ratio: float = 1.0,
                 style_dim: int = 512, num_upsampling_layers: str = "normal", param_free: str = "batch",
                 spectral: bool = True, use_noise: bool = True, use_edges: bool = False,
                 norm_hidden: int = 128):
        num_regions = semantic_nc - int(use_edges)

        def make_norm(nc, last):
            if last:
                return SPADEWithNoise(nc, semantic_nc, param_free, use_noise, norm_hidden)
            return norm.SEAN(nc, semantic_nc, style_dim=style_dim, hidden=norm_hidden, param_free=param_free,
                             use_noise=use_noise, num_regions=num_regions)

        super().__init__(semantic_nc, ngf, crop_size, aspect_ratio, num_upsampling_layers, make_norm,
                         spectral)
        self.style_dim, self.num_regions = style_dim, num_regions
        self.style_encoder = StyleEncoder(style_dim)
        init_weights(self)

    def encode_style(self, image: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        """image (B, 3, H, W), segmap (B, semantic_nc, H, W) -> style_codes (B, num_regions, style_dim)."""
        return self.style_encoder(image, segmap[:, :self.num_regions])

    def forward(self, segmap: torch.Tensor, image: torch.Tensor | None = None,
                style_codes: torch.Tensor | None = None) -> torch.Tensor:
        """segmap and either image (style encoded from it) or style_codes -> image in [-1, 1]."""
        if style_codes is None:
            if image is None:
                raise ValueError("SEANGenerator.forward needs an image (to encode the style) or style_codes")
            style_codes = self.encode_style(image, segmap)
        return self.decode(self.start(segmap), segmap, style_codes)


# ----------------------------------------------------------------------------------------------------------
# SPADE's ablation baselines (Sec. 4, Table 4) and CLADE


class ConcatNorm(nn.Module):
    """'decoder w/ Concat': an affine norm (batch by default: what SPADE replaces), then the resized label map
    concatenated to its output."""

    def __init__(self, norm_nc: int, label_nc: int, param_free: str = "batch"):
        super().__init__()
        kinds = {"batch": nn.BatchNorm2d, "instance": nn.InstanceNorm2d, "syncbatch": nn.SyncBatchNorm}
        if param_free not in kinds:
            raise ValueError(f"param_free must be one of {list(kinds)}, got {param_free!r}")
        self.norm = kinds[param_free](norm_nc, affine=True)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.norm(x), norm.resize_segmap(segmap, x.shape[2:]).to(x.dtype)], dim=1)


class ConcatGenerator(_Decoder):
    """'decoder w/ Concat' (SPADE Table 4): ConcatNorm in place of SPADE, so the label map feeds every block
    conv. The paper gives no wiring; this one has 79.25M parameters at 151 channels (paper: 79M; concatenating
    only at each block's input would give 73.8M)."""

    def __init__(self, semantic_nc: int, ngf: int = 64, crop_size: int = 256, aspect_ratio: float = 1.0,
                 num_upsampling_layers: str = "normal", param_free: str = "batch", spectral: bool = True):
        super().__init__(semantic_nc, ngf, crop_size, aspect_ratio, num_upsampling_layers,
                         lambda nc, last: ConcatNorm(nc, semantic_nc, param_free), spectral,
                         extra_in=semantic_nc)
        init_weights(self)


class CLADEGenerator(_Decoder):
    """The SPADE decoder with norm.CLADE (Tan et al., TPAMI 2021; no distance-map input). With use_edges the
    last segmap channel is the instance-edge map, which each norm appends as one channel (official CLADE)."""

    def __init__(self, semantic_nc: int, ngf: int = 64, crop_size: int = 256, aspect_ratio: float = 1.0,
                 num_upsampling_layers: str = "normal", param_free: str = "batch", spectral: bool = True,
                 use_edges: bool = False):
        classes = semantic_nc - int(use_edges)
        super().__init__(semantic_nc, ngf, crop_size, aspect_ratio, num_upsampling_layers,
                         lambda nc, last: norm.CLADE(nc, classes, param_free, use_edges), spectral,
                         extra_in=int(use_edges))
        init_weights(self)


class _Plain(nn.InstanceNorm2d):
    """pix2pixHD's norm: instance norm without affine parameters, ignoring the label map."""

    def __init__(self, norm_nc: int):
        super().__init__(norm_nc, affine=False)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        return super().forward(x)


class _Pix2PixHDResBlock(nn.Module):
    """x + [pad, conv3x3, norm, ReLU, pad, conv3x3, norm](x); extra_in > 0 feeds the label map to conv_0."""

    def __init__(self, dim: int, make_norm: Callable[[int], nn.Module], spectral: bool, extra_in: int = 0):
        super().__init__()
        self.concat = extra_in > 0
        self.conv_0 = _sn(nn.Conv2d(dim + extra_in, dim, 3, bias=False), spectral)
        self.norm_0 = make_norm(dim)
        self.conv_1 = _sn(nn.Conv2d(dim, dim, 3, bias=False), spectral)
        self.norm_1 = make_norm(dim)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        h = torch.cat([x, norm.resize_segmap(segmap, x.shape[2:]).to(x.dtype)], 1) if self.concat else x
        h = F.relu(self.norm_0(self.conv_0(F.pad(h, (1, 1, 1, 1), mode="reflect")), segmap))
        h = self.norm_1(self.conv_1(F.pad(h, (1, 1, 1, 1), mode="reflect")), segmap)
        return x + h


class Pix2PixHDGenerator(nn.Module):
    """pix2pixHD's global generator (SPADE's baseline, official code): 7x7 conv, stride-2 convs, residual
    blocks, transposed convs, 7x7 conv, tanh; instance norm + ReLU, reflection padding, no spectral norm by
    default (official). Output size = input size. SPADE Table 4 variants (wiring not given): "pix2pixHD++"
    spectral=True; "w/ SPADE" norm_type="spade"; "w/ Concat" concat_label=True; "compact" ngf=48."""

    def __init__(self, semantic_nc: int, ngf: int = 64, n_downsample: int = 4, n_blocks: int = 9,
                 norm_type: str = "instance", concat_label: bool = False, spectral: bool = False,
                 param_free: str = "instance"):
        super().__init__()
        if norm_type == "instance":
            make_norm = _Plain
        elif norm_type == "spade":
            make_norm = lambda nc: norm.SPADE(nc, semantic_nc, param_free=param_free)
        else:
            raise ValueError(f"norm_type must be 'instance' or 'spade', got {norm_type!r}")
        self.stem = _sn(nn.Conv2d(semantic_nc, ngf, 7, bias=False), spectral)
        self.stem_norm = make_norm(ngf)
        widths = [ngf * 2**i for i in range(n_downsample + 1)]
        self.down = nn.ModuleList(_sn(nn.Conv2d(a, b, 3, stride=2, padding=1, bias=False), spectral)
                                  for a, b in pairwise(widths))
        self.down_norms = nn.ModuleList(make_norm(b) for b in widths[1:])
        extra = semantic_nc if concat_label else 0
        self.blocks = nn.ModuleList(_Pix2PixHDResBlock(widths[-1], make_norm, spectral, extra)
                                    for _ in range(n_blocks))
        rev = widths[::-1]
        self.up = nn.ModuleList(
            _sn(nn.ConvTranspose2d(a, b, 3, stride=2, padding=1, output_padding=1, bias=False), spectral)
            for a, b in pairwise(rev))
        self.up_norms = nn.ModuleList(make_norm(b) for b in rev[1:])
        self.to_rgb = nn.Conv2d(ngf, 3, 7)
        init_weights(self)

    def forward(self, segmap: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """segmap (B, semantic_nc, H, W) -> image (B, 3, H, W) in [-1, 1]."""
        x = F.relu(self.stem_norm(self.stem(F.pad(segmap, (3, 3, 3, 3), mode="reflect")), segmap))
        for conv, n in zip(self.down, self.down_norms, strict=True):
            x = F.relu(n(conv(x), segmap))
        for block in self.blocks:
            x = block(x, segmap)
        for conv, n in zip(self.up, self.up_norms, strict=True):
            x = F.relu(n(conv(x), segmap))
        return torch.tanh(self.to_rgb(F.pad(x, (3, 3, 3, 3), mode="reflect")))


# ----------------------------------------------------------------------------------------------------------
# Discriminator (SPADE App. A, Fig. 13): multi-scale PatchGAN


class NLayerDiscriminator(nn.Module):
    """PatchGAN on concat(label map, image) returning every layer's output: 4x4 convs (padding 2), LeakyReLU
    0.2; the middle layers double the width (max 512) with spectral + instance norm, stride 2 but the last
    (stride 1: the official fix of May 2019); first and final conv plain, the final one to 1 channel."""

    def __init__(self, input_nc: int, ndf: int = 64, n_layers: int = 4, spectral: bool = True):
        super().__init__()
        layers = [nn.Sequential(nn.Conv2d(input_nc, ndf, 4, stride=2, padding=2), nn.LeakyReLU(0.2))]
        nf = ndf
        for n in range(1, n_layers):
            nf_prev, nf = nf, min(nf * 2, 512)
            stride = 1 if n == n_layers - 1 else 2
            layers.append(nn.Sequential(
                _sn(nn.Conv2d(nf_prev, nf, 4, stride=stride, padding=2, bias=False), spectral),
                nn.InstanceNorm2d(nf, affine=False), nn.LeakyReLU(0.2)))
        layers.append(nn.Sequential(nn.Conv2d(nf, 1, 4, stride=1, padding=2)))
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for layer in self.layers:
            x = layer(x)
            features.append(x)
        return features


class MultiscaleDiscriminator(nn.Module):
    """num_D PatchGANs; discriminator k sees the input average-pooled k times (3x3, stride 2, padding 1,
    padding not counted). forward(x) -> one list per scale of intermediate features, the last being the
    prediction map (or only [prediction] per scale when get_intermediate_features=False)."""

    def __init__(self, input_nc: int, ndf: int = 64, n_layers: int = 4, num_D: int = 2, spectral: bool = True,
                 get_intermediate_features: bool = True):
        super().__init__()
        self.get_intermediate_features = get_intermediate_features
        self.discriminators = nn.ModuleList(NLayerDiscriminator(input_nc, ndf, n_layers, spectral)
                                            for _ in range(num_D))
        init_weights(self)

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        """x = concat(label map, image), (B, input_nc, H, W)."""
        results = []
        for i, D in enumerate(self.discriminators):
            if i > 0:
                x = F.avg_pool2d(x, kernel_size=3, stride=2, padding=1, count_include_pad=False)
            features = D(x)
            results.append(features if self.get_intermediate_features else features[-1:])
        return results


# ----------------------------------------------------------------------------------------------------------
# Official checkpoints (NVlabs/SPADE latest_net_G/E.pth, ZPdesu/SEAN): the networks above under other names.
# convert_official_state renames the keys, checks an exact fit (no key missing or left over, equal shapes):
#   X.weight_orig, X.weight_u, X.weight_v -> X.parametrizations.weight.original, ...weight.0._u, ..._v
#   layerN.0.* -> convs.{N-1}.* (SPADE's encoder);  Zencoder.* -> style_encoder.*
#   B.ace_0, ace_1, ace_s -> B.norm_0, norm_1, norm_s, and inside them Spade.* -> spade.*
#   ACE.fc_mu0 .. fc_mu{K-1} (.weight, .bias) -> stacked into fc_mu_weight (K, S, S), fc_mu_bias (K, S)
#   last SEAN block (SPADEWithNoise): param_free_norm -> spade.param_free_norm; the never-called official
#     Spade.param_free_norm is dropped.  Every other key keeps its name.


class OfficialCheckpointError(ValueError):
    """An official state dict that does not fit the network built for it; lists every offending key."""


def _official_name(key: str) -> str:
    key = re.sub(r"\.weight_orig$", ".parametrizations.weight.original", key)
    key = re.sub(r"\.weight_([uv])$", r".parametrizations.weight.0._\1", key)
    key = re.sub(r"^layer(\d+)\.0\.", lambda m: f"convs.{int(m[1]) - 1}.", key)
    key = re.sub(r"^Zencoder\.", "style_encoder.", key)
    key = re.sub(r"\.ace_([01s])\.", r".norm_\1.", key)
    return key.replace(".Spade.", ".spade.")


def _listing(title: str, items: list[str], limit: int = 12) -> str:
    more = f"\n    ... and {len(items) - limit} more" if len(items) > limit else ""
    return f"\n  {title} ({len(items)}):\n    " + "\n    ".join(items[:limit]) + more if items else ""


def convert_official_state(state: dict, model: nn.Module, what: str = "network") -> dict:
    """An official state dict -> this project's names for `model`; raises OfficialCheckpointError listing
    every missing, unexpected or wrongly shaped key (nothing is loaded partially)."""
    ours = model.state_dict()
    last = tuple(f"{n}." for n, m in model.named_modules() if isinstance(m, SPADEWithNoise))
    out, fc = {}, {}
    for key, value in state.items():
        name = _official_name(key)
        prefix = next((p for p in last if name.startswith(p)), None)
        if prefix and name.startswith(prefix + "spade.param_free_norm."):
            continue  # never called by the official code
        if prefix and name.startswith(prefix + "param_free_norm."):
            name = prefix + "spade." + name[len(prefix):]
        m = re.fullmatch(r"(.+)\.fc_mu(\d+)\.(weight|bias)", name)
        if m:
            fc.setdefault(f"{m[1]}.fc_mu_{m[3]}", {})[int(m[2])] = (key, value)
        else:
            out[name] = (key, value)
    missing, unexpected = [], []
    for name, parts in fc.items():  # the per-class Linear layers, stacked
        base, kind = name.rsplit(".fc_mu_", 1)
        k = ours[name].shape[0] if name in ours else 0
        unexpected += [key for j, (key, _) in sorted(parts.items()) if j >= k]
        absent = [f"{base}.fc_mu{j}.{kind}" for j in range(k) if j not in parts]
        missing += absent
        if k and not absent:
            out[name] = (f"{base}.fc_mu0..{k - 1}", torch.stack([parts[j][1] for j in range(k)]))
    # num_batches_tracked is a counter, not a weight (and files older than torch 0.4.1 lack it)
    missing += [n for n in ours if n not in out and n not in fc and not n.endswith("num_batches_tracked")]
    unexpected += [key for n, (key, _) in out.items() if n not in ours]
    wrong = [f"{key} {tuple(v.shape)} -> {n} {tuple(ours[n].shape)}" for n, (key, v) in out.items()
             if n in ours and tuple(v.shape) != tuple(ours[n].shape)]
    if missing or unexpected or wrong:
        raise OfficialCheckpointError(
            f"the official {what} does not fit this project's {type(model).__name__}: {len(missing)} keys "
            f"missing, {len(unexpected)} unexpected, {len(wrong)} of another shape"
            + _listing("missing (names here)", missing) + _listing("unexpected (official names)", unexpected)
            + _listing("other shape (official -> here)", wrong))
    converted = {n: v for n, (_, v) in out.items()}
    return {n: converted.get(n, ours[n]) for n in ours}


def read_official_state(source, what: str) -> dict:
    """An official .pth file (or an already loaded state dict) -> its state dict."""
    if isinstance(source, dict):
        return source
    try:
        state = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{source}: not a loadable {what} file ({type(err).__name__}: {err})") from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{source}: expected an official state dict (parameter name -> tensor)")
    return state


def official_options_from_weights(state: dict) -> dict:
    """The options an official generator's weights fix: model, ngf, VAE (z_dim), style length, 'most'."""
    found = {"model": "sean" if any(k.startswith("Zencoder.") for k in state) else "spade"}
    if "head_0.conv_0.weight_orig" in state:
        found["ngf"] = state["head_0.conv_0.weight_orig"].shape[0] // 16
    if "fc.weight" in state and state["fc.weight"].dim() == 2:
        found.update(vae=True, z_dim=state["fc.weight"].shape[1])
    convs = [k for k in state if k.startswith("Zencoder.model.") and k.endswith(".weight")]
    if convs:
        found["style_dim"] = state[max(convs, key=lambda k: int(k.split(".")[2]))].shape[0]
    if any(k.startswith("up_4.") for k in state):
        found["num_upsampling_layers"] = "most"
    return found


# ----------------------------------------------------------------------------------------------------------
# Factory and the parameter-count table


GENERATORS = {"spade": SPADEGenerator, "sean": SEANGenerator, "concat": ConcatGenerator,
              "pix2pixhd": Pix2PixHDGenerator, "clade": CLADEGenerator}


def build_generator(model: str, semantic_nc: int, **kw) -> nn.Module:
    """model in {"spade", "sean", "concat", "pix2pixhd", "clade"}; keyword arguments go to its constructor."""
    if model not in GENERATORS:
        raise ValueError(f"model must be one of {sorted(GENERATORS)}, got {model!r}")
    return GENERATORS[model](semantic_nc, **kw)


@dataclass
class ModelArgs:
    """Everything that fixes the networks' shapes, stored in every checkpoint as "model_args" (rebuild with
    build(ModelArgs(**ckpt["model_args"]))); field names are train.Args's, read by from_config."""

    model: str = "spade"  # generator: spade | sean | concat | pix2pixhd | clade
    semantic_nc: int = 11  # generator input channels: classes + don't-care + instance edges
    use_edges: bool = False  # the segmap's last channel is the instance-edge map (SEAN, CLADE: not a class)
    vae: bool = False  # SPADE with its image encoder (z from the encoder, not the downsampled segmap)
    ngf: int = 64  # generator (and encoder) width
    ndf: int = 64  # discriminator width
    num_D: int = 2  # discriminator scales
    n_layers_D: int = 4  # layers of each PatchGAN discriminator
    z_dim: int = 256  # VAE latent size
    style_dim: int = 512  # SEAN style code length per region
    crop_size: int = 256  # output width
    aspect_ratio: float = 1.0  # output width / height
    num_upsampling_layers: str = "normal"  # decoder depth: normal | more | most
    param_free: str = "syncbatch"  # the norm inside the conditional norms: batch | instance | syncbatch
    norm_hidden: int = 128  # hidden width of SPADE's (and SEAN's mask branch) label-map MLP (official: 128)

    @classmethod
    def from_config(cls, config: dict, semantic_nc: int, use_edges: bool) -> "ModelArgs":
        """The networks' part of a run's arguments (train.Args as a dict)."""
        names = {f.name for f in dataclasses.fields(cls)}
        given = {k: v for k, v in config.items() if k in names}
        return cls(**given | dict(semantic_nc=semantic_nc, use_edges=bool(use_edges)))


def build(a: ModelArgs) -> tuple[nn.Module, nn.Module, nn.Module | None]:
    """Generator, multi-scale discriminator (on segmap + image) and SPADE's VAE encoder (None without VAE)."""
    if a.model == "pix2pixhd":  # its own encoder-decoder with instance norm; output size = input size
        G = build_generator("pix2pixhd", a.semantic_nc, ngf=a.ngf)
    else:
        kw = dict(ngf=a.ngf, crop_size=a.crop_size, aspect_ratio=a.aspect_ratio,
                  num_upsampling_layers=a.num_upsampling_layers, param_free=a.param_free)
        kw |= {"spade": dict(use_vae=a.vae, z_dim=a.z_dim, norm_hidden=a.norm_hidden),
               "sean": dict(style_dim=a.style_dim, use_edges=a.use_edges, norm_hidden=a.norm_hidden),
               "clade": dict(use_edges=a.use_edges)}.get(a.model, {})
        G = build_generator(a.model, a.semantic_nc, **kw)
    D = MultiscaleDiscriminator(a.semantic_nc + 3, ndf=a.ndf, n_layers=a.n_layers_D, num_D=a.num_D)
    E = ConvEncoder(ngf=a.ngf, crop_size=a.crop_size, z_dim=a.z_dim) if a.vae else None
    return G, D, E


# ----------------------------------------------------------------------------------------------------------
# Checkpoints: one file, written atomically, loadable with torch.load(weights_only=True)

CKPT_FORMAT = 1


def atomic_save(obj, path: str | os.PathLike) -> None:
    """torch.save to a temp file in the same folder, then rename: a crash never leaves half a file."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:  # a failed write (full disk, a folder in the way) leaves no temp file behind
        if os.path.exists(tmp):
            os.remove(tmp)


def list_checkpoints(run_dir: str | os.PathLike) -> list[str]:
    """File names of a run folder's checkpoints, oldest first (the names carry the zero-padded step)."""
    return sorted(f for f in os.listdir(run_dir) if f.startswith("ckpt_") and f.endswith(".pt"))


def find_checkpoint(path: str | os.PathLike) -> str:
    """A checkpoint file, or the newest ckpt_*.pt of a run folder; FileNotFoundError saying which."""
    if os.path.isdir(path):
        names = list_checkpoints(path)
        if not names:
            raise FileNotFoundError(f"no checkpoint (ckpt_*.pt) in the folder {path}")
        return os.path.join(path, names[-1])
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return str(path)


def read_checkpoint(path: str | os.PathLike, device="cpu", mmap: bool = False) -> dict:
    """torch.load(weights_only=True) of a train.py checkpoint; ValueError saying why it cannot be used."""
    if os.path.isfile(path) and not zipfile.is_zipfile(path):  # torch's own error blames a save option
        size = os.path.getsize(path)
        raise ValueError(f"cannot read checkpoint {str(path)!r}: "
                         + ("the file is empty" if size == 0 else f"not a torch checkpoint ({size} bytes, "
                            "not a zip archive: cut short, or another kind of file)"))
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True, mmap=mmap)
    except Exception as e:
        first = (str(e).splitlines() or [""])[0].split(". ")[0]  # torch's zip errors run on for lines
        raise ValueError(f"cannot read checkpoint {str(path)!r}: {type(e).__name__}: {first}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CKPT_FORMAT or "config" not in ckpt:
        raise ValueError(f"{str(path)!r} is not a train.py checkpoint")
    return ckpt


def export_generator(ckpt: dict, dtype: torch.dtype = torch.float16) -> dict:
    """A train.py checkpoint less the discriminator, optimizers and RNG: the generator (+ VAE encoder)
    weights in dtype (float16 halves the file). evaluate.load_generator reads it as it reads a full
    checkpoint; the weights are cast back to the networks' float32 on loading."""
    def cast(state):
        return None if state is None else {k: v.to(dtype) if v.is_floating_point() else v
                                           for k, v in state.items()}
    kept = {k: ckpt[k] for k in ("model_args", "step") if k in ckpt}
    return {"format": CKPT_FORMAT, "config": ckpt["config"], **kept, "G": cast(ckpt["G"]),
            "E": cast(ckpt.get("E"))}


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


# ----------------------------------------------------------------------------------------------------------
# Command lines from dataclasses: one flag per field, the field's docstring as its help (train.py,
# evaluate.py, paint.py, bench.py)


def field_docs(cls) -> dict[str, str]:
    """The string literal written under each dataclass field (read from the source with ast)."""
    docs, body = {}, ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    for node, nxt in zip(body[:-1], body[1:], strict=True):
        if (isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
            docs[node.target.id] = nxt.value.value
    return docs


def add_dataclass_args(parser: argparse.ArgumentParser, cls, choices: dict | None = None,
                       show_defaults: bool = True) -> None:
    """--field-name (and the official --field_name) for every field: booleans --x / --no-x (so no field starts
    with no_), lists take several values, fields without default are required. show_defaults=False leaves
    unset flags out of the namespace (argparse.SUPPRESS), so the caller sees which were given."""
    docs, choices = field_docs(cls), choices or {}
    for f in dataclasses.fields(cls):
        flags = ["--" + f.name.replace("_", "-")] + (["--" + f.name] if "_" in f.name else [])
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if required else (f.default if f.default is not dataclasses.MISSING
                                         else f.default_factory())
        kw = dict(help=docs.get(f.name, "") + ("" if default in (None, "", []) or f.type in (bool, "bool")
                                                else f" (default: {default})"))
        if not show_defaults:
            kw["default"] = argparse.SUPPRESS
        elif default is not None:
            kw["default"] = default
        type_name = f.type if isinstance(f.type, str) else f.type.__name__
        if type_name == "bool":
            parser.add_argument(*flags, action=argparse.BooleanOptionalAction, **kw)
        elif type_name.startswith("list"):
            parser.add_argument(*flags, nargs="+", action="extend", required=required, **kw)
        else:
            typ = {"int": int, "float": float}.get(type_name.split(" |")[0], str)
            parser.add_argument(*flags, type=typ, choices=choices.get(f.name), required=required,
                                metavar=None if f.name in choices else f.name.upper(), **kw)


class CountRow(NamedTuple):
    """One line of the `python models.py` table: build runs under torch.device("meta"); official is the
    official code's exact count (None: no official network); paper the printed number ("-": none)."""

    name: str
    build: Callable[[], nn.Module]
    official: int | None
    paper: str
    note: str = ""  # how the variant is built where the paper does not say


# Exact counts of the official code (NVlabs/SPADE, ZPdesu/SEAN) with default options; tests assert equality.
OFFICIAL_COUNTS = {
    "spade_151": 96_492_483, "spade_36": 93_048_003, "spade_184": 97_480_899, "spade_19": 92_538_819,
    "spade_151_vae": 111_942_595, "conv_encoder": 10_463_424, "pix2pixhd_36": 182_525_379,
    "msd_39": 5_601_410, "msd_154": 5_836_930, "sean_19": 266_907_367,
}

COUNT_ROWS = [
    # SPADE Table 4 (ablation; the #param column matches ADE20K's 151 input channels)
    CountRow("decoder w/ SPADE (Ours), ADE20K", lambda: SPADEGenerator(151), OFFICIAL_COUNTS["spade_151"],
             "96M"),
    CountRow("compact decoder w/ SPADE", lambda: SPADEGenerator(151, ngf=48), 60_642_771, "61M",
             "ngf 48 (paper: 'compact', width not given)"),
    CountRow("decoder w/ Concat", lambda: ConcatGenerator(151), None, "79M",
             "affine BN + label concat before every block conv"),
    CountRow("pix2pixHD++ w/ SPADE", lambda: Pix2PixHDGenerator(151, norm_type="spade", spectral=True), None,
             "237M", "every instance norm -> SPADE"),
    CountRow("pix2pixHD++ w/ Concat", lambda: Pix2PixHDGenerator(151, concat_label=True, spectral=True), None,
             "195M", "label concat at each res-block input"),
    CountRow("pix2pixHD++", lambda: Pix2PixHDGenerator(151, spectral=True), None, "183M",
             "pix2pixHD + spectral norm (same net)"),
    CountRow("compact pix2pixHD++", lambda: Pix2PixHDGenerator(151, ngf=48, spectral=True), None, "103M",
             "ngf 48"),
    CountRow("pix2pixHD [48], Cityscapes (36)", lambda: Pix2PixHDGenerator(36),
             OFFICIAL_COUNTS["pix2pixhd_36"], "183M"),
    # the rest of the official configurations
    CountRow("SPADE G, Cityscapes (36)", lambda: SPADEGenerator(36), OFFICIAL_COUNTS["spade_36"], "-"),
    CountRow("SPADE G, COCO-Stuff (184)", lambda: SPADEGenerator(184), OFFICIAL_COUNTS["spade_184"], "-"),
    CountRow("SPADE G, CelebAMask-HQ (19)", lambda: SPADEGenerator(19), OFFICIAL_COUNTS["spade_19"], "-"),
    CountRow("SPADE G, ADE20K, VAE (z 256)", lambda: SPADEGenerator(151, use_vae=True),
             OFFICIAL_COUNTS["spade_151_vae"], "-"),
    CountRow("SPADE ConvEncoder (crop 256)", ConvEncoder, OFFICIAL_COUNTS["conv_encoder"], "-"),
    CountRow("Multiscale D, input 39 (Cityscapes)", lambda: MultiscaleDiscriminator(39),
             OFFICIAL_COUNTS["msd_39"], "-"),
    CountRow("Multiscale D, input 154 (ADE20K)", lambda: MultiscaleDiscriminator(154),
             OFFICIAL_COUNTS["msd_154"], "-"),
    CountRow("SEAN G + style encoder, CelebAMask (19)", lambda: SEANGenerator(19), OFFICIAL_COUNTS["sean_19"],
             "-"),
    CountRow("CLADE G, ADE20K (151)", lambda: CLADEGenerator(151), None, "-", "SPADE decoder, norm.CLADE"),
]


def count_table() -> list[tuple[CountRow, int]]:
    with torch.device("meta"):
        return [(row, count_parameters(row.build())) for row in COUNT_ROWS]


def _main() -> None:
    print(f"{'configuration':<42} {'this code':>13} {'official':>13} {'paper':>6}  note")
    for row, n in count_table():
        official = f"{row.official:,}" if row.official is not None else "-"
        mark = "" if row.official is None else (" ok" if n == row.official else " MISMATCH")
        print(f"{row.name:<42} {n:>13,} {official:>13} {row.paper:>6}  {row.note}{mark}")


if __name__ == "__main__":
    _main()

