#!/usr/bin/env bash
# Shared by scripts/run, scripts/test, scripts/bench and scripts/idle: installs what is missing
# and starts the broker (Nisshi) and PostgreSQL. Sourced, not run.

NISSHI_VERSION=0.8.1
SLUICE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STARTED_PIDS=()
STARTED_PG_DIRS=()

log() { echo "[sluice] $*" >&2; }

# Runs a command as the postgres user when we are root (PostgreSQL refuses to run as root).
as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_bindir() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$dir" ] && echo "$dir"
}

ensure_postgres() {
  if [ -z "$(pg_bindir)" ] || [ ! -x "$(pg_bindir)/initdb" ]; then
    log "installing PostgreSQL from Debian's packages"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
}

nisshi_bin() {
  local candidate
  for candidate in "$(command -v nisshi 2>/dev/null)" "$HOME/.cargo/bin/nisshi"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ] && "$candidate" --version 2>/dev/null | grep -q "$NISSHI_VERSION"; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

ensure_nisshi() {
  if ! nisshi_bin >/dev/null; then
    log "installing Nisshi $NISSHI_VERSION from crates.io (a one-time build of about 30 minutes)"
    cargo install nisshi --version "$NISSHI_VERSION" --locked --ignore-rust-version --quiet
  fi
}

# ensure_python_worker: a Python with the example worker's requirements (examples/
# python-llm-worker), in a virtual environment made once; sets SLUICE_PYTHON.
ensure_python_worker() {
  local venv=${SLUICE_PYTHON_VENV:-$HOME/.cache/sluice/python-worker}
  local requirements=$SLUICE_ROOT/examples/python-llm-worker/requirements.txt
  if ! cmp -s "$requirements" "$venv/requirements.txt" 2>/dev/null \
    || ! "$venv/bin/python" -c 'import confluent_kafka' 2>/dev/null; then
    log "installing the Python example worker's requirements in $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$venv/requirements.txt"
  fi
  SLUICE_PYTHON=$venv/bin/python
}

# ensure_sklearn: a Python with scikit-learn (for `scripts/bench ml --train`'s reference fit
# times), in a virtual environment made once; sets SLUICE_SKLEARN_PYTHON.
ensure_sklearn() {
  local venv=${SLUICE_SKLEARN_VENV:-$HOME/.cache/sluice/sklearn}
  if ! "$venv/bin/python" -c "import sklearn, pandas" 2>/dev/null; then
    log "installing scikit-learn and pandas in $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check scikit-learn pandas
  fi
  SLUICE_SKLEARN_PYTHON=$venv/bin/python
}

# wait_port PORT SECONDS: waits until something listens on 127.0.0.1:PORT.
wait_port() {
  local port=$1 deadline=$((SECONDS + $2))
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then
      log "nothing listens on port $port after $2 s"
      return 1
    fi
    sleep 0.2
  done
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start_postgres DIR PORT [EXTRA_OPTIONS]: creates the cluster when DIR is empty, starts it on
# 127.0.0.1:PORT, and makes sure role and database `sluice` exist.
start_postgres() {
  local dir=$1 port=$2 options=${3:-} bin
  bin=$(pg_bindir)
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres "$dir" && chmod 700 "$dir"
  if [ ! -f "$dir/PG_VERSION" ]; then
    log "creating a PostgreSQL cluster in $dir"
    as_postgres "$bin/initdb" -D "$dir" -U postgres -A trust --no-sync >/dev/null
  fi
  log "starting PostgreSQL on port $port"
  as_postgres "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 \
    -o "-p $port -k /tmp -c listen_addresses=127.0.0.1 -c max_connections=300 $options" start >/dev/null
  STARTED_PG_DIRS+=("$dir")
  local psql=("$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -qtAX)
  if [ -z "$("${psql[@]}" -c "SELECT 1 FROM pg_roles WHERE rolname = 'sluice'")" ]; then
    "${psql[@]}" -c "CREATE ROLE sluice LOGIN SUPERUSER PASSWORD 'sluice'"
  fi
  local db
  for db in sluice nisshi; do
    if [ -z "$("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" ]; then
      "${psql[@]}" -c "CREATE DATABASE $db OWNER sluice"
    fi
  done
}

# The broker storage scripts/run, scripts/bench and scripts/idle use unless SLUICE_BROKER_STORAGE
# says otherwise (README, "Broker storage": why).
SLUICE_DEFAULT_STORAGE=sqlite

# broker_storage_url ENGINE PG_PORT NAME: Nisshi's --storage-engine for SLUICE_BROKER_STORAGE:
#   sqlite    the file NAME.db in Nisshi's working directory (start_nisshi's WORKDIR): durable
#   postgres  database `nisshi` of the PostgreSQL on PG_PORT: durable
#   memory    nothing survives a broker restart
broker_storage_url() {
  local engine=$1 pg_port=$2 name=${3:-sluice}
  case "$engine" in
    sqlite) echo "sqlite://$name.db" ;;
    postgres) echo "postgres://sluice:sluice@127.0.0.1:$pg_port/nisshi?sslmode=disable" ;;
    memory) echo "memory://$name/" ;;
    *)
      log "SLUICE_BROKER_STORAGE must be sqlite, postgres or memory, not '$engine'"
      return 2
      ;;
  esac
}

