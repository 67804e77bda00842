"""Downloads against a local HTTP server on 127.0.0.1: good files land, bad ones never do."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import threading

import pytest
from conftest import run_main

from i2dl.data.download import content_sha256, download
from i2dl.errors import DataError


@pytest.fixture
def http_dir(tmp_path):
    """Serve a folder on 127.0.0.1; yields (folder, base URL)."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_good_file_is_verified_by_content_and_renamed(http_dir, tmp_path):
    folder, url = http_dir
    payload = bytes(range(256)) * 100
    (folder / "a.gz").write_bytes(gzip.compress(payload, compresslevel=1))
    dest = tmp_path / "cache"
    path = download("a.gz", dest, [url], hashlib.sha256(payload).hexdigest())
    assert path == dest / "a.gz" and gzip.decompress(path.read_bytes()) == payload
    assert content_sha256(path) == hashlib.sha256(payload).hexdigest()
    assert [p.name for p in dest.iterdir()] == ["a.gz"]  # no temporary file left behind


def test_wrong_content_is_rejected_and_nothing_is_left(http_dir, tmp_path):
    folder, url = http_dir
    (folder / "a.gz").write_bytes(gzip.compress(b"tampered"))
    dest = tmp_path / "cache"
    with pytest.raises(DataError) as err:
        download("a.gz", dest, [url], hashlib.sha256(b"original").hexdigest())
    assert "sha256" in str(err.value) and str(dest) in str(err.value)
    assert list(dest.iterdir()) == []


def test_first_mirror_missing_second_serves(http_dir, tmp_path):
    folder, url = http_dir
    (folder / "sub").mkdir()
    (folder / "sub" / "b.bin").write_bytes(b"hello")
    path = download("b.bin", tmp_path / "c", [url + "nowhere/", url + "sub/"], hashlib.sha256(b"hello").hexdigest())
    assert path.read_bytes() == b"hello"


def test_offline_error_says_what_to_put_where(tmp_path):
    with pytest.raises(DataError) as err:
        download("t10k-images-idx3-ubyte.gz", tmp_path / "mnist", ["http://127.0.0.1:9/"], "0" * 64, timeout=2)
    message = str(err.value)
    assert "could not download t10k-images-idx3-ubyte.gz" in message
    assert f"put it in {tmp_path / 'mnist'}" in message and "\n" not in message


def test_cli_downloads_mnist_from_mirror_then_trains(http_dir, tmp_path, shared_data, monkeypatch):
    """The whole path a user takes: empty data dir, files fetched through I2DL_MIRROR, verified, used."""
    folder, url = http_dir
    for f in (shared_data / "mnist").iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    data = tmp_path / "data"
    monkeypatch.setenv("I2DL_MIRROR", url)
    code, _, stderr = run_main(
        "digits",
        "fit",
        "-c",
        "configs/digits/fc.yaml",
        "--data.data_dir",
        str(data),
        "--run_dir",
        str(tmp_path / "run"),
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "2",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.limit_test_batches",
        "1",
        "--trainer.enable_progress_bar",
        "false",
    )
    assert code == 0, stderr[-2000:]
    assert sorted(p.name for p in (data / "mnist").iterdir()) == sorted(
        f.name for f in (shared_data / "mnist").iterdir()
    )


def test_cli_offline_is_one_line_exit_2(tmp_path, monkeypatch):
    monkeypatch.setenv("I2DL_MIRROR", "http://127.0.0.1:9/")
    code, _, stderr = run_main(
        "digits", "fit", "--data.data_dir", str(tmp_path / "empty"), "--run_dir", str(tmp_path / "r")
    )
    assert code == 2
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("i2dl: error: could not download train-images-idx3-ubyte.gz")
    assert "Traceback" not in stderr
    leftovers = [p for p in (tmp_path / "empty").rglob("*") if p.is_file()]
    assert leftovers == []
