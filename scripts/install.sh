#!/usr/bin/env bash
# Builds the command-line programs in release mode and installs them:
#   celeriac         the admin tool (call, result, revoke, purge, dlq, health, migrate)
#   celeriac-worker  the stock worker (runs the diagnostic tasks celeriac.noop/echo/sleep/fail)
#   celeriac-beat    the scheduler
#   celeriac-dashboard  the web dashboard (also run as `celeriac dashboard`)
# into DIR, by default ${CARGO_HOME:-~/.cargo}/bin, where `cargo install` puts
# programs (rustup puts that directory on PATH). One build for all; the
# same as `cargo install --locked --path producer` (then worker, beat,
# dashboard) but without building the shared dependencies each time.
# Usage: scripts/install.sh [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-${CARGO_HOME:-$HOME/.cargo}/bin}
bins=(celeriac celeriac-worker celeriac-beat celeriac-dashboard)
echo "install: building ${bins[*]} (release; from scratch this takes several minutes)..."
cargo build --release --locked -p celeriac -p celeriac-worker -p celeriac-beat -p celeriac-dashboard
target=$(cargo metadata --format-version 1 --no-deps | grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)
mkdir -p "$dir"
for bin in "${bins[@]}"; do
  install -m 755 "$target/release/$bin" "$dir/$bin"
done
echo "install: ${bins[*]} are in $dir"
case ":$PATH:" in
  *":$dir:"*) ;;
  *) echo "install: $dir is not on PATH; add it (export PATH=\"$dir:\$PATH\") or run them by their full path" ;;
esac
