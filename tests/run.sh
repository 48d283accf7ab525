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

echo "== toolchain"
# rust-toolchain.toml pins the release; rustup does not download it by itself
# (and cannot, offline). When no toolchain of that name is installed but
# another one is that release (a machine with only `stable` = 1.95.0), use it.
pinned=$(sed -n 's/^channel = "\(.*\)"$/\1/p' rust-toolchain.toml)
if need rustup && ! rustup run "$pinned" rustc -V >/dev/null 2>&1; then
    for tc in $(rustup toolchain list | awk '{print $1}'); do
        if rustup run "$tc" rustc -V 2>/dev/null | grep -q "^rustc $pinned "; then
            export RUSTUP_TOOLCHAIN=$tc
            echo "toolchain $pinned is installed as $tc; using it"
            break
        fi
    done
    if [ -z "${RUSTUP_TOOLCHAIN:-}" ]; then
        echo "error: Rust $pinned (rust-toolchain.toml) is not installed; run 'rustup toolchain install $pinned --component rustfmt,clippy'" >&2
        exit 1
    fi
fi
rustc -V
if ! rustc -V | grep -q "^rustc $pinned "; then
    echo "warning: rustc is not $pinned, the release rust-toolchain.toml pins; results may differ from CI's" >&2
fi
for tool in fmt clippy; do
    if ! cargo "$tool" --version >/dev/null 2>&1; then
        echo "error: cargo $tool is missing from the toolchain; run 'rustup component add ${tool/fmt/rustfmt}' and run this again" >&2
        exit 1
    fi
done
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

echo "== venue fakes share no code with the adapters they test"
# A fake that names lidod's or lido-shared's types copies the adapter's
# mistakes into the venue (DESIGN.md, "Venues"): every fake source is checked.
fake_sources=$(find tests -path tests/target -prune -o \( -path 'tests/*fake*' -a -name '*.rs' \) -print | sort)
if offending=$(grep -nE 'lidod::|lido_shared::' /dev/null $fake_sources); then
    echo "error: a venue fake names the adapter's crates:" >&2
    echo "$offending" >&2
    exit 1
fi

echo "== monitoring (alert rules and dashboard)"
# promtool comes with Debian's prometheus package; installed as root, else
# the syntax check is skipped with the reason (the metric names are always checked).
if ! need promtool && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
if need promtool; then
    promtool check rules deploy/monitoring/alerts.yml
    promtool test rules deploy/monitoring/alerts.test.yml
else
    echo "skipped: promtool check rules and test rules (promtool missing and not root; 'sudo apt-get install prometheus' brings it)"
fi
bash deploy/monitoring/check-metrics.sh

echo "== format"
cargo fmt --all -- --check
echo "== lint"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== build (binaries and examples the integration tests start)"
cargo build --workspace --all-targets --locked
echo "== test"
cargo test --workspace --locked
