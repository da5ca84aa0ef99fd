"""Benchmarks: `python bench.py` runs every section, `--section NAME` one, `--markdown FILE` also writes the
tables as Markdown. On a shared CPU use `--threads 1 --timer cpu` (process CPU time).

layers: forward + backward of one SPADE, CLADE and SEAN layer, and of norm.sean_paper_form (SEAN as the
paper draws it, one FC per class; checked equal to the folded SEAN first, 10.9x slower at the defaults).
Target: SEAN within 2x of SPADE.
steps, paper: every model's training step, made of train.py's pieces, on one fixed synthetic batch, at the
quick preset and at paper width (landscapes preset, batch 1). G step = G forward (+ VAE encoder) + D pass on
[fake, real] + losses + backward + Adam; D step = D pass on [fake.detach(), real] + loss + backward + Adam.
GFLOP: convolutions and matrix products, forward and backward, also as a fraction of a float32 matmul peak
measured in the same run. One fresh process per model, so that its peak memory (above the memory in use
before its first step) is its own.
sean_vs_spade: the G step of SEAN (style_dim 64 and 512) against SPADE's, interleaved, at ngf 16, 64²,
batch 4, 19 classes of blocky random masks. Target: SEAN within 1.5x of SPADE.
official (--official-spade PATH, a checkout of NVlabs/SPADE): its generator against this project's at paper
width, forward + backward, interleaved in one process. Target: at least as fast.
Every step table has kernel time and page faults per step; --allocator default|tuned|both picks glibc's malloc
as it comes or as sample.tune_allocator sets it (train.py's), or runs each model under both.
"""

import argparse
import contextlib
import dataclasses
import functools
import multiprocessing
import os
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

import data
import losses
import models
import sample
import train
from norm import CLADE, SEAN, SPADE, sean_paper_form


@dataclass
class BenchConfig:
    batch: int = 4
    """B, images per batch (layers section)"""
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
    """wall (perf_counter) or cpu (process CPU time: steadier on a shared machine; use --threads 1)"""
    warmup: int = 2
    """untimed runs before timing (allocator, oneDNN kernel selection)"""
    repeats: int = 7
    """timed runs of each layer; the median is reported"""
    paper_form_repeats: int = 2
    """timed runs of the (slow) SEAN paper form"""
    device: str = "cpu"
    """where to run (cpu or cuda)"""
    step_repeats: int = 5
    """timed training steps per model at the quick preset and in sean_vs_spade"""
    paper_warmup: int = 1
    """untimed steps per model at paper width (the first, FLOP-counted step is one of them)"""
    paper_repeats: int = 1
    """timed training steps per model at paper width (a step is ~15 s on one CPU core)"""
    bf16: str = "auto"
    """steps and paper sections: also time each step under bf16 autocast (float32 weights), interleaved with
    float32, for the bf16 columns (the other columns are float32's): auto (where bf16 matmul is native, as
    train.py --bf16 auto) | on | off"""
    models: str = "spade,spade+vae,sean,concat,pix2pixhd,clade"
    """comma-separated models for the steps and paper sections"""
    allocator: str = "tuned"
    """tuned (sample.tune_allocator, as train.py runs) | default (glibc as it comes) | both (steps, paper and
    official sections: each model once in a process of each kind, the before / after of the allocator)"""
    official_spade: str = ""
    """official section: a checkout of NVlabs/SPADE; its generator and this project's at paper width (ngf 64,
    256x256, batch 1, 19 classes), forward + backward, interleaved in one process (skipped without it)"""
    markdown: str = ""
    """also write every printed table as Markdown to this file"""


TABLES: list[str] = []  # for --markdown
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, clock, device: str):
    """fn wrapped to return its own duration, device work included."""
    def run():
        t0 = clock()
        fn()
        sync(device)
        return clock() - t0
    return run


