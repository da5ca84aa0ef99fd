"""Train SPADE (Park et al., CVPR 2019), SEAN (Zhu et al., CVPR 2020) and the SPADE paper's baselines.

    python train.py                                   # quick preset: SPADE on synthetic landscapes, 64², CPU
    python train.py --model sean --max-steps 500      # any preset value can be overridden on the command line
    python train.py --preset ade20k --dataroot /data/ADEChallengeData2016 --model spade --vae
    python train.py --resume runs/quick-spade         # continue exactly where the newest checkpoint stopped
    torchrun --nproc_per_node=8 train.py --preset cityscapes --dataroot /data/cityscapes   # DDP, one GPU each

Presets carry the papers' settings: TTUR (G lr 1e-4, D lr 4e-4), Adam beta=(0, 0.9) (the SPADE paper says
0.999; the official code uses 0.9), lambda_FM = lambda_VGG = 10, lambda_KL = 0.05, each dataset's batch and
epochs, the learning rate constant for `niter` epochs then decayed linearly to 0 over `niter_decay`, stepped
once per epoch as the official code does. The quick preset (7 minutes on 2 idle CPU cores: 424 s) drops the
VGG loss (several times the tiny generator's cost; the default must run offline) and uses style_dim 64.

train_step: the generator runs ONCE; D sees cat([fake.detach(), real]) in one pass; the G step reuses the same
fake and runs D again, because feature matching needs the real image's features under the updated D (the
official code runs G twice and updates D second). A checkpoint (sample.py's format) holds the networks,
optimizers, schedules, counters, every rank's RNG state and the data position, so on the CPU N steps +
resume + N steps is bit-identical to 2N steps. Ctrl-C / SIGTERM save and exit; a non-finite loss stops
before the update. Outputs (rank 0) in <out_dir>/<name>/: args.json, log.jsonl, samples/, loss_curves.png,
ckpt_*.pt, best.pt (--eval-every), tb/ (TensorBoard, if installed).

Read in order: Args and PRESETS, then main -> setup -> train (the loop) -> train_step; everything below them
(setup pieces, the command line, checkpoints and resuming, DDP, outputs) serves those four.
"""

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch.nn.parallel import DistributedDataParallel as DDP
from torchvision.utils import save_image
from tqdm import tqdm

import data
import evaluate
import losses
import models
import sample

MODELS = ("spade", "sean", "concat", "pix2pixhd", "clade")
DATASETS = ("synthetic", "cityscapes", "ade20k", "coco", "celebamask", "facades", "custom")


@dataclass
class Args:
    # --- what to train -------------------------------------------------------------------------------------
    preset: str = "quick"
    """named set of defaults (see PRESETS); explicit flags override it"""
    model: str = "spade"
    """generator: spade | sean | concat (SPADE decoder, label concatenated) | pix2pixhd | clade"""
    vae: bool = False
    """SPADE's image encoder: z ~ q(z|x) instead of the downsampled segmap, adds the KL term"""
    # --- data -----------------------------------------------------------------------------------------------
    dataset: str = "synthetic"
    """synthetic | cityscapes | ade20k | coco | celebamask | facades | custom"""
    dataroot: str = ""
    """dataset folder in its official layout (ignored for synthetic)"""
    crop_size: int = 256
    """width of the training images"""
    aspect_ratio: float = 1.0
    """width / height of the training images (Cityscapes: 2)"""
    use_instance: bool = True
    """add the instance edge map to the generator input when the dataset has instance maps"""
    synthetic_length: int = 40000
    """number of training images of the synthetic dataset"""
    palette: str = ""
    """colour label maps (one RGB colour per class): a JSON palette file, or cityscapes | ade20k | coco"""
    num_workers: int = 0
    """DataLoader worker processes"""
    # --- networks -------------------------------------------------------------------------------------------
    ngf: int = 64
    """generator (and encoder) width"""
    ndf: int = 64
    """discriminator width"""
    norm_hidden: int = 128
    """hidden width of the label-map MLP in SPADE and in SEAN's mask branch (official: 128)"""
    num_D: int = 2
    """discriminator scales"""
    n_layers_D: int = 4
    """layers of each PatchGAN discriminator"""
    z_dim: int = 256
    """dimension of SPADE's VAE latent"""
    style_dim: int = 512
    """SEAN style code length per region"""
    num_upsampling_layers: str = "normal"
    """SPADE generator depth: normal | more | most"""
    param_free: str = "syncbatch"
    """parameter-free normalization inside SPADE/SEAN/CLADE: batch | instance | syncbatch"""
    # --- objective ------------------------------------------------------------------------------------------
    gan_mode: str = "hinge"
    """adversarial loss: hinge | ls | bce"""
    lambda_fm: float = 10.0
    """weight of the discriminator feature-matching loss"""
    lambda_vgg: float = 10.0
    """weight of the VGG19 perceptual loss (0 = off; needs the ImageNet VGG19 file otherwise)"""
    lambda_kl: float = 0.05
    """weight of the KL term (VAE only)"""
    # --- optimization ---------------------------------------------------------------------------------------
    batch_size: int = 32
    """global batch size (split across DDP processes)"""
    lr_G: float = 1e-4
    """generator (and encoder) learning rate (TTUR)"""
    lr_D: float = 4e-4
    """discriminator learning rate (TTUR)"""
    beta1: float = 0.0
    """Adam beta1"""
    beta2: float = 0.9
    """Adam beta2"""
    niter: int = 100
    """epochs at the initial learning rate"""
    niter_decay: int = 100
    """epochs of linear learning-rate decay towards 0 after niter"""
    max_steps: int = 0
    """a cap on the optimizer steps in total (0 = none): a run ends after niter + niter_decay epochs or
    max_steps steps, whichever comes first (the start-of-run line says which)"""
    seed: int = 0
    """seed of initialisation, data order and noise"""
    # --- hardware -------------------------------------------------------------------------------------------
    device: str = "auto"
    """auto (cuda if available, else cpu) | cpu | cuda | cuda:N | mps"""
    bf16: str = "auto"
    """bfloat16 autocast for the forward passes, float32 weights and optimizer: on | off | auto (on where the
    hardware multiplies bf16 natively: a CPU with AMX or AVX512-BF16, a CUDA GPU of compute capability 8+)"""
    channels_last: bool = False
    """channels_last memory format for networks and inputs (GPU)"""
    cudnn_benchmark: bool = False
    """let cuDNN pick the fastest convolution algorithms (GPU, fixed input sizes)"""
    threads: int = 0
    """torch CPU threads (0 = torch's default)"""
    # --- outputs --------------------------------------------------------------------------------------------
    out_dir: str = "runs"
    """root folder of all runs"""
    name: str = ""
    """run folder name under out_dir (default: <preset>-<model>[-vae])"""
    log_every: int = 10
    """refresh the progress bar every this many steps (the log file gets every step)"""
    sample_every: int = 500
    """save a sample grid and the loss-curve plot every this many steps"""
    save_every: int = 2000
    """save a checkpoint every this many steps (and always at the end)"""
    keep_checkpoints: int = 3
    """keep only the newest this many periodic checkpoints (0 = keep all)"""
    eval_every: int = 0
    """every this many steps, score the generator as `evaluate.py metrics` does (mIoU, accuracy, Frechet
    distance) on a fixed validation subset, log it and keep best.pt by the Frechet distance (0 = off)"""
    eval_images: int = 100
    """validation images scored by --eval-every"""
    eval_segmenter: str = ""
    """segmenter for --eval-every: a weights file of evaluate.py's U-Net (safe), or a TorchScript program
    (runs the file's code: needs --trust-segmenter); default: the committed or cached U-Net"""
    trust_segmenter: bool = False
    """allow --eval-segmenter to be a TorchScript / torch.export program file, whose code runs when loaded"""
    resume: str = ""
    """checkpoint file, or run folder (its newest checkpoint), to continue from exactly; the run goes on in
    the checkpoint's folder (or in --out-dir/--name if --name is given)"""
    overwrite: bool = False
    """start afresh in a run folder that already holds a run, deleting that run first (without it such a
    folder is refused: resume it, or pick another --name)"""
    progress: bool = True
    """show the tqdm progress bar"""


