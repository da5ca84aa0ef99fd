"""Paint a label map in the browser and watch SPADE and SEAN turn it into a picture.

    python paint.py                                   # the committed demo weights, opens the browser
    python paint.py --ckpt runs/quick-spade runs/quick-sean --port 8000 --no-browser

The page (paint.html) is a label canvas, the dataset's palette and the generated picture. A brush stroke
repaints the picture where it lands: the label map m sets the per-pixel gamma(m), beta(m) of every
normalization layer (SPADE §3). With SEAN, each class region takes its own style code, a row of the style
matrix ST (SEAN §3.2), from any validation image.

The server (http.server, 127.0.0.1 only) has these endpoints, for the page and for scripts alike:

    GET  /                 the page
    GET  /info             JSON: models (key, name, style kind), classes (id, name, [r, g, b]), size [H, W],
                           the number of validation samples and the classes present in each
    GET  /sample?index=i   JSON: validation sample i: its label map (flat row-major list of ids) and its
                           image as a PNG data URL
    POST /synthesize       body: a PNG label map of the model's size, single-channel (pixel = class id) or
                           coloured with the /info palette; answer: the picture as image/png, with the header
                           X-Synthesis-ms (time spent in the networks).
        query parameters, all optional (style ones are ignored by models that take no style):
          model=spade|spade-vae|sean|...   a key of /info's models (default: the first loaded)
          style=i          the style of validation image i (SEAN: its style codes ST, classes absent from
                           image i keep the mean code, as all do without style; SPADE+VAE: the encoder's
                           mean mu of image i)
          seed=n           SPADE+VAE: z ~ N(0, I) drawn from seed n (without style/seed: z = 0, the
                           prior's mean); SEAN: the seed of its per-pixel noise (default 0: repeatable)
          style_b=j, t=x   interpolate the style codes (or z) from `style` (t = 0) to image j's (t = 1)
          region_style=k:i,...   SEAN: class k takes its style code from validation image i (per-region ST)

    curl -s --data-binary @label.png -o out.png 'http://127.0.0.1:8000/synthesize?model=sean&style=3&region_style=0:7'

Bad input (not a PNG, wrong size, ids outside the classes, a body over 4 MB, an unknown model or parameter)
gets HTTP 400 with a one-line plain-text reason; the server carries on.
"""

import argparse
import base64
import io
import json
import math
import os
import re
import sys
import tempfile
import threading
import time
import webbrowser
from dataclasses import dataclass, field
from functools import lru_cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import torch
from PIL import Image

import data
import models
import sample

ROOT = Path(__file__).resolve().parent
PAGE = ROOT / "paint.html"
DIGITS = re.compile(r"[0-9]+")  # ASCII digits only: str.isdigit() also accepts "²", which int() refuses
SOCKET_TIMEOUT = 10.0  # seconds a connection may stay silent
MAX_BODY = 4 * 1024 * 1024  # a 64x64 label PNG is under 2 kB; 4 MB leaves room for 1024x2048 Cityscapes maps
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class Args:
    ckpt: list[str] = field(default_factory=list)
    """checkpoints or run folders, one per model the page can switch between (default: the committed
    weights/demo-*.pt, else the newest checkpoint of each of runs/quick-spade, runs/quick-sean,
    runs/quick-spade-vae)"""
    port: int = 8000
    """port on 127.0.0.1 (0: any free port)"""
    browser: bool = True
    """open the page in the browser (--no-browser: only serve it)"""
    val_samples: int = 200
    """validation samples offered as real label maps and style images"""
    mean_style_images: int = 200
    """SEAN: training images averaged into the default per-class style code"""
    threads: int = 1
    """torch CPU threads (one image at a time gains little from more)"""
    device: str = "cpu"
    """torch device"""


class BadRequest(ValueError):
    """Answered with HTTP 400 and this one-line message."""


