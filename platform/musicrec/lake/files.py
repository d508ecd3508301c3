"""Which files in a Delta table folder the log knows, and removing those it never will.

A job that dies leaves the files it wrote but never committed (delta-rs path: its ``w-<id>``
folder; native path: Spark's part files). Nothing references them, so no reader sees them, but
they take space. A job that publishes removes the untracked files that were already there when
it began: their writer began before this job's publish, so it can never publish them (see
:mod:`musicrec.lake.manifest`); files of a job that began later are not touched.
"""

from __future__ import annotations

import json
import os
import posixpath
from urllib.parse import unquote

import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import DeltaTable

_LOG = "_delta_log"


def _fs(path: str) -> tuple[pafs.FileSystem, str]:
    return pafs.FileSystem.from_uri(path if "://" in path else os.path.abspath(path))


def data_files(path: str) -> set[str]:
    """Every file under the table folder except the log, relative to the folder."""
    fs, root = _fs(path)
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    except FileNotFoundError:
        return set()
    rel = (posixpath.relpath(i.path, root) for i in infos if i.type == pafs.FileType.File)
    return {r for r in rel if r.split("/", 1)[0] != _LOG}


def referenced_files(path: str, up_to: int | None = None) -> set[str]:
    """Every data file that some version (up to ``up_to``) still in the log adds (commits and checkpoints)."""
    fs, root = _fs(path)
    log_dir = posixpath.join(root, _LOG)
    out: set[str] = set()
    try:
        infos = fs.get_file_info(pafs.FileSelector(log_dir, allow_not_found=True))
    except FileNotFoundError:
        return out
    for info in infos:
        name = posixpath.basename(info.path)
        if up_to is not None and name[:1].isdigit() and int(name.split(".", 1)[0]) > up_to:
            continue
        if name.endswith(".json") and name[:1].isdigit():
            with fs.open_input_stream(info.path) as f:
                for line in f.read().decode().splitlines():
                    action = json.loads(line) if line.strip() else {}
                    if "add" in action:
                        out.add(unquote(action["add"]["path"]))
        elif ".checkpoint" in name and name.endswith(".parquet"):
            with fs.open_input_file(info.path) as f:
                adds = pq.read_table(f, columns=["add"]).column("add").to_pylist()
            out.update(unquote(a["path"]) for a in adds if a)
    return out


def active_files(path: str, version: int) -> set[str]:
    """The data files of one version, relative to the table folder."""
    dt = DeltaTable(path if "://" in path else os.path.abspath(path), version=version)
    return set(dt.get_add_actions(flatten=True).column("path").to_pylist())


def untracked_files(path: str) -> set[str]:
    return data_files(path) - referenced_files(path)


def _parents(rel: str) -> list[str]:
    parts = rel.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def remove(path: str, files: set[str]) -> None:
    """Delete ``files`` (relative to the table folder) and the folders they leave empty."""
    fs, root = _fs(path)
    for rel in sorted(files):
        try:
            fs.delete_file(posixpath.join(root, rel))
        except FileNotFoundError:
            pass
    dirs = {parent for r in files for parent in _parents(r)}
    for d in sorted(dirs, key=lambda d: -d.count("/")):
        full = posixpath.join(root, d)
        try:
            if not fs.get_file_info(pafs.FileSelector(full, recursive=True)):
                fs.delete_dir(full)
        except FileNotFoundError:
            pass
