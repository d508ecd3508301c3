"""Generator benchmark (``musicrec bench generate``): synthetic events per second and peak memory."""

from __future__ import annotations

import resource
import time
from pathlib import Path

from musicrec.data.generator import generate, preset


def bench_generate(preset_name: str, out_root: str | Path) -> dict[str, float]:
    """Generate a preset and report {events, seconds, events_per_s, peak_rss_mb} (all event rows;
    peak RSS of this process plus its finished children, Linux kilobytes)."""
    started = time.perf_counter()
    summary = generate(preset(preset_name), out_root, progress=False)
    seconds = time.perf_counter() - started
    events = int(summary["counts"]["multi_event"])
    peak_kb = (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    )
    return {
        "events": events,
        "listens": int(summary["counts"]["listens"]),
        "seconds": seconds,
        "events_per_s": events / seconds,
        "peak_rss_mb": peak_kb / 1024,
    }
