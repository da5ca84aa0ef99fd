"""Every network of SPADE (Park et al., CVPR 2019, Sec. 3.2-3.3, App. A, Sec. 4 ablations) and SEAN (Zhu et
al., CVPR 2020, Sec. 3.3), at the papers' size by default; the norm layers live in norm.py. Read in order:
SPADEResBlock and SPADEGenerator (SPADE Fig. 4), ConvEncoder (the VAE), SEANResBlock and SEANGenerator (SEAN
Fig. 4), the baselines, the discriminator; then ModelArgs / build (a run's networks from its arguments) and
LoadedModel (a trained generator with what it takes to feed it).

Parameter layouts follow the official code (NVlabs/SPADE, ZPdesu/SEAN), so counts equal the official ones
(`python models.py` prints them next to the papers'). Official quirks: a conv followed by a parameter-free
norm has no bias (the mean subtraction removes it anyway); spectral norm wraps the residual-block convs, the
encoder's convs and the discriminator's middle convs, not the first and last layers of G and D.
"""

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

import data
import norm

__all__ = ["SPADEResBlock", "SPADEGenerator", "ConvEncoder", "StyleEncoder", "SEANResBlock", "SEANGenerator",
           "ConcatGenerator", "CLADEGenerator", "Pix2PixHDGenerator", "NLayerDiscriminator",
           "MultiscaleDiscriminator", "ModelArgs", "build", "build_generator", "LoadedModel",
           "count_parameters", "init_weights"]


# ----------------------------------------------------------------------------------------------------------
# Helpers


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
# SPADE's residual block (Fig. 4 right, App. A)


class SPADEResBlock(nn.Module):
    """SPADE -> LeakyReLU(0.2) -> conv3x3, twice, plus a shortcut (SPADE -> conv1x1 without bias when
    fin != fout); middle width min(fin, fout); spectral norm on every conv."""

    def __init__(self, fin: int, fout: int, semantic_nc: int, param_free: str = "batch",
                 spectral: bool = True, hidden: int = 128):
        super().__init__()
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        self.conv_0 = _sn(nn.Conv2d(fin, fmiddle, 3, padding=1), spectral)
        self.conv_1 = _sn(nn.Conv2d(fmiddle, fout, 3, padding=1), spectral)
        self.norm_0 = norm.SPADE(fin, semantic_nc, hidden, param_free=param_free)
        self.norm_1 = norm.SPADE(fmiddle, semantic_nc, hidden, param_free=param_free)
        if self.learned_shortcut:
            self.conv_s = _sn(nn.Conv2d(fin, fout, 1, bias=False), spectral)
            self.norm_s = norm.SPADE(fin, semantic_nc, hidden, param_free=param_free)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        # the official shortcut branch has no activation between its norm and conv
        x_s = self.conv_s(self.norm_s(x, segmap)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, segmap), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, segmap), 0.2))
        return x_s + dx


# ----------------------------------------------------------------------------------------------------------
# SPADE's generator (Fig. 4 left, App. A)

NUM_UPSAMPLING = {"normal": 5, "more": 6, "most": 7}


def start_size(crop_size: int, aspect_ratio: float, num_upsampling_layers: str) -> tuple[int, int]:
    """(sh, sw): the size the decoder starts at, crop / 2^n_up (height divided by the aspect ratio)."""
    if num_upsampling_layers not in NUM_UPSAMPLING:
        raise ValueError(f"num_upsampling_layers must be one of {list(NUM_UPSAMPLING)}, "
                         f"got {num_upsampling_layers!r}")
    n_up = NUM_UPSAMPLING[num_upsampling_layers]
    sw = crop_size // 2**n_up
    sh = round(sw / aspect_ratio)
    if sw < 1 or sh < 1:
        raise ValueError(f"crop_size={crop_size}, aspect_ratio={aspect_ratio}: too small for {n_up} "
                         "upsamplings")
    return sh, sw


def up(x: torch.Tensor) -> torch.Tensor:
    """2x nearest-neighbour upsampling (the official nn.Upsample(scale_factor=2))."""
    return F.interpolate(x, scale_factor=2, mode="nearest")


