"""Tests for losses.py: hand-computed values, gradients, the VGG weight loader (the network is never used)."""

import math
import os

import pytest
import torch
import torchvision

import data
import losses

# Logits with mixed signs; asymmetric so that real/fake mix-ups change the numbers.
D = [-1.0, 0.0, 0.5, 3.0]


def _softplus(v: float) -> float:
    return math.log1p(math.exp(v))


@pytest.fixture
def hub_dir(tmp_path):
    """A private, empty torch hub directory (restored afterwards)."""
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub"
    torch.hub.set_dir(old)


# ----------------------------------------------------------------------------------------------------
# GAN losses
# ----------------------------------------------------------------------------------------------------


def test_hinge_discriminator_values_and_signs():
    pred = torch.tensor(D, requires_grad=True)
    real = losses.gan_loss(pred, True, for_discriminator=True)
    # min(0, D - 1) = [-2, -1, -0.5, 0]
    assert real.item() == pytest.approx(3.5 / 4)
    real.backward()
    # Raising D on a real sample lowers the loss until the margin D = 1 is reached, then nothing.
    assert torch.allclose(pred.grad, torch.tensor([-0.25, -0.25, -0.25, 0.0]))

    pred.grad = None
    fake = losses.gan_loss(pred, False, for_discriminator=True)
    # min(0, -D - 1) = [0, -1, -1.5, -4]
    assert fake.item() == pytest.approx(6.5 / 4)
    fake.backward()
    assert torch.allclose(pred.grad, torch.tensor([0.0, 0.25, 0.25, 0.25]))


def test_hinge_generator_value_and_sign():
    pred = torch.tensor(D, requires_grad=True)
    g = losses.gan_loss(pred, True, for_discriminator=False)
    assert g.item() == pytest.approx(-2.5 / 4)
    g.backward()
    # The generator always wants a higher D(fake), with no margin.
    assert torch.allclose(pred.grad, torch.full((4,), -0.25))
    with pytest.raises(ValueError):
        losses.gan_loss(pred, False, for_discriminator=False)


def test_least_squares_values():
    pred = torch.tensor(D)
    assert losses.gan_loss(pred, True, mode="ls").item() == pytest.approx((4 + 1 + 0.25 + 4) / 4)
    assert losses.gan_loss(pred, False, mode="ls").item() == pytest.approx((1 + 0 + 0.25 + 9) / 4)
    # The generator side targets real.
    assert losses.gan_loss(pred, True, for_discriminator=False, mode="ls").item() == pytest.approx(9.25 / 4)


def test_bce_values_non_saturating():
    pred = torch.tensor(D, dtype=torch.float64)
    real = sum(_softplus(-d) for d in D) / 4  # -log sigmoid(D)
    fake = sum(_softplus(d) for d in D) / 4  # -log(1 - sigmoid(D))
    assert losses.gan_loss(pred, True, mode="bce").item() == pytest.approx(real)
    assert losses.gan_loss(pred, False, mode="bce").item() == pytest.approx(fake)
    # Non-saturating generator loss: -log sigmoid(D(fake)), not log(1 - sigmoid(D(fake))).
    assert losses.gan_loss(pred, True, for_discriminator=False, mode="bce").item() == pytest.approx(real)
    assert losses.gan_loss(pred, True, mode="original").item() == pytest.approx(real)
    with pytest.raises(ValueError):
        losses.gan_loss(pred, True, mode="wgan")


def test_multiscale_is_mean_of_per_scale_means():
    # Scales of different sizes: the mean of means (1.0 + 3.0) / 2 differs from the mean over all elements.
    p1 = torch.full((1, 1, 4, 4), -0.0)  # hinge D real: min(0, -1) = -1 -> loss 1
    p2 = torch.full((1, 1, 2, 2), -2.0)  # loss 3
    feat = torch.randn(1, 8, 4, 4)  # intermediate features must be ignored
    nested = [[feat, p1], [feat, p2]]
    assert losses.gan_loss(nested, True).item() == pytest.approx(2.0)
    assert losses.gan_loss([p1, p2], True).item() == pytest.approx(2.0)
    g = losses.gan_loss(nested, True, for_discriminator=False)
    assert g.item() == pytest.approx((0.0 + 2.0) / 2)
    assert g.dim() == 0


