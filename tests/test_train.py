"""train.py: exact resume, 2-process DDP, every model end to end, non-finite stop, signals, bad input.

Everything runs the real training loop at a tiny size (32x32 synthetic landscapes, ngf 8, batch 2).
"""

import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

import train

ROOT = Path(__file__).resolve().parents[1]

# 8 images, batch 2 -> 4 steps per epoch; 1 constant + 2 decaying epochs = 12 steps.
TINY = ["--crop-size", "32", "--ngf", "8", "--ndf", "8", "--style-dim", "16", "--z-dim", "16",
        "--batch-size", "2", "--synthetic-length", "8", "--niter", "1", "--niter-decay", "2",
        "--no-progress", "--sample-every", "100", "--save-every", "100", "--bf16", "off"]  # bit-exact checks


def tiny(tmp_path, *extra) -> list[str]:
    return TINY + ["--out-dir", str(tmp_path)] + [str(e) for e in extra]


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def read_log(path) -> list[dict]:
    return [json.loads(line) for line in open(path) if line.strip()]


# ------------------------------------------------------------------------------------------------------------
# Command line and presets
# ------------------------------------------------------------------------------------------------------------


def test_every_field_has_a_help_line_and_the_default_is_quick():
    helps = {a.dest: a.help for a in train.build_parser()._actions}
    fields = {f.name for f in dataclasses.fields(train.Args)}
    assert fields <= set(helps) and all(len(helps[name]) > 10 for name in fields)  # the docstring below each
    args = train.parse_args([])
    assert args.preset == "quick" and args.model == "spade" and args.dataset == "synthetic"
    assert args.crop_size == 64 and args.lambda_vgg == 0.0  # quick: offline, no VGG
    assert "discriminator learning rate (TTUR)" in train.build_parser().format_help()


def test_paper_presets_carry_the_papers_hyperparameters_and_flags_override_them():
    for name in ("cityscapes", "ade20k", "coco", "celebamask", "facades", "landscapes"):
        a = train.parse_args(["--preset", name])
        assert (a.lr_G, a.lr_D, a.beta1, a.beta2) == (1e-4, 4e-4, 0.0, 0.9)
        assert (a.lambda_fm, a.lambda_vgg, a.lambda_kl, a.ngf) == (10.0, 10.0, 0.05, 64)
        assert a.niter_decay > 0 and a.param_free == "syncbatch"
    city = train.parse_args(["--preset", "cityscapes"])
    assert (city.crop_size, city.aspect_ratio, city.batch_size) == (512, 2.0, 16)
    assert city.niter + city.niter_decay == 200
    assert train.parse_args(["--preset", "celebamask"]).model == "sean"
    a = train.parse_args(["--preset", "ade20k", "--lr-G", "0.5", "--batch_size", "4", "--no-vgg-loss"])
    assert (a.lr_G, a.batch_size, a.lambda_vgg, a.crop_size) == (0.5, 4, 0.0, 256)


# The official options of each dataset, read from the official code (SPADE's data/<name>_dataset.py
# modify_commandline_options, SEAN's README train/test command lines for CelebAMask-HQ) and the papers'
# epochs. Columns: preprocess, load (train), crop, aspect, label_nc, don't-care, instance edges, upsampling
# layers, batch, epochs.
OFFICIAL_OPTIONS = {
    "cityscapes": ("fixed", 512, 512, 2.0, 35, False, True, "more", 16, 200),
    "ade20k": ("resize_and_crop", 286, 256, 1.0, 150, True, False, "normal", 32, 200),
    "coco": ("resize_and_crop", 286, 256, 1.0, 182, True, True, "normal", 32, 100),
    "celebamask": ("resize_and_crop", 256, 256, 1.0, 19, False, False, "normal", 32, 100),
    "facades": ("resize_and_crop", 286, 256, 1.0, 13, False, False, "normal", 1, 200),
}


