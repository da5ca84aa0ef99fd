"""evaluate.py: metric formulas against closed forms and established libraries, the Inception network's
structure, the FID fallback's naming, bad input, and the metrics / figures commands end to end (synthesis and
export: test_sample.py)."""

import json
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from conftest import _hand_ckpt
from PIL import Image

import data
import evaluate as ev
import sample

# ------------------------------------------------------------------------------------------------------------
# Frechet distance (equation 17)


def _fd_scipy(f1: np.ndarray, f2: np.ndarray) -> float:
    """The textbook formula with scipy's general matrix square root (pytorch-fid's way)."""
    m1, m2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_frechet_closed_form_gaussians():
    torch.manual_seed(0)
    d = 6
    mu1, mu2 = torch.randn(d, dtype=torch.float64), torch.randn(d, dtype=torch.float64)
    a, b = torch.rand(d, dtype=torch.float64) + 0.1, torch.rand(d, dtype=torch.float64) + 0.1
    # diagonal covariances: ||mu1 - mu2||^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2
    expected = (mu1 - mu2).square().sum() + (a.sqrt() - b.sqrt()).square().sum()
    fd = ev.frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b))
    assert fd == pytest.approx(float(expected), rel=1e-10)
    # commuting covariances (shared eigenvectors, rotated): the same closed form
    q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64))
    s1, s2 = q @ torch.diag(a) @ q.T, q @ torch.diag(b) @ q.T
    assert ev.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(float(expected), rel=1e-8)
    # equal covariances: only the means count; identical Gaussians: 0
    assert ev.frechet_distance(mu1, s1, mu2, s1) == pytest.approx(float((mu1 - mu2).square().sum()), rel=1e-8)
    assert abs(ev.frechet_distance(mu1, s1, mu1, s1)) < 1e-9


def test_frechet_matches_scipy_sqrtm_and_torchmetrics():
    rng = np.random.default_rng(0)
    f1 = rng.normal(size=(200, 16))
    f2 = rng.normal(size=(150, 16)) @ rng.normal(size=(16, 16)) * 0.5 + 0.3
    ours = ev.frechet_distance_features(torch.from_numpy(f1), torch.from_numpy(f2))
    assert ours == pytest.approx(_fd_scipy(f1, f2), rel=1e-7)
    fid_mod = pytest.importorskip("torchmetrics.image.fid")
    m1, s1 = ev.feature_statistics(torch.from_numpy(f1))
    m2, s2 = ev.feature_statistics(torch.from_numpy(f2))
    assert ours == pytest.approx(float(fid_mod._compute_fid(m1, s1, m2, s2)), rel=1e-6)


