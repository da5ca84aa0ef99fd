"""Losses of SPADE (Park et al., CVPR 2019) and SEAN (Zhu et al., CVPR 2020), as the official training code
(NVlabs/SPADE, ZPdesu/SEAN), which differs from the papers' text: the multiscale GAN loss is the mean over
scales of each scale's mean; feature matching is weighted lambda_fm / num_D and summed over layers and scales;
the KL term is summed over all elements; VGG19 sees the [-1, 1] images without ImageNet normalization.

Discriminator outputs follow models.MultiscaleDiscriminator: per scale a list of features ending with the
prediction map. A bare tensor (single-scale prediction) works too.
"""

import os
import urllib.parse
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

import data

# ----------------------------------------------------------------------------------------------------------
# Adversarial loss

GAN_MODES = ("hinge", "ls", "bce")


def _gan_loss_single(pred: torch.Tensor, target_is_real: bool, for_discriminator: bool,
                     mode: str) -> torch.Tensor:
    """Loss of one prediction map, averaged over all of its elements."""
    if mode == "hinge":
        if not for_discriminator:
            if not target_is_real:
                raise ValueError("the generator's hinge loss must target real (target_is_real=True)")
            # L_G = -\mathbb{E}\left[D(s, G(s))\right]
            return -pred.mean()
        if target_is_real:
            # L_D^{real} = -\mathbb{E}\left[\min\left(0, -1 + D(s, x)\right)\right]
            return -torch.clamp(pred - 1.0, max=0.0).mean()
        # L_D^{fake} = -\mathbb{E}\left[\min\left(0, -1 - D(s, G(s))\right)\right]
        return -torch.clamp(-pred - 1.0, max=0.0).mean()
    # LS and BCE: the generator asks for the "real" label (for BCE the non-saturating -log sigmoid(D(G(s))))
    target = torch.full_like(pred, 1.0 if target_is_real else 0.0)
    if mode == "ls":
        return F.mse_loss(pred, target)
    return F.binary_cross_entropy_with_logits(pred, target)


def gan_loss(pred, target_is_real: bool, for_discriminator: bool = True, mode: str = "hinge") -> torch.Tensor:
    """Adversarial loss (hinge / least squares / non-saturating BCE with logits) as a 0-dim tensor. pred: a
    tensor, or per scale a tensor or a feature list ending with the prediction. Each scale's loss is a mean
    over its elements, then scales are averaged (official: a coarse scale weighs as much as a fine one)."""
    if mode == "original":  # the official code's name for the BCE loss
        mode = "bce"
    if mode not in GAN_MODES:
        raise ValueError(f"unknown GAN mode {mode!r}, expected one of {GAN_MODES}")
    if isinstance(pred, torch.Tensor):
        return _gan_loss_single(pred, target_is_real, for_discriminator, mode)
    per_scale = [_gan_loss_single(p[-1] if isinstance(p, (list, tuple)) else p, target_is_real,
                                  for_discriminator, mode) for p in pred]
    return torch.stack(per_scale).mean()


def split_fake_real(pred):
    """Split the discriminator's output on cat([fake, real], dim=0) into (pred_fake, pred_real) (one batch
    shares the normalization statistics, as officially). Works on tensors and nested lists of them."""
    if isinstance(pred, torch.Tensor):
        if pred.size(0) % 2:
            raise ValueError(f"batch of {pred.size(0)} cannot hold equal halves of fake and real")
        half = pred.size(0) // 2
        return pred[:half], pred[half:]
    halves = [split_fake_real(p) for p in pred]
    return [h[0] for h in halves], [h[1] for h in halves]


# ----------------------------------------------------------------------------------------------------------
# Feature matching


def feature_matching_loss(pred_fake, pred_real, lambda_fm: float = 10.0) -> torch.Tensor:
    """L1 between the discriminator's intermediate features (not the prediction) of fake and detached real:
    a mean per layer (the 1/N_i), summed over layers and scales, weighted lambda_fm / num_D (official)."""
    if not all(isinstance(p, (list, tuple)) for p in (*pred_fake, *pred_real)):
        raise TypeError("feature matching needs, per scale, a list of features ending with the prediction")
    num_D = len(pred_fake)
    loss = pred_fake[0][0].new_zeros(())
    for feats_fake, feats_real in zip(pred_fake, pred_real, strict=True):
        # L_{FM} = \mathbb{E}_{(s,x)} \sum_{i=1}^{T} \frac{1}{N_i}
        #          \left\| D^{(i)}(s, x) - D^{(i)}(s, G(s)) \right\|_1
        for f_fake, f_real in zip(feats_fake[:-1], feats_real[:-1], strict=True):
            loss = loss + F.l1_loss(f_fake, f_real.detach()) * (lambda_fm / num_D)
    return loss


