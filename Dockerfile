# troupe: container image. Build: docker build -t troupe .
# Run:  docker run -p 8080:8080 troupe      (cluster.toml as its config)
#
# The builder uses the Debian bookworm variant of the Rust image so that the
# binary links against the same glibc as the bookworm-slim runtime.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin troupe

FROM debian:bookworm-slim
# curl: for the health check (GET /health).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home-dir /var/lib/troupe --shell /usr/sbin/nologin troupe \
 && mkdir -p /var/lib/troupe /etc/troupe \
 && chown troupe:troupe /var/lib/troupe
COPY --from=build /src/target/release/troupe /usr/local/bin/troupe
COPY cluster.toml /etc/troupe/cluster.toml
USER troupe
WORKDIR /var/lib/troupe
VOLUME /var/lib/troupe
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/health || exit 1
# SIGTERM: the node stops accepting, closes sockets with 1012, flushes rooms.
STOPSIGNAL SIGTERM
ENTRYPOINT ["troupe"]
CMD ["serve", "--config", "/etc/troupe/cluster.toml"]
