"""great-expectations data docs, copied so that they render offline: every CDN asset a page or stylesheet
loads is replaced by a relative link to its vendored copy (``web_assets``) inside the copied site.

A data docs site is a directory with an ``index.html`` and GE's ``static/`` beside ``expectations/`` or
``validations/``: that is how a report finds the sites a step wrote, whatever the step is called.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from mlops.local.report import web_assets

VENDOR = Path("static") / "vendor"
# GE's logo, loaded from its S3 bucket: the copy GE ships in the site's own static/images stands in.
GE_ASSETS = "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com"  # noqa: config (GE's, not ours)
SITE_FILES = {
    f"{GE_ASSETS}/logo-long.png": "static/images/logo-long.png",
    f"{GE_ASSETS}/full_logo_dark.png": "static/images/logo-long.png",
}
# What a browser fetches by itself: stylesheets and scripts, images (a whole tag), and CSS url(); a link a
# person follows (<a href>) is not a fetch and stays as it is.
_TAG = re.compile(r"<(?:link|script|img|source)\b[^>]*>", re.IGNORECASE)
_TAG_URL = re.compile(r"""(?P<lead>\b(?:href|src)\s*=\s*["'])(?P<url>https?://[^"']+)""", re.IGNORECASE)
_CSS_URL = re.compile(r"""(?P<lead>url\(\s*["']?)(?P<url>https?://[^"')\s]+)""", re.IGNORECASE)
# Subresource integrity on a file:// page: the browser refuses it (no CORS there), so the hash is checked
# here, against the vendored file, and the attributes go.
_INTEGRITY = re.compile(r"""\s(?:integrity|crossorigin)\s*=\s*(["'])(?P<value>[^"']*)\1""", re.IGNORECASE)


@dataclass
class OfflineSite:
    index: Path
    pages: int = 0
    rewritten: int = 0
    unvendored: list[str] = field(default_factory=list)  # external URLs still fetched (none, normally)
    # vendored files whose bytes are not what the page's integrity attribute pins
    integrity_mismatches: list[str] = field(default_factory=list)


def find_sites(top: Path, limit: int = 8) -> list[Path]:
    """Data docs sites under ``top`` (their directories), outermost first."""
    sites: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(top):
        here = Path(dirpath)
        if (
            "index.html" in filenames
            and "static" in dirnames
            and {"expectations", "validations"} & set(dirnames)
        ):
            sites.append(here)
            dirnames.clear()  # a site's pages are not sites of their own
            if len(sites) >= limit:
                break
        dirnames.sort()
    return sites


def _link_or_copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:  # another file system, or links not allowed: a copy
        shutil.copyfile(src, dest)


def _vendor(assets: Path, dest: Path) -> dict[str, Path]:
    """Each CDN URL -> its file in ``dest``; the packages' companion files go along."""
    placed: dict[str, Path] = {}
    for spec, wants in web_assets.wanted().items():
        source = web_assets.package_dir(spec, assets)
        for want in wants:
            files = (
                [p for p in (source / want).rglob("*") if p.is_file()]
                if want.endswith("/")
                else [source / want]
            )
            for f in files:
                _link_or_copy(f, dest / VENDOR / spec.replace("/", "__") / f.relative_to(source))
    for url, (spec, path) in web_assets.CDN_FILES.items():
        placed[url] = dest / VENDOR / spec.replace("/", "__") / path
    return placed


def _sri_ok(path: Path, integrity: str) -> bool:
    """Whether ``path`` has one of the ``integrity`` attribute's ``algo-base64`` hashes."""
    data = path.read_bytes()
    for token in integrity.split():
        algo, _, expected = token.partition("-")
        if algo in ("sha256", "sha384", "sha512"):
            if base64.b64encode(hashlib.new(algo, data).digest()).decode() == expected:
                return True
    return False


def _rewrite(text: str, here: Path, site: Path, placed: dict[str, Path], result: OfflineSite) -> str:
    def target_of(url: str) -> Path | None:
        bare = url.split("?", 1)[0].split("#", 1)[0]
        target = placed.get(bare) or (site / SITE_FILES[bare] if bare in SITE_FILES else None)
        if target is None:
            result.unvendored.append(url)
        return target

    def url_only(match: re.Match) -> str:
        target = target_of(match.group("url"))
        if target is None:
            return match.group(0)
        result.rewritten += 1
        return match.group("lead") + Path(os.path.relpath(target, here)).as_posix()

    def tag(match: re.Match) -> str:
        text = match.group(0)
        found = _TAG_URL.search(text)
        if found is None:
            return text
        target = target_of(found.group("url"))
        if target is None:
            return text
        for attr in _INTEGRITY.finditer(text):
            if attr.group(0).strip().lower().startswith("integrity") and not _sri_ok(
                target, attr.group("value")
            ):
                result.integrity_mismatches.append(found.group("url"))
        text = _INTEGRITY.sub("", text)
        return _TAG_URL.sub(url_only, text, count=1)

    return _CSS_URL.sub(url_only, _TAG.sub(tag, text))


def make_offline(source: Path, dest: Path, assets: Path) -> OfflineSite:
    """Copy the site at ``source`` to ``dest`` (replacing what is there) with its CDN assets vendored."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp, symlinks=False)
    result = OfflineSite(index=dest / "index.html")
    placed = {url: tmp / p.relative_to(tmp) for url, p in _vendor(assets, tmp).items()}
    for path in sorted(tmp.rglob("*")):
        if path.suffix not in (".html", ".css") or VENDOR in path.relative_to(tmp).parents:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        new = _rewrite(text, path.parent, tmp, placed, result)
        result.pages += path.suffix == ".html"
        if new != text:
            path.write_text(new, encoding="utf-8")
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    result.unvendored = sorted(set(result.unvendored))
    result.integrity_mismatches = sorted(set(result.integrity_mismatches))
    return result