def test_frechet_singular_covariances_stay_real():
    # fewer images than dimensions (as 2048-d Inception features on a few hundred images): rank-deficient
    rng = np.random.default_rng(1)
    f1, f2 = rng.normal(size=(10, 40)), rng.normal(size=(12, 40)) + 0.1
    ours = ev.frechet_distance_features(torch.from_numpy(f1), torch.from_numpy(f2))
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    tr_sqrt = np.sqrt(np.linalg.eigvals(s1 @ s2).astype(complex)).real.sum()
    expected = ((f1.mean(0) - f2.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert np.isfinite(ours) and ours == pytest.approx(float(expected), rel=1e-6)
    # the nuclear-norm route (fewer images than dimensions) equals the covariance route
    via_cov = ev.frechet_distance(*ev.feature_statistics(torch.from_numpy(f1)),
                                  *ev.feature_statistics(torch.from_numpy(f2)))
    assert ours == pytest.approx(via_cov, rel=1e-6)  # the rank-deficient eigh route is the less exact
    with pytest.raises(ValueError, match="at least 2"):
        ev.feature_statistics(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="at least 2"):
        ev.frechet_distance_features(torch.zeros(1, 3), torch.zeros(5, 3))


# ------------------------------------------------------------------------------------------------------------
# Reconstruction metrics (equation 19)


def test_ssim_psnr_rmse_against_torchmetrics():
    tm = pytest.importorskip("torchmetrics.functional.image")
    torch.manual_seed(0)
    x = torch.rand(3, 3, 40, 48)
    y = (x + 0.15 * torch.randn_like(x)).clamp(0, 1)
    y[2] = torch.rand(3, 40, 48)  # one unrelated pair
    # torchmetrics averages its SSIM map over a reflect-padded image; the original definition (Wang et al.'s
    # code, skimage) scores only where the 11x11 window fits: crop torchmetrics' full map by 5 pixels
    _, full_map = tm.structural_similarity_index_measure(y.double(), x.double(), data_range=1.0,
                                                         reduction="none", return_full_image=True)
    ref_ssim = full_map[..., 5:-5, 5:-5].mean(dim=(1, 2, 3))
    torch.testing.assert_close(ev.ssim(y, x), ref_ssim, atol=1e-10, rtol=1e-10)
    padded = tm.structural_similarity_index_measure(y, x, data_range=1.0, reduction="none")
    assert (ev.ssim(y, x).float() - padded).abs().max() < 0.05  # and the border makes only a small difference
    ref_psnr = tm.peak_signal_noise_ratio(y, x, data_range=1.0, reduction="none", dim=(1, 2, 3))
    torch.testing.assert_close(ev.psnr(y, x).float(), ref_psnr.float(), atol=1e-4, rtol=1e-5)
    mse = (x - y).square().flatten(1).mean(1)
    torch.testing.assert_close(ev.rmse(y, x).float(), mse.sqrt(), atol=1e-6, rtol=1e-6)
    assert torch.allclose(ev.ssim(x, x), torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="at least 11x11"):
        ev.ssim(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))


def test_ms_ssim_diversity_small_images_and_pairs():
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure as ms_ssim

    torch.manual_seed(0)
    same = torch.rand(1, 3, 64, 64).repeat(3, 1, 1, 1)
    assert ev.mean_pairwise_ms_ssim(same) == pytest.approx(1.0, abs=1e-6)  # identical samples: no diversity
    samples = torch.rand(3, 3, 64, 64)
    # the mean over the 3 pairs of the 3-scale MS-SSIM (5 scales need images above 160 pixels)
    betas = tuple(b / sum(ev.MS_SSIM_BETAS[:3]) for b in ev.MS_SSIM_BETAS[:3])
    pairs = [float(ms_ssim(samples[i:i + 1].double(), samples[j:j + 1].double(), data_range=1.0, betas=betas))
             for i, j in ((0, 1), (0, 2), (1, 2))]
    assert ev.mean_pairwise_ms_ssim(samples) == pytest.approx(np.mean(pairs), rel=1e-6)
    assert ev.mean_pairwise_ms_ssim(torch.rand(2, 3, 256, 256)) < 0.5  # full 5 scales run at 256


def test_lpips_needs_the_real_alexnet_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    notes = []
    assert ev.load_lpips(log=notes.append) is None
    assert ev.LPIPS_BACKBONE in notes[0] and str(tmp_path / "hub" / "checkpoints") in notes[0]
    # a weight file with torchvision's AlexNet keys (made here: the real one cannot be downloaded) loads
    import torchvision
    hub = tmp_path / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save(torchvision.models.alexnet().state_dict(), hub / ev.LPIPS_BACKBONE)
    lpips = ev.load_lpips(log=notes.append)
    x = torch.rand(2, 3, 64, 64)
    assert ev.mean_pairwise_lpips(x[:1].repeat(2, 1, 1, 1), lpips) == pytest.approx(0.0, abs=1e-6)
    assert ev.mean_pairwise_lpips(x, lpips) > 0


def test_quantize_png_and_diversity():
    x = torch.tensor([-1.0, -0.5, 0.0, 0.999, 1.0, 3.0])
    q = data.quantize_png(x)
    assert torch.equal(q * 255, torch.round(q * 255))  # exactly uint8 levels
    assert q[0] == 0 and q[-1] == 1 and q[-2] == 1
    same = torch.zeros(3, 3, 4, 4)
    assert ev.mean_pairwise_l1(same) == 0
    two = torch.stack([torch.zeros(3, 4, 4), torch.ones(3, 4, 4)])
    assert ev.mean_pairwise_l1(two) == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------------------------
# mIoU and accuracy (equation 18)


def test_miou_accuracy_hand_made():
    # 3 classes, don't-care = 3 (never counted); class 2 absent from both prediction and ground truth
    target = torch.tensor([0, 0, 0, 1, 1, 3, 3])
    pred = torch.tensor([0, 0, 1, 1, 0, 2, 1])
    conf = ev.confusion_matrix(pred, target, num_classes=3, ignore_index=3)
    assert conf.tolist() == [[2, 1, 0], [1, 1, 0], [0, 0, 0]]
    m = ev.miou_and_accuracy(conf)
    # IoU_0 = 2 / (2 + 1 + 1), IoU_1 = 1 / (1 + 1 + 1), class 2: 0/0 -> left out of the mean
    assert m["miou"] == pytest.approx((2 / 4 + 1 / 3) / 2)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["classes_counted"] == 2 and np.isnan(m["iou_per_class"][2])


def test_miou_class_predicted_but_absent_counts_as_zero():
    conf = torch.tensor([[5, 0, 1], [0, 4, 0], [0, 0, 0]])  # class 2 predicted once, never in ground truth
    m = ev.miou_and_accuracy(conf)
    assert m["iou_per_class"][2] == 0
    assert m["miou"] == pytest.approx((5 / 6 + 1 + 0) / 3)
    assert m["accuracy"] == pytest.approx(9 / 10)


def test_confusion_matrix_rejects_unknown_ids():
    with pytest.raises(ValueError, match="ground-truth ids"):
        ev.confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 7]), num_classes=3, ignore_index=3)


