"""Benchmarks, nanoGPT-style: `python bench.py` runs every section, `python bench.py --section steps` one,
`--markdown perf.md` also writes the tables as Markdown (for the README's performance section).

Section "layers": forward + backward time of one SPADE, CLADE and SEAN layer (B=4, C=64, K=19, 128x128 by
default, CPU), and SEAN's folded form against the per-sample, per-class loop oracle (tests/sean_oracle.py),
in the same run. Targets: SEAN >= 20x faster than the loop, SEAN within 2x of SPADE.

Sections "steps" (train.py's quick preset) and "paper" (paper width: ngf 64, ndf 64, 256², batch 1,
style_dim 512, VGG loss on, the synthetic set's 10 classes): the whole training step of every model, built
and run by train.py's own pieces (parse_args with the preset, build_networks, generate, discriminator_terms,
generator_terms, Adam as train() sets it up), on one fixed batch of the synthetic landscapes:
  G step = generator forward (+ VAE encoder) + D pass on [fake, real] + losses + backward + Adam step,
  D step = D pass on [fake.detach(), real] + loss + backward + Adam step,
images/s = batch / (G step + D step), GFLOP/step counted by torch.utils.flop_counter.FlopCounterMode
(convolutions and matrix products, forward and backward; elementwise ops are not counted) and the achieved
FLOP/s as a fraction of the float32 matmul peak measured at the start of the same run. Each model runs in a
fresh process, so its peak memory is its own, counted from just before its first step (activations,
gradients, Adam states, workspace; not the weights): on CPU the peak RSS (Linux VmHWM, reset then) minus the
RSS then, on CUDA torch.cuda.max_memory_allocated minus the memory allocated then.

Section "sean_vs_spade": the generator step of SEAN against SPADE's in one process, interleaved rounds, at
ngf 16, 64², batch 4, 19 classes (blocky random masks), SEAN at style_dim 64 (the quick preset's) and 512
(the papers'). Target: SEAN within 1.5x of SPADE.

On a shared CPU use `--threads 1 --timer cpu` (process CPU time on one core: far less sensitive to other
jobs than wall time). New sections add a function `bench_<name>(cfg) -> dict` and an entry in SECTIONS.
"""

import argparse
import contextlib
import multiprocessing
import os
import statistics
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "tests"))

from sean_oracle import sean_loop_forward  # noqa: E402

import models  # noqa: E402
import train  # noqa: E402
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
    step_repeats: int = 5
    """timed training steps per model at the quick preset and in sean_vs_spade"""
    paper_warmup: int = 1
    """untimed steps per model at paper width (the first, FLOP-counted step is one of them)"""
    paper_repeats: int = 1
    """timed training steps per model at paper width (a step is ~15 s on one CPU core)"""
    models: str = "spade,spade+vae,sean,concat,pix2pixhd,clade"
    """comma-separated models for the steps and paper sections"""
    markdown: str = ""
    """also write every printed table as Markdown to this file"""


TABLES: list[str] = []  # Markdown of every table printed in this run (for --markdown)


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
    TABLES.append(f"**layers: forward+backward, B={B} C={C} K={K} {H}x{H} style_dim={S} on {dev}, "
                  f"{torch.get_num_threads()} threads, {cfg.timer} time, median**\n\n"
                  "| layer | ms |\n|---|---:|\n"
                  + "".join(f"| {name} | {sec * 1e3:.1f} |\n" for name, sec in t.items())
                  + f"\nSEAN loop / SEAN {t['SEAN loop oracle'] / t['SEAN']:.1f}x (target >= 20), "
                    f"SEAN / SPADE {t['SEAN'] / t['SPADE']:.2f}x (target <= 2)")
    return t


# ------------------------------------------------------------------------------------------------------------
# Whole training steps, run by train.py's own pieces
# ------------------------------------------------------------------------------------------------------------

# train.py flags of each benchmarked model
MODEL_FLAGS = {"spade": ["--model", "spade"], "spade+vae": ["--model", "spade", "--vae"],
               "sean": ["--model", "sean"], "concat": ["--model", "concat"],
               "pix2pixhd": ["--model", "pix2pixhd"], "clade": ["--model", "clade"]}
# the paper-width configuration: the "landscapes" preset (paper settings on the synthetic set: ngf 64, ndf 64,
# 256², style_dim 512, lambda_vgg 10) at batch 1; one process, so syncbatch is plain batch norm
PAPER_FLAGS = ["--preset", "landscapes", "--batch-size", "1", "--param-free", "batch"]


