"""The README's layout section names what the package holds, and nothing it does not."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "platform" / "musicrec"


def layout_block() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Layout\n", 1)[1]
    return section.split("```", 2)[1]


def test_the_layout_lists_every_module_and_package_of_musicrec():
    block = layout_block()
    named = set()
    for line in block.splitlines():
        if not line.startswith("  ") or line.startswith("   "):
            continue  # the package's entries: indented two spaces, names before the description
        for name in re.split(r",\s*", line.strip().split("  ")[0]):
            named.add(name.rstrip("/").split("/")[0].removesuffix(".py"))
    present = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"} | {
        p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()
    }
    assert named == present, f"README layout names {sorted(named - present)} that do not exist; misses {sorted(present - named)}"


def test_the_top_level_folders_of_the_layout_exist():
    for line in layout_block().splitlines():
        if line and not line.startswith(" "):
            assert (ROOT / line.split()[0]).is_dir(), line