def test_split_fake_real():
    x = torch.arange(4.0).view(4, 1)
    fake, real = losses.split_fake_real(x)
    assert fake.flatten().tolist() == [0, 1] and real.flatten().tolist() == [2, 3]
    nested = [[x, x * 10], [x * 100]]
    fake, real = losses.split_fake_real(nested)
    assert [len(s) for s in fake] == [2, 1] and [len(s) for s in real] == [2, 1]
    assert fake[0][1].flatten().tolist() == [0, 10] and real[1][0].flatten().tolist() == [200, 300]
    with pytest.raises(ValueError):
        losses.split_fake_real(torch.zeros(3, 1))


# ----------------------------------------------------------------------------------------------------
# Feature matching
# ----------------------------------------------------------------------------------------------------


def _features():
    """Two scales, intermediate features then the prediction map."""
    return [[torch.randn(2, 4, 8, 8), torch.randn(2, 8, 4, 4), torch.randn(2, 1, 4, 4)],
            [torch.randn(2, 4, 4, 4), torch.randn(2, 1, 2, 2)]]


def test_feature_matching_zero_on_identical_features():
    feats = _features()
    other_pred = [[*s[:-1], s[-1] + 5.0] for s in feats]  # the prediction maps do not count
    assert losses.feature_matching_loss(feats, feats).item() == 0.0
    assert losses.feature_matching_loss(feats, other_pred).item() == 0.0
    with pytest.raises(TypeError):  # bare prediction maps carry no intermediate features
        losses.feature_matching_loss([s[-1] for s in feats], [s[-1] for s in feats])


def test_feature_matching_hand_value_and_detached_real():
    fake = [[torch.zeros(1, 1, 2, 2, requires_grad=True), torch.zeros(1, 2, 1, 1), torch.zeros(1, 1, 1, 1)],
            [torch.full((1, 1, 1, 1), 0.5), torch.zeros(1, 1, 1, 1)]]
    real = [[torch.ones(1, 1, 2, 2, requires_grad=True), torch.tensor([3.0, -1.0]).view(1, 2, 1, 1),
             torch.full((1, 1, 1, 1), 7.0)],
            [torch.zeros(1, 1, 1, 1), torch.full((1, 1, 1, 1), -7.0)]]
    # Per-layer mean L1: 1, 2 (scale 1) and 0.5 (scale 2); sum 3.5, times lambda / num_D = 10 / 2.
    loss = losses.feature_matching_loss(fake, real, lambda_fm=10.0)
    assert loss.item() == pytest.approx(17.5)
    loss.backward()
    assert fake[0][0].grad is not None and real[0][0].grad is None
    assert losses.feature_matching_loss(fake, real, lambda_fm=4.0).item() == pytest.approx(7.0)


# ----------------------------------------------------------------------------------------------------
# KL divergence and reparameterization
# ----------------------------------------------------------------------------------------------------


def test_kl_hand_values_and_closed_form():
    assert losses.kl_divergence(torch.tensor([1.0]), torch.tensor([0.0])).item() == pytest.approx(0.5)
    kl = losses.kl_divergence(torch.tensor([0.0]), torch.tensor([math.log(2.0)])).item()
    assert kl == pytest.approx(0.5 * (1 - math.log(2.0)))
    mu, logvar = torch.randn(3, 16), torch.randn(3, 16)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    expected = torch.distributions.kl_divergence(q, p).sum()  # summed, not averaged (official)
    assert torch.allclose(losses.kl_divergence(mu, logvar), expected, rtol=1e-5)


def test_kl_matches_monte_carlo():
    mu, logvar = 0.7 * torch.randn(4, 8, dtype=torch.float64), 0.5 * torch.randn(4, 8, dtype=torch.float64)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    z = losses.reparameterize(mu.expand(20000, 4, 8), logvar.expand(20000, 4, 8))
    mc = (q.log_prob(z) - p.log_prob(z)).mean()  # E_q[log q - log p] per element
    kl_per_element = losses.kl_divergence(mu, logvar) / mu.numel()
    assert mc.item() == pytest.approx(kl_per_element.item(), abs=0.01)