class Painter:
    """The loaded generators (one dataset, one size), the validation samples, and synthesis from a request."""

    def __init__(self, args: Args, log=print):
        runs = Path(os.environ.get("SPADE_SEAN_RUNS", ROOT / "runs"))  # the notebooks' override, too
        paths = args.ckpt or sorted((ROOT / "weights").glob("demo-*.pt")) or [
            runs / n for n in ("quick-spade", "quick-spade-vae", "quick-sean")
            if list((runs / n).glob("ckpt_*.pt"))]
        if not paths:
            raise FileNotFoundError("no checkpoint found: run `python train.py` first (runs/quick-spade) "
                                    "or pass --ckpt")
        self.models: dict[str, models.LoadedModel] = {}
        for path in paths:
            lm = sample.load_generator(path, args.device)
            key = base = lm.model + ("-vae" if lm.use_vae else "")
            n = 2
            while key in self.models:  # two checkpoints of one kind: sean, sean-2, ...
                key, n = f"{base}-{n}", n + 1
            self.models[key] = lm
            log(f"[paint] {key}: {lm.name}")
        first = next(iter(self.models.values()))
        for key, lm in self.models.items():  # one canvas and one palette serve every model
            if (lm.dataset, lm.size) != (first.dataset, first.size):
                raise ValueError(f"{key} was trained on {lm.dataset} at {lm.size}, {first.name} on "
                                 f"{first.dataset} at {first.size}: pass checkpoints of one dataset and size")
        self.info, self.size, self.device = first.info, first.size, args.device
        self.val = data.build_split(first.dataset, first.dataroot, "val", first.size,
                                    length=args.val_samples, seed=first.seed)
        self.n_val = min(len(self.val), args.val_samples)
        # SEAN's default code of a class: its mean over training images (as the official demo), not zero
        self.mean_codes = {k: sample.mean_style_codes(lm, args.mean_style_images).to(args.device)
                           for k, lm in self.models.items() if lm.model == "sean"}
        self.lock = threading.Lock()  # one synthesis at a time: the global RNG seeds SEAN's noise
        self.sample = lru_cache(maxsize=None)(self.val.__getitem__)
        self.encode = lru_cache(maxsize=1024)(self._encode)
        # which classes each validation image shows: the page picks a style source for a clicked region
        self.sample_classes = [torch.unique(self.sample(i)["label"]).tolist() for i in range(self.n_val)]

    def info_json(self) -> dict:
        names = self.info.class_names or tuple(str(k) for k in range(self.info.label_nc))
        palette = data.dataset_palette(self.info.name, self.info.label_nc)
        return {"models": [{"key": k, "name": lm.name,
                            "style": "sean" if lm.model == "sean" else "vae" if lm.use_vae else "none"}
                           for k, lm in self.models.items()],
                "classes": [{"id": k, "name": names[k], "colour": palette[k].tolist()}
                            for k in range(self.info.label_nc)],
                "dataset": self.info.name, "size": list(self.size), "samples": self.n_val,
                "sample_classes": self.sample_classes}

    def sample_json(self, index: int) -> dict:
        s = self.sample(self._index(index))
        return {"index": index, "label": s["label"].flatten().tolist(),
                "image": "data:image/png;base64," + base64.b64encode(to_png(s["image"])).decode()}

    def _index(self, i: int) -> int:
        if not 0 <= i < self.n_val:
            raise BadRequest(f"validation index {i} outside 0..{self.n_val - 1}")
        return i

    def _encode(self, key: str, index: int) -> torch.Tensor:
        """The style of validation image `index`: SEAN's ST (1, K, style_dim), SPADE+VAE's mu (1, z_dim)."""
        lm, s = self.models[key], self.sample(self._index(index))
        image = s["image"][None].to(self.device)
        if lm.model != "sean":
            return lm.E(image)[0]
        segmap = lm.segmap(s["label"][None], s["instance"][None] if "instance" in s else None).to(self.device)
        codes = lm.G.encode_style(image, segmap)
        present = segmap[:, :lm.G.num_regions].flatten(2).sum(-1)[..., None] > 0  # regions, not edges
        return torch.where(present, codes, self.mean_codes[key])

    def read_label(self, body: bytes) -> torch.Tensor:
        """PNG bytes -> (H, W) class ids, checked by sample.read_label_map (ids, palette colours)."""
        if not body.startswith(PNG_SIGNATURE):
            raise BadRequest("the request body is not a PNG")
        try:
            width, height = Image.open(io.BytesIO(body)).size  # reads the header only: cheap size check
        except Exception as err:
            raise BadRequest(f"cannot read the PNG ({type(err).__name__})") from err
        if (height, width) != tuple(self.size):
            raise BadRequest(f"label map is {height}x{width} (HxW), the models make "
                             f"{self.size[0]}x{self.size[1]}")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "label.png"
            path.write_bytes(body)
            try:
                return sample.read_label_map(path, self.info, self.size)
            except ValueError as err:
                raise BadRequest(str(err).replace(f"{path}: ", "").splitlines()[0]) from err

    def style_request(self, query: dict[str, str]) -> tuple:
        """The query's model and style choice, checked: (model key, style, style_b, seed, t, regions)."""
        unknown = set(query) - {"model", "style", "seed", "style_b", "t", "region_style"}
        if unknown:
            raise BadRequest(f"unknown parameter {sorted(unknown)[0]!r}")
        key = query.get("model", next(iter(self.models)))
        if key not in self.models:
            raise BadRequest(f"unknown model {key!r} (loaded: {', '.join(self.models)})")
        style, style_b, seed = (_param(query, n) for n in ("style", "style_b", "seed"))
        if seed is not None and seed < 0:
            raise BadRequest(f"seed must be 0 or more, got {seed}")
        t = _param(query, "t", float) or 0.0
        if not 0.0 <= t <= 1.0:
            raise BadRequest(f"t must be in [0, 1], got {t}")
        regions = []  # (class k, validation index i)
        for item in filter(None, query.get("region_style", "").split(",")):
            k, _, i = item.partition(":")
            if not (DIGITS.fullmatch(k) and DIGITS.fullmatch(i)):
                raise BadRequest(f"region_style {item!r}: write class:index, e.g. 0:12")
            if int(k) >= self.info.label_nc:
                raise BadRequest(f"region_style {item!r}: class {k} outside 0..{self.info.label_nc - 1}")
            regions.append((int(k), int(i)))
        return key, style, style_b, seed, t, regions

    @torch.no_grad()
    def synthesize(self, body: bytes, query: dict[str, str]) -> tuple[bytes, float]:
        """A PNG label map and the query's style choice -> (PNG picture, milliseconds in the networks)."""
        key, style, style_b, seed, t, regions = self.style_request(query)
        lm = self.models[key]
        label = self.read_label(body)
        with self.lock:
            start = time.perf_counter()
            torch.manual_seed(seed or 0)
            segmap = lm.segmap(label[None]).to(self.device)
            if lm.model == "sean" or lm.use_vae:  # SEAN's codes ST or SPADE+VAE's z
                if style is not None:
                    code = self.encode(key, style)
                elif lm.model == "sean":
                    code = self.mean_codes[key]
                elif seed is not None:
                    code = torch.randn(1, lm.z_dim, generator=torch.Generator().manual_seed(seed))
                else:
                    code = torch.zeros(1, lm.z_dim)  # the prior's mean
                code = code.to(self.device)
                if style_b is not None:  # SEAN §4: styles interpolate linearly, region by region
                    code = torch.lerp(code, self.encode(key, style_b), t)
            if lm.model == "sean":
                code = code.clone()
                for k, i in regions:  # per-region transfer: one row of ST from another image
                    if not (self.sample(self._index(i))["label"] == k).any():
                        raise BadRequest(f"class {k} does not occur in validation image {i}")
                    code[:, k] = self.encode(key, i)[:, k]
                fake = lm.G(segmap, style_codes=code)
            elif lm.use_vae:
                fake = lm.G(segmap, z=code)
            else:
                fake = lm.generate(segmap)
            ms = 1000 * (time.perf_counter() - start)
        return to_png(fake[0]), ms


