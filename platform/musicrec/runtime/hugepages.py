"""Whether numpy asks the kernel for transparent huge pages on its large arrays.

numpy advises ``MADV_HUGEPAGE`` on every array of 4 MiB or more. Under the common kernel setting
``/sys/kernel/mm/transparent_hugepage/defrag = madvise`` such memory is compacted on first touch,
in the faulting thread: measured here, the first 118 MB copy of a training read took 0.42 s with
the advice and 0.10 s without, and a whole ALS job (read, index, matrix, fit) about 1.5 s of 14 s.
Arrays are touched once or twice per job, so the TLB savings never repay that. The setting is
``runtime.numpy_hugepages`` (default off), applied in the driver and in every worker: children
started from the driver (Spark's local JVM and its Python workers, Ray's local workers) inherit the
environment variable; Ray workers on a cluster apply it at the start of their task, and Spark
executors on a cluster get it through ``spark.executorEnv``.
"""

from __future__ import annotations

import os

ENV = "NUMPY_MADVISE_HUGEPAGE"


def env_value(enabled: bool) -> str:
    return "1" if enabled else "0"


def numpy_hugepage_advice() -> bool:
    """Whether numpy advises huge pages in this process now (numpy has no getter: set, then put back)."""
    from numpy._core.multiarray import _set_madvise_hugepage

    advice = _set_madvise_hugepage(True)
    _set_madvise_hugepage(advice)
    return advice


def apply_numpy_hugepages(enabled: bool) -> None:
    """In this process (from the next allocation on) and in the processes it starts from now on."""
    from numpy._core.multiarray import _set_madvise_hugepage

    os.environ[ENV] = env_value(enabled)
    _set_madvise_hugepage(enabled)
