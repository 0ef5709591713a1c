"""Tests of workflow.data.download against a local HTTP server."""

import hashlib
import os
import socket

import numpy as np
import pytest

from archives import file_server  # noqa: F401  (fixture)
from workflow.data.download import ChecksumError, DownloadError, _mismatch, download

PAYLOAD = np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
MD5 = hashlib.md5(PAYLOAD).hexdigest()
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


def verify(path, md5=None, sha256=None) -> None:
    """Raise ChecksumError unless `path` has the given digests (None: not checked), as download checks them."""
    bad = _mismatch(path, md5, sha256)
    if bad:
        raise ChecksumError(path, *bad)


@pytest.fixture
def server(file_server):
    file_server.files["/data.bin"] = PAYLOAD
    return file_server


def test_whole_download_verified(server, tmp_path):
    dest = tmp_path / "sub" / "data.bin"
    assert download(server.url("/data.bin"), dest, md5=MD5, sha256=SHA256, chunk_size=4096) == dest
    assert dest.read_bytes() == PAYLOAD
    assert [r["range"] for r in server.requests] == [None]
    assert not dest.with_name("data.bin.partial").exists()


def test_interrupted_download_resumes_with_range(server, tmp_path):
    dest = tmp_path / "data.bin"
    partial = tmp_path / "data.bin.partial"
    server.cut_after = 100_000
    with pytest.raises(DownloadError, match="data.bin: connection closed after 100000 of 300000"):
        download(server.url("/data.bin"), dest, md5=MD5, chunk_size=4096)
    assert not dest.exists()
    assert partial.stat().st_size == 100_000

    download(server.url("/data.bin"), dest, md5=MD5, chunk_size=4096)
    assert [r["range"] for r in server.requests] == [None, "bytes=100000-"]
    assert dest.read_bytes() == PAYLOAD
    assert not partial.exists()


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.partial").write_bytes(PAYLOAD[:50_000])
    server.ignore_range = True
    download(server.url("/data.bin"), dest, md5=MD5)
    assert server.requests[0]["range"] == "bytes=50000-"
    assert dest.read_bytes() == PAYLOAD


def test_partial_already_whole_is_accepted(server, tmp_path):
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.partial").write_bytes(PAYLOAD)
    download(server.url("/data.bin"), dest, md5=MD5)
    assert [r["range"] for r in server.requests] == [f"bytes={len(PAYLOAD)}-"]
    assert dest.read_bytes() == PAYLOAD


def test_checksum_mismatch_keeps_bad_bytes_and_names_everything(server, tmp_path):
    dest = tmp_path / "data.bin"
    wrong = "0" * 32
    with pytest.raises(ChecksumError) as info:
        download(server.url("/data.bin"), dest, md5=wrong)
    message = str(info.value)
    assert str(dest) in message and "md5" in message and wrong in message and MD5 in message
    assert not dest.exists()
    assert not (tmp_path / "data.bin.partial").exists()
    assert (tmp_path / "data.bin.bad").read_bytes() == PAYLOAD


def test_existing_good_file_untouched_on_mismatch(server, tmp_path):
    dest = tmp_path / "data.bin"
    dest.write_bytes(b"an older good copy")
    os.utime(dest, (1_000_000, 1_000_000))
    server.files["/data.bin"] = b"a corrupted mirror"
    with pytest.raises(ChecksumError, match="sha256"):
        download(server.url("/data.bin"), dest, sha256=SHA256)
    assert dest.read_bytes() == b"an older good copy"
    assert dest.stat().st_mtime == 1_000_000
    assert (tmp_path / "data.bin.bad").read_bytes() == b"a corrupted mirror"


def test_present_file_not_downloaded_again(server, tmp_path):
    dest = tmp_path / "data.bin"
    download(server.url("/data.bin"), dest, md5=MD5)
    mtime = dest.stat().st_mtime_ns
    download(server.url("/data.bin"), dest, md5=MD5)
    download(server.url("/data.bin"), dest)
    assert len(server.requests) == 1
    assert dest.stat().st_mtime_ns == mtime


def test_present_file_with_wrong_digest_is_replaced(server, tmp_path):
    dest = tmp_path / "data.bin"
    dest.write_bytes(b"stale")
    download(server.url("/data.bin"), dest, md5=MD5)
    assert dest.read_bytes() == PAYLOAD
    assert len(server.requests) == 1


def test_http_and_network_errors_name_the_url(server, tmp_path):
    url = server.url("/missing.bin")
    with pytest.raises(DownloadError, match=f"{url}: HTTP 404"):
        download(url, tmp_path / "missing.bin")
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/data.bin"
    with pytest.raises(DownloadError, match=dead):
        download(dead, tmp_path / "data.bin", timeout=5)
    assert not (tmp_path / "missing.bin").exists()


def test_verify_local_copy(tmp_path):
    path = tmp_path / "local.bin"
    path.write_bytes(PAYLOAD)
    verify(path, md5=MD5.upper(), sha256=SHA256)
    with pytest.raises(ChecksumError) as info:
        verify(path, sha256="f" * 64)
    assert str(path) in str(info.value) and SHA256 in str(info.value) and "f" * 64 in str(info.value)
    assert path.read_bytes() == PAYLOAD