def synthetic_batch(args: train.Args) -> tuple[torch.Tensor, torch.Tensor]:
    """The first batch of the synthetic landscapes at args' size: (segmap, real), as train.py builds them."""
    import data
    dataset = train.build_dataset(args)
    samples = [dataset[i] for i in range(args.batch_size)]
    label = torch.stack([s["label"] for s in samples])
    real = torch.stack([s["image"] for s in samples])
    instance = None
    if dataset.info.has_instance and args.use_instance:
        instance = torch.stack([s["instance"] for s in samples])
    return data.make_segmap(label, dataset.info, instance), real


class TrainStep:
    """One model set up as train.train() does (networks, Adam with TTUR, bf16 autocast if asked) on a fixed
    batch. Calling it runs one training step and returns the seconds of its G and D parts (see the module
    docstring); `counters` (optional) maps "G fwd", "D", "G" to FlopCounterModes to count each part."""

    def __init__(self, args: train.Args, segmap: torch.Tensor, real: torch.Tensor, device: str = "cpu",
                 clock=time.perf_counter):
        import losses
        self.args, self.device, self.clock = args, device, clock
        self.segmap, self.real = segmap.to(device), real.to(device)
        torch.manual_seed(args.seed)
        G, D, E = train.build_networks(args, segmap.shape[1])
        self.G, self.D = G.to(device).train(), D.to(device).train()
        self.E = E.to(device).train() if E is not None else None
        g_params = list(self.G.parameters()) + (list(self.E.parameters()) if self.E is not None else [])
        self.opt_G = torch.optim.Adam(g_params, lr=args.lr_G, betas=(args.beta1, args.beta2))
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=args.lr_D, betas=(args.beta1, args.beta2))
        # VGG19 costs the same with random weights; the ImageNet file is not needed to time it
        self.vgg = losses.VGGLoss(weights=None).to(device) if args.lambda_vgg else None
        self.autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=args.bf16)

    def __call__(self, counters: dict | None = None) -> dict:
        def count(part):
            return counters[part] if counters else contextlib.nullcontext()

        a, segmap, real, clock = self.args, self.segmap, self.real, self.clock
        t0 = clock()
        with count("G fwd"), self.autocast:
            fake, mu, logvar = train.generate(self.G, self.E, segmap, real, a.model)
        sync(self.device)
        t1 = clock()
        with count("D"):
            with self.autocast:
                d_terms = train.discriminator_terms(self.D, segmap, fake, real, a)
            self.opt_D.zero_grad(set_to_none=True)
            d_terms["total"].backward()
            self.opt_D.step()
        sync(self.device)
        t2 = clock()
        with count("G"):
            with self.autocast:
                g_terms = train.generator_terms(self.D, segmap, fake, real, a, self.vgg, mu, logvar)
            self.opt_G.zero_grad(set_to_none=True)
            g_terms["total"].backward()
            self.opt_G.step()
        sync(self.device)
        t3 = clock()
        return {"G": (t1 - t0) + (t3 - t2), "D": t2 - t1}


def status_kib(field: str) -> int:
    """A memory field (VmRSS, VmHWM) of /proc/self/status, in KiB (Linux)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def peak_memory_mark(device: str) -> float:
    """Start a peak-memory window; returns bytes in use now. CUDA: the allocator's peak is reset. CPU (Linux):
    the kernel's high-water mark of this process's RSS is reset (writing 5 to /proc/self/clear_refs), since
    building the networks and the batch may have left a higher peak than the training step reaches."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return status_kib("VmRSS") * 1024


def peak_memory_since(mark: float, device: str) -> float:
    """Peak bytes in use since peak_memory_mark, minus those in use at the mark."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() - mark
    # the kernel syncs per-thread RSS counters lazily: VmHWM can read a few pages below the mark's VmRSS
    return max(0.0, status_kib("VmHWM") * 1024 - mark)


def run_step_config(spec: dict) -> dict:
    """Build one model from train.py flags and time its training step. Runs in a fresh process (bench_steps),
    so that the peak memory is this model's alone. spec: flags, device, threads, timer, warmup, repeats."""
    from torch.utils.flop_counter import FlopCounterMode
    if spec["threads"] > 0:
        torch.set_num_threads(spec["threads"])
    args = train.parse_args(spec["flags"] + ["--synthetic-length", "64"])
    segmap, real = synthetic_batch(args)
    clock = {"wall": time.perf_counter, "cpu": time.process_time}[spec["timer"]]
    step = TrainStep(args, segmap, real, spec["device"], clock)
    mark = peak_memory_mark(spec["device"])
    counters = {part: FlopCounterMode(display=False) for part in ("G fwd", "D", "G")}
    step(counters)  # the first step: counted, not timed (it also allocates Adam's states)
    flops = {part: c.get_total_flops() for part, c in counters.items()}
    for _ in range(spec["warmup"] - 1):
        step()
    times = [step() for _ in range(spec["repeats"])]
    return {"G": statistics.median(t["G"] for t in times), "D": statistics.median(t["D"] for t in times),
            "step": statistics.median(t["G"] + t["D"] for t in times), "batch": args.batch_size,
            "flops_G": flops["G fwd"] + flops["G"], "flops_D": flops["D"],
            "memory": peak_memory_since(mark, spec["device"]), "semantic_nc": segmap.shape[1],
            "G_params": models.count_parameters(step.G)}


