"""Synthetic Yambda generator (docs/data.md, "The synthetic generator").

Writes a directory in exactly the Yambda layout (flat, optionally sequential, mappings, audio
embeddings) from a small generative model that is hard enough for the papers' effects to appear:

* Catalogue: artists with Zipf popularity and a genre, tracks grouped into albums, Zipf popularity of
  tracks within an artist, albums released over the period (a track is never heard before its
  release), a few multi-artist tracks and a few tracks with no artist at all.
* Users: a taste (Dirichlet mixture over genres) that drifts over their activity window towards a
  second one (``taste_drift``), a log-normal history length, an activity window.
* Listening happens in sessions; a session is a series of *runs*.  A *replay* run copies the user's
  own history at a constant lag (log-uniform, so recent listens are replayed most and frequently
  played tracks are copied in proportion to their frequency); a *walk* run starts from a track drawn
  from the user's taste and popularity and then follows the catalogue: next track of the album,
  another track of the artist, or a sparse weighted track-to-track graph.  Order therefore carries
  signal in both familiar and discovery listening.
* Discovery phases: each session keeps the user's focus genre or, with probability
  ``focus_switch``, draws a new one from the taste; a walk starts in the focus genre with
  probability ``focus_share``.  Recent discoveries then predict the next ones better than the
  whole history does.
* New releases: a share ``fresh_share`` of walk starts draws, by popularity, among the chosen
  genre's tracks released in the last ``fresh_days`` days, as listeners go to what just came out.
  A track's audience is then concentrated after its release, so what a user discovered lately
  tells the time, which a model of the whole history does not see.
* The share of replay runs is calibrated per user (repeated passes over the same random numbers)
  so the measured familiar share of listens lands near ``familiar_target`` even though walks also
  reach known tracks.
* Feedback: skips are more likely for tracks off the user's taste, for first listens and for
  recommendation-driven listens; ``played_ratio_pct`` is bimodal with a few rewinds above 100;
  likes follow full plays of well-fitting tracks, dislikes follow skips; a share is undone later.

Determinism: every random stream comes from ``SeedSequence(seed, spawn_key=(stream, index))``;
users are simulated in fixed chunks of ``chunk_users``, each with its own stream, and written in
chunk order, so the files depend only on the parameters, never on worker count or timing.
Everything inside a chunk is vectorised; Python loops run per chunk and per step of a walk.
"""

from __future__ import annotations

import json
import logging
import math
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import ConfigDict, Field, model_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass

from musicrec.data.yambda import layout
from musicrec.data.yambda.layout import (
    ALBUM_MAPPING,
    ARTIST_MAPPING,
    EMBEDDING_SCHEMA,
    EVENT_FILES,
    EVENT_TYPES,
    MULTI_EVENT,
)
from musicrec.data.yambda.writer import YambdaWriter

log = logging.getLogger(__name__)

# The event files in the order chunks produce them: the separate files, then their union.
EVENT_STEMS = (*EVENT_FILES, MULTI_EVENT)
FEEDBACK_STEMS = EVENT_STEMS[1:5]
DAY = 86_400
SESSION_GAP = 1_800  # docs/decisions.md: the default session gap
SKIP_BELOW = 20

LISTEN_SCHEMA = layout.schema("listens")
FEEDBACK_SCHEMA = layout.schema("likes")
MULTI_SCHEMA = layout.schema(MULTI_EVENT)
ARTIST_SCHEMA = layout.schema(ARTIST_MAPPING)
ALBUM_SCHEMA = layout.schema(ALBUM_MAPPING)
_EMBED_BLOCK = 65_536
_PLANNED_SECONDS_PER_LISTEN = 190  # slightly above the mean played time so sessions rarely overrun
_TIME_BITS = 36  # timestamps and their differences fit in 35 bits; user offsets go above
_CALIBRATION_ROUNDS = 2


# ----------------------------------------------------------------------------- parameters


MAX_ID = 2**31 - 1  # ids must fit a signed 32-bit int once read (docs/tables.md)
Share = Annotated[float, Field(ge=0, le=1)]
SmallShare = Annotated[float, Field(ge=0, le=0.5)]
Positive = Annotated[int, Field(ge=1)]


@pydantic_dataclass(
    frozen=True, config=ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, validate_default=True)
)
class GeneratorParams:
    """Every knob of the generator; ``preset()`` gives the shipped shapes.

    Strict: a value of the wrong type (``"100"`` for an int, ``1`` for a bool) is an error naming
    the field, as is a value out of its range.
    """

    name: Annotated[str, Field(pattern=r"^[^/\s](?:[^/]*[^/\s])?$")] = "custom"  # a folder name
    # scale
    n_users: Annotated[int, Field(ge=1, le=MAX_ID)] = 300
    n_items: Annotated[int, Field(ge=1, le=MAX_ID)] = 5_000
    median_history: Positive = 200  # listens per user (log-normal median)
    history_sigma: Annotated[float, Field(ge=0, le=3)] = 1.1
    min_history: Positive = 3
    max_history: Positive = 60_000  # keeps a user's listening time well inside the period
    # catalogue
    n_artists: Annotated[int, Field(ge=1, le=MAX_ID)] = 600
    n_genres: Annotated[int, Field(ge=1, le=1_000)] = 12
    mean_album_size: Annotated[float, Field(ge=1)] = 8.0
    artist_zipf: Annotated[float, Field(ge=0, le=3)] = 1.0
    track_zipf: Annotated[float, Field(ge=0, le=3)] = 0.9
    multi_artist_share: Share = 0.04
    unmapped_share: SmallShare = 0.005
    new_release_share: Share = 0.25
    graph_degree: Annotated[int, Field(ge=1, le=64)] = 8
    graph_decay: Annotated[float, Field(gt=0, le=1)] = 0.6  # weight of the k-th neighbour relative to the (k-1)-th
    graph_same_genre: Share = 0.85
    embed_dim: Annotated[int, Field(ge=2, le=4096)] = 64
    # users and sessions
    days: Annotated[int, Field(ge=2, le=45_000)] = 300  # history days (uint32 seconds); the test day follows
    taste_concentration: Annotated[float, Field(gt=0)] = 0.3
    # a user's taste moves linearly over their activity window from their first taste to
    # (1 - taste_drift) * first + taste_drift * a second one drawn alike: replays keep the old
    # taste alive in what they listen to, discoveries follow the current one
    taste_drift: Share = 0.5
    session_mean: Annotated[float, Field(ge=1)] = 12.0  # tracks per session, mean over users
    run_mean: Annotated[float, Field(ge=1)] = 4.0  # tracks per replay/walk run
    late_start_share: Share = 0.4  # users who join after day 0
    churn_share: Share = 0.1  # users who stop before the end
    # familiar vs discovery
    familiar_target: Annotated[float, Field(ge=0, lt=1)] = 0.65
    min_repeat_lag: Positive = 5
    album_continue: Share = 0.3
    artist_continue: Share = 0.2
    # discovery phases: a user's walks start in the current *focus* genre with probability
    # focus_share (else anywhere in their taste); each session moves to a new focus, drawn from
    # the taste, with probability focus_switch
    focus_share: Share = 0.6
    focus_switch: Share = 0.25
    # new releases: a share of walk starts draws among the genre's releases of the last fresh_days
    # days (the whole genre when it released nothing then)
    fresh_share: Share = 0.3
    fresh_days: Annotated[int, Field(ge=1, le=45_000)] = 28
    # feedback (the skip_* are logits)
    skip_base: float = -2.7
    skip_poor_fit: float = 2.5
    skip_novelty: float = 1.2
    skip_recommended: float = 0.3
    partial_share: Share = 0.12  # non-skips stopped between 20% and 95%
    overplay_share: Share = 0.03  # non-skips above 100% (rewinds)
    organic_familiar: Share = 0.65
    organic_discovery: Share = 0.3
    like_rate: SmallShare = 0.04
    dislike_rate: SmallShare = 0.005
    unlike_share: Share = 0.04
    undislike_share: Share = 0.1
    null_share: SmallShare = 0.001  # listens with null played ratio and track length
    # execution
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 0
    chunk_users: Annotated[int, Field(ge=1, le=1_000_000)] = 250
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    write_sequential: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> GeneratorParams:
        if not self.min_history <= self.median_history <= self.max_history:
            raise ValueError(
                "GeneratorParams.median_history must lie within [min_history, max_history], got "
                f"{self.min_history} <= {self.median_history} <= {self.max_history}"
            )
        if self.album_continue + self.artist_continue > 1:
            raise ValueError("GeneratorParams.album_continue + artist_continue must be <= 1")
        if self.partial_share + self.overplay_share > 0.8:
            raise ValueError("GeneratorParams.partial_share + overplay_share must be <= 0.8")
        if self.n_artists < self.n_genres or self.n_items < self.n_genres:
            raise ValueError("GeneratorParams.n_genres must not exceed n_artists or n_items")
        if self.max_history * _PLANNED_SECONDS_PER_LISTEN > 0.8 * self.days * DAY:
            raise ValueError(
                f"GeneratorParams.max_history={self.max_history} listens do not fit in days={self.days}"
            )
        return self


