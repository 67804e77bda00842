"""The web app's latency targets through its HTTP API as a page or any client uses it (upload, call, result from the
event stream, download of the output files), and the same requests through gradio_client in the same run, taking
turns (gradio_client polls for results every 50 ms, so it adds its own 50-100 ms; the difference is the client's).

    python benchmarks/app.py                 # builds its own runs folder (about 2 minutes), then measures
    python benchmarks/app.py --runs runs     # measures on your trained checkpoints instead

Targets (issue 12), median of 50 requests: digits (a sketchpad stroke) <= 50 ms, a 640x480 photo through face
detection + keypoints <= 200 ms, a 480x360 photo segmented <= 500 ms; the first CartPole episode video <= 5 s; the
server up in <= 15 s. Without --runs the checkpoints are the configs' own architectures with untrained weights (the
time does not depend on the weights: DigitNet of configs/digits/best.yaml, KeypointNet of keypointnet.yaml, the
MobileNetV2 U-Net of unet_mobilenet_v2_camvid.yaml) and PPO trained on CartPole with its config, so that the episode
lasts the full 500 steps as a trained agent's does.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("I2DL_DATA") or REPO.parent / "shared" / "data")


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def machine() -> str:
    from i2dl.hardware import describe

    return f"{describe()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"


# --- a runs folder with the configs' architectures -------------------------------------------------------------------
def model_section(config: str) -> dict:
    return dict((yaml.safe_load((REPO / "configs" / config).read_text()) or {}).get("model") or {})


def save(module, run_dir: Path, lab: str, config: str, config_yaml: dict) -> None:
    from i2dl.runs import Run

    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.save(
        {"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()},
        run_dir / "checkpoints" / "best.ckpt",
    )
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config_yaml))
    run = Run(run_dir, lab, config, "untrained")
    run.start()
    run.finish({})


def build_runs(runs: Path) -> None:
    from i2dl.digits.module import DigitClassifier
    from i2dl.keypoints.module import FacialKeypointsRegressor
    from i2dl.segmentation.module import SegmentationModule

    torch.manual_seed(0)
    digits = {k: v for k, v in model_section("digits/best.yaml").items() if k in {"arch", "width", "dropout"}}
    save(DigitClassifier(**digits).eval(), runs / "digits" / "best", "digits", "best", {"model": digits})
    keypoints = {
        k: v
        for k, v in model_section("keypoints/keypointnet.yaml").items()
        if k in {"arch", "width", "dropout", "tta_mirror"}  # the test-time flip: two passes per face, as trained
    }
    save(
        FacialKeypointsRegressor(**keypoints).eval(),
        runs / "keypoints" / "keypointnet",
        "keypoints",
        "keypointnet",
        {"model": keypoints},
    )
    seg = {
        k: v
        for k, v in model_section("segmentation/unet_mobilenet_v2_camvid.yaml").items()
        if k in {"approach", "backbone", "decoder_channels"}
    }
    save(
        SegmentationModule(dataset="camvid", **seg).eval(),
        runs / "segmentation" / "unet_mobilenet_v2_camvid",
        "segmentation",
        "unet_mobilenet_v2_camvid",
        {"model": {**seg, "dataset": "camvid"}},
    )
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "i2dl",
            "rl",
            "train",
            "-c",
            "configs/rl/ppo_cartpole.yaml",
            "--run_dir",
            str(runs / "rl" / "ppo_cartpole"),
            "--tensorboard",
            "false",
        ],
        cwd=REPO,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    print(f"trained PPO on CartPole in {time.perf_counter() - started:.0f} s")


# --- inputs ----------------------------------------------------------------------------------------------------------
def make_inputs(folder: Path) -> dict[str, Path]:
    """A drawn 3 as the sketchpad sends it (280x280, transparent paper); a 640x480 photo with a face (the
    grace_hopper sample on its own edge colour); a 480x360 CamVid test photo."""
    sketch = Image.new("RGBA", (280, 280), (255, 255, 255, 0))
    ImageDraw.Draw(sketch).line(
        [(90, 60), (180, 60), (130, 130), (190, 190), (150, 230), (90, 220)], fill=(0, 0, 0, 255), width=18
    )
    sketch.save(folder / "three.png")
    face = Image.open(DATA / "weights" / "samples" / "grace_hopper.png").convert("RGB")
    face = face.resize((round(face.width * 440 / face.height), 440))
    photo = Image.new("RGB", (640, 480), tuple(int(v) for v in np.asarray(face)[0, 0]))
    photo.paste(face, ((640 - face.width) // 2, 20))
    photo.save(folder / "face_640x480.jpg", quality=92)
    street = sorted((DATA / "camvid" / "test").iterdir())[0]
    Image.open(street).convert("RGB").save(folder / "street_480x360.png")
    assert Image.open(folder / "street_480x360.png").size == (480, 360)
    return {
        "sketch": folder / "three.png",
        "photo": folder / "face_640x480.jpg",
        "street": folder / "street_480x360.png",
    }


# --- measuring -------------------------------------------------------------------------------------------------------
def timed(calls: list, n: int, warmup: int = 3) -> list[list[float]]:
    """Seconds of each call, `n` rounds taking turns (so that all see the same machine, busy or not)."""
    for _ in range(warmup):
        for call in calls:
            call()
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(n):
        for call, kept in zip(calls, times):
            start = time.perf_counter()
            call()
            kept.append(time.perf_counter() - start)
    return times


def summary(times: list[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    return f"median {statistics.median(ms):7.1f} ms, p90 {ms[int(0.9 * (len(ms) - 1))]:7.1f} ms"


class HttpAPI:
    """Gradio's documented REST API with plain HTTP, as a browser or curl uses it: upload the file, POST the call,
    read the result from its event stream, download the output files. gradio_client does the same requests but
    waits for results by polling every 50 ms (`time.sleep(0.05)` in gradio_client.utils.stream_sse_v1plus), which
    puts a floor of about 50-80 ms under every request it makes; both are reported."""

    def __init__(self, url: str) -> None:
        import httpx

        self.url, self.http = url.rstrip("/") + "/gradio_api", httpx.Client(timeout=120)

    def upload(self, path: Path) -> dict:
        with open(path, "rb") as fh:
            response = self.http.post(f"{self.url}/upload", files={"files": (path.name, fh)})
        response.raise_for_status()
        return {"path": response.json()[0], "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}

    def call(self, api_name: str, *data) -> list:
        import json

        event = self.http.post(f"{self.url}/call/{api_name}", json={"data": list(data)})
        event.raise_for_status()
        kind = None
        with self.http.stream("GET", f"{self.url}/call/{api_name}/{event.json()['event_id']}") as stream:
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    kind = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and kind in ("complete", "error"):
                    if kind == "error":
                        raise RuntimeError(f"{api_name}: {line}")
                    outputs = json.loads(line[5:])
                    for value in outputs:  # fetch the output files, as a page does
                        self.fetch(value)
                    return outputs
        raise RuntimeError(f"{api_name}: no result")

    def fetch(self, value) -> None:
        if isinstance(value, dict) and value.get("url"):
            self.http.get(value["url"]).raise_for_status()
        elif isinstance(value, dict):
            for item in value.values():
                self.fetch(item)
        elif isinstance(value, list):
            for item in value:
                self.fetch(item)


def start_app(runs: Path, port: int) -> tuple[subprocess.Popen, float, str]:
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "i2dl", "app", "--runs", str(runs), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )
    for line in proc.stdout:
        if line.startswith("i2dl app: http"):
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe from filling up
            return proc, time.perf_counter() - started, line.strip()
    raise RuntimeError("the app did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default=None, help="runs folder with checkpoints of every lab (default: build one)")
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    from gradio_client import Client, handle_file

    from i2dl.app.common import checkpoint_choices

    work = Path(tempfile.mkdtemp(prefix="i2dl-bench-app-"))
    runs = Path(args.runs) if args.runs else work / "runs"
    if not args.runs:
        build_runs(runs)
    inputs = make_inputs(work)
    print(f"machine: {machine()}")
    print(f"load average before: {load_average()}")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc, startup, banner = start_app(runs, port)
    try:
        print(f"server up in {startup:.1f} s (target 15 s): {banner}")
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        http = HttpAPI(f"http://127.0.0.1:{port}/")
        choice = {lab: checkpoint_choices(runs, lab)[0][1] for lab in ("digits", "keypoints", "segmentation", "rl")}
        started = time.perf_counter()
        first = http.call("rl", choice["rl"], 0)
        first_episode = time.perf_counter() - started
        print(
            f"rl           first CartPole episode video (cold, HTTP API): {first_episode:.2f} s (target 5 s); "
            f"{first[1]}"
        )

        def sketch_http():
            return http.call(
                "digits_sketch",
                {"background": None, "layers": [], "composite": http.upload(inputs["sketch"])},
                choice["digits"],
            )

        sketch = {"background": None, "layers": [], "composite": handle_file(str(inputs["sketch"]))}
        requests = {  # name: (HTTP API call, gradio_client call, target, what)
            "digits": (
                sketch_http,
                lambda: client.predict(sketch, choice["digits"], api_name="/digits_sketch"),
                0.050,
                "one sketchpad stroke -> probabilities + 28x28 input",
            ),
            "keypoints": (
                lambda: http.call("keypoints", http.upload(inputs["photo"]), choice["keypoints"]),
                lambda: client.predict(handle_file(str(inputs["photo"])), choice["keypoints"], api_name="/keypoints"),
                0.200,
                "640x480 photo -> faces, keypoints, overlay, JSON",
            ),
            "segmentation": (
                lambda: http.call("segmentation", http.upload(inputs["street"]), choice["segmentation"], 0.5),
                lambda: client.predict(
                    handle_file(str(inputs["street"])), choice["segmentation"], 0.5, api_name="/segmentation"
                ),
                0.500,
                "480x360 photo -> overlay, legend, shares",
            ),
            "rl": (
                lambda: http.call("rl", choice["rl"], 1),
                lambda: client.predict(choice["rl"], 1, api_name="/rl"),
                5.0,
                "a CartPole episode video, warm",
            ),
        }
        rows = []
        for name, (call, client_call, target, what) in requests.items():
            n, warmup = (args.requests, 3) if name != "rl" else (5, 1)
            times, via_client = timed([call, client_call], n, warmup)
            median = statistics.median(times)
            rows.append((name, median, target))
            print(
                f"{name:<12} {what} (n={n}, target {target * 1000:.0f} ms): HTTP API {summary(times)} | "
                f"gradio_client {summary(via_client)} | {'ok' if median <= target else 'MISSED'}"
            )
        print(f"load average after: {load_average()}")
        missed = [name for name, median, target in rows if median > target]
        missed += ["startup"] if startup > 15 else []
        missed += ["first CartPole episode"] if first_episode > 5 else []
        print("all targets met" if not missed else f"missed: {', '.join(missed)}")
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
