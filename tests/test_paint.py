"""paint.py: the /synthesize endpoint (good and bad requests) and the page, driven in headless Chromium.

Tiny SPADE, SPADE+VAE and SEAN checkpoints (32x32, 8 training steps) are made once; the server runs in a
thread on 127.0.0.1. The browser test skips only when no Chromium and ChromeDriver are installed.
"""

import http.client
import io
import json
import shutil
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image

import data
import paint
import train

TINY = ["--crop-size", "32", "--ngf", "8", "--ndf", "8", "--style-dim", "16", "--z-dim", "16",
        "--batch-size", "2", "--synthetic-length", "8", "--no-progress", "--threads", "1", "--bf16", "off",
        # a large learning rate: 8 steps move the weights off their near-zero init, so the pictures show the
        # label map and the style (after 2 steps at 2e-4 every output is the same grey)
        "--max-steps", "8", "--lr-G", "0.005", "--lr-D", "0.005"]
MODELS = {"spade": [], "spade-vae": ["--vae"], "sean": ["--model", "sean"]}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    out = tmp_path_factory.mktemp("paint")
    threads = torch.get_num_threads()
    for name, extra in MODELS.items():
        train.main(TINY + extra + ["--out-dir", str(out), "--name", name])
    args = paint.Args(ckpt=[str(out / n) for n in MODELS], port=0, val_samples=40, mean_style_images=16)
    painter = paint.Painter(args, log=lambda *a: None)
    srv = paint.serve(painter, 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield painter, f"http://127.0.0.1:{srv.server_address[1]}", out
    srv.shutdown()
    srv.server_close()
    torch.set_num_threads(threads)


def png(array) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def post(url: str, body: bytes, query: str = "") -> tuple[int, bytes, dict]:
    req = urllib.request.Request(f"{url}/synthesize?{query}", data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)


def picture(body: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGB")).astype(np.int64)


# ------------------------------------------------------------------------------------------------------------
# The endpoint
# ------------------------------------------------------------------------------------------------------------


def test_info_and_sample_describe_the_models_classes_and_validation_maps(server):
    painter, url, _ = server
    info = json.load(urllib.request.urlopen(f"{url}/info"))
    assert [m["key"] for m in info["models"]] == ["spade", "spade-vae", "sean"]
    assert [m["style"] for m in info["models"]] == ["none", "vae", "sean"]
    assert info["size"] == [32, 32] and info["samples"] == 40
    assert [c["name"] for c in info["classes"]] == list(data.CLASS_NAMES)
    assert info["classes"][0]["colour"] == data.PALETTE[0].tolist()
    s = json.load(urllib.request.urlopen(f"{url}/sample?index=3"))
    assert s["label"] == painter.val[3]["label"].flatten().tolist()
    assert s["image"].startswith("data:image/png;base64,")
    assert sorted(set(s["label"])) == info["sample_classes"][3]


def test_synthesize_answers_a_png_with_its_time_and_ids_or_palette_colours_give_the_same_picture(server):
    painter, url, _ = server
    label = painter.val[0]["label"].numpy()
    for model in MODELS:
        status, body, headers = post(url, png(label), f"model={model}")
        assert status == 200 and headers["Content-Type"] == "image/png", body
        assert picture(body).shape == (32, 32, 3) and float(headers["X-Synthesis-ms"]) > 0
        # the page sends the colour-coded canvas; a script sends ids: one map, one picture
        coloured = png(data.PALETTE[label])
        assert post(url, coloured, f"model={model}")[1] == body, model


def test_styles_change_the_picture_and_each_request_is_repeatable(server):
    painter, url, _ = server
    label = png(painter.val[0]["label"].numpy())
    classes = painter.sample_classes
    j = next(j for j in range(2, 40) if set(classes[0]) <= set(classes[j]))  # image j has all of 0's classes
    got = {q: post(url, label, q) for q in [
        "model=sean&style=1", f"model=sean&style={j}", f"model=sean&style=1&style_b={j}&t=0.5",
        "model=spade-vae", "model=spade-vae&seed=1", "model=spade-vae&seed=2", "model=spade-vae&style=1"]}
    assert all(status == 200 for status, _, _ in got.values()), {q: r[1] for q, r in got.items()}
    pictures = [body for _, body, _ in got.values()]
    assert len(set(pictures)) == len(pictures), "every style choice should give its own picture"
    # SEAN's ST acts region by region: taking every region's code from image j is image j's style
    regions = ",".join(f"{k}:{j}" for k in classes[0])
    mixed = post(url, label, f"model=sean&style=1&region_style={regions}")[1]
    assert mixed == got[f"model=sean&style={j}"][1]
    for q in ["model=sean&style=1", "model=spade-vae&seed=2"]:
        assert post(url, label, q)[1] == got[q][1]  # SEAN's noise is seeded too: painting does not flicker


@pytest.mark.parametrize("query, body, reason", [
    ("", b"GIF89a not a png", "not a PNG"),
    ("", png(np.zeros((16, 16))), "16x16"),
    ("", png(np.full((32, 32), 10)), "label ids [10]"),
    ("", png(np.full((32, 32, 3), 7)), "(7, 7, 7)"),  # not a palette colour
    ("", png(np.zeros((32, 32)))[:50], "cannot read"),
    ("model=pix2pixhd", png(np.zeros((32, 32))), "unknown model 'pix2pixhd'"),
    ("model=sean&style=400", png(np.zeros((32, 32))), "outside 0..39"),
    ("model=sean&style=x", png(np.zeros((32, 32))), "integer"),
    ("model=sean&style_b=1&t=2", png(np.zeros((32, 32))), "t must be in [0, 1]"),
    ("model=sean&region_style=sky", png(np.zeros((32, 32))), "class:index"),
    # every class id is refused at exactly the number of classes (10) and at -1, every index at 40 and -1
    ("model=sean&region_style=10:0", png(np.zeros((32, 32))), "class 10 outside 0..9"),
    ("model=sean&region_style=-1:0", png(np.zeros((32, 32))), "class:index"),
    ("model=sean&region_style=0:40", png(np.zeros((32, 32))), "outside 0..39"),
    ("model=sean&region_style=0:-1", png(np.zeros((32, 32))), "class:index"),
    ("model=sean&style=-1", png(np.zeros((32, 32))), "outside 0..39"),
    ("model=sean&style=1&style_b=40&t=0.5", png(np.zeros((32, 32))), "outside 0..39"),
    ("", png(np.full((32, 32), 9)[None].repeat(1, 0)[0] + np.eye(32, dtype=int)), "label ids [10]"),
    ("", png(np.full((32, 32), 255)), "label ids [255]"),
    ("colour=red", png(np.zeros((32, 32))), "unknown parameter 'colour'"),
])
def test_bad_requests_get_400_and_a_one_line_reason_and_the_server_stays_up(server, query, body, reason):
    painter, url, _ = server
    status, text, headers = post(url, body, query)
    assert status == 400 and headers["Content-Type"].startswith("text/plain")
    assert reason in text.decode() and text.decode().count("\n") == 1, text
    assert post(url, png(painter.val[0]["label"].numpy()))[0] == 200


def test_an_oversized_body_is_refused_unread(server):
    painter, url, _ = server
    conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=10)
    conn.putrequest("POST", "/synthesize")
    conn.putheader("Content-Length", str(paint.MAX_BODY + 1))
    conn.endheaders()  # and no body: the server must answer without waiting for 4 MB
    r = conn.getresponse()
    assert r.status == 400 and "at most 4194304 bytes" in r.read().decode()
    conn.close()
    assert post(url, png(painter.val[0]["label"].numpy()))[0] == 200


def test_without_any_checkpoint_the_error_says_to_train_first(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(paint, "ROOT", tmp_path)
    monkeypatch.setenv("SPADE_SEAN_RUNS", str(tmp_path / "runs"))
    assert paint.main(["--no-browser"]) == 2
    assert "run `python train.py` first" in capsys.readouterr().err


def test_by_default_the_committed_demo_weights_are_loaded(monkeypatch, tmp_path):
    """weights/ also holds the evaluation segmenter: only the demo-*.pt generators are loaded."""
    monkeypatch.setenv("SPADE_SEAN_RUNS", str(tmp_path / "runs"))
    painter = paint.Painter(paint.Args(port=0, val_samples=4, mean_style_images=4), log=lambda *a: None)
    assert set(painter.models) == {"spade", "spade-vae", "sean"}


# ------------------------------------------------------------------------------------------------------------
# The page in a real browser
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not (chromium and driver_path):
        pytest.skip("no headless browser: install Debian's chromium and chromium-driver (.ci/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium  # with both paths given, Selenium Manager downloads nothing
    # no sandbox as root; the network switches keep Chromium from calling out of this closed machine
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-quic", "--window-size=1500,900",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()


def wait_idle(driver, version: int) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 30, poll_frequency=0.05).until(
        lambda d: d.execute_script("return paintState.version > arguments[0] && paintIdle()", version))
    assert driver.execute_script("return paintState.lastError") == ""


def output(driver) -> np.ndarray:
    pixels = driver.execute_script("""
        const img = document.getElementById('out'), c = document.createElement('canvas');
        c.width = img.naturalWidth; c.height = img.naturalHeight;
        const g = c.getContext('2d'); g.drawImage(img, 0, 0);
        return Array.from(g.getImageData(0, 0, c.width, c.height).data);""")
    return np.asarray(pixels).reshape(32, 32, 4)[..., :3]


def test_painting_a_stroke_changes_the_picture_there_and_not_far_away(server, browser):
    from scipy import ndimage
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    painter, url, out = server
    d = browser
    d.get(url + "/")
    wait_idle(d, 0)  # the page starts from validation sample 0
    before, label0 = output(d), np.asarray(d.execute_script("return Array.from(paintState.label)"))
    absent = next(k for k in range(10) if k not in label0)
    d.find_element(By.ID, f"class-{data.CLASS_NAMES[absent]}").click()
    version = d.execute_script("return paintState.version")
    canvas = d.find_element(By.ID, "label")  # 384 px on screen, 12 px per label pixel
    (ActionChains(d).move_to_element_with_offset(canvas, -130, -130).click_and_hold()
     .move_by_offset(30, 0).move_by_offset(30, 0).release().perform())
    wait_idle(d, version)
    after, label1 = output(d), np.asarray(d.execute_script("return Array.from(paintState.label)"))
    stroke = (label1 != label0).reshape(32, 32)
    assert stroke.sum() >= 6 and (label1[stroke.ravel()] == absent).all()
    change = np.abs(after - before).sum(-1)
    far = ndimage.distance_transform_edt(~stroke) > 12
    # SPADE's gamma(m), beta(m) are per pixel: the picture changes under the stroke, far pixels stay
    inside, outside = change[stroke].mean(), change[far].mean()
    assert inside > 5 * max(outside, 0.5), (inside, outside)

    version = d.execute_script("return paintState.version")
    Select(d.find_element(By.ID, "model")).select_by_value("sean")
    wait_idle(d, version)
    assert np.abs(output(d) - after).sum() > 0 and "sean" in d.find_element(By.ID, "timing").text
    # SEAN: pick a region, its style code comes from another validation image
    version = d.execute_script("return paintState.version")
    d.find_element(By.ID, "tool-pick").click()
    ActionChains(d).move_to_element_with_offset(canvas, 100, 150).click().perform()
    wait_idle(d, version)
    assert len(d.execute_script("return paintState.regions")) == 1
    assert d.save_screenshot(str(out / "paint.png"))


@pytest.mark.parametrize("index", [-1, 40])
def test_sample_index_is_refused_outside_the_validation_samples(server, index):
    _, url, _ = server
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{url}/sample?index={index}", timeout=30)
    assert err.value.code == 400 and "outside 0..39" in err.value.read().decode()


@pytest.mark.parametrize("query, reason", [
    ("model=spade-vae&seed=99999999999999999999999999", "seed must be an integer"),
    ("model=spade-vae&seed=-1", "seed must be 0 or more"),
    ("model=sean&region_style=%C2%B2:1", "class:index"),  # '²' passes str.isdigit() but not int()
    ("model=sean&style=%C2%B2", "style must be an integer"),
    ("model=sean&style_b=1&t=nan", "t must be a finite number"),
])
def test_odd_numbers_in_the_query_are_400_not_500(server, query, reason):
    painter, url, _ = server
    status, text, _ = post(url, png(painter.val[0]["label"].numpy()), query)
    assert status == 400 and reason in text.decode(), text


def raw_request(url: str, head: str, body: bytes = b"") -> tuple[int, str]:
    """Send a hand-written request (any header bytes), read the status line and body."""
    import socket
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head.encode("utf-8") + b"\r\n\r\n" + body)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    return status, answer.split(b"\r\n\r\n", 1)[-1].decode(errors="replace")


def test_a_non_ascii_content_length_is_400(server):
    _, url, _ = server
    host = url.removeprefix("http://")
    status, text = raw_request(url, f"POST /synthesize HTTP/1.1\r\nHost: {host}\r\nContent-Length: ²\r\n"
                                    "Connection: close")
    assert status == 400 and "Content-Length" in text


def test_only_the_servers_own_page_may_call_it(server):
    """Another site's page can make the browser send requests to 127.0.0.1 (a cross-site POST, or DNS
    rebinding with its own Host name): the Host and the Origin must be this server's."""
    painter, url, _ = server
    host, port = url.removeprefix("http://"), url.rsplit(":", 1)[1]
    body = png(painter.val[0]["label"].numpy())
    length = f"Content-Length: {len(body)}\r\nConnection: close"
    for head in (f"POST /synthesize HTTP/1.1\r\nHost: evil.example:{port}\r\n{length}",
                 f"POST /synthesize HTTP/1.1\r\nHost: {host}\r\nOrigin: http://evil.example\r\n{length}",
                 "GET /info HTTP/1.1\r\nHost: attacker.test\r\nConnection: close"):
        status, text = raw_request(url, head, body if head.startswith("POST") else b"")
        assert status == 403 and "own page" in text, head
    for own in (host, f"localhost:{port}"):
        status, _ = raw_request(url, f"POST /synthesize HTTP/1.1\r\nHost: {own}\r\nOrigin: http://{own}\r\n"
                                     f"{length}", body)
        assert status == 200


def test_client_aborts_are_quiet_and_silent_clients_time_out(server, monkeypatch, capsys):
    import socket
    import time
    painter, url, _ = server
    monkeypatch.setattr(paint, "SOCKET_TIMEOUT", 0.5)
    srv = paint.serve(painter, 0)
    assert srv.request_queue_size >= 16  # 8 concurrent clients never wait for a retry
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port = srv.server_address[1]
    try:
        for _ in range(3):  # aborted mid-request
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"POST /synthesize HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: 500\r\n\r\nab"
                      % port)
            s.close()
        silent = socket.create_connection(("127.0.0.1", port), timeout=5)
        t0 = time.time()
        assert silent.recv(100) == b""  # the server closed the silent connection after its timeout
        assert time.time() - t0 < 4
        silent.close()
        time.sleep(0.3)
        assert post(f"http://127.0.0.1:{port}", png(painter.val[0]["label"].numpy()))[0] == 200
    finally:
        srv.shutdown()
        srv.server_close()
    err = capsys.readouterr().err
    assert "Traceback" not in err, err


def test_a_port_outside_0_65535_is_refused_before_the_models_load(monkeypatch, capsys):
    monkeypatch.setattr(paint, "Painter", lambda *a, **k: pytest.fail("models loaded before the port check"))
    assert paint.main(["--no-browser", "--port", "99999"]) == 2
    assert "--port 99999 is not a TCP port" in capsys.readouterr().err