PRESETS: dict[str, GeneratorParams] = {
    # Hundreds of events for unit tests and smoke runs; reactions, their undoing and unmapped tracks
    # are boosted so that every file and every edge case appears even at this size.
    "tiny": GeneratorParams(
        name="tiny",
        n_users=30,
        n_items=400,
        median_history=16,
        history_sigma=0.6,
        min_history=8,
        max_history=200,
        n_artists=60,
        n_genres=4,
        unmapped_share=0.03,
        dislike_rate=0.06,
        unlike_share=0.3,
        undislike_share=0.4,
        embed_dim=16,
        chunk_users=30,
        write_sequential=True,
    ),
    # About 1M listens: the demo.
    "small": GeneratorParams(
        name="small",
        n_users=2_000,
        n_items=40_000,
        median_history=260,
        history_sigma=1.1,
        n_artists=5_000,
        n_genres=16,
        chunk_users=500,
    ),
    # About 10M listens.
    "medium": GeneratorParams(
        name="medium",
        n_users=5_000,
        n_items=150_000,
        median_history=1_070,
        history_sigma=1.1,
        n_artists=18_000,
        n_genres=20,
        chunk_users=250,
        workers=2,
    ),
    # The Yambda-50M shape: 10,000 users, ~47M listens (Yambda-50M: 934k tracks, most of them
    # rarely heard; 400k tracks keep that long tail while the downstream jobs stay fast).
    "yambda-50m": GeneratorParams(
        name="yambda-50m",
        n_users=10_000,
        n_items=400_000,
        median_history=2_520,
        history_sigma=1.1,
        n_artists=45_000,
        n_genres=24,
        chunk_users=125,
        workers=2,
    ),
}


def preset(name: str, **overrides: Any) -> GeneratorParams:
    """A shipped preset with some fields replaced (and validated again)."""
    if name not in PRESETS:
        raise ValueError(f"unknown generator preset {name!r}; presets: {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)  # validated again; an unknown field is an error


def _rng(seed: int, stream: int, index: int = 0) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(stream, index))))


_STREAM_CATALOGUE, _STREAM_USERS, _STREAM_CHUNK, _STREAM_EMBED, _STREAM_FRESH, _STREAM_DRIFT = range(6)


# ----------------------------------------------------------------------------- catalogue


@dataclass
class _Catalogue:
    """Tracks in internal order: sorted by primary artist, then album, then track number."""

    artist: np.ndarray  # primary artist per track (internal artist index)
    album: np.ndarray  # internal album index; an album is a contiguous range
    genre: np.ndarray
    release: np.ndarray  # seconds; albums released after 0 are the new releases
    length: np.ndarray  # track length in seconds, a multiple of 5
    quality: np.ndarray  # item-level skip propensity
    acum: np.ndarray  # exclusive cumulative popularity in internal order (n + 1)
    artist_lo: np.ndarray
    artist_hi: np.ndarray
    genre_order: np.ndarray  # internal ids sorted by (genre, release)
    genre_key: np.ndarray  # genre << 32 | release, in genre_order
    gcum: np.ndarray  # exclusive cumulative popularity in genre_order (n + 1)
    genre_lo: np.ndarray
    genre_hi: np.ndarray
    released_by_day: np.ndarray  # (genre, day) -> end of the genre's released range in genre_order
    nbr: np.ndarray  # (n, K) transition graph, strongest neighbour first
    nbr_cum: np.ndarray  # cumulative neighbour choice probabilities (K)
    item_id: np.ndarray  # external uint32 id per internal track
    artist_id: np.ndarray  # external id per internal artist
    album_id: np.ndarray  # external id per internal album
    extra_item: np.ndarray  # featured artists: internal track ...
    extra_artist: np.ndarray  # ... and internal artist
    unmapped: np.ndarray  # bool per track: no artist row at all
    artist_genre: np.ndarray

    @property
    def n(self) -> int:
        return len(self.artist)


