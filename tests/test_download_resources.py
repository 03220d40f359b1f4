"""download_resources.py against local mirrors: a folder, and an HTTP server on 127.0.0.1 (no other network)."""
import hashlib
import http.server
import threading
import zipfile
from pathlib import Path

import pytest

import download_resources as dr

FILES = (
    dr.Resource("weak_exclude.tsv", "exclude/weak_exclude.tsv", "exclude"),
    dr.Resource("atst_stage1.ckpt", "pretrained_models/atst_stage1.ckpt", "stage1"),
    dr.Resource("dirs.zip", "dirs", "dirs", is_zip=True),
)


@pytest.fixture
def mirror(tmp_path):
    """A folder holding release files, and the manifest of their digests."""
    root = tmp_path / "mirror"
    root.mkdir()
    (root / "weak_exclude.tsv").write_text("filename\nY123.wav\n")
    (root / "atst_stage1.ckpt").write_bytes(bytes(range(256)) * 4000)  # ~1 MB, several chunks
    with zipfile.ZipFile(root / "dirs.zip", "w") as zf:
        zf.writestr("dirs/phone/ir1.wav", b"RIFF....")
        zf.writestr("dirs/laptop/ir2.wav", b"RIFF....")
    manifest = {p.name: {"sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "size": p.stat().st_size}
                for p in root.iterdir()}
    return root, manifest


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with HTTP Range support; can cut the first transfer of a file after ``cut_after`` bytes."""

    cut_after: int | None = None
    ranges_seen: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = Path(self.directory) / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        header = self.headers.get("Range")
        self.ranges_seen.append(header)
        if header:
            start = int(header.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.cut_after is not None and not header:
            self.wfile.write(body[: self.cut_after])
            self.wfile.flush()
            self.connection.shutdown(2)  # simulate a broken transfer
            return
        self.wfile.write(body)


@pytest.fixture
def server(mirror):
    root, _ = mirror

    class Handler(_RangeHandler):
        ranges_seen = []

        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(root), **k)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", Handler
    httpd.shutdown()
    httpd.server_close()


def test_download_from_folder_verifies_and_places(mirror, tmp_path):
    root, manifest = mirror
    dest = tmp_path / "resources"
    states = [dr.download(r, dest, str(root), manifest, progress=False) for r in FILES]
    assert states == ["verified"] * 3
    assert (dest / "exclude/weak_exclude.tsv").read_text().startswith("filename")
    assert (dest / "dirs/phone/ir1.wav").is_file() and (dest / "dirs/laptop/ir2.wav").is_file()
    assert not list(dest.rglob("*.part"))
    # second run: nothing to do
    assert [dr.download(r, dest, str(root), manifest, progress=False) for r in FILES] == ["present"] * 3


def test_download_over_http(server, mirror, tmp_path):
    url, _ = server
    _, manifest = mirror
    dest = tmp_path / "resources"
    assert dr.download(FILES[1], dest, url, manifest, progress=False) == "verified"
    assert (dest / FILES[1].target).stat().st_size == 256 * 4000


def test_corrupted_file_is_not_placed(mirror, tmp_path):
    root, manifest = mirror
    dest = tmp_path / "resources"
    for corrupted, message in ((bytes(256 * 4000), "SHA-256 mismatch"), (b"corrupted", "9 bytes, expected 1024000")):
        (root / "atst_stage1.ckpt").write_bytes(corrupted)
        with pytest.raises(dr.DownloadError, match=message):
            dr.download(FILES[1], dest, str(root), manifest, progress=False)
        assert not (dest / FILES[1].target).exists()
        assert not list(dest.rglob("*.part"))


def test_interrupted_transfer_resumes(server, mirror, tmp_path):
    url, handler = server
    _, manifest = mirror
    handler.cut_after = 300_000
    dest = tmp_path / "resources"
    with pytest.raises(dr.DownloadError, match="resume"):
        dr.download(FILES[1], dest, url, manifest, progress=False)
    part = dest / "pretrained_models" / "atst_stage1.ckpt.part"
    assert part.is_file() and 0 < part.stat().st_size < 256 * 4000
    assert not (dest / FILES[1].target).exists()
    assert dr.download(FILES[1], dest, url, manifest, progress=False) == "verified"
    assert handler.ranges_seen[-1] == f"bytes={300_000}-"  # the second request asked only for the rest
    assert not part.exists()


def test_unverified_without_digest_and_record(mirror, tmp_path):
    root, _ = mirror
    manifest = {}
    assert dr.download(FILES[0], tmp_path / "r", str(root), manifest, progress=False, record=True) == "unverified"
    assert manifest["weak_exclude.tsv"]["sha256"] == hashlib.sha256((root / "weak_exclude.tsv").read_bytes()).hexdigest()


def test_list_reports_present_missing_partial(mirror, tmp_path):
    root, manifest = mirror
    dest = tmp_path / "resources"
    dr.download(FILES[0], dest, str(root), manifest, progress=False)
    (dest / "pretrained_models").mkdir(parents=True)
    (dest / "pretrained_models" / "atst_stage1.ckpt.part").write_bytes(b"x" * 10)
    rows = {r[0]: r for r in dr.status_rows(FILES, dest, manifest, verify=True)}
    assert rows["weak_exclude.tsv"][2].startswith("present") and rows["weak_exclude.tsv"][3] == "OK"
    assert rows["atst_stage1.ckpt"][2].startswith("partial")
    assert rows["dirs.zip"][2].startswith("missing")
    (dest / "exclude/weak_exclude.tsv").write_text("tampered")
    rows = {r[0]: r for r in dr.status_rows(FILES, dest, manifest, verify=True)}
    assert rows["weak_exclude.tsv"][3].startswith("MISMATCH")


def test_without_network_says_what_to_fetch_by_hand(tmp_path, capsys):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc = dr.main(["weak_exclude", "--from", f"http://127.0.0.1:{port}", "--dest", str(tmp_path), "--no-progress",
                  "--manifest", str(tmp_path / "m.json")])
    err = capsys.readouterr().err
    assert rc == 1
    assert "cannot reach" in err and "weak_exclude.tsv" in err
    assert f"{dr.RELEASE_URL}weak_exclude.tsv  ->  {tmp_path / 'exclude/weak_exclude.tsv'}" in err


def test_selection_by_name_stem_group_and_unknown():
    assert [r.filename for r in dr.select(["atst_stage2"])] == ["atst_stage2.ckpt"]
    assert len(dr.select(["stage1"])) == 3
    assert dr.select(["pseudo-labels"])[0].is_zip
    assert len(dr.select([])) == len(dr.RESOURCES)
    with pytest.raises(dr.DownloadError, match="unknown resource"):
        dr.select(["atst_stage3"])


def test_cli_list_runs(capsys):
    assert dr.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "atst_stage2.ckpt" in out and "pseudo-labels.zip" in out