# ----------------------------------------------------------------------------------------------------------
# Perceptual loss (VGG19)

VGG19_URL = torchvision.models.VGG19_Weights.IMAGENET1K_V1.url
# end (exclusive) in vgg19().features of relu1_1, relu2_1, relu3_1, relu4_1, relu5_1, and their L1 weights
VGG19_SLICE_ENDS = (2, 7, 12, 21, 30)
VGG19_LAYER_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)


class VGGWeightsNotFoundError(FileNotFoundError):
    """The ImageNet VGG19 checkpoint is not on disk and could not be downloaded."""


def vgg19_checkpoint_path() -> str:
    """Where torchvision caches the VGG19 ImageNet checkpoint: <torch hub dir>/checkpoints/<file name>."""
    name = os.path.basename(urllib.parse.urlparse(VGG19_URL).path)
    return os.path.join(torch.hub.get_dir(), "checkpoints", name)


def load_vgg19_imagenet_state_dict(allow_download: bool = True, download_timeout: float = 10.0) -> dict:
    """torchvision's VGG19 (IMAGENET1K_V1) state dict from the torch hub cache (one download try if allowed);
    never random weights: raises VGGWeightsNotFoundError."""
    path, reason = data.hub_file(VGG19_URL, allow_download, download_timeout)
    if path is None:
        expected = Path(vgg19_checkpoint_path())
        raise VGGWeightsNotFoundError(
            f"The perceptual (VGG) loss needs torchvision's ImageNet VGG19 weights, file '{expected.name}', "
            f"expected at '{data.shown(expected)}' ({reason}). Download {VGG19_URL} on a machine with "
            f"network access and copy it to that path (the torch hub checkpoint folder; set TORCH_HOME to "
            f"move it), or train without the perceptual loss: --no-vgg-loss (lambda_vgg=0).")
    return torch.load(path, map_location="cpu", weights_only=True)


class VGG19Features(nn.Module):
    """Frozen VGG19 returning the activations relu1_1, relu2_1, relu3_1, relu4_1, relu5_1."""

    def __init__(self, weights: str | None = "imagenet", allow_download: bool = True):
        super().__init__()
        # on the meta device: the unused 100M-parameter classifier is never allocated
        with torch.device("meta"):
            features = torchvision.models.vgg19(weights=None).features[: VGG19_SLICE_ENDS[-1]]
        if weights == "imagenet":
            state = load_vgg19_imagenet_state_dict(allow_download)
            state = {k.removeprefix("features."): v for k, v in state.items()
                     if k.startswith("features.") and int(k.split(".")[1]) < VGG19_SLICE_ENDS[-1]}
            features.load_state_dict(state, strict=True, assign=True)
        elif weights is None:
            # random weights (tests), initialised as torchvision does
            features = features.to_empty(device="cpu")
            for m in features.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                    nn.init.zeros_(m.bias)
        else:
            raise ValueError(f"weights must be 'imagenet' or None, got {weights!r}")
        starts = (0,) + VGG19_SLICE_ENDS[:-1]
        self.slices = nn.ModuleList(features[a:b] for a, b in zip(starts, VGG19_SLICE_ENDS, strict=True))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        return super().train(False)  # stays in eval mode even inside a model switched to train()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for s in self.slices:
            x = s(x)
            outs.append(x)
        return outs


class VGGLoss(nn.Module):
    """Perceptual loss: weighted L1 between VGG19 activations of fake and real. Images go in as they are, in
    [-1, 1], without ImageNet normalization, as the official code. lambda_vgg is applied by the objective."""

    def __init__(self, weights: str | None = "imagenet", allow_download: bool = True):
        super().__init__()
        self.vgg = VGG19Features(weights, allow_download)
        self.weights = VGG19_LAYER_WEIGHTS

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        feats_fake, feats_real = self.vgg(fake), self.vgg(real)
        loss = fake.new_zeros((), dtype=torch.float32)
        for w, f_fake, f_real in zip(self.weights, feats_fake, feats_real, strict=True):
            # the network may run under bf16 autocast; the loss arithmetic is float32
            # L_{Percep} = \lambda \sum_{i=1}^{N} \frac{1}{M_i} \left\| F^{(i)}(x) - F^{(i)}(G(s)) \right\|_1
            loss = loss + w * F.l1_loss(f_fake.float(), f_real.detach().float())
        return loss


# ----------------------------------------------------------------------------------------------------------
# VAE (SPADE's multimodal synthesis)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Sample z ~ N(mu, exp(logvar)) differentiably in mu and logvar."""
    # z = \mu + \sigma \odot \epsilon, \quad \epsilon \sim \mathcal{N}(0, I)
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


