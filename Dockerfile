# Build stage: compile the release binary.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY tests ./tests
# No debug info in the image: the binary is also the upload worker, and a
# small one starts fast under the worker's memory limit.
RUN CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=true \
    cargo build --release --locked --bin sluice

# Runtime: a slim image, a non-root user, the binary, the sample catalogue and config.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /srv/sluice --create-home sluice
WORKDIR /srv/sluice
COPY --from=build /src/target/release/sluice /usr/local/bin/sluice
COPY --chown=sluice:sluice datasets ./datasets
COPY --chown=sluice:sluice config ./config
USER sluice
# Listen on all interfaces inside the container (TLS stays on). Arrow
# Flight SQL is reachable once SLUICE_FLIGHT__LISTEN=0.0.0.0:8815 is set.
ENV SLUICE_SERVER__LISTEN=0.0.0.0:8443
EXPOSE 8443 8815
ENTRYPOINT ["/usr/local/bin/sluice"]
CMD ["serve"]