# ------------------------------------------------------------------------------------------------------------
# Inception-v3 (FID features)


def _fid_inception_state(g: torch.Generator) -> dict:
    """Random values under the keys of pytorch-fid's own network (its FID blocks subclass torchvision's, so
    the torchvision Inception3 it builds them on has exactly the weight file's names and shapes)."""
    from pytorch_fid.inception import _inception_v3

    state = {}
    for key, value in _inception_v3(num_classes=1008, aux_logits=False, weights=None).state_dict().items():
        if key.endswith("num_batches_tracked"):
            if key.startswith("Conv2d_1a_3x3."):  # files saved by newer PyTorch versions store the counter
                state[key] = torch.tensor(0)
        elif key.endswith("running_var"):
            state[key] = torch.rand(value.shape, generator=g) + 0.5
        else:
            state[key] = torch.randn(value.shape, generator=g) * (0.1 if value.dim() > 1 else 0.3)
    return state


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    """A random weight file with the real file's keys (the real one cannot be downloaded in the tests)."""
    path = tmp_path_factory.mktemp("inception") / "random_inception.pth"
    torch.save(_fid_inception_state(torch.Generator().manual_seed(0)), path)
    return path


def test_inception_loads_a_weight_file_and_gives_2048_features(inception_file, tmp_path):
    import pytorch_fid.inception

    net, note = ev.load_fid_inception(inception_file)
    assert "not pytorch-fid's release" in note  # a random file is flagged as non-standard
    assert not net.training and isinstance(net, pytorch_fid.inception.InceptionV3)
    # the file's values are the ones in use (not pytorch-fid's download, not random initialisation)
    state = torch.load(inception_file, weights_only=True)
    torch.testing.assert_close(net.blocks[0][0].conv.weight, state["Conv2d_1a_3x3.conv.weight"])
    torch.testing.assert_close(net.blocks[3][2].branch_pool.conv.weight,
                               state["Mixed_7c.branch_pool.conv.weight"])
    feats = ev.FeatureExtractor(None, str(inception_file), False, "cpu", log=lambda *_: None)(
        torch.rand(2, 3, 32, 32))
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all()
    # a file with missing keys, or other shapes, is refused with the reason
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3)}, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match="not an FID Inception-v3 weight file: .*Missing key"):
        ev.load_fid_inception(tmp_path / "broken.pth")
    state["fc.weight"] = torch.zeros(1000, 2048)
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(ValueError, match="Inception-v3 weight file: .*size mismatch for fc.weight"):
        ev.load_fid_inception(tmp_path / "shape.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a loadable weight file"):
        ev.load_fid_inception(tmp_path / "junk.pth")