def interleaved(runs: dict, warmup: int, repeats: int | dict) -> dict:
    """name -> the results of `repeats` (or repeats[name]) calls of runs[name]() after `warmup` untimed ones,
    in rounds of one call each, so that a burst of load from elsewhere hits all alike."""
    for run in runs.values():
        for _ in range(warmup):
            run()
    reps = repeats if isinstance(repeats, dict) else dict.fromkeys(runs, repeats)
    results = {name: [] for name in runs}
    for r in range(max(reps.values())):
        for name, run in runs.items():
            if r < reps[name]:
                results[name].append(run())
    return results


def load_line() -> str:
    return f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"


def print_table(title: str, header: list[str], rows: list[list[str]], notes: list[str] = ()) -> None:
    """Print a table (first column left-aligned, numbers right-aligned); keep its Markdown for --markdown."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(title)
    for r in [header, *rows]:
        print("  " + "  ".join(c.rjust(w) if i else c.ljust(w)
                               for i, (c, w) in enumerate(zip(r, widths, strict=True))))
    for n in notes:
        print("  " + n)
    md = [f"**{title}**", "", "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    md += ["| " + " | ".join(r) + " |" for r in rows] + [""] + [f"{n}  " for n in notes]
    TABLES.append("\n".join(md))


def blob_segmap(batch: int, label_nc: int, size: int, cells: int = 8) -> torch.Tensor:
    """One-hot (B, K, size, size) map of blocky regions (a random cells x cells label grid, upsampled): most
    classes present, a few absent, like a face parsing map."""
    label = torch.randint(label_nc, (batch, 1, cells, cells), generator=torch.Generator().manual_seed(0))
    label = F.interpolate(label.float(), size=(size, size), mode="nearest")[:, 0].long()
    return F.one_hot(label, label_nc).permute(0, 3, 1, 2).float()


def bench_layers(cfg: BenchConfig) -> dict:
    torch.manual_seed(0)
    B, C, K, S, H, dev = cfg.batch, cfg.channels, cfg.label_nc, cfg.style_dim, cfg.size, cfg.device
    x = torch.randn(B, C, H, H, device=dev, requires_grad=True)
    codes = torch.randn(B, K, S, device=dev, requires_grad=True)
    segmap, noise = blob_segmap(B, K, H).to(dev), torch.randn(B, 1, H, H, device=dev)
    spade, clade, sean = SPADE(C, K).to(dev), CLADE(C, K).to(dev), SEAN(C, K, style_dim=S).to(dev)
    calls = {"SPADE": lambda: spade(x, segmap), "CLADE": lambda: clade(x, segmap),
             "SEAN": lambda: sean(x, segmap, codes, noise=noise),
             "SEAN paper form": lambda: sean_paper_form(sean, x, segmap, codes, noise=noise)}
    with torch.no_grad():
        torch.testing.assert_close(calls["SEAN"](), calls["SEAN paper form"](), atol=1e-4, rtol=1e-4)
    leaves = [x, codes, *spade.parameters(), *clade.parameters(), *sean.parameters()]

    def fwd_bwd(call):
        def step():
            for p in leaves:
                p.grad = None
            call().square().mean().backward()
        return timed(step, CLOCKS[cfg.timer], dev)

    reps = dict.fromkeys(calls, cfg.repeats) | {"SEAN paper form": cfg.paper_form_repeats}
    times = interleaved({name: fwd_bwd(call) for name, call in calls.items()}, cfg.warmup, reps)
    t = {name: statistics.median(ts) for name, ts in times.items()}
    present = int((segmap.sum(dim=(2, 3)) > 0).sum())
    print_table(f"layers: forward+backward, B={B} C={C} K={K} {H}x{H} style_dim={S} on {dev}, "
                f"{torch.get_num_threads()} threads, {cfg.timer} time, median",
                ["layer", "ms"], [[name, f"{sec * 1e3:.1f}"] for name, sec in t.items()],
                [f"SEAN paper form / folded {t['SEAN paper form'] / t['SEAN']:.2f}x, SEAN / SPADE "
                 f"{t['SEAN'] / t['SPADE']:.2f}x (target <= 2), SPADE / CLADE "
                 f"{t['SPADE'] / t['CLADE']:.1f}x; {present}/{B * K} (sample, class) regions present; "
                 f"{load_line()}."])
    return t


MODEL_FLAGS = {m: ["--model", m] for m in ("spade", "sean", "concat", "pix2pixhd", "clade")}
MODEL_FLAGS["spade+vae"] = ["--model", "spade", "--vae"]


def synthetic_batch(args: train.Args) -> tuple[torch.Tensor, torch.Tensor]:
    """The first args.batch_size synthetic landscapes at args.crop_size: (segmap, real)."""
    dataset = data.SyntheticLandscapes("train", size=args.crop_size, length=args.batch_size, seed=args.seed)
    samples = [dataset[i] for i in range(args.batch_size)]
    label = torch.stack([s["label"] for s in samples])
    return data.make_segmap(label, dataset.info), torch.stack([s["image"] for s in samples])


class TrainStep:
    """One model set up as train.train() does (Adam with TTUR, bf16 autocast if asked) on a fixed batch.
    A call runs one training step and returns the seconds of its G and D parts (module docstring);
    `counters` (optional) maps "G fwd", "D", "G" to FlopCounterModes that count each part."""

    def __init__(self, args: train.Args, segmap: torch.Tensor, real: torch.Tensor, device: str = "cpu",
                 clock=time.perf_counter):
        self.args, self.device, self.clock = args, device, clock
        self.segmap, self.real = segmap.to(device), real.to(device)
        torch.manual_seed(args.seed)
        nets = models.build(models.ModelArgs.from_config(asdict(args), segmap.shape[1], False))
        self.G, self.D, self.E = (m.to(device).train() if m is not None else None for m in nets)
        g_params = [p for m in (self.G, self.E) if m is not None for p in m.parameters()]
        self.opt_G = torch.optim.Adam(g_params, lr=args.lr_G, betas=(args.beta1, args.beta2))
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=args.lr_D, betas=(args.beta1, args.beta2))
        # VGG19 costs the same with random weights: the ImageNet file is not needed to time it
        self.vgg = losses.VGGLoss(weights=None).to(device) if args.lambda_vgg else None
        dev = torch.device(device)
        self.autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=train.use_bf16(args.bf16, dev))

    def __call__(self, counters: dict | None = None) -> dict:
        a, segmap, real, G, D, E = self.args, self.segmap, self.real, self.G, self.D, self.E
        usage = resource.getrusage(resource.RUSAGE_SELF)  # page faults and kernel time: allocator trouble

        def part(name, fn, opt=None):
            """fn (as train.train_step runs it), then (with an optimizer) backward and step -> (output,
            seconds)."""
            t0 = self.clock()
            with counters[name] if counters else contextlib.nullcontext():
                out = fn()
                if opt is not None:
                    opt.zero_grad(set_to_none=True)
                    out["total"].backward()
                    opt.step()
            sync(self.device)
            return out, self.clock() - t0

        def forward():
            with self.autocast:
                return train.generate(G, E, segmap, real, a.model)

        (fake, mu, logvar), t_fwd = part("G fwd", forward)
        _, t_d = part("D", lambda: train.discriminator_terms(D, segmap, fake, real, a, self.autocast),
                      self.opt_D)
        _, t_g = part("G", lambda: train.generator_terms(D, segmap, fake, real, a, self.vgg, mu, logvar,
                                                         self.autocast), self.opt_G)
        after = resource.getrusage(resource.RUSAGE_SELF)
        return {"G": t_fwd + t_g, "D": t_d, "step": t_fwd + t_g + t_d,
                "faults": after.ru_minflt - usage.ru_minflt, "sys": after.ru_stime - usage.ru_stime}


def medians(times: list[dict]) -> dict:
    return {k: statistics.median(t[k] for t in times) for k in times[0]}


def memory_in_use(device: str, peak: bool = False) -> float:
    """Bytes in use now, or at the peak since the last reset: CUDA allocations, or on Linux the process RSS
    (VmRSS) or its high-water mark (VmHWM, which writing 5 to /proc/self/clear_refs resets)."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() if peak else torch.cuda.memory_allocated()
    field = "VmHWM:" if peak else "VmRSS:"
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field)) * 1024.0


