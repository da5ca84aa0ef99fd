"""bench.py at tiny sizes (no assertion on timings: the machine is shared): the tables show the measured
numbers and ratios, the FLOP count of the D step equals the hand count of the discriminator's convolutions,
and the training-step pieces (train.py's) fit together."""

from pathlib import Path

import pytest
import torch

import bench
import sample
import train

TINY = ["--preset", "quick", "--crop-size", "32", "--ngf", "4", "--ndf", "4", "--batch-size", "2",
        "--style-dim", "8", "--device", "cpu", "--bf16", "off"]


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: on a shared, busy machine two threads can make a step a hundred times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    bench.TABLES.clear()
    yield
    torch.set_num_threads(before)


def table_rows(markdown: str) -> dict[str, list[str]]:
    """First column -> the other cells, for the body rows of a Markdown table."""
    rows = [line.strip("|").split(" | ") for line in markdown.splitlines() if line.startswith("| ")]
    return {r[0].strip(): [c.strip() for c in r[1:]] for r in rows[1:]}


def test_layers_section_markdown_shows_the_measured_times_and_ratios(tmp_path, monkeypatch):
    """Through the command line; interleaved is replaced by fixed times so the ratios are known."""
    fixed = {"SPADE": 0.010, "CLADE": 0.002, "SEAN": 0.012, "SEAN paper form": 0.030}
    monkeypatch.setattr(bench, "interleaved", lambda runs, warmup, repeats: {n: [fixed[n]] for n in runs})
    path = tmp_path / "perf.md"
    bench.main(["--section", "layers", "--size", "16", "--channels", "8", "--label-nc", "5",
                "--style-dim", "8", "--threads", "1", "--markdown", str(path)])
    text = path.read_text()
    assert text.startswith("Measured with `python bench.py --section layers --size 16")
    assert "B=4 C=8 K=5 16x16 style_dim=8" in text
    assert table_rows(text) == {"SPADE": ["10.0"], "CLADE": ["2.0"], "SEAN": ["12.0"],
                                "SEAN paper form": ["30.0"]}
    assert "SEAN paper form / folded 2.50x, SEAN / SPADE 1.20x (target <= 2), SPADE / CLADE 5.0x" in text


def test_layers_section_times_every_layer():
    cfg = bench.BenchConfig(size=16, channels=8, label_nc=5, style_dim=8, warmup=0, repeats=2,
                            paper_form_repeats=1)
    t = bench.bench_layers(cfg)  # also checks that the folded SEAN and the paper form agree
    rows = table_rows(bench.TABLES[-1])
    assert list(rows) == ["SPADE", "CLADE", "SEAN", "SEAN paper form"] == list(t)
    assert all(rows[name] == [f"{sec * 1e3:.1f}"] for name, sec in t.items())
    assert f"paper form / folded {t['SEAN paper form'] / t['SEAN']:.2f}x" in bench.TABLES[-1]


def discriminator_flops(input_nc: int, side: int, batch: int, ndf: int = 4) -> tuple[int, int]:
    """Forward FLOPs (2 per multiply-add) of MultiscaleDiscriminator(input_nc, ndf, n_layers=4, num_D=2) on
    (batch, input_nc, side, side): all its convs, and its first convs alone. 4x4 convs with padding 2 and
    strides 2, 2, 2, 1, 1 give (n // stride + 1)² outputs; scale 2 sees a 3x3 stride-2 average pool."""
    total = first = 0
    for _ in range(2):
        n, cin = side, input_nc
        layers = zip([ndf, 2 * ndf, 4 * ndf, 8 * ndf, 1], [2, 2, 2, 1, 1], strict=True)
        for i, (cout, stride) in enumerate(layers):
            n = n // stride + 1
            flops = 2 * batch * cin * cout * 4 * 4 * n * n
            total, first, cin = total + flops, first + (flops if i == 0 else 0), cout
        side = (side + 1) // 2
    return total, first


def test_d_step_flops_of_every_model_equal_the_hand_count():
    # D step: forward on [fake, real] (2 x batch 2), backward = grad input + grad weight (2 x forward each),
    # except the first convs, whose input (segmap + detached fake, real) needs no gradient
    total, first = discriminator_flops(10 + 3, 32, 4)
    for name, flags in bench.MODEL_FLAGS.items():
        spec = dict(flags=TINY + flags, device="cpu", threads=1, timer="wall", warmup=1, repeats=1)
        r = bench.run_step_config(spec)  # in this process: fast, memory is still a number
        assert r["flops_D"] == 3 * total - first, name
        assert r["flops_G"] > total, name  # G's part holds the generator and a D pass
        assert r["step"] == pytest.approx(r["G"] + r["D"]), name
        assert r["batch"] == 2 and r["semantic_nc"] == 10, name


