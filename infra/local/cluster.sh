#!/usr/bin/env bash
# A local multi-process cluster on 127.0.0.1: Spark standalone master + worker, a Ray head with its
# job server (token authentication on), and an MLflow server on PostgreSQL with a local artifact folder.
#   infra/local/cluster.sh up|down|status      (make cluster-up / cluster-down / cluster-status)
# `up` writes $CLUSTER_DIR/env (source it: SPARK_MASTER, RAY_ADDRESS, RAY_AUTH_*, MLFLOW_TRACKING_URI,
# SPARK_LOCAL_IP, PYSPARK_PYTHON). Each service runs in its own session whose id is recorded in
# $CLUSTER_DIR/pids; `down` stops exactly those sessions and nothing else (never `ray stop`, which ends
# every Ray of the user).
#
# Ports users type default to the usual ones and can be set: SPARK_PORT (7077), SPARK_UI_PORT (8080),
# RAY_DASHBOARD_PORT (8265), MLFLOW_PORT (5000); every other port is chosen free (other clusters may run
# here). WORKER_CORES (2), WORKER_MEMORY (4g), RAY_CPUS (2) size the machines.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$root/.venv/bin
state=${CLUSTER_DIR:-$root/.cluster}
pids=$state/pids
pg_bin=${PG_BIN:-/usr/lib/postgresql/15/bin}
host=127.0.0.1

# A failed `up` stops what it had started.
die() { echo "cluster: $*" >&2; [ -n "${starting:-}" ] && down >/dev/null 2>&1; exit 1; }

free_ports() {  # N distinct free ports on 127.0.0.1 (all held open until all are chosen)
  "$bin/python" - "$1" <<'EOF'
import socket, sys
held = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in held:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in held))
EOF
}

# PostgreSQL refuses to run as root: then its programs run as the `postgres` user.
pg_run=()
[ "$(id -u)" = 0 ] && pg_run=(runuser -u postgres --)

# Start a service in a session of its own: its id is its pid, and every process it starts stays in it.
launch() {
  local name=$1; shift
  setsid "$@" >"$state/logs/$name.log" 2>&1 </dev/null &
  echo "$name $!" >>"$pids"
}

# The live processes of a session and their descendants (Ray starts each job's driver in a session
# of its own); zombies excluded.
members() {
  ps -eo pid=,ppid=,sid=,stat= | awk -v s="$1" '
    { pid[NR] = $1; ppid[NR] = $2; sid[NR] = $3; stat[NR] = $4; if ($3 == s) keep[$1] = 1 }
    END {
      do { grew = 0; for (i = 1; i <= NR; i++) if (!(pid[i] in keep) && (ppid[i] in keep)) { keep[pid[i]] = 1; grew = 1 } } while (grew)
      for (i = 1; i <= NR; i++) if ((pid[i] in keep) && stat[i] !~ /^Z/) print pid[i]
    }'
}
alive() { local s; for s in "$@"; do [ -n "$(members "$s")" ] && return 0; done; return 1; }
sessions() { awk '{print $2}' "$pids"; }
running() { [ -s "$pids" ] && alive $(sessions); }

wait_for() {  # wait_for WHAT SECONDS COMMAND...: until the command succeeds, or fail naming WHAT
  local what=$1 limit=$2 name pid; shift 2
  local end=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    while read -r name pid; do
      alive "$pid" || die "$name exited during start-up; see $state/logs/$name.log"
    done <"$pids"
    [ $SECONDS -lt $end ] || die "$what not ready after ${limit}s; see $state/logs/"
    sleep 1
  done
}

ray_ready() { curl -sf --oauth2-bearer "$1" "http://$host:$2/api/jobs/" >/dev/null 2>&1; }

spark_worker_registered() { curl -sf "http://$host:$1/json/" | grep -q '"aliveworkers" *: *1'; }

mlflow_database() {  # the store's database, created once (the data folder outlives `down`)
  PGPASSWORD=$1 "$pg_bin/psql" -qtA -h $host -p "$2" -U mlflow -d postgres \
    -c "SELECT 1 FROM pg_database WHERE datname = 'mlflow'" | grep -q 1 && return 0
  PGPASSWORD=$1 "$pg_bin/psql" -q -h $host -p "$2" -U mlflow -d postgres -c "CREATE DATABASE mlflow"
}