def run_step_config(spec: dict) -> dict:
    """Build one model from train.py flags and time its training step (see bench_models).
    spec: flags, device, threads, timer, warmup, repeats, allocator ("tuned": sample.tune_allocator first)."""
    from torch.utils.flop_counter import FlopCounterMode
    if spec.get("allocator") == "tuned":
        sample.tune_allocator()
    if spec["threads"] > 0:
        torch.set_num_threads(spec["threads"])
    args, device = train.parse_args(spec["flags"] + ["--bf16", "off"]), spec["device"]
    segmap, real = synthetic_batch(args)
    step = TrainStep(args, segmap, real, device, CLOCKS[spec["timer"]])
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    mark = memory_in_use(device)
    counters = {part: FlopCounterMode(display=False) for part in ("G fwd", "D", "G")}
    step(counters)  # counted, not timed (it also allocates Adam's states)
    times = interleaved({"step": step}, spec["warmup"] - 1, spec["repeats"])["step"]
    # the kernel syncs per-thread RSS counters lazily: VmHWM can read a few pages below the mark's VmRSS
    memory = max(0.0, memory_in_use(device, peak=True) - mark)
    result = medians(times) | {
        "batch": args.batch_size, "memory": memory, "cuda": device.startswith("cuda"),
        "flops_G": counters["G fwd"].get_total_flops() + counters["G"].get_total_flops(),
        "flops_D": counters["D"].get_total_flops(), "semantic_nc": segmap.shape[1],
        "G_params": models.count_parameters(step.G)}
    if spec.get("bf16"):  # the same step under bf16 autocast, interleaved with float32 for the ratio
        step16 = TrainStep(dataclasses.replace(args, bf16="on"), segmap, real, device, CLOCKS[spec["timer"]])
        both = {k: medians(v)["step"] for k, v in
                interleaved({"fp32": step, "bf16": step16}, spec["warmup"], spec["repeats"]).items()}
        result |= {"bf16": both["bf16"], "bf16_ratio": both["fp32"] / both["bf16"]}
    return result