class SPADEGenerator(nn.Module):
    """SPADE's generator at the paper's defaults: fc -> head_0 -> G_middle_0 -> G_middle_1 -> up_0 .. up_3
    (-> up_4 for "most") -> LeakyReLU -> conv_img -> tanh, widths 16 16 16 8 4 2 1 (x ngf). It starts at
    crop / 2^n_up (8x8 at 256) from the label map downsampled there, or from z (use_vae: N(0, I) if not
    given). param_free: the norm inside SPADE (official: sync batch, "batch" on one process)."""

    def __init__(self, semantic_nc: int, ngf: int = 64, crop_size: int = 256, aspect_ratio: float = 1.0,
                 num_upsampling_layers: str = "normal", use_vae: bool = False, z_dim: int = 256,
                 param_free: str = "batch", spectral: bool = True, norm_hidden: int = 128):
        super().__init__()
        self.sh, self.sw = start_size(crop_size, aspect_ratio, num_upsampling_layers)
        self.num_upsampling_layers = num_upsampling_layers
        self.use_vae, self.z_dim, self.ngf = use_vae, z_dim, ngf
        nf = ngf
        if use_vae:  # z -> a (16 nf, sh, sw) tensor
            self.fc = nn.Linear(z_dim, 16 * nf * self.sh * self.sw)
        else:  # the label map at (sh, sw) -> a 3x3 conv
            self.fc = nn.Conv2d(semantic_nc, 16 * nf, 3, padding=1)
        kw = dict(semantic_nc=semantic_nc, param_free=param_free, spectral=spectral, hidden=norm_hidden)
        self.head_0 = SPADEResBlock(16 * nf, 16 * nf, **kw)
        self.G_middle_0 = SPADEResBlock(16 * nf, 16 * nf, **kw)
        self.G_middle_1 = SPADEResBlock(16 * nf, 16 * nf, **kw)
        self.up_0 = SPADEResBlock(16 * nf, 8 * nf, **kw)
        self.up_1 = SPADEResBlock(8 * nf, 4 * nf, **kw)
        self.up_2 = SPADEResBlock(4 * nf, 2 * nf, **kw)
        self.up_3 = SPADEResBlock(2 * nf, 1 * nf, **kw)
        final_nc = nf
        if num_upsampling_layers == "most":
            self.up_4 = SPADEResBlock(nf, nf // 2, **kw)
            final_nc = nf // 2
        self.conv_img = nn.Conv2d(final_nc, 3, 3, padding=1)
        self.block_names = [n for n, _ in self.named_children() if n.startswith(("head", "G_middle", "up_"))]
        init_weights(self)

    def forward(self, segmap: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """segmap (B, semantic_nc, H, W) float, z (B, z_dim) or None -> image (B, 3, sh 2^n, sw 2^n)."""
        if self.use_vae:
            if z is None:
                z = torch.randn(segmap.shape[0], self.z_dim, device=segmap.device, dtype=segmap.dtype)
            x = self.fc(z).view(-1, 16 * self.ngf, self.sh, self.sw)
        else:
            x = self.fc(F.interpolate(segmap, size=(self.sh, self.sw), mode="nearest"))
        x = self.head_0(x, segmap)
        x = up(x)
        x = self.G_middle_0(x, segmap)
        if self.num_upsampling_layers in ("more", "most"):
            x = up(x)
        x = self.G_middle_1(x, segmap)
        x = self.up_0(up(x), segmap)
        x = self.up_1(up(x), segmap)
        x = self.up_2(up(x), segmap)
        x = self.up_3(up(x), segmap)
        if self.num_upsampling_layers == "most":
            x = self.up_4(up(x), segmap)
        return torch.tanh(self.conv_img(F.leaky_relu(x, 0.2)))


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


class SEANResBlock(nn.Module):
    """SPADE's residual block with SEAN norms (official: ACE), which take the style codes too. The last
    block of the generator is built with use_style=False: mask-only SPADEWithNoise norms."""

    def __init__(self, fin: int, fout: int, semantic_nc: int, num_regions: int, style_dim: int = 512,
                 param_free: str = "batch", spectral: bool = True, use_noise: bool = True, hidden: int = 128,
                 use_style: bool = True):
        super().__init__()
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        self.conv_0 = _sn(nn.Conv2d(fin, fmiddle, 3, padding=1), spectral)
        self.conv_1 = _sn(nn.Conv2d(fmiddle, fout, 3, padding=1), spectral)

        def sean_norm(nc):
            if not use_style:
                return SPADEWithNoise(nc, semantic_nc, param_free, use_noise, hidden)
            return norm.SEAN(nc, semantic_nc, style_dim=style_dim, hidden=hidden, param_free=param_free,
                             use_noise=use_noise, num_regions=num_regions)

        self.norm_0 = sean_norm(fin)
        self.norm_1 = sean_norm(fmiddle)
        if self.learned_shortcut:
            self.conv_s = _sn(nn.Conv2d(fin, fout, 1, bias=False), spectral)
            self.norm_s = sean_norm(fin)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor, style_codes: torch.Tensor) -> torch.Tensor:
        x_s = self.conv_s(self.norm_s(x, segmap, style_codes)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, segmap, style_codes), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, segmap, style_codes), 0.2))
        return x_s + dx


