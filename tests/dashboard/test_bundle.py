"""The committed bundle in dcnr/dashboard/static is what dcnr/dashboard/web declares, checked without node.

`build.json` (written by the build) names the sha256 of every source it read and every file it wrote, and
the npm packages whose code went into the bundle. Editing a source without rebuilding, editing the bundle by
hand, or bundling a package other than the lockfile's fails here; `make dashboard-check` (node and the npm
registry) goes further and rebuilds byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from dcnr.dashboard import STATIC

WEB = STATIC.parent / "web"
REBUILD = "run make dashboard and commit dcnr/dashboard/static"


def load(path: Path) -> Any:
    return json.loads(path.read_text())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_bundle_was_built_from_the_committed_sources() -> None:
    manifest = load(STATIC / "build.json")
    stale = [name for name, digest in manifest["sources"].items() if sha256(WEB / name) != digest]
    assert not stale, f"changed since the bundle was built: {stale}; {REBUILD}"
    sources = {p.relative_to(WEB).as_posix() for p in (WEB / "src").rglob("*") if p.is_file()}
    assert sources <= set(manifest["sources"]), f"sources the build never saw: {sources - set(manifest['sources'])}"


def test_the_static_files_are_exactly_the_build_output() -> None:
    manifest = load(STATIC / "build.json")
    edited = [name for name, digest in manifest["outputs"].items() if sha256(STATIC / name) != digest]
    assert not edited, f"differ from the build: {edited}; {REBUILD}"
    built = {*manifest["outputs"], "build.json"}
    present = {p.name for p in STATIC.iterdir()}
    assert present == built, f"not built: {present - built}; missing: {built - present}"


def test_every_bundled_package_is_the_lockfiles_version() -> None:
    manifest, lock, declared = load(STATIC / "build.json"), load(WEB / "package-lock.json"), load(WEB / "package.json")
    locked = {path.removeprefix("node_modules/"): entry for path, entry in lock["packages"].items() if path}
    for name, pinned in {**declared["dependencies"], **declared["devDependencies"]}.items():
        assert pinned == locked[name]["version"], f"package.json pins {name} {pinned} exactly, the lockfile has another"
    bundled = manifest["packages"]
    assert set(bundled) == {name for name, entry in locked.items() if not entry.get("dev")}, \
        "the bundle holds other packages than the lockfile's runtime dependencies"
    notices = (STATIC / "dashboard.js.LEGAL.txt").read_text()
    for name, package in bundled.items():
        assert package["version"] == locked[name]["version"] and package["integrity"] == locked[name]["integrity"], name
        assert f"\n{name}/" in notices, f"the licence notice of {name} did not come with it"
    assert manifest["esbuild"] == locked["esbuild"]["version"]
    # what the libraries report of themselves at run time is checked in the browser (test_views.py)


def test_the_page_loads_nothing_from_elsewhere() -> None:
    html = (STATIC / "index.html").read_text()
    assert not re.search(r"(src|href)=\"(https?:)?//", html), "index.html must not load from the internet"
    for reference in re.findall(r"(?:src|href)=\"static/([^\"]+)\"", html):
        assert (STATIC / reference).is_file(), reference
    assert "script-src 'self'" in html  # volunteer-chosen names can never become script