_PEAK: dict = {}


def matmul_peak(cfg: BenchConfig, n: int = 0) -> float:
    """FLOP/s of a large float32 n x n matmul (n^3 multiply-adds = 2 n^3 FLOP), median; measured once per
    run. n: 8192 on CUDA, 2048 on CPU unless given."""
    n = n or (8192 if cfg.device.startswith("cuda") else 2048)
    key = (cfg.device, torch.get_num_threads(), cfg.timer, n)
    if key not in _PEAK:
        a, b = torch.randn(n, n, device=cfg.device), torch.randn(n, n, device=cfg.device)
        reps = 10 if cfg.device.startswith("cuda") else 3
        t = median_times({"mm": lambda: a @ b}, 2, {"mm": reps}, cfg.device, cfg.timer)["mm"]
        _PEAK[key] = 2 * n**3 / t
        cuda = cfg.device.startswith("cuda")
        tf32 = f" (TF32 {'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'})" if cuda else ""
        line = (f"matmul peak: float32 {n}x{n} @ {n}x{n}{tf32} on {cfg.device}, {torch.get_num_threads()} "
                f"threads, {cfg.timer} time: {_PEAK[key] / 1e9:.1f} GFLOP/s")
        print(line)
        TABLES.append(line)
    return _PEAK[key]


def load_line() -> str:
    return f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"