@functools.cache
def matmul_peak(device: str, timer: str) -> float:
    """FLOP/s of a float32 n x n matmul (2 n^3 FLOP), median; measured once per run."""
    cuda = device.startswith("cuda")
    n = 8192 if cuda else 2048
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    times = interleaved({"mm": timed(lambda: a @ b, CLOCKS[timer], device)}, 2, 10 if cuda else 3)["mm"]
    peak = 2 * n**3 / statistics.median(times)
    tf32 = f" (TF32 {'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'})" if cuda else ""
    TABLES.append(f"matmul peak: float32 {n}x{n} @ {n}x{n}{tf32} on {device}, {torch.get_num_threads()} "
                  f"threads, {timer} time: {peak / 1e9:.1f} GFLOP/s")
    print(TABLES[-1])
    return peak


def step_table(title: str, results: dict, peak: float, notes: list[str]) -> None:
    cuda, bf16 = (any(r.get("cuda") for r in results.values()), all("bf16" in r for r in results.values()))
    rows = [[name, f"{r['G_params'] / 1e6:.2f}M", f"{r['G'] * 1e3:.1f}", f"{r['D'] * 1e3:.1f}",
             f"{r['step'] * 1e3:.1f}", f"{r['batch'] / r['step']:.2f}", f"{flops / 1e9:.2f}",
             f"{flops / r['step'] / 1e9:.1f}", f"{100 * flops / r['step'] / peak:.1f}",
             f"{r['memory'] / 2**20:.0f}", f"{r['sys'] * 1e3:.0f}", f"{r['faults'] / 1e3:.1f}"]
            + ([f"{r['bf16'] * 1e3:.1f}", f"{r['bf16_ratio']:.2f}x"] if bf16 else [])
            for name, r in results.items() for flops in [r["flops_G"] + r["flops_D"]]]
    print_table(title, ["model", "G params", "G step ms", "D step ms", "step ms", "img/s", "GFLOP/step",
                        "GFLOP/s", "% of peak", f"peak MiB ({'CUDA alloc' if cuda else 'RSS'})",
                        "sys ms/step", "page faults/step (k)"]
                + (["bf16 step ms", "fp32 / bf16"] if bf16 else []), rows, notes)