@pytest.mark.parametrize("preset", sorted(OFFICIAL_OPTIONS))
def test_presets_match_the_official_dataset_options(preset):
    import data
    a = train.parse_args(["--preset", preset])
    info = data.DATASETS[a.dataset].INFO
    ours = (info.preprocess_mode, info.load_size, a.crop_size, a.aspect_ratio, info.label_nc,
            info.contain_dontcare, bool(a.use_instance and info.has_instance), a.num_upsampling_layers,
            a.batch_size, a.niter + a.niter_decay)
    assert ours == OFFICIAL_OPTIONS[preset]
    assert info.crop_size == a.crop_size and info.aspect_ratio == a.aspect_ratio


def test_demo_preset_generators_fit_the_weights_budget():
    """The demo preset's SPADE, SPADE+VAE (+ encoder) and SEAN generators: 25 MB in float16 with the
    committed 0.5 MB segmenter."""
    import models

    total = 0
    for flags in (["--model", "spade"], ["--vae"], ["--model", "sean"]):
        args = train.parse_args(["--preset", "demo", *flags])
        with torch.device("meta"):
            G, _, E = models.build(models.ModelArgs.from_config(dataclasses.asdict(args), 10, False))
        total += sum(models.count_parameters(m) for m in (G, E) if m is not None)
    assert 2 * total + 0.5e6 <= 25e6, total


@pytest.mark.parametrize("flags", [[], ["--lr-G", "3e-5", "--lr-D", "7e-4", "--beta1", "0.5",
                                       "--beta2", "0.99"]])
def test_optimizers_get_the_ttur_learning_rates_and_betas(tmp_path, flags):
    """G (with the VAE encoder) uses lr_G, D uses lr_D (TTUR: 1e-4 / 4e-4 in the papers), both Adam(beta1,
    beta2); train.setup builds them from the flags, and the log reports the same values."""
    args = train.parse_args(tiny(tmp_path, "--vae", "--max-steps", 1, *flags))
    assert args.lr_G != args.lr_D
    run = train.setup(args, train.Dist(), torch.device("cpu"))
    for opt, lr, nets in ((run.opt_G, args.lr_G, (run.G, run.E)), (run.opt_D, args.lr_D, (run.D,))):
        assert [g["lr"] for g in opt.param_groups] == [lr]
        assert [g["betas"] for g in opt.param_groups] == [(args.beta1, args.beta2)]
        assert {id(p) for g in opt.param_groups for p in g["params"]} == {
            id(p) for net in nets for p in net.parameters()}
    paper = train.parse_args(["--preset", "ade20k"])
    assert (paper.lr_G, paper.lr_D, paper.beta1, paper.beta2) == (1e-4, 4e-4, 0.0, 0.9)
    train.main(tiny(tmp_path, "--vae", "--max-steps", 1, "--name", "lr", *flags))
    row = read_log(tmp_path / "lr" / "log.jsonl")[0]
    assert (row["lr_G"], row["lr_D"]) == (args.lr_G, args.lr_D)


def test_official_learning_rate_schedule():
    f = train.lr_factor(niter=2, niter_decay=4)
    # constant for niter epochs (and the first decaying one, as the official per-epoch update lands after it)
    assert [f(e) for e in range(6)] == [1.0, 1.0, 1.0, 0.75, 0.5, 0.25]


# ------------------------------------------------------------------------------------------------------------
# Training runs
# ------------------------------------------------------------------------------------------------------------


