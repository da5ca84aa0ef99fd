"""sample.py: loading generators (runs, exports, demo weights, older checkpoints), the synthesize command with
its style controls, label-map reading and its errors, export."""

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import data
import sample


def test_export_writes_a_float16_generator_that_loads_like_the_checkpoint(ckpts, tmp_path, capsys):
    out = tmp_path / "vae16.pt"
    assert sample.main(["export", "--ckpt", ckpts["vae"], "--out", str(out)]) == 0
    assert "generator + encoder weights, float16" in capsys.readouterr().out
    blob = torch.load(out, weights_only=True)
    assert "D" not in blob and "opt_G" not in blob and blob["G"]["fc.weight"].dtype == torch.float16
    full, half = sample.load_generator(ckpts["vae"]), sample.load_generator(out)
    assert next(half.G.parameters()).dtype == torch.float32  # cast back on loading
    label = torch.randint(0, 9, (1, 32, 32))
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        a, b = (m.generate(m.segmap(label), image=image) for m in (full, half))  # z = the encoder's mean
    assert 0 < (a - b).abs().max() < 0.02  # float16 rounding of the weights, nothing else
    assert out.stat().st_size < 0.6 * Path(ckpts["vae"]).stat().st_size  # no D, half the bytes


def test_committed_demo_weights_load_and_fit_the_budget():
    """weights/demo-*.pt: generator (+ encoder) only, float16, loadable with weights_only; with the segmenter
    at most 25 MB; each loads through load_demo with the demo preset's widths and synthesizes."""
    files = sorted(sample.WEIGHTS.glob("*.pt"))
    assert {f.name for f in files} >= {f"demo-{name}.pt" for name in sample.DEMO}
    assert sum(f.stat().st_size for f in files) <= 25e6
    item = data.build_split("synthetic", None, "val", (64, 64), length=1)[0]
    label, image = item["label"][None], item["image"][None]
    for name, command in sample.DEMO.items():
        blob = torch.load(sample.WEIGHTS / f"demo-{name}.pt", map_location="cpu", weights_only=True)
        dtypes = {t.dtype for t in blob["G"].values() if t.is_floating_point()}
        assert "D" not in blob and dtypes == {torch.float16}
        lm = sample.load_demo(name)
        assert (lm.model, lm.use_vae, lm.size, lm.config["ngf"]) == (name.split("-")[0], name.endswith("vae"),
                                                                    (64, 64), 12)
        assert f"--name demo-{name}" in command and ("--vae" in command) == lm.use_vae
        out = lm.generate(lm.segmap(label), image=image if lm.has_style else None)
        assert out.shape == (1, 3, 64, 64) and torch.isfinite(out).all()


def test_load_demo_names_the_command_for_a_missing_file(monkeypatch, tmp_path):
    monkeypatch.setattr(sample, "WEIGHTS", tmp_path)
    with pytest.raises(FileNotFoundError, match="--model sean --niter 12 --niter-decay 12 --name demo-sean"):
        sample.load_demo("sean")
    with pytest.raises(ValueError, match="choose one of spade, spade-vae, sean"):
        sample.load_demo("clade")


