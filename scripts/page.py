"""Sections of a documentation page owned by commands.

Each command that writes figures into a page (``docs/PERFORMANCE.md``, ``docs/RESULTS.md``) owns the text
between its two markers, named after it::

    <!-- begin NAME: rewritten by the command below -->
    ...
    <!-- end NAME -->

and rewrites only that, keeping everything else on the page, so several commands can share one page and
a rerun replaces its own numbers instead of adding to them.
"""

from __future__ import annotations

import os
import platform
from importlib.metadata import version
from pathlib import Path

from gan.runfolder import atomic_write_bytes


def cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def machine(*packages: str) -> str:
    """The machine a page's numbers came from, for the line beside them: cores, architecture, the
    versions of torch and of ``packages`` (distribution names), Python."""
    versions = ", ".join(f"{name} {version(name)}" for name in ("torch", *packages))
    return f"{cores()} CPU cores ({platform.machine()}), {versions}, Python {platform.python_version()}"


def figure(page: Path, name: str, png: bytes, images: Path | None = None) -> str:
    """Write ``png`` as ``<images>/<name>.png`` (default images: ``images/`` beside ``page``); returns
    the link to it relative to the page."""
    path = Path(images if images is not None else Path(page).parent / "images") / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, png)
    return os.path.relpath(path, Path(page).parent)


def markers(name: str) -> tuple[str, str]:
    """The begin and end lines of section ``name``."""
    return f"<!-- begin {name}: rewritten by the command below -->", f"<!-- end {name} -->"


def write_section(path: Path, name: str, text: str, *, at_end: bool = False) -> None:
    """Put ``text`` between ``name``'s markers in ``path``, keeping everything outside them.

    A section not yet on the page is appended to it (a new page is just the section). ``at_end``: the
    section is moved to the end of the page (a closing section). The end marker is followed by one line
    break, and by one blank line when the page goes on, however often the section is rewritten.
    """
    path = Path(path)
    begin, end = markers(name)
    block = f"{begin}\n{text.strip()}\n{end}\n"
    old = path.read_text() if path.exists() else ""
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        tail = rest.split(end, 1)[1].lstrip("\n")
        if at_end and tail.strip():
            head = "\n\n".join(part for part in (head.strip(), tail.strip()) if part) + "\n\n"
            tail = ""
        page = head + block + (f"\n{tail}" if tail else "")
    else:
        page = f"{old.rstrip()}\n\n{block}" if old.strip() else block
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, page.encode())
