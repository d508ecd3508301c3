"""The one shuffle by user, and per-user work over whole partitions with ``mapInArrow``.

Events are hash-partitioned by ``uid`` once and sorted within partitions by the canonical
order ``(uid, timestamp, item_id)`` (docs/tasks.md §1). Every per-user step after
that (window filters, sequences, examples) keeps that partitioning and order, so Spark adds
no further exchange or sort; :func:`map_users` still asks for the sort explicitly, which
Spark drops when the order is already known and performs when it is not.

Inside a partition, :func:`user_chunks` buffers Arrow batches until they hold at least
``chunk_rows`` rows and cuts at the last user boundary: a user's events may span Arrow
batches, but a chunk only ever holds complete users. Memory per Python worker is bounded
by one chunk plus one user's events. Each chunk becomes one :class:`Histories`, and
:func:`musicrec.prep.sequences.pair_stats` runs vectorised over all its users at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from musicrec.contract import schemas
from musicrec.contract.tasks import DOMAINS, KINDS, SPLITS, Domain, sequence_name
from musicrec.prep.sequences import pair_stats, stats_mask

ORDER: tuple[str, ...] = ("uid", "timestamp", "item_id")
# Event codes of the internal stream: holdout listens (after the consumption filter) and the
# GTS feedback events share the one shuffle and are told apart by this code.
HOLDOUT_LISTEN, LISTEN_PLUS, LIKE, UNLIKE = 0, 1, 2, 3
DEFAULT_CHUNK_ROWS = 1 << 17


def to_stream(events: DataFrame, code: int | Column) -> DataFrame:
    """Events in the internal stream layout; an unmapped artist becomes -1 ("no item" in sequences.py)."""
    return events.select(
        F.col("uid").cast("int"),
        F.col("timestamp").cast("long"),
        F.col("item_id").cast("int"),
        F.coalesce(F.col("artist_id").cast("int"), F.lit(-1)).alias("artist_id"),
        (F.lit(code) if isinstance(code, int) else code).cast("tinyint").alias("code"),
    )


def partition_by_user(stream: DataFrame, n_partitions: int | None) -> DataFrame:
    """The one shuffle: all events of a user in one partition, in canonical order. Without a number,
    adaptive execution may coalesce it (Spark never resizes a repartition of a given width)."""
    by_user = stream.repartition(n_partitions, "uid") if n_partitions else stream.repartition("uid")
    return by_user.sortWithinPartitions(*ORDER)


@dataclass(frozen=True)
class Histories:
    """Ordered event histories of the users of one chunk, stored flat.

    ``group`` is the user index (into ``uid``) of each row, non-decreasing; a user's rows are
    contiguous and in canonical order. ``position`` is each row's index in its user's
    history; :meth:`select` keeps the user indices and recomputes positions, so histories
    derived from one chunk (holdout, GTS train, GTS window) stay aligned user by user.
    """

    uid: np.ndarray  # int32 per user
    group: np.ndarray  # int64 per row
    timestamp: np.ndarray  # int64
    item: np.ndarray  # int32
    artist: np.ndarray  # int32, -1 = unmapped
    code: np.ndarray  # int8
    position: np.ndarray  # int32

    @property
    def n_users(self) -> int:
        return len(self.uid)

    @classmethod
    def from_table(cls, table: pa.Table) -> Histories:
        """A chunk of complete users; fails loudly if Spark did not deliver canonical order."""
        cols = {
            name: table.column(name).to_numpy()
            for name in ("uid", "timestamp", "item_id", "artist_id", "code")
        }
        uid_rows = cols["uid"]
        n = len(uid_rows)
        starts = np.ones(n, dtype=bool)
        starts[1:] = uid_rows[1:] != uid_rows[:-1]
        group = np.cumsum(starts) - 1
        ts, item = cols["timestamp"], cols["item_id"]
        same_user = ~starts[1:]
        backwards = (uid_rows[1:] < uid_rows[:-1]) | (
            same_user & ((ts[1:] < ts[:-1]) | ((ts[1:] == ts[:-1]) & (item[1:] < item[:-1])))
        )
        if backwards.any():
            raise RuntimeError(
                "events reached the per-user step out of canonical (uid, timestamp, item_id) order"
            )
        return cls(
            uid=uid_rows[starts].astype(np.int32),
            group=group.astype(np.int64),
            timestamp=ts.astype(np.int64),
            item=item.astype(np.int32),
            artist=cols["artist_id"].astype(np.int32),
            code=cols["code"].astype(np.int8),
            position=_positions(group),
        )

    def select(self, mask: np.ndarray) -> Histories:
        """Rows where ``mask`` holds, positions renumbered within each user."""
        group = self.group[mask]
        return Histories(
            uid=self.uid,
            group=group,
            timestamp=self.timestamp[mask],
            item=self.item[mask],
            artist=self.artist[mask],
            code=self.code[mask],
            position=_positions(group),
        )

    def items(self, domain: Domain) -> np.ndarray:
        return self.item if domain == "track" else self.artist

    def user_rows(self) -> np.ndarray:
        """Number of rows of each user."""
        return np.bincount(self.group, minlength=self.n_users)


def _positions(group: np.ndarray) -> np.ndarray:
    return (np.arange(len(group)) - np.searchsorted(group, group, side="left")).astype(np.int32)


def user_chunks(
    batches: Iterable[pa.RecordBatch], chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> Iterator[pa.Table]:
    """Regroup one partition's Arrow batches (sorted by uid) into tables of complete users."""
    pending: list[pa.RecordBatch] = []
    rows = 0
    last_uid: int | None = None
    for batch in batches:
        if batch.num_rows == 0:
            continue
        first = batch.column("uid")[0].as_py()
        if last_uid is not None and first < last_uid:
            raise RuntimeError("partition not sorted by uid: a user's events would be split")
        last_uid = batch.column("uid")[-1].as_py()
        pending.append(batch)
        rows += batch.num_rows
        if rows < chunk_rows:
            continue
        table = pa.Table.from_batches(pending).combine_chunks()
        uid = table.column("uid").to_numpy()
        # The last user may continue in the next batch: hold it back.
        cut = int(np.searchsorted(uid, uid[-1], side="left"))
        if cut:
            yield table.slice(0, cut)
        tail = table.slice(cut)
        pending, rows = tail.to_batches(), tail.num_rows
    if rows:
        yield pa.Table.from_batches(pending).combine_chunks()


