"""Download the reference release files into ``resources/``: checkpoints, pseudo-labels, impulse responses, tsvs.

    python download_resources.py --list                 # what exists, what is missing, sizes, checksum status
    python download_resources.py                        # everything that is missing
    python download_resources.py atst_stage2 pseudo-labels stage1   # by file name, stem or group
    python download_resources.py --from /mnt/mirror     # a folder (or URL) holding the same file names
    python download_resources.py --verify               # recompute SHA-256 of present files

Downloads resume from ``<file>.part``; a file is placed (atomically) only after it passes what
``resources/MANIFEST.json`` records for it: its size and SHA-256 when recorded ("verified"; ``--record`` writes them
for newly fetched files), and always its structure (``check``, see ``helpers.resource_checks``: a checkpoint loads
with the safe loader and holds the expected model, a tsv parses, an archive holds the expected files): "checked"
when no digest is recorded yet. A file that fails is deleted, never placed and never resumed from. Zips are
extracted into a temporary folder and moved into place whole. Without network, the command says which URL to fetch
by hand and where to put the file.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

REPO_ROOT = Path(__file__).resolve().parent
RESOURCES_DIR = REPO_ROOT / "resources"
MANIFEST_PATH = RESOURCES_DIR / "MANIFEST.json"
RELEASE_URL = "https://github.com/CPJKU/cpjku_dcase24/releases/download/files/"
CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60


@dataclass(frozen=True)
class Resource:
    """One release file: ``filename`` on the server, placed at ``target`` (relative to resources/)."""

    filename: str
    target: str  # file path, or for zips the folder the archive provides
    group: str
    is_zip: bool = False

    @property
    def stem(self) -> str:
        return self.filename.split(".")[0]


RESOURCES: tuple[Resource, ...] = (
    Resource("pseudo-labels.zip", "pseudo-labels", "pseudo-labels", is_zip=True),
    Resource("dirs.zip", "dirs", "dirs", is_zip=True),
    *(Resource(f, f"pretrained_models/{f}", "pretrained")
      for f in ("beats_as.pt", "atst_as.ckpt", "atst_as_strong.ckpt", "passt_as_strong.ckpt")),
    *(Resource(f"{a}_stage1.ckpt", f"pretrained_models/{a}_stage1.ckpt", "stage1") for a in ("atst", "passt", "beats")),
    *(Resource(f"{a}_stage2.ckpt", f"pretrained_models/{a}_stage2.ckpt", "stage2") for a in ("atst", "passt", "beats")),
    *(Resource(f, f"exclude/{f}", "exclude")
      for f in ("unlabeled_exclude.tsv", "weak_exclude.tsv", "audioset_strong_exclude.tsv")),
    *(Resource(f"external_audioset_strong_{s}.tsv", f"external_strong_split/external_audioset_strong_{s}.tsv",
               "external_strong_split") for s in ("train", "eval", "dur")),
)


class DownloadError(RuntimeError):
    pass


def load_manifest(path: Path = MANIFEST_PATH) -> dict[str, dict]:
    """``{filename: {"sha256": hex or null, "size": bytes or null, "check": {...}}}``; a missing manifest means
    nothing is recorded."""
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DownloadError(f"{path} is not valid JSON ({e}); restore it from git") from e


def save_manifest(manifest: dict, path: Path = MANIFEST_PATH) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def select(names: list[str], resources=RESOURCES) -> list[Resource]:
    """Resources named by file name, stem or group; all when ``names`` is empty. Unknown names are an error."""
    if not names:
        return list(resources)
    chosen, unknown = [], []
    for name in names:
        hits = [r for r in resources if name in (r.filename, r.stem, r.group)]
        if not hits:
            unknown.append(name)
        chosen += [r for r in hits if r not in chosen]
    if unknown:
        valid = sorted({r.stem for r in resources} | {r.group for r in resources})
        raise DownloadError(f"unknown resource name(s) {unknown}; valid: {', '.join(valid)}")
    return chosen


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://", "file://"))


def _fetch(source: str, filename: str, part: Path, progress: bool) -> None:
    """Copy or download ``filename`` from ``source`` into ``part``, resuming a partial ``part`` over HTTP."""
    if not _is_url(source):
        src = Path(source).expanduser() / filename
        if not src.is_file():
            raise DownloadError(f"{src} does not exist (the --from folder must hold the release file names)")
        shutil.copyfile(src, part)
        return
    url = source.rstrip("/") + "/" + filename
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the part file is already complete
            return
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(f"cannot reach {url} ({getattr(e, 'reason', e)})") from e
    with response:
        resumed = response.status == 206
        total = response.length + (have if resumed else 0) if response.length is not None else None
        bar = _progress(filename, total, have if resumed else 0, progress)
        try:
            with open(part, "ab" if resumed else "wb") as out:
                while block := response.read(CHUNK_BYTES):
                    out.write(block)
                    bar.update(len(block))
        except (OSError, urllib.error.URLError) as e:
            raise DownloadError(f"transfer of {url} broke off ({e}); run the command again to resume") from e
        finally:
            bar.close()
        if total is not None and part.stat().st_size < total:
            raise DownloadError(f"transfer of {url} ended early ({part.stat().st_size} of {total} bytes); "
                                "run the command again to resume")


def _progress(name: str, total: int | None, initial: int, enabled: bool):
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, desc=name, disable=not enabled,
                leave=False)


def _place_zip(archive: Path, target: Path, check: dict | None = None) -> None:
    """Extract ``archive`` next to ``target``, check its contents (``check``), and move the folder into place in
    one rename."""
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.extract-") as tmp:
        tmp = Path(tmp)
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(tmp)
        except zipfile.BadZipFile as e:
            raise DownloadError(f"{archive.name} is not a valid zip archive ({e})") from e
        entries = [p for p in tmp.iterdir() if p.name != "__MACOSX"]
        # archives hold either the folder itself (pseudo-labels/...) or its contents
        content = entries[0] if len(entries) == 1 and entries[0].is_dir() and entries[0].name == target.name else tmp
        if content is tmp:  # the archive holds the folder's contents: the extraction folder itself becomes target
            content = tmp / target.name
            content.mkdir()
            for entry in entries:
                os.replace(entry, content / entry.name)
        if check:
            _run_check(archive.name.removesuffix(".part"), lambda checks: checks.check_folder(content, check))
        os.replace(content, target)


def _run_check(filename: str, run) -> None:
    """``run(helpers.resource_checks)``, with a failure as a ``DownloadError`` naming ``filename``."""
    # lazy: the checks need torch (safe checkpoint loading), which --list and plain fetching do not
    from helpers import resource_checks

    try:
        run(resource_checks)
    except resource_checks.ResourceCheckError as e:
        raise DownloadError(f"{filename}: {e}") from e


def download(resource: Resource, dest: Path, source: str, manifest: dict, *, progress=True,
             record=False) -> str:
    """Fetch one resource into ``dest`` unless present. Returns 'present', 'verified' (digest matched), 'checked'
    (structure checked, no digest recorded) or 'unverified' (nothing recorded for it)."""
    target = dest / resource.target
    if target.exists():
        return "present"
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.parent / (resource.filename + ".part")
    _fetch(source, resource.filename, part, progress)
    entry = manifest.get(resource.filename, {})
    expected, size, check = entry.get("sha256"), entry.get("size"), entry.get("check")
    fetched = part.stat().st_size
    try:  # a file that fails any check is deleted: a later run must fetch it anew, not resume from it
        if size is not None and fetched != size:
            raise DownloadError(f"{resource.filename}: {fetched} bytes, expected {size}")
        actual = sha256_of(part)
        if expected and actual != expected:
            raise DownloadError(f"{resource.filename}: SHA-256 mismatch (expected {expected}, got {actual})")
        if check and not resource.is_zip:
            _run_check(resource.filename, lambda checks: checks.check_file(part, check))
        if resource.is_zip:
            _place_zip(part, target, check)
            part.unlink()
        else:
            os.replace(part, target)
    except DownloadError as e:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{e}; the download was discarded and nothing was placed. Try again or use another "
                            "--from source.") from e
    if record and not expected:
        manifest.setdefault(resource.filename, {}).update(sha256=actual, size=fetched)
    return "verified" if expected else "checked" if check else "unverified"


def status_rows(resources, dest: Path, manifest: dict, verify: bool = False) -> list[tuple[str, str, str, str]]:
    """(name, where, state, checksum) per resource, for ``--list``."""
    rows = []
    for r in resources:
        target = dest / r.target
        part = target.parent / (r.filename + ".part")
        recorded = manifest.get(r.filename, {}).get("sha256")
        if target.exists():
            size = (sum(p.stat().st_size for p in target.rglob("*") if p.is_file()) if target.is_dir()
                    else target.stat().st_size)
            state = f"present {_human(size)}"
            structure = manifest.get(r.filename, {}).get("check")
            if not recorded and structure and verify:
                check = _structure_state(target, structure, r)
            elif not recorded:
                check = ("no digest recorded (--verify checks the structure)" if structure
                         else "unverified (no digest recorded)")
            elif r.is_zip:
                check = "verified at download"
            elif verify:
                check = "OK" if sha256_of(target) == recorded else "MISMATCH: delete it and download again"
            else:
                check = "digest recorded (--verify checks)"
        elif part.exists():
            state, check = f"partial {_human(part.stat().st_size)} (resumes)", "-"
        else:
            size = manifest.get(r.filename, {}).get("size")
            state, check = "missing" + (f" ({_human(size)})" if size else ""), "-"
        rows.append((r.filename, str(Path("resources") / r.target) if dest == RESOURCES_DIR else str(target), state,
                     check))
    return rows


def _structure_state(target: Path, structure: dict, resource: Resource) -> str:
    """``--verify`` of a present file without a recorded digest: its structure check."""
    try:
        if resource.is_zip:
            _run_check(resource.filename, lambda checks: checks.check_folder(target, structure))
        else:
            _run_check(resource.filename, lambda checks: checks.check_file(target, structure))
    except DownloadError as e:
        return f"BAD: {e}; delete it and download again"
    return "structure OK (no digest recorded)"


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def format_table(rows) -> str:
    header = ("file", "where", "state", "checksum")
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(row, widths)) for row in (header, *rows)]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="file names, stems or groups (default: all)")
    parser.add_argument("--list", action="store_true", help="show what exists and what is missing; download nothing")
    parser.add_argument("--verify", action="store_true", help="with --list: recompute SHA-256 of present files")
    parser.add_argument("--from", dest="source", default=RELEASE_URL, help="mirror folder or base URL")
    parser.add_argument("--dest", type=Path, default=RESOURCES_DIR, help="target folder (default: resources/)")
    parser.add_argument("--record", action="store_true", help="write digests of newly fetched files to the manifest")
    parser.add_argument("--manifest", type=Path, default=MANIFEST_PATH)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        manifest = load_manifest(args.manifest)
        chosen = select(args.names)
        if args.list or args.verify:
            print(format_table(status_rows(chosen, args.dest, manifest, verify=args.verify)))
            return 0
        failures = []
        for resource in chosen:
            try:
                state = download(resource, args.dest, args.source, manifest, progress=not args.no_progress,
                                 record=args.record)
                if state != "present":
                    print(f"{resource.filename}: placed at {args.dest / resource.target} ({state})")
            except DownloadError as e:
                failures.append((resource, e))
        if args.record:
            save_manifest(manifest, args.manifest)
    except DownloadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if failures:
        print(f"{len(failures)} file(s) could not be fetched:", file=sys.stderr)
        for resource, error in failures:
            print(f"  - {error}", file=sys.stderr)
        print("To get them by hand, download each URL below and put the file at the path shown (zips: extract so "
              "that the folder exists), or point --from at a folder holding them:", file=sys.stderr)
        for resource, _ in failures:
            where = args.dest / resource.target
            print(f"  {RELEASE_URL}{resource.filename}  ->  {where}{' (extract)' if resource.is_zip else ''}",
                  file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
