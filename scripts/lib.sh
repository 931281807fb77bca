# Shared helpers of scripts/test.sh and scripts/run.sh: install what zkcoord's tests and local
# runs need, when it is missing. Sourced, not run.

# Runs a command as root (directly, or through sudo).
as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Installs Debian packages that are not installed yet.
apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "installing Debian packages: ${missing[*]}" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# ZooKeeper's jars (/usr/share/java/zookeeper.jar) and a Java runtime.
ensure_zookeeper() {
    if [ -f /usr/share/java/zookeeper.jar ] && command -v java >/dev/null; then return 0; fi
    apt_install zookeeper default-jre-headless
}

# SQLite's headers and shared library (libsqlite3-dev), which the flow-workers example and its
# test link through rusqlite (the system's libsqlite3, not a bundled copy).
ensure_sqlite() {
    if [ -f /usr/include/sqlite3.h ]; then return 0; fi
    apt_install libsqlite3-dev
}

# etcd 3.4 (/usr/bin/etcd from Debian's etcd-server), the benchmark's (bench/) point of comparison.
ensure_etcd() {
    if [ -x /usr/bin/etcd ]; then return 0; fi
    apt_install etcd-server
}

# The Java client's build (clients/java/build.sh): a JDK, protoc with grpc-java's plugin, and
# the Debian jars of grpc-java 1.41 (netty transport), protobuf-java, netty, guava, perfmark,
# gson and javax.annotation; kotlinc (Debian's kotlin 1.3) for the Kotlin example node.
# Builds the client when an input changed; prints the classpath of its tests.
ensure_java_client() {
    apt_install openjdk-17-jdk-headless protobuf-compiler protobuf-compiler-grpc-java-plugin \
        libgrpc-java libprotobuf-java libnetty-java libguava-java libperfmark-java \
        libgoogle-gson-java libgeronimo-annotation-1.3-spec-java kotlin
    clients/java/build.sh
}

# A Python venv in target/pyvenv with tests/python/requirements.txt installed; prints its python.
ensure_python_venv() {
    local venv=target/pyvenv req=tests/python/requirements.txt
    if ! [ -x "$venv/bin/python" ]; then
        command -v python3 >/dev/null || apt_install python3
        python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv && rm -rf "$venv" && python3 -m venv "$venv"; }
    fi
    if ! cmp -s "$req" "$venv/.requirements.installed"; then
        "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req" >&2
        cp "$req" "$venv/.requirements.installed"
    fi
    echo "$PWD/$venv/bin/python"
}