def bench_models(cfg: BenchConfig, section: str, flags: list[str], warmup: int, repeats: int) -> dict:
    """The steps and paper sections: run_step_config for each of cfg.models, each in a fresh (spawned)
    process, so that its peak memory is its own."""
    peak, results = matmul_peak(cfg.device, cfg.timer), {}
    bf16, native = (train.use_bf16(setting, torch.device(cfg.device)) for setting in (cfg.bf16, "auto"))
    for name in cfg.models.split(","):
        for allocator in allocators(cfg):
            spec = dict(flags=flags + MODEL_FLAGS[name] + ["--device", cfg.device], device=cfg.device,
                        threads=cfg.threads, timer=cfg.timer, warmup=warmup, repeats=repeats,
                        bf16=bf16, allocator=allocator)
            row = name + (f" ({allocator} allocator)" if cfg.allocator == "both" else "")
            with multiprocessing.get_context("spawn").Pool(1) as pool:
                results[row] = pool.apply(run_step_config, (spec,))
            print(f"  ... {row}: step {results[row]['step'] * 1e3:.1f} ms", flush=True)
    a, k = train.parse_args(flags), next(iter(results.values()))["semantic_nc"]
    memory = ("CUDA max_memory_allocated" if cfg.device.startswith("cuda") else "peak RSS (VmHWM)")
    label = {"steps": "quick preset", "paper": "paper width"}[section]
    step_table(f"training step, {label} (ngf {a.ngf}, ndf {a.ndf}, {a.crop_size}², batch {a.batch_size}, "
               f"style_dim {a.style_dim}, {'VGG loss' if a.lambda_vgg else 'no VGG'}, synthetic {k} classes)",
               results, peak,
               [f"python bench.py --section {section}; {cfg.device}, {cfg.threads or torch.get_num_threads()}"
                f" threads, {cfg.timer} time, median of {repeats} step{'s' * (repeats > 1)} after {warmup} "
                f"untimed; {load_line()} at start.",
                "G step = G forward (+ encoder) + D pass + losses + backward + Adam; D step = D pass on the "
                "detached fake and the real + loss + backward + Adam. GFLOP: conv/matmul forward+backward "
                "(FlopCounterMode); % of peak: of the float32 matmul peak of this run. Peak memory: "
                f"{memory} above the memory in use before the first step, one process per model"
                + (". VGG19 with random weights (same cost as ImageNet's)." if a.lambda_vgg else "."),
                "sys ms/step, page faults/step: kernel time and minor page faults of the process per "
                "training step (median): big tensors freed and allocated again each step, unmapped and "
                "faulted back in by glibc's default malloc (see sample.tune_allocator).",
                f"bf16 autocast {'timed' if bf16 else 'not timed'} (--bf16 {cfg.bf16}; native bf16 matmul "
                f"here: {native})."])
    return results


