# The `pixmesh` image the Helm chart (charts/pixmesh) runs: the sidecar binary
# (/usr/local/bin/pixmesh-sidecar, the entrypoint) and the filter's .wasm
# (/opt/pixmesh/pixmesh_filter.wasm), which the chart's init container copies next to Envoy
# before `pixmesh-sidecar envoy bootstrap` writes Envoy's configuration.
#   docker build -t registry.example.com/pixmesh:0.1.0 --build-arg VERSION=0.1.0 \
#     --build-arg SOURCE="$(git remote get-url origin)" --build-arg REVISION="$(git rev-parse HEAD)" .
# (or `buildah bud` / `podman build`: nothing here needs a daemon.)
FROM rust:1.95-trixie AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends cmake nasm pkg-config libdav1d-dev \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add wasm32-wasip1

# Dependencies first, in their own layer: the manifests, the lock file and the gRPC contract
# (proto/, whose build script compiles it) with empty crates, so a source change rebuilds
# pixmesh's crates only.
COPY Cargo.toml Cargo.lock ./
COPY core/Cargo.toml core/
COPY filter/Cargo.toml filter/
COPY sidecar/Cargo.toml sidecar/
COPY tests/Cargo.toml tests/
COPY proto proto
RUN mkdir -p core/src filter/src sidecar/src/bin sidecar/benches tests/src \
 && touch core/src/lib.rs filter/src/lib.rs sidecar/src/lib.rs tests/src/lib.rs \
 && for f in sidecar/src/main.rs sidecar/src/bin/pixmesh-bench.rs sidecar/benches/pipeline.rs \
        sidecar/benches/steps.rs; do echo 'fn main() {}' > "$f"; done \
 && cargo build --locked --release -p pixmesh-sidecar \
 && cargo build --locked --release -p pixmesh-filter --target wasm32-wasip1 \
 && rm -rf core/src filter/src sidecar/src sidecar/benches tests/src

# pixmesh itself. The sources are touched: COPY keeps their times, which may be older than
# the empty crates' build above.
COPY . .
RUN find core filter proto sidecar tests -name '*.rs' -exec touch {} + \
 && cargo build --locked --release -p pixmesh-sidecar \
 && cargo build --locked --release -p pixmesh-filter --target wasm32-wasip1 \
 && mkdir -p /out \
 && cp target/release/pixmesh-sidecar /out/ \
 && cp target/wasm32-wasip1/release/pixmesh_filter.wasm /out/

FROM debian:trixie-slim
# The workspace's version (Cargo.toml); where the source lives and which commit, from the build.
ARG VERSION=0.1.0
ARG SOURCE=""
ARG REVISION=""
LABEL org.opencontainers.image.title="pixmesh" \
      org.opencontainers.image.description="pixmesh render sidecar and its Envoy wasm filter" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libdav1d7 \
 && rm -rf /var/lib/apt/lists/*
COPY LICENSE NOTICE /usr/share/doc/pixmesh/
COPY --from=build /out/pixmesh-sidecar /usr/local/bin/
COPY --from=build /out/pixmesh_filter.wasm /opt/pixmesh/
# gRPC (the sidecar's listen address in its configuration; the chart's sidecar.port).
EXPOSE 50051
USER 65532:65532
ENTRYPOINT ["pixmesh-sidecar"]
CMD ["serve", "--config", "/etc/pixmesh/sidecar.toml"]
