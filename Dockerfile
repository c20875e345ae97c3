# Carrier in a container: build in a Rust image, run from a slim one as a
# non-root user, with the database and server key in the volume /data.
#
#   docker build -t carrier .
#   docker run -d --name carrier -p 5000:5000 -v carrier-data:/data carrier
#   docker logs carrier          # the fingerprint and the one-time codes
#
# Pass further flags after the image name, e.g. `--server_port 5001
# --neighbours other.example:5001`, or mount a config file and use --config.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin carrier-server --bin carrier \
    && strip target/release/carrier-server target/release/carrier

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin carrier \
    && install -d -o carrier -g carrier -m 0700 /data
COPY --from=build /src/target/release/carrier-server /src/target/release/carrier /usr/local/bin/
USER carrier
VOLUME ["/data"]
EXPOSE 5000
ENTRYPOINT ["/usr/bin/tini", "--", "carrier-server", "--host", "0.0.0.0", "--port", "5000", "--data-dir", "/data"]
