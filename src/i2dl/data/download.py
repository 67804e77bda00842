"""Downloads from public mirrors: progress bar, sha256 of the content, temporary file then rename.

A gzip file is checked by the sha256 of its decompressed content, since mirrors recompress the same data
(the `.gz` wrappers differ between mirrors; the bytes inside do not).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

from tqdm import tqdm

from i2dl.errors import DataError

MIRROR_ENV = "I2DL_MIRROR"  # a base URL tried instead of the public mirrors (a local copy, a proxy)
CHUNK = 1 << 16


def content_sha256(path: Path) -> str:
    """sha256 of a file's bytes, or of its decompressed bytes when it is gzip."""
    digest = hashlib.sha256()
    inflate = None
    with open(path, "rb") as fh:
        head = fh.read(2)
        fh.seek(0)
        if head == b"\x1f\x8b":
            inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(inflate.decompress(chunk) if inflate else chunk)
    return digest.hexdigest()


def mirrors_for(default_mirrors: list[str]) -> list[str]:
    override = os.environ.get(MIRROR_ENV)
    return [override] if override else list(default_mirrors)


def _fetch(url: str, fh, desc: str, timeout: float) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (http/https only, see caller)
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=desc, leave=False) as bar:
            for chunk in iter(lambda: response.read(CHUNK), b""):
                fh.write(chunk)
                bar.update(len(chunk))


def download(filename: str, dest_dir: Path, mirrors: list[str], sha256: str, timeout: float = 30.0) -> Path:
    """Fetch `filename` from the first mirror that serves it with the right content; return its path.

    The file is written to a temporary file in `dest_dir`, checked, then renamed, so an interrupted or
    corrupt download never leaves a file under the final name.
    """
    dest_dir = Path(dest_dir)
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=dest_dir, prefix=".write-test-", delete=True)
        probe.close()
    except OSError as err:
        raise DataError(
            f"cannot write to {dest_dir} ({err.strerror}): put {filename} there by hand "
            "or choose another folder with --data.data_dir / $I2DL_DATA"
        ) from None
    failures = []
    for base in mirrors_for(mirrors):
        url = base.rstrip("/") + "/" + filename
        if not url.startswith(("http://", "https://", "file://")):
            failures.append(f"{url}: unsupported scheme")
            continue
        fd, tmp_name = tempfile.mkstemp(dir=dest_dir, prefix=f".{filename}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as fh:
                _fetch(url, fh, desc=filename, timeout=timeout)
            got = content_sha256(tmp)
            if got != sha256:
                failures.append(f"{url}: sha256 {got[:12]}… is not the expected {sha256[:12]}…")
                continue
            final = dest_dir / filename
            os.replace(tmp, final)
            return final
        except (urllib.error.URLError, OSError, zlib.error, ValueError) as err:
            reason = getattr(err, "reason", None) or err
            failures.append(f"{url}: {reason}")
        finally:
            tmp.unlink(missing_ok=True)
    raise DataError(
        f"could not download {filename} ({'; '.join(failures)}); download it yourself and put it in {dest_dir}"
    )