def test_resume_is_bit_identical(tmp_path):
    """N steps + resume + N steps == 2N steps: weights, optimizer moments and logged losses.

    6 steps cross an epoch boundary (4 steps/epoch, so the lr decays) and resume mid-epoch (batch 3 of 4);
    SPADE+VAE draws noise (reparameterization) every step, so the RNG state must be restored too."""
    full = train.main(tiny(tmp_path, "--vae", "--max-steps", 6, "--name", "full"))
    half = train.main(tiny(tmp_path, "--vae", "--max-steps", 3, "--name", "split"))
    assert half["step"] == 3
    ckpt = tmp_path / "split" / "ckpt_00000003.pt"
    resumed = train.main(["--resume", str(ckpt), "--max-steps", "6"])
    assert resumed["step"] == 6 and resumed["epoch"] == 1
    for k in ("G", "D", "E"):
        assert_same_state(full[k].state_dict(), resumed[k].state_dict())
    a = torch.load(tmp_path / "full" / "ckpt_00000006.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "ckpt_00000006.pt", weights_only=True)
    for opt in ("opt_G", "opt_D"):
        for p, s in a[opt]["state"].items():
            assert_same_state(s, b[opt]["state"][p])
    assert a["sched_G"]["_last_lr"] == b["sched_G"]["_last_lr"] != [1e-4]  # the decay has started
    la, lb = read_log(tmp_path / "full" / "log.jsonl"), read_log(tmp_path / "split" / "log.jsonl")
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time"} for r in rows]  # noqa: E731
    assert [r["step"] for r in lb] == [1, 2, 3, 4, 5, 6]
    assert strip(la) == strip(lb)


@pytest.mark.parametrize("model,extra", [("spade", []), ("spade", ["--vae"]), ("sean", []), ("concat", []),
                                         ("pix2pixhd", []), ("clade", [])])
def test_every_model_trains_and_writes_a_weights_only_checkpoint(tmp_path, model, extra):
    out = train.main(tiny(tmp_path, "--model", model, "--max-steps", 2, "--sample-every", 2, *extra))
    run = tmp_path / f"quick-{model}{'-vae' if extra else ''}"
    ckpt = torch.load(run / "ckpt_00000002.pt", weights_only=True)
    assert ckpt["step"] == 2 and ckpt["config"]["model"] == model
    assert_same_state(ckpt["G"], out["G"].state_dict())
    assert_same_state(ckpt["D"], out["D"].state_dict())
    assert (ckpt["E"] is not None) == bool(extra)
    assert {"opt_G", "opt_D", "sched_G", "sched_D", "rng", "epoch", "batch_in_epoch"} <= set(ckpt)
    rows = read_log(run / "log.jsonl")
    assert len(rows) == 2
    assert all(torch.isfinite(torch.tensor(v)) for r in rows for k, v in r.items() if "/" in k)
    assert {"D/d_fake", "D/d_real", "G/gan", "G/fm", "G/total"} <= set(rows[0])
    assert ("G/kl" in rows[0]) == bool(extra)
    assert (run / "samples" / "step_00000002.png").is_file() and (run / "loss_curves.png").is_file()
    assert json.load(open(run / "args.json"))["model"] == model


def test_bf16_auto_follows_the_hardware_and_bf16_training_stays_finite(tmp_path, monkeypatch, capsys):
    cpu = torch.device("cpu")
    for amx, avx512_bf16, expected in [(False, False, False), (True, False, True), (False, True, True)]:
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        assert train.use_bf16("auto", cpu) is expected
        assert train.use_bf16("on", cpu) and not train.use_bf16("off", cpu)
    assert train.use_bf16(True, cpu) and not train.use_bf16(False, cpu)  # checkpoints before "auto"
    monkeypatch.undo()
    runs = {}
    for mode in ("on", "off"):  # tiny() sets off; a later flag wins
        runs[mode] = train.main(tiny(tmp_path, "--model", "sean", "--max-steps", 2, "--name", mode,
                                     "--bf16", mode))
        out = capsys.readouterr().out
        assert f"{' bf16' if mode == 'on' else ' fp32'} (--bf16 {mode})" in out
        assert ("no native bf16 matmul" in out) == (mode == "on" and not train.use_bf16("auto", cpu))
    rows = read_log(tmp_path / "on" / "log.jsonl")
    assert all(torch.isfinite(torch.tensor(v)) for r in rows for k, v in r.items() if "/" in k)
    # autocast really ran: the same seed and data give other weights than float32's
    assert not torch.equal(runs["on"]["G"].fc.weight, runs["off"]["G"].fc.weight)
    assert runs["on"]["G"].fc.weight.dtype == torch.float32  # master weights stay float32


def bf16_rounded(v: float) -> bool:
    """True if v is exactly a bfloat16 value (what a loss computed in bfloat16 would log)."""
    return torch.tensor(v).to(torch.bfloat16).item() == v


@pytest.mark.parametrize("model,extra", [("spade", ["--vae"])])  # every term: GAN, FM, KL
def test_bf16_loss_terms_are_float32_and_add_up_to_their_totals(tmp_path, model, extra):
    """Under --bf16 on the networks run in bfloat16, the loss arithmetic in float32: the logged terms are not
    bfloat16-rounded and each total is the sum of its terms (notebook 04's identities, on every CPU)."""
    train.main(tiny(tmp_path, "--model", model, *extra, "--max-steps", 3, "--name", "b", "--bf16", "on"))
    rows = read_log(tmp_path / "b" / "log.jsonl")
    assert len(rows) == 3
    for r in rows:
        d_terms, g_terms = ([v for k, v in r.items() if k.startswith(side) and k != side + "total"]
                            for side in ("D/", "G/"))
        assert r["D/total"] == pytest.approx(sum(d_terms), rel=1e-6, abs=1e-7)
        assert r["G/total"] == pytest.approx(sum(g_terms), rel=1e-6, abs=1e-7)
        assert ("G/kl" in r) == bool(extra)
    values = [v for r in rows for k, v in r.items() if "/" in k]
    # float32 values: at most a few of them happen to be exact bfloat16 numbers
    assert sum(bf16_rounded(v) for v in values) <= len(values) // 4, values


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    terms = train.discriminator_terms
    calls = []

    def nan_at_step_3(*args, **kw):  # the discriminator loss turns NaN at the third step
        calls.append(1)
        out = terms(*args, **kw)
        return {**out, "total": out["total"] * float("nan")} if len(calls) == 3 else out

    monkeypatch.setattr(train, "discriminator_terms", nan_at_step_3)
    with pytest.raises(SystemExit) as e:
        train.main(tiny(tmp_path, "--save-every", 2, "--name", "nan"))
    assert "non-finite discriminator loss at step 3" in str(e.value) and "ckpt_00000002.pt" in str(e.value)
    assert sorted(os.listdir(tmp_path / "nan")) == ["args.json", "ckpt_00000002.pt", "log.jsonl", "samples"]
    assert torch.load(tmp_path / "nan" / "ckpt_00000002.pt", weights_only=True)["step"] == 2


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    argv = tiny(tmp_path, "--name", "sig", "--niter", 100)
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *argv], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = tmp_path / "sig" / "log.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and not (log.exists() and log.read_text().strip()):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "stopped by signal" in out
    ckpts = sorted((tmp_path / "sig").glob("ckpt_*.pt"))
    assert len(ckpts) == 1
    assert 1 <= torch.load(ckpts[0], weights_only=True)["step"] < 400