def bench_sean_vs_spade(cfg: BenchConfig, size: int = 64, batch: int = 4, ngf: int = 16, label_nc: int = 19,
                        style_dims: tuple = (64, 512)) -> dict:
    """Generator step time (see TrainStep) of SPADE and SEAN at each style_dim, in interleaved rounds."""
    torch.manual_seed(0)
    segmap, real = blob_segmap(batch, label_nc, size), torch.rand(batch, 3, size, size) * 2 - 1
    base = ["--preset", "quick", "--crop-size", str(size), "--batch-size", str(batch), "--ngf", str(ngf),
            "--ndf", str(ngf), "--device", cfg.device, "--bf16", "off"]
    flags = {"SPADE": ["--model", "spade"]}
    flags |= {f"SEAN style_dim {s}": ["--model", "sean", "--style-dim", str(s)] for s in style_dims}
    runs = {name: TrainStep(train.parse_args(base + f), segmap, real, cfg.device, CLOCKS[cfg.timer])
            for name, f in flags.items()}
    times = interleaved(runs, cfg.warmup, cfg.step_repeats)
    med = {name: medians(ts) for name, ts in times.items()}
    print_table(f"SEAN vs SPADE generator step (ngf {ngf}, {size}², batch {batch}, {label_nc} classes)",
                ["generator", "G step ms", "D step ms", "G step / SPADE's"],
                [[name, f"{m['G'] * 1e3:.1f}", f"{m['D'] * 1e3:.1f}", f"{m['G'] / med['SPADE']['G']:.2f}"]
                 for name, m in med.items()],
                [f"target: SEAN within 1.5x of SPADE; {cfg.device}, {torch.get_num_threads()} threads, "
                 f"{cfg.timer} time, median of {cfg.step_repeats} interleaved rounds after {cfg.warmup} "
                 f"untimed; {load_line()}."])
    return med


def allocators(cfg: BenchConfig) -> list[str]:
    return ["default", "tuned"] if cfg.allocator == "both" else [cfg.allocator]


def official_vs_project(spec: dict) -> dict:
    """In this (spawned) process: the official SPADE generator (imported from spec["root"], its `models`
    package swapped in for the import) and this project's, same configuration, forward + backward of a
    square loss, interleaved; median ms, minor page faults and kernel ms per step."""
    import importlib
    import pickle
    import types
    if spec["allocator"] == "tuned":
        sample.tune_allocator()
    if spec["threads"] > 0:
        torch.set_num_threads(spec["threads"])
    ours = {k: sys.modules.pop(k) for k in list(sys.modules) if k.split(".")[0] in ("models", "util")}
    sys.path.insert(0, spec["root"])
    sys.modules.setdefault("dill", pickle)  # util/util.py imports dill
    importlib.import_module("models")
    sync_bn = types.ModuleType("models.networks.sync_batchnorm")  # a separate clone in the official README
    sync_bn.SynchronizedBatchNorm2d = torch.nn.BatchNorm2d
    sys.modules[sync_bn.__name__] = sync_bn
    try:
        official_generator = importlib.import_module("models.networks.generator").SPADEGenerator
    finally:
        for k in [k for k in sys.modules if k.split(".")[0] in ("models", "util")]:
            del sys.modules[k]
        sys.modules.update(ours)
        sys.path.remove(spec["root"])
    ngf, size, nc = 64, 256, 19
    opt = argparse.Namespace(ngf=ngf, num_upsampling_layers="normal", crop_size=size, aspect_ratio=1.0,
                             use_vae=False, semantic_nc=nc, norm_G="spectralspadebatch3x3", z_dim=256)
    torch.manual_seed(0)
    nets = {"official NVlabs/SPADE": official_generator(opt).train(),
            "this project": models.SPADEGenerator(nc, ngf=ngf, crop_size=size, param_free="batch").train()}
    counts = {models.count_parameters(net) for net in nets.values()}
    assert len(counts) == 1, counts
    segmap = blob_segmap(1, nc, size)

    def step(net):
        def run():
            usage, t0 = resource.getrusage(resource.RUSAGE_SELF), CLOCKS[spec["timer"]]()
            for p in net.parameters():
                p.grad = None
            net(segmap).square().mean().backward()
            after = resource.getrusage(resource.RUSAGE_SELF)
            return {"step": CLOCKS[spec["timer"]]() - t0, "faults": after.ru_minflt - usage.ru_minflt,
                    "sys": after.ru_stime - usage.ru_stime}
        return run

    times = interleaved({k: step(net) for k, net in nets.items()}, spec["warmup"], spec["repeats"])
    return {k: medians(v) for k, v in times.items()} | {"params": counts.pop()}


