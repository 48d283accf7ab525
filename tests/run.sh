#!/usr/bin/env bash
# Every check and test of the workspace, from a fresh clone.
#
# Works on a fresh Debian machine that has a Rust toolchain (cargo, rustfmt,
# clippy); as root it installs the Debian packages the build needs. All test
# servers bind 127.0.0.1 on port 0 and are stopped by the tests themselves,
# but for the netns harness (root only), whose hosts have 192.0.2.0/24
# addresses in network namespaces it makes and removes.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }

if ! need cargo; then
    echo "error: cargo not found; install a Rust toolchain (rustup) and run this again" >&2
    exit 1
fi
# Installs a Debian package when its command is missing (as root), or says
# how to.
ensure() {
    local cmd=$1 pkg=$2 why=$3
    need "$cmd" && return 0
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null
    else
        echo "error: $cmd is missing ($why); run 'sudo apt-get install $pkg' and run this again" >&2
        exit 1
    fi
}

ensure cc gcc "a C compiler for crates with C parts, e.g. ring under rustls"
ensure tmux tmux "the end-to-end test of lido-tui drives it in a real terminal"
ensure etcd etcd-server "the cluster tests run a real etcd"
ensure protoc protobuf-compiler "etcd-client's build generates its gRPC code with protoc"
if [ "$(id -u)" = 0 ]; then
    # Only root can make network namespaces: others skip the netns harness.
    ensure ip iproute2 "the netns harness (tests/netns) puts each host of a cluster in a network namespace"
fi

echo "== venue fakes share no code with the adapters they test"
# A fake that names lidod's or lido-shared's types copies the adapter's
# mistakes into the venue (DESIGN.md, "Venues"): every fake source is checked.
fake_sources=$(find tests -path tests/target -prune -o \( -path 'tests/*fake*' -a -name '*.rs' \) -print | sort)
if offending=$(grep -nE 'lidod::|lido_shared::' /dev/null $fake_sources); then
    echo "error: a venue fake names the adapter's crates:" >&2
    echo "$offending" >&2
    exit 1
fi

echo "== format"
cargo fmt --all -- --check
echo "== lint"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== build (binaries and examples the integration tests start)"
cargo build --workspace --all-targets --locked
echo "== test"
cargo test --workspace --locked
