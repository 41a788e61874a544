"""Text corpora: the standard library's own sources, or the user's files."""

from __future__ import annotations

import sysconfig
from collections.abc import Iterable
from pathlib import Path

TEXT_SUFFIXES = {".txt", ".md", ".rst", ".py", ".json", ".yml", ".yaml", ".csv", ".html", ".c", ".h"}


def stdlib_corpus(max_bytes: int = 4_000_000) -> list[str]:
    """The `.py` files of this Python's standard library, in a fixed order, up to `max_bytes`.

    Every Python install has them, so the demo needs no download.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.glob("*.py") if p.is_file())
    files += sorted(p for p in root.glob("*/*.py") if "test" not in p.parts[-2] and p.is_file())
    return _read(files, max_bytes, root)


def read_corpus(paths: Iterable[str | Path], max_bytes: int = 50_000_000) -> list[str]:
    """Text of the given files (directories are searched for text files), in sorted order."""
    files: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES)
        elif p.is_file():
            files.append(p)
        else:
            raise ValueError(f"{p}: no such file or directory")
    if not files:
        raise ValueError("no text files found in " + ", ".join(str(p) for p in paths))
    return _read(files, max_bytes, None)


def _read(files: list[Path], max_bytes: int, root: Path | None) -> list[str]:
    texts: list[str] = []
    total = 0
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary or unreadable: not text
        if not text.strip():
            continue
        texts.append(text)
        total += len(text.encode("utf-8"))
        if total >= max_bytes:
            break
    if not texts:
        where = root if root is not None else "the given files"
        raise ValueError(f"no readable UTF-8 text in {where}")
    return texts
