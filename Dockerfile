# One image, both binaries, statically linked (musl), on distroless/static as non-root.
# Build: docker build -t kubevirt-bmc:dev .
FROM docker.io/library/rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
RUN cargo build --release --locked --target x86_64-unknown-linux-musl \
        -p kubevirt-bmc --bin kubevirt-bmc \
        -p kubevirt-bmc-webhook --bin kubevirt-bmc-webhook

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/kubevirt-bmc /usr/local/bin/kubevirt-bmc
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/kubevirt-bmc-webhook /usr/local/bin/kubevirt-bmc-webhook
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/kubevirt-bmc-webhook"]
