"""IDX parsing: real MNIST slices, and every kind of corrupt file giving one clear line and exit status 2."""

from __future__ import annotations

import gzip
import hashlib
import struct

import pytest
import torch
from conftest import run_main

from i2dl.data.idx import MNIST, load_split, read_idx, read_images_and_labels
from i2dl.errors import DataError


def idx_bytes(array: torch.Tensor) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.dim()) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.to(torch.uint8).numpy().tobytes()


def write_pair(folder, images, labels, gz=True):
    folder.mkdir(parents=True, exist_ok=True)
    opener = gzip.compress if gz else (lambda b: b)
    suffix = ".gz" if gz else ""
    for split, (img_name, lbl_name) in MNIST.files.items():
        (folder / (img_name + suffix)).write_bytes(opener(idx_bytes(images)))
        (folder / (lbl_name + suffix)).write_bytes(opener(idx_bytes(labels)))


def test_real_mnist_matches_canonical_content(shared_data):
    images, labels = load_split("mnist", "test", shared_data)
    assert images.shape == (10_000, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (10_000,) and labels.dtype == torch.int64
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # the well-known first test labels
    assert torch.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    raw = gzip.decompress((shared_data / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes())
    assert hashlib.md5(raw).hexdigest() == "27ae3e4e09519cfbb04c329615203637"  # README's canonical md5


def test_raw_and_gzip_files_parse_identically(tmp_path):
    images = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    labels = torch.tensor([3, 1, 4, 1, 5])
    write_pair(tmp_path / "gz" / "mnist", images, labels, gz=True)
    write_pair(tmp_path / "raw" / "mnist", images, labels, gz=False)
    for root in ("gz", "raw"):
        x, y = load_split("mnist", "train", tmp_path / root, download_missing=False)
        assert torch.equal(x, images) and y.tolist() == [3, 1, 4, 1, 5]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b"\x08\x03" + b[2:], "bad magic number"),
        (lambda b: b[:-7], "truncated: header says 2x28x28 = 1568 bytes, found 1561"),
        (lambda b: b + b"\x00", "has trailing bytes"),
        (lambda b: b[:2] + b"\x0d" + b[3:], "element type 0x0d is not unsigned byte"),
        (lambda b: b[:6], "truncated IDX header"),
    ],
)
def test_corrupt_idx_is_named(tmp_path, mutate, message):
    good = idx_bytes(torch.zeros(2, 28, 28))
    path = tmp_path / "images-idx3-ubyte"
    path.write_bytes(mutate(good))
    with pytest.raises(DataError) as err:
        read_idx(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_not_gzip_and_broken_gzip(tmp_path):
    fake = tmp_path / "train-images-idx3-ubyte.gz"
    fake.write_bytes(idx_bytes(torch.zeros(1, 28, 28)))  # raw bytes under a .gz name
    with pytest.raises(DataError, match="not a gzip file"):
        read_idx(fake)
    broken = tmp_path / "broken.gz"
    broken.write_bytes(gzip.compress(idx_bytes(torch.randint(0, 256, (50, 28, 28))))[:2000])
    with pytest.raises(DataError, match="corrupt or truncated gzip"):
        read_idx(broken)


def test_count_mismatch_and_bad_label(tmp_path):
    (tmp_path / "i").write_bytes(idx_bytes(torch.zeros(3, 28, 28)))
    (tmp_path / "l").write_bytes(idx_bytes(torch.tensor([1, 2])))
    with pytest.raises(DataError, match="holds 3 images but .* holds 2 labels"):
        read_images_and_labels(tmp_path / "i", tmp_path / "l")
    (tmp_path / "l").write_bytes(idx_bytes(torch.tensor([1, 12, 2])))
    with pytest.raises(DataError, match="label 12 at index 1 is not a class 0..9"):
        read_images_and_labels(tmp_path / "i", tmp_path / "l")


def test_cli_reports_corrupt_file_in_one_line_and_writes_nothing(tmp_path):
    data = tmp_path / "data"
    write_pair(data / "mnist", torch.zeros(4, 28, 28), torch.tensor([0, 1, 2, 3]))
    bad = data / "mnist" / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(idx_bytes(torch.tensor([0, 1, 2]))))  # 4 images, 3 labels
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    code, _, stderr = run_main(
        "digits", "fit", "--data.data_dir", str(data), "--run_dir", str(tmp_path / "run"), "--trainer.max_epochs", "1"
    )
    assert code == 2, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("i2dl: error: ") and "holds 4 images but" in last and "holds 3 labels" in last
    assert "Traceback" not in stderr
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before  # nothing added to the data dir
