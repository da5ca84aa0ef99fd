"""Official pretrained checkpoints (NVlabs/SPADE, ZPdesu/SEAN) load into this project's networks and give the
official outputs.

The fixtures in tests/fixtures/ were written by make_official_fixtures.py with the official code (tiny widths,
deterministic weights, the official option parser, save and inference paths); these tests need none of it.
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import data
import models
import official
import sample

FIXTURES = Path(__file__).resolve().parent / "fixtures"
_spec = importlib.util.spec_from_file_location("make_official_fixtures",
                                               FIXTURES / "make_official_fixtures.py")
fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fx)

# case -> (preset, overrides of the tiny network, tolerance)
# Tolerances: float32 rounding (a few ulps of values near 1: 1.2e-6 was seen on one build of the same torch);
# a wrongly mapped weight moves outputs by 1e-2 or more.
CASES = {
    "spade_ade20k": ("ade20k", dict(crop_size=64), 1e-5),
    "spade_cityscapes": ("cityscapes", dict(crop_size=128), 1e-5),
    "spade_vae": ("ade20k", dict(label_nc=3, contain_dontcare=False), 1e-5),  # custom: 3 labels, crop 256
    "sean_celebamask": ("celebamask", dict(crop_size=64), 1e-5),
}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def load_fixture(case: str) -> dict:
    return torch.load(FIXTURES / f"official_{case}.pt", weights_only=True)


def fixture_inputs(f: dict, m) -> tuple[torch.Tensor, torch.Tensor]:
    """The generator input made here (data.make_segmap) from the label / instance grids, and the photo."""
    label = fx.fixture_labels(f["label_grid"], f["label_block"])
    instance = f["instance_grid"]
    instance = None if instance is None else fx.fixture_labels(instance, f["instance_block"])
    segmap = data.make_segmap(label, m.info, instance if m.args.use_instance else None)
    return segmap, fx.fixture_image("image", f["image_shape"])


def check_output(f: dict, out: torch.Tensor, atol: float) -> None:
    step = f["output_step"]
    assert tuple(out.shape[2:]) == tuple(f["image_shape"][2:])
    torch.testing.assert_close(out[..., ::step, ::step], f["output"], atol=atol, rtol=0)
    assert out.double().sum().item() == pytest.approx(f["output_sum"], abs=atol * out.numel())
    assert out.double().abs().sum().item() == pytest.approx(f["output_abs_sum"], abs=atol * out.numel())


@pytest.mark.parametrize("case", list(CASES))
def test_official_output_reproduced(case, monkeypatch):
    preset, overrides, atol = CASES[case]
    f = load_fixture(case)
    encoder = fx.official_state(f, "E:") if any(k.startswith("E:") for k in f["layout"]) else None
    m = official.load_official(fx.official_state(f), preset, encoder, **overrides)
    assert not m.G.training and (encoder is None) == (m.E is None)
    segmap, image = fixture_inputs(f, m)
    with torch.no_grad():
        if m.args.model == "sean":
            # the official noise draws, replaced by fixed values when the fixture was made, in call order
            noise = [fx.fixture_noise(f"noise.{i}", s) for i, s in enumerate(f["noise_shapes"])]
            calls = []

            def fixed_noise(*size, **kw):
                calls.append(tuple(size))
                return noise[len(calls) - 1]

            monkeypatch.setattr(torch, "randn", fixed_noise)
            out = m.G(segmap, image=image)
            monkeypatch.undo()
            assert calls == [tuple(s) for s in f["noise_shapes"]]
        elif m.E is not None:
            mu, logvar = m.E(image)
            torch.testing.assert_close(mu, f["mu"], atol=atol, rtol=0)
            torch.testing.assert_close(logvar, f["logvar"], atol=atol, rtol=0)
            out = m.G(segmap, z=mu)
        else:
            out = m.G(segmap)
    check_output(f, out, atol)


def test_synthesize_cli_ade20k_raw_ids(tmp_path):
    """`sample.py synthesize --official ade20k`: a raw ADE20K annotation PNG -> the official image."""
    f = load_fixture("spade_ade20k")
    ckpt = tmp_path / "latest_net_G.pth"
    torch.save(fx.official_state(f), ckpt)
    raw = fx.fixture_labels(f["label_grid"], f["label_block"])[0, 0].numpy().astype(np.uint8)
    assert raw.min() == 0 and raw.max() == 150  # 'unknown' and the last class both occur
    Image.fromarray(raw).save(tmp_path / "ADE_val_00000001.png")
    argv = ["synthesize", "--official", "ade20k", "--ckpt", str(ckpt), "--labels",
            str(tmp_path / "ADE_val_00000001.png"), "--out", str(tmp_path / "out"),
            "--official-option", "crop_size=64"]
    assert sample.main(argv) == 0
    png = torch.from_numpy(np.array(Image.open(tmp_path / "out" / "ADE_val_00000001.png"))).permute(2, 0, 1)
    step = f["output_step"]
    expected = torch.round((f["output"][0].clamp(-1, 1) + 1) * 127.5).byte()
    assert torch.equal(png[:, ::step, ::step], expected)


def _meta_state(keys: dict) -> dict:
    return {k: torch.empty(shape, device="meta") for k, shape in keys.items()}


@pytest.mark.parametrize("name, preset", [("spade_ade20k", "ade20k"), ("spade_coco", "coco"),
                                          ("spade_cityscapes", "cityscapes"),
                                          ("sean_celebamask", "celebamask")])
def test_paper_size_keys_map_completely(name, preset):
    """Every key of a paper-size official generator maps onto the network built from the preset."""
    keys = json.loads((FIXTURES / "official_keys.json").read_text())[name]
    m = official.load_official(_meta_state(keys), preset, device="meta")  # strict: raises on any misfit
    assert (m.args.ngf, m.args.crop_size) == (64, 256 if preset != "cityscapes" else 512)
    official_params = sum(np.prod(s) for k, s in keys.items() if not k.endswith(
        ("_u", "_v", "running_mean", "running_var", "num_batches_tracked")))
    assert models.count_parameters(m.G) == official_params


def test_paper_size_encoder_keys_map_completely():
    keys = json.loads((FIXTURES / "official_keys.json").read_text())["spade_encoder"]
    with torch.device("meta"):
        E = models.ConvEncoder()
    converted = official.convert_official_state(_meta_state(keys), E, "encoder")
    assert set(converted) == set(E.state_dict())


def _tiny_state():
    return fx.official_state(load_fixture("spade_ade20k"))


@pytest.mark.parametrize("damage, expected", [
    (lambda s: s.pop("up_1.norm_0.mlp_gamma.weight"), ["1 keys missing", "up_1.norm_0.mlp_gamma.weight"]),
    (lambda s: s.update({"up_9.conv_0.weight_orig": torch.zeros(1)}),
     ["1 unexpected", "up_9.conv_0.weight_orig"]),
    (lambda s: s.update({"head_0.conv_0.weight_u": torch.zeros(7)}),
     ["1 of another shape",
      "head_0.conv_0.weight_u (7,) -> head_0.conv_0.parametrizations.weight.0._u (32,)"]),
])
def test_misfit_keys_are_listed(damage, expected):
    state = _tiny_state()
    damage(state)
    with pytest.raises(official.OfficialCheckpointError) as err:
        official.load_official(state, "ade20k", crop_size=64)
    for text in expected:
        assert text in str(err.value)


def test_wrong_preset_is_an_error_not_a_partial_load():
    with pytest.raises(official.OfficialCheckpointError, match="other shape") as err:
        official.load_official(_tiny_state(), "coco", crop_size=64)  # COCO: 184 input channels
    assert "fc.weight (32, 151, 3, 3) -> fc.weight (32, 184, 3, 3)" in str(err.value)
    assert "is the preset, label count or crop size right?" in str(err.value)


def test_old_checkpoint_without_num_batches_tracked_loads():
    state = {k: v for k, v in _tiny_state().items() if not k.endswith("num_batches_tracked")}
    official.load_official(state, "ade20k", crop_size=64)


def test_sean_fc_mu_missing_class_is_listed():
    f = load_fixture("sean_celebamask")
    state = fx.official_state(f)
    del state["head_0.ace_0.fc_mu18.weight"]
    with pytest.raises(official.OfficialCheckpointError, match=r"head_0\.norm_0\.fc_mu18\.weight"):
        official.load_official(state, "celebamask", crop_size=64)


@pytest.mark.parametrize("preset", list(official.OFFICIAL_PRESETS))
def test_official_options_agree_with_the_training_presets(preset):
    """official.py.s table of what the official checkpoints imply is train.PRESETS' (the official dataset
    options); only the norm differs: sync batch norm, which is batch norm on one process in eval mode."""
    import dataclasses

    import train

    trained = {f.name: f.default for f in dataclasses.fields(train.Args)} | train.PRESETS[preset]
    implied = official.OFFICIAL_DEFAULTS | official.OFFICIAL_PRESETS[preset]
    for key in ("dataset", "model", "crop_size", "aspect_ratio", "num_upsampling_layers", "use_instance",
                "vae", "ngf", "z_dim", "style_dim"):
        assert implied[key] == trained[key], key
    assert implied["param_free"] == "batch" and trained["param_free"] == "syncbatch"


# ------------------------------------------------------------------------------------------------------------
# Spectral norm in training mode: the official hook and torch's parametrization


def old_style_copy(net: torch.nn.Module) -> torch.nn.Module:
    """`net` with every spectral-normed conv rebuilt as the official code builds it
    (torch.nn.utils.spectral_norm, the pre-parametrization hook), same weight, bias, u and v."""
    import copy
    net = copy.deepcopy(net)
    for parent in list(net.modules()):
        for name, conv in list(parent.named_children()):
            if not torch.nn.utils.parametrize.is_parametrized(conv, "weight"):
                continue
            sn = conv.parametrizations.weight[0]
            old = torch.nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                                  conv.padding, bias=conv.bias is not None)
            with torch.no_grad():
                old.weight.copy_(conv.parametrizations.weight.original)
                if conv.bias is not None:
                    old.bias.copy_(conv.bias)
            torch.nn.utils.spectral_norm(old)
            old.weight_u.copy_(sn._u)
            old.weight_v.copy_(sn._v)
            setattr(parent, name, old)
    return net


def test_spectral_norm_train_mode_differs_only_in_the_power_iteration_order():
    """Given the same weights and u, v, eval mode is equal to the official hook (both divide by u^T W v).
    One training-mode step runs one power iteration, in the other order (official: v <- W^T u, then u <- W v;
    torch's parametrization: u <- W v, then v <- W^T u), so the outputs differ while u, v are not yet the top
    singular pair, and agree once they are, which is where training keeps them: the same fixed point."""
    f = load_fixture("spade_ade20k")
    m = official.load_official(fx.official_state(f), "ade20k", crop_size=64)
    for key, value in f["buffers"].items():  # the official u, v came along with the conversion
        if key.endswith(("weight_u", "weight_v")):
            name = key[:-len("weight_u")] + "parametrizations.weight.0._" + key[-1]
            assert torch.equal(m.G.state_dict()[name], value), key
    segmap, _ = fixture_inputs(f, m)
    ours, theirs = m.G, old_style_copy(m.G)
    with torch.no_grad():
        assert torch.equal(ours.eval()(segmap), theirs.eval()(segmap))
        first = (ours.train()(segmap) - theirs.train()(segmap)).abs().max().item()
        assert first > 1e-4  # the fixture's u, v: a few official training-mode runs, not converged
        for _ in range(8):
            ours(segmap), theirs(segmap)
        later = (ours(segmap) - theirs(segmap)).abs().max().item()
    assert later < first / 4  # 0.061 -> 0.012 after 10 steps, 0.0008 after 20, 7e-5 after 60: one fixed point
    # u, v at the top singular pair (SVD): one training-mode step of each is the same
    for net in (ours, theirs):
        for conv in net.modules():
            if hasattr(conv, "weight_orig") or torch.nn.utils.parametrize.is_parametrized(conv, "weight"):
                old = hasattr(conv, "weight_orig")
                w = conv.weight_orig if old else conv.parametrizations.weight.original
                u, _, vh = torch.linalg.svd(w.detach().flatten(1), full_matrices=False)
                sign = torch.sign(u[:, 0].sum())
                us, vs = (conv.weight_u, conv.weight_v) if hasattr(conv, "weight_u") else (
                    conv.parametrizations.weight[0]._u, conv.parametrizations.weight[0]._v)
                us.copy_(u[:, 0] * sign)
                vs.copy_(vh[0] * sign)
    with torch.no_grad():
        torch.testing.assert_close(ours.train()(segmap), theirs.train()(segmap), atol=1e-5, rtol=0)
