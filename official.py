"""The released checkpoints of SPADE (NVlabs/SPADE: latest_net_G.pth, latest_net_E.pth) and SEAN (ZPdesu/SEAN)
loaded into this project's networks, which are the same networks under other parameter names.

    om = official.load_official("latest_net_G.pth", "ade20k")     # -> OfficialModel: G, E, options, labels
    python sample.py synthesize --official ade20k --ckpt latest_net_G.pth --labels labels/ --out out/

tests/test_official.py checks the outputs against the official code's, run on the same weights (SPADE
exactly, SEAN within 1e-6).
"""

import re
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn as nn

import data
import models

# ----------------------------------------------------------------------------------------------------------
# Official checkpoints (NVlabs/SPADE latest_net_G/E.pth, ZPdesu/SEAN): the networks above under other names.
# convert_official_state renames the keys, checks an exact fit (no key missing or left over, equal shapes):
#   X.weight_orig, X.weight_u, X.weight_v -> X.parametrizations.weight.original, ...weight.0._u, ..._v
#   layerN.0.* -> convs.{N-1}.* (SPADE's encoder);  Zencoder.* -> style_encoder.*
#   B.ace_0, ace_1, ace_s -> B.norm_0, norm_1, norm_s, and inside them Spade.* -> spade.*
#   ACE.fc_mu0 .. fc_mu{K-1} (.weight, .bias) -> stacked into fc_mu_weight (K, S, S), fc_mu_bias (K, S)
#   last SEAN block (models.SPADEWithNoise): param_free_norm -> spade.param_free_norm; the never-called
#     official Spade.param_free_norm is dropped.  Every other key keeps its name.


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
    last = tuple(f"{n}." for n, m in model.named_modules() if isinstance(m, models.SPADEWithNoise))
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


# The options an official checkpoint does not store, as the official code's defaults and dataset options set
# them (tests/test_official.py checks them against train.PRESETS). The official sync batch norm is plain
# batch norm on one process in eval mode.
OFFICIAL_DEFAULTS = dict(model="spade", vae=False, ngf=64, z_dim=256, style_dim=512, crop_size=256,
                         aspect_ratio=1.0, num_upsampling_layers="normal", use_instance=True,
                         param_free="batch")
OFFICIAL_PRESETS = {
    "ade20k": dict(dataset="ade20k"),  # also ADE20K-outdoor
    "coco": dict(dataset="coco"),
    "cityscapes": dict(dataset="cityscapes", crop_size=512, aspect_ratio=2.0, num_upsampling_layers="more"),
    "celebamask": dict(dataset="celebamask", model="sean", use_instance=False),  # SEAN
}


@dataclass
class OfficialModel:
    """An official checkpoint rebuilt here: networks in eval mode and what is needed to feed them."""

    G: nn.Module
    """the generator"""
    E: nn.Module | None
    """SPADE's VAE encoder (when an encoder file was given), else None"""
    args: SimpleNamespace
    """the options the networks were built from (preset, official defaults, read from weights, overrides)"""
    info: object
    """data.DatasetInfo of the label layout (label_nc, don't-care)"""
    official_ids: bool
    """ADE20K: the official models take raw annotation ids (data.ADE20KDataset(official_ids=True))"""


