"""Tests for norm.py: statistics, wash-out, SPADE / SEAN / CLADE behaviour, the folded SEAN against its paper
form (values and gradients), region pooling, parameter structure, and input errors."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from norm import (
    CLADE,
    SEAN,
    SPADE,
    batch_stats,
    instance_stats,
    make_param_free_norm,
    normalize,
    region_average_pool,
    sean_paper_form,
)


def uniform_mask(K, k, size, batch=1, dtype=torch.float32):
    m = torch.zeros(batch, K, *size, dtype=dtype)
    m[:, k] = 1
    return m


def random_onehot(B, K, size, present, none_label=True, seed=0):
    """One-hot (B, K, H, W) map whose labels are drawn from `present`; with none_label some pixels have no
    class at all (all channels 0, like a don't-care pixel)."""
    g = torch.Generator().manual_seed(seed)
    choices = torch.tensor(list(present) + ([K] if none_label else []))
    label = choices[torch.randint(len(choices), (B, *size), generator=g)]
    return F.one_hot(label, K + 1)[..., :K].permute(0, 3, 1, 2).float()


# ---------------------------------------------------------------------------------------------- statistics


def test_batch_stats_match_batchnorm():
    torch.manual_seed(0)
    h = torch.randn(4, 6, 7, 9) * 3 + 2
    mu, sigma = batch_stats(h)
    assert mu.shape == sigma.shape == (1, 6, 1, 1)
    bn = nn.BatchNorm2d(6, affine=False).train()
    torch.testing.assert_close(normalize(h, mu, sigma, bn.eps), bn(h), atol=1e-5, rtol=1e-5)
    var = h.var(dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(sigma.flatten() ** 2, var, atol=1e-4, rtol=1e-5)


def test_instance_stats_match_instancenorm():
    torch.manual_seed(0)
    h = torch.randn(4, 6, 7, 9) * 3 + 2
    h[1] += 5  # samples with different statistics, so pooling over n would be caught
    mu, sigma = instance_stats(h)
    assert mu.shape == sigma.shape == (4, 6, 1, 1)
    inorm = nn.InstanceNorm2d(6, affine=False)
    torch.testing.assert_close(normalize(h, mu, sigma, inorm.eps), inorm(h), atol=1e-5, rtol=1e-5)


def test_param_free_factory():
    assert type(make_param_free_norm("batch", 3)) is nn.BatchNorm2d
    assert type(make_param_free_norm("instance", 3)) is nn.InstanceNorm2d
    assert type(make_param_free_norm("syncbatch", 3)) is nn.SyncBatchNorm
    for kind in ("batch", "instance", "syncbatch"):
        assert sum(p.numel() for p in make_param_free_norm(kind, 3).parameters()) == 0
    with pytest.raises(ValueError, match="param_free"):
        make_param_free_norm("layer", 3)


# ---------------------------------------------------------------------------------------------- wash-out

SIZES = [(8, 8), (16, 24), (33, 17)]


@pytest.mark.parametrize("K", [1, 3, 8, 19])
def test_instance_norm_washes_out_every_label(K):
    # Eq. 3. replicate padding so that conv(m) is constant up to the border, as in the derivation. The result
    # is 0 in exact arithmetic; float64 leaves only rounding of the mean (x 1/sqrt(eps)).
    torch.manual_seed(K)
    conv = nn.Conv2d(K, 8, 3, padding=1, padding_mode="replicate").double()
    inorm = nn.InstanceNorm2d(8, affine=False)
    for size in SIZES:
        outs = [inorm(conv(uniform_mask(K, k, size, dtype=torch.float64))) for k in range(K)]
        for k, out in enumerate(outs):
            assert out.abs().max() < 1e-9, (K, size, k)
            # the from-scratch statistics agree: no variation left. sqrt(E[h^2] - mu^2) subtracts two equal
            # numbers, so float64 leaves ~sqrt(1e-16) in sigma; the normalized output is still ~0
            h = conv(uniform_mask(K, k, size, dtype=torch.float64))
            mu, sigma = instance_stats(h)
            assert sigma.max() < 1e-6
            assert normalize(h, mu, sigma).abs().max() < 1e-9
    # control: a two-label mask is not washed out, so this test can fail
    if K > 1:
        m = uniform_mask(K, 0, (16, 16), dtype=torch.float64)
        m[:, 0, :, 8:], m[:, 1, :, 8:] = 0, 1
        assert inorm(conv(m)).abs().max() > 0.5


def test_batch_norm_batch_one_washes_out_and_mixed_batch_leaks():
    torch.manual_seed(0)
    K = 5
    conv = nn.Conv2d(K, 8, 3, padding=1, padding_mode="replicate").double()
    bn = nn.BatchNorm2d(8, affine=False).double().train()
    for size in SIZES:
        for k in range(K):
            assert bn(conv(uniform_mask(K, k, size, dtype=torch.float64))).abs().max() < 1e-9
    # mixed batch: the same mask (label 0) gives a different output when the other sample changes
    m0 = uniform_mask(K, 0, (8, 8), dtype=torch.float64)
    out_a = bn(conv(torch.cat([m0, uniform_mask(K, 1, (8, 8), dtype=torch.float64)])))[0]
    out_b = bn(conv(torch.cat([m0, uniform_mask(K, 2, (8, 8), dtype=torch.float64)])))[0]
    assert (out_a - out_b).abs().max() > 1e-2
    assert out_a.abs().max() > 0.1  # no longer washed out, but the label's output depends on its batch mates


# ---------------------------------------------------------------------------------------------- modulation


@pytest.mark.parametrize("param_free", ["instance", "batch"])
def test_spade_and_clade_outputs_differ_between_labels(param_free):
    torch.manual_seed(0)
    K, C = 6, 8
    x = torch.randn(2, C, 12, 12)
    for layer in (SPADE(C, K, hidden=16, param_free=param_free), CLADE(C, K, param_free=param_free)):
        outs = [layer(x, uniform_mask(K, k, (12, 12), batch=2)) for k in range(K)]
        for i in range(K):
            for j in range(i + 1, K):
                assert (outs[i] - outs[j]).abs().max() > 1e-3, (type(layer).__name__, i, j)


def test_modulated_layers_undo_the_wash_out():
    # the input itself is washed out (constant per channel); SPADE still outputs something label-dependent
    torch.manual_seed(0)
    K, C = 4, 8
    x = torch.ones(1, C, 10, 10) * torch.randn(1, C, 1, 1)
    spade = SPADE(C, K, hidden=16, param_free="instance")
    outs = [spade(x, uniform_mask(K, k, (10, 10))) for k in range(K)]
    assert all(o.abs().max() > 1e-2 for o in outs)
    assert (outs[0] - outs[1]).abs().max() > 1e-3


def test_sean_outputs_differ_between_style_codes():
    torch.manual_seed(0)
    K, C, S = 5, 8, 16
    sean = SEAN(C, K, style_dim=S, hidden=16, param_free="instance", use_noise=False)
    x = torch.randn(1, C, 12, 12)
    m = uniform_mask(K, 2, (12, 12))
    codes_a, codes_b = torch.randn(1, K, S), torch.randn(1, K, S)
    assert (sean(x, m, codes_a) - sean(x, m, codes_b)).abs().max() > 1e-3
    # ... but only the code of the class that is present matters
    codes_c = codes_a.clone()
    codes_c[:, [0, 1, 3, 4]] = torch.randn(1, 4, S)
    torch.testing.assert_close(sean(x, m, codes_a), sean(x, m, codes_c), atol=0, rtol=0)


def test_sean_absent_class_codes_do_not_matter_even_nan():
    torch.manual_seed(0)
    K, C, S = 6, 8, 16
    sean = SEAN(C, K, style_dim=S, hidden=8)
    x = torch.randn(2, C, 10, 10)
    m = random_onehot(2, K, (10, 10), present=[0, 2, 3])
    noise = torch.randn(2, 1, 10, 10)
    codes = torch.randn(2, K, S, requires_grad=True)
    out = sean(x, m, codes, noise=noise)
    out.square().sum().backward()
    assert codes.grad[:, [1, 4, 5]].abs().max() == 0
    bad = codes.detach().clone()
    bad[:, [1, 4, 5]] = float("nan")
    torch.testing.assert_close(sean(x, m, bad, noise=noise), out.detach(), atol=0, rtol=0)


# ------------------------------------------------------------------------------------ SEAN paper form


def _randomize(layer, seed):
    """Non-trivial values for parameters that start at 0 so their gradients are exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.blending_gamma.fill_(float(torch.randn(1, generator=g)))
        layer.blending_beta.fill_(float(torch.randn(1, generator=g)))
        if layer.use_noise:
            layer.noise_var.copy_(torch.randn(layer.noise_var.shape, generator=g) * 0.5)


def _compare_with_paper_form(K, C, S, hidden, B, size, seg_size, present, param_free="batch", seed=0):
    torch.manual_seed(seed)
    layer = SEAN(C, K, style_dim=S, hidden=hidden, param_free=param_free)
    _randomize(layer, seed)
    x = torch.randn(B, C, *size)
    segmap = random_onehot(B, K, seg_size, present, seed=seed)
    codes = torch.randn(B, K, S)
    noise = torch.randn(B, 1, *size)
    w = torch.randn(B, C, *size)  # random output weights: every output element gets its own gradient

    results = []
    for fn in (layer.forward, lambda *a, **k: sean_paper_form(layer, *a, **k)):
        layer.zero_grad(set_to_none=True)
        xi, ci = x.clone().requires_grad_(), codes.clone().requires_grad_()
        out = fn(xi, segmap, ci, noise=noise)
        (out * w).sum().backward()
        grads = {n: p.grad.clone() for n, p in layer.named_parameters() if p.grad is not None}
        results.append((out.detach(), xi.grad, ci.grad, grads))

    (out_f, gx_f, gc_f, gp_f), (out_o, gx_o, gc_o, gp_o) = results
    tol = dict(atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_f, out_o, **tol)
    torch.testing.assert_close(gx_f, gx_o, **tol)
    torch.testing.assert_close(gc_f, gc_o, **tol)
    assert set(gp_f) == set(gp_o) == {n for n, _ in layer.named_parameters()}
    for name in gp_f:
        torch.testing.assert_close(gp_f[name], gp_o[name], **tol, msg=lambda m, n=name: f"{n}: {m}")
    # absent classes get exactly no gradient on their FC layer, as in the loop form
    absent = [k for k in range(K) if k not in present]
    if absent:
        assert gp_f["fc_mu_weight"][absent].abs().max() == 0


@pytest.mark.parametrize("K, present", [(1, [0]), (5, [0, 2, 3]), (19, [0, 1, 4, 7, 8, 12, 18]),
                                        (37, list(range(0, 37, 3)))])
def test_folded_sean_matches_paper_form(K, present):
    # segmap given at a different size: the nearest resize inside is part of what is compared
    _compare_with_paper_form(K, C=8, S=16, hidden=8, B=3, size=(12, 10), seg_size=(24, 20), present=present,
                         seed=K)


def test_folded_sean_matches_paper_form_instance_norm_k5():
    _compare_with_paper_form(5, C=6, S=8, hidden=8, B=2, size=(9, 11), seg_size=(9, 11), present=[1, 4],
                         param_free="instance", seed=1)


def test_folded_sean_matches_paper_form_style_dim_512():
    _compare_with_paper_form(19, C=8, S=512, hidden=16, B=2, size=(8, 8), seg_size=(16, 16),
                         present=[0, 3, 5, 11, 18], seed=3)


# ---------------------------------------------------------------------------------------------- pooling


def test_region_average_pool_matches_loop_and_zeros_for_empty_classes():
    torch.manual_seed(0)
    B, K, C = 3, 7, 5
    feats = torch.randn(B, C, 8, 6)
    segmap = random_onehot(B, K, (16, 12), present=[0, 2, 5], seed=4)  # resized inside to 8x6
    st = region_average_pool(feats, segmap)
    assert st.shape == (B, K, C)
    small = F.interpolate(segmap, size=(8, 6), mode="nearest").bool()
    for b in range(B):
        for k in range(K):
            mask = small[b, k]
            if mask.any():
                expected = feats[b][:, mask].mean(dim=1)
            else:
                expected = torch.zeros(C)
            torch.testing.assert_close(st[b, k], expected, atol=1e-6, rtol=1e-5)
    for k in (1, 3, 4, 6):
        assert st[:, k].abs().max() == 0


# ---------------------------------------------------------------------------------------------- structure


def _count(module):
    return sum(p.numel() for p in module.parameters())


def _official_spade_count(C, K, hidden=128, k=3):
    return (K * hidden * k * k + hidden) + 2 * (hidden * C * k * k + C)


def _official_sean_count(C, K, S=512, hidden=128, k=3):
    # K x Linear(S, S) + conv_gamma + conv_beta + blending_gamma + blending_beta + noise_var + SPADE branch
    return K * (S * S + S) + 2 * (S * C * k * k + C) + 1 + 1 + C + _official_spade_count(C, K, hidden, k)


def test_parameter_counts_equal_official():
    assert _count(SPADE(1024, 19)) == _official_spade_count(1024, 19) == 2383360
    assert _count(SEAN(1024, 19)) == _official_sean_count(1024, 19) == 16814082
    assert _count(SEAN(64, 37, style_dim=32)) == _official_sean_count(64, 37, S=32)
    assert _count(CLADE(64, 19)) == 2 * 19 * 64
    sean = SEAN(16, 5, style_dim=8)
    assert sean.fc_mu_weight.shape == (5, 8, 8) and sean.fc_mu_bias.shape == (5, 8)
    assert sean.blending_gamma.item() == sean.blending_beta.item() == 0 and sean.noise_var.abs().max() == 0


# ---------------------------------------------------------------------------------------------- bad input


def test_bad_segmap_channels():
    x = torch.randn(4, 8, 6, 6)
    expected = r"SPADE expected segmap of shape \(B, label_nc, H, W\) = \(4, 19, H, W\), got \(4, 18, 6, 6\)"
    with pytest.raises(ValueError, match=expected):
        SPADE(8, 19, hidden=8)(x, torch.zeros(4, 18, 6, 6))
    with pytest.raises(ValueError, match=r"CLADE expected segmap .* \(4, 19, H, W\)"):
        CLADE(8, 19)(x, torch.zeros(4, 18, 6, 6))
    with pytest.raises(ValueError, match=r"SEAN expected segmap .* \(4, 19, H, W\)"):
        SEAN(8, 19, style_dim=8, hidden=8)(x, torch.zeros(4, 18, 6, 6), torch.zeros(4, 19, 8))


def test_bad_style_codes_shape():
    x, m = torch.randn(4, 8, 6, 6), torch.zeros(4, 19, 6, 6)
    sean = SEAN(8, 19, hidden=8)  # style_dim 512
    msg = "SEAN expected style_codes of shape (B, num_regions, style_dim) = (4, 19, 512), got (4, 18, 512)"
    with pytest.raises(ValueError) as err:
        sean(x, m, torch.zeros(4, 18, 512))
    assert str(err.value) == msg
    with pytest.raises(ValueError, match=r"= \(4, 19, 512\), got \(4, 19\)"):
        sean(x, m, torch.zeros(4, 19))


def test_sean_edge_channel_is_no_region_and_paper_form_agrees():
    """With an instance-edge channel after the K classes, SEAN keeps K style rows (the edges overlap the
    regions and would break region averaging); the edge map still moves gamma/beta through the SPADE
    branch."""
    torch.manual_seed(0)
    K, C, S, B = 4, 6, 8, 2
    layer = SEAN(C, K + 1, style_dim=S, hidden=8, num_regions=K, use_noise=False, param_free="instance")
    _randomize(layer, 0)
    assert layer.fc_mu_weight.shape == (K, S, S)
    x, codes = torch.randn(B, C, 10, 10), torch.randn(B, K, S)
    seg = torch.cat([random_onehot(B, K, (10, 10), [0, 1, 3]), torch.zeros(B, 1, 10, 10)], 1)
    seg[:, K, 4:6] = 1  # an edge band across the classes
    torch.testing.assert_close(layer(x, seg, codes), sean_paper_form(layer, x, seg, codes), atol=1e-5,
                               rtol=1e-5)
    no_edges = seg.clone()
    no_edges[:, K] = 0
    assert (layer(x, seg, codes) - layer(x, no_edges, codes)).abs().max() > 1e-4
    with pytest.raises(ValueError, match=r"\(B, num_regions, style_dim\) = \(2, 4, 8\)"):
        layer(x, seg, torch.randn(B, K + 1, S))


def test_clade_appends_the_edge_channel_instead_of_dropping_it():
    torch.manual_seed(0)
    K, C = 4, 6
    layer = CLADE(C, K, param_free="instance", use_edges=True)
    x = torch.randn(1, C, 8, 8)
    seg = torch.cat([random_onehot(1, K, (8, 8), [0, 2]), torch.zeros(1, 1, 8, 8)], 1)
    with_edges = seg.clone()
    with_edges[:, K, :, 3] = 1
    out = layer(x, with_edges)
    assert out.shape == (1, C + 1, 8, 8)
    torch.testing.assert_close(out[:, :C], layer(x, seg)[:, :C])  # the class lookup is untouched
    assert (out[:, C] - layer(x, seg)[:, C]).abs().max() > 0  # the edges arrive through their own conv


# ------------------------------------------------------------------------ modulation against the equation


def by_hand_normalized(x, eps=1e-5):
    """Batch norm without affine, written out: (x - mean) / sqrt(var + eps), biased variance over N, H, W."""
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = ((x - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


def test_param_free_norms_use_the_official_eps():
    """eps = 1e-5 (torch's and the official code's): visible on a signal of variance 1e-4, where eps 1e-3
    would shrink the output 3x."""
    x = torch.randn(4, 3, 8, 8) * 1e-2
    for kind in ("batch", "instance", "syncbatch"):
        assert make_param_free_norm(kind, 3).eps == 1e-5
    layer = SPADE(3, 2, hidden=4)
    torch.testing.assert_close(layer.param_free_norm(x), by_hand_normalized(x), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(layer.param_free_norm(x), by_hand_normalized(x, eps=1e-3), atol=1e-2)
    mu, sigma = batch_stats(x)
    torch.testing.assert_close(normalize(x, mu, sigma), by_hand_normalized(x), atol=1e-4, rtol=1e-4)


def test_spade_modulation_is_the_equation_with_distinct_gamma_and_beta():
    """out = (1 + gamma(m)) (x - mu) / sigma + beta(m), gamma and beta from their own convs (not swapped)."""
    torch.manual_seed(0)
    K, C = 3, 4
    layer = SPADE(C, K, hidden=8)
    with torch.no_grad():
        layer.mlp_beta.bias.fill_(2.0)  # beta near 2, gamma near 0: a swap moves the output by ~2
    x, m = torch.randn(2, C, 8, 8) * 3 + 1, random_onehot(2, K, (8, 8), range(K), none_label=False)
    actv = F.relu(F.conv2d(m, layer.mlp_shared[0].weight, layer.mlp_shared[0].bias, padding=1))
    gamma = F.conv2d(actv, layer.mlp_gamma.weight, layer.mlp_gamma.bias, padding=1)
    beta = F.conv2d(actv, layer.mlp_beta.weight, layer.mlp_beta.bias, padding=1)
    assert (beta - gamma).abs().mean() > 1
    expected = (1 + gamma) * by_hand_normalized(x) + beta
    torch.testing.assert_close(layer(x, m), expected, atol=1e-5, rtol=1e-5)


def test_sean_modulation_is_the_equation_with_distinct_gamma_and_beta():
    """SEAN with the blending alpha set: out = (1 + gamma) x_hat + beta, gamma = a_g gamma^s + (1 - a_g)
    gamma^o, beta likewise, gamma^s/beta^s convs of the style map sum_k ReLU(W_k ST_k + b_k) M_k; written out
    with F.conv2d from the layer's parameters, checked for the folded forward and the paper form."""
    torch.manual_seed(1)
    K, C, S = 3, 4, 5
    layer = SEAN(C, K, style_dim=S, hidden=8, use_noise=False)
    with torch.no_grad():
        layer.blending_gamma.fill_(1.5)  # alpha_gamma = 0.82, alpha_beta = 0.27: not 0.5, not equal
        layer.blending_beta.fill_(-1.0)
        layer.conv_beta.bias.fill_(3.0)  # beta about 0.27 * 3 + 0.73 * 1 = 1.5, gamma about 0
        layer.spade.mlp_beta.bias.fill_(1.0)
    x, m = torch.randn(2, C, 8, 8) * 2 - 1, random_onehot(2, K, (8, 8), range(K), none_label=False)
    codes = torch.randn(2, K, S)
    v = torch.stack([F.relu(codes[:, k] @ layer.fc_mu_weight[k].T + layer.fc_mu_bias[k])
                     for k in range(K)], 1)
    style_map = torch.einsum("bks,bkhw->bshw", v, m)
    gamma_s = F.conv2d(style_map, layer.conv_gamma.weight, layer.conv_gamma.bias, padding=1)
    beta_s = F.conv2d(style_map, layer.conv_beta.weight, layer.conv_beta.bias, padding=1)
    spade = layer.spade
    actv = F.relu(F.conv2d(m, spade.mlp_shared[0].weight, spade.mlp_shared[0].bias, padding=1))
    gamma_o = F.conv2d(actv, spade.mlp_gamma.weight, spade.mlp_gamma.bias, padding=1)
    beta_o = F.conv2d(actv, spade.mlp_beta.weight, spade.mlp_beta.bias, padding=1)
    a_g, a_b = torch.sigmoid(torch.tensor(1.5)), torch.sigmoid(torch.tensor(-1.0))
    gamma, beta = a_g * gamma_s + (1 - a_g) * gamma_o, a_b * beta_s + (1 - a_b) * beta_o
    assert (beta - gamma).abs().mean() > 0.5
    expected = (1 + gamma) * by_hand_normalized(x) + beta
    with torch.no_grad():
        torch.testing.assert_close(layer(x, m, codes), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(sean_paper_form(layer, x, m, codes), expected, atol=1e-5, rtol=1e-5)
