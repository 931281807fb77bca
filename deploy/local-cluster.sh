#!/usr/bin/env bash
# A production-like zkcoord on one machine, for trying failover by hand: a 3-node ZooKeeper
# ensemble and 2 zkcoord instances, all on 127.0.0.1.
#
#   deploy/local-cluster.sh up [DIR]     start everything (state and logs in DIR, default
#                                        target/local-cluster); prints the endpoints
#   deploy/local-cluster.sh status [DIR] which processes run
#   deploy/local-cluster.sh kill NAME [DIR]   kill -9 one of zk1 zk2 zk3 zkcoord1 zkcoord2
#   deploy/local-cluster.sh start NAME [DIR]  start it again
#   deploy/local-cluster.sh down [DIR]   stop everything (by PID)
#
# Ports: BASE_PORT (default 22181) + 0..2 for ZooKeeper clients, + 10..15 for the ensemble's
# peer and election ports, + 20..21 for zkcoord's gRPC. ZKCOORD_BIN selects the zkcoord binary
# (default: built with cargo into target/debug).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

cmd=${1:-}
case "$cmd" in
    up|status|down) dir=${2:-target/local-cluster} ;;
    kill|start) name=${2:?name: zk1 zk2 zk3 zkcoord1 zkcoord2}; dir=${3:-target/local-cluster} ;;
    *) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 64 ;;
esac
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
base=${BASE_PORT:-22181}
zk_hosts="127.0.0.1:$base,127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2))"

running() { [ -f "$dir/$1.pid" ] && kill -0 "$(cat "$dir/$1.pid")" 2>/dev/null; }

srvr() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1 && echo srvr >&3 && cat <&3" 2>/dev/null || true; }

start_zk() {
    local n=$1 port=$((base + $1 - 1))
    running "zk$n" && return 0
    mkdir -p "$dir/zk$n/data"
    echo "$n" >"$dir/zk$n/data/myid"
    {
        echo "tickTime=2000"
        echo "initLimit=10"
        echo "syncLimit=5"
        echo "dataDir=$dir/zk$n/data"
        echo "clientPort=$port"
        echo "clientPortAddress=127.0.0.1"
        echo "admin.enableServer=false"
        echo "4lw.commands.whitelist=srvr,mntr,ruok"
        echo "maxClientCnxns=0"
        for i in 1 2 3; do echo "server.$i=127.0.0.1:$((base + 8 + 2 * i)):$((base + 9 + 2 * i))"; done
    } >"$dir/zk$n/zoo.cfg"
    setsid java -Xmx256m -cp /usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar \
        org.apache.zookeeper.server.quorum.QuorumPeerMain "$dir/zk$n/zoo.cfg" >"$dir/zk$n.log" 2>&1 &
    echo $! >"$dir/zk$n.pid"
}

zkcoord_bin() {
    if [ -n "${ZKCOORD_BIN:-}" ]; then echo "$ZKCOORD_BIN"; return; fi
    cargo build --locked --quiet --bin zkcoord >&2
    echo "$PWD/target/debug/zkcoord"
}

start_zkcoord() {
    local n=$1 port=$((base + 19 + $1))
    running "zkcoord$n" && return 0
    # The old output says "listening" too: remove it before waiting for the new one's.
    rm -f "$dir/zkcoord$n.out"
    setsid "$(zkcoord_bin)" serve --listen "127.0.0.1:$port" --zookeeper "$zk_hosts/zkcoord" \
        --instance-id "local-zkcoord$n" >"$dir/zkcoord$n.out" 2>"$dir/zkcoord$n.log" &
    echo $! >"$dir/zkcoord$n.pid"
}

wait_for() { # what, probe...
    local what=$1; shift
    for _ in $(seq 1 300); do "$@" && return 0; sleep 0.1; done
    echo "$what did not come up within 30 s; logs in $dir" >&2
    return 1
}

zk_serving() { srvr "$1" | grep -q '^Mode:'; }
zkcoord_listening() { grep -q 'listening' "$dir/zkcoord$1.out" 2>/dev/null; }

case "$cmd" in
    up)
        ensure_zookeeper
        for n in 1 2 3; do start_zk "$n"; done
        for n in 1 2 3; do wait_for "zk$n" zk_serving $((base + n - 1)); done
        for n in 1 2; do start_zkcoord "$n"; done
        for n in 1 2; do wait_for "zkcoord$n" zkcoord_listening "$n"; done
        echo "ZooKeeper ensemble: $zk_hosts"
        echo "zkcoord endpoints:  127.0.0.1:$((base + 20)),127.0.0.1:$((base + 21))"
        echo "state and logs:     $dir"
        ;;
    status)
        for name in zk1 zk2 zk3 zkcoord1 zkcoord2; do
            if running "$name"; then echo "$name running (pid $(cat "$dir/$name.pid"))"; else echo "$name stopped"; fi
        done
        ;;
    kill)
        running "$name" && kill -9 "$(cat "$dir/$name.pid")" && echo "killed $name"
        ;;
    start)
        case "$name" in
            zk[123]) start_zk "${name#zk}"; wait_for "$name" zk_serving $((base + ${name#zk} - 1)) ;;
            zkcoord[12]) start_zkcoord "${name#zkcoord}"; wait_for "$name" zkcoord_listening "${name#zkcoord}" ;;
            *) echo "unknown name $name" >&2; exit 64 ;;
        esac
        echo "started $name"
        ;;
    down)
        for name in zkcoord1 zkcoord2 zk1 zk2 zk3; do
            if running "$name"; then kill -TERM "$(cat "$dir/$name.pid")" 2>/dev/null || true; fi
        done
        for name in zkcoord1 zkcoord2 zk1 zk2 zk3; do
            for _ in $(seq 1 100); do running "$name" || break; sleep 0.1; done
            running "$name" && kill -9 "$(cat "$dir/$name.pid")" 2>/dev/null
            rm -f "$dir/$name.pid"
        done
        echo "stopped"
        ;;
esac