@pytest.fixture(scope="module")
def tiny_segmenter(tmp_path_factory) -> str:
    """A U-Net weights file (--eval-segmenter, loaded weights-only): no training of the cached one."""
    import evaluate
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("seg") / "seg.pt"
    net = evaluate.SegUNet(10, 4)
    torch.save({"state_dict": net.state_dict(), "label_nc": 10, "config": {"width": 4}}, path)
    return str(path)


def test_eval_every_logs_keeps_best_and_resumes_exactly(tmp_path, tiny_segmenter):
    """--eval-every scores the generator on a fixed validation subset without touching the training RNG or
    modes: a run split by a resume equals the straight run, eval rows and best.pt included."""
    ev = ["--eval-every", 2, "--eval-images", 4, "--eval-segmenter", tiny_segmenter, "--save-every", 3]
    full = train.main(tiny(tmp_path, "--max-steps", 6, "--name", "full", *ev))
    train.main(tiny(tmp_path, "--max-steps", 3, "--name", "split", *ev))
    resumed = train.main(["--resume", str(tmp_path / "split"), "--max-steps", "6"])
    assert_same_state(full["G"].state_dict(), resumed["G"].state_dict())
    evals = {}
    for run in ("full", "split"):
        rows = read_log(tmp_path / run / "log.jsonl")
        evals[run] = [r for r in rows if "eval/frechet" in r]
        assert [r["step"] for r in rows if "D/total" in r] == [1, 2, 3, 4, 5, 6]
    assert evals["full"] == evals["split"] and [r["step"] for r in evals["full"]] == [2, 4, 6]
    assert all(0 <= r["eval/miou"] <= 1 and r["eval/frechet"] >= 0 for r in evals["full"])
    best = min(evals["full"], key=lambda r: r["eval/frechet"])
    for run in ("full", "split"):
        saved = torch.load(tmp_path / run / "best.pt", weights_only=True)
        assert saved["step"] == best["step"] and saved["best_frechet"] == best["eval/frechet"]
    assert torch.load(tmp_path / "full" / "ckpt_00000006.pt", weights_only=True)["best_frechet"] == \
        best["eval/frechet"]


