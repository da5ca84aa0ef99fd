"""Shared test settings: deterministic seeds, the repo root on sys.path, no network."""
import os
import random
import socket
import sys
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
