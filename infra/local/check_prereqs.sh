#!/usr/bin/env bash
# Fails with a clear message when the machine lacks what the platform needs to run locally.
set -u
fail=0
py=${PYTHON:-python3}
if ! command -v "$py" >/dev/null 2>&1; then
  echo "prerequisite missing: Python >= 3.11 ($py not found on PATH)" >&2; fail=1
elif ! "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  echo "prerequisite too old: Python >= 3.11 needed, found $("$py" --version 2>&1)" >&2; fail=1
elif ! "$py" -c 'import venv, ensurepip' 2>/dev/null; then
  echo "prerequisite missing: Python's venv/ensurepip modules (Debian: apt-get install python3-venv)" >&2; fail=1
fi
if ! command -v java >/dev/null 2>&1; then
  echo "prerequisite missing: Java >= 17 for Spark (Debian: apt-get install openjdk-17-jre-headless)" >&2; fail=1
else
  major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1)
  if [ -z "$major" ] || [ "$major" -lt 17 ]; then
    echo "prerequisite too old: Java >= 17 needed for Spark 4, found: $(java -version 2>&1 | head -n1)" >&2; fail=1
  fi
fi
exit $fail
