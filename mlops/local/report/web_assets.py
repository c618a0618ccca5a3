"""The web assets great-expectations' data docs load from CDNs, kept on this machine so the docs render offline.

GE 1.x's page templates name Bootstrap, jQuery, bootstrap-table, Font Awesome, Vega and a few more by CDN
URL (``CDN_FILES`` lists every one they emit). Each comes from its npm package at the version the URL
names, pinned by the registry's sha512 ``integrity`` in ``web_assets.lock.json``, and is extracted once into
a cache (``MLOPS_WEB_ASSETS``, default ``~/.cache/mlops/web-assets``). ``scripts/bootstrap.sh`` fetches them
with the rest of the installation (``python -m mlops.local.report.web_assets``); a report that finds them
missing fetches them then. ``MLOPS_NPM_REGISTRY`` points at a mirror of registry.npmjs.org.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path

from mlops.errors import MlopsError

LOCK = Path(__file__).with_name("web_assets.lock.json")
DEFAULT_REGISTRY = "https://registry.npmjs.org"

# CDN URL (its query string ignored) -> (npm package@version, file inside the package)
CDN_FILES: dict[str, tuple[str, str]] = {
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": (
        "bootstrap@4.3.1", "dist/css/bootstrap.min.css"),
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": (
        "bootstrap@4.3.1", "dist/js/bootstrap.min.js"),
    "https://code.jquery.com/jquery-3.7.1.min.js": ("jquery@3.7.1", "dist/jquery.min.js"),
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": (
        "popper.js@1.12.9", "dist/umd/popper.min.js"),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": (
        "bootstrap-table@1.19.1", "dist/bootstrap-table.min.css"),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": (
        "bootstrap-table@1.19.1", "dist/bootstrap-table.min.js"),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js": (
        "bootstrap-table@1.19.1", "dist/extensions/filter-control/bootstrap-table-filter-control.min.js"),
    # GE's templates take the filter-control CSS of 1.19.0 beside 1.19.1's JS: the 1.19.1 file serves both
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css": (
        "bootstrap-table@1.19.1", "dist/extensions/filter-control/bootstrap-table-filter-control.min.css"),
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css": (
        "bootstrap-table@1.19.1", "dist/extensions/filter-control/bootstrap-table-filter-control.css"),
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": (
        "@fortawesome/fontawesome-free@6.6.0", "css/all.min.css"),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css": (
        "bootstrap-datepicker@1.9.0", "dist/css/bootstrap-datepicker.min.css"),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js": (
        "bootstrap-datepicker@1.9.0", "dist/js/bootstrap-datepicker.min.js"),
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css": (
        "@forevolve/bootstrap-dark@1.1.0", "dist/css/bootstrap-prefers-dark.css"),
    # jsDelivr answers a bare package@major with the package's browser build: the lock pins the version
    "https://cdn.jsdelivr.net/npm/vega@5": ("vega@5.33.1", "build/vega.min.js"),
    "https://cdn.jsdelivr.net/npm/vega-lite@5": ("vega-lite@5.23.0", "build/vega-lite.min.js"),
    "https://cdn.jsdelivr.net/npm/vega-embed@6": ("vega-embed@6.29.0", "build/vega-embed.min.js"),
}  # fmt: skip
# Files a vendored file loads relative to itself (Font Awesome's CSS: ../webfonts/*), by directory prefix.
COMPANIONS: dict[str, tuple[str, ...]] = {"@fortawesome/fontawesome-free@6.6.0": ("webfonts/",)}


class WebAssetsError(MlopsError):
    pass


def cache_dir(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("MLOPS_WEB_ASSETS"):
        return Path(env["MLOPS_WEB_ASSETS"]).expanduser()
    base = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "mlops" / "web-assets"


def _lock() -> dict[str, dict[str, str]]:
    return json.loads(LOCK.read_text())


def wanted() -> dict[str, set[str]]:
    """``{package@version: {file or directory prefix}}`` every CDN URL needs."""
    files: dict[str, set[str]] = {}
    for spec, path in CDN_FILES.values():
        files.setdefault(spec, set()).add(path)
    for spec, prefixes in COMPANIONS.items():
        files.setdefault(spec, set()).update(prefixes)
    return files


def package_dir(spec: str, root: Path | None = None) -> Path:
    return (root or cache_dir()) / spec.replace("/", "__")


def missing(root: Path | None = None) -> list[str]:
    """The packages not yet complete in the cache (a finished one has its ``.complete`` marker)."""
    return sorted(spec for spec in wanted() if not (package_dir(spec, root) / ".complete").is_file())


def _verify(data: bytes, integrity: str, spec: str) -> None:
    algo, _, expected = integrity.partition("-")
    digest = base64.b64encode(hashlib.new(algo, data).digest()).decode()
    if digest != expected:
        raise WebAssetsError(f"web asset {spec}: the download's {algo} is not the locked integrity")


def _download(url: str, spec: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.read()
    except OSError as err:
        raise WebAssetsError(
            f"web asset {spec}: cannot download {url} ({err}); set MLOPS_NPM_REGISTRY to a reachable mirror"
        ) from None


def _extract(data: bytes, spec: str, wants: set[str], dest: Path) -> int:
    """Extract the wanted files of an npm tarball (their paths under its ``package/``) into ``dest``."""
    found: set[str] = set()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            _, _, rel = member.name.partition("/")
            matched = {w for w in wants if rel == w or (w.endswith("/") and rel.startswith(w))}
            if not member.isfile() or not matched:
                continue
            target = dest / rel
            if ".." in Path(rel).parts or not target.resolve().is_relative_to(dest.resolve()):
                raise WebAssetsError(f"web asset {spec}: {member.name} points outside the package")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
            found |= matched
    if found != wants:
        raise WebAssetsError(f"web asset {spec}: the package has no {', '.join(sorted(wants - found))}")
    return len(found)


def fetch(root: Path | None = None, progress: Callable[[str], None] | None = None) -> list[str]:
    """Download, verify and extract every missing package; returns the ones fetched."""
    root = root or cache_dir()
    lock, wants = _lock(), wanted()
    registry = os.environ.get("MLOPS_NPM_REGISTRY", DEFAULT_REGISTRY).rstrip("/")
    todo = missing(root)
    for n, spec in enumerate(todo, 1):
        pinned = lock.get(spec)
        if pinned is None:
            raise WebAssetsError(f"web asset {spec}: not in {LOCK.name}")
        url = pinned["tarball"].replace(DEFAULT_REGISTRY, registry, 1)
        if progress:
            progress(f"web assets {n}/{len(todo)}: {spec}")
        data = _download(url, spec)
        _verify(data, pinned["integrity"], spec)
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=root))
        try:
            _extract(data, spec, wants[spec], tmp)
            (tmp / ".complete").write_text(pinned["integrity"] + "\n")
            final = package_dir(spec, root)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)  # all or nothing: a half-extracted package is never "complete"
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return todo


def ensure(progress: Callable[[str], None] | None = None) -> Path:
    """The cache, every package in it (fetched now when missing)."""
    root = cache_dir()
    if missing(root):
        fetch(root, progress)
    return root


def main() -> int:
    root = cache_dir()
    try:
        fetched = fetch(root, progress=lambda line: print(line, flush=True))
    except WebAssetsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"web assets: {len(wanted())} packages in {root}" + ("" if fetched else " (all cached)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
