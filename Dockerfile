# Tidewire: one binary, the Redis-compatible state layer and the Ably-compatible
# realtime layer. Build: docker build -t tidewire .  (profile-guided: about three
# release builds' time, see packaging/pgo-build.sh)
# Run:   docker run -p 6379:6379 -p 8080:8080 -v tidewire-data:/data \
#          -e TIDEWIRE_REQUIREPASS=change-me tidewire
FROM rust:1-bookworm AS build
# redis-tools and python3 drive the training run of the profile-guided build.
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-tools python3 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The shipped build: release, optimised with a training run's profile.
# `--build-arg BUILD=plain`: plain `cargo build --release` (a third of the time).
ARG BUILD=pgo
RUN if [ "$BUILD" = plain ]; then \
      cargo build --release --locked -p tidewire-server --bin tidewire \
      && install -m 0755 target/release/tidewire /usr/local/bin/tidewire; \
    else \
      install -m 0755 "$(packaging/pgo-build.sh | tail -n 1)" /usr/local/bin/tidewire; \
    fi

FROM debian:bookworm-slim
# curl for the health check; ca-certificates for outbound TLS (engines, webhooks).
RUN apt-get update \
 && apt-get install -y --no-install-recommends curl ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin tidewire \
 && mkdir -p /data && chown tidewire:tidewire /data
COPY --from=build /usr/local/bin/tidewire /usr/local/bin/tidewire
USER tidewire
VOLUME ["/data"]
# RESP (Redis protocol) and HTTP (Upstash REST, Ably realtime, /healthz, /readyz, /metrics).
EXPOSE 6379 8080
ENV TIDEWIRE_BIND=0.0.0.0 \
    TIDEWIRE_DATA_DIR=/data
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/readyz || exit 1
ENTRYPOINT ["/usr/local/bin/tidewire"]
