# One image, both binaries, statically linked against glibc by `cargo static-bins` (see
# .cargo/config.toml), on an empty base as non-root. The binaries need nothing but themselves
# and the files a Pod mounts: glibc 2.34+ has its `files` and `dns` name services built in
# (also when static) and defaults to "hosts: files dns", so /etc/hosts and /etc/resolv.conf
# from the kubelet are enough. The CA bundle is for https event destinations.
# e2e/tests/image.rs runs these binaries in an empty root and builds this runtime stage.
# Build: docker build -t kubevirt-bmc:dev .   (or podman build)
FROM docker.io/library/rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo static-bins

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /src/target/x86_64-unknown-linux-gnu/release/kubevirt-bmc /usr/local/bin/kubevirt-bmc
COPY --from=build /src/target/x86_64-unknown-linux-gnu/release/kubevirt-bmc-webhook /usr/local/bin/kubevirt-bmc-webhook
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/kubevirt-bmc-webhook"]