# ------------------------------------------------------------------------------------------------------------
# Two processes, DistributedDataParallel on gloo
# ------------------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, argv: list[str], out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    out = train.main(argv)
    state = {"G": out["G"].state_dict(), "D": out["D"].state_dict()}
    torch.save(state, os.path.join(out_dir, f"rank{rank}.pt"))


def test_ddp_two_cpu_processes_keep_identical_weights(tmp_path):
    # batch 4 = 2 per process; syncbatch exercises the CPU fallback to per-process BatchNorm.
    # --eval-every: rank 0 scores the generator, rank 1 waits for it (and for best.pt's RNG gathering)
    seg = tmp_path / "seg.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.trace(torch.nn.Conv2d(3, 10, 1), torch.zeros(1, 3, 32, 32)).save(str(seg))
    argv = tiny(tmp_path, "--batch-size", 4, "--max-steps", 3, "--param-free", "syncbatch", "--name", "ddp",
                "--eval-every", 2, "--eval-images", 4, "--eval-segmenter", seg, "--trust-segmenter")
    mp.spawn(_ddp_worker, args=(2, _free_port(), argv, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for k in ("G", "D"):
        assert_same_state(r0[k], r1[k])
    start = torch.load(tmp_path / "ddp" / "ckpt_00000003.pt", weights_only=True)
    assert start["world_size"] == 2 and len(start["rng"]) == 2  # each rank's noise stream is kept
    assert_same_state(start["G"], r0["G"])
    rows = read_log(tmp_path / "ddp" / "log.jsonl")
    assert len(rows) == 4 and rows[2]["step"] == 2 and "eval/frechet" in rows[2]  # rank 0 only
    assert len(torch.load(tmp_path / "ddp" / "best.pt", weights_only=True)["rng"]) == 2


# ------------------------------------------------------------------------------------------------------------
# Bad input: one clear line, no traceback
# ------------------------------------------------------------------------------------------------------------


def test_bad_input_gives_a_one_line_error(tmp_path, capsys):
    for argv in (["--model", "stylegan"], ["--preset", "imagenet"]):
        with pytest.raises(SystemExit) as e:
            train.parse_args(argv)
        assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="error: dataset folder .* does not exist"):
        train.main(tiny(tmp_path, "--dataset", "ade20k", "--dataroot", tmp_path / "nowhere"))
    with pytest.raises(SystemExit, match="--vae is SPADE's image encoder"):
        train.parse_args(["--model", "sean", "--vae"])
    with pytest.raises(SystemExit, match="does not exist"):
        train.parse_args(["--resume", str(tmp_path / "missing.pt")])
    train.main(tiny(tmp_path, "--max-steps", 1, "--name", "s"))
    with pytest.raises(SystemExit, match=r"other network settings: --model sean \(checkpoint: spade\)"):
        train.parse_args(["--resume", str(tmp_path / "s"), "--model", "sean"])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="cannot read checkpoint"):
        train.parse_args(["--resume", str(tmp_path / "junk.pt")])
    assert "\n" not in str(e.value)