def load_official(generator, preset: str = "ade20k", encoder=None, *, label_nc: int | None = None,
                  contain_dontcare: bool | None = None, device: str = "cpu", **overrides) -> OfficialModel:
    """This project's network for an official latest_net_G.pth (NVlabs/SPADE, ZPdesu/SEAN; a path or its
    state dict), with latest_net_E.pth as ``encoder`` for SPADE+VAE. The model kind, ngf, VAE and style size
    are read from the weights; what the file does not store comes from the preset (OFFICIAL_PRESETS), with
    ``label_nc``, ``contain_dontcare`` and any OFFICIAL_DEFAULTS option overridable. Keys that do not fit
    raise OfficialCheckpointError, listing every one."""
    if preset not in OFFICIAL_PRESETS:
        raise ValueError(f"preset must be one of {', '.join(OFFICIAL_PRESETS)}, got {preset!r}")
    if set(overrides) - set(OFFICIAL_DEFAULTS) - {"dataset"}:
        raise ValueError(f"unknown options {sorted(set(overrides) - set(OFFICIAL_DEFAULTS))}; valid: "
                         f"label_nc, contain_dontcare, dataset, {', '.join(OFFICIAL_DEFAULTS)}")
    state = read_official_state(generator, "generator")
    cfg = (OFFICIAL_DEFAULTS | OFFICIAL_PRESETS[preset] | official_options_from_weights(state)
           | overrides | dict(preset=preset, seed=0, dataroot=""))
    if encoder is not None and not cfg["vae"]:
        raise ValueError("an encoder was given but the generator is not a VAE generator (its fc is a conv)")
    info = data.DATASETS[cfg["dataset"]].INFO
    if label_nc is not None or contain_dontcare is not None:
        nc = info.label_nc if label_nc is None else int(label_nc)
        dc = info.contain_dontcare if contain_dontcare is None else bool(contain_dontcare)
        info = replace(info, label_nc=nc, contain_dontcare=dc, dontcare_label=nc if dc else None,
                       class_names=info.class_names if nc == info.label_nc else ())
    model_args = models.ModelArgs.from_config(cfg, info.semantic_nc(cfg["use_instance"]),
                                              cfg["use_instance"] and info.has_instance)
    with torch.device(device):
        G, _D, E = models.build(model_args)
    try:
        G.load_state_dict(convert_official_state(state, G, "generator"))
        if encoder is not None:
            E.load_state_dict(convert_official_state(read_official_state(encoder, "encoder"), E,
                                                     "encoder"))
    except OfficialCheckpointError as err:
        where = (f"a {cfg['model']}{'+VAE' if cfg['vae'] else ''} generator for '{preset}' "
                 f"({model_args.semantic_nc} input channels, ngf {cfg['ngf']}, {models.config_size(cfg)[0]}x"
                 f"{cfg['crop_size']}, {cfg['num_upsampling_layers']})")
        raise OfficialCheckpointError(f"{err}\n  built: {where}; is the preset, label count or crop "
                                      "size right?") from None
    return OfficialModel(G.eval(), E.eval() if encoder is not None else None, SimpleNamespace(**cfg), info,
                         official_ids=cfg["dataset"] == "ade20k")


def official_generator(path: str, preset: str, encoder: str = "", options: list[str] = (),
                       device: str = "cpu") -> models.LoadedModel:
    """``sample.py synthesize --official PRESET``: load_official with the --official-option 'name=value'
    overrides, as a models.LoadedModel."""
    types = {k: type(v) for k, v in OFFICIAL_DEFAULTS.items()} | dict(dataset=str, label_nc=int,
                                                                      contain_dontcare=bool)
    kw = {}
    for item in options:
        name, _, value = item.partition("=")
        if name not in types or not value:
            raise ValueError(f"--official-option {item!r}: write name=value, name one of {sorted(types)}")
        try:
            kw[name] = value.lower() in ("1", "true", "yes") if types[name] is bool else types[name](value)
        except ValueError:
            raise ValueError(f"--official-option {item!r}: {name} takes {types[name].__name__} values, got "
                             f"{value!r}") from None
    if not Path(path).is_file():
        raise FileNotFoundError(f"official checkpoint {path} does not exist")
    om = load_official(path, preset, encoder or None, **kw)
    a = om.args
    name = f"official {a.model}{'+VAE' if a.vae else ''} {preset} ({Path(path).name})"
    E = None if om.E is None else om.E.to(device)
    return models.LoadedModel.from_run(path, name, vars(a) | {"official_ids": om.official_ids},
                                       om.G.to(device), E, om.info)
