# The Nisshi broker (Kafka protocol) from a binary installed on the host, for machines that
# cannot pull Apache Kafka's image (scripts/compose-check, compose.nisshi.yaml). The build
# context is the directory holding the `nisshi` binary.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
COPY nisshi /usr/local/bin/nisshi
RUN useradd --system --uid 10002 --create-home --home-dir /var/lib/nisshi nisshi
USER nisshi
WORKDIR /var/lib/nisshi
EXPOSE 9092
ENTRYPOINT ["nisshi", "broker"]