def _build_catalogue(p: GeneratorParams) -> _Catalogue:
    rng = _rng(p.seed, _STREAM_CATALOGUE)
    n, n_art, g_n = p.n_items, p.n_artists, p.n_genres
    span = (p.days + 1) * DAY

    artist_pop = np.empty(n_art)
    artist_pop[rng.permutation(n_art)] = np.arange(1, n_art + 1, dtype=np.float64) ** -p.artist_zipf
    genre_share = np.arange(1, g_n + 1, dtype=np.float64) ** -0.7
    genre_share /= genre_share.sum()
    # The first n_genres artists each own one of the first tracks, so no genre is ever empty.
    artist_genre = np.concatenate([np.arange(g_n), rng.choice(g_n, n_art - g_n, p=genre_share)])
    catalogue_share = np.sqrt(artist_pop) / np.sqrt(artist_pop).sum()  # popular artists have more tracks
    artist = np.sort(np.concatenate([np.arange(g_n), rng.choice(n_art, n - g_n, p=catalogue_share)]))
    artist_lo = np.searchsorted(artist, np.arange(n_art), side="left")
    artist_hi = np.searchsorted(artist, np.arange(n_art), side="right")

    album_break = np.ones(n, dtype=bool)
    album_break[1:] = (artist[1:] != artist[:-1]) | (rng.random(n - 1) < 1 / p.mean_album_size)
    album = np.cumsum(album_break) - 1
    n_alb = int(album[-1]) + 1

    # Zipf within the artist over a random ranking of the artist's tracks.
    order = np.lexsort((rng.random(n), artist))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - artist_lo[artist[order]]
    weight = artist_pop[artist] * (rank + 1.0) ** -p.track_zipf
    genre = artist_genre[artist]

    album_release = np.where(
        rng.random(n_alb) < p.new_release_share, rng.integers(0, p.days + 1, n_alb) * DAY, 0
    ).astype(np.int64)
    # The most popular track of every genre is back catalogue, so a taste draw always has a choice.
    top = pd.Series(weight).groupby(genre).idxmax().to_numpy()
    album_release[album[top]] = 0
    release = album_release[album]
    assert release.max() < span

    length = (np.clip(rng.lognormal(np.log(205), 0.35, n), 30, 1_200) // 5 * 5).astype(np.int64)
    quality = rng.normal(0.0, 0.5, n)

    acum = np.concatenate([[0.0], np.cumsum(weight)])
    genre_order = np.lexsort((np.arange(n), release, genre))
    genre_key = (genre[genre_order].astype(np.int64) << 32) | release[genre_order]
    gcum = np.concatenate([[0.0], np.cumsum(weight[genre_order])])
    genre_lo = np.searchsorted(genre_key, np.arange(g_n, dtype=np.int64) << 32)
    genre_hi = np.searchsorted(genre_key, (np.arange(g_n, dtype=np.int64) + 1) << 32)
    # Releases happen at midnight, so "released by t" only depends on t's day: a lookup table.
    day_keys = (np.arange(g_n, dtype=np.int64)[:, None] << 32) | (np.arange(p.days + 1) * DAY)[None, :]
    released_by_day = np.searchsorted(genre_key, day_keys, side="right")

    k = p.graph_degree
    same = rng.random((n, k)) < p.graph_same_genre
    u = rng.random((n, k))
    nbr = np.empty((n, k), dtype=np.int64)
    g = np.broadcast_to(genre[:, None], (n, k))[same]
    nbr[same] = genre_order[_pick(gcum, genre_lo[g], genre_hi[g], u[same])]
    other = np.count_nonzero(~same)
    nbr[~same] = _pick(acum, np.zeros(other, dtype=np.int64), np.full(other, n), u[~same])
    rows, cols = np.nonzero(nbr == np.arange(n)[:, None])
    nbr[rows, cols] = (rows + 1) % n
    nbr_w = p.graph_decay ** np.arange(k)
    nbr_cum = np.cumsum(nbr_w) / nbr_w.sum()

    n_multi = int(round(p.multi_artist_share * n))
    n_unmapped = int(round(p.unmapped_share * n))
    chosen = rng.permutation(n)
    unmapped = np.zeros(n, dtype=bool)
    unmapped[chosen[:n_unmapped]] = True
    multi = chosen[n_unmapped : n_unmapped + n_multi]
    n_extra = 1 + (rng.random(len(multi)) < 0.25)  # one featured artist, sometimes two
    extra_item = np.repeat(multi, n_extra)
    pop_p = artist_pop / artist_pop.sum()
    extra_artist = rng.choice(n_art, len(extra_item), p=pop_p)
    keep = extra_artist != artist[extra_item]
    return _Catalogue(
        artist=artist.astype(np.int32),
        album=album.astype(np.int32),
        genre=genre.astype(np.int32),
        release=release,
        length=length,
        quality=quality,
        acum=acum,
        artist_lo=artist_lo,
        artist_hi=artist_hi,
        genre_order=genre_order.astype(np.int32),
        genre_key=genre_key,
        gcum=gcum,
        genre_lo=genre_lo,
        genre_hi=genre_hi,
        released_by_day=released_by_day,
        nbr=nbr.astype(np.int32),
        nbr_cum=nbr_cum,
        item_id=rng.permutation(n).astype(np.uint32),
        artist_id=rng.permutation(n_art).astype(np.uint32),
        album_id=rng.permutation(n_alb).astype(np.uint32),
        extra_item=extra_item[keep],
        extra_artist=extra_artist[keep],
        unmapped=unmapped,
        artist_genre=artist_genre,
    )


def _pick(cum: np.ndarray, lo: np.ndarray, hi: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Index in [lo, hi) drawn with the weights whose exclusive cumulative sum is ``cum``."""
    base = cum[lo]
    j = np.searchsorted(cum, base + u * (cum[hi] - base), side="right") - 1
    return np.clip(j, lo, hi - 1)


# ----------------------------------------------------------------------------- users


@dataclass
class _Users:
    n_events: np.ndarray
    taste: np.ndarray  # (n_users, n_genres) at the start of the window, rows sum to 1
    taste_end: np.ndarray  # the same at its end
    start: np.ndarray
    end: np.ndarray
    session_break: np.ndarray  # per-event probability that a new session starts
    skip_bias: np.ndarray


def _dirichlet_rows(rng: np.random.Generator, alpha: np.ndarray, n: int) -> np.ndarray:
    rows = np.maximum(rng.dirichlet(alpha, n), 1e-9)  # Dirichlet rows can underflow to exact zeros
    return rows / rows.sum(axis=1, keepdims=True)


def _build_users(p: GeneratorParams) -> _Users:
    rng = _rng(p.seed, _STREAM_USERS)
    n = p.n_users
    span = (p.days + 1) * DAY
    n_events = np.clip(
        np.rint(p.median_history * np.exp(p.history_sigma * rng.standard_normal(n))),
        p.min_history,
        p.max_history,
    ).astype(np.int64)
    genre_share = np.arange(1, p.n_genres + 1, dtype=np.float64) ** -0.7
    alpha = p.taste_concentration * p.n_genres * genre_share / genre_share.sum()
    taste = _dirichlet_rows(rng, alpha, n)
    # its own stream, so taste_drift=0 leaves every other draw as it was
    later = _dirichlet_rows(_rng(p.seed, _STREAM_DRIFT), alpha, n)
    taste_end = (1 - p.taste_drift) * taste + p.taste_drift * later
    late = rng.random(n) < p.late_start_share
    start = np.where(late, rng.random(n) * 0.8 * p.days * DAY, 0.0)
    churn = rng.random(n) < p.churn_share
    end = np.where(churn, start + (span - start) * (0.5 + 0.5 * rng.random(n)), float(span))
    session_mean = np.maximum(p.session_mean * rng.lognormal(0.0, 0.5, n), 1.5)
    return _Users(
        n_events=n_events,
        taste=taste,
        taste_end=taste_end,
        start=start,
        end=end,
        session_break=1.0 / session_mean,
        skip_bias=rng.normal(0.0, 0.5, n),
    )


# ----------------------------------------------------------------------------- one chunk of users


def _seg_exclusive_cumsum(values: np.ndarray, seg: np.ndarray, seg_first: np.ndarray) -> np.ndarray:
    """Sum of the earlier values of the same segment (segments are contiguous, ``seg`` their ids)."""
    excl = np.cumsum(values) - values
    return excl - excl[seg_first[seg]]


class _Chunk:
    """The simulation of users [lo, hi): items first, then feedback, then time."""

    def __init__(self, cat: _Catalogue, users: _Users, p: GeneratorParams, index: int) -> None:
        self.cat, self.p = cat, p
        self.lo = index * p.chunk_users
        hi = min(self.lo + p.chunk_users, p.n_users)
        self.nu = hi - self.lo
        rng = _rng(p.seed, _STREAM_CHUNK, index)
        self.rng = rng
        n_ev = users.n_events[self.lo : hi]
        self.taste = users.taste[self.lo : hi]
        self.taste_end = users.taste_end[self.lo : hi]
        self.skip_bias = users.skip_bias[self.lo : hi]
        self.window = (users.start[self.lo : hi], users.end[self.lo : hi])
        n = int(n_ev.sum())
        self.n = n
        self.user_first = np.concatenate([[0], np.cumsum(n_ev)[:-1]])
        self.ev_user = np.repeat(np.arange(self.nu), n_ev)
        self.pos = np.arange(n) - self.user_first[self.ev_user]

        sess_start = (self.pos == 0) | (rng.random(n) < users.session_break[self.lo : hi][self.ev_user])
        run_start = sess_start | (rng.random(n) < 1.0 / p.run_mean)
        self.sess_first = np.flatnonzero(sess_start)
        self.sess = np.cumsum(sess_start) - 1
        self.run_first = np.flatnonzero(run_start)
        self.run = np.cumsum(run_start) - 1
        self.run_len = np.diff(np.append(self.run_first, n))
        n_runs = len(self.run_first)
        self.u_mode, self.u_lag, self.u_org, self.u_focus = rng.random((4, n_runs))
        # its own stream, so fresh_share=0 writes exactly what the generator wrote before it existed
        self.u_fresh = _rng(p.seed, _STREAM_FRESH, index).random(n_runs)
        self.u_genre, self.u_pick, self.u_kind, self.u_step = rng.random((4, n))
        self.session_time = self._plan_sessions()[self.sess]
        start, end = self.window
        user_start, user_span = start[self.ev_user], np.maximum(end - start, 1.0)[self.ev_user]
        self.progress = np.clip((self.session_time - user_start) / user_span, 0.0, 1.0)
        self.focus = self._focus_genres()

    def _focus_genres(self) -> np.ndarray:
        """The focus genre of each event's session: a user's first session opens a phase, each
        later one opens a new phase with probability ``focus_switch``, and a phase's genre is drawn
        from the user's taste."""
        first = self.sess_first
        u_switch, u_genre = self.rng.random((2, len(first)))
        opens = (self.pos[first] == 0) | (u_switch < self.p.focus_switch)
        phase = np.cumsum(opens) - 1
        genre = self._taste_genre(first[opens], u_genre[opens])
        return genre[phase][self.sess]

    # -- time ---------------------------------------------------------------------------------

    def _plan_sessions(self) -> np.ndarray:
        """Planned session start times: the user's window minus planned listening, split into
        bursty gaps (Dirichlet with shape < 1) of at least ``SESSION_GAP``."""
        rng, nu = self.rng, self.nu
        start, end = self.window
        sess_user = self.ev_user[self.sess_first]
        sess_len = np.diff(np.append(self.sess_first, self.n))
        n_sess = np.bincount(sess_user, minlength=nu)
        planned = sess_len * float(_PLANNED_SECONDS_PER_LISTEN)
        busy = np.bincount(sess_user, planned, minlength=nu)
        need = busy + n_sess * SESSION_GAP
        start = np.where(end - start < need, np.maximum(0.0, end - need), start)
        min_gap = np.minimum(SESSION_GAP, np.maximum(end - start - busy, 0.0) / n_sess / 2)
        free = np.maximum(end - start - busy - n_sess * min_gap, 0.0)
        g = rng.gamma(0.5, size=len(sess_user))
        slack = rng.gamma(0.5, size=nu)
        total = np.bincount(sess_user, g, minlength=nu) + slack
        user_sess_first = np.searchsorted(sess_user, np.arange(nu))
        first_of_user = np.zeros(len(sess_user), dtype=bool)
        first_of_user[user_sess_first] = True
        before = free[sess_user] * g / total[sess_user] + np.where(first_of_user, 0.0, min_gap[sess_user])
        step = before + planned
        planned_start = start[sess_user] + _seg_exclusive_cumsum(step, sess_user, user_sess_first) + before
        return (planned_start // 5 * 5).astype(np.int64)

    def timestamps(self, gap: np.ndarray) -> np.ndarray:
        """Event times from played durations: sessions start at their planned time unless the
        previous session of the user is still playing."""
        sess_user = self.ev_user[self.sess_first]
        planned = self.session_time[self.sess_first]
        dur = np.bincount(self.sess, gap, minlength=len(self.sess_first)).astype(np.int64)
        user_sess_first = np.searchsorted(sess_user, np.arange(self.nu))
        played_before = _seg_exclusive_cumsum(dur, sess_user, user_sess_first)
        offset = sess_user.astype(np.int64) << _TIME_BITS
        real = np.maximum.accumulate(planned - played_before + offset) - offset + played_before
        return real[self.sess] + _seg_exclusive_cumsum(gap, self.sess, self.sess_first)

    # -- items --------------------------------------------------------------------------------

    def taste_at(self, ev: np.ndarray) -> np.ndarray:
        """Each event's user's taste at the event's session (rows sum to 1)."""
        user, f = self.ev_user[ev], self.progress[ev][:, None]
        return (1 - f) * self.taste[user] + f * self.taste_end[user]

    def _taste_genre(self, ev: np.ndarray, u: np.ndarray) -> np.ndarray:
        cum = np.cumsum(self.taste_at(ev), axis=1)
        return np.minimum((cum <= u[:, None]).sum(axis=1), self.p.n_genres - 1)

    def _taste_draw(self, ev: np.ndarray) -> np.ndarray:
        """A genre (the session's focus for a share of walk starts, else one from the user's
        taste), then one of its released tracks by popularity: for a share of starts one of its
        recent releases."""
        g = self._taste_genre(ev, self.u_genre[ev])
        focused = self.u_focus[self.run[ev]] < self.p.focus_share
        g[focused] = self.focus[ev[focused]]
        cat = self.cat
        day = self.session_time[ev] // DAY
        hi = cat.released_by_day[g, day]
        lo = cat.genre_lo[g]
        fresh_lo = cat.released_by_day[g, np.maximum(day - self.p.fresh_days, 0)]
        fresh = (self.u_fresh[self.run[ev]] < self.p.fresh_share) & (fresh_lo < hi)
        lo[fresh] = fresh_lo[fresh]
        return cat.genre_order[_pick(cat.gcum, lo, hi, self.u_pick[ev])]

    def _walk_step(self, prev: np.ndarray, ev: np.ndarray) -> np.ndarray:
        cat, p = self.cat, self.p
        kind, r = self.u_kind[ev], self.u_step[ev]
        k = np.minimum(np.searchsorted(cat.nbr_cum, r, side="right"), len(cat.nbr_cum) - 1)
        nxt = cat.nbr[prev, k]
        by_artist = (kind >= p.album_continue) & (kind < p.album_continue + p.artist_continue)
        a = cat.artist[prev[by_artist]]
        nxt[by_artist] = _pick(cat.acum, cat.artist_lo[a], cat.artist_hi[a], r[by_artist])
        following = np.minimum(prev + 1, cat.n - 1)
        by_album = (kind < p.album_continue) & (following != prev) & (cat.album[following] == cat.album[prev])
        nxt[by_album] = following[by_album]
        late = cat.release[nxt] > self.session_time[ev]
        nxt[late] = self._taste_draw(ev[late])
        return nxt

    def assign_items(self, p_replay: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Items of every event given each user's replay probability; returns (internal item per
        event, replay-run flag per run)."""
        run_pos = self.pos[self.run_first]
        replay = (self.u_mode < p_replay[self.ev_user[self.run_first]]) & (run_pos > 0)
        low = np.minimum(self.p.min_repeat_lag, np.maximum(run_pos, 1))
        lag = np.rint(low * (np.maximum(run_pos, 1) / low) ** self.u_lag).astype(np.int64)
        lag = np.clip(lag, 1, np.maximum(run_pos, 1))
        src = np.arange(self.n)
        on_replay = replay[self.run]
        src[on_replay] -= lag[self.run[on_replay]]

        items = np.zeros(self.n, dtype=np.int32)
        walks = np.flatnonzero(~replay)
        walks = walks[np.argsort(-self.run_len[walks], kind="stable")]  # active walks form a prefix
        first, length = self.run_first[walks], self.run_len[walks]
        active = np.searchsorted(-length, -np.arange(1, int(length.max(initial=0)) + 1), side="right")
        for step, k in enumerate(active):
            ev = first[:k] + step
            items[ev] = self._taste_draw(ev) if step == 0 else self._walk_step(items[ev - 1], ev)
        while True:  # pointer jumping: every replayed event points at the walk event it copies
            nxt = src[src]
            if np.array_equal(nxt, src):
                break
            src = nxt
        return items[src], replay

    def first_listens(self, items: np.ndarray, replay: np.ndarray) -> np.ndarray:
        """True where the user hears the track for the first time; only walk events can be."""
        walk_ev = np.flatnonzero(~replay[self.run])
        key = self.ev_user[walk_ev].astype(np.int64) * self.cat.n + items[walk_ev]
        new = np.zeros(self.n, dtype=bool)
        new[walk_ev[~pd.Series(key).duplicated().to_numpy()]] = True
        return new

    def calibrated_items(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Passes over the same random numbers: each measures how often a user's walks reach known
        tracks and sets the replay share for the next so the familiar share hits the target.  Two
        rounds, because a lower replay share means more walks and so more collisions."""
        target = self.p.familiar_target
        n_ev = np.bincount(self.ev_user, minlength=self.nu)
        # The first run of a user cannot be a replay: scale up by the share of events after it.
        first_run = self.run_len[self.run[self.user_first]]
        eligible = np.maximum(n_ev - first_run, 1) / n_ev
        p_replay = np.full(self.nu, target)
        for _ in range(_CALIBRATION_ROUNDS):
            items, replay = self.assign_items(p_replay)
            new = self.first_listens(items, replay)
            walk = ~replay[self.run]
            walked = np.bincount(self.ev_user, walk, minlength=self.nu)
            collide = np.bincount(self.ev_user, walk & ~new, minlength=self.nu) / np.maximum(walked, 1)
            want = np.clip((target - collide) / np.maximum(1 - collide, 1e-9), 0.0, 1.0)
            p_replay = np.clip(want / eligible, 0.0, 0.97)
        items, replay = self.assign_items(p_replay)
        return items, replay, self.first_listens(items, replay)

    # -- everything ---------------------------------------------------------------------------

    def simulate(self) -> dict[str, Any]:
        cat, p, rng, n = self.cat, self.p, self.rng, self.n
        span = (p.days + 1) * DAY
        items, replay, new = self.calibrated_items()
        on_replay = replay[self.run]
        organic = self.u_org < np.where(replay, p.organic_familiar, p.organic_discovery)
        organic = organic[self.run]

        genre = cat.genre[items]
        taste = self.taste_at(self.sess_first)  # constant within a session
        fit = taste[self.sess, genre] / taste.max(axis=1)[self.sess]
        logit = (
            p.skip_base
            + p.skip_poor_fit * (1 - fit)
            + p.skip_novelty * new
            + p.skip_recommended * ~organic
            + self.skip_bias[self.ev_user]
            - cat.quality[items]
        )
        u_skip, u_class, u_value, u_null = rng.random((4, n))
        skip = u_skip < 1 / (1 + np.exp(-logit))
        ratio = np.full(n, 100, dtype=np.int64)
        partial = ~skip & (u_class < p.partial_share)
        over = ~skip & (u_class >= 1 - p.overplay_share)
        near = ~skip & ~partial & ~over & (u_class >= 1 - p.overplay_share - 0.12)
        ratio[skip] = np.floor(SKIP_BELOW * u_value[skip] ** 1.6)
        ratio[partial] = 20 + np.floor(75 * u_value[partial])
        ratio[near] = 95 + np.floor(5 * u_value[near])
        ratio[over] = 101 + np.floor(200 * u_value[over] ** 3)
        length = cat.length[items]
        gap = np.maximum(5, -(-(length * ratio) // 500) * 5)  # played seconds rounded up to 5
        ts = self.timestamps(gap)
        kept = ts < span  # a heavy user's last listens can spill past the period: dropped

        # Reactions follow a play whose ratio is written: a like on a listen written with a null
        # ratio would stand behind the user's other, shorter plays of the track in the files.
        null = u_null < p.null_share
        seen = kept & ~null
        like_ev = self._feedback(seen & (ratio >= 80), p.like_rate * (0.2 + 1.6 * fit**2), items)
        dislike_ev = self._feedback(seen & skip, p.dislike_rate * (1.6 - fit), items)
        like_ts = self._during(ts, gap, like_ev, span)
        dislike_ts = self._during(ts, gap, dislike_ev, span)
        unlike_ev, unlike_ts = self._undo(like_ev, like_ts, p.unlike_share, span)
        undislike_ev, undislike_ts = self._undo(dislike_ev, dislike_ts, p.undislike_share, span)

        uid = (self.lo + self.ev_user).astype(np.uint32)
        ext = cat.item_id[items]
        listens = {
            "uid": uid[kept],
            "item_id": ext[kept],
            "timestamp": ts[kept].astype(np.uint32),
            "is_organic": organic[kept].astype(np.uint8),
            "played_ratio_pct": ratio[kept].astype(np.uint16),
            "track_length_seconds": length[kept].astype(np.uint32),
            "null": null[kept],
        }
        feedback = {}
        for name, ev, when in (
            ("likes", like_ev, like_ts),
            ("dislikes", dislike_ev, dislike_ts),
            ("unlikes", unlike_ev, unlike_ts),
            ("undislikes", undislike_ev, undislike_ts),
        ):
            order = np.lexsort((ext[ev], when, uid[ev]))
            feedback[name] = {
                "uid": uid[ev][order],
                "item_id": ext[ev][order],
                "timestamp": when[order].astype(np.uint32),
                "is_organic": organic[ev][order].astype(np.uint8),
            }
        stats = self._stats(listens, new[kept], on_replay[kept], items[kept])
        stats["dropped_past_end"] = int(n - kept.sum())
        return {"listens": listens, **feedback, "stats": stats}

    def _feedback(self, eligible: np.ndarray, prob: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Events drawn with ``prob`` among ``eligible``, at most one per (user, track)."""
        ev = np.flatnonzero(eligible & (self.rng.random(self.n) < prob))
        key = self.ev_user[ev].astype(np.int64) * self.cat.n + items[ev]
        return ev[~pd.Series(key).duplicated().to_numpy()]

    def _during(self, ts: np.ndarray, gap: np.ndarray, ev: np.ndarray, span: int) -> np.ndarray:
        """A moment while the listen plays (a multiple of 5)."""
        offset = np.floor(self.rng.random(len(ev)) * (gap[ev] // 5)).astype(np.int64) * 5
        return np.minimum(ts[ev] + offset, span - 5)

    def _undo(
        self, ev: np.ndarray, when: np.ndarray, share: float, span: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Un-likes/un-dislikes: a share of the reactions, undone hours to weeks later."""
        u, delay = self.rng.random(len(ev)), self.rng.lognormal(np.log(3 * DAY), 1.2, len(ev))
        later = when + np.ceil(delay / 5).astype(np.int64) * 5
        keep = (u < share) & (later < span)
        return ev[keep], later[keep]

    def _stats(
        self, listens: dict[str, np.ndarray], new: np.ndarray, on_replay: np.ndarray, items: np.ndarray
    ) -> dict[str, Any]:
        cat = self.cat
        uid, ts, org = listens["uid"], listens["timestamp"].astype(np.int64), listens["is_organic"]
        valid = ~listens["null"]
        skipped = valid & (listens["played_ratio_pct"] < SKIP_BELOW)
        full = valid & (listens["played_ratio_pct"] >= 80)
        boundary = np.ones(len(uid), dtype=bool)
        boundary[1:] = (uid[1:] != uid[:-1]) | (ts[1:] - ts[:-1] > SESSION_GAP)
        same_user = uid[1:] == uid[:-1]
        return {
            "listens": len(uid),
            "familiar": int((~new).sum()),
            "replayed": int(on_replay.sum()),
            "skips": int(skipped.sum()),
            "with_ratio": int(valid.sum()),
            "null_ratio": int((~valid).sum()),
            "organic": int(org.sum()),
            "new_organic": int((new & (org == 1)).sum()),
            "new_recommended": int((new & (org == 0)).sum()),
            "new_skipped": int((new & skipped).sum()),
            "full_plays": int(full.sum()),
            "new_full_plays": int((new & full).sum()),
            "overplays": int((valid & (listens["played_ratio_pct"] > 100)).sum()),
            "item_counts": np.bincount(listens["item_id"], minlength=cat.n),
            "history": np.bincount(uid - self.lo, minlength=self.nu),
            "sessions": np.diff(np.append(np.flatnonzero(boundary), len(uid))),
            "pairs": int(same_user.sum()),
            "same_artist_pairs": int((same_user & (cat.artist[items[1:]] == cat.artist[items[:-1]])).sum()),
            "same_album_pairs": int((same_user & (cat.album[items[1:]] == cat.album[items[:-1]])).sum()),
            "max_timestamp": int(ts.max(initial=0)),
        }


def _run_chunk(index: int) -> dict[str, Any]:
    cat, users, p = _STATE["catalogue"], _STATE["users"], _STATE["params"]
    return _Chunk(cat, users, p, index).simulate()


# Set before forking workers, so the catalogue is shared copy-on-write instead of pickled.
_STATE: dict[str, Any] = {}


# ----------------------------------------------------------------------------- writing


def _listen_table(lst: dict[str, np.ndarray]) -> pa.Table:
    null = lst["null"]
    cols = [
        pa.array(lst["uid"]),
        pa.array(lst["item_id"]),
        pa.array(lst["timestamp"]),
        pa.array(lst["is_organic"]),
        pa.array(lst["played_ratio_pct"], mask=null if null.any() else None),
        pa.array(lst["track_length_seconds"], mask=null if null.any() else None),
    ]
    return pa.Table.from_arrays(cols, schema=LISTEN_SCHEMA)


def _feedback_table(fb: dict[str, np.ndarray]) -> pa.Table:
    return pa.Table.from_arrays([pa.array(fb[f.name]) for f in FEEDBACK_SCHEMA], schema=FEEDBACK_SCHEMA)


def _multi_table(listens: pa.Table, feedback: dict[str, dict[str, np.ndarray]]) -> pa.Table:
    """Listens merged with the reactions in (uid, timestamp, item_id, event type) order.

    Listens are already in that order and reactions are few, so each reaction's position comes from
    a binary search instead of sorting everything."""
    parts = [(code, feedback[name]) for code, name in enumerate(FEEDBACK_STEMS, start=1)]
    ou, ot, oi, oo = (
        np.concatenate([fb[col] for _, fb in parts]) for col in ("uid", "timestamp", "item_id", "is_organic")
    )
    oc = np.concatenate([np.full(len(fb["uid"]), code, dtype=np.int8) for code, fb in parts])
    order = np.lexsort((oc, oi, ot, ou))
    ou, ot, oi, oo, oc = ou[order], ot[order], oi[order], oo[order], oc[order]

    li = listens["item_id"].to_numpy()
    lkey = (listens["uid"].to_numpy().astype(np.int64) << 32) | listens["timestamp"].to_numpy()
    okey = (ou.astype(np.int64) << 32) | ot
    left = np.searchsorted(lkey, okey, side="left")
    right = np.searchsorted(lkey, okey, side="right")
    pos = left.copy()
    for j in range(int((right - left).max(initial=0))):  # listens in the same second: order by item
        probe = left + j
        pos += (probe < right) & (li[np.minimum(probe, len(li) - 1)] <= oi)
    n_listens, n = len(li), len(li) + len(ou)
    at = pos + np.arange(len(ou))
    take = np.empty(n, dtype=np.int64)
    is_listen = np.ones(n, dtype=bool)
    is_listen[at] = False
    take[is_listen] = np.arange(n_listens)
    take[at] = n_listens + np.arange(len(ou))
    codes = np.zeros(n, dtype=np.int8)
    codes[at] = oc

    missing = np.ones(len(ou), dtype=bool)
    others = {
        "uid": pa.array(ou),
        "item_id": pa.array(oi),
        "timestamp": pa.array(ot),
        "is_organic": pa.array(oo),
        "played_ratio_pct": pa.array(np.zeros(len(ou), np.uint16), mask=missing),
        "track_length_seconds": pa.array(np.zeros(len(ou), np.uint32), mask=missing),
    }
    index = pa.array(take)
    cols = [
        pc.take(pa.concat_arrays([listens[name].combine_chunks(), others[name]]), index)
        for name in LISTEN_SCHEMA.names
    ]
    cols.append(pc.take(pa.array(EVENT_TYPES, type=pa.string()), pa.array(codes)))
    return pa.Table.from_arrays(cols, schema=MULTI_SCHEMA)


def _artist_pairs(cat: _Catalogue) -> tuple[np.ndarray, np.ndarray]:
    """(internal track, internal artist) rows of the artist mapping, unique, in track order."""
    extra = ~cat.unmapped[cat.extra_item]
    track = np.concatenate([np.flatnonzero(~cat.unmapped), cat.extra_item[extra]])
    artist = np.concatenate([cat.artist[~cat.unmapped], cat.extra_artist[extra]])
    pairs = np.unique((track.astype(np.int64) << 32) | artist)
    return pairs >> 32, pairs & 0xFFFFFFFF


def _write_catalogue(cat: _Catalogue, p: GeneratorParams, writer: YambdaWriter) -> None:
    track, artist = _artist_pairs(cat)
    art_item, art_id = cat.item_id[track], cat.artist_id[artist]
    order = np.lexsort((art_id, art_item))
    writer.mapping(
        ARTIST_MAPPING,
        pa.Table.from_arrays([pa.array(art_id[order]), pa.array(art_item[order])], schema=ARTIST_SCHEMA),
    )
    order = np.argsort(cat.item_id)
    writer.mapping(
        ALBUM_MAPPING,
        pa.Table.from_arrays(
            [pa.array(cat.album_id[cat.album[order]]), pa.array(cat.item_id[order])], schema=ALBUM_SCHEMA
        ),
    )

    # Audio embeddings: genre centroid + artist offset + track noise, so tracks of one artist are
    # closest, then tracks of one genre.  Written in item_id order, in blocks to bound memory.
    d = p.embed_dim
    rng = _rng(p.seed, _STREAM_EMBED)
    centroid = (rng.standard_normal((p.n_genres, d)) / math.sqrt(d)).astype(np.float32)
    offset = (rng.standard_normal((p.n_artists, d)) * (0.7 / math.sqrt(d))).astype(np.float32)
    internal = np.argsort(cat.item_id)
    for block, lo in enumerate(range(0, cat.n, _EMBED_BLOCK)):
        idx = internal[lo : lo + _EMBED_BLOCK]
        brng = _rng(p.seed, _STREAM_EMBED, block + 1)
        noise = (brng.standard_normal((len(idx), d)) * (0.5 / math.sqrt(d))).astype(np.float32)
        scale = brng.lognormal(0.0, 0.2, len(idx)).astype(np.float32)[:, None]
        embed = (centroid[cat.genre[idx]] + offset[cat.artist[idx]] + noise) * scale
        normed = embed / np.linalg.norm(embed, axis=1, keepdims=True)
        offsets = pa.array(np.arange(len(idx) + 1, dtype=np.int32) * d)
        writer.embeddings(
            pa.Table.from_arrays(
                [
                    pa.array(cat.item_id[idx], type=pa.uint32()),
                    pa.ListArray.from_arrays(offsets, pa.array(embed.ravel(), type=pa.float32())),
                    pa.ListArray.from_arrays(offsets, pa.array(normed.ravel(), type=pa.float32())),
                ],
                schema=EMBEDDING_SCHEMA,
            ),
        )


# ----------------------------------------------------------------------------- summary


class _Totals:
    """Statistics summed over chunks."""

    def __init__(self, n_items: int) -> None:
        self.sums: dict[str, int] = {}
        self.item_counts = np.zeros(n_items, dtype=np.int64)
        self.history: list[np.ndarray] = []
        self.sessions: list[np.ndarray] = []
        self.counts = dict.fromkeys(EVENT_STEMS, 0)

    def add(self, stats: dict[str, Any], counts: dict[str, int]) -> None:
        for key, value in stats.items():
            if isinstance(value, int):
                self.sums[key] = (
                    max(self.sums.get(key, 0), value)
                    if key == "max_timestamp"
                    else self.sums.get(key, 0) + value
                )
        self.item_counts += stats["item_counts"]
        self.history.append(stats["history"])
        self.sessions.append(stats["sessions"])
        for name, count in counts.items():
            self.counts[name] += count


def _quantiles(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {}
    q = np.quantile(values, [0.1, 0.5, 0.9, 0.99])
    return {
        "min": int(values.min()),
        "p10": float(q[0]),
        "median": float(q[1]),
        "mean": float(values.mean()),
        "p90": float(q[2]),
        "p99": float(q[3]),
        "max": int(values.max()),
    }


def _popularity(counts: np.ndarray) -> dict[str, float]:
    """Share of listens of the top 1%/10% of the catalogue, and the Zipf exponent fitted by least
    squares on log(count) against log(rank) over the top 10% of the catalogue (listened items)."""
    ranked = np.sort(counts)[::-1]
    total = max(int(ranked.sum()), 1)
    n = len(ranked)
    top = ranked[: max(10, n // 10)]
    top = top[top > 0]
    exponent = (
        float(-np.polyfit(np.log(np.arange(1, len(top) + 1)), np.log(top), 1)[0]) if len(top) > 2 else 0.0
    )
    return {
        "top1pct_share": float(ranked[: max(1, n // 100)].sum() / total),
        "top10pct_share": float(ranked[: max(1, n // 10)].sum() / total),
        "zipf_exponent": exponent,
        "items_listened": int((counts > 0).sum()),
    }


def _summary(p: GeneratorParams, size: str, cat: _Catalogue, t: _Totals) -> dict[str, Any]:
    s = t.sums
    listens = max(s.get("listens", 0), 1)
    track, artist = _artist_pairs(cat)
    n_artists_per_item = np.bincount(track, minlength=cat.n)
    organic = s.get("organic", 0)
    return {
        "generator": "musicrec.data.generator",
        "size": size,
        "params": asdict(p),
        "n_users": p.n_users,
        "n_items": cat.n,
        "n_artists": int(len(np.unique(artist))),
        "n_albums": int(cat.album[-1]) + 1,
        "counts": dict(t.counts),
        "familiar_share": s.get("familiar", 0) / listens,
        "replay_share": s.get("replayed", 0) / listens,
        "skip_share": s.get("skips", 0) / max(s.get("with_ratio", 0), 1),
        "overplay_share": s.get("overplays", 0) / max(s.get("with_ratio", 0), 1),
        "null_played_ratio": s.get("null_ratio", 0),
        "organic_share": organic / listens,
        "discovery_share_organic": s.get("new_organic", 0) / max(organic, 1),
        "discovery_share_recommended": s.get("new_recommended", 0) / max(s.get("listens", 0) - organic, 1),
        "discovery_share_skipped": s.get("new_skipped", 0) / max(s.get("skips", 0), 1),
        "discovery_share_full_plays": s.get("new_full_plays", 0) / max(s.get("full_plays", 0), 1),
        "consecutive_same_artist_share": s.get("same_artist_pairs", 0) / max(s.get("pairs", 0), 1),
        "consecutive_same_album_share": s.get("same_album_pairs", 0) / max(s.get("pairs", 0), 1),
        "history_length": _quantiles(np.concatenate(t.history)),
        "session_length": {"gap_seconds": SESSION_GAP, **_quantiles(np.concatenate(t.sessions))},
        "popularity": _popularity(t.item_counts),
        "multi_artist_share": float((n_artists_per_item >= 2).mean()),
        "unmapped_items": int(cat.unmapped.sum()),
        "new_release_share": float((cat.release > 0).mean()),
        "max_timestamp": s.get("max_timestamp", 0),
        "listens_dropped_past_end": s.get("dropped_past_end", 0),
    }


# ----------------------------------------------------------------------------- entry points


def generate(
    params: GeneratorParams, out_root: str | Path, size: str | None = None, progress: bool = True
) -> dict[str, Any]:
    """Write a Yambda-layout root under ``out_root`` and return the summary also written to
    ``generator_summary.json``. ``size`` names the flat/sequential subdirectory (default: the
    preset name)."""
    size = size or params.name
    if not size or "/" in size or size in (".", ".."):
        raise ValueError(f"size must be a plain directory name, got {size!r}")
    root = Path(out_root)
    cat = _build_catalogue(params)
    users = _build_users(params)
    n_chunks = -(-params.n_users // params.chunk_users)
    writer = YambdaWriter(out_root, size, params.write_sequential)
    totals = _Totals(cat.n)
    started = time.perf_counter()
    _STATE.update(catalogue=cat, users=users, params=params)
    try:
        _write_catalogue(cat, params, writer)
        for index, chunk in enumerate(_chunk_results(params, n_chunks)):
            counts = _write_chunk(chunk, writer)
            totals.add(chunk["stats"], counts)
            if progress:
                log.info(
                    "generate: chunk %d/%d, %d listens so far, %.1fs",
                    index + 1,
                    n_chunks,
                    totals.counts["listens"],
                    time.perf_counter() - started,
                )
        writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        _STATE.clear()
    summary = _summary(params, size, cat, totals)
    (root / "generator_summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    if progress:
        log.info(
            "generate: %d listens, familiar %.3f, skips %.3f in %.1fs",
            totals.counts["listens"],
            summary["familiar_share"],
            summary["skip_share"],
            time.perf_counter() - started,
        )
    return summary


def _chunk_results(p: GeneratorParams, n_chunks: int):
    """Chunk results in chunk order; with workers, at most 2 per worker are in flight (memory)."""
    if p.workers == 1 or n_chunks == 1:
        for index in range(n_chunks):
            yield _run_chunk(index)
        return
    with ProcessPoolExecutor(p.workers, mp_context=get_context("fork")) as pool:
        ahead = min(n_chunks, 2 * p.workers)
        pending = [pool.submit(_run_chunk, i) for i in range(ahead)]
        for index in range(n_chunks):
            result = pending.pop(0).result()
            if index + ahead < n_chunks:
                pending.append(pool.submit(_run_chunk, index + ahead))
            yield result


def _write_chunk(chunk: dict[str, Any], writer: YambdaWriter) -> dict[str, int]:
    tables = {"listens": _listen_table(chunk["listens"])}
    for name in FEEDBACK_STEMS:
        tables[name] = _feedback_table(chunk[name])
    tables[MULTI_EVENT] = _multi_table(tables["listens"], {k: chunk[k] for k in FEEDBACK_STEMS})
    for name, table in tables.items():
        writer.events(name, table)
    return {name: table.num_rows for name, table in tables.items()}