def test_inception_weights_lookup(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ev.find_inception_weights(tmp_path / "nope.pth")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    assert ev.find_inception_weights(None, download=False) == (None, "download disabled")
    cached = tmp_path / "hub" / "checkpoints" / ev.FID_WEIGHTS_NAME
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    assert ev.find_inception_weights(None, download=False) == (cached, "")


# ------------------------------------------------------------------------------------------------------------
# Segmenter


def test_segmenter_cache_and_torchscript(tmp_path):
    import data

    train = data.SyntheticLandscapes("train", size=32, length=8)
    cfg = ev.SegmenterConfig(steps=2, batch_size=4, width=8)
    logs = []
    net = ev.get_segmenter("synthetic", (32, 32), train.info, lambda: train, cfg, tmp_path, log=logs.append)
    again = ev.get_segmenter("synthetic", (32, 32), train.info, lambda: pytest.fail("retrained"), cfg,
                             tmp_path, log=logs.append)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(net(x), again(x))
        assert net(x).shape == (2, train.info.label_nc, 32, 32)
    assert any("loaded" in line for line in logs)
    # the same network exported as TorchScript, used through --segmenter
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(net).save(str(tmp_path / "seg.pt"))
    scripted = ev.TorchScriptSegmenter(tmp_path / "seg.pt", train.info.label_nc)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x))
        torch.testing.assert_close(scripted.features(x), net.features(x))
    with pytest.raises(ValueError, match="must return"):
        with torch.no_grad():
            ev.TorchScriptSegmenter(tmp_path / "seg.pt", 50)(x)


# ------------------------------------------------------------------------------------------------------------
# End to end: tiny checkpoints


def _metrics_args(tmp_path, ckpt, **kw):
    base = dict(ckpt=ckpt, n_eval=8, batch_size=4, n_samples=2, n_diversity=2, n_transfer=2, seg_steps=2,
                cache_dir=str(tmp_path / "seg"), download=False, out=str(tmp_path / "out"))
    return ev.MetricsArgs(**{**base, **kw})


