#!/usr/bin/env bash
# Every check and test of the workspace, from a fresh clone.
#
# Works on a fresh Debian machine that has a Rust toolchain (cargo, rustfmt,
# clippy); as root it installs the Debian packages the build needs. All test
# servers bind 127.0.0.1 on port 0 and are stopped by the tests themselves.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }

if ! need cargo; then
    echo "error: cargo not found; install a Rust toolchain (rustup) and run this again" >&2
    exit 1
fi
# A C compiler for crates with C parts (ring, used by rustls).
if ! need cc; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq gcc >/dev/null
    else
        echo "error: no C compiler; run 'sudo apt-get install gcc' and run this again" >&2
        exit 1
    fi
fi

# tmux for the end-to-end test of lido-tui, which drives it in a real terminal.
if ! need tmux; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq tmux >/dev/null
    else
        echo "error: tmux is missing; run 'sudo apt-get install tmux' and run this again" >&2
        exit 1
    fi
fi

echo "== format"
cargo fmt --all -- --check
echo "== lint"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== build (binaries and examples the integration tests start)"
cargo build --workspace --all-targets --locked
echo "== test"
cargo test --workspace --locked
