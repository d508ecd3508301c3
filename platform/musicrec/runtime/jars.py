"""Spark's extra jars: Delta Lake and Hadoop's S3 connector, fetched once at set-up into the venv.

``make setup`` (and the container image) run ``python -m musicrec.runtime.jars``: Spark's own
Maven resolution (``spark.jars.packages``, the way ``delta.configure_spark_with_delta_pip``
does it) fetches, from Maven Central,

- ``io.delta:delta-spark_<scala>`` of the installed ``delta-spark`` version (the PyPI package
  and the jars share versions; ``delta-storage`` comes with it), and
- ``org.apache.hadoop:hadoop-aws`` of the Hadoop version bundled with pyspark (with the AWS SDK
  bundle it depends on), for ``s3a://`` paths.

Only the jars Spark does not already bundle are kept (the resolution also pulls, e.g., an older
``hadoop-client-api`` and Parquet, which must not shadow Spark's own), in ``<venv>/jars`` with a
list of the coordinates they were resolved for. Later sessions put them on the classpath without
any network (:func:`local_jars`); a version bump of delta-spark or pyspark makes them stale, and
the next ``make setup`` fetches the matching ones.
"""

from __future__ import annotations

import importlib.metadata
import logging
import re
import shutil
import sys
from pathlib import Path

log = logging.getLogger(__name__)

JARS_DIR = Path(sys.prefix) / "jars"
_MARKER = "packages.txt"


def _spark_jars_dir() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent / "jars"


def _bundled_version(artifact: str) -> str:
    for jar in _spark_jars_dir().glob(f"{artifact}-*.jar"):
        match = re.fullmatch(rf"{re.escape(artifact)}-(\d[\w.\-]*)\.jar", jar.name)
        if match:
            return match.group(1)
    raise RuntimeError(f"pyspark bundles no {artifact} jar in {_spark_jars_dir()}")


def packages() -> list[str]:
    """Maven coordinates matching the installed pyspark and delta-spark."""
    scala = ".".join(_bundled_version("scala-library").split(".")[:2])
    return [
        f"io.delta:delta-spark_{scala}:{importlib.metadata.version('delta-spark')}",
        f"org.apache.hadoop:hadoop-aws:{_bundled_version('hadoop-client-api')}",
    ]


def local_jars(folder: Path = JARS_DIR) -> list[Path]:
    """The fetched jars, if they were fetched for the installed versions; else none."""
    marker = folder / _MARKER
    if not marker.is_file() or marker.read_text().split() != packages():
        return []
    return sorted(folder.glob("*.jar"))


def _artifact(jar_name: str) -> str:
    """The artifact id of ``hadoop-client-api-3.5.0.jar`` (Spark's naming) -> ``hadoop-client-api``."""
    return re.sub(r"-\d[\w.\-]*$", "", jar_name.removesuffix(".jar"))


def fetch(folder: Path = JARS_DIR) -> list[Path]:
    """Resolve :func:`packages` from Maven Central into ``folder`` unless already there."""
    wanted = packages()
    if local_jars(folder):
        log.info("Spark jars for %s already in %s", ", ".join(wanted), folder)
        return local_jars(folder)
    from pyspark.sql import SparkSession

    ivy = folder.parent / "jars-ivy"
    shutil.rmtree(ivy, ignore_errors=True)
    spark = (
        SparkSession.builder.master("local[1]")
        .appName("musicrec-fetch-jars")
        .config("spark.jars.packages", ",".join(wanted))
        .config("spark.jars.ivy", str(ivy))
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    spark.stop()
    bundled = {_artifact(j.name) for j in _spark_jars_dir().glob("*.jar")}
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for jar in sorted((ivy / "jars").glob("*.jar")):
        # Ivy names a jar <group>_<artifact>-<version>.jar.
        if _artifact(jar.name.split("_", 1)[1]) not in bundled:
            shutil.move(str(jar), folder / jar.name)
    shutil.rmtree(ivy, ignore_errors=True)
    # Written last: an interrupted fetch leaves no marker, and the next set-up starts over.
    (folder / _MARKER).write_text("\n".join(wanted) + "\n")
    jars = local_jars(folder)
    log.info("fetched %d jars for %s into %s", len(jars), ", ".join(wanted), folder)
    return jars


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for jar in fetch():
        print(jar)
