# syntax=docker/dockerfile:1
# lidod and lidoctl in a small, non-root image:
#   docker build -t lido:0.1.0 .
#   docker run -p 7700:7700 -v lido-data:/var/lib/lido \
#     -e LIDO_ADVERTISE_URL=http://HOST:7700 lido:0.1.0
# The tag matches the workspace version and deploy/k8s/kustomization.yaml.

# Builder: a pinned Rust release on Debian 12, the same Debian as the runtime
# (the binaries link its glibc). protoc: etcd-client generates its gRPC code.
FROM rust:1.95.0-slim-bookworm AS builder
# Not version-pinned: the base image pins Debian 12, where protoc changes
# only for security fixes.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends protobuf-compiler \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# --locked: exactly the dependency versions of Cargo.lock. --features etcd:
# the registry several IMs share.
RUN cargo build --release --locked -p lidod -p lidoctl --features lidod/etcd \
    && install -D -m 0755 target/release/lidod target/release/lidoctl -t /out/

# Runtime: a pinned Debian 12 point release, slim; nothing but the two
# binaries and their data dir.
FROM debian:12.12-slim AS runtime
RUN groupadd --system --gid 10001 lido \
    && useradd --system --uid 10001 --gid lido --home-dir /var/lib/lido --shell /usr/sbin/nologin lido \
    && install -d -m 0700 -o lido -g lido /var/lib/lido
COPY --from=builder /out/lidod /out/lidoctl /usr/local/bin/
USER 10001:10001
# The order journal, tokens, audit log and cluster secret: keep it.
VOLUME ["/var/lib/lido"]
ENV LIDO_DATA_DIR=/var/lib/lido \
    LIDO_AUTH=tokens \
    LIDO_LISTEN=0.0.0.0:7700 \
    NO_COLOR=1
EXPOSE 7700
# No HEALTHCHECK: the image has no HTTP client to probe /healthz with (none
# is added for that alone), and Kubernetes ignores it for its own probes
# (deploy/k8s: readiness on /healthz, liveness on /v1/openapi.json).
HEALTHCHECK NONE
ENTRYPOINT ["/usr/local/bin/lidod"]