def test_counts_and_sizes_are_checked_before_a_run_folder_exists(tmp_path):
    for flag, value, msg in (("--max-steps", -3, "--max-steps -3 must be at least 0"),
                             ("--batch-size", -2, "--batch-size -2 must be positive"),
                             ("--batch-size", 0, "--batch-size 0 must be positive"),
                             ("--ngf", 0, "--ngf 0 must be positive")):
        with pytest.raises(SystemExit, match=msg):
            train.main(tiny(tmp_path, flag, value, "--name", "bad"))
    with pytest.raises(SystemExit, match="at least 1 epoch"):
        train.main(tiny(tmp_path, "--niter", 0, "--niter-decay", 0, "--name", "bad"))
    # batch 1 at 32x32: the generator starts at 1x1, no normalization can work there -> say what does
    with pytest.raises(SystemExit, match=r"--param-free batch needs more than one value per channel.*"
                                         r"--batch-size of 2 or more.*--crop-size 64 or more"):
        train.main(tiny(tmp_path, "--batch-size", 1, "--name", "bad"))
    with pytest.raises(SystemExit, match=r"--param-free instance .* use --crop-size 64 or more"):
        train.main(tiny(tmp_path, "--batch-size", 1, "--param-free", "instance", "--name", "bad"))
    assert not (tmp_path / "bad").exists()


def test_start_line_says_what_max_steps_does(tmp_path, capsys):
    train.main(tiny(tmp_path, "--max-steps", 1000, "--name", "cap"))  # 3 epochs x 4 steps = 12 steps
    out = capsys.readouterr().out
    assert "training for 12 steps: 3 epochs" in out and "--max-steps 1000 is not reached (it is a cap)" in out
    assert "whichever comes first" in " ".join(train.build_parser().format_help().split())


def test_resume_refuses_other_network_flags_in_one_line(tmp_path):
    train.main(tiny(tmp_path, "--max-steps", 1, "--name", "arch"))
    with pytest.raises(SystemExit) as e:
        train.parse_args(["--resume", str(tmp_path / "arch"), "--ngf", "4", "--num-D", "3", "--lr-G", "1e-3"])
    msg = str(e.value)
    assert "--ngf 4 (checkpoint: 8), --num-D 3 (checkpoint: 2)" in msg and "lr" not in msg and "\n" not in msg
    assert train.parse_args(["--resume", str(tmp_path / "arch"), "--ngf", "8", "--lr-G", "1e-3"]).lr_G == 1e-3


def test_resume_skips_a_truncated_checkpoint_and_removes_stale_temp_files(tmp_path, capsys):
    train.main(tiny(tmp_path, "--max-steps", 3, "--save-every", 1, "--keep-checkpoints", 0, "--name", "cut"))
    run = tmp_path / "cut"
    newest = run / "ckpt_00000003.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # cut short, as by a full disk
    (run / "ckpt_00000004.pt.tmp4242").write_bytes(b"half a checkpoint")  # kill -9 during a write
    with pytest.raises(SystemExit, match=r"cannot read checkpoint .*ckpt_00000003.pt.*newest readable "
                                         r"checkpoint beside it is .*ckpt_00000002.pt"):
        train.parse_args(["--resume", str(newest)])
    out = train.main(["--resume", str(run), "--max-steps", "4"])
    captured = capsys.readouterr()
    assert "ckpt_00000003.pt" in captured.err and "resuming from the newest readable one, ckpt_00000002.pt" \
        in captured.err
    assert "removed 1 temp file(s)" in captured.out
    assert out["step"] == 4 and not list(run.glob("*.tmp*"))
    assert torch.load(newest, weights_only=True)["step"] == 3  # rewritten whole by the resumed run


def test_vgg_loss_never_falls_back_to_random_weights(tmp_path, monkeypatch):
    import losses
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_hub"))  # no weight file here, no network in tests
    assert not os.path.exists(losses.vgg19_checkpoint_path())
    with pytest.raises(SystemExit, match="VGG19 weights.*--no-vgg-loss"):
        train.main(tiny(tmp_path, "--lambda-vgg", 10, "--max-steps", 1))


# ------------------------------------------------------------------------------------------------------------
# Nothing lost: run folders, logs, checks before anything is written
# ------------------------------------------------------------------------------------------------------------


def snapshot(folder) -> dict:
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}