ChunkFn = Callable[[Histories], Iterator[pa.RecordBatch]]
# A pass that keeps state across the chunks of one partition (and may emit it at the end).
PartitionFn = Callable[[Iterator[Histories]], Iterator[pa.RecordBatch]]


def per_chunk(fn: ChunkFn) -> PartitionFn:
    def run(chunks: Iterator[Histories]) -> Iterator[pa.RecordBatch]:
        for h in chunks:
            yield from fn(h)

    return run


def with_sequence_stats(ks: Iterable[int], fn: Callable[[Histories, SequenceStats], Iterator[pa.RecordBatch]]) -> PartitionFn:
    """A per-chunk ``fn`` that also feeds one :class:`SequenceStats` per partition, whose maxima
    follow the partition's last chunk."""

    def run(chunks: Iterator[Histories]) -> Iterator[pa.RecordBatch]:
        sequence_stats = SequenceStats(ks)
        for h in chunks:
            yield from fn(h, sequence_stats)
        yield from sequence_stats.finish()

    return run


def map_users(stream: DataFrame, fn: PartitionFn, schema: pa.Schema) -> DataFrame:
    """Run ``fn`` over each partition's chunks of complete users of a user-partitioned stream; its
    batches have ``schema``."""
    rows = DEFAULT_CHUNK_ROWS  # read at each call, so a test can shrink chunks to split users across batches

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        yield from fn(Histories.from_table(table) for table in user_chunks(batches, rows))

    return stream.sortWithinPartitions(*ORDER).mapInArrow(run, schemas.spark_schema(schema))