KL_IMAGES_PER_GPU = 4
"""Images per GPU in the official SPADE recipe (batch 32 on 8 GPUs), over which its KL term is summed."""


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over batch and dimensions as the official code does."""
    # L_{KL} = D_{KL}\left(q(z|x) \,\|\, \mathcal{N}(0, I)\right)
    #        = -\frac{1}{2} \sum \left(1 + \log\sigma^2 - \mu^2 - \sigma^2\right)
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


# ----------------------------------------------------------------------------------------------------------
# Full objectives


def spade_generator_loss(pred_fake, pred_real, fake: torch.Tensor, real: torch.Tensor,
                         mu: torch.Tensor | None = None, logvar: torch.Tensor | None = None,
                         vgg: VGGLoss | None = None, lambda_fm: float = 10.0, lambda_vgg: float = 10.0,
                         lambda_kl: float = 0.05, gan_mode: str = "hinge") -> dict[str, torch.Tensor]:
    """SPADE generator (and encoder) loss: weighted terms "gan", "fm", "vgg", "kl" and their "total"; a term
    is left out (not zero) when disabled (lambda 0, vgg None, no mu/logvar). pred_*: see split_fake_real."""
    terms = {"gan": gan_loss(pred_fake, True, for_discriminator=False, mode=gan_mode)}
    if lambda_fm:
        terms["fm"] = feature_matching_loss(pred_fake, pred_real, lambda_fm)
    if vgg is not None and lambda_vgg:
        terms["vgg"] = lambda_vgg * vgg(fake, real)
    if mu is not None and logvar is not None and lambda_kl:
        # lambda_KL = 0.05 is for the official KL summed over 4 images per GPU, averaged over 8 GPUs: 4 x the
        # per-image mean, written so to keep the weight per image at any batch size and process count
        # L_{KL} = \frac{4}{B} \sum_{b=1}^{B} D_{KL}\left(q(z|x_b) \,\|\, \mathcal{N}(0, I)\right)
        terms["kl"] = lambda_kl * KL_IMAGES_PER_GPU * kl_divergence(mu, logvar) / mu.shape[0]
    # \min_G \left( \max_D L_{GAN} + L_{Percep} + L_{FM} + L_{KL} \right)
    # (generator side: the weights lambda are already inside each term)
    terms["total"] = sum(terms.values())
    return terms


def spade_discriminator_loss(pred_fake, pred_real, gan_mode: str = "hinge") -> dict[str, torch.Tensor]:
    """SPADE discriminator loss: "d_fake", "d_real" and "total" (the fake image should be detached)."""
    terms = {"d_fake": gan_loss(pred_fake, False, for_discriminator=True, mode=gan_mode),
             "d_real": gan_loss(pred_real, True, for_discriminator=True, mode=gan_mode)}
    # \max_D L_{GAN}, i.e. \min_D \; -\mathbb{E}[\min(0, -1 + D(s, x))] - \mathbb{E}[\min(0, -1 - D(s, G(s)))]
    terms["total"] = terms["d_fake"] + terms["d_real"]
    return terms


def sean_generator_loss(pred_fake, pred_real, fake: torch.Tensor, real: torch.Tensor,
                        vgg: VGGLoss | None = None, lambda_fm: float = 10.0, lambda_vgg: float = 10.0,
                        gan_mode: str = "hinge") -> dict[str, torch.Tensor]:
    """SEAN generator (and style encoder) loss: SPADE's without KL. D1, D2 are the num_D=2 scales, over which
    the official code averages (absorbing the 1/2 into lambda_1 and the GAN scale)."""
    # \min_{E,G} \left( \left(\max_{D_1,D_2} \sum_{k=1,2} L_{GAN}\right)
    #           + \lambda_1 \sum_{k=1,2} L_{FM} + \lambda_2 L_{percept} \right), with
    # L_{FM} = \mathbb{E} \sum_{i=1}^{T} \frac{1}{N_i}
    #          \left\| D_k^{(i)}(R, M) - D_k^{(i)}(G(ST, M), M) \right\|_1,
    # L_{percept} = \mathbb{E} \sum_{i=1}^{N} \frac{1}{M_i} \left\| F^{(i)}(R) - F^{(i)}(G(ST, M)) \right\|_1
    return spade_generator_loss(pred_fake, pred_real, fake, real, vgg=vgg, lambda_fm=lambda_fm,
                                lambda_vgg=lambda_vgg, gan_mode=gan_mode)


def sean_discriminator_loss(pred_fake, pred_real, gan_mode: str = "hinge") -> dict[str, torch.Tensor]:
    """SEAN discriminator loss: the same hinge loss as SPADE's over the scales D1, D2."""
    # \max_{D_1,D_2} \sum_{k=1,2} L_{GAN}(G, D_k)
    return spade_discriminator_loss(pred_fake, pred_real, gan_mode)
