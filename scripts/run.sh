#!/usr/bin/env bash
# Starts zkcoord against a local single-node ZooKeeper on 127.0.0.1:2181: uses one that
# already answers there, or installs ZooKeeper (Debian packages) if missing and starts one
# itself (data in target/dev-zookeeper, stopped by PID when zkcoord exits).
# Extra arguments go to `zkcoord serve`, e.g. scripts/run.sh --listen 127.0.0.1:7711
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ZK_PORT=2181
srvr() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$ZK_PORT && echo srvr >&3 && cat <&3" 2>/dev/null || true; }

zk_pid=""
cleanup() { [ -n "$zk_pid" ] && kill "$zk_pid" 2>/dev/null && wait "$zk_pid" 2>/dev/null; true; }
trap cleanup EXIT

if srvr | grep -q '^Mode:'; then
    echo "using the ZooKeeper already serving on 127.0.0.1:$ZK_PORT" >&2
else
    ensure_zookeeper
    dir="$PWD/target/dev-zookeeper"
    mkdir -p "$dir/data"
    cat >"$dir/zoo.cfg" <<CFG
tickTime=2000
dataDir=$dir/data
clientPort=$ZK_PORT
clientPortAddress=127.0.0.1
admin.enableServer=false
4lw.commands.whitelist=srvr,cons,stat,ruok,mntr
maxClientCnxns=0
CFG
    setsid java -Xmx512m -cp /usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar \
        org.apache.zookeeper.server.quorum.QuorumPeerMain "$dir/zoo.cfg" >"$dir/zookeeper.log" 2>&1 &
    zk_pid=$!
    for _ in $(seq 1 300); do
        srvr | grep -q '^Mode:' && break
        kill -0 "$zk_pid" 2>/dev/null || { echo "ZooKeeper failed to start; see $dir/zookeeper.log" >&2; exit 1; }
        sleep 0.1
    done
    srvr | grep -q '^Mode:' || { echo "ZooKeeper did not serve within 30 s; see $dir/zookeeper.log" >&2; exit 1; }
    echo "started ZooKeeper on 127.0.0.1:$ZK_PORT (pid $zk_pid, log $dir/zookeeper.log)" >&2
fi

cargo build --locked --bin zkcoord
# Not exec: the trap must stop ZooKeeper when zkcoord exits. zkcoord prints its gRPC address.
target/debug/zkcoord serve --zookeeper "127.0.0.1:$ZK_PORT/zkcoord" "$@" &
zkcoord_pid=$!
trap 'kill -TERM "$zkcoord_pid" 2>/dev/null; wait "$zkcoord_pid"; cleanup' INT TERM
wait "$zkcoord_pid"