def test_checkpoint_of_another_label_count_is_rejected(tmp_path):
    import models
    import train

    args = train.Args(preset="quick", crop_size=32, ngf=8, style_dim=16, param_free="batch")
    G, _, _ = models.build(models.ModelArgs.from_config(asdict(args), 5, False))  # the synthetic set has 10
    torch.save({"format": 1, "config": asdict(args), "G": G.state_dict()}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="another dataset or label count"):
        sample.load_generator(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError):
        sample.load_generator(tmp_path / "missing.pt")
    torch.save({"weights": 1}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a train.py checkpoint"):
        sample.load_generator(tmp_path / "foreign.pt")


def test_checkpoint_model_args_rebuild_the_networks(ckpts, tmp_path):
    """train.py's "model_args" fix the networks' shape; checkpoints without them (older files) are rebuilt
    from their config; a run folder gives its newest checkpoint."""
    ckpt = torch.load(ckpts["vae"], weights_only=True)
    assert ckpt["model_args"]["vae"] and ckpt["model_args"]["ngf"] == 8
    ckpt["config"]["ngf"] = 16  # not what the networks were built with: model_args win
    (tmp_path / "run").mkdir()
    torch.save(ckpt, tmp_path / "run" / "ckpt_00000002.pt")
    torch.save({"format": 1, "config": {}}, tmp_path / "run" / "ckpt_00000001.pt")
    lm = sample.load_generator(tmp_path / "run")
    assert lm.path.endswith("ckpt_00000002.pt") and lm.use_vae and lm.E is not None and not lm.G.training
    del ckpt["model_args"]
    torch.save(ckpt, tmp_path / "old.pt")
    with pytest.raises(ValueError, match="another dataset or label count"):
        sample.load_generator(tmp_path / "old.pt")
    assert sample.load_generator(ckpts["spade"]).model == "spade"  # an older file: rebuilt from its config


def _write_labels(folder, n=2, size=32):
    import data

    folder.mkdir(parents=True, exist_ok=True)
    val = data.SyntheticLandscapes("val", size=size, length=n)
    for i in range(n):
        s = val[i]
        label = Image.fromarray(s["label"].numpy().astype(np.uint8), mode="L")
        label.save(folder / f"{i}.png")
        label.save(folder.parent / f"photo{i}_label.png")  # found beside the photo by the SEAN style reader
        photo = ((s["image"] + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(photo).save(folder.parent / f"photo{i}.png")
    return val


def test_synthesize_all_modes(ckpts, tmp_path):
    import data

    labels = tmp_path / "labels"
    val = _write_labels(labels)
    # a colour-coded copy of the first label map (the synthetic palette)
    colour = data.colorize(val[0]["label"], data.PALETTE).permute(1, 2, 0).numpy()
    Image.fromarray(colour).save(tmp_path / "colour.png")

    def run(model, labels_, out, **kw):
        args = sample.SynthesizeArgs(ckpt=ckpts[model], labels=str(labels_), out=str(tmp_path / out), **kw)
        return sample.synthesize(args, log=lambda *_: None)

    det = run("spade", labels, "a")
    again = run("spade", labels, "b")
    assert [p.name for p in det] == ["0.png", "1.png"]
    assert np.array_equal(np.asarray(Image.open(det[0])), np.asarray(Image.open(again[0])))  # deterministic
    assert np.asarray(Image.open(det[0])).shape == (32, 32, 3)
    col = run("spade", tmp_path / "colour.png", "c")
    assert np.array_equal(np.asarray(Image.open(col[0])), np.asarray(Image.open(det[0])))  # same label map

    vae = run("vae", labels / "0.png", "v", n_samples=3)
    assert [p.name for p in vae] == ["0_sample0.png", "0_sample1.png", "0_sample2.png"]
    run("vae", labels, "vs", style_image=str(tmp_path / "photo1.png"))

    sean = run("sean", labels / "0.png", "s", style_image=str(tmp_path / "photo1.png"),
               region_style=[f"sky={tmp_path / 'photo0.png'}:{tmp_path / 'photo0_label.png'}"])
    assert sean[0].is_file()
    run("sean", labels / "0.png", "s2", n_samples=2, mean_style_images=4)
    with pytest.raises(ValueError, match="needs SEAN"):
        run("vae", labels, "x", region_style=[f"sky={tmp_path / 'photo0.png'}"])
    with pytest.raises(ValueError, match="deterministic"):
        run("spade", labels, "x", n_samples=2)
    with pytest.raises(ValueError, match="unknown class"):
        run("sean", labels, "x", mean_style_images=2, region_style=[f"lava={tmp_path / 'photo0.png'}"])


def test_bad_label_maps(ckpts, tmp_path, capsys):
    import data

    info = data.SyntheticLandscapes("val", size=32, length=1).info
    Image.fromarray(np.zeros((16, 32), np.uint8), mode="L").save(tmp_path / "small.png")
    with pytest.raises(ValueError, match="--resize-labels"):
        sample.read_label_map(tmp_path / "small.png", info, (32, 32))
    assert sample.read_label_map(tmp_path / "small.png", info, (32, 32), resize=True).shape == (32, 32)
    bad = np.zeros((32, 32), np.uint8)
    bad[0, 0] = 42
    Image.fromarray(bad, mode="L").save(tmp_path / "ids.png")
    with pytest.raises(ValueError, match=r"label ids \[42\]"):
        sample.read_label_map(tmp_path / "ids.png", info, (32, 32))
    rgb = np.full((32, 32, 3), 7, np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match=r"rgb.png: colour \(7, 7, 7\) at pixel \(x=0, y=0\) is not in the "):
        sample.read_label_map(tmp_path / "rgb.png", info, (32, 32))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no label maps"):
        sample._list_label_files(tmp_path / "empty")
    # the command line turns these into a one-line error and exit status 2
    code = sample.main(["synthesize", "--ckpt", ckpts["spade"], "--labels", str(tmp_path / "empty"),
                        "--out", str(tmp_path / "o")])
    assert code == 2 and "holds no label maps" in capsys.readouterr().err


def test_export_never_replaces_a_training_checkpoint_and_checks_its_target_first(ckpts, tmp_path, capsys):
    import shutil
    run = tmp_path / "c0"
    run.mkdir()
    ckpt = run / "ckpt_00000002.pt"
    shutil.copy(ckpts["sean"], ckpt)
    other = run / "ckpt_00000001.pt"
    shutil.copy(ckpts["sean"], other)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    for out, says in ((ckpt, "is the checkpoint being exported"), (other, "is a training checkpoint"),
                      (run, "is a folder"), (tmp_path / "missing" / "x.pt", "does not exist")):
        assert sample.main(["export", "--ckpt", str(run if out != other else ckpt), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert says in err and err.count("\n") == 1, err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # nothing replaced, no temp file left
    assert sample.main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "g.pt")]) == 0
    # an earlier export is redone
    assert sample.main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "g.pt")]) == 0