up() {
  [ -x "$bin/python" ] || die "no $bin/python: run \`make setup\` first"
  command -v curl >/dev/null || die "curl not found (Debian: apt-get install curl)"
  [ -x "$pg_bin/initdb" ] || die "PostgreSQL not found in $pg_bin (Debian: apt-get install postgresql; or set PG_BIN)"
  if running; then die "already running (state in $state); \`make cluster-down\` first"; fi
  rm -rf "$state/logs" "$state/spark-work" "$pids" "$state/env"
  mkdir -p "$state/logs" "$state/spark-work" "$state/mlartifacts"
  chmod 755 "$state"  # the PostgreSQL server (user postgres when run as root) must reach its folder
  : >"$pids"
  starting=1

  local spark_port=${SPARK_PORT:-7077} spark_ui=${SPARK_UI_PORT:-8080} dash=${RAY_DASHBOARD_PORT:-8265}
  local mlflow_port=${MLFLOW_PORT:-5000}
  local worker_port worker_ui pg_port gcs client agent_http agent_grpc renv metrics node_mgr obj_mgr
  read -r worker_port worker_ui pg_port gcs client agent_http agent_grpc renv metrics node_mgr obj_mgr \
    < <(free_ports 11)

  # The nodes' Python: the venv's dependencies but not musicrec, as on a cluster whose image holds the
  # dependencies: the code reaches drivers, executors and Ray workers with each job (README).
  local node_python=$state/python/bin/python
  if [ ! -x "$node_python" ]; then
    "$bin/python" -m venv --without-pip "$state/python"
    "$bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' \
      >"$("$node_python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/venv-dependencies.pth"
  fi
  "$node_python" -c 'import musicrec' 2>/dev/null && die "$node_python must not import musicrec"

  # Spark: SPARK_LOCAL_IP binds the RPC endpoints and web UIs of the master, the worker and the
  # executors it launches to 127.0.0.1.
  local spark_class
  spark_class=$("$bin/python" -c 'import os, pyspark; print(os.path.join(os.path.dirname(pyspark.__file__), "bin", "spark-class"))')
  # No REST submission server: jobs come through spark-submit, and its port (6066) is a fixed one.
  export SPARK_LOCAL_IP=$host SPARK_MASTER_OPTS="-Dspark.master.rest.enabled=false"
  launch spark-master "$spark_class" org.apache.spark.deploy.master.Master --host $host --port "$spark_port" \
    --webui-port "$spark_ui"
  launch spark-worker "$spark_class" org.apache.spark.deploy.worker.Worker --host $host --port "$worker_port" \
    --webui-port "$worker_ui" --cores "${WORKER_CORES:-2}" --memory "${WORKER_MEMORY:-4g}" \
    --work-dir "$state/spark-work" "spark://$host:$spark_port"

  # PostgreSQL for MLflow's store: initialised once in its own folder, TCP on 127.0.0.1 only, password auth.
  if [ ! -s "$state/pg/password" ]; then
    rm -rf "$state/pg"
    mkdir -p "$state/pg"
    "$bin/python" -c 'import secrets; print(secrets.token_hex(16))' >"$state/pg/password"
    chmod 700 "$state/pg"
    chmod 600 "$state/pg/password"
    [ ${#pg_run[@]} -gt 0 ] && chown -R postgres "$state/pg"
    "${pg_run[@]}" "$pg_bin/initdb" -D "$state/pg/data" -U mlflow --pwfile="$state/pg/password" \
      --auth=scram-sha-256 -E UTF8 >"$state/logs/initdb.log" 2>&1 || die "initdb failed; see $state/logs/initdb.log"
  fi
  local password
  password=$(cat "$state/pg/password")
  launch postgres "${pg_run[@]}" "$pg_bin/postgres" -D "$state/pg/data" -p "$pg_port" \
    -c listen_addresses=$host -c unix_socket_directories="$state/pg"
  wait_for "PostgreSQL" 60 "$pg_bin/pg_isready" -q -h $host -p "$pg_port"
  mlflow_database "$password" "$pg_port" >>"$state/logs/postgres.log" 2>&1 || die "could not create the mlflow database"

  launch mlflow "$bin/mlflow" server --host $host --port "$mlflow_port" --workers 2 \
    --backend-store-uri "postgresql+psycopg2://mlflow:$password@$host:$pg_port/mlflow" \
    --artifacts-destination "$state/mlartifacts"

  # Ray: every port named, all on 127.0.0.1. A single-machine cluster, so its job drivers and workers
  # bind 127.0.0.1 too instead of the machine's address (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0). Its
  # temp folder is short because Ray's socket paths must fit in 107 bytes. A head gives its raylet 30 s
  # to register, which a loaded machine can miss: then it is started again, twice at most.
  local token attempt ray_pid ray_tmp
  token=$("$bin/python" -c 'import secrets; print(secrets.token_hex(32))')
  for attempt in 1 2 3; do
    ray_tmp=$(mktemp -d /tmp/musicrec-ray.XXXXXX)
    ln -sfn "$ray_tmp" "$state/ray"
    # PATH: `python` in a job's entrypoint is the nodes' Python, as it is for the Ray workers.
    PATH=$state/python/bin:$PATH RAY_AUTH_MODE=token RAY_AUTH_TOKEN=$token RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 \
      launch ray "$node_python" "$bin/ray" start --head --block --disable-usage-stats --node-ip-address=$host \
        --dashboard-host=$host --include-dashboard=true --num-cpus="${RAY_CPUS:-2}" --temp-dir="$ray_tmp" \
        --port="$gcs" --dashboard-port="$dash" --ray-client-server-port="$client" \
        --dashboard-agent-listen-port="$agent_http" --dashboard-agent-grpc-port="$agent_grpc" \
        --runtime-env-agent-port="$renv" --metrics-export-port="$metrics" \
        --node-manager-port="$node_mgr" --object-manager-port="$obj_mgr"
    ray_pid=$(awk '$1 == "ray" {print $2}' "$pids")
    local end=$((SECONDS + 180))
    until ray_ready "$token" "$dash" || ! alive "$ray_pid" || [ $SECONDS -ge $end ]; do sleep 1; done
    ray_ready "$token" "$dash" && break
    while alive "$ray_pid"; do signal_all KILL "$ray_pid"; sleep 0.2; done
    sed -i '/^ray /d' "$pids"
    rm -rf "$ray_tmp"
    [ $attempt -lt 3 ] || die "Ray's head did not start in 3 attempts; see $state/logs/ray.log"
    echo "cluster: Ray's head did not start (attempt $attempt; see its log below), starting it again" >&2
    tail -n 3 "$state/logs/ray.log" >&2
  done

  cat >"$state/env" <<EOF
export SPARK_MASTER=spark://$host:$spark_port
export SPARK_LOCAL_IP=$host
export PYSPARK_PYTHON=$node_python
export RAY_ADDRESS=http://$host:$dash
export RAY_AUTH_MODE=token
export RAY_AUTH_TOKEN=$token
export MLFLOW_TRACKING_URI=http://$host:$mlflow_port
EOF
  chmod 600 "$state/env"

  wait_for "Spark worker" 120 spark_worker_registered "$spark_ui"
  wait_for "MLflow server" 120 curl -sf "http://$host:$mlflow_port/health"
  starting=
  echo "cluster up: spark://$host:$spark_port, Ray http://$host:$dash, MLflow http://$host:$mlflow_port"
  echo "  source $state/env   # then spark-submit / ray job submit as in the README"
}

signal_all() { local sig=$1 s; shift; for s in "$@"; do members "$s" | xargs -r kill "-$sig" 2>/dev/null || true; done; }

down() {
  [ -s "$pids" ] || { echo "cluster: not running"; return 0; }
  local all end
  all=$(sessions)
  # SIGTERM to every process of the recorded sessions, SIGKILL to what is left after 10 s (Ray's GCS outlives a SIGTERM by more than 30 s).
  signal_all TERM $all
  end=$((SECONDS + 10))
  while alive $all && [ $SECONDS -lt $end ]; do sleep 0.5; done
  while alive $all; do signal_all KILL $all; sleep 0.2; done
  [ -L "$state/ray" ] && rm -rf "$(readlink "$state/ray")" "$state/ray"
  rm -f "$pids" "$state/env"
  echo "cluster down"
}

status() {
  [ -s "$pids" ] || { echo "cluster: not running"; return 3; }
  local name pid code=0
  while read -r name pid; do
    if alive "$pid"; then echo "$name: running (session $pid)"; else echo "$name: stopped"; code=3; fi
  done <"$pids"
  sed -n 's/^export \(SPARK_MASTER\|RAY_ADDRESS\|MLFLOW_TRACKING_URI\)=/  \1=/p' "$state/env"
  return $code
}

case "${1:-}" in
  up|start) up ;;
  down|stop) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
