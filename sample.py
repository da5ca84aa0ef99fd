"""Run a trained generator: load it (a train.py checkpoint or run folder, the committed demo weights, an
export, an official checkpoint), read label maps and style images, write synthesized images, with SEAN's
per-region style editing. The role of nanoGPT's sample.py; paint.py draws on it.

    python sample.py synthesize --ckpt runs/quick-sean --labels labels/ --out out/ [--n-samples 4]
        [--style-image photo.png:photo_label.png] [--region-style sky=a.png:a_label.png]
    python sample.py synthesize --official ade20k --ckpt latest_net_G.pth --labels labels/ --out out/
    python sample.py export --ckpt runs/quick-sean --out sean16.pt      # generator (+ encoder), float16

Also here, as the layer every command line stands on: the checkpoint file format (train.py writes it), the
dataclass -> flags function all command lines use, and the allocator setting they all make.
"""

import argparse
import ast
import contextlib
import ctypes
import dataclasses
import inspect
import os
import sys
import textwrap
import zipfile
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import data
import models
import official

WEIGHTS = Path(__file__).resolve().parent / "weights"  # the committed weight files
MAX_LABEL_PIXELS = 4096 * 4096  # label maps read by synthesize / paint (a 12000^2 map would need GBs)


# --- Command-line plumbing shared by every command line here ------------------------------------------------


def tune_allocator() -> str:
    """Keep glibc's malloc from handing big freed blocks back to the kernel. Every training step frees and
    allocates again tensors of tens of MB (spectral norm's normalized weights, activations); by default glibc
    unmaps each (mmap above 32 MB, heap trimming) and the next step faults the pages back in: 1.2x the step
    time of SPADE at paper width on a CPU (see README, Performance). Same as running with
    GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647. Called by the command
    lines (train.py, sample.py, evaluate.py, paint.py, bench.py), never on import: a notebook or script that
    imports the modules calls it itself or sets that variable. Freed memory stays with the process (its RSS
    stays at its peak). Left alone where the user chose: GLIBC_TUNABLES naming malloc, or another allocator
    in LD_PRELOAD (jemalloc, tcmalloc). Returns what was done, for the start-of-run line."""
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


def add_dataclass_args(parser: argparse.ArgumentParser, cls, choices: dict | None = None,
                       show_defaults: bool = True) -> None:
    """--field-name (and the official --field_name) for every field of the dataclass cls, with the string
    written under the field as its help: booleans --x / --no-x (so no field starts with no_), lists take
    several values, fields without default are required. show_defaults=False leaves unset flags out of the
    namespace (argparse.SUPPRESS), so the caller sees which were given."""
    body, choices = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body, choices or {}
    docs = {a.target.id: b.value.value for a, b in pairwise(body)  # a field, then a string literal
            if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr)
            and isinstance(b.value, ast.Constant) and isinstance(b.value.value, str)}
    for f in dataclasses.fields(cls):
        flags = ["--" + f.name.replace("_", "-")] + (["--" + f.name] if "_" in f.name else [])
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if required else (f.default if f.default is not dataclasses.MISSING
                                         else f.default_factory())
        type_name = f.type if isinstance(f.type, str) else f.type.__name__
        kw = dict(help=docs.get(f.name, "") + ("" if default in (None, "", []) or type_name == "bool"
                                                else f" (default: {default})"))
        if not show_defaults:
            kw["default"] = argparse.SUPPRESS
        elif default is not None:
            kw["default"] = default
        if type_name == "bool":
            parser.add_argument(*flags, action=argparse.BooleanOptionalAction, **kw)
        elif type_name.startswith("list"):
            parser.add_argument(*flags, nargs="+", action="extend", required=required, **kw)
        else:
            typ = {"int": int, "float": float}.get(type_name.split(" |")[0], str)
            parser.add_argument(*flags, type=typ, choices=choices.get(f.name), required=required,
                                metavar=None if f.name in choices else f.name.upper(), **kw)