class SEANGenerator(nn.Module):
    """SEAN's generator (Fig. 4): the style encoder turns an image into the style matrix ST, then SPADE's
    decoder layout (fc from the downsampled label map, head_0 .. up_3) with SEAN norms in every block, each
    fed the same ST. The last block (up_3; up_4 for "most", which the official code builds but never calls)
    is mask-only (SPADEWithNoise), as officially (use_rgb=False). The paper does not say why (ZPdesu/SEAN
    issue #7); likely cost: a 512-channel style map and two 512-channel convs at full resolution per norm,
    on the 64 channels closest to RGB, whose content the mask and earlier style-modulated features fix.
    num_regions = semantic_nc less the edge channel (official: 19, no edges). Noise in training and eval."""

    def __init__(self, semantic_nc: int, ngf: int = 64, crop_size: int = 256, aspect_ratio: float = 1.0,
                 style_dim: int = 512, num_upsampling_layers: str = "normal", param_free: str = "batch",
                 spectral: bool = True, use_noise: bool = True, use_edges: bool = False,
                 norm_hidden: int = 128):
        super().__init__()
        self.sh, self.sw = start_size(crop_size, aspect_ratio, num_upsampling_layers)
        self.num_upsampling_layers = num_upsampling_layers
        self.style_dim, self.num_regions = style_dim, semantic_nc - int(use_edges)
        nf, most = ngf, num_upsampling_layers == "most"
        self.fc = nn.Conv2d(semantic_nc, 16 * nf, 3, padding=1)
        kw = dict(semantic_nc=semantic_nc, num_regions=self.num_regions, style_dim=style_dim,
                  param_free=param_free, spectral=spectral, use_noise=use_noise, hidden=norm_hidden)
        self.head_0 = SEANResBlock(16 * nf, 16 * nf, **kw)
        self.G_middle_0 = SEANResBlock(16 * nf, 16 * nf, **kw)
        self.G_middle_1 = SEANResBlock(16 * nf, 16 * nf, **kw)
        self.up_0 = SEANResBlock(16 * nf, 8 * nf, **kw)
        self.up_1 = SEANResBlock(8 * nf, 4 * nf, **kw)
        self.up_2 = SEANResBlock(4 * nf, 2 * nf, **kw)
        self.up_3 = SEANResBlock(2 * nf, 1 * nf, **kw, use_style=most)
        final_nc = nf
        if most:
            self.up_4 = SEANResBlock(nf, nf // 2, **kw, use_style=False)
            final_nc = nf // 2
        self.conv_img = nn.Conv2d(final_nc, 3, 3, padding=1)
        self.style_encoder = StyleEncoder(style_dim)
        self.block_names = [n for n, _ in self.named_children() if n.startswith(("head", "G_middle", "up_"))]
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
        x = self.fc(F.interpolate(segmap, size=(self.sh, self.sw), mode="nearest"))
        x = self.head_0(x, segmap, style_codes)
        x = up(x)
        x = self.G_middle_0(x, segmap, style_codes)
        if self.num_upsampling_layers in ("more", "most"):
            x = up(x)
        x = self.G_middle_1(x, segmap, style_codes)
        x = self.up_0(up(x), segmap, style_codes)
        x = self.up_1(up(x), segmap, style_codes)
        x = self.up_2(up(x), segmap, style_codes)
        x = self.up_3(up(x), segmap, style_codes)
        if self.num_upsampling_layers == "most":
            x = self.up_4(up(x), segmap, style_codes)
        return torch.tanh(self.conv_img(F.leaky_relu(x, 0.2)))


# ----------------------------------------------------------------------------------------------------------
# SPADE's ablation baselines (Sec. 4, Table 4) and CLADE: SPADE's decoder layout with another norm


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


class BaselineResBlock(nn.Module):
    """SPADEResBlock with make_norm(nc) in place of SPADE; extra_in: channels the norm adds (Concat)."""

    def __init__(self, fin: int, fout: int, make_norm: Callable[[int], nn.Module], spectral: bool = True,
                 extra_in: int = 0):
        super().__init__()
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        self.conv_0 = _sn(nn.Conv2d(fin + extra_in, fmiddle, 3, padding=1), spectral)
        self.conv_1 = _sn(nn.Conv2d(fmiddle + extra_in, fout, 3, padding=1), spectral)
        self.norm_0, self.norm_1 = make_norm(fin), make_norm(fmiddle)
        if self.learned_shortcut:
            self.conv_s = _sn(nn.Conv2d(fin + extra_in, fout, 1, bias=False), spectral)
            self.norm_s = make_norm(fin)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        x_s = self.conv_s(self.norm_s(x, segmap)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, segmap), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, segmap), 0.2))
        return x_s + dx