def print_table(title: str, header: list[str], rows: list[list[str]], notes: list[str] = ()) -> None:
    """Print a fixed-width table and keep its Markdown form for --markdown."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(title)
    for r in [header, *rows]:  # first column left-aligned, numbers right-aligned
        print("  " + "  ".join(c.rjust(w) if i else c.ljust(w)
                               for i, (c, w) in enumerate(zip(r, widths, strict=True))))
    for n in notes:
        print("  " + n)
    md = [f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "|".join(
        "---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    md += [""] + [f"{n}  " for n in notes]
    TABLES.append("\n".join(md))


def step_table(title: str, results: dict, peak: float, notes: list[str]) -> None:
    mem_unit = "peak MiB (CUDA alloc)" if any(r.get("cuda") for r in results.values()) else "peak MiB (RSS)"
    header = ["model", "G params", "G step ms", "D step ms", "step ms", "img/s", "GFLOP/step", "GFLOP/s",
              "% of peak", mem_unit]
    rows = []
    for name, r in results.items():
        flops = r["flops_G"] + r["flops_D"]
        rows.append([name, f"{r['G_params'] / 1e6:.2f}M", f"{r['G'] * 1e3:.1f}", f"{r['D'] * 1e3:.1f}",
                     f"{r['step'] * 1e3:.1f}", f"{r['batch'] / r['step']:.2f}", f"{flops / 1e9:.2f}",
                     f"{flops / r['step'] / 1e9:.1f}", f"{100 * flops / r['step'] / peak:.1f}",
                     f"{r['memory'] / 2**20:.0f}"])
    print_table(title, header, rows, notes)


def run_models(cfg: BenchConfig, flags: list[str], warmup: int, repeats: int) -> dict:
    """run_step_config for each model in cfg.models, each in a fresh (spawned) process, one after another."""
    spawn = multiprocessing.get_context("spawn")
    results = {}
    for name in cfg.models.split(","):
        spec = dict(flags=flags + MODEL_FLAGS[name] + ["--device", cfg.device], device=cfg.device,
                    threads=cfg.threads, timer=cfg.timer, warmup=warmup, repeats=repeats)
        with spawn.Pool(1) as pool:
            results[name] = pool.apply(run_step_config, (spec,)) | {"cuda": cfg.device.startswith("cuda")}
        print(f"  ... {name}: step {results[name]['step'] * 1e3:.1f} ms", flush=True)
    return results


def step_notes(cfg: BenchConfig, warmup: int, repeats: int, extra: str) -> list[str]:
    return [f"{extra}; {cfg.device}, {cfg.threads or torch.get_num_threads()} threads, {cfg.timer} time, "
            f"median of {repeats} step{'s' * (repeats > 1)} after {warmup} untimed; {load_line()} at start.",
            "G step = G forward (+ encoder) + D pass + losses + backward + Adam; D step = D pass on the "
            "detached fake and the real + loss + backward + Adam. GFLOP: conv/matmul forward+backward "
            "(FlopCounterMode); % of peak: of the float32 matmul peak measured in this run. Peak memory: "
            + ("CUDA max_memory_allocated above the allocation before the first step." if
               cfg.device.startswith("cuda") else "peak RSS (VmHWM, reset before the first step) over the "
               "first step and the timed steps, minus the RSS before them (each model in its own process).")]


def bench_steps(cfg: BenchConfig) -> dict:
    peak = matmul_peak(cfg)
    flags = ["--preset", "quick"]
    results = run_models(cfg, flags, cfg.warmup, cfg.step_repeats)
    q, k = train.PRESETS["quick"], next(iter(results.values()))["semantic_nc"]
    step_table(f"training step, quick preset (ngf {q['ngf']}, ndf {q['ndf']}, {q['crop_size']}², batch "
               f"{q['batch_size']}, style_dim {q['style_dim']}, synthetic {k} classes, no VGG)", results,
               peak, step_notes(cfg, cfg.warmup, cfg.step_repeats, "python bench.py --section steps"))
    return results


def bench_paper(cfg: BenchConfig) -> dict:
    peak = matmul_peak(cfg)
    results = run_models(cfg, PAPER_FLAGS, cfg.paper_warmup, cfg.paper_repeats)
    k = next(iter(results.values()))["semantic_nc"]
    step_table(f"training step, paper width (ngf 64, ndf 64, 256², batch 1, style_dim 512, VGG loss, "
               f"synthetic {k} classes)", results, peak,
               step_notes(cfg, cfg.paper_warmup, cfg.paper_repeats, "python bench.py --section paper; VGG19 "
                          "with random weights (same cost as ImageNet's)"))
    return results


def sean_vs_spade(cfg: BenchConfig, size: int = 64, batch: int = 4, ngf: int = 16, label_nc: int = 19,
                  style_dims: tuple = (64, 512)) -> dict:
    """Generator step time (see TrainStep) of SPADE and SEAN at each style_dim, in interleaved rounds."""
    torch.manual_seed(0)
    segmap = blob_segmap(batch, label_nc, size)
    real = torch.rand(batch, 3, size, size) * 2 - 1
    base = ["--preset", "quick", "--crop-size", str(size), "--batch-size", str(batch), "--ngf", str(ngf),
            "--ndf", str(ngf), "--device", cfg.device]
    clock = {"wall": time.perf_counter, "cpu": time.process_time}[cfg.timer]
    spade = train.parse_args(base + ["--model", "spade"])
    runs = {"SPADE": TrainStep(spade, segmap, real, cfg.device, clock)}
    for s in style_dims:
        args = train.parse_args(base + ["--model", "sean", "--style-dim", str(s)])
        runs[f"SEAN style_dim {s}"] = TrainStep(args, segmap, real, cfg.device, clock)
    for run in runs.values():
        for _ in range(cfg.warmup):
            run()
    times = {name: [] for name in runs}
    for _ in range(cfg.step_repeats):  # interleaved: a burst of load hits every model alike
        for name, run in runs.items():
            times[name].append(run())
    med = {name: {k: statistics.median(t[k] for t in ts) for k in ("G", "D")} for name, ts in times.items()}
    rows = [[name, f"{m['G'] * 1e3:.1f}", f"{m['D'] * 1e3:.1f}", f"{m['G'] / med['SPADE']['G']:.2f}"]
            for name, m in med.items()]
    print_table(f"SEAN vs SPADE generator step (ngf {ngf}, {size}², batch {batch}, {label_nc} classes)",
                ["generator", "G step ms", "D step ms", "G step / SPADE's"], rows,
                [f"target: SEAN within 1.5x of SPADE; {cfg.device}, {torch.get_num_threads()} threads, "
                 f"{cfg.timer} time, median of {cfg.step_repeats} interleaved rounds after {cfg.warmup} "
                 f"untimed; {load_line()}."])
    return med


def bench_sean_vs_spade(cfg: BenchConfig) -> dict:
    return sean_vs_spade(cfg)


SECTIONS = {"layers": bench_layers, "steps": bench_steps, "paper": bench_paper,
            "sean_vs_spade": bench_sean_vs_spade}


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
    t0 = time.perf_counter()
    for name, fn in SECTIONS.items():
        if args.section in ("all", name):
            fn(cfg)
            print()
    print(f"bench.py done in {time.perf_counter() - t0:.0f} s wall; {load_line()} now")
    if cfg.markdown:
        cmd = "python bench.py " + " ".join(sys.argv[1:])
        with open(cfg.markdown, "w") as f:
            f.write(f"Measured with `{cmd}` (torch {torch.__version__}).\n\n" + "\n\n".join(TABLES) + "\n")
        print(f"wrote {cfg.markdown}")


if __name__ == "__main__":
    main()
