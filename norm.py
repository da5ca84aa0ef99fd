"""Normalization layers for semantic image synthesis: SPADE (Park et al., CVPR 2019, Sec. 3), SEAN (Zhu et
al., CVPR 2020, Sec. 3) and CLADE (Tan et al., TPAMI 2021).

Each layer normalizes with a parameter-free norm, then modulates with gamma and beta computed from the
segmentation map (SEAN: also from per-region style codes). Parameter layouts match the official code, so
whole generators have the official parameter counts. `python norm.py` runs a small wash-out demo.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["batch_stats", "instance_stats", "normalize", "make_param_free_norm", "region_average_pool",
           "SPADE", "SEAN", "sean_paper_form", "CLADE"]


# ----------------------------------------------------------------------------------------------------------
# Parameter-free statistics, from scratch (EQUATIONS.md 1-2)


def batch_stats(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch-norm statistics of h (N, C, H, W): mu and sigma of shape (1, C, 1, 1), biased variance."""
    # \mu_c^i = \frac{1}{N H^i W^i} \sum_{n,y,x} h^i_{n,c,y,x}
    mu = h.mean(dim=(0, 2, 3), keepdim=True)
    # \sigma_c^i = \sqrt{ \frac{1}{N H^i W^i} \sum_{n,y,x} (h^i_{n,c,y,x})^2 - (\mu_c^i)^2 }
    # clamp: E[h^2] - mu^2 can round to a tiny negative number when h is constant
    sigma = ((h * h).mean(dim=(0, 2, 3), keepdim=True) - mu * mu).clamp_min(0).sqrt()
    return mu, sigma