def test_huge_label_maps_and_bad_official_options_are_one_line(ckpts, tmp_path, capsys):
    big = tmp_path / "big.png"
    Image.new("L", (4097, 4097)).save(big)
    assert sample.main(["synthesize", "--ckpt", ckpts["spade"], "--labels", str(big), "--out",
                        str(tmp_path / "o"), "--resize-labels"]) == 2
    assert "at most 16,777,216 pixels" in capsys.readouterr().err
    assert sample.main(["synthesize", "--official", "ade20k", "--ckpt", str(big), "--labels", str(big),
                        "--out", str(tmp_path / "o"), "--official-option", "crop_size=abc"]) == 2
    err = capsys.readouterr().err
    assert "crop_size takes int values, got 'abc'" in err and err.count("\n") == 1


def test_synthesize_flags():
    ps = sample.build_parser()
    ns = ps.parse_args(["synthesize", "--ckpt", "a.pt", "--labels", "l", "--region-style", "sky=a.png",
                        "--region-style", "water=b.png", "--official-option", "crop_size=64",
                        "--resize-labels"])
    assert ns.region_style == ["sky=a.png", "water=b.png"] and ns.official_option == ["crop_size=64"]
    assert ns.resize_labels and ns.n_samples == 1 and not ns.style_image and not ns.official
    for argv in (["synthesize", "--labels", "l"], ["synthesize", "--ckpt", "a", "--labels", "l",
                                                   "--official", "imagenet"], ["export", "--ckpt", "a"]):
        with pytest.raises(SystemExit):
            ps.parse_args(argv)
