"""Resumable, checksum-verified downloads and file digests, using only the standard library."""

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

USER_AGENT = "tlsweep (urllib)"


class DownloadError(RuntimeError):
    """A network or HTTP failure; the message names the URL."""


class ChecksumError(ValueError):
    """A file whose digest is not the expected one."""

    def __init__(self, path, algorithm, expected, found, note=""):
        super().__init__(f"{path}: {algorithm} is {found}, expected {expected}{note}")
        self.path = Path(path)
        self.algorithm = algorithm
        self.expected = expected
        self.found = found


def file_digest(path, algorithm="sha256", chunk_size=1 << 20) -> str:
    """Hex digest of a file, read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def size_and_digests(path, chunk_size=1 << 20) -> dict:
    """Size, MD5 and SHA-256 of a file, in one pass."""
    md5, sha256 = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            md5.update(chunk)
            sha256.update(chunk)
    return {"bytes": Path(path).stat().st_size, "md5": md5.hexdigest(), "sha256": sha256.hexdigest()}


def _mismatch(path, md5, sha256):
    """(algorithm, expected, found) for the first digest that differs, else None."""
    for algorithm, expected in (("md5", md5), ("sha256", sha256)):
        if expected is not None:
            found = file_digest(path, algorithm)
            if found != expected.lower():
                return algorithm, expected, found
    return None


def _content_range(header):
    """(start, total) from a Content-Range header; None for unknown parts."""
    m = re.fullmatch(r"bytes (?:(\d+)-\d+|\*)/(\d+|\*)", (header or "").strip())
    if not m:
        return None, None
    start, total = m.groups()
    return (int(start) if start else None), (int(total) if total != "*" else None)


def _fetch(url, partial: Path, chunk_size, timeout) -> None:
    """Bring `partial` to the whole remote file, resuming what is there."""
    offset = partial.stat().st_size if partial.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            if _content_range(exc.headers.get("Content-Range"))[1] == offset:
                return  # the partial file is already whole
            partial.unlink()
            return _fetch(url, partial, chunk_size, timeout)
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError
        raise DownloadError(f"{url}: {getattr(exc, 'reason', exc)}") from exc

    with response:
        resumed = response.status == 206
        if resumed and _content_range(response.headers.get("Content-Range"))[0] != offset:
            partial.unlink()  # a range we did not ask for: start over
            return _fetch(url, partial, chunk_size, timeout)
        start = offset if resumed else 0  # a 200 answer is the whole file
        length = response.headers.get("Content-Length")
        expected = start + int(length) if length is not None else None
        with open(partial, "ab" if resumed else "wb") as out:
            try:
                while chunk := response.read(chunk_size):
                    out.write(chunk)
            except (OSError, http.client.HTTPException) as exc:
                raise DownloadError(f"{url}: connection lost after {out.tell()} bytes: {exc}") from exc
            size = out.tell()
    if expected is not None and size != expected:
        raise DownloadError(f"{url}: connection closed after {size} of {expected} bytes; run again to resume")


def download(url, dest, *, md5=None, sha256=None, chunk_size=1 << 20, timeout=60) -> Path:
    """Download `url` to `dest`, resuming `<dest>.partial`, and verify it.

    An existing `dest` with the expected digests is left as it is. The file
    reaches `dest` only whole and verified; on a checksum mismatch the bytes
    are kept as `<dest>.bad` and ChecksumError is raised.
    """
    dest = Path(dest)
    if dest.exists() and not _mismatch(dest, md5, sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    _fetch(url, partial, chunk_size, timeout)
    bad = _mismatch(partial, md5, sha256)
    if bad:
        kept = dest.with_name(dest.name + ".bad")
        os.replace(partial, kept)
        raise ChecksumError(dest, *bad, note=f"; downloaded bytes kept in {kept}")
    os.replace(partial, dest)
    return dest
