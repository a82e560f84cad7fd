# Builds celeriac, celeriac-worker, celeriac-beat and celeriac-dashboard into one small image.
#   docker build -t celeriac:local .
#   docker run --rm --network host celeriac:local        # a worker; results in /data/celeriac.db

# The workspace's manifests alone (every Cargo.toml and Cargo.lock), with
# stub sources: an empty lib.rs per crate and an empty main() at each
# target path a manifest names ([[bin]], [[example]]). This stage runs again on any
# change, but its output changes only with a manifest, so the dependency
# layer below is rebuilt only when dependencies change.
FROM rust:1.95-bookworm AS manifests
WORKDIR /src
COPY . .
RUN set -eu; \
    mkdir /manifests; \
    find . -maxdepth 2 \( -name Cargo.toml -o -name Cargo.lock \) -exec cp --parents {} /manifests/ \; ; \
    cd /manifests; \
    for manifest in */Cargo.toml; do \
      crate=$(dirname "$manifest"); \
      mkdir -p "$crate/src"; \
      echo '//! Stub for caching dependencies.' > "$crate/src/lib.rs"; \
      for target in $(sed -n 's/^path *= *"\(.*\.rs\)"/\1/p' "$manifest"); do \
        mkdir -p "$crate/$(dirname "$target")"; \
        printf '//! Stub for caching dependencies.\nfn main() {}\n' > "$crate/$target"; \
      done; \
    done

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies: built from the manifests and stubs, cached until a
# Cargo.toml or Cargo.lock changes.
COPY --from=manifests /manifests/ ./
RUN cargo build --release --locked -p celeriac -p celeriac-worker -p celeriac-beat -p celeriac-dashboard \
    && find . -path ./target -prune -o -name '*.rs' -exec rm {} +
# The sources. COPY keeps the files' own modification times, which can be
# older than the stubs' build: touch them so cargo rebuilds the workspace's
# crates.
COPY . .
RUN find . -path ./target -prune -o -name '*.rs' -exec touch {} + \
    && cargo build --release --locked -p celeriac -p celeriac-worker -p celeriac-beat -p celeriac-dashboard

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/celeriac /src/target/release/celeriac-worker /src/target/release/celeriac-beat \
    /src/target/release/celeriac-dashboard /usr/local/bin/
# The default result backend is sqlite://celeriac.db?mode=rwc, relative to
# the working directory: /data, writable by the user the image runs as
# (mount a volume there to keep it).
RUN mkdir /data && chown nobody:nogroup /data
WORKDIR /data
USER nobody
CMD ["celeriac-worker"]