# Presets: overrides of the Args defaults above (which are the SPADE paper's ADE20K/COCO-Stuff settings).
PAPER = dict(lr_G=1e-4, lr_D=4e-4, beta1=0.0, beta2=0.9, lambda_fm=10.0, lambda_vgg=10.0, lambda_kl=0.05,
             ngf=64, ndf=64, param_free="syncbatch", crop_size=256, aspect_ratio=1.0, batch_size=32)
PRESETS: dict[str, dict] = {
    # Laptop CPU, ~10 minutes: tiny widths, 64² synthetic landscapes, no VGG (see the module docstring).
    "quick": dict(dataset="synthetic", crop_size=64, ngf=16, ndf=16, style_dim=64, batch_size=4,
                  synthetic_length=400, niter=5, niter_decay=5, param_free="batch", lambda_vgg=0.0,
                  lr_G=2e-4, lr_D=4e-4, log_every=5, sample_every=100, save_every=500),
    # The shipped demo weights (weights/): quick, longer (1000 images, 16 epochs = 4000 steps), and narrow
    # enough that SPADE, SPADE+VAE and SEAN generators fit 25 MB in fp16: ngf 12, label-map MLP 24 wide
    # (paper 128), style_dim 24 (paper 512), z_dim 64 (paper 256).
    "demo": dict(dataset="synthetic", crop_size=64, ngf=12, ndf=16, norm_hidden=24, style_dim=24, z_dim=64,
                 batch_size=4, synthetic_length=1000, niter=8, niter_decay=8, param_free="batch",
                 lambda_vgg=0.0, lr_G=2e-4, lr_D=4e-4, log_every=10, sample_every=500, save_every=500),
    # SPADE: Cityscapes 512x256, batch 16, 200 epochs (100 + 100 decay); the official Cityscapes options also
    # set num_upsampling_layers "more": the generator starts at 8x4 (not 16x8), one more upsampling.
    "cityscapes": dict(PAPER, dataset="cityscapes", crop_size=512, aspect_ratio=2.0, batch_size=16,
                       num_upsampling_layers="more", niter=100, niter_decay=100),
    # SPADE: ADE20K 256², batch 32, 200 epochs.
    "ade20k": dict(PAPER, dataset="ade20k", niter=100, niter_decay=100),
    # SPADE: COCO-Stuff 256², batch 32, 100 epochs.
    "coco": dict(PAPER, dataset="coco", niter=50, niter_decay=50),
    # SEAN: CelebAMask-HQ 256², batch 32, 100 epochs (SEAN's niter 50 + niter_decay 50), no instance maps.
    "celebamask": dict(PAPER, dataset="celebamask", model="sean", use_instance=False,
                       niter=50, niter_decay=50),
    # CMP Facades (not in the papers' tables): pix2pix's schedule, batch 1, 200 epochs.
    "facades": dict(PAPER, dataset="facades", batch_size=1, niter=100, niter_decay=100),
    # Synthetic landscapes at paper width: SPADE's Flickr-landscapes schedule (50 epochs), 40k images.
    "landscapes": dict(PAPER, dataset="synthetic", synthetic_length=40000, niter=25, niter_decay=25),
}

CHOICES = dict(preset=tuple(PRESETS), model=MODELS, dataset=DATASETS, gan_mode=("hinge", "ls", "bce"),
               param_free=("batch", "instance", "syncbatch"),
               num_upsampling_layers=("normal", "more", "most"), bf16=("auto", "on", "off"))


# Fields that shape the networks' weights: a resumed run must keep the checkpoint's values.
ARCHITECTURE = ("model", "vae", "dataset", "crop_size", "aspect_ratio", "use_instance", "ngf", "ndf",
                "norm_hidden", "num_D", "n_layers_D", "z_dim", "style_dim", "num_upsampling_layers",
                "param_free")

# Lower bounds of the counts and sizes, checked before anything is created.
MINIMUM = dict(crop_size=1, synthetic_length=1, num_workers=0, ngf=1, ndf=1, norm_hidden=1, num_D=1,
               n_layers_D=1, z_dim=1, style_dim=1, batch_size=1, niter=0, niter_decay=0, max_steps=0,
               threads=0, log_every=1, sample_every=1, save_every=1, keep_checkpoints=0, aspect_ratio=1e-6,
               lr_G=0.0, lr_D=0.0, eval_every=0, eval_images=2)


# ------------------------------------------------------------------------------------------------------------
# Training: main -> setup -> the loop -> train_step (the rest of the file serves these four)
# ------------------------------------------------------------------------------------------------------------


def main(argv=None) -> dict:
    """Train; returns the (unwrapped) networks and counters, for tests and notebooks."""
    args = parse_args(argv)
    d, device = setup_distributed(args)
    try:
        return train(args, d, device)
    finally:
        if d.enabled and dist.is_initialized():
            dist.destroy_process_group()


