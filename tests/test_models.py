"""Networks: exact official parameter counts, shapes at several sizes, gradient flow, a few training steps,
and SEAN's per-region style control. Paper-size networks are only built on the meta device (no memory);
everything that runs uses tiny widths."""

from itertools import pairwise

import pytest
import torch
import torch.nn.functional as F

import models
import norm

GENERATORS = ["spade", "sean", "concat", "clade", "pix2pixhd"]
K = 4  # label channels of the tiny configurations


def tiny_generator(name: str, height: int, width: int, ngf: int = 16, **kw):
    """A small generator whose output is (height, width)."""
    if name == "pix2pixhd":
        return models.Pix2PixHDGenerator(K, ngf=ngf, **kw)  # fully convolutional: output size = input size
    kw.setdefault("crop_size", width)
    kw.setdefault("aspect_ratio", width / height)
    if name == "sean":
        kw.setdefault("style_dim", 16)
    return models.build_generator(name, K, ngf=ngf, **kw)


def make_segmap(batch: int, height: int, width: int, classes: int = K) -> torch.Tensor:
    """One-hot map with every class present in every sample: vertical stripes, shifted per sample."""
    cols = torch.arange(width) * classes // width
    label = (cols.view(1, 1, width) + torch.arange(batch).view(batch, 1, 1)) % classes
    label = label.expand(batch, height, width)
    return F.one_hot(label, classes).permute(0, 3, 1, 2).float()


