#!/usr/bin/env bash
# Shared by scripts/run, scripts/test, scripts/bench, scripts/idle and scripts/kafka-node:
# installs what is missing and starts the broker (Apache Kafka) and PostgreSQL. Sourced, not run.

SLUICE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STARTED_PIDS=()
# Those of STARTED_PIDS that are Kafka nodes: stopped after the services.
KAFKA_PIDS=()
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

# ensure_java: a Java runtime of 17 or newer for Kafka (Debian's, installed when missing); sets
# SLUICE_JAVA.
ensure_java() {
  local candidate
  for candidate in "${JAVA_HOME:+$JAVA_HOME/bin/java}" "$(command -v java 2>/dev/null)"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ] && [ "$(java_major "$candidate")" -ge 17 ] 2>/dev/null; then
      SLUICE_JAVA=$candidate
      return 0
    fi
  done
  log "installing a Java runtime from Debian's packages (for Kafka)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null
  SLUICE_JAVA=$(command -v java)
}

# java_major JAVA: the major version of that Java runtime (17 for "17.0.15").
java_major() {
  "$1" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1
}

# ensure_kafka: Apache Kafka's jars, resolved from Maven Central by scripts/kafka/pom.xml into
# a cache directory once (again only when the pom changes); sets SLUICE_JAVA, KAFKA_CLASSPATH
# (the jars) and KAFKA_LOG4J (the broker's logging configuration). Installs Maven from Debian's
# packages when missing.
ensure_kafka() {
  local pom=$SLUICE_ROOT/scripts/kafka/pom.xml cache stamp
  ensure_java
  cache=${SLUICE_KAFKA_CACHE:-$HOME/.cache/sluice/kafka}
  stamp=$(sha256sum "$pom" | cut -c 1-16)
  mkdir -p "$cache"
  # Nodes started at once (a cluster) share the cache: one fetches, the others wait for it.
  exec 9>"$cache/.lock"
  flock 9
  if [ "$(cat "$cache/stamp" 2>/dev/null)" != "$stamp" ]; then
    if ! command -v mvn >/dev/null; then
      log "installing Maven from Debian's packages (to fetch Kafka's jars)"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq maven >/dev/null
    fi
    log "fetching Apache Kafka's jars from Maven Central into $cache (once)"
    rm -rf "$cache/libs.new"
    mvn -q -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$cache/libs.new" >&2
    rm -rf "$cache/libs"
    mv "$cache/libs.new" "$cache/libs"
    echo "$stamp" >"$cache/stamp"
  fi
  flock -u 9
  exec 9>&-
  KAFKA_CLASSPATH="$cache/libs/*"
  KAFKA_LOG4J=$SLUICE_ROOT/scripts/kafka/log4j2.properties
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

# compose_client: sets COMPOSE to the Compose client there is (`docker compose`, else
# `docker-compose`); returns non-zero when there is none.
compose_client() {
  if command -v docker >/dev/null && docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
  elif command -v docker-compose >/dev/null; then
    COMPOSE=(docker-compose)
  else
    return 1
  fi
}

# wait_port PORT SECONDS [PID]: waits until something listens on 127.0.0.1:PORT; with PID, fails
# at once when that process has exited (it will never listen).
wait_port() {
  local port=$1 deadline=$((SECONDS + $2)) pid=${3:-}
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      log "the process meant to listen on port $port (pid $pid) has exited"
      return 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      log "nothing listens on port $port after $2 s"
      return 1
    fi
    sleep 0.2
  done
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pg_secret FILE: the secret kept in FILE (its owner's alone), made when there is none: 24
# random characters that need no quoting in a URL or in SQL.
pg_secret() {
  local file=$1
  if [ ! -s "$file" ]; then
    (umask 077 && head -c 18 /dev/urandom | base64 | tr '+/' '-_' >"$file")
  fi
  cat "$file"
}

# dotenv_assignments NAME: the values ./.env gives NAME, one a line, in order (none without
# the file).
dotenv_assignments() {
  [ -f "$SLUICE_ROOT/.env" ] || return 0
  sed -n -E "s/^[[:space:]]*(export[[:space:]]+)?$1=//p" "$SLUICE_ROOT/.env"
}

# env_setting NAME: NAME from the environment, else its last value in ./.env (quotes around it
# removed); nothing when neither sets it.
env_setting() {
  local name=$1 value
  value=${!name:-}
  if [ -z "$value" ]; then
    value=$(dotenv_assignments "$name" | tail -n 1)
    value=${value%\"} value=${value#\"} value=${value%\'} value=${value#\'}
  fi
  echo "$value"
}

# sluice_pg_password DIR: the password of role sluice on the cluster in DIR: SLUICE_PG_PASSWORD
# from the environment or ./.env, else one made for the cluster and kept in DIR.password.
sluice_pg_password() {
  local password
  password=$(env_setting SLUICE_PG_PASSWORD)
  [ -n "$password" ] || password=$(pg_secret "$1.password")
  if [[ ! $password =~ ^[A-Za-z0-9._~-]+$ ]]; then
    log "SLUICE_PG_PASSWORD may hold only letters, digits and . _ ~ - (it is written into URLs)"
    return 1
  fi
  echo "$password"
}

# sluice_database_url DIR PORT: how the services reach database sluice, as role sluice, on the
# cluster in DIR listening on 127.0.0.1:PORT.
sluice_database_url() {
  local password
  password=$(sluice_pg_password "$1") || return 1
  echo "postgres://sluice:$password@127.0.0.1:$2/sluice"
}

# pg_admin_url DIR PORT: the same cluster's superuser, postgres (database postgres).
pg_admin_url() {
  echo "postgres://postgres:$(cat "$1.admin-password")@127.0.0.1:$2/postgres"
}

# start_postgres DIR PORT [EXTRA_OPTIONS]: creates the cluster when DIR is empty, starts it on
# 127.0.0.1:PORT, and makes sure role and database `sluice` exist. A TCP connection needs a
# password (scram-sha-256): the superuser postgres's is kept in DIR.admin-password (pg_admin_url),
# role sluice's is sluice_pg_password's, set at every start. On the socket (in /tmp) an OS user
# is only the role of its own name (peer). Role sluice logs in and owns its database, nothing
# more (PostgreSQL 15 lets a database's owner create in its public schema: the migrations run as
# it). A cluster made by an earlier version, which trusted every connection and made sluice a
# superuser, is brought to the same on its first start here, and a log line says so.
start_postgres() {
  local dir=$1 port=$2 options=${3:-} bin password admin_file=$1.admin-password admin_password
  bin=$(pg_bindir)
  password=$(sluice_pg_password "$dir") || return 1
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres "$dir" && chmod 700 "$dir"
  if [ ! -f "$dir/PG_VERSION" ]; then
    log "creating a PostgreSQL cluster in $dir"
    pg_secret "$admin_file" >/dev/null
    # initdb, run as postgres, reads it.
    if [ "$(id -u)" = 0 ]; then chown postgres "$admin_file"; fi
    as_postgres "$bin/initdb" -D "$dir" -U postgres --pwfile="$admin_file" \
      --auth-host=scram-sha-256 --auth-local=peer --no-sync >/dev/null
  fi
  log "starting PostgreSQL on port $port"
  as_postgres "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 \
    -o "-p $port -k /tmp -c listen_addresses=127.0.0.1 -c max_connections=300 $options" start >/dev/null
  STARTED_PG_DIRS+=("$dir")
  local psql=("$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -qtAX -v ON_ERROR_STOP=1)
  # Passwords go on stdin and in one command's environment, never on a command line: that is
  # anyone's to read (ps).
  if [ ! -s "$admin_file" ]; then
    # Made by an earlier version: initdb -A trust, no password for postgres.
    log "PostgreSQL in $dir trusted every connection (a cluster made by an earlier sluice): from now on TCP connections need a password (scram-sha-256; postgres's is in $admin_file) and the socket checks the OS user (peer)"
    pg_secret "$admin_file" >/dev/null
    "${psql[@]}" <<SQL
SET password_encryption = 'scram-sha-256';
ALTER ROLE postgres PASSWORD '$(cat "$admin_file")';
SQL
    as_postgres sed -i -E \
      -e 's/^(local[[:space:]].*[[:space:]])trust[[:space:]]*$/\1peer/' \
      -e 's/^(host[a-z]*[[:space:]].*[[:space:]])trust[[:space:]]*$/\1scram-sha-256/' \
      "$dir/pg_hba.conf"
    as_postgres "$bin/pg_ctl" -D "$dir" reload >/dev/null
  fi
  admin_password=$(cat "$admin_file")
  if [ "$(PGPASSWORD=$admin_password "${psql[@]}" \
    -c "SELECT rolsuper FROM pg_roles WHERE rolname = 'sluice'")" = t ]; then
    log "role sluice was a superuser (a cluster made by an earlier sluice): from now on it owns its database and nothing more"
  fi
  PGPASSWORD=$admin_password "${psql[@]}" <<SQL
SELECT 'CREATE ROLE sluice' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sluice')\gexec
SET password_encryption = 'scram-sha-256';
ALTER ROLE sluice LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
  PASSWORD '$password';
SELECT 'CREATE DATABASE sluice OWNER sluice'
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'sluice')\gexec
SQL
}

# default_unless_set NAME=VALUE: exports it unless the environment or ./.env sets NAME.
default_unless_set() {
  local pair=$1 name=${1%%=*}
  if [ -z "${!name:-}" ] && [ "$(dotenv_assignments "$name" | grep -c '')" = 0 ]; then
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

# spawn_kafka DIR PORT LOG [KAFKA_NODE_OPTIONS...]: starts a Kafka node (scripts/kafka-node) in
# the background, its storage in DIR, appending its log to LOG; sets KAFKA_PID. Does not wait
# for it to listen.
spawn_kafka() {
  local dir=$1 port=$2 logfile=$3
  shift 3
  mkdir -p "$dir"
  "$SLUICE_ROOT/scripts/kafka-node" --dir "$dir" --port "$port" "$@" >>"$logfile" 2>&1 &
  KAFKA_PID=$!
}

# start_kafka DIR PORT LOG [KAFKA_NODE_OPTIONS...]: spawn_kafka, remembered in STARTED_PIDS,
# and waits until it listens. Refuses a port (or the controller's, the next one) that is
# already taken: the clients would talk to whatever holds it.
start_kafka() {
  local port=$2 logfile=$3
  if port_open "$port" || port_open "$((port + 1))"; then
    log "port $port or $((port + 1)) is already in use: is another broker running?"
    return 1
  fi
  log "starting Kafka on port $port (storage $1)"
  spawn_kafka "$@"
  STARTED_PIDS+=("$KAFKA_PID")
  KAFKA_PIDS+=("$KAFKA_PID")
  wait_port "$port" 120 "$KAFKA_PID" || { tail -n 20 "$logfile" >&2; return 1; }
}

# stop_pids SECONDS PID...: SIGTERM to each, then waits up to SECONDS for all of them and
# SIGKILLs what is left (a service whose broker is gone may never finish closing its clients).
stop_pids() {
  local seconds=$1 pid deadline
  shift
  [ $# -gt 0 ] || return 0
  kill -TERM "$@" 2>/dev/null || true
  deadline=$((SECONDS + seconds))
  for pid in "$@"; do
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      log "pid $pid still running ${seconds}s after SIGTERM: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
}

# stop_started: stops what this script started: the services first, while the broker is still
# there for them to commit and leave their groups, then the broker, then PostgreSQL.
stop_started() {
  local pid services=() brokers=() dir
  for pid in "${STARTED_PIDS[@]}"; do
    if [[ " ${KAFKA_PIDS[*]} " == *" $pid "* ]]; then brokers+=("$pid"); else services+=("$pid"); fi
  done
  stop_pids 40 "${services[@]}"
  stop_pids 60 "${brokers[@]}"
  STARTED_PIDS=() KAFKA_PIDS=()
  for dir in "${STARTED_PG_DIRS[@]}"; do
    as_postgres "$(pg_bindir)/pg_ctl" -D "$dir" -m fast -w stop >/dev/null 2>&1 || true
  done
  STARTED_PG_DIRS=()
}