def test_metrics_table_and_fallback_never_says_fid(ckpts, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty_hub"))  # no Inception weights
    # the command line: several checkpoints in one call give one table
    code = ev.main(["metrics", "--ckpt", ckpts["spade"], ckpts["vae"], ckpts["sean"], "--n-eval", "8",
                    "--batch-size", "4", "--n-samples", "2", "--n-diversity", "2", "--n-transfer", "2",
                    "--seg-steps", "2", "--cache-dir", str(tmp_path / "seg"), "--no-download",
                    "--out", str(tmp_path / "out")])
    assert code == 0
    result = json.loads((tmp_path / "out" / "metrics.json").read_text())
    rows = {r["model"] + ("+vae" if r["vae"] else ""): r for r in result["rows"]}
    assert set(rows) == {"spade", "spade+vae", "sean"}
    for r in rows.values():
        assert 0 <= r["miou"] <= 1 and 0 <= r["accuracy"] <= 1 and np.isfinite(r["frechet"])
    # reconstruction only for models with a style input, diversity only with a latent, transfer only SEAN
    assert rows["spade"]["psnr"] is None and rows["spade"]["diversity"] is None
    assert rows["spade+vae"]["psnr"] is not None and rows["spade+vae"]["diversity"] > 0
    assert 0 < rows["spade+vae"]["diversity_ms_ssim"] <= 1 and rows["spade+vae"]["diversity_lpips"] is None
    assert rows["spade"]["diversity_ms_ssim"] is None
    assert rows["spade+vae"]["transfer_to_B"] is None
    assert rows["sean"]["ssim"] is not None and rows["sean"]["transfer_success"] is not None
    assert rows["sean"]["transfer_gt_rmse"] is not None and rows["sean"]["transfer_cases"] > 0
    md = (tmp_path / "out" / "metrics.md").read_text()
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(table) == 5 and table[1].startswith("| ground truth")  # header, ground truth, 3 models
    assert ev.FALLBACK_NAME in md and saved["protocol"]["frechet_name"] == ev.FALLBACK_NAME
    printed = capsys.readouterr()
    for text in (md, json.dumps(saved), printed.out, printed.err):
        assert "FID" not in text


def test_over_seeds_groups_runs_that_differ_only_in_the_seed():
    from types import SimpleNamespace

    def run(seed, lr=2e-4, model="spade", name="ckpt_00001000.pt"):
        config = dict(model=model, vae=False, lr_G=lr, seed=seed, name=f"r{seed}", threads=1, out_dir="x")
        return SimpleNamespace(config=config, path=f"runs/r{seed}/{name}", model=model, use_vae=False,
                               seed=seed)

    loaded = [run(0), run(1), run(2), run(0, lr=1e-4), run(0, model="sean")]
    rows = [{"name": "a", "miou": m, "psnr": p} for m, p in
            [(0.40, None), (0.50, None), (0.45, None), (0.9, None), (0.3, 14.0)]]
    groups = ev.over_seeds(loaded, rows)
    assert [g["n_seeds"] for g in groups] == [3, 1, 1]  # another learning rate or model is another group
    assert groups[0]["miou"] == pytest.approx(0.45)
    assert groups[0]["miou_std"] == pytest.approx(np.std([0.40, 0.50, 0.45], ddof=1))
    assert "psnr" not in groups[0] and groups[2]["psnr"] == 14.0 and groups[2]["psnr_std"] == 0.0
    assert "seeds 0, 1, 2" in groups[0]["name"]
    # the labels say what differs between the groups: here the learning rate (the model is in the name)
    assert groups[0]["name"] == "spade (ckpt_00001000.pt, --lr-G 0.0002, seeds 0, 1, 2)"
    assert groups[1]["name"] == "spade (ckpt_00001000.pt, --lr-G 0.0001, seeds 0)"
    bf16 = [run(s) for s in (0, 1)] + [run(s) for s in (0, 1)]
    for lm, mode in zip(bf16, ["on", "on", "off", "off"], strict=True):
        lm.config["bf16"] = mode
    names = [g["name"] for g in ev.over_seeds(bf16, [{"miou": 0.5}] * 4)]
    assert names == ["spade (ckpt_00001000.pt, --bf16 on, seeds 0, 1)",
                     "spade (ckpt_00001000.pt, --bf16 off, seeds 0, 1)"]
    md = ev.markdown_table({"seg": {"miou": 0.7, "accuracy": 0.9}}, groups[:1], "FSD", [])
    assert "| 45.0 ± 5.0 |" in md and "| n/a |" in md  # mIoU in %, PSNR absent


SHIPPED_SEGMENTER_SCORE = ("79.8", "92.3")  # mIoU, accuracy (%) on the first 100 real validation images


def test_committed_segmenter_is_used_without_training(tmp_path):
    """weights/ holds the synthetic 64x64 segmenter: no training, and the same scores on every machine."""
    import data

    val = data.SyntheticLandscapes("val", size=64, length=100)
    logs = []
    net = ev.get_segmenter("synthetic", (64, 64), val.info, lambda: pytest.fail("trained"),
                           ev.SegmenterConfig(), tmp_path, log=logs.append)
    assert logs == ["[segmenter] loaded weights/synthetic_64x64_unet-1d5779a7.pt"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        score = ev.evaluate_real(val, val.info, 100, net, None, ev.MetricsArgs(ckpt=[]))["seg"]
    finally:
        torch.set_num_threads(threads)
    assert (f"{100 * score['miou']:.1f}", f"{100 * score['accuracy']:.1f}") == SHIPPED_SEGMENTER_SCORE


def test_metrics_with_inception_weights_and_torchscript_segmenter(ckpts, inception_file, tmp_path):
    import warnings

    net = ev.SegUNet(10, 8).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(net).save(str(tmp_path / "seg.pt"))
    result = ev.run_metrics(_metrics_args(tmp_path, [ckpts["spade"]], n_eval=4, out=None,
                                          inception_weights=str(inception_file),
                                          segmenter=str(tmp_path / "seg.pt"), trust_segmenter=True),
                             log=lambda *_: None)
    assert result["protocol"]["frechet_name"] == "FID"
    assert "| FID ↓ |" in result["markdown"]
    assert "TorchScript" in result["protocol"]["segmenter"]


def test_command_line_flags():
    p = ev.build_parser()
    ns = p.parse_args(["metrics", "--ckpt", "a.pt", "b.pt", "--ckpt", "c.pt", "--no-download",
                       "--n-eval", "3"])
    assert ns.ckpt == ["a.pt", "b.pt", "c.pt"] and not ns.download and ns.n_eval == 3 and not ns.dataset
    assert not ev.MetricsArgs(ckpt=[], download=False).download and ev.MetricsArgs(ckpt=[]).download
    with pytest.raises(SystemExit):
        p.parse_args(["metrics"])


def test_the_moved_subcommands_say_where_they_went(capsys):
    for command in ("synthesize", "export"):
        assert ev.main([command, "--ckpt", "a.pt"]) == 2
        err = capsys.readouterr().err
        assert f"python sample.py {command}" in err and err.count("\n") == 1, err


def test_checkpoints_that_cannot_share_a_table(ckpts, tmp_path):
    other = _hand_ckpt(tmp_path / "spade48.pt", model="spade", crop_size=48)
    with pytest.raises(ValueError, match="cannot share a table"):
        ev.run_metrics(_metrics_args(tmp_path, [ckpts["spade"], other]), log=lambda *_: None)
    with pytest.raises(ValueError, match="trained on 'synthetic'"):
        ev.run_metrics(_metrics_args(tmp_path, [ckpts["spade"]], dataset="ade20k"), log=lambda *_: None)


# ------------------------------------------------------------------------------------------------------------
# Synthesis command


def test_figures_comparison_and_transfer(ckpts, tmp_path):
    """The README figures: one column per checkpoint (+ label and real), SEAN's transfer grid and SPADE+VAE's
    samples; a checkpoint of another model is refused for the last two."""
    from PIL import Image

    comp = ev.comparison_figure([ckpts["spade"], ckpts["vae"], ckpts["sean"]], tmp_path / "c.png", n=2)
    trans = ev.transfer_figure(ckpts["sean"], tmp_path / "t.png", n=1, classes=("sky", "grass"))
    samples = ev.samples_figure(ckpts["vae"], tmp_path / "s.png", n=1, n_samples=3)
    for path in (comp, trans, samples):
        w, h = Image.open(path).size
        assert w > h > 0
    with pytest.raises(ValueError, match="samples need SPADE\\+VAE"):
        ev.samples_figure(ckpts["sean"], tmp_path / "x.png", n=1)
    assert Image.open(comp).size[0] > Image.open(trans).size[0] * 0.5
    with pytest.raises(ValueError, match="needs SEAN"):
        ev.transfer_figure(ckpts["spade"], tmp_path / "x.png", n=1)
    assert ev.main(["figures", "--ckpt", ckpts["spade"], "--out", str(tmp_path / "cli"), "--n", "1"]) == 0
    assert (tmp_path / "cli" / "comparison.png").is_file()
    assert ev.main(["figures", "--ckpt", ckpts["spade"], "--out", str(tmp_path / "cli"), "--n", "1", "--name",
                    "ablation.png"]) == 0
    assert (tmp_path / "cli" / "ablation.png").is_file()


class _Payload:
    """Unpickling this object creates a file: proof that loading ran code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path(self.marker).touch, ())


def test_segmenter_files_run_no_code_unless_trusted(tmp_path):
    """--segmenter: U-Net weights load weights-only; a pickle of objects or a program archive (TorchScript,
    torch.export .pt2) is refused with one line naming --trust-segmenter, and nothing in it runs."""
    import zipfile
    marker = tmp_path / "code-ran"
    pickled = tmp_path / "seg.pt"
    torch.save({"state_dict": _Payload(marker), "label_nc": 10, "config": {"width": 4}}, pickled)
    archive = tmp_path / "seg.pt2"
    with zipfile.ZipFile(archive, "w") as z:  # the layout torch.export.load reads, with a pickled payload
        z.writestr("seg/archive_format", "pt2")
        z.writestr("seg/data/sample_inputs/model.pt", pickle.dumps(_Payload(marker)))
        z.writestr("seg/models/model.json", "{}")
    scripted = tmp_path / "scripted.pt"  # TorchScript: torch.load(weights_only=True) would run it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(ev.SegUNet(10, 4)).save(str(scripted))
    assert ev.is_program_archive(scripted) and ev.is_program_archive(archive)
    text = tmp_path / "seg.txt"
    text.write_text("not a segmenter\n")
    for path in (pickled, archive, scripted, text):
        with pytest.raises(ValueError, match="--trust-segmenter") as err:
            ev.user_segmenter(str(path), 10)
        assert "\n" not in str(err.value)
        assert not marker.exists(), path
    # a trusted non-program file: still one line, no traceback
    with pytest.raises(ValueError, match="not a loadable TorchScript"):
        ev.user_segmenter(str(text), 10, trust=True)
    # the safe kind: U-Net weights, checked against the dataset's classes
    net = ev.SegUNet(10, 4)
    torch.save({"state_dict": net.state_dict(), "label_nc": 10, "config": {"width": 4}}, tmp_path / "unet.pt")
    loaded, desc = ev.user_segmenter(str(tmp_path / "unet.pt"), 10)
    assert "U-Net weights" in desc and torch.equal(loaded.head.weight, net.head.weight)
    with pytest.raises(ValueError, match="a U-Net of 10 classes"):
        ev.user_segmenter(str(tmp_path / "unet.pt"), 12)


def test_figures_and_synthesize_check_everything_before_writing(ckpts, tmp_path, capsys):
    out = tmp_path / "figs"
    for argv, says in (
            (["figures", "--ckpt", ckpts["spade"], ckpts["sean"], "--titles", "only one"], "2 checkpoints"),
            (["figures", "--ckpt", ckpts["spade"], "--sean", ckpts["spade"]], "--sean needs SEAN"),
            (["figures", "--ckpt", ckpts["spade"], "--vae", ckpts["sean"]], "--vae needs SPADE+VAE"),
            (["figures", "--ckpt", ckpts["spade"], "--name", "../up.png"], "a file name ending in .png"),
            (["figures", "--ckpt", ckpts["spade"], "--name", "ablation.jpg"], "a file name ending in .png"),
            (["figures", "--ckpt", ckpts["spade"], "--sean", ckpts["sean"],
              "--name", "sean_region_transfer.png"], "not the name of another figure")):
        assert ev.main([*argv, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert says in err and err.count("\n") == 1, err
        assert not out.exists()  # comparison.png was not written before the error
    (tmp_path / "labels").mkdir()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "labels" / "a.png")
    (tmp_path / "taken.png").write_bytes(b"mine")
    assert sample.main(["synthesize", "--ckpt", ckpts["spade"], "--labels", str(tmp_path / "labels"), "--out",
                        str(tmp_path / "taken.png")]) == 2
    assert "is a file" in capsys.readouterr().err and (tmp_path / "taken.png").read_bytes() == b"mine"