# --- Checkpoints: one file, written atomically, read with torch.load(weights_only=True) -------------------

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
    weights in dtype (float16 halves the file). load_generator reads it as it reads a full
    checkpoint; the weights are cast back to the networks' float32 on loading."""
    def cast(state):
        return None if state is None else {k: v.to(dtype) if v.is_floating_point() else v
                                           for k, v in state.items()}
    kept = {k: ckpt[k] for k in ("model_args", "step") if k in ckpt}
    return {"format": CKPT_FORMAT, "config": ckpt["config"], **kept, "G": cast(ckpt["G"]),
            "E": cast(ckpt.get("E"))}


def check_export_target(source: str, out: str) -> None:
    """export --out: a new file or an earlier export, never the input, a training checkpoint (its optimizer
    and discriminator would be lost) or a folder; its folder must exist."""
    target = Path(out)
    if target.is_dir():
        raise ValueError(f"--out {out} is a folder; name the file to write, e.g. {target / 'model.pt'}")
    if not target.parent.is_dir():
        raise ValueError(f"--out {out}: the folder {target.parent} does not exist")
    if target.exists():
        if target.resolve() == Path(source).resolve():
            raise ValueError(f"--out {out} is the checkpoint being exported; write the export elsewhere")
        with contextlib.suppress(ValueError):
            if "D" in read_checkpoint(target, mmap=True):  # mapped: a large file is not read whole
                raise FileExistsError(f"--out {out} is a training checkpoint (with its discriminator and "
                                      "optimizers); the export will not replace it: pick another file")



# --- Loading a generator -----------------------------------------------------------------------------------


def load_generator(checkpoint_path: str | os.PathLike, device: str = "cpu") -> models.LoadedModel:
    """The generator (and VAE encoder) of a train.py checkpoint or a run folder's newest, in eval mode,
    rebuilt by models.build from the checkpoint's "model_args" (older ones: derived from their config)."""
    path = Path(find_checkpoint(checkpoint_path))
    ckpt = read_checkpoint(path)
    if "G" not in ckpt:
        raise ValueError(f"{path} is not a train.py checkpoint (no generator weights 'G')")
    config = ckpt["config"]
    size = models.config_size(config)
    info = data.build_split(config["dataset"], config.get("dataroot") or None, "val", size, length=2,
                            seed=config["seed"]).info
    use_instance = bool(config["use_instance"] and info.has_instance)
    if "model_args" in ckpt:
        model_args = models.ModelArgs(**ckpt["model_args"])
    else:
        model_args = models.ModelArgs.from_config(config, info.semantic_nc(use_instance), use_instance)
    G, _D, E = models.build(model_args)
    try:
        G.load_state_dict(ckpt["G"])
        if E is not None:
            if ckpt.get("E") is None:
                raise RuntimeError("the checkpoint has no encoder weights ('E')")
            E.load_state_dict(ckpt["E"])
    except RuntimeError as err:
        raise ValueError(f"{path}: the weights do not fit a {config['model']} generator for "
                         f"'{config['dataset']}' ({model_args.semantic_nc} input channels) at {size[0]}x"
                         f"{size[1]}: was it trained on another dataset or label count? "
                         f"({str(err).splitlines()[0]})") from err
    name = f"{config['model']}{'+VAE' if config['vae'] else ''} ({path.parent.name}/{path.name})"
    return models.LoadedModel.from_run(path, name, config, G.to(device).eval(),
                                       None if E is None else E.to(device).eval(), info)


# The committed demo models (README "Demo weights"): the file name and the command that regenerates it.
DEMO = {"spade": "python train.py --preset demo --name demo-spade",
        "spade-vae": "python train.py --preset demo --vae --name demo-spade-vae",
        "sean": "python train.py --preset demo --model sean --niter 12 --niter-decay 12 --name demo-sean"}


def load_demo(name: str, device: str = "cpu") -> models.LoadedModel:
    """One of the committed demo models, weights/demo-<name>.pt (name: spade, spade-vae or sean)."""
    if name not in DEMO:
        raise ValueError(f"no demo model '{name}': choose one of {', '.join(DEMO)}")
    path = WEIGHTS / f"demo-{name}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{data.shown(path)} is missing: it is committed with the repository; to "
                                f"make it again run `{DEMO[name]}`, then `python sample.py export --ckpt "
                                f"runs/demo-{name} --out weights/demo-{name}.pt`")
    return load_generator(path, device)


