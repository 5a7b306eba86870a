# Apache Kafka from the jars the native runs use (scripts/kafka/pom.xml, Maven Central) on a
# Debian base, for machines that cannot pull apache/kafka (scripts/compose-check builds it). It
# takes that image's settings, so compose.yaml's kafka service runs either: KAFKA_* variables
# (docker/kafka-entrypoint.sh), the log directory /var/lib/kafka/data, and the health check at
# /opt/kafka/bin/kafka-broker-api-versions.sh (docker/kafka-health.sh).
#
#   docker build -f docker/kafka.Dockerfile -t sluice-kafka:4.1.1 .
#   KAFKA_IMAGE=sluice-kafka:4.1.1 docker compose up -d
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE} AS jars
# openjdk's postinst links man pages under /usr/share/man/man1, which slim images lack.
RUN mkdir -p /usr/share/man/man1 \
    && apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates openjdk-17-jre-headless maven \
    && rm -rf /var/lib/apt/lists/*
COPY scripts/kafka/pom.xml /src/pom.xml
# The stamp is the one lib.sh's ensure_kafka computes: with it, kafka-node takes these jars as
# they are and fetches nothing.
RUN mvn -q -B -Dstyle.color=never -f /src/pom.xml dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory=/opt/kafka/libs \
    && sha256sum /src/pom.xml | cut -c 1-16 > /opt/kafka/stamp

FROM ${BASE_IMAGE}
RUN mkdir -p /usr/share/man/man1 \
    && apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10002 --home-dir /var/lib/kafka kafka \
    && mkdir -p /var/lib/kafka/data \
    && chown -R kafka:kafka /var/lib/kafka
COPY --from=jars /opt/kafka /opt/kafka
COPY scripts/lib.sh scripts/kafka-node /opt/sluice/scripts/
COPY scripts/kafka /opt/sluice/scripts/kafka
COPY docker/kafka-health.sh /opt/kafka/bin/kafka-broker-api-versions.sh
COPY docker/kafka-entrypoint.sh /usr/local/bin/kafka-entrypoint
ENV SLUICE_KAFKA_CACHE=/opt/kafka
# Fails the build, not the first start, if kafka-node would install or fetch anything at run
# time (its container has neither root nor, maybe, a network): Java and the jars must be found
# as they are, and the broker's classes load.
RUN bash -c 'set -e; source /opt/sluice/scripts/lib.sh; \
        apt-get() { echo "ensure_kafka would install: $*" >&2; return 1; }; \
        mvn() { echo "ensure_kafka would fetch the jars again" >&2; return 1; }; \
        ensure_kafka; \
        "$SLUICE_JAVA" -cp "$KAFKA_CLASSPATH" -Dlog4j2.configurationFile="$KAFKA_LOG4J" \
            kafka.Kafka --version'
USER kafka
WORKDIR /var/lib/kafka
VOLUME ["/var/lib/kafka/data"]
EXPOSE 9092
ENTRYPOINT ["kafka-entrypoint"]