@dataclass
class Run:
    """One training run: its networks, optimizers, data and counters (what a checkpoint saves)."""

    args: "Args"
    d: "Dist"
    device: torch.device
    dataset: object
    G: nn.Module
    D: nn.Module
    E: nn.Module | None
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    sched_G: object
    sched_D: object
    model_args: models.ModelArgs
    vgg: nn.Module | None
    steps_per_epoch: int
    total_steps: int
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_frechet: float | None = None
    """--eval-every: the lowest Frechet distance so far (best.pt holds that state)"""
    bf16: bool = False
    """--bf16 resolved for this device once (use_bf16): autocast on in train_step"""
    clear_first: bool = False
    """--overwrite of a folder holding another run: Outputs deletes it before writing"""

    @property
    def run_dir(self) -> str:
        return os.path.join(self.args.out_dir, self.args.name)

    @property
    def per_rank_batch(self) -> int:
        return self.args.batch_size // self.d.world


def setup(args: Args, d: "Dist", device: torch.device) -> Run:
    """Dataset, networks, optimizers (restored from --resume, else freshly seeded), DDP wrappers. Checks
    only: nothing is written before Outputs."""
    clear_first = check_run_folder(args)
    ckpt = read_resume(args, device)
    vgg = build_vgg(args, device)  # before the big networks: a missing weight file fails fast
    dataset = build_dataset(args)
    steps_per_epoch, total_steps = count_steps(args, len(dataset), d)
    check_norm_fits(args, args.batch_size // d.world, d, device)
    margs = models.ModelArgs.from_config(asdict(args), dataset.info.semantic_nc(args.use_instance),
                                         bool(args.use_instance and dataset.info.has_instance))
    G, D, E = build_networks(args, margs, d, device)
    # TTUR: the generator (and the VAE encoder) at lr_G, the discriminator at lr_D
    opt_G = torch.optim.Adam(list(G.parameters()) + (list(E.parameters()) if E is not None else []),
                             lr=args.lr_G, betas=(args.beta1, args.beta2))
    opt_D = torch.optim.Adam(D.parameters(), lr=args.lr_D, betas=(args.beta1, args.beta2))
    run = Run(args, d, device, dataset, G, D, E, opt_G, opt_D,
              torch.optim.lr_scheduler.LambdaLR(opt_G, lr_factor(args.niter, args.niter_decay)),
              torch.optim.lr_scheduler.LambdaLR(opt_D, lr_factor(args.niter, args.niter_decay)),
              margs, vgg, steps_per_epoch, total_steps, bf16=use_bf16(args.bf16, device),
              clear_first=clear_first)
    if ckpt is not None:
        restore(run, ckpt)
    else:  # per-rank noise streams
        torch.manual_seed(args.seed + d.rank)
        random.seed(args.seed + d.rank)
        np.random.seed(args.seed + d.rank)
    if d.enabled:
        wrap_ddp(run)
    return run


def train(args: Args, d: "Dist", device: torch.device) -> dict:
    """The loop: batch -> train_step (D step, G step) -> log and samples -> (evaluate) -> checkpoint."""
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    run = setup(args, d, device)
    evaluator = build_evaluator(args, d, device)  # before any write: a bad segmenter leaves no run folder
    out = Outputs(run, evaluator)  # every check has passed: the run folder is written from here on
    t0, steps_this_run, stopped = time.time(), 0, False
    with SignalStop() as stopper, out:
        while run.step < run.total_steps and not stopped:
            for batch in make_loader(run):
                d_terms, g_terms, (label, real, fake) = train_step(run, batch)
                steps_this_run += 1
                out.step(d_terms, g_terms, label, real, fake, time.time() - t0)
                if args.eval_every and run.step % args.eval_every == 0:
                    evaluate_now(run, evaluator, out)
                stopped = any_rank(stopper.requested, d, device)
                if run.step % args.save_every == 0 or run.step == run.total_steps or stopped:
                    path = save(run)
                if stopped:
                    out.log(f"\nstopped by signal at step {run.step}; checkpoint: {path}\n"
                            f"continue with: python train.py --resume {path}")
                if stopped or run.step >= run.total_steps:
                    break
    sync_buffers(run)
    if not stopped:
        out.done(steps_this_run, time.time() - t0)
    return {"G": unwrap(run.G), "D": unwrap(run.D), "E": unwrap(run.E), "step": run.step,
            "epoch": run.epoch, "stopped": stopped}


def train_step(run: Run, batch: dict) -> tuple[dict, dict, tuple]:
    """get batch -> G forward (once) -> D step -> G step -> counters; returns the loss terms and
    (label, real, fake) for the sample grids."""
    args, device = run.args, run.device
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    label = batch["label"].to(device, non_blocking=True)
    real = batch["image"].to(device, non_blocking=True).contiguous(memory_format=memory_format)
    instance = batch.get("instance") if args.use_instance else None
    instance = None if instance is None else instance.to(device, non_blocking=True)
    segmap = data.make_segmap(label, run.dataset.info, instance).contiguous(memory_format=memory_format)
    # bf16: the networks run under autocast, the loss arithmetic in float32 outside it (the terms functions)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=run.bf16)

    with autocast:  # the generator runs once
        fake, mu, logvar = generate(run.G, run.E, segmap, real, args.model)
    # discriminator step: fake (detached) and real in one pass
    d_terms = discriminator_terms(run.D, segmap, fake, real, args, autocast)
    stop_nonfinite(run, d_terms, "discriminator")
    run.opt_D.zero_grad(set_to_none=True)
    d_terms["total"].backward()
    run.opt_D.step()
    # generator step on the same fake: D again, for the GAN and feature-matching terms
    g_terms = generator_terms(unwrap(run.D), segmap, fake, real, args, run.vgg, mu, logvar, autocast)
    stop_nonfinite(run, g_terms, "generator")
    run.opt_G.zero_grad(set_to_none=True)
    g_terms["total"].backward()
    run.opt_G.step()

    run.step += 1
    run.batch_in_epoch += 1
    if run.batch_in_epoch == run.steps_per_epoch:  # epoch boundary: the official per-epoch lr decay
        run.sched_G.step()
        run.sched_D.step()
        run.epoch, run.batch_in_epoch = run.epoch + 1, 0
    return d_terms, g_terms, (label, real, fake)


def generate(G, E, segmap, real, model: str):
    """The step's one generator forward -> (fake, mu, logvar); mu and logvar are None without the VAE."""
    mu = logvar = None
    if E is not None:
        mu, logvar = E(real)
        fake = G(segmap, z=losses.reparameterize(mu, logvar))
    elif model == "sean":
        fake = G(segmap, image=real)
    else:
        fake = G(segmap)
    return fake, mu, logvar


def to_float(x):
    """A network's output (a tensor, or nested lists of them, or None) in float32 for the loss arithmetic:
    under bf16 autocast the networks return bfloat16 (three significant digits)."""
    if isinstance(x, (list, tuple)):
        return [to_float(v) for v in x]
    return None if x is None else x.float()


def discriminator_terms(D, segmap, fake, real, args: Args, autocast=None) -> dict:
    """D on [fake (detached), real] in one pass (under `autocast`) -> the discriminator's loss terms in
    float32 ("total" is minimized)."""
    disc_loss = losses.sean_discriminator_loss if args.model == "sean" else losses.spade_discriminator_loss
    with autocast or contextlib.nullcontext():
        pred = D(torch.cat([torch.cat([segmap, fake.detach()], 1), torch.cat([segmap, real], 1)], 0))
    return disc_loss(*losses.split_fake_real(to_float(pred)), gan_mode=args.gan_mode)


def generator_terms(D, segmap, fake, real, args: Args, vgg=None, mu=None, logvar=None,
                    autocast=None) -> dict:
    """D (unwrapped from DDP: no gradient sync needed) again on [fake, real] with its weights frozen, so only
    G and E get gradients; feature matching needs the real image's features under the current D. The
    networks (D, VGG) run under `autocast`, the loss terms are float32."""
    D.requires_grad_(False)
    with autocast or contextlib.nullcontext():
        pred = D(torch.cat([torch.cat([segmap, fake], 1), torch.cat([segmap, real], 1)], 0))
        vgg_term = vgg(fake, real) if vgg is not None and args.lambda_vgg else None  # its L1s are float32
    pred_fake, pred_real = losses.split_fake_real(to_float(pred))
    weights = dict(lambda_fm=args.lambda_fm, lambda_vgg=args.lambda_vgg, gan_mode=args.gan_mode,
                   vgg=None if vgg_term is None else lambda *_: vgg_term)
    fake, real = to_float(fake), to_float(real)
    if args.model == "sean":
        g_terms = losses.sean_generator_loss(pred_fake, pred_real, fake, real, **weights)
    else:
        g_terms = losses.spade_generator_loss(pred_fake, pred_real, fake, real, mu=to_float(mu),
                                              logvar=to_float(logvar), lambda_kl=args.lambda_kl, **weights)
    D.requires_grad_(True)
    return g_terms


# ------------------------------------------------------------------------------------------------------------
# Setup pieces: networks, optimizer steps, data order, learning-rate schedule, precision
# ------------------------------------------------------------------------------------------------------------


def build_vgg(args: Args, device: torch.device) -> nn.Module | None:
    """The perceptual loss's VGG19 (None at lambda_vgg = 0); a missing ImageNet weight file stops here."""
    if not args.lambda_vgg:
        return None
    try:
        return losses.VGGLoss(weights="imagenet").to(device)
    except losses.VGGWeightsNotFoundError as e:
        raise SystemExit(f"error: {e}") from None


def count_steps(args: Args, n_images: int, d: "Dist") -> tuple[int, int]:
    """(steps per epoch, total steps): the epochs of the schedule, capped by --max-steps."""
    if args.batch_size % d.world:
        raise SystemExit(f"error: batch size {args.batch_size} is not divisible by {d.world} processes")
    steps_per_epoch = len(epoch_indices(n_images, args.seed, 0, d)) // (args.batch_size // d.world)
    if steps_per_epoch == 0:
        raise SystemExit(f"error: {n_images} images cannot fill one batch of {args.batch_size}")
    total_steps = (args.niter + args.niter_decay) * steps_per_epoch
    return steps_per_epoch, min(total_steps, args.max_steps) if args.max_steps else total_steps


def build_networks(args: Args, margs: models.ModelArgs, d: "Dist", device: torch.device):
    """G, D, E on the device in training mode, the same initial weights on every rank; sync batch norm as
    the hardware allows."""
    torch.manual_seed(args.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    G, D, E = models.build(margs)
    if args.param_free == "syncbatch" and d.enabled and device.type != "cuda":
        if d.main:
            print("note: SyncBatchNorm needs GPUs; on CPU each process normalizes with its own statistics")
        G = revert_sync_batchnorm(G)
    elif args.param_free == "syncbatch" and d.enabled:
        G = nn.SyncBatchNorm.convert_sync_batchnorm(G)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    return tuple(m if m is None else m.to(device, memory_format=memory_format).train() for m in (G, D, E))


def build_evaluator(args: Args, d: "Dist", device: torch.device):
    """--eval-every: the scorer of evaluate.py (rank 0), else None."""
    if not (args.eval_every and d.main):
        return None
    return evaluate.TrainingEvaluator(asdict(args), args.eval_images, args.eval_segmenter or None,
                                      str(device), print, trust=args.trust_segmenter)


def build_dataset(args: Args):
    height = round(args.crop_size / args.aspect_ratio)
    size = args.crop_size if height == args.crop_size else (height, args.crop_size)
    if args.dataset == "synthetic":
        return data.SyntheticLandscapes("train", size=size, length=args.synthetic_length, seed=args.seed)
    if not args.dataroot:
        raise SystemExit(f"error: --dataroot is required for the {args.dataset} dataset")
    if not os.path.isdir(args.dataroot):
        raise SystemExit(f"error: dataset folder {args.dataroot!r} does not exist")
    try:
        extra = dict(palette=args.palette) if args.palette else {}
        dataset = data.build_dataset(args.dataset, root=args.dataroot, split="train", size=size, **extra)
        dataset.check_files()  # before the run folder exists: a bad file is one line, not a traceback later
        return dataset
    except (OSError, data.DataError) as e:
        raise SystemExit(f"error: {args.dataset} dataset at {args.dataroot!r}: {e}") from None


def epoch_indices(n: int, seed: int, epoch: int, d: "Dist") -> list[int]:
    """This rank's sample order for `epoch`: the same on every rank and run, shards as DistributedSampler."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g).tolist()
    per_rank = n // d.world  # drop the tail so every rank runs the same number of steps
    return perm[d.rank * per_rank:(d.rank + 1) * per_rank] if d.enabled else perm


def make_loader(run: Run):
    """The rest of the current epoch: a resumed run skips the batches it has already seen."""
    args = run.args
    idx = epoch_indices(len(run.dataset), args.seed, run.epoch, run.d)
    idx = idx[run.batch_in_epoch * run.per_rank_batch:]
    # The loader's own generator (worker seeds) keeps the global torch RNG untouched, so resuming mid-epoch
    # does not shift the noise the networks draw.
    g = torch.Generator().manual_seed(args.seed * 1_000_003 + run.epoch)
    return torch.utils.data.DataLoader(run.dataset, batch_size=run.per_rank_batch, sampler=idx,
                                       drop_last=True, num_workers=args.num_workers, generator=g,
                                       pin_memory=torch.cuda.is_available())


def lr_factor(niter: int, niter_decay: int):
    """Official schedule: lr0 for `niter` epochs, then each later epoch lowers the lr by lr0 / niter_decay."""
    def f(epoch: int) -> float:
        return 1.0 - max(0, epoch - niter) / max(1, niter_decay)
    return f


def use_bf16(setting: str | bool, device: torch.device) -> bool:
    """--bf16 resolved: "auto" is on where bf16 matmuls run natively (older checkpoints hold a bool)."""
    if setting in ("on", "off", True, False):
        return setting in ("on", True)
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device)[0] >= 8
    cpu = torch.cpu
    return device.type == "cpu" and (cpu._is_amx_tile_supported() or cpu._is_avx512_bf16_supported())


# ------------------------------------------------------------------------------------------------------------
# Command line: every Args field is a flag (its docstring the help line); defaults <- preset <- flags
# ------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    table = "\n".join(f"  {k:11s} " + ", ".join(f"{a}={b}" for a, b in v.items() if a not in PAPER or
                                                  PAPER[a] != b or k == "quick") for k, v in PRESETS.items())
    p = argparse.ArgumentParser(
        description="Train SPADE / SEAN / baselines. Defaults shown are the dataclass defaults; the preset "
                    "(quick unless --preset) overrides some of them, explicit flags override both.",
        epilog="presets (on top of the paper settings " + ", ".join(f"{a}={b}" for a, b in PAPER.items())
               + "):\n" + table + "\n\n--no-vgg-loss is --lambda-vgg 0.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sample.add_dataclass_args(p, Args, CHOICES, show_defaults=False)  # unset flags stay out: we see the given
    p.add_argument("--no-vgg-loss", "--no_vgg_loss", dest="lambda_vgg", action="store_const", const=0.0,
                   default=argparse.SUPPRESS, help="train without the perceptual loss (lambda_vgg = 0)")
    return p


def parse_args(argv=None) -> Args:
    """Dataclass defaults <- preset <- (config saved in the --resume checkpoint) <- explicit flags."""
    given = vars(build_parser().parse_args(argv))
    values = asdict(Args())
    if given.get("resume"):
        given["resume"], ckpt = resolve_resume(given["resume"])  # only the config is read here
        saved = {k: v for k, v in ckpt["config"].items() if k in values}
        differ = [k for k in ARCHITECTURE if k in given and k in saved and given[k] != saved[k]]
        if differ:
            flags = ", ".join(f"--{k.replace('_', '-')} {given[k]} (checkpoint: {saved[k]})" for k in differ)
            raise SystemExit(f"error: checkpoint {given['resume']!r} was trained with other network "
                             f"settings: {flags}; drop these flags to resume, or start a new run (another "
                             "--name)")
        values.update(saved)
        if "name" not in given:  # go on in the folder the checkpoint is in, whatever name it was saved under
            folder = os.path.dirname(os.path.abspath(given["resume"]))
            values["out_dir"], values["name"] = os.path.dirname(folder), os.path.basename(folder)
            given.pop("out_dir", None)
    else:
        values.update(PRESETS[given.get("preset", Args.preset)])
    args = Args(**(values | given))
    for key, low in MINIMUM.items():
        if getattr(args, key) < low:
            raise SystemExit(f"error: --{key.replace('_', '-')} {getattr(args, key)} must be "
                             f"{'positive' if low > 0 else 'at least 0'}")
    if args.niter + args.niter_decay < 1:
        raise SystemExit("error: --niter + --niter-decay must be at least 1 epoch")
    if args.vae and args.model != "spade":
        raise SystemExit(f"error: --vae is SPADE's image encoder (--model spade), not for {args.model}")
    check_crop_fits(args)
    args.name = args.name or f"{args.preset}-{args.model}" + ("-vae" if args.vae else "")
    return args


def check_crop_fits(args: Args) -> None:
    """The generator doubles its input 2^n times (pix2pixHD halves it 4 times and doubles it back): the
    training images' height and width must be multiples of that, or G's output would not match them."""
    n = 4 if args.model == "pix2pixhd" else models.NUM_UPSAMPLING[args.num_upsampling_layers]
    height, factor = round(args.crop_size / args.aspect_ratio), 2**n
    if args.crop_size % factor == 0 and height % factor == 0 and height > 0:
        return
    what = ("pix2pixHD's 4 downsamplings" if args.model == "pix2pixhd" else
            f"{n} upsamplings (--num-upsampling-layers {args.num_upsampling_layers})")
    fits = max(factor, args.crop_size // factor * factor)
    raise SystemExit(f"error: --crop-size {args.crop_size} (images {height}x{args.crop_size} at aspect ratio "
                     f"{args.aspect_ratio}) does not fit {what}: height and width must be multiples of "
                     f"{factor}; use --crop-size {fits} or {fits + factor}")


def check_norm_fits(args: Args, per_rank_batch: int, d: "Dist", device: torch.device) -> None:
    """A normalization needs more than one value per channel. The generator's first block runs at
    (crop / 2^n_up) pixels, 1x1 at crop 32: instance norm cannot work there, batch norm only with a batch
    of 2 or more."""
    if args.model == "pix2pixhd":  # its own encoder-decoder never goes below crop / 8
        return
    if args.param_free == "syncbatch" and d.enabled and device.type == "cuda":
        per_rank_batch *= d.world  # statistics over all processes' images
    # the decoder's start size (parse_args's check_crop_fits has made it at least 1x1)
    sh, sw = models.start_size(args.crop_size, args.aspect_ratio, args.num_upsampling_layers)
    pixels = sh * sw
    if (pixels if args.param_free == "instance" else per_rank_batch * pixels) >= 2:
        return
    fixes = ([] if pixels < 2 or args.param_free == "instance" else ["--param-free instance"]) + (
        [] if args.param_free == "instance" or per_rank_batch >= 2
        else ["a --batch-size of 2 or more per process"])
    n_up = models.NUM_UPSAMPLING[args.num_upsampling_layers]
    fixes.append(f"--crop-size {2 ** (n_up + 1) * max(1, round(args.aspect_ratio))} or more")
    raise SystemExit(f"error: --param-free {args.param_free} needs more than one value per channel, but the "
                     f"generator's first block is {pixels} pixel(s) x {per_rank_batch} image(s) per process; "
                     f"use {' or '.join(fixes)}")


# ------------------------------------------------------------------------------------------------------------
# Checkpoints, resuming, a run folder that holds a run, stopping (signals, non-finite losses)
# ------------------------------------------------------------------------------------------------------------


def save(run: Run, name: str = "") -> str | None:
    """Checkpoint of the whole run (rank 0 writes; every rank contributes its RNG state)."""
    rngs = [rng_state()]
    if run.d.enabled:
        rngs = [None] * run.d.world
        dist.all_gather_object(rngs, rng_state())
    if not run.d.main:
        return None
    state = {"format": sample.CKPT_FORMAT, "config": asdict(run.args), "model_args": asdict(run.model_args),
             "step": run.step, "epoch": run.epoch, "batch_in_epoch": run.batch_in_epoch,
             "world_size": run.d.world, "best_frechet": run.best_frechet, "rng": rngs,
             **{k: None if getattr(run, k) is None else unwrap(getattr(run, k)).state_dict()
                for k in ("G", "D", "E")},
             **{k: getattr(run, k).state_dict() for k in ("opt_G", "opt_D", "sched_G", "sched_D")}}
    path = os.path.join(run.run_dir, name or f"ckpt_{run.step:08d}.pt")
    sample.atomic_save(state, path)
    if not name and run.args.keep_checkpoints:
        for f in sample.list_checkpoints(run.run_dir)[:-run.args.keep_checkpoints]:
            os.remove(os.path.join(run.run_dir, f))
    return path


def last_checkpoint(run: Run) -> str:
    """This run's newest checkpoint (the folder may hold a larger step of an older run)."""
    names = [n for n in sample.list_checkpoints(run.run_dir) if int(n[5:-3]) <= run.step]
    return os.path.join(run.run_dir, names[-1]) if names else "none saved yet"


def resolve_resume(path: str) -> tuple[str, dict]:
    """--resume PATH -> (the checkpoint file, its contents memory-mapped on the CPU). A run folder gives its
    newest checkpoint that loads: one cut short (a crash mid-copy, a full disk) is skipped with a note; an
    unreadable file given by name is an error that names the newest good checkpoint beside it."""
    folder = path if os.path.isdir(path) else os.path.dirname(path) or "."
    names = sample.list_checkpoints(path) if os.path.isdir(path) else [os.path.basename(path)]
    if not names:
        raise SystemExit(f"error: no checkpoint (ckpt_*.pt) in {path!r}")
    if not os.path.isfile(os.path.join(folder, names[-1])):
        raise SystemExit(f"error: checkpoint {path!r} does not exist")
    unreadable = []
    for name in reversed(names):
        try:
            ckpt = sample.read_checkpoint(os.path.join(folder, name), "cpu", mmap=True)
        except ValueError as e:
            unreadable.append(str(e))
            continue
        if unreadable and os.environ.get("RANK", "0") == "0":
            print(f"note: {unreadable[0]}; resuming from the newest readable one, {name}", file=sys.stderr)
        return os.path.join(folder, name), ckpt
    for name in reversed([n for n in sample.list_checkpoints(folder) if n != names[-1]]):
        with contextlib.suppress(ValueError):
            sample.read_checkpoint(os.path.join(folder, name), "cpu", mmap=True)
            raise SystemExit(f"error: {unreadable[0]}. The newest readable checkpoint beside it is "
                             f"{os.path.join(folder, name)!r}: resume from that, or from the folder")
    raise SystemExit(f"error: {unreadable[0]}")


def read_resume(args: Args, device: torch.device) -> dict | None:
    """The --resume checkpoint (parse_args has checked that it loads), or None for a fresh run."""
    if not args.resume:
        return None
    ckpt = sample.read_checkpoint(args.resume, device)
    for key in ("model", "vae"):
        if ckpt["config"].get(key) != getattr(args, key):
            raise SystemExit(f"error: checkpoint {args.resume!r} is a --{key} {ckpt['config'].get(key)} "
                             f"run, not {getattr(args, key)}")
    return ckpt


def check_run_folder(args: Args) -> bool:
    """A run folder holds one run: a fresh start (or a resume into another folder) is refused where a run's
    files are, unless --overwrite (then True: delete them first). Resuming in the checkpoint's own folder
    continues that run."""
    run_dir = os.path.join(args.out_dir, args.name)
    if not os.path.isdir(run_dir):
        return False
    held = sorted(f for f in os.listdir(run_dir) if f in ("args.json", "log.jsonl", "best.pt")
                  or (f.startswith("ckpt_") and f.endswith(".pt")))
    if args.resume and os.path.samefile(os.path.dirname(os.path.abspath(args.resume)), run_dir):
        return False
    if not held:
        return False
    if args.overwrite:
        return True
    files = ", ".join(held[:3]) + (f" and {len(held) - 3} more" if len(held) > 3 else "")
    raise SystemExit(f"error: {run_dir} already holds a run ({files}): continue it with --resume {run_dir}, "
                     "or pick another --name, or pass --overwrite to delete it and start afresh")


def restore(run: Run, ckpt: dict) -> None:
    """Weights, optimizer moments, schedules, counters and RNG states of a checkpoint."""
    for name in ("G", "D", "E", "opt_G", "opt_D", "sched_G", "sched_D"):
        if getattr(run, name) is not None:
            getattr(run, name).load_state_dict(ckpt[name])
    run.step, run.epoch, run.batch_in_epoch = ckpt["step"], ckpt["epoch"], ckpt["batch_in_epoch"]
    run.best_frechet = ckpt.get("best_frechet")
    if len(ckpt["rng"]) == run.d.world:
        set_rng_state(ckpt["rng"][run.d.rank])
    else:
        if run.d.main:
            print(f"note: checkpoint written by {len(ckpt['rng'])} processes, resuming on {run.d.world}: "
                  "data order is kept, noise streams are reseeded")
        torch.manual_seed(run.args.seed + 7919 * (run.d.rank + 1) + run.step)
    if run.d.main:
        print(f"resumed from {run.args.resume} at step {run.step} (epoch {run.epoch}, batch "
              f"{run.batch_in_epoch})")


def rng_state() -> dict:
    """All RNG states as tensors and numbers (no numpy arrays, no tuples of Python objects)."""
    py, np_state = random.getstate(), np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "python": {"version": py[0], "state": torch.tensor(py[1], dtype=torch.int64), "gauss": py[2]},
             "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                       "has_gauss": int(np_state[3]), "cached": float(np_state[4])}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    py, n = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def stop_nonfinite(run: Run, terms: dict, which: str) -> None:
    """Stop every rank before the optimizer step that would use a non-finite loss."""
    bad = not all(torch.isfinite(v).item() for v in terms.values())
    if any_rank(bad, run.d, run.device):
        values = ", ".join(f"{k}={v.item():.4g}" for k, v in terms.items())
        where = last_checkpoint(run) if run.d.main else "(see rank 0)"
        raise SystemExit(f"error: non-finite {which} loss at step {run.step + 1} ({values}); stopped before "
                         f"the update. Last good checkpoint: {where}")


class SignalStop:
    """First SIGINT/SIGTERM: finish the step, save, exit. Second SIGINT: abort immediately."""

    def __init__(self):
        self.requested, self.previous = False, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self.previous[s] = signal.signal(s, self.handle)
        return self

    def handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        print(f"\n{signal.Signals(signum).name}: saving a checkpoint after this step "
              "(Ctrl-C again to abort)", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        for s, h in self.previous.items():
            signal.signal(s, h)


def evaluate_now(run: Run, evaluator, out: "Outputs") -> None:
    """--eval-every: rank 0 scores G (the others wait at the next collective); a new best -> best.pt."""
    scores = evaluator(unwrap(run.G), unwrap(run.E)) if run.d.main else {}
    improved = run.d.main and (run.best_frechet is None or scores["frechet"] < run.best_frechet)
    if run.d.main:
        run.best_frechet = scores["frechet"] if improved else run.best_frechet
        out.write({"step": run.step, **{f"eval/{k}": v for k, v in scores.items()}})
    if any_rank(improved, run.d, run.device):
        save(run, "best.pt")


# ------------------------------------------------------------------------------------------------------------
# Distributed (torchrun sets RANK / WORLD_SIZE / LOCAL_RANK)
# ------------------------------------------------------------------------------------------------------------


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(args: Args) -> tuple[Dist, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    d = Dist(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))
    if args.device == "auto":
        device = torch.device(f"cuda:{d.local_rank}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", d.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if d.enabled and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return d, device


def wrap_ddp(run: Run) -> None:
    """DistributedDataParallel around G, D (and E), one device per process."""
    ids = [run.device.index] if run.device.type == "cuda" else None
    # SEAN's per-class style layers get no gradient when their class is absent from a rank's batch
    run.G = DDP(run.G, device_ids=ids, find_unused_parameters=run.args.model == "sean")
    run.D = DDP(run.D, device_ids=ids)
    run.E = DDP(run.E, device_ids=ids) if run.E is not None else None


def sync_buffers(run: Run) -> None:
    """BatchNorm running statistics drift apart per rank between DDP's broadcasts: end with rank 0's."""
    if run.d.enabled:
        for m in (run.G, run.D, run.E):
            for b in unwrap(m).buffers() if m is not None else ():
                dist.broadcast(b, src=0)


def any_rank(flag: bool, d: Dist, device) -> bool:
    """True if `flag` is true on any process (all processes must stop together)."""
    if not d.enabled:
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def unwrap(m: nn.Module | None) -> nn.Module | None:
    return m.module if isinstance(m, DDP) else m


def revert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """SyncBatchNorm -> BatchNorm2d (SyncBatchNorm needs a GPU when more than one process runs)."""
    out = module
    if isinstance(module, nn.SyncBatchNorm):
        out = nn.BatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                             module.track_running_stats)
        out.load_state_dict(module.state_dict())
    for name, child in module.named_children():
        out.add_module(name, revert_sync_batchnorm(child))
    return out


# ------------------------------------------------------------------------------------------------------------
# Outputs (rank 0): log file, TensorBoard, progress bar, sample grids, loss curves
# ------------------------------------------------------------------------------------------------------------


class Outputs:
    """Everything rank 0 writes besides checkpoints; on other ranks every method does nothing."""

    def __init__(self, run: Run, evaluator=None):
        self.run, self.main = run, run.d.main
        self.log_path = os.path.join(run.run_dir, "log.jsonl")
        self.tb = self.pbar = self.file = None
        if not self.main:
            return
        kept = read_log_until(run)  # may refuse a damaged log: before anything below is written
        if run.clear_first:
            shutil.rmtree(run.run_dir)
            print(f"--overwrite: deleted the run that was in {run.run_dir}")
        # temp files of checkpoint writes killed (kill -9, power loss) before their rename
        found = os.listdir(run.run_dir) if os.path.isdir(run.run_dir) else []
        stale = sorted(f for f in found if f.startswith("ckpt_") and ".pt.tmp" in f)
        for f in stale:
            os.remove(os.path.join(run.run_dir, f))
        if stale:
            print(f"removed {len(stale)} temp file(s) of an interrupted checkpoint write: {', '.join(stale)}")
        os.makedirs(os.path.join(run.run_dir, "samples"), exist_ok=True)
        with open(os.path.join(run.run_dir, "args.json"), "w") as f:
            json.dump(asdict(run.args), f, indent=2)
        with open(self.log_path, "w") as f:
            f.writelines(kept)
        with contextlib.suppress(ImportError):
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(os.path.join(run.run_dir, "tb"))
        a, info = run.args, run.dataset.info
        n_g, n_d = models.count_parameters(unwrap(run.G)), models.count_parameters(unwrap(run.D))
        print(f"{a.model}{' +VAE' if a.vae else ''} on {a.dataset} ({len(run.dataset)} images, "
              f"{info.semantic_nc(a.use_instance)} input channels) | G {n_g / 1e6:.2f}M D {n_d / 1e6:.2f}M "
              f"params | device {run.device}{f' x{run.d.world}' if run.d.enabled else ''}"
              f"{' bf16' if run.bf16 else ' fp32'} (--bf16 {a.bf16}) | run dir "
              f"{run.run_dir}")
        print(plan_line(a, run.steps_per_epoch, run.total_steps))
        if run.bf16 and not use_bf16("auto", run.device):
            print(f"warning: {run.device} has no native bf16 matmul: bf16 autocast is emulated and slow "
                  "there (35x slower than float32 on an AVX2 CPU); --bf16 auto picks float32")
        if evaluator is not None:
            print(f"--eval-every {a.eval_every}: {evaluator.n} validation images, "
                  f"{evaluator.frechet_name} for the Frechet distance")
        if run.step >= run.total_steps:
            print(f"nothing to do: the checkpoint is at step {run.step} of {run.total_steps} (raise "
                  "--max-steps/--niter)")

    def log(self, *msg, **kw) -> None:
        if self.main:
            print(*msg, **kw)

    def __enter__(self):
        if self.main:
            if self.run.args.progress:
                self.pbar = tqdm(total=self.run.total_steps, initial=self.run.step, dynamic_ncols=True,
                                 smoothing=0.05)
            self.file = open(self.log_path, "a", buffering=1)  # line-buffered
        return self

    def __exit__(self, *exc):
        for thing in (self.pbar, self.file):
            if thing is not None:
                thing.close()
        if self.tb is not None:
            self.tb.close()
        if self.main and exc[0] is None:
            plot_losses(self.log_path, os.path.join(self.run.run_dir, "loss_curves.png"))

    def write(self, row: dict) -> None:
        """One JSON line of log.jsonl, and its scalars to TensorBoard."""
        if not self.main:
            return
        self.file.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for k, v in row.items():
                if "/" in k:
                    self.tb.add_scalar(k, v, row["step"])

    def step(self, d_terms: dict, g_terms: dict, label, real, fake, elapsed: float) -> None:
        if not self.main:
            return
        run = self.run
        row = {"step": run.step, "epoch": run.epoch, "lr_G": run.opt_G.param_groups[0]["lr"],
               "lr_D": run.opt_D.param_groups[0]["lr"], **{f"D/{k}": v.item() for k, v in d_terms.items()},
               **{f"G/{k}": v.item() for k, v in g_terms.items()}, "time": round(elapsed, 3)}
        self.write(row)
        last = run.step == run.total_steps
        if self.pbar is not None:
            self.pbar.update(1)
            if run.step % run.args.log_every == 0 or last:
                self.pbar.set_postfix({k[0] if k.endswith("/total") else k[2:]: f"{v:.3f}"
                                       for k, v in row.items() if "/" in k}, refresh=False)
        if run.step % run.args.sample_every == 0 or last:
            self.file.flush()
            save_samples(os.path.join(run.run_dir, "samples", f"step_{run.step:08d}.png"), label, real, fake,
                         run.args.dataset)
            plot_losses(self.log_path, os.path.join(run.run_dir, "loss_curves.png"))

    def done(self, steps: int, elapsed: float) -> None:
        rate = steps / max(elapsed, 1e-9)
        self.log(f"done: {steps} steps in {elapsed:.0f} s ({rate:.2f} steps/s); samples in "
                 f"{os.path.join(self.run.run_dir, 'samples')}, checkpoint {last_checkpoint(self.run)}")


def read_log_until(run: Run) -> list[str]:
    """The log lines a resumed run keeps: those of its checkpoint's folder up to its step (the steps after
    it are run again). A torn last line (a crash mid-write) is dropped with a note; damage elsewhere stops."""
    path = os.path.join(os.path.dirname(os.path.abspath(run.args.resume)), "log.jsonl") if run.step else ""
    if not path or not os.path.exists(path):
        return []
    with open(path) as f:
        lines = [line if line.endswith("\n") else line + "\n" for line in f if line.strip()]
    kept = []
    for i, line in enumerate(lines):
        try:
            row = json.loads(line)
            step = row["step"]
        except (ValueError, KeyError, TypeError):
            if i < len(lines) - 1:
                raise SystemExit(f"error: {path} line {i + 1} is not a log row ({line.strip()[:60]!r}); "
                                 "repair or remove that line, then resume again") from None
            print(f"note: dropped the torn last line of {path} (a crash mid-write): {line.strip()[:60]!r}")
            break
        if step <= run.step:
            kept.append(line)
    return kept


def plan_line(args: Args, steps_per_epoch: int, total_steps: int) -> str:
    """What will run: epochs x steps, and whether --max-steps or the epoch count ends the run."""
    epochs = args.niter + args.niter_decay
    line = (f"training for {total_steps} steps: {epochs} epochs (niter {args.niter} + niter_decay "
            f"{args.niter_decay}) x {steps_per_epoch} steps/epoch")
    if args.max_steps and args.max_steps < epochs * steps_per_epoch:
        return line.replace(": ", f": --max-steps {args.max_steps} stops it before the ", 1)
    if args.max_steps:
        line += (f"; --max-steps {args.max_steps} is not reached (it is a cap): raise --niter/--niter-decay "
                 f"or --synthetic-length for more")
    return line


def save_samples(path: str, label: torch.Tensor, real: torch.Tensor, fake: torch.Tensor, dataset_name: str,
                 n: int = 8) -> None:
    """One row per sample: label | real | fake."""
    n = min(n, real.size(0))
    lab = data.colorize(label[:n].cpu(), data.dataset_palette(dataset_name)).float() / 255.0
    real, fake = (real[:n].detach().float().cpu() + 1) / 2, (fake[:n].detach().float().cpu() + 1) / 2
    rows = torch.stack([lab, real, fake], dim=1).flatten(0, 1)
    save_image(rows.clamp(0, 1), path, nrow=3, padding=2, pad_value=1.0)


def plot_losses(log_path: str, png_path: str) -> None:
    """Smoothed loss curves of D and G (and the --eval-every scores), on a bare Figure: no pyplot, so a
    notebook's inline backend is left alone."""
    with open(log_path) as f:
        every = [json.loads(line) for line in f if line.strip()]
    rows = [r for r in every if "D/total" in r]
    evals = [r for r in every if "eval/frechet" in r]
    if not rows:
        return
    steps = np.array([r["step"] for r in rows])
    fig = Figure(figsize=(16 if evals else 11, 4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3 if evals else 2)
    for ax, side in zip(axes[:2], ("D/", "G/"), strict=True):
        for k in (k for k in rows[-1] if k.startswith(side)):
            v = np.array([r.get(k, np.nan) for r in rows], dtype=float)
            w = max(1, len(v) // 50)  # moving average so the trend is visible through GAN noise
            ax.plot(steps[w - 1:], np.convolve(v, np.ones(w) / w, mode="valid"), label=k)
        ax.set(xlabel="step", title="discriminator" if side == "D/" else "generator")
        ax.legend(fontsize=8)
    if evals:  # the Frechet distance on the left axis, mIoU / accuracy on the right
        at = [r["step"] for r in evals]
        axes[2].plot(at, [r["eval/frechet"] for r in evals], "o-", color="C3", label="Frechet distance")
        axes[2].set(xlabel="step", title="validation (--eval-every)")
        axes[2].legend(loc="upper left", fontsize=8)
        right = axes[2].twinx()
        for k, c in (("miou", "C0"), ("accuracy", "C2")):
            right.plot(at, [r[f"eval/{k}"] for r in evals], "s--", color=c, label=k)
        right.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path, dpi=80)


if __name__ == "__main__":
    sample.tune_allocator()  # the command line only: importing train.py changes nothing process-wide
    main()