# --- Reading label maps and style images; synthesis --------------------------------------------------------


def read_label_map(path: str | os.PathLike, info, size: tuple[int, int], palette: str | None = None,
                   resize: bool = False, official_ids: bool = False) -> torch.Tensor:
    """A label map file -> (H, W) class ids, don't-care as info.dontcare_label. Single-channel files hold the
    dataset's own ids (mapped and checked by its loader's ``map_label``); colour files are decoded with
    ``palette``, else with this project's colours. ``official_ids``: ADE20K's raw ids, as the official
    checkpoints take them. Another size is an error unless ``resize`` (nearest). Errors: ValueError."""
    path = Path(path)
    try:
        with Image.open(path) as im:  # the header only: the size is checked before any pixel is decoded
            drawn_here = im.mode in ("RGB", "RGBA") and not palette
            if im.width * im.height > MAX_LABEL_PIXELS:
                raise ValueError(f"{path}: label map of {im.width}x{im.height} pixels; at most "
                                 f"{MAX_LABEL_PIXELS:,} pixels (4096x4096) are read: scale it down first")
        if drawn_here:  # drawn with this project's colours (data.colorize): training ids
            colours = data.load_palette(data.dataset_palette(info.name, info.label_nc))
            label = data.read_label_file(str(path), colours)
            if official_ids:  # ADE20K's raw ids: class k is k + 1, don't-care is 0
                label = np.where(label == info.dontcare_label, 0, label + 1)
        else:
            raw = data.read_label_file(str(path), data.load_palette(palette) if palette else None)
            map_label = getattr(data.DATASETS.get(info.name), "map_label", data.PairedFolderDataset.map_label)
            label = map_label(SimpleNamespace(info=info, official_ids=official_ids), raw, str(path))
    except OSError as err:
        raise ValueError(f"{path}: cannot read the label map ({err})") from err
    except data.DataError as err:
        raise ValueError(str(err)) from err
    label = torch.from_numpy(np.ascontiguousarray(label)).long()
    if tuple(label.shape) != tuple(size):
        if not resize:
            raise ValueError(f"{path}: label map is {tuple(label.shape)} (H, W) but the model makes "
                             f"{tuple(size)}; pass --resize-labels to resize it (nearest neighbour)")
        label = F.interpolate(label[None, None].float(), size=size, mode="nearest")[0, 0].long()
    return label


def _list_label_files(labels: str | os.PathLike) -> list[Path]:
    path = Path(labels)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"--labels {path} does not exist")
    exts = {".png", ".bmp", ".tif", ".tiff", ".gif"}
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in exts and p.is_file())
    if not files:
        raise ValueError(f"--labels {path}: the folder holds no label maps (*.png, *.bmp, *.tif)")
    return files


def read_style_image(spec: str, lm: models.LoadedModel, palette: str | None):
    """'image[:label]' -> the image ([-1, 1], at the model's size) and, for SEAN, its label map (default:
    ``<stem>_label.png`` beside the image)."""
    image_path, _, label_path = spec.partition(":")
    if not Path(image_path).is_file():
        raise FileNotFoundError(f"style image {image_path} does not exist")
    image = data.read_image_file(image_path)
    if tuple(image.shape[-2:]) != lm.size:
        image = F.interpolate(image[None], size=lm.size, mode="bilinear", align_corners=False,
                              antialias=True)[0]
    if lm.model != "sean":
        return image, None
    if not label_path:
        sibling = Path(image_path).with_name(Path(image_path).stem + "_label.png")
        if not sibling.is_file():
            raise ValueError(f"SEAN needs the label map of the style image {image_path} to pool its regions: "
                             f"write 'image:label' or put {sibling.name} beside it")
        label_path = str(sibling)
    return image, read_label_map(label_path, lm.info, lm.size, palette, resize=True)