def test_step_table_columns_are_computed_from_the_results():
    r = dict(G=0.3, D=0.1, step=0.4, batch=2, flops_G=3e9, flops_D=1e9, memory=5 * 2**20, G_params=1.5e6,
             sys=0.012, faults=3400)
    bench.step_table("t", {"m": r}, peak=2e10, notes=[])
    # img/s = 2 / 0.4, GFLOP/step = 4, GFLOP/s = 4 / 0.4, % of peak = 100 * 1e10 / 2e10, sys ms, faults in k
    assert table_rows(bench.TABLES[-1]) == {"m": ["1.50M", "300.0", "100.0", "400.0", "5.00", "4.00", "10.0",
                                                  "50.0", "5", "12", "3.4"]}


def test_bf16_columns_are_the_interleaved_ratio():
    spec = dict(flags=TINY + ["--model", "spade"], device="cpu", threads=1, timer="wall", warmup=0, repeats=1,
                bf16=True)
    r = bench.run_step_config(spec)
    assert r["bf16"] > 0 and r["bf16_ratio"] > 0
    r = dict(G=0.3, D=0.1, step=0.4, batch=2, flops_G=3e9, flops_D=1e9, memory=0, G_params=1e6, bf16=0.2,
             bf16_ratio=2.0, sys=0.0, faults=0)
    bench.step_table("t", {"m": r}, peak=2e10, notes=[])
    assert table_rows(bench.TABLES[-1])["m"][-2:] == ["200.0", "2.00x"]


def test_train_step_updates_both_networks():
    args = train.parse_args(TINY + ["--model", "sean"])
    segmap, real = bench.synthetic_batch(args)
    assert segmap.shape == (2, 10, 32, 32) and real.shape == (2, 3, 32, 32)
    step = bench.TrainStep(args, segmap, real)
    g0 = [p.detach().clone() for p in step.G.parameters()]
    d0 = [p.detach().clone() for p in step.D.parameters()]
    step()
    assert any(not torch.equal(a, b) for a, b in zip(g0, step.G.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(d0, step.D.parameters(), strict=True))
    assert all(p.requires_grad for p in step.D.parameters())  # generator_terms unfreezes D again


def test_sean_vs_spade_table_ratio_is_the_measured_ratio():
    cfg = bench.BenchConfig(warmup=0, step_repeats=1)
    med = bench.bench_sean_vs_spade(cfg, size=32, batch=2, ngf=4, label_nc=5, style_dims=(8,))
    rows = table_rows(bench.TABLES[-1])
    assert list(rows) == ["SPADE", "SEAN style_dim 8"] == list(med) and len(bench.TABLES) == 1
    for name, m in med.items():
        ratio = m["G"] / med["SPADE"]["G"]
        assert rows[name] == [f"{m['G'] * 1e3:.1f}", f"{m['D'] * 1e3:.1f}", f"{ratio:.2f}"]


def test_tune_allocator_stops_page_faults_only_where_called(monkeypatch):
    """In fresh processes: freeing and allocating a 64 MB tensor again faults its pages in every time with
    glibc's default malloc, and not at all after sample.tune_allocator() once the heap has grown (a few
    rounds, as a training run's first steps); a user's GLIBC_TUNABLES wins."""
    import os
    import statistics
    import subprocess
    import sys

    script = (
        "import resource, sys, torch, sample\n"
        "said = sample.tune_allocator() if sys.argv[1] == 'tuned' else ''\n"
        "rounds = []\n"
        "for _ in range(20):\n"
        "    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "    torch.ones(16 * 2**20)\n"
        "    rounds.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)\n"
        "print(said, '|', *rounds)\n")
    root = str(Path(bench.__file__).resolve().parent)
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "LD_PRELOAD")}

    def run(mode):
        out = subprocess.run([sys.executable, "-c", script, mode], cwd=root, env=env, capture_output=True,
                             text=True, check=True).stdout
        said, rounds = out.rsplit("|", 1)
        return said.strip(), statistics.median([int(r) for r in rounds.split()][-8:])  # settled rounds

    (_, default), (said, tuned) = run("default"), run("tuned")
    assert default > 10_000  # 64 MB = 16k pages, unmapped and faulted in again each round
    assert said.startswith("glibc malloc keeps freed memory") and tuned < 100, (said, tuned)
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=4096")  # returns before any mallopt
    assert sample.tune_allocator() == "allocator as set by GLIBC_TUNABLES / LD_PRELOAD"
