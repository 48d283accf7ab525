#!/usr/bin/env bash
# Fails when the alert rules or the Grafana dashboard name a `lido_*` series
# that lidod does not emit: a metric renamed in the code must be renamed
# here too. What lidod emits is read from its source: the names given to the
# `metrics::counter!/gauge!/histogram!` macros, and the series the IM writes
# itself (`# TYPE lido_…` in its /metrics text). A histogram `x_seconds` is
# served as `x_seconds_bucket`, `_sum` and `_count`.
set -euo pipefail
cd "$(dirname "$0")/../.."

emitted=$(
    {
        grep -rhoE '(counter|gauge|histogram)!\(\s*"lido_[a-z0-9_]+"' lidod/src | grep -oE 'lido_[a-z0-9_]+'
        grep -rhoE '# TYPE lido_[a-z0-9_]+' lidod/src | grep -oE 'lido_[a-z0-9_]+'
    } | sort -u
)
if [ -z "$emitted" ]; then
    echo "error: found no metric in lidod/src; the pattern of this check no longer matches the code" >&2
    exit 1
fi

status=0
checked=0
for file in deploy/monitoring/alerts.yml deploy/monitoring/grafana-dashboard.json; do
    for name in $(grep -oE '\blido_[a-z0-9_]+' "$file" | sort -u); do
        base=$name
        case $name in
            *_seconds_bucket | *_seconds_sum | *_seconds_count) base=${name%_*} ;;
        esac
        checked=$((checked + 1))
        if ! grep -qxF "$base" <<<"$emitted"; then
            echo "error: $file uses $name, which lidod does not emit (renamed or removed?); emitted: $(tr '\n' ' ' <<<"$emitted")" >&2
            status=1
        fi
    done
done
[ "$status" = 0 ] && echo "monitoring: the $checked series names in alerts.yml and grafana-dashboard.json are all emitted by lidod"
exit "$status"
