"""Shared test settings: deterministic seeds, the repo root on sys.path, no network."""
import os
import random
import socket
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same seeds, so failures reproduce."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Tests must never reach the network: any outgoing connection other than loopback fails loudly."""
    real_connect = socket.socket.connect

    def guarded(self, address):
        if not isinstance(address, tuple):  # AF_UNIX paths (kernels, torch.distributed) are local
            return real_connect(self, address)
        host = str(address[0])
        if host.startswith("127.") or host in ("localhost", "::1", "0.0.0.0"):
            return real_connect(self, address)
        raise RuntimeError(f"test tried to reach the network: {address!r}")

    monkeypatch.setattr(socket.socket, "connect", guarded)
    yield


# Tiny checkpoints shared by test_evaluate.py and test_sample.py (built once per session)


def _train_ckpt(tmp_path_factory, name, *flags):
    import train

    out = tmp_path_factory.mktemp("runs")
    train.main(["--max-steps", "1", "--crop-size", "32", "--ngf", "8", "--ndf", "8", "--style-dim", "16",
                "--z-dim", "16", "--batch-size", "2", "--synthetic-length", "4", "--out-dir", str(out),
                "--name", name, "--no-progress", "--device", "cpu", "--threads", "1", "--bf16", "off",
                *flags])
    return str(sorted((out / name).glob("ckpt_*.pt"))[-1])


def _hand_ckpt(path, model_args=True, **overrides):
    """A checkpoint dict as train.py writes it, built without training (random networks); model_args=False:
    as older train.py versions wrote it (the networks' shape only in the config)."""
    import data
    import models
    import train

    args = train.Args(**{**dict(preset="quick", crop_size=32, ngf=8, ndf=8, style_dim=16, z_dim=16,
                                param_free="batch", lambda_vgg=0.0), **overrides})
    info = data.SyntheticLandscapes("val", size=args.crop_size, length=1).info
    shape = models.ModelArgs.from_config(asdict(args), info.semantic_nc(args.use_instance), False)
    G, D, E = models.build(shape)
    ckpt = {"format": 1, "config": asdict(args), "G": G.state_dict(), "D": D.state_dict(),
            "E": None if E is None else E.state_dict()}
    torch.save(ckpt | ({"model_args": asdict(shape)} if model_args else {}), path)
    return str(path)


@pytest.fixture(scope="session")
def ckpts(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("ckpts")
    # one checkpoint written by train.py itself, the others built as it builds them (faster)
    return {"spade": _hand_ckpt(root / "spade.pt", model_args=False, model="spade"),
            "vae": _hand_ckpt(root / "vae.pt", model="spade", vae=True),
            "sean": _train_ckpt(tmp_path_factory, "sean", "--model", "sean")}