def test_reparameterize_statistics_and_gradients():
    mu = torch.tensor([1.0, -2.0], requires_grad=True)
    logvar = torch.tensor([0.0, math.log(4.0)], requires_grad=True)
    z = losses.reparameterize(mu.expand(50000, 2), logvar.expand(50000, 2))
    assert torch.allclose(z.mean(0), mu.detach(), atol=0.05)
    assert torch.allclose(z.std(0), torch.tensor([1.0, 2.0]), atol=0.05)
    z.sum().backward()
    assert mu.grad is not None and logvar.grad is not None and logvar.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------------
# VGG perceptual loss
# ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vgg_random():
    torch.manual_seed(0)
    return losses.VGGLoss(weights=None)


def test_vgg_slices_are_relu1_1_to_relu5_1(vgg_random):
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    feats = vgg_random.vgg(x)
    assert [f.shape[1] for f in feats] == [64, 128, 256, 512, 512]
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 4, 2]
    assert all(f.min() >= 0 for f in feats)  # each slice ends on a ReLU
    # relu5_1 is features[29]: 16 convs in VGG19, conv5_1 is the 13th.
    convs = [m for m in vgg_random.vgg.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 13 and isinstance(vgg_random.vgg.slices[-1][-1], torch.nn.ReLU)


def test_vgg_layer_weights_and_value(vgg_random):
    x, y = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    fx, fy = vgg_random.vgg(x), vgg_random.vgg(y)
    weights = [1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0]
    expected = sum(w * (a - b).abs().mean() for w, a, b in zip(weights, fx, fy, strict=True))
    assert torch.allclose(vgg_random(x, y), expected, rtol=1e-5)
    assert vgg_random(x, x).item() == 0.0


def test_vgg_gradients_reach_image_not_vgg(vgg_random):
    fake = (torch.rand(1, 3, 32, 32) * 2 - 1).requires_grad_()
    real = (torch.rand(1, 3, 32, 32) * 2 - 1).requires_grad_()
    vgg_random.train()  # must stay in eval mode
    assert not vgg_random.vgg.training
    vgg_random(fake, real).backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert real.grad is None  # the target is detached
    assert all(not p.requires_grad and p.grad is None for p in vgg_random.parameters())


def _fake_vgg19_checkpoint(path):
    """A random state dict with torchvision's VGG19 feature keys and shapes (no classifier, to stay small)."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in torchvision.models.vgg19().state_dict().items()}
    state = {k: torch.randn(s) for k, s in shapes.items() if k.startswith("features.")}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(state, path)
    return state


def test_imagenet_weights_load_from_hub_dir(hub_dir):
    path = losses.vgg19_checkpoint_path()
    assert path == str(hub_dir / "checkpoints" / "vgg19-dcbb9e9d.pth")
    state = _fake_vgg19_checkpoint(path)
    vgg = losses.VGGLoss(weights="imagenet", allow_download=False)
    assert torch.equal(vgg.vgg.slices[0][0].weight, state["features.0.weight"])
    assert torch.equal(vgg.vgg.slices[4][-2].weight, state["features.28.weight"])  # conv5_1
    assert all(not p.requires_grad for p in vgg.parameters())


def test_missing_weights_error_names_file_path_and_flag(hub_dir):
    for allow_download in (True, False):  # downloading fails: conftest's _no_network cuts it
        with pytest.raises(losses.VGGWeightsNotFoundError) as e:
            losses.VGGLoss(weights="imagenet", allow_download=allow_download)
        msg = str(e.value)
        assert "vgg19-dcbb9e9d.pth" in msg and data.shown(hub_dir / "checkpoints") in msg
        assert "--no-vgg-loss" in msg
    assert not (hub_dir / "checkpoints" / "vgg19-dcbb9e9d.pth").exists()  # nothing half-written


def test_download_path_stores_file_in_hub_dir(hub_dir, monkeypatch):
    calls = []

    def fake_download(url, dst, *args, **kwargs):
        calls.append(url)
        _fake_vgg19_checkpoint(dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    losses.VGGLoss(weights="imagenet")
    assert calls == [torchvision.models.VGG19_Weights.IMAGENET1K_V1.url]
    assert os.path.isfile(losses.vgg19_checkpoint_path())


# ----------------------------------------------------------------------------------------------------
# Full objectives
# ----------------------------------------------------------------------------------------------------


def _tiny_discriminator(x):
    """Two scales of (feature, prediction), differentiable in x: enough to exercise the objectives."""
    out = []
    for _ in range(2):
        feat = torch.tanh(x * 2.0)
        out.append([feat, feat.mean(1, keepdim=True) - 0.1])
        x = torch.nn.functional.avg_pool2d(x, 2)
    return out


def test_spade_objectives_terms_and_weights(vgg_random):
    fake = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_()
    real = torch.rand(2, 3, 32, 32) * 2 - 1
    mu, logvar = torch.randn(2, 8, requires_grad=True), torch.randn(2, 8)
    pred_fake, pred_real = losses.split_fake_real(_tiny_discriminator(torch.cat([fake, real])))
    g = losses.spade_generator_loss(pred_fake, pred_real, fake, real, mu, logvar, vgg=vgg_random)
    assert set(g) == {"gan", "fm", "vgg", "kl", "total"}
    assert torch.allclose(g["gan"], losses.gan_loss(pred_fake, True, for_discriminator=False))
    assert torch.allclose(g["fm"], losses.feature_matching_loss(pred_fake, pred_real, 10.0))
    assert torch.allclose(g["vgg"], 10.0 * vgg_random(fake, real))
    assert torch.allclose(g["kl"], 0.05 * 4 * losses.kl_divergence(mu, logvar) / 2)  # 4 x per-image mean
    assert torch.allclose(g["total"], g["gan"] + g["fm"] + g["vgg"] + g["kl"])
    g["total"].backward()
    assert fake.grad.abs().sum() > 0 and mu.grad.abs().sum() > 0
    assert all(p.grad is None for p in vgg_random.parameters())

    # Disabled terms are left out, not zero.
    g = losses.spade_generator_loss(pred_fake, pred_real, fake, real, lambda_fm=0.0)
    assert set(g) == {"gan", "total"}

    d = losses.spade_discriminator_loss(pred_fake, pred_real)
    assert set(d) == {"d_fake", "d_real", "total"}
    assert torch.allclose(d["d_fake"], losses.gan_loss(pred_fake, False))
    assert torch.allclose(d["d_real"], losses.gan_loss(pred_real, True))
    assert torch.allclose(d["total"], d["d_fake"] + d["d_real"])


def test_sean_objectives_have_no_kl_and_match_spade(vgg_random):
    fake, real = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1
    pred_fake, pred_real = losses.split_fake_real(_tiny_discriminator(torch.cat([fake, real])))
    g = losses.sean_generator_loss(pred_fake, pred_real, fake, real, vgg=vgg_random, gan_mode="ls")
    assert set(g) == {"gan", "fm", "vgg", "total"}
    ref = losses.spade_generator_loss(pred_fake, pred_real, fake, real, vgg=vgg_random, gan_mode="ls")
    assert all(torch.equal(g[k], ref[k]) for k in g)
    d = losses.sean_discriminator_loss(pred_fake, pred_real)
    assert torch.equal(d["total"], losses.spade_discriminator_loss(pred_fake, pred_real)["total"])


def test_kl_weight_is_the_official_recipes_at_any_batch_size():
    """Official: KL summed over the 4 images of each of 8 GPUs, averaged over GPUs. The same per-image KL
    must weigh the same whatever the batch (and so whatever the number of DDP processes)."""
    torch.manual_seed(1)
    mu, logvar = torch.randn(1, 8), torch.randn(1, 8)
    dummy = [[torch.zeros(1, 1, 2, 2)]]

    def kl_term(batch):
        g = losses.spade_generator_loss(dummy, dummy, torch.zeros(1), torch.zeros(1), mu.expand(batch, -1),
                                        logvar.expand(batch, -1), lambda_fm=0.0)
        return g["kl"].item()

    official_per_gpu = 0.05 * losses.kl_divergence(mu.expand(4, -1), logvar.expand(4, -1)).item()
    for batch in (1, 4, 32):
        assert kl_term(batch) == pytest.approx(official_per_gpu, rel=1e-6)
