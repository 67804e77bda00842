"""`i2dl app` end to end: a live server on 127.0.0.1 over a runs folder made in the fixtures (a digits net trained for
a few seconds on real MNIST, a CartPole agent from `i2dl rl train`, and keypoints / segmentation / autoencoder
checkpoints built in Python), called through gradio_client like any API user, and driven in a real headless
Chromium (Playwright + Debian's chromium) like a person. Also: every bad input gets its message and the server goes
on; nothing outside the runs folder is served; the page asks nothing of any other host."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, SHARED_DATA, run_main
from PIL import Image

gradio_client = pytest.importorskip("gradio_client", reason="the app extra is not installed (pip install 'i2dl[app]')")
pytest.importorskip("gradio", reason="the app extra is not installed (pip install 'i2dl[app]')")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError as RemoteError  # noqa: E402
from test_app_parts import face_photo, mean_face_keypoints, mean_face_model, save_lightning_checkpoint  # noqa: E402

from i2dl.keypoints.kaggle_csv import KEYPOINT_NAMES  # noqa: E402

CHROMIUM = Path(os.environ.get("I2DL_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = os.environ.get("I2DL_APP_SCREENSHOTS")  # where the browser test keeps its screenshots (else a tmp dir)


# --- the runs folder ---------------------------------------------------------------------------------------------
def train_digits(run_dir: Path) -> Path:
    """The lab's 784-128-10 net, four passes over 8,000 real MNIST test images (2,000 others held out: about 90%
    right), on one thread (a tiny net; two threads only wait on each other when other jobs hold the cores)."""
    from i2dl.data.idx import load_split
    from i2dl.digits.module import DigitClassifier
    from i2dl.viz import plot_image_grid

    torch.manual_seed(0)
    images, labels = load_split("mnist", "test", SHARED_DATA, download_missing=False)
    x_all, y_all = images.float().div(255).unsqueeze(1), labels
    module = DigitClassifier(arch="lab_fc")
    optimizer = torch.optim.Adam(module.parameters(), lr=2e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(4):
            for start in range(2000, 10000, 64):
                loss = torch.nn.functional.cross_entropy(module(x_all[start : start + 64]), y_all[start : start + 64])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        module.eval()
        with torch.no_grad():
            accuracy = float((module(x_all[:2000]).argmax(1) == y_all[:2000]).float().mean())
    finally:
        torch.set_num_threads(threads)
    path = save_lightning_checkpoint(
        module,
        run_dir,
        "digits",
        "fc",
        "test/acc",
        accuracy,
        {"model": {"arch": "lab_fc"}, "data": {"dataset": "mnist"}},
    )
    plot_image_grid(
        images[:8],
        [str(int(v)) for v in labels[:8]],
        run_dir / "figures" / "test_predictions.png",
        ncols=8,
        title="test digits",
    )
    return path


def segmentation_model(run_dir: Path, dataset: str) -> Path:
    from i2dl.segmentation.module import SegmentationModule

    torch.manual_seed(0)
    module = SegmentationModule(dataset=dataset, approach="backbone_decoder", decoder_channels=(32, 16, 16, 8))
    return save_lightning_checkpoint(
        module.eval(),
        run_dir,
        "segmentation",
        f"unet_{dataset}",
        "test/miou",
        0.05,
        {"model": {"dataset": dataset}, "data": {"dataset": dataset}},
    )


def autoencoder_model(run_dir: Path) -> Path:
    from i2dl.autoencoder.module import AutoencoderModule

    torch.manual_seed(0)
    module = AutoencoderModule(arch="conv", latent_dim=16, width=8)
    return save_lightning_checkpoint(
        module.eval(),
        run_dir,
        "autoencoder",
        "pretrain_conv",
        "test/loss",
        0.1,
        {"data": {"dataset": "mnist", "stage": "pretrain"}},
    )


@pytest.fixture(scope="module")
def app_files(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("app")
    runs = base / "runs"
    files = {"base": base, "runs": runs}
    files["digits"] = train_digits(runs / "digits" / "fc")
    files["keypoints"] = mean_face_model(runs / "keypoints" / "keypointnet")
    files["msrc"] = segmentation_model(runs / "segmentation" / "unet_msrc", "msrc_v2")
    files["camvid"] = segmentation_model(runs / "segmentation" / "unet_camvid", "camvid")
    files["autoencoder"] = autoencoder_model(runs / "autoencoder" / "pretrain_conv")
    sweep = runs / "autoencoder" / "sweep_conv"
    sweep.mkdir(parents=True)
    Image.new("RGB", (60, 40), (20, 120, 200)).save(sweep / "accuracy_vs_labels.png")
    code, _, err = run_main(
        "rl",
        "train",
        "-c",
        str(REPO / "configs/rl/ppo_cartpole.yaml"),
        "--run_dir",
        str(runs / "rl" / "ppo_cartpole"),
        "--total_steps",
        "64",
        "--num_envs",
        "2",
        "--num_steps",
        "16",
        "--update_epochs",
        "1",
        "--tensorboard",
        "false",
    )
    assert code == 0, err[-2000:]
    files["rl"] = next((runs / "rl" / "ppo_cartpole" / "checkpoints").glob("*.pt"))
    old = runs / "old" / "flat_run"  # a run folder from before the results.json schema
    old.mkdir(parents=True)
    (old / "results.json").write_text(json.dumps({"test/acc": 0.5, "test/loss": 1.2}))
    stray = runs / "misc" / "copied" / "checkpoints"  # a keypoints checkpoint where nothing says whose it is
    stray.mkdir(parents=True)
    shutil.copy(files["keypoints"], stray / "best.ckpt")
    # what an attacker would like to read: a file beside the runs folder, and a link to it from inside
    files["secret"] = base / "secret.txt"
    files["secret"].write_text("not for the web\n")
    (runs / "digits" / "fc" / "figures" / "link.png").symlink_to(files["secret"])
    files["faces"] = face_photo(base / "two_faces.png")
    files["photo"] = base / "two_faces.png"
    msrc = sorted((SHARED_DATA / "msrc_v2" / "images").iterdir())[0]
    Image.open(msrc).convert("RGB").save(base / "street.png")
    files["street"] = base / "street.png"
    return files


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(app_files):
    """`i2dl app` as a user starts it, in its own process, on a free port of 127.0.0.1."""
    port = free_port()
    env = {**os.environ, "I2DL_DATA": str(SHARED_DATA), "PYTHONUNBUFFERED": "1"}
    log = open(app_files["base"] / "app.log", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "i2dl", "app", "--runs", str(app_files["runs"]), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=app_files["base"],
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while "i2dl app: http" not in Path(log.name).read_text():
        assert proc.poll() is None, Path(log.name).read_text()[-3000:]
        assert time.monotonic() < deadline, "the app did not start in 120 s"
        time.sleep(0.2)
    yield {"url": url, "proc": proc, "log": Path(log.name)}
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def client(server):
    return Client(server["url"], verbose=False)


def rel(app_files, key: str) -> str:
    return str(app_files[key].relative_to(app_files["runs"]))


# --- every tab through the HTTP API ------------------------------------------------------------------------------
def test_the_server_binds_loopback_and_announces_itself(server):
    text = server["log"].read_text()
    assert re.search(r"i2dl app: http://127\.0\.0\.1:\d+/ \(runs from .*, ready in [\d.]+ s", text)
    assert "Traceback" not in text


def test_every_tab_has_its_endpoint(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {
        "/digits",
        "/digits_sketch",
        "/autoencoder",
        "/autoencoder_sketch",
        "/autoencoder_interpolate",
        "/keypoints",
        "/segmentation",
        "/rl",
        "/runs",
        "/run_details",
    } <= names


def digit_scan(tmp_path: Path, index: int) -> tuple[Path, int]:
    """A test digit as a scan would show it: dark ink on light paper, 5x the size."""
    from i2dl.data.idx import load_split

    images, labels = load_split("mnist", "test", SHARED_DATA, download_missing=False)
    path = tmp_path / f"digit_{index}.png"
    Image.fromarray(255 - images[index].numpy()).resize((140, 140), Image.BILINEAR).save(path)
    return path, int(labels[index])


def test_digits_reads_uploaded_scans_and_shows_the_28x28_input(client, app_files, tmp_path):
    right = 0
    for index in range(6):
        path, label = digit_scan(tmp_path, index)
        probabilities, seen, message = client.predict(
            handle_file(str(path)), rel(app_files, "digits"), api_name="/digits"
        )
        assert len(probabilities["confidences"]) == 10
        assert sum(c["confidence"] for c in probabilities["confidences"]) == pytest.approx(1, abs=1e-3)
        assert Image.open(seen).size == (28, 28)
        right += probabilities["label"] == str(label)
        assert message.startswith(f"**{probabilities['label']}**")
    assert right >= 5


def test_digits_sketchpad_drawing(client, app_files, tmp_path):
    canvas = Image.new("RGBA", (280, 280), (255, 255, 255, 0))  # transparent paper, as the sketchpad sends it
    from PIL import ImageDraw

    ImageDraw.Draw(canvas).line([(140, 50), (140, 230)], fill=(0, 0, 0, 255), width=18)
    canvas.save(tmp_path / "one.png")
    sketch = {"background": None, "layers": [], "composite": handle_file(str(tmp_path / "one.png"))}
    probabilities, seen, message = client.predict(sketch, rel(app_files, "digits"), api_name="/digits_sketch")
    assert probabilities["label"] == "1", probabilities
    blank = Image.new("RGBA", (280, 280), (255, 255, 255, 255))
    blank.save(tmp_path / "blank.png")
    sketch = {"background": None, "layers": [], "composite": handle_file(str(tmp_path / "blank.png"))}
    probabilities, seen, message = client.predict(sketch, rel(app_files, "digits"), api_name="/digits_sketch")
    assert not probabilities and "Draw a digit" in message


def test_keypoints_finds_both_faces_and_maps_the_points_back(client, app_files):
    overlay, download, data, message = client.predict(
        handle_file(str(app_files["photo"])), rel(app_files, "keypoints"), api_name="/keypoints"
    )
    assert "2 faces" in message
    assert Image.open(overlay).size == (640, 480)
    saved = json.loads(Path(download).read_text())
    assert saved == data and (saved["width"], saved["height"]) == (640, 480) and len(saved["faces"]) == 2
    mean = mean_face_keypoints()
    for face, truth in zip(saved["faces"], app_files["faces"]):
        assert list(face["keypoints"]) == list(KEYPOINT_NAMES)
        points = torch.tensor(list(face["keypoints"].values()))
        # the mean-face model puts the mean keypoints into the detected crop: they must land on this face, about
        # where its own keypoints are (the mean face is ~3 px of 96 from a real one; the crop adds its error)
        expected = (mean + 0.5) * truth["side"] / 96 - 0.5 + torch.tensor([truth["left"], truth["top"]])
        error = (points - expected).norm(dim=1).mean() / truth["side"] * 96
        assert error < 8, f"keypoints {error:.1f} px (of 96) away from where the face is"
        assert (points - truth["keypoints"]).norm(dim=1).mean() / truth["side"] * 96 < 10


def test_segmentation_overlay_legend_and_shares(client, app_files):
    from i2dl.segmentation.datasets import CAMVID_CLASSES, MSRC_CLASSES, MSRC_PALETTE

    overlay, legend, shares, message = client.predict(
        handle_file(str(app_files["street"])), rel(app_files, "msrc"), 0.5, api_name="/segmentation"
    )
    width, height = Image.open(app_files["street"]).size
    assert Image.open(overlay).size == (width, height)
    assert set(shares) <= set(MSRC_CLASSES) and sum(shares.values()) == pytest.approx(1, abs=1e-3)
    first = next(iter(shares))
    r, g, b = MSRC_PALETTE[MSRC_CLASSES.index(first)]
    assert f'data-class="{first}"' in legend and f"rgb({r},{g},{b})" in legend and "MSRC-v2" in message
    _, _, shares, message = client.predict(
        handle_file(str(app_files["street"])), rel(app_files, "camvid"), 0.5, api_name="/segmentation"
    )
    assert set(shares) <= set(CAMVID_CLASSES) and "CamVid" in message


def test_autoencoder_reconstruction_interpolation(client, app_files):
    seen, output, message = client.predict(7, rel(app_files, "autoencoder"), api_name="/autoencoder")
    assert Image.open(seen).size == Image.open(output).size == (28, 28) and "MSE" in message
    between, strip, message = client.predict(
        3, 2, 0.25, rel(app_files, "autoencoder"), api_name="/autoencoder_interpolate"
    )
    assert Image.open(between).size == (28, 28) and Image.open(strip).size == (9 * 28 + 8 * 2, 28)
    assert "75% of #3" in message


def test_rl_plays_one_episode_into_a_video(client, app_files):
    import imageio.v2 as imageio

    video, score, numbers, message = client.predict(rel(app_files, "rl"), 3, api_name="/rl")
    path = Path(video["video"] if isinstance(video, dict) else video)
    frames = imageio.mimread(path, memtest=False)
    assert numbers["env_id"] == "CartPole-v1" and len(frames) == numbers["steps"] > 0
    assert score == f"return {numbers['return']:.0f} ({numbers['steps']} steps)"
    again = client.predict(rel(app_files, "rl"), 3, api_name="/rl")[2]
    assert again["return"] == numbers["return"]  # the same seed plays the same greedy episode


def test_runs_lists_every_run_folder_with_its_figures(client, app_files):
    frame = client.predict("all", api_name="/runs")[0]
    rows = {row[-1]: row for row in frame["data"]}
    assert {
        "digits/fc",
        "keypoints/keypointnet",
        "segmentation/unet_msrc",
        "rl/ppo_cartpole",
        "old/flat_run",
        "autoencoder/pretrain_conv",
    } <= set(rows)
    assert rows["rl/ppo_cartpole"][1:4] == ["rl", "ppo_cartpole", "finished"]
    assert rows["old/flat_run"][3:6] == ["old results.json", "test/acc", 0.5]
    figures, results, message = client.predict("digits/fc", api_name="/run_details")
    names = [Path(item["image"]["path"] if isinstance(item["image"], dict) else item["image"]).name for item in figures]
    assert "test_predictions.png" in names and "link.png" not in names  # a symbolic link is never followed
    assert results["lab"] == "digits" and "test/acc" in message
    digits_only = client.predict("digits", api_name="/runs")[0]
    assert {row[1] for row in digits_only["data"]} == {"digits"}


def test_a_tab_without_checkpoints_says_how_to_train_one(tmp_path):
    from i2dl.app.common import TRAIN_HINTS, AppContext
    from i2dl.app.server import build_app

    page = build_app(AppContext(runs=tmp_path / "no_runs_yet", work_dir=tmp_path))
    hints = [block for block in page.blocks.values() if "i2dl-hint" in (getattr(block, "elem_classes", None) or [])]
    assert len(hints) == 5 and all(hint.visible for hint in hints)
    text = "\n".join(hint.value for hint in hints)
    for lab, commands in TRAIN_HINTS.items():
        assert f"`{commands[0][0]}` ({commands[0][1]})" in text, lab
    assert "i2dl digits fit -c configs/digits/fc.yaml` (33 s" in text


# --- bad input: a message in the page, and the server goes on ------------------------------------------------------
def bad_files(tmp_path: Path) -> dict[str, Path]:
    files = {
        "text": tmp_path / "notes.png",
        "truncated": tmp_path / "cut.jpg",
        "bomb": tmp_path / "bomb.png",
        "no_face": tmp_path / "wall.png",
    }
    files["text"].write_text("this is not an image\n")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(
        tmp_path / "full.jpg", quality=90
    )
    files["truncated"].write_bytes((tmp_path / "full.jpg").read_bytes()[:5000])
    Image.new("1", (8000, 7000)).save(files["bomb"])  # 56 megapixels in a few kB
    Image.new("RGB", (640, 480), (120, 140, 160)).save(files["no_face"])
    return files


@pytest.mark.parametrize("endpoint", ["/keypoints", "/segmentation", "/digits"])
def test_bad_uploads_get_a_message_and_the_server_goes_on(client, app_files, tmp_path, endpoint):
    files = bad_files(tmp_path)
    choice = {"/keypoints": "keypoints", "/segmentation": "msrc", "/digits": "digits"}[endpoint]
    extra = (0.5,) if endpoint == "/segmentation" else ()
    expected = {"text": "is not an image file", "truncated": "damaged or truncated", "bomb": "megapixels"}
    for kind, text in expected.items():
        result = client.predict(handle_file(str(files[kind])), rel(app_files, choice), *extra, api_name=endpoint)
        assert text in result[-1] and not result[0], (kind, result[-1])
    if endpoint == "/keypoints":
        result = client.predict(handle_file(str(files["no_face"])), rel(app_files, choice), api_name=endpoint)
        assert "No face found in wall.png" in result[-1]
    result = client.predict(handle_file(str(app_files["photo"])), rel(app_files, choice), *extra, api_name=endpoint)
    assert result[0] is not None and not result[-1].startswith("⚠️")


def test_checkpoints_of_another_lab_or_outside_the_runs_folder_are_refused(client, app_files):
    photo = handle_file(str(app_files["photo"]))
    cases = [
        ("/digits", (photo, rel(app_files, "keypoints")), "is a keypoints checkpoint; the Digits tab needs"),
        ("/digits", (photo, "misc/copied/checkpoints/best.ckpt"), "was not written by DigitClassifier"),
        ("/keypoints", (photo, rel(app_files, "msrc")), "is a segmentation checkpoint"),
        ("/segmentation", (photo, rel(app_files, "rl"), 0.5), "is an RL checkpoint"),
        ("/rl", (rel(app_files, "digits"), 0), "is a digits checkpoint; the RL tab needs"),
        ("/autoencoder", (0, rel(app_files, "digits")), "is a digits checkpoint"),
        ("/digits", (photo, "../secret.txt"), "outside the runs folder"),
        ("/digits", (photo, str(app_files["secret"])), "outside the runs folder"),
        ("/digits", (photo, "/etc/passwd"), "outside the runs folder"),
        ("/digits", (photo, "digits/fc/config.yaml"), "not a checkpoint file"),
    ]
    for endpoint, args, text in cases:
        message = client.predict(*args, api_name=endpoint)[-1]
        assert text in message, (endpoint, args, message)
    with pytest.raises(RemoteError, match="less than minimum"):
        client.predict(rel(app_files, "rl"), -1, api_name="/rl")
    assert client.predict(rel(app_files, "rl"), 1, api_name="/rl")[0] is not None


# --- what the server hands out -------------------------------------------------------------------------------------
def test_the_server_hands_out_its_own_files_only(server, client, app_files):
    """Figures of the runs folder are served as the app's copies; no path of the disk is served as such: not the
    runs folder's, not one beside it, not through a link, not a URL to fetch."""
    import httpx

    def get(target: str) -> int:
        return httpx.get(server["url"] + "gradio_api/file=" + target, timeout=10).status_code

    event = httpx.post(server["url"] + "gradio_api/call/run_details", json={"data": ["digits/fc"]}, timeout=10)
    stream = httpx.get(server["url"] + "gradio_api/call/run_details/" + event.json()["event_id"], timeout=30).text
    figures = json.loads(stream.strip().splitlines()[-1].removeprefix("data:"))[0]
    shown = next(item["image"] for item in figures if item["caption"] == "test_predictions.png")
    figure = app_files["runs"] / "digits" / "fc" / "figures" / "test_predictions.png"
    assert not Path(shown["path"]).resolve().is_relative_to(app_files["runs"].resolve())  # a copy
    assert httpx.get(shown["url"], timeout=10).content == figure.read_bytes()
    assert get(str(figure.resolve())) == 403
    assert get(str(app_files["rl"].resolve())) == 403
    assert get(str(app_files["secret"])) == 403
    assert get(str(app_files["runs"].resolve()) + "/../secret.txt") == 403
    assert get(str(app_files["runs"].resolve()) + "/digits/fc/figures/link.png") == 403
    assert get("/etc/passwd") == 403
    assert get(str(REPO / "pyproject.toml")) == 403
    assert get("https://example.com/x.png") == 403  # no fetching of URLs for anyone
    assert httpx.get(server["url"] + "file=http://example.com/", timeout=10).status_code == 403
    for path in ["https://example.com/face.png", "http:\\/\\/example.com/face.png", "//example.com/face.png"]:
        body = '{"data": [{"path": "%s", "meta": {"_type": "gradio.FileData"}}, "x"]}' % path
        response = httpx.post(
            server["url"] + "gradio_api/call/keypoints",
            content=body,
            timeout=10,
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 403 and "never URLs" in response.text, path
    message = client.predict(handle_file(str(app_files["photo"])), rel(app_files, "keypoints"), api_name="/keypoints")[
        -1
    ]
    assert "2 faces" in message  # uploads still work


# --- the real browser ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install -y chromium (CI installs it), or set I2DL_CHROMIUM")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is missing: pip install 'i2dl[app]'")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def draw_stroke(page, selector: str, points: list[tuple[float, float]]) -> None:
    """Mouse down at the first point (fractions of the canvas), moves through the others, mouse up."""
    box = page.locator(selector).first.bounding_box()
    side = min(box["width"], box["height"])
    left, top = box["x"] + (box["width"] - side) / 2, box["y"] + (box["height"] - side) / 2

    def at(p):
        return left + p[0] * side, top + p[1] * side

    page.mouse.move(*at(points[0]))
    page.mouse.down()
    for a, b in zip(points, points[1:]):
        for k in range(1, 9):
            page.mouse.move(*at((a[0] + (b[0] - a[0]) * k / 8, a[1] + (b[1] - a[1]) * k / 8)))
    page.mouse.up()


def test_in_a_real_browser(browser, server, app_files):
    shots = Path(SCREENSHOTS) if SCREENSHOTS else app_files["base"] / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    elsewhere: list[str] = []
    page.on(
        "request",
        lambda r: elsewhere.append(r.url) if not r.url.startswith((server["url"], "data:", "blob:")) else None,
    )
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(server["url"])

    # Digits: draw a 1 with the mouse, the probabilities follow
    page.wait_for_selector("#digits-sketchpad canvas")
    page.wait_for_selector(".i2dl-sketchpad button[aria-label='Brush']")
    page.wait_for_timeout(500)
    draw_stroke(page, "#digits-sketchpad canvas", [(0.5, 0.15), (0.5, 0.85)])
    page.wait_for_function("document.querySelector('#digits-message').innerText.includes('%')", timeout=30000)
    assert page.inner_text("#digits-message").startswith("1 (")
    assert page.locator("#digits-seen img").is_visible()
    page.screenshot(path=str(shots / "digits.png"))

    # Autoencoder: filled in on load
    page.get_by_role("tab", name="Autoencoder").click()
    page.wait_for_function("document.querySelector('#autoencoder-message').innerText.includes('MSE')", timeout=30000)
    page.screenshot(path=str(shots / "autoencoder.png"))

    # Keypoints: upload the photo of two faces; the overlay and the JSON with 15 points per face appear
    page.get_by_role("tab", name="Keypoints").click()
    page.locator("#keypoints-photo input[type=file]").set_input_files(str(app_files["photo"]))
    page.wait_for_function("document.querySelector('#keypoints-message').innerText.includes('faces')", timeout=30000)
    assert "2 faces" in page.inner_text("#keypoints-message")
    overlay = page.locator("#keypoints-overlay img")
    overlay.wait_for(state="visible")
    assert page.evaluate("document.querySelector('#keypoints-overlay img').naturalWidth") == 640
    link = page.locator("#keypoints-json a").first.get_attribute("href")
    data = page.request.get(link if link.startswith("http") else server["url"].rstrip("/") + link).json()
    assert [len(face["keypoints"]) for face in data["faces"]] == [15, 15]
    page.screenshot(path=str(shots / "keypoints.png"))

    # Segmentation: a street photo
    page.get_by_role("tab", name="Segmentation").click()
    page.locator("#segmentation-photo input[type=file]").set_input_files(str(app_files["street"]))
    page.wait_for_selector("#segmentation-legend .seg-row", timeout=30000)
    page.screenshot(path=str(shots / "segmentation.png"))

    # RL: one CartPole episode as a video
    page.get_by_role("tab", name="RL").click()
    page.click("#rl-play")
    page.wait_for_selector("#rl-video video", timeout=60000)
    assert page.input_value("#rl-score textarea").startswith("return ")
    page.screenshot(path=str(shots / "rl.png"))

    # Runs: the fixture's run is in the table, its figures open
    page.get_by_role("tab", name="Runs").click()
    page.wait_for_selector("#runs-table :text('digits/fc')", timeout=30000)
    page.locator("#runs-table").get_by_text("digits/fc", exact=True).first.click()
    page.wait_for_selector("#runs-figures img", timeout=30000)
    page.wait_for_function("[...document.querySelectorAll('#runs-figures img')].some(i => i.naturalWidth > 0)")
    page.locator("#runs-table").scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "runs.png"))

    assert not errors, errors
    assert not elsewhere, f"the page asked other hosts: {elsewhere}"
    page.close()