def instance_stats(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Instance-norm statistics of h (N, C, H, W): mu and sigma of shape (N, C, 1, 1), biased variance."""
    # \mu_{n,c}^i = \frac{1}{H^i W^i} \sum_{y,x} h^i_{n,c,y,x}
    mu = h.mean(dim=(2, 3), keepdim=True)
    # \sigma_{n,c}^i = \sqrt{ \frac{1}{H^i W^i} \sum_{y,x} (h^i_{n,c,y,x})^2 - (\mu_{n,c}^i)^2 }
    sigma = ((h * h).mean(dim=(2, 3), keepdim=True) - mu * mu).clamp_min(0).sqrt()
    return mu, sigma


def normalize(h: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """(h - mu) / sigma, with torch's eps inside the square root, as nn.BatchNorm2d/InstanceNorm2d."""
    return (h - mu) / torch.sqrt(sigma * sigma + eps)


def make_param_free_norm(kind: str, num_features: int) -> nn.Module:
    """The normalization before modulation, affine=False (gamma/beta come from the mask). "syncbatch" equals
    "batch" on one process and synchronizes statistics under DistributedDataParallel."""
    kinds = {"batch": nn.BatchNorm2d, "instance": nn.InstanceNorm2d, "syncbatch": nn.SyncBatchNorm}
    if kind not in kinds:
        raise ValueError(f"param_free must be one of 'batch', 'instance', 'syncbatch', got {kind!r}")
    return kinds[kind](num_features, affine=False)


# ----------------------------------------------------------------------------------------------------------
# Helpers


def _check_segmap(layer: str, segmap: torch.Tensor, x: torch.Tensor, label_nc: int) -> None:
    if segmap.dim() != 4 or segmap.shape[0] != x.shape[0] or segmap.shape[1] != label_nc:
        raise ValueError(
            f"{layer} expected segmap of shape (B, label_nc, H, W) = ({x.shape[0]}, {label_nc}, H, W), "
            f"got {tuple(segmap.shape)}"
        )


def resize_segmap(segmap: torch.Tensor, size) -> torch.Tensor:
    """The segmap at a layer's size; nearest keeps a one-hot map one-hot (bilinear would blend labels)."""
    if segmap.shape[2:] == size:
        return segmap
    return F.interpolate(segmap, size=size, mode="nearest")


def add_noise(x: torch.Tensor, noise_var: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
    """SEAN's noise (official): one N(0, 1) value per pixel shared by all channels, scaled per channel by
    noise_var, in training and evaluation alike. noise: a given (B, 1, H, W) draw."""
    if noise is None:
        noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
    # h_{n,c,y,x} \leftarrow h_{n,c,y,x} + \nu_c \, z_{n,y,x},\quad z \sim \mathcal{N}(0, 1)
    return x + noise * noise_var.view(1, -1, 1, 1)


def region_average_pool(features: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
    """SEAN's region-wise average pooling: features (B, C, H, W), segmap (B, K, H', W') -> ST (B, K, C), row
    k the mean feature over region k (zero if absent). One-hot: the official masked mean; soft: weights."""
    if features.dim() != 4 or segmap.dim() != 4 or segmap.shape[0] != features.shape[0]:
        raise ValueError(
            f"region_average_pool expected features (B, C, H, W) and segmap (B, K, H, W) with the same B, "
            f"got {tuple(features.shape)} and {tuple(segmap.shape)}"
        )
    m = resize_segmap(segmap, features.shape[2:]).to(features.dtype)
    # ST_{:,j} = \frac{1}{|M_j|} \sum_{p \in M_j} F_p   (zero when |M_j| = 0)
    summed = torch.einsum("bkhw,bchw->bkc", m, features)
    area = m.sum(dim=(2, 3)).unsqueeze(-1)  # (B, K, 1)
    return summed / area.clamp_min(1e-8) * (area > 0)


# ----------------------------------------------------------------------------------------------------------
# SPADE


class SPADE(nn.Module):
    """Spatially-adaptive normalization: gamma and beta are maps computed from the mask. Official layout:
    mlp_shared = conv(label_nc -> hidden) + ReLU, mlp_gamma / mlp_beta = conv(hidden -> norm_nc)."""

    def __init__(self, norm_nc: int, label_nc: int, hidden: int = 128, kernel_size: int = 3,
                 param_free: str = "batch"):
        super().__init__()
        self.norm_nc, self.label_nc = norm_nc, label_nc
        self.param_free_norm = make_param_free_norm(param_free, norm_nc)
        pw = kernel_size // 2
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc, hidden, kernel_size, padding=pw), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, norm_nc, kernel_size, padding=pw)
        self.mlp_beta = nn.Conv2d(hidden, norm_nc, kernel_size, padding=pw)

    def gamma_beta(self, segmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """gamma(m), beta(m) of shape (B, norm_nc, H, W) for a segmap already at the target size."""
        actv = self.mlp_shared(segmap)
        return self.mlp_gamma(actv), self.mlp_beta(actv)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        _check_segmap("SPADE", segmap, x, self.label_nc)
        normalized = self.param_free_norm(x)
        gamma, beta = self.gamma_beta(resize_segmap(segmap, x.shape[2:]).to(x.dtype))
        # Why 1 + gamma: gamma ~ 0 at init, so the layer starts as the identity on the normalized signal; a
        # plain gamma ~ 0 would multiply the signal (and its gradient) by ~0 at the start of training.
        # out_{n,c,y,x} = \gamma_{c,y,x}(m) \frac{h_{n,c,y,x} - \mu_c}{\sigma_c} + \beta_{c,y,x}(m)
        #   (the code's \gamma is 1 + \gamma_{net})
        return normalized * (1 + gamma) + beta


# ----------------------------------------------------------------------------------------------------------
# SEAN


class SEAN(nn.Module):
    """Semantic region-adaptive normalization (official: ACE with use_rgb=True). Parameters: the K per-class
    Linear(S, S) as fc_mu_weight (K, S, S) / fc_mu_bias (K, S); conv_gamma, conv_beta on the style map; a
    SPADE branch (gamma^o, beta^o); blending_gamma / _beta (init 0: alpha 0.5); noise_var (if use_noise).

    Regions are the first num_regions segmap channels (classes + don't-care, a partition of the image);
    later channels (instance edges) reach gamma/beta only through the SPADE branch.
    Why forward equals sean_paper_form: a conv is linear, so conv(sum_k v_k M_k) = sum_k (W . v_k) * M_k;
    each sample's style vectors fold into a kernel over the K mask channels, run as one grouped conv (zero
    padding keeps it exact). Soft maps sum the regions' styles; the official masked_scatter lets the last win.
    """

    def __init__(self, norm_nc: int, label_nc: int, style_dim: int = 512, hidden: int = 128,
                 kernel_size: int = 3, param_free: str = "batch", use_noise: bool = True,
                 num_regions: int | None = None):
        super().__init__()
        self.norm_nc, self.label_nc, self.style_dim, self.use_noise = norm_nc, label_nc, style_dim, use_noise
        self.num_regions = label_nc if num_regions is None else num_regions
        if not 1 <= self.num_regions <= label_nc:
            raise ValueError(f"SEAN: num_regions must be in 1..label_nc={label_nc}, got {num_regions}")
        self.param_free_norm = make_param_free_norm(param_free, norm_nc)
        # init as nn.Linear: U(-1/sqrt(in), 1/sqrt(in))
        bound = 1.0 / math.sqrt(style_dim)
        R = self.num_regions
        self.fc_mu_weight = nn.Parameter(torch.empty(R, style_dim, style_dim).uniform_(-bound, bound))
        self.fc_mu_bias = nn.Parameter(torch.empty(R, style_dim).uniform_(-bound, bound))
        pw = kernel_size // 2
        self.conv_gamma = nn.Conv2d(style_dim, norm_nc, kernel_size, padding=pw)
        self.conv_beta = nn.Conv2d(style_dim, norm_nc, kernel_size, padding=pw)
        # the mask-only branch; its own param-free norm is unused, as in the official code
        self.spade = SPADE(norm_nc, label_nc, hidden, kernel_size, param_free)
        self.blending_gamma = nn.Parameter(torch.zeros(1))
        self.blending_beta = nn.Parameter(torch.zeros(1))
        if use_noise:
            self.noise_var = nn.Parameter(torch.zeros(norm_nc))

    def region_styles(self, style_codes: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        """Per-class FC + ReLU: ST (B, K, S) -> v (B, K, S), 0 for absent classes (official name: mu)."""
        # v_{b,k} = \mathrm{ReLU}(W_k ST_{:,k} + b_k), all classes at once
        # as W_k (t, s) @ ST_k (s, b): the weight's gradient comes out in its own (K, t, s) layout (an einsum
        # paid a transposed copy of K S^2 floats, 20 MB per layer at S = 512, in every backward)
        v = torch.bmm(self.fc_mu_weight, style_codes.permute(1, 2, 0)).permute(2, 0, 1)  # (B, K, t)
        v = F.relu(v + self.fc_mu_bias)
        # absent classes contribute nothing (their mask channel is 0); where() also stops NaN/inf codes there
        present = (segmap != 0).flatten(2).any(dim=2).unsqueeze(-1)  # (B, K, 1)
        return torch.where(present, v, torch.zeros_like(v))

    def forward(self, x: torch.Tensor, segmap: torch.Tensor, style_codes: torch.Tensor,
                noise: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, C, H, W), segmap (B, label_nc, *, *), style_codes (B, num_regions, style_dim) -> like x.
        noise: optional (B, 1, H, W) standard-normal draw."""
        _check_segmap("SEAN", segmap, x, self.label_nc)
        expected = (x.shape[0], self.num_regions, self.style_dim)
        if tuple(style_codes.shape) != expected:
            raise ValueError(f"SEAN expected style_codes of shape (B, num_regions, style_dim) = {expected}, "
                             f"got {tuple(style_codes.shape)}")
        if self.use_noise:
            x = add_noise(x, self.noise_var, noise)
        normalized = self.param_free_norm(x)

        segmap = resize_segmap(segmap, x.shape[2:]).to(x.dtype)
        regions = segmap[:, :self.num_regions]  # the style branch sees only the region channels
        B, K, H, W = regions.shape
        C = self.norm_nc
        v = self.region_styles(style_codes.to(x.dtype), regions)  # (B, K, S)
        a_g = torch.sigmoid(self.blending_gamma)
        a_b = torch.sigmoid(self.blending_beta)

        # gamma/beta are linear in the conv weights: blend the (small) weights, not the (B, C, H, W) maps
        # \gamma = \alpha_\gamma \gamma^s + (1 - \alpha_\gamma) \gamma^o
        # \beta = \alpha_\beta \beta^s + (1 - \alpha_\beta) \beta^o
        w_s = torch.cat([a_g * self.conv_gamma.weight, a_b * self.conv_beta.weight])  # (2C, S, kh, kw)
        w_o = torch.cat([(1 - a_g) * self.spade.mlp_gamma.weight, (1 - a_b) * self.spade.mlp_beta.weight])
        bias = torch.cat([a_g * self.conv_gamma.bias + (1 - a_g) * self.spade.mlp_gamma.bias,
                          a_b * self.conv_beta.bias + (1 - a_b) * self.spade.mlp_beta.bias])
        kh, kw = w_s.shape[2:]
        pad = (kh // 2, kw // 2)

        # \gamma^o_{c,y,x}(M), \beta^o_{c,y,x}(M): the SPADE branch on the mask alone
        gamma_beta = F.conv2d(self.spade.mlp_shared(segmap), w_o, bias, padding=pad)

        # \gamma^s_{c,y,x}(ST), \beta^s_{c,y,x}(ST) = \mathrm{conv}\big(\sum_k v_k M_k\big)
        #   = \sum_k (W \cdot v_k) * M_k
        # fold each sample's style vectors into a kernel over the K mask channels: (B, 2C, K, kh, kw) ...
        kernel = torch.einsum("csij,bks->bckij", w_s, v)
        # ... and run it as one grouped conv, group b = sample b (its K mask channels -> its 2C outputs)
        style = F.conv2d(regions.reshape(1, B * K, H, W), kernel.reshape(B * 2 * C, K, kh, kw),
                         padding=pad, groups=B)
        gamma_beta = gamma_beta + style.reshape(B, 2 * C, H, W)
        gamma, beta = gamma_beta.split(C, dim=1)
        # out = \gamma_{c,y,x} \frac{h_{n,c,y,x} - \mu_c}{\sigma_c} + \beta_{c,y,x}   (code: 1 + \gamma)
        return torch.addcmul(beta, normalized, 1 + gamma)


def sean_paper_form(layer: SEAN, x: torch.Tensor, segmap: torch.Tensor, style_codes: torch.Tensor,
                    noise: torch.Tensor | None = None) -> torch.Tensor:
    """`layer` computed as the paper draws it (SEAN §3.2, Fig. 3): build the style map, conv it, blend with
    the SPADE branch. Same result as layer(x, segmap, style_codes, noise); the reference for SEAN.forward."""
    if layer.use_noise:
        x = add_noise(x, layer.noise_var, noise)
    normalized = layer.param_free_norm(x)
    segmap = resize_segmap(segmap, x.shape[2:]).to(x.dtype)
    style_map = torch.zeros(x.shape[0], layer.style_dim, *x.shape[2:], dtype=x.dtype, device=x.device)
    for k in range(layer.num_regions):
        region = segmap[:, k:k + 1]  # M_k, (B, 1, H, W)
        present = region.flatten(1).any(dim=1)  # an absent class contributes nothing (even a NaN code)
        # v_k = \mathrm{ReLU}(W_k ST_{:,k} + b_k): class k's own FC layer on region k's style vector
        v = F.relu(F.linear(style_codes[:, k].to(x.dtype), layer.fc_mu_weight[k], layer.fc_mu_bias[k]))
        v = torch.where(present[:, None], v, torch.zeros_like(v))
        # the style map \sum_k v_k M_k: v_k broadcast over the pixels of region k
        style_map = style_map + v[:, :, None, None] * region
    # \gamma^s_{c,y,x}(ST), \beta^s_{c,y,x}(ST): convs on the style map
    gamma_s, beta_s = layer.conv_gamma(style_map), layer.conv_beta(style_map)
    # \gamma^o_{c,y,x}(M), \beta^o_{c,y,x}(M): the SPADE branch on the mask
    gamma_o, beta_o = layer.spade.gamma_beta(segmap)
    a_g, a_b = torch.sigmoid(layer.blending_gamma), torch.sigmoid(layer.blending_beta)
    # \gamma = \alpha_\gamma \gamma^s + (1 - \alpha_\gamma) \gamma^o, \quad
    # \beta = \alpha_\beta \beta^s + (1 - \alpha_\beta) \beta^o
    gamma = a_g * gamma_s + (1 - a_g) * gamma_o
    beta = a_b * beta_s + (1 - a_b) * beta_o
    # out = \gamma_{c,y,x} \frac{h_{n,c,y,x} - \mu_c}{\sigma_c} + \beta_{c,y,x}   (code: 1 + \gamma)
    return normalized * (1 + gamma) + beta


# ----------------------------------------------------------------------------------------------------------
# CLADE


class CLADE(nn.Module):
    """Class-adaptive normalization (official ClassAffine): gamma, beta looked up per class in the tables
    weight ~ U(0, 1) and bias = 0 (a plain gamma, not 1 + gamma). label_nc counts the classes; with use_edges
    the last segmap channel (instance edges) goes through a 1x1 conv and is appended as one output channel."""

    def __init__(self, norm_nc: int, label_nc: int, param_free: str = "batch", use_edges: bool = False):
        super().__init__()
        self.norm_nc, self.label_nc, self.use_edges = norm_nc, label_nc, use_edges
        self.param_free_norm = make_param_free_norm(param_free, norm_nc)
        self.weight = nn.Parameter(torch.empty(label_nc, norm_nc).uniform_(0, 1))
        self.bias = nn.Parameter(torch.zeros(label_nc, norm_nc))
        if use_edges:
            self.edge_conv = nn.Conv2d(1, 1, 1)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        _check_segmap("CLADE", segmap, x, self.label_nc + int(self.use_edges))
        normalized = self.param_free_norm(x)
        segmap = resize_segmap(segmap, x.shape[2:]).to(x.dtype)
        label = segmap[:, :self.label_nc].argmax(dim=1)  # (B, H, W)
        # \gamma_{c,y,x} = \Gamma_{l(y,x), c},  \beta_{c,y,x} = B_{l(y,x), c}: a table lookup per pixel
        gamma = F.embedding(label, self.weight).permute(0, 3, 1, 2)
        beta = F.embedding(label, self.bias).permute(0, 3, 1, 2)
        out = normalized * gamma + beta
        if self.use_edges:
            out = torch.cat([out, self.edge_conv(segmap[:, self.label_nc:])], dim=1)
        return out


# ----------------------------------------------------------------------------------------------------------
# Demo: the wash-out (EQUATIONS.md 3) and how the modulated layers undo it


def _demo() -> None:
    torch.manual_seed(0)
    K, C, size = 6, 16, 32
    conv = nn.Conv2d(K, C, 3, padding=1, padding_mode="replicate")  # replicate: conv(m) exactly constant
    inorm = nn.InstanceNorm2d(C, affine=False)
    spade = SPADE(C, K, hidden=32, param_free="instance")
    sean = SEAN(C, K, style_dim=32, hidden=32, param_free="instance", use_noise=False)
    clade = CLADE(C, K, param_free="instance")
    with torch.no_grad():
        clade.bias.normal_(0, 0.5)  # pretend CLADE is trained: its beta starts at 0
    style_codes = torch.randn(1, K, 32)
    print("uniform single-label mask -> conv -> norm; max |output| per label")
    print(f"{'label':>5} {'InstanceNorm':>13} {'SPADE':>8} {'SEAN':>8} {'CLADE':>8}")
    with torch.no_grad():
        for k in range(K):
            m = torch.zeros(1, K, size, size)
            m[:, k] = 1
            h = conv(m)
            # \frac{h_{n,c,y,x} - \mu_{n,c}}{\sigma_{n,c}} = 0 \text{ when } h = \mathrm{conv}(m)
            #   \text{ is constant over } (y, x)
            row = [inorm(h), spade(h, m), sean(h, m, style_codes), clade(h, m)]
            cells = [f"{v.abs().max().item():>{w}.4f}" for v, w in zip(row, [13, 8, 8, 8], strict=True)]
            print(f"{k:>5} " + " ".join(cells))
    print("InstanceNorm maps every label to 0 (the mask is washed out); the modulated layers keep it.")


if __name__ == "__main__":
    _demo()