def test_a_resumed_copy_writes_into_the_copy_never_the_original(tmp_path, capsys):
    train.main(tiny(tmp_path, "--max-steps", 4, "--save-every", 2, "--name", "k9"))
    before = snapshot(tmp_path / "k9")
    import shutil
    shutil.copytree(tmp_path / "k9", tmp_path / "k9t")
    out = train.main(["--resume", str(tmp_path / "k9t"), "--max-steps", "6"])
    assert out["step"] == 6 and snapshot(tmp_path / "k9") == before  # the original is untouched
    assert [r["step"] for r in read_log(tmp_path / "k9t" / "log.jsonl")] == [1, 2, 3, 4, 5, 6]
    assert (tmp_path / "k9t" / "ckpt_00000006.pt").is_file()
    assert json.load(open(tmp_path / "k9t" / "args.json"))["name"] == "k9t"
    assert "ckpt_00000006.pt" in capsys.readouterr().out  # "checkpoint ..." names the new one
    # --name sends the resumed run to another folder, its log starting from the checkpoint's
    train.main(["--resume", str(tmp_path / "k9" / "ckpt_00000002.pt"), "--name", "branch",
                "--max-steps", "3"])
    assert snapshot(tmp_path / "k9") == before
    assert [r["step"] for r in read_log(tmp_path / "branch" / "log.jsonl")] == [1, 2, 3]


def test_a_folder_holding_a_run_refuses_a_fresh_start_unless_overwrite(tmp_path):
    train.main(tiny(tmp_path, "--max-steps", 4, "--save-every", 2, "--name", "reuse"))
    before = snapshot(tmp_path / "reuse")
    with pytest.raises(SystemExit) as e:
        train.main(tiny(tmp_path, "--max-steps", 2, "--name", "reuse", "--seed", 7))
    msg = str(e.value)
    assert "already holds a run" in msg and "--resume" in msg and "--overwrite" in msg and "\n" not in msg
    assert snapshot(tmp_path / "reuse") == before
    train.main(tiny(tmp_path, "--max-steps", 2, "--save-every", 2, "--name", "reuse", "--seed", 7,
                    "--overwrite"))
    assert sorted(p.name for p in (tmp_path / "reuse").glob("ckpt_*")) == ["ckpt_00000002.pt"]
    assert [r["step"] for r in read_log(tmp_path / "reuse" / "log.jsonl")] == [1, 2]
    # an empty folder (or one with unrelated files) is no run
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("mine")
    train.main(tiny(tmp_path, "--max-steps", 1, "--name", "empty"))
    assert (tmp_path / "empty" / "notes.txt").read_text() == "mine"


def test_resume_drops_a_torn_last_log_line_and_refuses_damage_before_writing(tmp_path, capsys):
    train.main(tiny(tmp_path, "--max-steps", 4, "--save-every", 2, "--name", "torn"))
    log = tmp_path / "torn" / "log.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:3]) + lines[3][:25])  # a crash in the middle of writing step 4's row
    out = train.main(["--resume", str(tmp_path / "torn"), "--max-steps", "5"])
    assert out["step"] == 5 and "dropped the torn last line" in capsys.readouterr().out
    assert [r["step"] for r in read_log(log)] == [1, 2, 3, 5]
    log.write_text("".join(lines[:1]) + "garbage\n" + "".join(lines[2:4]))  # damage in the middle
    before = snapshot(tmp_path / "torn")
    with pytest.raises(SystemExit, match=r"log.jsonl line 2 is not a log row"):
        train.main(["--resume", str(tmp_path / "torn"), "--max-steps", "6"])
    assert snapshot(tmp_path / "torn") == before  # args.json, log and checkpoints as they were


@pytest.mark.parametrize("crop", [63, 48, 16])
def test_a_crop_size_the_generator_cannot_make_is_refused_first(tmp_path, crop):
    with pytest.raises(SystemExit, match=rf"--crop-size {crop} .* multiples of 32; use --crop-size"):
        train.main(tiny(tmp_path, "--crop-size", crop, "--name", "c"))
    with pytest.raises(SystemExit, match="multiples of 16"):
        train.main(tiny(tmp_path, "--model", "pix2pixhd", "--crop-size", 40, "--name", "c"))
    assert not (tmp_path / "c").exists()
    assert train.parse_args(tiny(tmp_path, "--model", "pix2pixhd", "--crop-size", 48)).crop_size == 48


