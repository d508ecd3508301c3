"""Write a Yambda-layout root (:mod:`.layout`) from Arrow tables, chunk by chunk.

Files are written to ``*.partial`` and renamed only when complete, so a root never holds half a
file under its real name. Writer options are pinned so that identical data gives identical bytes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from musicrec.data.yambda import layout

# Dictionary encoding only where it pays off (dictionary-encoding ids costs more time than it
# saves space under zstd).
WRITER_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 1,
    "version": "2.6",
    "data_page_version": "1.0",
    "write_statistics": True,
    "store_schema": True,
}


def sequential(table: pa.Table) -> pa.Table:
    """A flat event table (sorted by uid, then time) as one row per user, other columns as lists."""
    uid = table["uid"].to_numpy()
    starts = np.flatnonzero(np.concatenate([[True], uid[1:] != uid[:-1]])) if len(uid) else np.zeros(0, int)
    offsets = pa.array(np.append(starts, len(uid)).astype(np.int32))
    cols = [pa.array(uid[starts], type=layout.TYPES["uid"])]
    names = ["uid"]
    for name in table.column_names[1:]:
        cols.append(pa.ListArray.from_arrays(offsets, table[name].combine_chunks()))
        names.append(name)
    return pa.Table.from_arrays(cols, names=names)


class YambdaWriter:
    """Appends chunks to the files of one root; :meth:`close` publishes them, :meth:`abort` drops them.

    ``size`` names the ``flat/<size>`` (and ``sequential/<size>``) folder; with ``write_sequential``
    every event chunk also goes to the sequential file (chunks must hold whole users).
    """

    def __init__(self, root: str | Path, size: str, write_sequential: bool = False) -> None:
        self.root = Path(root)
        self.size = size
        self.write_sequential = write_sequential
        self._open: dict[Path, pq.ParquetWriter] = {}

    def events(self, stem: str, table: pa.Table) -> None:
        """A chunk of an event file (``listens``, ..., ``multi_event``) in its flat schema."""
        self._check(stem, table)
        dictionary = [c for c in layout.DICTIONARY_COLUMNS if c in table.column_names]
        self._write(layout.event_file("flat", self.size, stem), table, dictionary)
        if self.write_sequential:
            seq_dictionary = [f"{c}.list.element" for c in dictionary]
            self._write(layout.event_file("sequential", self.size, stem), sequential(table), seq_dictionary)

    def mapping(self, stem: str, table: pa.Table) -> None:
        """A chunk of ``artist_item_mapping`` or ``album_item_mapping``."""
        self._check(stem, table)
        self._write(layout.root_file(stem), table, [])

    def embeddings(self, table: pa.Table) -> None:
        if table.schema != layout.EMBEDDING_SCHEMA:
            raise ValueError(f"embeddings schema {table.schema} is not {layout.EMBEDDING_SCHEMA}")
        self._write(layout.root_file(layout.EMBEDDINGS), table, [])

    def close(self) -> None:
        for path, writer in self._open.items():
            writer.close()
            os.replace(f"{path}.partial", path)
        self._open.clear()

    def abort(self) -> None:
        for path, writer in self._open.items():
            writer.close()
            Path(f"{path}.partial").unlink(missing_ok=True)
        self._open.clear()

    @staticmethod
    def _check(stem: str, table: pa.Table) -> None:
        if table.schema != layout.schema(stem):
            raise ValueError(f"{stem}: schema {table.schema} is not the layout's {layout.schema(stem)}")

    def _write(self, rel: str, table: pa.Table, dictionary: list[str]) -> None:
        path = self.root / rel
        writer = self._open.get(path)
        if writer is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            writer = pq.ParquetWriter(f"{path}.partial", table.schema, use_dictionary=dictionary, **WRITER_OPTIONS)
            self._open[path] = writer
        writer.write_table(table, row_group_size=max(len(table), 1))
