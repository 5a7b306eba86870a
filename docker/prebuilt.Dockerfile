# sluice from binaries built on the host (`cargo build --release`; the host must be
# glibc-compatible with the runtime image, as Debian bookworm is), on the `runtime-base` stage of
# docker/Dockerfile: no toolchain image needed. The build context is a directory holding the
# binaries (scripts/compose-check makes one).
#
#   docker build -f docker/Dockerfile --target runtime-base -t sluice-runtime-base .
#   docker build -f docker/prebuilt.Dockerfile -t sluice DIR
ARG RUNTIME_BASE=sluice-runtime-base
FROM ${RUNTIME_BASE}
COPY sluice sluice-persister sluice-retry sluice-compute sluice-llm sluice-scorer sluice-ml \
     /usr/local/bin/
