"""bench.py: every section runs at a tiny size and returns sane numbers (no timing assertions: the machine
is shared). The training-step pieces are train.py's own, so this also checks that they fit together."""
import math

import pytest
import torch

import bench
import train

TINY = ["--preset", "quick", "--crop-size", "32", "--ngf", "4", "--ndf", "4", "--batch-size", "2",
        "--style-dim", "8", "--device", "cpu"]


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: on a shared, busy machine two threads can make a step a hundred times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_layers_section_runs():
    cfg = bench.BenchConfig(size=16, channels=8, label_nc=5, style_dim=8, warmup=0, repeats=1,
                            oracle_repeats=1)
    t = bench.bench_layers(cfg)
    assert set(t) == {"SPADE", "CLADE", "SEAN", "SEAN loop oracle"}
    assert all(v > 0 for v in t.values())


def test_train_step_of_every_model_counts_flops_and_memory():
    for name, flags in bench.MODEL_FLAGS.items():
        spec = dict(flags=TINY + flags, device="cpu", threads=1, timer="wall", warmup=1, repeats=1)
        r = bench.run_step_config(spec)  # in this process: fast, memory is still a number
        assert r["G"] > 0 and r["D"] > 0 and math.isclose(r["step"], r["G"] + r["D"]), name
        assert r["flops_G"] > r["flops_D"] > 0, name  # G's part holds the generator and a D pass
        assert r["memory"] >= 0 and r["batch"] == 2 and r["semantic_nc"] == 10, name


def test_train_step_updates_both_networks():
    args = train.parse_args(TINY + ["--model", "sean"])
    segmap, real = bench.synthetic_batch(args)
    step = bench.TrainStep(args, segmap, real)
    g0 = [p.detach().clone() for p in step.G.parameters()]
    d0 = [p.detach().clone() for p in step.D.parameters()]
    step()
    assert any(not torch.equal(a, b) for a, b in zip(g0, step.G.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(d0, step.D.parameters(), strict=True))
    assert all(p.requires_grad for p in step.D.parameters())  # generator_terms unfreezes D again


def test_sean_vs_spade_and_markdown_tables(tmp_path):
    bench.TABLES.clear()
    cfg = bench.BenchConfig(warmup=0, step_repeats=1)
    med = bench.sean_vs_spade(cfg, size=32, batch=2, ngf=4, label_nc=5, style_dims=(8,))
    assert set(med) == {"SPADE", "SEAN style_dim 8"} and all(m["G"] > 0 for m in med.values())
    assert len(bench.TABLES) == 1 and bench.TABLES[0].count("\n|") == 4  # header, rule, two rows
    assert bench.matmul_peak(bench.BenchConfig(timer="wall"), n=256) > 1e6
