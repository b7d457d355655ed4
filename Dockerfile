# troupe: container image. Build: docker build -t troupe .
# Run:  docker run -p 8080:8080 troupe      (cluster.toml as its config)
#
# The builder uses the Debian bookworm variant of the Rust image so that the
# binary links against the same glibc as the bookworm-slim runtime.
# cargo-chef builds the dependencies (~465 crates) in a layer of their own,
# keyed only by Cargo.toml/Cargo.lock: a change to troupe's code rebuilds
# troupe, not the world.

FROM lukemathwalker/cargo-chef:latest-rust-1.95-bookworm AS chef
WORKDIR /src

FROM chef AS plan
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
COPY --from=plan /src/recipe.json recipe.json
# The patched ractor (`[patch.crates-io]`, vendor/ractor/TROUPE.md) is a
# dependency, not a workspace member: the recipe has no skeleton of it, so
# the cook needs its sources (they rarely change).
COPY vendor vendor
RUN cargo chef cook --release --locked --recipe-path recipe.json --bin troupe
COPY . .
RUN cargo build --release --locked --bin troupe \
 # Ship a stripped binary; its debug info stays in this stage (troupe.debug,
 # linked by a debuglink) for `docker build --target build` and a debugger.
 && objcopy --only-keep-debug target/release/troupe target/release/troupe.debug \
 && objcopy --strip-all --add-gnu-debuglink=target/release/troupe.debug target/release/troupe

FROM debian:bookworm-slim
# curl: for the health check (GET /health).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/troupe --shell /usr/sbin/nologin troupe \
 && mkdir -p /var/lib/troupe /etc/troupe \
 && chown troupe:troupe /var/lib/troupe
COPY --from=build /src/target/release/troupe /usr/local/bin/troupe
COPY cluster.toml /etc/troupe/cluster.toml
USER troupe
WORKDIR /var/lib/troupe
VOLUME /var/lib/troupe
EXPOSE 8080 4700
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/health || exit 1
# SIGTERM: the node stops accepting, hands its rooms off, closes sockets with
# 1012 and exits; the worst case is ~25 s, over Docker's default 10 s stop
# timeout: run with `docker stop -t 40` (compose: stop_grace_period: 30s+;
# Kubernetes: terminationGracePeriodSeconds: 40).
STOPSIGNAL SIGTERM
ENTRYPOINT ["troupe"]
CMD ["serve", "--config", "/etc/troupe/cluster.toml"]
