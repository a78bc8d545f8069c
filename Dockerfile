# The `pixmesh` image used by k8s/deployment.yaml: the sidecar binary, plus the filter's .wasm and
# the transcoder's descriptor set under /opt/pixmesh for Envoy (copied by an init container).
#   docker build -t pixmesh:latest .
FROM rust:1.95-bookworm AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends cmake nasm pkg-config libdav1d-dev \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add wasm32-wasip1
COPY . .
RUN cargo build --locked --release -p pixmesh-sidecar \
 && cargo build --locked --release -p pixmesh-filter --target wasm32-wasip1 \
 && mkdir -p /out \
 && cp target/release/pixmesh-sidecar /out/ \
 && cp target/wasm32-wasip1/release/pixmesh_filter.wasm /out/ \
 && /out/pixmesh-sidecar descriptor --out /out/pixmesh.pb

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libdav1d6 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/pixmesh-sidecar /usr/local/bin/
COPY --from=build /out/pixmesh_filter.wasm /out/pixmesh.pb /opt/pixmesh/
USER 65532:65532
ENTRYPOINT ["pixmesh-sidecar"]
CMD ["serve", "--config", "/etc/pixmesh/sidecar.toml"]