def ragged(group: np.ndarray, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """For rows sorted by user: the users that have rows, and int32 list offsets into the rows."""
    counts = np.bincount(group, minlength=n_users)
    users = np.flatnonzero(counts)
    offsets = np.zeros(len(users) + 1, dtype=np.int32)
    np.cumsum(counts[users], out=offsets[1:])
    return users, offsets


def list_array(offsets: np.ndarray, values: np.ndarray, value_type: pa.DataType) -> pa.ListArray:
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, value_type))


def constant(value: str | int, n: int, type_: pa.DataType) -> pa.Array:
    return pa.repeat(pa.scalar(value, type_), n)


def split_labels(codes: np.ndarray) -> pa.Array:
    return pc.take(pa.array(SPLITS), pa.array(codes, pa.int8()))


def sequence_masks(h: Histories, domain: Domain, ks: Iterable[int]) -> Iterator[tuple[str, int, np.ndarray]]:
    """(name, k, mask) of every sequence of ``domain`` for all users of ``h`` at once, all from one
    :func:`pair_stats` (one sort of the chunk by user and item) rather than one per sequence."""
    stats = pair_stats(h.group, h.items(domain))
    for k in ks:
        for kind in KINDS:
            yield sequence_name(kind, domain), k, stats_mask(stats, kind, k)


def sequence_batches(
    h: Histories, protocol: str, split_codes: np.ndarray, ks: Iterable[int]
) -> Iterator[pa.RecordBatch]:
    """Rows of the ``sequences`` table for every user of ``h`` with a non-empty sequence.

    ``split_codes`` gives each user's split (index into :data:`SPLITS`). Empty sequences get
    no row; their users are counted in the stats instead.
    """
    ks = tuple(ks)
    for domain in DOMAINS:
        for name, k, mask in sequence_masks(h, domain, ks):
            rows = np.flatnonzero(mask)
            users, offsets = ragged(h.group[rows], h.n_users)
            n = len(users)
            if n == 0:
                continue
            yield pa.RecordBatch.from_arrays(
                [
                    constant(protocol, n, pa.string()),
                    pa.array(h.uid[users], pa.int32()),
                    constant(name, n, pa.string()),
                    constant(k, n, pa.int32()),
                    split_labels(split_codes[users]),
                    list_array(offsets, h.items(domain)[rows], pa.int32()),
                    list_array(offsets, h.timestamp[rows], pa.int64()),
                    list_array(offsets, h.position[rows], pa.int32()),
                ],
                schema=schemas.SEQUENCES,
            )


def _fields(*tables: pa.Schema) -> list[pa.Field]:
    seen: dict[str, pa.Field] = {}
    for table in tables:
        for f in table:
            seen.setdefault(f.name, f)
    return list(seen.values())


# The examples pass emits every small output in one multiplexed layout (``tag`` says which):
# user splits, holdout and GTS examples, partial counts for the stats table and partial sequence
# statistics (:class:`SequenceStats`), so one cached result feeds several tables. Its columns are
# those tables' columns; a partial count's ``value`` is an integer (the job sums them into the
# stats table's double).
OUTPUT_SCHEMA = pa.schema(
    [
        pa.field("tag", pa.string()),
        *_fields(schemas.USER_SPLITS, schemas.HOLDOUT_EXAMPLES, schemas.GTS_EXAMPLES),
        *[f for f in schemas.STATS if f.name in ("section", "name", "detail")],
        pa.field("value", pa.int64()),
        pa.field("protocol", pa.string()),
        pa.field("k", pa.int32()),
        pa.field("users", pa.int64()),
        pa.field("items", schemas.INT_LIST),
        pa.field("maxima", schemas.INT_LIST),
    ]
)


def output_batch(tag: str, n: int, **columns: pa.Array) -> pa.RecordBatch:
    """A batch of the multiplexed layout; columns not given are null."""
    arrays = [
        constant(tag, n, pa.string()) if name == "tag" else columns.get(name, pa.nulls(n, type_))
        for name, type_ in zip(OUTPUT_SCHEMA.names, OUTPUT_SCHEMA.types, strict=True)
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=OUTPUT_SCHEMA)


