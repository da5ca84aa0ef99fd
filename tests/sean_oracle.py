"""The slow, literal form of SEAN, used as the oracle for norm.SEAN.

Written as the paper describes it and with the official ACE layer's structure: for every sample and every
class present in it, the class's style vector goes through that class's FC + ReLU, the result is scattered
over the class's pixels to build the (S, H, W) style map, and the map goes through conv_gamma / conv_beta.
It reads the parameters of a norm.SEAN layer so both forms can be compared value-for-value and
gradient-for-gradient.
"""

import torch
import torch.nn.functional as F


def sean_loop_forward(layer, x, segmap, style_codes, noise=None):
    """Same inputs as norm.SEAN.forward; Python loops over batch and classes; builds the style map."""
    if layer.use_noise:
        if noise is None:
            noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], dtype=x.dtype)
        x = x + noise * layer.noise_var.view(1, -1, 1, 1)
    normalized = layer.param_free_norm(x)
    segmap = F.interpolate(segmap, size=x.shape[2:], mode="nearest")

    B, H, W, K = segmap.shape[0], segmap.shape[2], segmap.shape[3], layer.num_regions  # regions come first
    S = layer.style_dim
    style_map = torch.zeros(B, S, H, W, dtype=x.dtype)
    for i in range(B):
        for j in range(K):
            mask = segmap[i, j].bool()
            area = int(mask.sum())
            if area > 0:
                # the class-j FC layer on sample i's region-j style vector
                mu = F.relu(F.linear(style_codes[i, j], layer.fc_mu_weight[j], layer.fc_mu_bias[j]))
                # broadcast mu over the region, in place, as the official code's masked_scatter_
                style_map[i].masked_scatter_(mask, mu.reshape(S, 1).expand(S, area))

    gamma_s = layer.conv_gamma(style_map)
    beta_s = layer.conv_beta(style_map)

    actv = layer.spade.mlp_shared(segmap)
    gamma_o = layer.spade.mlp_gamma(actv)
    beta_o = layer.spade.mlp_beta(actv)

    a_g = torch.sigmoid(layer.blending_gamma)
    a_b = torch.sigmoid(layer.blending_beta)
    gamma = a_g * gamma_s + (1 - a_g) * gamma_o
    beta = a_b * beta_s + (1 - a_b) * beta_o
    return normalized * (1 + gamma) + beta
