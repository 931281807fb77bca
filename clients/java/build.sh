#!/usr/bin/env bash
# Builds the Java client (clients/java) with Debian's packages only (see ensure_java_client in
# scripts/lib.sh; no Maven or Gradle): protoc + grpc_java_plugin generate the stubs of
# proto/zkcoord/v1/*.proto, javac compiles them with the library, then its test programs
# (clients/java/src/test) and the Java node of examples/master-standby, and, when kotlinc is
# installed, the Kotlin node of examples/master-standby.
#
#   clients/java/build.sh            # build (when an input changed) into target/java
#
# Outputs in target/java: zkcoord-client.jar (generated stubs + library), zkcoord-client-tests.jar
# (test programs and example nodes), and classpath (the full runtime classpath, one line: both
# jars and the Debian jars they need), which it also prints on stdout. Diagnostics go to stderr.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
out="$repo/target/java"
java_dir=/usr/share/java

# The runtime jars: grpc-java 1.41 (netty transport), protobuf-java 3.21, netty 4.1 (the separate
# jars: netty-all.jar is empty in Debian), guava, perfmark, gson, javax.annotation.
deps=(
    grpc-api grpc-context grpc-core grpc-netty grpc-protobuf grpc-protobuf-lite grpc-stub
    protobuf guava failureaccess perfmark-api gson error_prone_annotations
    geronimo-annotation-1.3-spec
    netty-buffer netty-codec netty-codec-http netty-codec-http2 netty-codec-socks netty-common
    netty-handler netty-handler-proxy netty-resolver netty-transport
    netty-transport-native-unix-common
)
classpath=""
for dep in "${deps[@]}"; do
    if [ -f "$java_dir/$dep.jar" ]; then
        classpath="$classpath:$java_dir/$dep.jar"
    elif [ "$dep" != failureaccess ]; then # guava's failureaccess is inside guava.jar on Debian
        echo "missing $java_dir/$dep.jar: run scripts/test.sh (or source scripts/lib.sh; ensure_java_client)" >&2
        exit 1
    fi
done
classpath="${classpath#:}"
lib_jar="$out/zkcoord-client.jar"
tests_jar="$out/zkcoord-client-tests.jar"
kotlin_jar="$out/zkcoord-kotlin-node.jar"
full="$lib_jar:$tests_jar:$classpath"

# Inputs, and a stamp of them: nothing is rebuilt when none changed.
inputs() {
    find "$repo/proto" "$repo/clients/java/src" "$repo/examples/master-standby" \
        -type f \( -name '*.proto' -o -name '*.java' -o -name '*.kt' \) | sort
    echo "$0" "kotlinc: $(command -v kotlinc || true)"
}
stamp="$( (inputs; inputs | grep -v kotlinc | xargs cat; cat "$0") | sha256sum | cut -d' ' -f1)"
if [ -f "$out/stamp" ] && [ "$(cat "$out/stamp")" = "$stamp" ] && [ -f "$lib_jar" ] && [ -f "$tests_jar" ]; then
    cat "$out/classpath"
    exit 0
fi

started=$SECONDS
rm -rf "$out" && mkdir -p "$out/gen" "$out/classes" "$out/test-classes"
protoc -I"$repo/proto" --java_out="$out/gen" \
    --plugin=protoc-gen-grpc-java=/usr/bin/grpc_java_plugin --grpc-java_out="$out/gen" \
    "$repo"/proto/zkcoord/v1/*.proto
# javax.annotation.Generated (grpc's stubs) comes from geronimo-annotation.
javac -nowarn -encoding UTF-8 --release 17 -cp "$classpath" -d "$out/classes" \
    $(find "$out/gen" "$repo/clients/java/src/main/java" -name '*.java') >&2
jar --create --file "$lib_jar" -C "$out/classes" .
javac -encoding UTF-8 --release 17 -Xlint:all -Werror -cp "$lib_jar:$classpath" -d "$out/test-classes" \
    $(find "$repo/clients/java/src/test/java" "$repo/examples/master-standby" -name '*.java') >&2
jar --create --file "$tests_jar" -C "$out/test-classes" .
if command -v kotlinc >/dev/null; then
    JAVA_OPTS="-Xshare:auto" kotlinc -nowarn -jvm-target 1.8 -cp "$lib_jar:$classpath" -d "$kotlin_jar" \
        "$repo"/examples/master-standby/*.kt 2>&1 | grep -v '^warning' >&2 || true
    [ -f "$kotlin_jar" ] || { echo "kotlinc failed" >&2; exit 1; }
    full="$full:$kotlin_jar:$(ls /usr/share/java/kotlin-stdlib.jar)"
fi
echo "$full" >"$out/classpath"
echo "$stamp" >"$out/stamp"
echo "built the Java client in $((SECONDS - started)) s: $out" >&2
cat "$out/classpath"