@torch.no_grad()
def mean_style_codes(lm: models.LoadedModel, n: int = 200, batch_size: int = 16) -> torch.Tensor:
    """SEAN's per-class mean style code over n real training images (zeros for classes never present): the
    official repository's default style for a label map without a style image."""
    train_set = data.build_split(lm.dataset, lm.dataroot, "train", lm.size, length=n, seed=lm.seed)
    n = min(n, len(train_set))
    total = count = 0
    dev = next(lm.G.parameters()).device
    for batch in data.batches(train_set, n, batch_size):
        segmap = lm.segmap(batch["label"], batch.get("instance")).to(dev)
        codes = lm.G.encode_style(batch["image"].to(dev), segmap)
        present = (segmap[:, :lm.G.num_regions].flatten(2).sum(-1) > 0).double()  # (B, num_regions)
        total = total + (codes.double() * present[..., None]).sum(0)
        count = count + present.sum(0)
    return (total / count.clamp(min=1)[:, None]).float()[None]


def class_id(name: str, info) -> int:
    if name.isdigit():
        k = int(name)
    elif name in info.class_names:
        k = info.class_names.index(name)
    else:
        raise ValueError(f"--region-style: unknown class '{name}' (classes: {', '.join(info.class_names)} "
                         "or an id)")
    if not 0 <= k < info.label_nc:
        raise ValueError(f"--region-style: class id {k} outside 0..{info.label_nc - 1}")
    return k


@dataclass
class SynthesizeArgs:
    """``python sample.py synthesize``: PNGs from label maps, with optional style control."""

    ckpt: str
    """checkpoint written by train.py or a run folder (with --official: the official latest_net_G.pth)"""
    labels: str
    """a label map file or a folder of them (single-channel ids, or colour-coded with --palette)"""
    out: str = "synth"
    """output folder"""
    n_samples: int = 1
    """random samples per label map (SPADE+VAE: z ~ N(0, I); SEAN: styles of random training images)"""
    style_image: str = ""
    """whole picture in the style of this photo: 'photo.png' (SPADE+VAE), 'photo.png:label.png' (SEAN)"""
    region_style: list[str] = field(default_factory=list)
    """SEAN: class=photo.png[:label.png] takes that class's style from that photo (repeatable)"""
    palette: str = ""
    """colour label maps: JSON palette ([r, g, b] per id, or {"#rrggbb": id}) or cityscapes | ade20k | coco"""
    resize_labels: bool = False
    """resize label maps of another size to the model's (nearest) instead of failing"""
    mean_style_images: int = 200
    """SEAN without a style image: per-class mean style code over this many training images"""
    seed: int = 0
    """seed of the random samples"""
    device: str = "cpu"
    """torch device"""
    official: str = ""
    """--ckpt is an official NVlabs/SPADE or ZPdesu/SEAN generator of this preset (ade20k: also outdoor)"""
    official_encoder: str = ""
    """with --official: the official latest_net_E.pth of a SPADE+VAE generator"""
    official_option: list[str] = field(default_factory=list)
    """with --official: name=value overriding a preset option (crop_size=512, label_nc=...), repeatable"""


def _synthesis_model(args: SynthesizeArgs) -> models.LoadedModel:
    """The generator of ``synthesize``, refused early when it cannot do what the arguments ask."""
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} is a file; synthesize writes one PNG per label map into a folder")
    if args.official:
        lm = official.official_generator(args.ckpt, args.official, args.official_encoder,
                                         args.official_option, args.device)
    else:
        lm = load_generator(args.ckpt, args.device)
    if args.n_samples < 1:
        raise ValueError("--n-samples must be >= 1")
    if args.n_samples > 1 and not lm.has_style:
        raise ValueError(f"{lm.model} is deterministic (one image per label map): --n-samples needs "
                         "SPADE+VAE or SEAN")
    if (args.style_image or args.region_style) and not lm.has_style:
        raise ValueError(f"{lm.model} without VAE takes no style: --style-image needs SPADE+VAE or SEAN")
    if args.region_style and lm.model != "sean":
        raise ValueError("--region-style needs SEAN (SPADE's VAE encodes one code for the whole image)")
    return lm


