# syntax=docker/dockerfile:1
# dagg: the web UI (node), then the release binary that embeds it (rust), on a slim Debian
# base as a non-root user. Build from the repository's root:
#
#   docker build -t dagg:0.1.0 .
#
# The image runs `dagg serve` with the API and UI on all interfaces (8001) and the peer port
# on loopback (9001: a cluster sets DAGG_PEER_ADDR=0.0.0.0:9001 with peer certificates, as
# helm/dagg and k8s/ do; see docs/cluster.md) with its data in /var/lib/dagg; it writes nowhere else, so it runs with a read-only root
# filesystem (see helm/dagg and k8s/).

ARG RUST_VERSION=1.94
ARG NODE_VERSION=22
ARG DEBIAN_RELEASE=trixie

# ---- the web UI: ui/ -> ui/dist ----
FROM node:${NODE_VERSION}-${DEBIAN_RELEASE}-slim AS ui
WORKDIR /src/ui
COPY ui/package.json ui/package-lock.json ./
RUN --mount=type=cache,target=/root/.npm npm ci --no-audit --no-fund
COPY ui/ ./
RUN npm run build

# ---- the binary, with ui/dist embedded at build time ----
FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
# api/build.rs would run npm when ui/dist is missing; here it comes from the stage above.
ENV DAGG_SKIP_UI_BUILD=1
WORKDIR /src
COPY . .
COPY --from=ui /src/ui/dist ui/dist
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p dagg-node \
    && install -D -m 0755 target/release/dagg /out/dagg

# ---- runtime ----
FROM debian:${DEBIAN_RELEASE}-slim
# CA certificates for TLS to sources and destinations (REST APIs, databases). Not pinned to
# a Debian revision: the security archive replaces old ones, and a pin would break the build.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 dagg \
    && useradd --system --uid 10001 --gid dagg --home-dir /var/lib/dagg --no-create-home --shell /usr/sbin/nologin dagg \
    && install -d -o dagg -g dagg -m 0750 /var/lib/dagg
COPY --from=build /out/dagg /usr/local/bin/dagg
ENV DAGG_API_ADDR=0.0.0.0:8001 \
    DAGG_PEER_ADDR=127.0.0.1:9001 \
    DAGG_DATA_DIR=/var/lib/dagg \
    DAGG_LOG=info
USER 10001:10001
WORKDIR /var/lib/dagg
VOLUME ["/var/lib/dagg"]
EXPOSE 8001 9001
ENTRYPOINT ["/usr/local/bin/dagg"]
CMD ["serve"]
