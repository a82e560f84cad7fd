# Builds every celeriac binary into one small image.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p celeriac -p celeriac-worker -p celeriac-beat

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/celeriac /src/target/release/celeriac-worker /src/target/release/celeriac-beat /usr/local/bin/
USER nobody
CMD ["celeriac-worker"]