def _sean_style(lm: models.LoadedModel, args: SynthesizeArgs) -> torch.Tensor:
    """SEAN's style codes (1, R, D) of --style-image (else the training images' mean codes), then each
    --region-style class taken from its own photo."""
    if args.style_image:
        image, label = read_style_image(args.style_image, lm, args.palette or None)
        codes = lm.style_codes(image[None], label[None])
    else:
        codes = mean_style_codes(lm, args.mean_style_images).to(args.device)
    for spec in args.region_style:
        name, _, image_spec = spec.partition("=")
        if not image_spec:
            raise ValueError(f"--region-style {spec!r}: write class=photo.png[:label.png]")
        k = class_id(name, lm.info)
        image, label = read_style_image(image_spec, lm, args.palette or None)
        if not (label == k).any():
            raise ValueError(f"--region-style {spec}: class '{name}' does not occur in that photo's label "
                             "map")
        codes = models.with_region_style(codes, lm.style_codes(image[None], label[None]), k)
    return codes


@torch.no_grad()
def synthesize(args: SynthesizeArgs, log=print) -> list[Path]:
    """Write one PNG per label map and sample; returns the written paths."""
    lm = _synthesis_model(args)
    files = _list_label_files(args.labels)
    labels = [read_label_map(f, lm.info, lm.size, args.palette or None, args.resize_labels,
                             lm.config.get("official_ids", False)) for f in files]
    dev, gen = args.device, torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    style_image = codes = random_styles = None
    if lm.model == "sean":
        codes = _sean_style(lm, args)
        if args.n_samples > 1:  # the styles of random real images (the base codes where a class is absent)
            random_styles = data.build_split(lm.dataset, lm.dataroot, "train", lm.size, length=1000,
                                             seed=lm.seed)
    elif args.style_image:
        style_image = read_style_image(args.style_image, lm, args.palette or None)[0][None].to(dev)
    # SPADE+VAE without a style image: one sample is the prior's mean z = 0, several are z ~ N(0, I)
    mean_z = lm.use_vae and style_image is None and args.n_samples == 1
    z = torch.zeros(1, lm.z_dim, device=dev) if mean_z else None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path, label in zip(files, labels, strict=True):
        segmap = lm.segmap(label[None]).to(dev)
        for s in range(args.n_samples):
            sample_codes = codes
            if random_styles is not None:
                item = random_styles[int(torch.randint(len(random_styles), (1,), generator=gen))]
                seg_r = lm.segmap(item["label"][None], item.get("instance")).to(dev)
                present = seg_r.flatten(2).sum(-1)[..., None] > 0
                sample_codes = torch.where(present, lm.style_codes(item["image"][None], item["label"][None],
                                                                   item.get("instance")), codes)
            fake = lm.generate(segmap, image=style_image, style_codes=sample_codes, generator=gen, z=z)
            name = f"{path.stem}.png" if args.n_samples == 1 else f"{path.stem}_sample{s}.png"
            pixels = (data.quantize_png(fake[0].cpu()) * 255).round().byte().permute(1, 2, 0).numpy()
            Image.fromarray(pixels).save(out / name)
            written.append(out / name)
    log(f"[synthesize] wrote {len(written)} images to {out}")
    return written


# --- Command line -------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    add_dataclass_args(sub.add_parser("synthesize", help="PNGs from label maps, with style control"),
                       SynthesizeArgs, choices={"official": ("", *official.OFFICIAL_PRESETS)})
    exp = sub.add_parser("export", help="generator (+ encoder) weights only, float16 (as in weights/)")
    exp.add_argument("--ckpt", required=True, help="checkpoint written by train.py, or a run folder (newest)")
    exp.add_argument("--out", required=True, help="file to write, e.g. weights/demo-sean.pt")
    return parser


def main(argv=None) -> int:
    ns = build_parser().parse_args(argv)
    try:
        if ns.command == "synthesize":
            synthesize(SynthesizeArgs(**{f.name: getattr(ns, f.name)
                                         for f in dataclasses.fields(SynthesizeArgs)}))
        else:
            path = find_checkpoint(ns.ckpt)
            check_export_target(path, ns.out)
            weights = export_generator(read_checkpoint(path))
            atomic_save(weights, ns.out)
            print(f"{path} -> {ns.out}: generator{'' if weights['E'] is None else ' + encoder'} weights, "
                  f"float16, {os.path.getsize(ns.out) / 1e6:.1f} MB")
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    tune_allocator()
    sys.exit(main())