def to_png(image: torch.Tensor) -> bytes:
    """(3, H, W) in [-1, 1] -> PNG bytes, quantized as data.quantize_png (what a saved file holds)."""
    pixels = (data.quantize_png(image.cpu()) * 255).round().byte().permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buf, "PNG", compress_level=1)  # speed over size
    return buf.getvalue()


def _param(query: dict, name: str, kind=int):
    """query[name] as an int in [-2^63, 2^63) (what a torch seed takes) or a finite float; None if absent."""
    if name not in query:
        return None
    text = query[name]
    try:
        if kind is int and not re.fullmatch(r"-?[0-9]{1,19}", text):  # ASCII digits only: int("²") fails
            raise ValueError
        value = kind(text)
        if (kind is int and not -2**63 <= value < 2**63) or (kind is float and not math.isfinite(value)):
            raise ValueError
        return value
    except ValueError:
        what = "an integer (at most 19 digits)" if kind is int else "a finite number"
        raise BadRequest(f"{name} must be {what}, got {text[:40]!r}") from None


class Handler(BaseHTTPRequestHandler):
    """One request: the page, /info, /sample or POST /synthesize, for this server's own page only."""

    def setup(self):
        self.timeout = SOCKET_TIMEOUT  # a client that stops sending frees its thread
        super().setup()

    def log_message(self, fmt, *args):  # quiet: the page sends a request per brush stroke
        pass

    def handle(self):
        try:
            super().handle()
        except (ConnectionError, TimeoutError):  # the client went away (closed the tab, timed out)
            self.close_connection = True

    def own_address(self) -> bool:
        """Only this server's own address: no other site's page (DNS rebinding, a cross-site POST)."""
        port = self.server.server_address[1]
        own = {f"127.0.0.1:{port}", f"localhost:{port}"}
        origin = self.headers.get("Origin")
        return self.headers.get("Host", "") in own and (origin is None or origin in
                                                         {f"http://{h}" for h in own})

    def send(self, status: int, body: bytes, ctype: str, headers: dict | None = None):
        self.send_response(status)
        base = {"Content-Type": ctype, "Content-Length": str(len(body)), "Cache-Control": "no-store"}
        for k, v in (base | (headers or {})).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def fail(self, status: int, reason: str):
        self.send(status, (reason + "\n").encode(), "text/plain; charset=utf-8")

    def route(self):
        method, url, painter = self.command, urlparse(self.path), self.server.painter
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        try:
            if not self.own_address():
                self.fail(HTTPStatus.FORBIDDEN, "requests must come from this server's own page "
                          "(Host and Origin 127.0.0.1 or localhost on this port)")
            elif method == "GET" and url.path in ("/", "/paint.html"):
                self.send(200, PAGE.read_bytes(), "text/html; charset=utf-8")
            elif method == "GET" and url.path == "/info":
                self.send(200, json.dumps(painter.info_json()).encode(), "application/json")
            elif method == "GET" and url.path == "/sample":
                body = json.dumps(painter.sample_json(_param(query, "index") or 0)).encode()
                self.send(200, body, "application/json")
            elif method == "POST" and url.path == "/synthesize":
                length = self.headers.get("Content-Length", "")
                length = int(length) if DIGITS.fullmatch(length) else -1
                if length < 0 or length > MAX_BODY:
                    self.close_connection = True  # the unread body must not be parsed as a request
                    raise BadRequest(f"the body must be a PNG of at most {MAX_BODY} bytes with a "
                                     "Content-Length header")
                png, ms = painter.synthesize(self.rfile.read(length), query)
                self.send(200, png, "image/png", {"X-Synthesis-ms": f"{ms:.1f}",
                                                  "Access-Control-Expose-Headers": "X-Synthesis-ms"})
            else:
                self.fail(HTTPStatus.NOT_FOUND, f"no {method} {url.path}")
        except BadRequest as err:
            self.fail(HTTPStatus.BAD_REQUEST, str(err))
        except Exception as err:  # a bug, not bad input: say so in one line and keep serving
            self.fail(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(err).__name__}: {err}".splitlines()[0])

    do_GET = do_POST = route

