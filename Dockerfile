# chatd: build with the Rust toolchain, run from a small non-root image.
#   docker build -t chatd .
#   docker run --rm -p 50051:50051 chatd serve --listen 0.0.0.0:50051 --http off
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY migrations migrations
COPY src src
COPY vendor vendor
RUN cargo build --release --locked --bin chatd

# distroless/cc: glibc and libgcc only, no shell; "nonroot" runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/chatd /usr/local/bin/chatd
USER 65532:65532
EXPOSE 50051 8080 9464
ENTRYPOINT ["/usr/local/bin/chatd"]
CMD ["serve", "--listen", "0.0.0.0:50051", "--http", "off", "--metrics", "0.0.0.0:9464"]