def count_batch(section: str, counts: dict[str, int], detail: dict[str, str] | None = None) -> pa.RecordBatch:
    """Partial counts of one chunk; the job sums them per (section, name, detail)."""
    names = list(counts)
    detail = detail or {}
    return output_batch(
        "count",
        len(names),
        section=constant(section, len(names), pa.string()),
        name=pa.array(names, pa.string()),
        detail=pa.array([detail.get(n, "") for n in names], pa.string()),
        value=pa.array([int(counts[n]) for n in names], pa.int64()),
    )


class SequenceStats:
    """Partial statistics of the ``sequences`` rows that :func:`sequence_batches` makes of the same
    histories, from the same masks, for the stats table (:func:`musicrec.prep.stats.sequence_rows`).

    - ``lengths`` rows, per chunk: how many users (``users``) have a sequence of each non-zero
      length (``value``), per (protocol, name, k).
    - ``maxima`` rows, once per partition (:meth:`finish`), one per (protocol, domain in
      ``name``): the ``items`` seen and, for each, the largest number of times it occurs in one
      user's history (``maxima``), capped at the largest threshold that matters. With m(i) that
      largest count over all users, ``lh_k`` and ``disc_k`` hold the items with m >= k and
      ``fam_k`` those with m >= max(k, 2), so distinct items per sequence follow from m alone.
      One row of two arrays, not a row per item: a partition sees ~100k items per protocol and
      domain, and millions of small rows through the Arrow bridge and the cache cost more than
      the statistics themselves.

    The maxima of a partition live in one dense array per (protocol, domain), indexed by item
    id: one byte per id up to the largest seen (9.4 MB for Yambda's catalogue), whatever the
    partition's size, and no sort.
    """

    def __init__(self, ks: Iterable[int]) -> None:
        self.ks = tuple(ks)
        self.cap = max(*self.ks, 2)
        if self.cap > np.iinfo(np.uint8).max:
            raise ValueError(f"k up to {np.iinfo(np.uint8).max} is supported, got {self.cap}")
        self._maxima: dict[tuple[str, Domain], np.ndarray] = {}

    def add(self, h: Histories, protocol: str) -> Iterator[pa.RecordBatch]:
        for domain in DOMAINS:
            items = h.items(domain)
            stats = pair_stats(h.group, items)
            self._keep(protocol, domain, items[stats.first], stats.counts[stats.first])
            names, ks, lengths, users = [], [], [], []
            for k in self.ks:
                for kind in KINDS:
                    per_user = np.bincount(h.group[stats_mask(stats, kind, k)], minlength=h.n_users)
                    values, n = np.unique(per_user[per_user > 0], return_counts=True)
                    names += [sequence_name(kind, domain)] * len(values)
                    ks += [k] * len(values)
                    lengths.append(values)
                    users.append(n)
            if names:
                yield output_batch(
                    "lengths",
                    len(names),
                    protocol=constant(protocol, len(names), pa.string()),
                    name=pa.array(names, pa.string()),
                    k=pa.array(ks, pa.int32()),
                    value=pa.array(np.concatenate(lengths), pa.int64()),
                    users=pa.array(np.concatenate(users), pa.int64()),
                )

    def _keep(self, protocol: str, domain: Domain, items: np.ndarray, counts: np.ndarray) -> None:
        """Fold one chunk's (user, item) pairs (each pair once, with its count) into the maxima."""
        if not len(items):
            return
        acc = self._maxima.get((protocol, domain), np.zeros(0, dtype=np.uint8))
        top = int(items.max()) + 1
        if top > len(acc):
            acc = np.concatenate([acc, np.zeros(top - len(acc), dtype=np.uint8)])
            self._maxima[(protocol, domain)] = acc
        np.maximum.at(acc, items, np.minimum(counts, self.cap).astype(np.uint8))

    def finish(self) -> Iterator[pa.RecordBatch]:
        for (protocol, domain), acc in self._maxima.items():
            items = np.flatnonzero(acc)
            offsets = np.array([0, len(items)], dtype=np.int32)
            yield output_batch(
                "maxima",
                1,
                protocol=constant(protocol, 1, pa.string()),
                name=constant(domain, 1, pa.string()),
                items=list_array(offsets, items, pa.int32()),
                maxima=list_array(offsets, acc[items], pa.int32()),
            )
        self._maxima.clear()