def _custom(tmp_path, n=3, size=(32, 32), info=None, label=None):
    root = tmp_path / "custom"
    for i in range(n):
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "labels").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((*size, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray(np.full(size, i % 3, dtype=np.uint8)).save(root / "labels" / f"{i}.png")
    (root / "info.json").write_text(json.dumps({"label_nc": 3} if info is None else info))
    return root


def test_bad_custom_datasets_are_refused_in_one_line_before_a_run_folder_exists(tmp_path):
    cases = {
        "labels of another size": (lambda r: Image.fromarray(np.zeros((16, 32), np.uint8)).save(
            r / "labels" / "2.png"),
            r"images/2.png: is 32x32 \(HxW\) but its label map .*labels/2.png is 16x32"),
        "RGB label without a palette": (lambda r: Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(
            r / "labels" / "1.png"), "colour image .* pass a palette"),
        "ids out of range": (lambda r: Image.fromarray(np.full((32, 32), 7, np.uint8)).save(
            r / "labels" / "0.png"), r"label ids \[7\] are not classes"),
        "a file that is no image": (lambda r: (r / "images" / "1.png").write_text("hello"),
                                    "1.png: cannot read image file"),
        "label_nc 0": (lambda r: (r / "info.json").write_text('{"label_nc": 0}'), '"label_nc" must be'),
        "label_nc abc": (lambda r: (r / "info.json").write_text('{"label_nc": "abc"}'), '"label_nc" must be'),
        "info.json a list": (lambda r: (r / "info.json").write_text("[3]"), "expected a JSON object"),
        "palette 5": (lambda r: (r / "info.json").write_text('{"label_nc": 3, "palette": 5}'),
                      '"palette" must be'),
        "no label_nc": (lambda r: (r / "info.json").write_text("{}"), '"label_nc" in .*info.json'),
    }
    for what, (damage, message) in cases.items():
        import shutil
        shutil.rmtree(tmp_path / "custom", ignore_errors=True)
        root = _custom(tmp_path)
        damage(root)
        with pytest.raises(SystemExit) as e:
            train.main(tiny(tmp_path, "--dataset", "custom", "--dataroot", root, "--name", "bad"))
        assert re.search(message, str(e.value)) and "\n" not in str(e.value), (what, str(e.value))
        assert not (tmp_path / "bad").exists(), what
    # a colour not in the palette: read at the check of the first sample
    import shutil
    shutil.rmtree(tmp_path / "custom")
    root = _custom(tmp_path)
    (root / "pal.json").write_text("[[0, 0, 0], [255, 0, 0], [0, 255, 0]]")
    Image.fromarray(np.full((32, 32, 3), 9, np.uint8)).save(root / "labels" / "0.png")
    with pytest.raises(SystemExit, match=r"colour \(9, 9, 9\) at pixel .* not in the palette"):
        train.main(tiny(tmp_path, "--dataset", "custom", "--dataroot", root, "--palette", root / "pal.json",
                        "--name", "bad"))
    assert not (tmp_path / "bad").exists()


def test_messages_say_what_to_do(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "notes.pt").write_text("some text\n")
    for name, says in (("empty.pt", "the file is empty"), ("notes.pt", "not a torch checkpoint")):
        with pytest.raises(SystemExit) as e:
            train.parse_args(["--resume", str(tmp_path / name)])
        assert says in str(e.value) and "_use_new_zipfile_serialization" not in str(e.value)
    with pytest.raises(SystemExit) as e:  # batch 4 already: no advice to raise the batch
        train.main(tiny(tmp_path, "--batch-size", 4, "--crop-size", 32, "--param-free", "instance"))
    assert "--batch-size" not in str(e.value) and "--crop-size 64 or more" in str(e.value)