def bench_official(cfg: BenchConfig) -> dict:
    """The official SPADE generator against this project's (official_vs_project), a process per allocator."""
    if not cfg.official_spade:
        print("official: skipped (--official-spade PATH: a checkout of NVlabs/SPADE)")
        return {}
    rows, results = [], {}
    for allocator in allocators(cfg):
        spec = dict(root=str(Path(cfg.official_spade).resolve()), allocator=allocator, threads=cfg.threads,
                    timer=cfg.timer, warmup=cfg.paper_warmup, repeats=max(cfg.paper_repeats, 3))
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            results[allocator] = r = pool.apply(official_vs_project, (spec,))
        ratio = r["official NVlabs/SPADE"]["step"] / r["this project"]["step"]
        rows += [[name, allocator, f"{m['step'] * 1e3:.0f}", f"{m['sys'] * 1e3:.0f}",
                  f"{m['faults'] / 1e3:.1f}", f"{ratio:.2f}x" if name == "this project" else ""]
                 for name, m in r.items() if name != "params"]
    print_table(f"official SPADE generator vs this project's: paper width (ngf 64, 256², batch 1, 19 "
                f"classes, batch norm, {next(iter(results.values()))['params'] / 1e6:.2f}M parameters each), "
                "forward + backward", ["generator", "allocator", "step ms", "sys ms/step",
                                       "page faults/step (k)", "speed vs official"], rows,
                [f"python bench.py --section official --official-spade PATH; {cfg.device}, "
                 f"{cfg.threads or torch.get_num_threads()} threads, {cfg.timer} time, median of "
                 f"{max(cfg.paper_repeats, 3)} interleaved steps after {cfg.paper_warmup} untimed; speed vs "
                 f"official = official step / this step (above 1: faster); {load_line()}."])
    return results


QUICK_FLAGS = ["--preset", "quick"]
PAPER_FLAGS = ["--preset", "landscapes", "--batch-size", "1", "--param-free", "batch"]  # one process: no sync
SECTIONS = {"layers": bench_layers,
            "steps": lambda cfg: bench_models(cfg, "steps", QUICK_FLAGS, cfg.warmup, cfg.step_repeats),
            "paper": lambda cfg: bench_models(cfg, "paper", PAPER_FLAGS, cfg.paper_warmup, cfg.paper_repeats),
            "sean_vs_spade": bench_sean_vs_spade, "official": bench_official}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--section", choices=["all", *SECTIONS], default="all")
    sample.add_dataclass_args(p, BenchConfig, choices=dict(timer=tuple(CLOCKS), bf16=("auto", "on", "off"),
                                                           allocator=("tuned", "default", "both")))
    args = vars(p.parse_args(argv))
    section = args.pop("section")
    cfg = BenchConfig(**args)
    if cfg.allocator != "default":  # this process: the layers and sean_vs_spade sections
        sample.tune_allocator()
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    for name, fn in SECTIONS.items():
        if section in ("all", name):
            fn(cfg)
            print()
    print(f"bench.py done in {time.perf_counter() - t0:.0f} s wall; {load_line()} now")
    if cfg.markdown:
        cmd = " ".join(["python bench.py", *(sys.argv[1:] if argv is None else argv)])
        with open(cfg.markdown, "w") as f:
            f.write(f"Measured with `{cmd}` (torch {torch.__version__}).\n\n" + "\n\n".join(TABLES) + "\n")
        print(f"wrote {cfg.markdown}")


if __name__ == "__main__":
    main()
