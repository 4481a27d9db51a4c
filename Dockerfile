# syntax=docker/dockerfile:1
# The otg-gateway image: the one binary on a distroless runtime (glibc and libgcc,
# no shell, no package manager), run as the unprivileged user 65532.
#
#   docker build -t otg-gateway:0.1.0 .
#   docker run --rm -p 8080:8080 otg-gateway:0.1.0
#
# Settings: /etc/otg/otg.toml (listen on 0.0.0.0:8080, data in /data) and OTG_*
# variables; the Helm chart mounts its own ConfigMap over /etc/otg. See
# docs/kubernetes.md.

FROM rust:1.95-bookworm AS builder
WORKDIR /build
COPY . .
# The registry and target caches survive between builds on one builder; the binary is
# copied out of the cached target dir, which the next stage cannot see.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/build/target \
    cargo build --release --locked -p otg-gateway --bin otg-gateway \
    && install -D -m 0755 target/release/otg-gateway /out/usr/local/bin/otg-gateway
# What the runtime image needs besides the binary: a default config that listens on
# every interface (a container's loopback is unreachable from outside), and a data
# directory (the runtime has no shell to make one).
RUN install -d -m 0755 /out/etc/otg /data \
    && printf 'listen_addr = "0.0.0.0:8080"\ndata_dir = "/data"\n' > /out/etc/otg/otg.toml

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/ /
COPY --from=builder --chown=65532:65532 /data /data
USER 65532:65532
EXPOSE 8080
VOLUME ["/data"]
ENTRYPOINT ["/usr/local/bin/otg-gateway"]
CMD ["--config", "/etc/otg/otg.toml"]
