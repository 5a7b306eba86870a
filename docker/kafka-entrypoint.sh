#!/bin/bash
# Runs Kafka (scripts/kafka-node) configured as apache/kafka's image is, so that one compose
# service fits either image: every KAFKA_<NAME> variable is the broker property <name>,
# lower-cased, `_` read as `.`, `__` as `_` and `___` as `-` (KAFKA_NODE_ID=1 is node.id=1);
# CLUSTER_ID names the cluster when the storage is formatted. KAFKA_LOG_DIRS (one directory)
# is the node's directory: kafka-node keeps the log segments in its logs/ subdirectory and
# formats it on the first start only.
set -euo pipefail

dir=${KAFKA_LOG_DIRS:-/var/lib/kafka/data}
case "$dir" in
  *,*) echo "kafka-entrypoint: KAFKA_LOG_DIRS must name one directory, not $dir" >&2; exit 2 ;;
esac
args=(--dir "$dir" --port 9092 --controller-port 9093)
[ -z "${KAFKA_NODE_ID:-}" ] || args+=(--node-id "$KAFKA_NODE_ID")
[ -z "${CLUSTER_ID:-}" ] || args+=(--cluster-id "$CLUSTER_ID")
for name in $(compgen -e KAFKA_ | sort); do
  case "$name" in
    # Not properties: the directory (above), kafka-node's heap (it reads KAFKA_HEAP_MB itself)
    # and what apache/kafka leaves out too. kafka-node starts the JVM with options of its own.
    KAFKA_LOG_DIRS | KAFKA_HEAP_MB | KAFKA_VERSION | KAFKA_LOG4J_ROOT_LOGLEVEL \
      | KAFKA_LOG4J_LOGGERS | KAFKA_TOOLS_LOG4J_LOGLEVEL) continue ;;
    KAFKA_OPTS | KAFKA_*_OPTS)
      echo "kafka-entrypoint: $name is not applied by this image (KAFKA_HEAP_MB sets the heap)" >&2
      continue ;;
  esac
  property=${name#KAFKA_}
  property=${property//___/-}
  property=${property//__/$'\1'}
  property=${property//_/.}
  property=${property//$'\1'/_}
  args+=(--set "${property,,}=${!name}")
done
exec /opt/sluice/scripts/kafka-node "${args[@]}"