def run_generator(G, name: str, segmap: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
    if name == "sean":
        if image is None:
            image = torch.rand(segmap.shape[0], 3, *segmap.shape[2:]) * 2 - 1
        return G(segmap, image=image)
    return G(segmap)


# ----------------------------------------------------------------------------------------------------------
# Parameter counts (meta device: the paper-size networks are never allocated)


# Hand counts of the official architectures (NVlabs/SPADE, ZPdesu/SEAN; default options), layer by layer.
# A conv has cin * cout * k * k weights plus cout biases, but the official code drops the bias of every conv
# that a norm follows; spectral norm's u and v are buffers; the param-free norms have no affine parameters.


def conv(cin: int, cout: int, k: int, bias: bool = True) -> int:
    return cin * cout * k * k + (cout if bias else 0)


def linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def spade_norm(nc: int, label_nc: int) -> int:
    """mlp_shared (label_nc -> 128), mlp_gamma and mlp_beta (128 -> nc), 3x3 convs."""
    return conv(label_nc, 128, 3) + 2 * conv(128, nc, 3)


def ace_norm(nc: int, label_nc: int, style_dim: int = 512, use_rgb: bool = True) -> int:
    """SEAN's ACE: noise_var (nc) and the two blending scalars, a SPADE branch, and with use_rgb one
    Linear(style_dim, style_dim) per class plus conv_gamma, conv_beta (style_dim -> nc, 3x3)."""
    style = label_nc * linear(style_dim, style_dim) + 2 * conv(style_dim, nc, 3) if use_rgb else 0
    return nc + 2 + spade_norm(nc, label_nc) + style


def resblock(fin: int, fout: int, norm) -> int:
    """norm_0, conv_0 (fin -> fmiddle), norm_1, conv_1 (fmiddle -> fout), and where fin != fout norm_s and a
    bias-free 1x1 conv_s."""
    mid = min(fin, fout)
    n = norm(fin) + conv(fin, mid, 3) + norm(mid) + conv(mid, fout, 3)
    return n + (norm(fin) + conv(fin, fout, 1, bias=False) if fin != fout else 0)


def spade_decoder(first: int, ngf: int, norms: list) -> int:
    """first layer, head_0, G_middle_0, G_middle_1, up_0 .. up_3 (16 16 16 16 8 4 2 1 x ngf), conv_img."""
    widths = [16 * ngf, 16 * ngf, 16 * ngf, 16 * ngf, 8 * ngf, 4 * ngf, 2 * ngf, ngf]
    blocks = sum(resblock(fin, fout, norm) for (fin, fout), norm in zip(pairwise(widths), norms, strict=True))
    return first + blocks + conv(ngf, 3, 3)


def spade_generator(label_nc: int, ngf: int = 64, vae: bool = False, z_dim: int = 256) -> int:
    first = linear(z_dim, 16 * ngf * 8 * 8) if vae else conv(label_nc, 16 * ngf, 3)  # 8x8 start at 256²
    return spade_decoder(first, ngf, [lambda nc: spade_norm(nc, label_nc)] * 7)


def sean_generator(label_nc: int, ngf: int = 64, style_dim: int = 512) -> int:
    """ACE norms in every block but up_3 (use_rgb=False there), plus the Zencoder: 3 -> 32 -> 64 -> 128,
    transposed 128 -> 256, 256 -> style_dim (instance norms without affine)."""
    norms = [lambda nc: ace_norm(nc, label_nc, style_dim)] * 6
    norms += [lambda nc: ace_norm(nc, label_nc, use_rgb=False)]
    zencoder = sum(conv(a, b, 3) for a, b in [(3, 32), (32, 64), (64, 128), (128, 256), (256, style_dim)])
    return spade_decoder(conv(label_nc, 16 * ngf, 3), ngf, norms) + zencoder


def conv_encoder(ngf: int = 64, z_dim: int = 256) -> int:
    """Six bias-free stride-2 3x3 convs (3, 1, 2, 4, 8, 8, 8 x ngf) and fc_mu, fc_var on the 4x4 result."""
    widths = [3, ngf, 2 * ngf, 4 * ngf, 8 * ngf, 8 * ngf, 8 * ngf]
    return sum(conv(a, b, 3, bias=False) for a, b in pairwise(widths)) + 2 * linear(8 * ngf * 16, z_dim)


def pix2pixhd_generator(input_nc: int, ngf: int = 64) -> int:
    """7x7 conv, 4 stride-2 downsamplings (x2 channels), 9 residual blocks of two 3x3 convs at 16 ngf, 4
    transposed upsamplings (the same shapes as the downsamplings), 7x7 output conv with bias."""
    widths = [ngf, 2 * ngf, 4 * ngf, 8 * ngf, 16 * ngf]
    down = sum(conv(a, b, 3, bias=False) for a, b in pairwise(widths))
    blocks = 9 * 2 * conv(16 * ngf, 16 * ngf, 3, bias=False)
    return conv(input_nc, ngf, 7, bias=False) + 2 * down + blocks + conv(ngf, 3, 7)


def multiscale_discriminator(input_nc: int, ndf: int = 64, num_D: int = 2) -> int:
    """num_D PatchGANs of 4x4 convs: input -> ndf (bias), three normed ones to 8 ndf, 8 ndf -> 1 (bias)."""
    widths = [ndf, 2 * ndf, 4 * ndf, 8 * ndf]
    normed = sum(conv(a, b, 4, bias=False) for a, b in pairwise(widths))
    return num_D * (conv(input_nc, ndf, 4) + normed + conv(8 * ndf, 1, 4))


# (our network, its hand count, the count the official code prints: written here once, independently of
# models.py's OFFICIAL_COUNTS)
OFFICIAL = {
    "SPADE G, ADE20K (151)": (lambda: models.SPADEGenerator(151), spade_generator(151), 96_492_483),
    "SPADE G, Cityscapes (36)": (lambda: models.SPADEGenerator(36), spade_generator(36), 93_048_003),
    "SPADE G, COCO-Stuff (184)": (lambda: models.SPADEGenerator(184), spade_generator(184), 97_480_899),
    "SPADE G, CelebAMask-HQ (19)": (lambda: models.SPADEGenerator(19), spade_generator(19), 92_538_819),
    "SPADE G, ngf 48 (151)": (lambda: models.SPADEGenerator(151, ngf=48), spade_generator(151, ngf=48),
                              60_642_771),
    "SPADE G, VAE (151)": (lambda: models.SPADEGenerator(151, use_vae=True), spade_generator(151, vae=True),
                           111_942_595),
    "ConvEncoder": (lambda: models.ConvEncoder(), conv_encoder(), 10_463_424),
    "pix2pixHD G (36)": (lambda: models.Pix2PixHDGenerator(36), pix2pixhd_generator(36), 182_525_379),
    "Multiscale D (39)": (lambda: models.MultiscaleDiscriminator(39), multiscale_discriminator(39),
                          5_601_410),
    "Multiscale D (154)": (lambda: models.MultiscaleDiscriminator(154), multiscale_discriminator(154),
                           5_836_930),
    "SEAN G + Zencoder (19)": (lambda: models.SEANGenerator(19), sean_generator(19), 266_907_367),
}


@pytest.mark.parametrize("name", OFFICIAL)
def test_official_parameter_counts(name):
    build, hand, official = OFFICIAL[name]
    assert hand == official, f"{name}: the hand count {hand:,} of the official layers != {official:,}"
    with torch.device("meta"):  # paper-size networks: no memory
        n = models.count_parameters(build())
    assert n == official, f"{name}: {n:,} != official {official:,}"


@pytest.fixture(scope="module")
def count_table():
    return models.count_table()


def test_count_table_official_column(count_table):
    """`python models.py` prints the official counts above, each next to the count of its own network."""
    official = [row.official for row, _ in count_table if row.official is not None]
    assert sorted(official) == sorted(o for _, _, o in OFFICIAL.values())
    for row, n in count_table:
        assert row.official is None or n == row.official, f"{row.name}: {n:,} != {row.official:,}"


def test_ablation_counts_land_on_paper_numbers(count_table):
    """SPADE Table 4 prints rounded millions; every built variant rounds to the printed number."""
    for row, n in count_table:
        if row.paper.endswith("M"):
            assert round(n / 1e6) == int(row.paper[:-1]), f"{row.name}: {n:,} vs paper {row.paper}"


def test_meta_device_build():
    """Paper-size networks are counted on the meta device; nothing is allocated."""
    with torch.device("meta"):
        g = models.ConvEncoder()
    assert all(p.is_meta for p in g.parameters())


# ----------------------------------------------------------------------------------------------------------
# Building blocks and init


def test_resblock_shortcut_and_spectral_norm():
    same = models.SPADEResBlock(16, 16, K)
    change = models.SPADEResBlock(16, 8, K)
    assert not same.learned_shortcut and not hasattr(same, "conv_s")
    assert change.learned_shortcut and change.conv_s.bias is None and change.conv_0.out_channels == 8
    for conv in (change.conv_0, change.conv_1, change.conv_s):
        assert torch.nn.utils.parametrize.is_parametrized(conv, "weight")
    x, seg = torch.randn(2, 16, 8, 8), make_segmap(2, 32, 32)
    assert change(x, seg).shape == (2, 8, 8, 8)


def test_resblock_is_norm_leaky_relu_02_conv_twice_plus_the_shortcut():
    """SPADE Fig. 4 right, written out from the block's parts: the LeakyReLU slope is 0.2 (a negative-heavy
    input makes another slope visible)."""
    torch.manual_seed(0)
    block = models.SPADEResBlock(16, 8, K).eval()
    x, seg = torch.randn(2, 16, 8, 8) - 1.5, make_segmap(2, 8, 8)
    with torch.no_grad():
        shortcut = block.conv_s(block.norm_s(x, seg))
        dx = block.conv_0(F.leaky_relu(block.norm_0(x, seg), 0.2))
        dx = block.conv_1(F.leaky_relu(block.norm_1(dx, seg), 0.2))
        torch.testing.assert_close(block(x, seg), shortcut + dx)
        other = block.conv_0(F.leaky_relu(block.norm_0(x, seg), 0.1))
        assert not torch.allclose(block.conv_0(F.leaky_relu(block.norm_0(x, seg), 0.2)), other, atol=1e-3)


def test_every_leaky_relu_has_the_official_slope_02():
    nets = [models.MultiscaleDiscriminator(K + 3, ndf=8), models.StyleEncoder(16, nf=4)]
    slopes = [m.negative_slope for net in nets for m in net.modules() if isinstance(m, torch.nn.LeakyReLU)]
    assert len(slopes) >= 10 and set(slopes) == {0.2}
    # the functional ones: the generator's last activation and the encoder's, via a hook on leaky_relu
    seen = []
    real = F.leaky_relu
    try:
        F.leaky_relu = lambda x, slope=0.01, *a, **kw: seen.append(slope) or real(x, slope, *a, **kw)
        with torch.no_grad():
            models.SPADEGenerator(K, ngf=4, crop_size=32)(make_segmap(2, 32, 32))
            models.ConvEncoder(ngf=4, crop_size=32, z_dim=8)(torch.zeros(1, 3, 32, 32))
    finally:
        F.leaky_relu = real
    assert len(seen) > 10 and set(seen) == {0.2}


def test_multiscale_discriminator_downsamples_without_counting_the_padding():
    """Scale k sees the input average-pooled k times (3x3, stride 2, padding 1) with the padding left out of
    each mean (count_include_pad=False, officially): a constant image stays constant up to its border."""
    D = models.MultiscaleDiscriminator(K + 3, ndf=4, num_D=3)
    seen = []
    for d in D.discriminators:
        d.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():
        D(torch.full((1, K + 3, 32, 32), 0.7))
    assert [tuple(x.shape[2:]) for x in seen] == [(32, 32), (16, 16), (8, 8)]
    for x in seen:
        torch.testing.assert_close(x, torch.full_like(x, 0.7))  # counting the padding: 0.7 * 4/9 at a corner


def test_init_is_official():
    g = models.SPADEGenerator(K, ngf=16, crop_size=64)
    w = g.up_0.conv_0.parametrizations.weight.original  # 256 -> 128, 3x3
    # xavier normal: std = gain sqrt(2 / (fan_in + fan_out))
    fan_in, fan_out = w.shape[1] * 9, w.shape[0] * 9
    assert abs(w.std().item() / (0.02 * (2 / (fan_in + fan_out)) ** 0.5) - 1) < 0.05
    assert g.up_0.conv_0.bias.abs().max() == 0
    c = models.ConcatGenerator(K, ngf=16, crop_size=64)
    bn = c.up_0.norm_0.norm
    assert abs(bn.weight.mean().item() - 1) < 0.01 and 0.01 < bn.weight.std().item() < 0.03
    s = models.SEANGenerator(K, ngf=16, crop_size=64, style_dim=64)
    fc = s.up_0.norm_0.fc_mu_weight  # per-class slices, xavier on (64, 64)
    assert abs(fc[1].std().item() / (0.02 * (2 / 128) ** 0.5) - 1) < 0.1
    assert s.up_0.norm_0.blending_gamma.item() == 0 and s.up_0.norm_0.noise_var.abs().max() == 0


# ----------------------------------------------------------------------------------------------------------
# Shapes


@pytest.mark.parametrize("size", [(64, 64), (128, 128), (256, 512)])
@pytest.mark.parametrize("name", GENERATORS)
def test_generator_shapes(name, size):
    h, w = size
    batch = 2 if h == 64 else 1
    G = tiny_generator(name, h, w, ngf=8 if h == 256 else 16)
    with torch.no_grad():
        out = run_generator(G, name, make_segmap(batch, h, w))
    assert out.shape == (batch, 3, h, w)
    assert out.abs().max() <= 1 and torch.isfinite(out).all()


@pytest.mark.parametrize("mode,crop", [("more", 64), ("most", 128)])
@pytest.mark.parametrize("name", ["spade", "sean"])
def test_num_upsampling_layers(name, mode, crop):
    G = tiny_generator(name, crop, crop, ngf=8, num_upsampling_layers=mode)
    assert (G.sh, G.sw) == (1, 1)
    with torch.no_grad():
        out = run_generator(G, name, make_segmap(2, crop, crop))
    assert out.shape == (2, 3, crop, crop)


@pytest.mark.parametrize("mode", ["normal", "more", "most"])
@pytest.mark.parametrize("name", ["spade", "sean", "concat", "clade"])
def test_blocks_run_in_the_figures_order_at_the_figures_sizes(name, mode):
    """SPADE Fig. 4 / App. A: head_0 at the start size s, G_middle_0 at 2s, G_middle_1 at 2s (4s for "more"
    and "most"), then each up_i at twice the previous size; input widths 16 16 16 16 8 4 2 (x ngf; up_4 of
    "most": 1), ending at the crop size."""
    crop = 128 if mode == "most" else 64
    G = tiny_generator(name, crop, crop, ngf=8, num_upsampling_layers=mode).eval()
    seen = []
    for block in G.block_names:
        getattr(G, block).register_forward_hook(
            lambda mod, args, out, block=block: seen.append((block, args[0].shape[1], args[0].shape[2])))
    with torch.no_grad():
        run_generator(G, name, make_segmap(1, crop, crop))
    s, more = G.sh, mode != "normal"
    expected = [("head_0", 128, s), ("G_middle_0", 128, 2 * s), ("G_middle_1", 128, (4 if more else 2) * s)]
    size = expected[-1][2]
    for i, width in enumerate([128, 64, 32, 16] + ([8] if mode == "most" else [])):
        size *= 2
        expected.append((f"up_{i}", width, size))
    assert seen == expected
    assert size == crop


def test_vae_modes():
    torch.manual_seed(0)
    G = models.SPADEGenerator(K, ngf=16, crop_size=64, use_vae=True, z_dim=32)
    E = models.ConvEncoder(ngf=16, crop_size=64, z_dim=32)
    seg, image = make_segmap(2, 64, 64), torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        mu, logvar = E(image)
        assert mu.shape == logvar.shape == (2, 32)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        assert G(seg, z).shape == (2, 3, 64, 64)
        a, b = G(seg), G(seg)  # z ~ N(0, I) drawn inside: two calls differ
        assert a.shape == (2, 3, 64, 64) and not torch.equal(a, b)
        assert torch.equal(G.eval()(seg, z), G(seg, z))  # given z, eval mode: deterministic
    # paper-size encoder on a small image: six convs after resizing to 256
    E256 = models.ConvEncoder(ngf=8, crop_size=256, z_dim=16)
    assert len(E256.convs) == 6 and E256.input_size == 256
    with torch.no_grad():
        assert E256(torch.rand(1, 3, 64, 128))[0].shape == (1, 16)
    # deterministic mode ignores z
    D = models.SPADEGenerator(K, ngf=16, crop_size=64).eval()
    with torch.no_grad():
        assert torch.equal(D(seg), D(seg, torch.randn(2, 256)))


@pytest.mark.parametrize("size", [(64, 64), (128, 128), (256, 512)])
def test_discriminator_shapes(size):
    h, w = size
    D = models.MultiscaleDiscriminator(K + 3, ndf=16, n_layers=4, num_D=2)
    with torch.no_grad():
        out = D(torch.randn(1, K + 3, h, w))
    assert len(out) == 2 and all(len(f) == 5 for f in out)

    def side(n, scale):
        for _ in range(scale):  # avg-pool 3x3 s2 p1
            n = (n + 1) // 2
        for stride in (2, 2, 2, 1, 1):  # 4x4 convs, padding 2
            n = (n + 4 - 4) // stride + 1
        return n

    for scale, feats in enumerate(out):
        assert [f.shape[1] for f in feats] == [16, 32, 64, 128, 1]
        assert feats[-1].shape[2:] == (side(h, scale), side(w, scale))
    assert side(64, 0) == 11 and side(64, 1) == 7
    only_pred = models.MultiscaleDiscriminator(K + 3, ndf=16, get_intermediate_features=False)
    with torch.no_grad():
        assert [len(o) for o in only_pred(torch.randn(1, K + 3, 64, 64))] == [1, 1]


def test_build_generator():
    assert isinstance(models.build_generator("clade", K, ngf=8, crop_size=64), models.CLADEGenerator)
    assert isinstance(models.build_generator("pix2pixhd", K, ngf=8), models.Pix2PixHDGenerator)
    with pytest.raises(ValueError):
        models.build_generator("unet", K)
    with pytest.raises(ValueError):
        models.SPADEGenerator(K, crop_size=16)  # fewer pixels than 2^5 upsamplings


# ----------------------------------------------------------------------------------------------------------
# Gradient flow


def dead_parameters(name: str, G) -> set[str]:
    """Parameters that officially exist but are never used: SEAN's last block keeps ACE's blending scalars."""
    if name != "sean":
        return set()
    return {n for n, _ in G.named_parameters() if n.startswith(G.block_names[-1]) and "blending" in n}


@pytest.mark.parametrize("name", GENERATORS)
def test_gradients_reach_every_parameter(name):
    G = tiny_generator(name, 64, 64, ngf=8)
    out = run_generator(G, name, make_segmap(2, 64, 64))
    (out * torch.randn_like(out)).sum().backward()
    dead = dead_parameters(name, G)
    assert len(dead) == (6 if name == "sean" else 0)
    for n, p in G.named_parameters():
        if n in dead:
            assert p.grad is None, n
            continue
        assert p.grad is not None, n
        assert torch.isfinite(p.grad).all(), n
        if p.dim() > 1:  # weights; biases right before a batch norm get a (numerically) zero gradient
            assert p.grad.abs().sum() > 0, n


def test_gradients_discriminator_and_encoder():
    D = models.MultiscaleDiscriminator(K + 3, ndf=8)
    sum(f.square().mean() for feats in D(torch.randn(2, K + 3, 64, 64)) for f in feats).backward()
    E = models.ConvEncoder(ngf=8, crop_size=64, z_dim=8)
    mu, logvar = E(torch.randn(2, 3, 64, 64))
    (mu.square().sum() + logvar.exp().sum()).backward()
    for net in (D, E):
        for n, p in net.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, n


# ----------------------------------------------------------------------------------------------------------
# A few training steps of each generator on the CPU (L1 + hinge, written inline)


@pytest.mark.parametrize("name", GENERATORS)
def test_tiny_training_steps(name):
    torch.manual_seed(0)
    G = tiny_generator(name, 64, 64, ngf=8)
    D = models.MultiscaleDiscriminator(K + 3, ndf=8, n_layers=3)
    opt_G = torch.optim.Adam(G.parameters(), lr=1e-4, betas=(0.0, 0.9))
    opt_D = torch.optim.Adam(D.parameters(), lr=4e-4, betas=(0.0, 0.9))
    seg, real = make_segmap(2, 64, 64), torch.rand(2, 3, 64, 64) * 2 - 1
    before = [p.detach().clone() for p in G.parameters()]
    for _ in range(3):
        fake = run_generator(G, name, seg, image=real)
        loss_G = -sum(f[-1].mean() for f in D(torch.cat([seg, fake], 1))) / 2 + 10 * F.l1_loss(fake, real)
        opt_G.zero_grad()
        loss_G.backward()
        opt_G.step()
        pred_fake = D(torch.cat([seg, fake.detach()], 1))
        pred_real = D(torch.cat([seg, real], 1))
        loss_D = sum(F.relu(1 + f[-1]).mean() + F.relu(1 - r[-1]).mean()
                     for f, r in zip(pred_fake, pred_real, strict=True)) / 2
        opt_D.zero_grad()
        loss_D.backward()
        opt_D.step()
        assert torch.isfinite(loss_G) and torch.isfinite(loss_D)
    changed = sum(not torch.equal(a, p) for a, p in zip(before, G.parameters(), strict=True))
    assert changed >= len(before) - len(dead_parameters(name, G))


# ----------------------------------------------------------------------------------------------------------
# SEAN: style encoding, given style codes, per-region control


def test_sean_style_encoder_and_given_codes():
    torch.manual_seed(0)
    G = models.SEANGenerator(K, ngf=8, crop_size=64, style_dim=16).eval()
    seg = make_segmap(2, 64, 64, classes=K)
    seg[1, 0] = 0  # class 0 absent from sample 1 (its pixels become class 1)
    seg[1, 1] = 1 - seg[1, 2:].sum(0)
    image = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        codes = G.encode_style(image, seg)
        assert codes.shape == (2, K, 16)
        assert codes[1, 0].abs().max() == 0 and codes[0].abs().min() > 0
        # the encoder's output is the region average of its feature map
        feats = G.style_encoder.model(image)
        assert feats.shape == (2, 16, 32, 32)
        assert torch.allclose(codes, norm.region_average_pool(feats, seg), atol=1e-6)
        torch.manual_seed(1)
        from_image = G(seg, image=image)
        torch.manual_seed(1)
        from_codes = G(seg, style_codes=codes)
    assert torch.allclose(from_image, from_codes, atol=1e-6)
    with pytest.raises(ValueError):
        G(seg)


def test_sean_one_region_style_edit():
    """Editing one class's style code changes the output, most inside that class's region; editing the code of
    a class absent from the map changes nothing."""
    torch.manual_seed(0)
    G = models.SEANGenerator(3, ngf=8, crop_size=64, style_dim=16).eval()  # eval: BN couples nothing
    # the official gain 0.02 makes every modulation ~0 at init; gain 1 stands in for a trained network
    models.init_weights(G, gain=1.0)
    label = torch.zeros(1, 64, 64, dtype=torch.long)
    label[:, 32:, 32:] = 1  # class 1: bottom-right quadrant; class 2 absent
    seg = F.one_hot(label, 3).permute(0, 3, 1, 2).float()
    codes = torch.rand(1, 3, 16) * 2 - 1

    def render(c):
        torch.manual_seed(1)  # same noise draws in every call
        with torch.no_grad():
            return G(seg, style_codes=c)

    base = render(codes)
    absent = codes.clone()
    absent[0, 2] = torch.rand(16) * 2 - 1
    assert torch.equal(render(absent), base)
    edited = codes.clone()
    edited[0, 1] = -codes[0, 1]
    diff = (render(edited) - base).abs().mean(1)[0]
    assert diff.max() > 1e-3
    inside, far = diff[32:, 32:].mean(), diff[:16, :16].mean()
    assert inside > 3 * far, (inside.item(), far.item())


def test_sean_last_block_is_mask_only():
    G = models.SEANGenerator(K, ngf=8, crop_size=64, style_dim=16)
    kinds = {n: type(getattr(G, n).norm_0).__name__ for n in G.block_names}
    assert kinds.pop("up_3") == "SPADEWithNoise"
    assert set(kinds.values()) == {"SEAN"}
    assert G.up_2.norm_0.fc_mu_weight.shape[0] == K  # one FC per class, any number of classes


@pytest.mark.parametrize("name", ["sean", "clade"])
def test_instance_edges_reach_the_generator_but_are_no_class(name):
    """An edge channel after the K classes: SEAN pools no style for it and CLADE does not drop it."""
    torch.manual_seed(0)
    kw = dict(style_dim=16) if name == "sean" else {}
    G = models.build_generator(name, K + 1, ngf=8, crop_size=32, use_edges=True, **kw).eval()
    models.init_weights(G, gain=1.0)  # a trained-like scale, so the edge map visibly matters
    seg = torch.cat([make_segmap(1, 32, 32), torch.zeros(1, 1, 32, 32)], 1)
    edged = seg.clone()
    edged[:, K, 10:12] = 1
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        if name == "sean":
            codes = G.encode_style(image, edged)
            assert codes.shape == (1, K, 16)
            torch.testing.assert_close(codes, G.encode_style(image, seg))  # edges change no region's style
            torch.manual_seed(1)
            a = G(edged, style_codes=codes)
            torch.manual_seed(1)
            b = G(seg, style_codes=codes)
        else:
            a, b = G(edged), G(seg)
    assert (a - b).abs().max() > 1e-4
