#!/bin/bash
# The Kafka image's health check, at the path of apache/kafka's tool that compose.yaml's check
# runs (/opt/kafka/bin/kafka-broker-api-versions.sh --bootstrap-server HOST:PORT): an
# ApiVersions request (version 0) to the first address, which must be answered without error.
# The image holds the broker's jars only, not Kafka's tools, and a JVM every few seconds would
# cost more than the broker at rest.
set -euo pipefail
server=localhost:9092
while [ $# -gt 0 ]; do
  case "$1" in
    --bootstrap-server) server=${2%%,*}; shift ;;
  esac
  shift
done
exec 3<>"/dev/tcp/${server%:*}/${server##*:}"
# Size 12; API key 18 (ApiVersions), version 0, correlation id 1, client id "hc".
printf '\0\0\0\x0c\0\x12\0\0\0\0\0\x01\0\x02hc' >&3
# The answer starts with its size, the correlation id and the error code (0: none).
reply=$(timeout 5 head -c 10 <&3 | od -An -tx1 -v | tr -d ' \n') || true
if [ "${reply:8:12}" != 000000010000 ]; then
  echo "$server: no ApiVersions answer without error (got ${reply:-nothing})" >&2
  exit 1
fi
echo "$server answers ApiVersions"
