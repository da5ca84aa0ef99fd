"""Benchmarks, nanoGPT-style: `python bench.py` runs every section, `python bench.py --section layers` one.

Section "layers": forward + backward time of one SPADE, CLADE and SEAN layer (B=4, C=64, K=19, 128x128 by
default, CPU), and SEAN's folded form against the per-sample, per-class loop oracle (tests/sean_oracle.py),
in the same run. Targets: SEAN >= 20x faster than the loop, SEAN within 2x of SPADE.

New sections (e.g. whole training steps) add a function `bench_<name>(args) -> dict` and an entry in SECTIONS.
"""

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "tests"))

from sean_oracle import sean_loop_forward  # noqa: E402

from norm import CLADE, SEAN, SPADE  # noqa: E402


@dataclass
class BenchConfig:
    """Sizes and timing settings shared by the sections."""

    batch: int = 4
    """B, images per batch"""
    channels: int = 64
    """C, channels of the normalized activation (norm_nc)"""
    label_nc: int = 19
    """K, semantic classes (19 = CelebAMask-HQ, the official SEAN setting)"""
    size: int = 128
    """H = W of the activation and the segmap"""
    style_dim: int = 512
    """SEAN style-code length (official: 512)"""
    threads: int = 0
    """torch CPU threads; 0 keeps torch's default"""
    timer: str = "wall"
    """"wall" (perf_counter) or "cpu" (process CPU time: steadier on a shared machine; use threads=1)"""
    warmup: int = 2
    """untimed runs before timing (allocator, oneDNN kernel selection)"""
    repeats: int = 7
    """timed runs; the median is reported"""
    oracle_repeats: int = 2
    """timed runs of the slow loop oracle"""
    device: str = "cpu"
    """where to run ("cpu" or "cuda")"""


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median_times(fns: dict, warmup: int, repeats: dict, device: str = "cpu", timer: str = "wall") -> dict:
    """Median time in seconds of each fn() after `warmup` untimed calls each. The functions are run in
    interleaved rounds, so a burst of load from elsewhere hits all of them alike and the ratios stay fair.
    repeats: name -> number of timed calls (slow ones can have fewer)."""
    clock = {"wall": time.perf_counter, "cpu": time.process_time}[timer]
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    times = {name: [] for name in fns}
    for r in range(max(repeats.values())):
        for name, fn in fns.items():
            if r < repeats[name]:
                t0 = clock()
                fn()
                sync(device)
                times[name].append(clock() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def blob_segmap(batch: int, label_nc: int, size: int, seed: int = 0, cells: int = 8) -> torch.Tensor:
    """One-hot (B, K, size, size) map of blocky regions (labels on a cells x cells grid, upsampled nearest):
    most classes are present, a few are absent, like a face parsing map."""
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(label_nc, (batch, 1, cells, cells), generator=g).float()
    label = F.interpolate(label, size=(size, size), mode="nearest")[:, 0].long()
    return F.one_hot(label, label_nc).permute(0, 3, 1, 2).float()


def fwd_bwd(layer, x, *inputs):
    """One forward + backward, the unit a training step pays per layer."""

    def step():
        layer.zero_grad(set_to_none=True)
        x.grad = None
        out = layer(x, *inputs)
        out.square().mean().backward()

    return step


def bench_layers(cfg: BenchConfig) -> dict:
    torch.manual_seed(0)
    B, C, K, S, H, dev = cfg.batch, cfg.channels, cfg.label_nc, cfg.style_dim, cfg.size, cfg.device
    x = torch.randn(B, C, H, H, device=dev, requires_grad=True)
    segmap = blob_segmap(B, K, H).to(dev)
    style_codes = torch.randn(B, K, S, device=dev, requires_grad=True)
    spade = SPADE(C, K).to(dev)
    clade = CLADE(C, K).to(dev)
    sean = SEAN(C, K, style_dim=S).to(dev)
    noise = torch.randn(B, 1, H, H, device=dev)

    def sean_step():
        sean.zero_grad(set_to_none=True)
        x.grad = style_codes.grad = None
        sean(x, segmap, style_codes, noise=noise).square().mean().backward()

    def oracle_step():
        sean.zero_grad(set_to_none=True)
        x.grad = style_codes.grad = None
        sean_loop_forward(sean, x, segmap, style_codes, noise=noise).square().mean().backward()

    fns = {"SPADE": fwd_bwd(spade, x, segmap), "CLADE": fwd_bwd(clade, x, segmap), "SEAN": sean_step,
           "SEAN loop oracle": oracle_step}
    repeats = {name: cfg.repeats for name in fns} | {"SEAN loop oracle": cfg.oracle_repeats}
    t = median_times(fns, cfg.warmup, repeats, dev, cfg.timer)

    present = int((segmap.sum(dim=(2, 3)) > 0).sum())
    print(f"layers: forward+backward, B={B} C={C} K={K} {H}x{H} style_dim={S} on {dev}, "
          f"{torch.get_num_threads()} threads, {cfg.timer} time, median; "
          f"{present}/{B * K} (sample, class) regions present")
    for name, sec in t.items():
        print(f"  {name:<18} {sec * 1e3:9.1f} ms")
    print(f"  SEAN loop / SEAN   {t['SEAN loop oracle'] / t['SEAN']:9.1f} x   (target >= 20)")
    print(f"  SEAN / SPADE       {t['SEAN'] / t['SPADE']:9.2f} x   (target <= 2)")
    print(f"  SPADE / CLADE      {t['SPADE'] / t['CLADE']:9.1f} x")
    return t


SECTIONS = {"layers": bench_layers}


def main() -> None:
    cfg = BenchConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--section", choices=["all", *SECTIONS], default="all")
    for name, value in vars(cfg).items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = p.parse_args()
    cfg = BenchConfig(**{k: v for k, v in vars(args).items() if k != "section"})
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    for name, fn in SECTIONS.items():
        if args.section in ("all", name):
            fn(cfg)


if __name__ == "__main__":
    main()