class BaselineDecoder(nn.Module):
    """SPADEGenerator's layout (no VAE) with BaselineResBlocks: the blocks in a loop, for the baselines."""

    def __init__(self, semantic_nc: int, ngf: int, crop_size: int, aspect_ratio: float,
                 num_upsampling_layers: str, make_norm: Callable[[int], nn.Module], spectral: bool,
                 extra_in: int = 0):
        super().__init__()
        self.sh, self.sw = start_size(crop_size, aspect_ratio, num_upsampling_layers)
        self.num_upsampling_layers = num_upsampling_layers
        self.fc = nn.Conv2d(semantic_nc, 16 * ngf, 3, padding=1)
        widths = [("head_0", 16, 16), ("G_middle_0", 16, 16), ("G_middle_1", 16, 16),
                  ("up_0", 16, 8), ("up_1", 8, 4), ("up_2", 4, 2), ("up_3", 2, 1)]
        widths += [("up_4", 1, 0.5)] if num_upsampling_layers == "most" else []
        for name, a, b in widths:
            self.add_module(name, BaselineResBlock(int(a * ngf), int(b * ngf), make_norm, spectral, extra_in))
        self.block_names = [name for name, _, _ in widths]
        self.conv_img = nn.Conv2d(int(widths[-1][2] * ngf), 3, 3, padding=1)

    def forward(self, segmap: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        x = self.fc(F.interpolate(segmap, size=(self.sh, self.sw), mode="nearest"))
        more = self.num_upsampling_layers in ("more", "most")
        for name in self.block_names:  # upsampled before every block but head_0 (and G_middle_1 in "normal")
            x = x if name == "head_0" or (name == "G_middle_1" and not more) else up(x)
            x = getattr(self, name)(x, segmap)
        return torch.tanh(self.conv_img(F.leaky_relu(x, 0.2)))


class ConcatGenerator(BaselineDecoder):
    """'decoder w/ Concat' (SPADE Table 4): ConcatNorm in place of SPADE, so the label map feeds every block
    conv. The paper gives no wiring; this one has 79.25M parameters at 151 channels (paper: 79M; concatenating
    only at each block's input would give 73.8M)."""

    def __init__(self, semantic_nc: int, ngf: int = 64, crop_size: int = 256, aspect_ratio: float = 1.0,
                 num_upsampling_layers: str = "normal", param_free: str = "batch", spectral: bool = True):
        super().__init__(semantic_nc, ngf, crop_size, aspect_ratio, num_upsampling_layers,
                         lambda nc: ConcatNorm(nc, semantic_nc, param_free), spectral, extra_in=semantic_nc)
        init_weights(self)


class CLADEGenerator(BaselineDecoder):
    """The SPADE decoder with norm.CLADE (Tan et al., TPAMI 2021; no distance-map input). With use_edges the
    last segmap channel is the instance-edge map, which each norm appends as one channel (official CLADE)."""

    def __init__(self, semantic_nc: int, ngf: int = 64, crop_size: int = 256, aspect_ratio: float = 1.0,
                 num_upsampling_layers: str = "normal", param_free: str = "batch", spectral: bool = True,
                 use_edges: bool = False):
        classes = semantic_nc - int(use_edges)
        super().__init__(semantic_nc, ngf, crop_size, aspect_ratio, num_upsampling_layers,
                         lambda nc: norm.CLADE(nc, classes, param_free, use_edges), spectral,
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
# Building from a run's arguments, and a loaded generator ready to feed


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


@dataclass
class LoadedModel:
    """A trained generator with everything needed to feed it: dataset, size, label layout, encoder."""

    path: str
    """checkpoint file"""
    name: str
    """row label in tables: the model (+VAE) and the checkpoint's file name"""
    model: str
    """generator kind: spade, sean, concat, pix2pixhd or clade"""
    use_vae: bool
    """SPADE with the VAE encoder (multi-modal, style from an image)"""
    G: nn.Module
    """the generator, eval mode"""
    E: nn.Module | None
    """SPADE's VAE encoder, or None"""
    dataset: str
    """dataset name of the training run"""
    dataroot: str | None
    """dataset folder of the training run (None for synthetic)"""
    size: tuple[int, int]
    """(H, W) the generator produces"""
    info: object
    """data.DatasetInfo of the dataset"""
    use_instance: bool
    """the generator's input carries the instance edge channel"""
    z_dim: int = 256
    """VAE latent size"""
    seed: int = 0
    """seed of the training run (the synthetic dataset's seed)"""
    config: dict = field(default_factory=dict)
    """the training run's arguments as saved in the checkpoint"""

    @property
    def semantic_nc(self) -> int:
        return self.info.semantic_nc(self.use_instance)

    @property
    def has_style(self) -> bool:
        """Can take the style of a real image (SEAN's style codes, SPADE's VAE encoding)."""
        return self.model == "sean" or self.use_vae

    def segmap(self, label: torch.Tensor, instance: torch.Tensor | None = None) -> torch.Tensor:
        """Generator input of label ids (data.make_segmap checks every id)."""
        if self.use_instance and instance is None:
            instance = label  # no instance map: region boundaries stand in for instance edges
        return data.make_segmap(label, self.info, instance if self.use_instance else None)

    @torch.no_grad()
    def style_codes(self, image: torch.Tensor, label: torch.Tensor, instance=None) -> torch.Tensor:
        """SEAN: the (B, num_regions, style_dim) style codes of (B, 3, H, W) images with their label maps."""
        dev = next(self.G.parameters()).device
        return self.G.encode_style(image.to(dev), self.segmap(label, instance).to(dev))

    @torch.no_grad()
    def generate(self, segmap: torch.Tensor, image: torch.Tensor | None = None, style_codes=None,
                 generator: torch.Generator | None = None, z: torch.Tensor | None = None) -> torch.Tensor:
        """One image per segmap, in the style of ``image`` (SEAN codes / SPADE-VAE encoder mean), of
        ``style_codes`` (SEAN) or of ``z`` (SPADE-VAE; random from ``generator`` when not given)."""
        if self.model == "sean":
            if style_codes is not None:
                return self.G(segmap, style_codes=style_codes)
            if image is None:
                raise ValueError("SEAN needs a style: a real image or style codes")
            return self.G(segmap, image=image)
        if self.use_vae:
            if image is not None:
                z = self.E(image)[0]  # the encoder's mean
            elif z is None:
                z = torch.randn(segmap.shape[0], self.z_dim, generator=generator)
            return self.G(segmap, z=z.to(segmap.device))
        return self.G(segmap)


    @classmethod
    def from_run(cls, path, name: str, config: dict, G: nn.Module, E: nn.Module | None,
                 info) -> "LoadedModel":
        """The networks of a run, described by its arguments (train.Args as a dict)."""
        return cls(str(path), name, config["model"], bool(config["vae"]), G, E, config["dataset"],
                   config.get("dataroot") or None, config_size(config), info,
                   bool(config["use_instance"] and info.has_instance), config["z_dim"], config["seed"],
                   dict(config))


def with_region_style(codes: torch.Tensor, source: torch.Tensor, k: int) -> torch.Tensor:
    """SEAN per-region style transfer: a copy of the codes (B, R, D) whose region k takes ``source``'s."""
    out = codes.clone()
    out[:, k] = source[:, k]
    return out


def config_size(config: dict) -> tuple[int, int]:
    """(H, W) a run's generator makes, from its arguments (train.Args as a dict)."""
    return round(config["crop_size"] / config["aspect_ratio"]), config["crop_size"]

# ----------------------------------------------------------------------------------------------------------
# The parameter-count table (`python models.py`)


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