class Server(ThreadingHTTPServer):
    """A thread per request; `painter` is what the handlers draw with."""

    daemon_threads = True
    request_queue_size = 64  # listen backlog: concurrent clients queue, none waits for a retry
    painter: Painter

    def handle_error(self, request, client_address):  # one quiet line, not a traceback per abort
        err = sys.exc_info()[1]
        if not isinstance(err, (ConnectionError, TimeoutError)):
            print(f"[paint] request from {client_address[0]} failed: {type(err).__name__}: {err}",
                  file=sys.stderr)


def serve(painter: Painter, port: int) -> ThreadingHTTPServer:
    """The server, on 127.0.0.1 only: a demo, not a service to expose."""
    server = Server(("127.0.0.1", port), Handler)
    server.painter = painter
    return server


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sample.add_dataclass_args(p, Args)
    args = Args(**vars(p.parse_args(argv)))
    if not 0 <= args.port <= 65535:  # checked before the models load
        print(f"error: --port {args.port} is not a TCP port (0..65535; 0 picks a free one)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    try:
        painter = Painter(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        server = serve(painter, args.port)
    except OSError as err:
        print(f"error: cannot listen on 127.0.0.1:{args.port} ({err.strerror}): pass another --port",
              file=sys.stderr)
        return 2
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    print(f"[paint] serving {url} (Ctrl-C stops)")
    if args.browser:
        webbrowser.open(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    server.server_close()
    return 0


if __name__ == "__main__":
    sample.tune_allocator()
    raise SystemExit(main())