# native_defaults: the broker settings chosen for the native pipeline on Nisshi (README, "Broker
# storage"), each exported unless the environment or ./.env sets it. Services read .env
# themselves, but a variable already in their environment wins over .env, so one found there is
# left alone here.
NATIVE_DEFAULTS=(KAFKA_PARTITIONS=2 KAFKA_FETCH_WAIT_MAX_MS=50 KAFKA_SLOW_FETCH_WAIT_MAX_MS=5000)
native_defaults() {
  local pair
  for pair in "${NATIVE_DEFAULTS[@]}"; do default_unless_set "$pair"; done
}

# default_unless_set NAME=VALUE: exports it unless the environment or ./.env sets NAME.
default_unless_set() {
  local pair=$1 name=${1%%=*}
  if [ -z "${!name:-}" ] \
    && ! grep -Eq "^[[:space:]]*(export[[:space:]]+)?$name=" "$SLUICE_ROOT/.env" 2>/dev/null; then
    export "${pair?}"
  fi
}

# build_sluice: sets SLUICE_BIN, the directory of the release binaries. With SLUICE_BIN_DIR set,
# the binaries already there are used and nothing is built; otherwise `cargo build --release`.
build_sluice() {
  if [ -n "${SLUICE_BIN_DIR:-}" ]; then
    SLUICE_BIN=$(cd "$SLUICE_BIN_DIR" && pwd)
    log "using the binaries in $SLUICE_BIN (SLUICE_BIN_DIR)"
  else
    log "building sluice (release)"
    (cd "$SLUICE_ROOT" && cargo build --release --bins --quiet)
    SLUICE_BIN=$SLUICE_ROOT/target/release
  fi
}

# spawn_nisshi PORT STORAGE_URL LOG [REBALANCE_DELAY] [WORKDIR]: starts the broker in the
# background, in WORKDIR (default: the log's directory; a sqlite:// file is relative to it),
# appending to LOG; sets NISSHI_PID. Does not wait for it to listen.
spawn_nisshi() {
  local port=$1 storage=$2 logfile=$3 delay=${4:-3s} workdir=${5:-$(dirname "$3")} bin
  bin=$(nisshi_bin)
  mkdir -p "$workdir"
  # Nisshi reads a .env from its working directory; give it one of its own (none).
  (cd "$workdir" && exec "$bin" broker \
    --kafka-listener-url "tcp://127.0.0.1:$port" \
    --kafka-advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine "$storage" \
    --group-initial-rebalance-delay "$delay" >>"$logfile" 2>&1) &
  NISSHI_PID=$!
}

# start_nisshi PORT STORAGE_URL LOG [REBALANCE_DELAY] [WORKDIR]: spawn_nisshi, remembered in
# STARTED_PIDS, and waits until it listens.
start_nisshi() {
  log "starting Nisshi on port $1 (storage ${2%%://*})"
  spawn_nisshi "$@"
  STARTED_PIDS+=("$NISSHI_PID")
  wait_port "$1" 60
}

# stop_started: stops, newest first, what this script started.
stop_started() {
  local i pid dir
  for ((i = ${#STARTED_PIDS[@]} - 1; i >= 0; i--)); do
    pid=${STARTED_PIDS[$i]}
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${STARTED_PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  STARTED_PIDS=()
  for dir in "${STARTED_PG_DIRS[@]}"; do
    as_postgres "$(pg_bindir)/pg_ctl" -D "$dir" -m fast -w stop >/dev/null 2>&1 || true
  done
  STARTED_PG_DIRS=()
}
