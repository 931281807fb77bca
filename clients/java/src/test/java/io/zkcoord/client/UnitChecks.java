package io.zkcoord.client;

import static io.zkcoord.client.Checks.check;
import static io.zkcoord.client.Checks.say;

import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import zkcoord.v1.LeaseOuterClass.Leadership;
import zkcoord.v1.LeaseOuterClass.OwnedShards;
import zkcoord.v1.LeaseOuterClass.ShardOwnership;
import zkcoord.v1.ShardsOuterClass.ShardEvent.Kind;
import zkcoord.v1.ShardsOuterClass.WatchResponse;

/**
 * The Java client's pure rules, without a server: what a Watch message means as events, what a
 * health check's result means, the validity of a status and what a confirmed heartbeat lists.
 * Run by tests/it/java_client.rs; prints {@code java unit checks passed} at the end.
 */
public final class UnitChecks {
    private UnitChecks() {}

    public static void main(String[] args) {
        try {
            watchMessagesBecomeEvents();
            healthCheckResults();
            validityRunsOutByTime();
            confirmedBeatsListOwnerships();
        } catch (Throwable failure) {
            failure.printStackTrace();
            System.exit(1);
        }
        say("java unit checks passed");
        System.exit(0);
    }

    static zkcoord.v1.ShardsOuterClass.ShardEvent event(Kind kind, int shard, long epoch) {
        return zkcoord.v1.ShardsOuterClass.ShardEvent.newBuilder().setKind(kind).setShard(shard).setEpoch(epoch).build();
    }

    static void watchMessagesBecomeEvents() {
        Map<Integer, Long> told = new TreeMap<>();
        var first = WatchResponse.newBuilder().setSnapshot(true)
                .addEvents(event(Kind.KIND_ASSIGNED, 1, 5)).addEvents(event(Kind.KIND_ASSIGNED, 2, 5)).build();
        check(ShardMember.changes(first, told).equals(List.of(new ShardEvent.Assigned(1, 5), new ShardEvent.Assigned(2, 5))), told);
        var revoke = WatchResponse.newBuilder().addEvents(event(Kind.KIND_REVOKE, 2, 5)).build();
        check(ShardMember.changes(revoke, told).equals(List.of(new ShardEvent.Revoked(2, 5))) && told.equals(Map.of(1, 5L)), told);
        // A new stream's snapshot: shard 1 moved on (epoch 7 elsewhere), shard 3 is being revoked
        // though never told (released so that it moves), shard 4 is new.
        var snapshot = WatchResponse.newBuilder().setSnapshot(true)
                .addEvents(event(Kind.KIND_REVOKE, 3, 6)).addEvents(event(Kind.KIND_ASSIGNED, 4, 8)).build();
        var events = ShardMember.changes(snapshot, told);
        check(events.equals(List.of(new ShardEvent.Revoked(1, 5), new ShardEvent.Revoked(3, 6), new ShardEvent.Assigned(4, 8))), events);
        check(told.equals(Map.of(4, 8L)), told);
        // The same snapshot again changes nothing.
        check(ShardMember.changes(snapshot, told).equals(List.of(new ShardEvent.Revoked(3, 6))), "a shard still being revoked is revoked again");
        say("ok watch messages become events");
    }

    static void healthCheckResults() {
        check(HealthChecks.outcome(null) == null && HealthChecks.outcome(true) == null, "null and true pass");
        check("check failed".equals(HealthChecks.outcome(false)) && "check failed".equals(HealthChecks.outcome("")), "false and the empty string fail");
        check("db down".equals(HealthChecks.outcome("db down")), "a string is the reason");
        String cut = HealthChecks.truncate("é".repeat(200));
        check(cut.getBytes(java.nio.charset.StandardCharsets.UTF_8).length <= 256 && cut.equals("é".repeat(128)), "cut at 256 bytes, whole characters", cut.length());
        var checks = new HealthChecks(Map.of("throws", () -> {
            throw new IllegalStateException("bus down");
        }), "unit");
        var health = checks.run(100);
        check(health.getChecks(0).getMessage().equals("IllegalStateException: bus down"), health);
        checks.shutdown();
        say("ok health check results");
    }

    static void validityRunsOutByTime() throws InterruptedException {
        long now = System.nanoTime();
        check(new LeaseStatus(LeaseStatus.State.CONFIRMED, now + 1_000_000_000L).confirmedNow(), "valid before until");
        var soon = new LeaseStatus(LeaseStatus.State.CONFIRMED, System.nanoTime() + 20_000_000L);
        Thread.sleep(40);
        check(!soon.confirmedNow(), "not valid from until on, with no message at all");
        check(!new LeaseStatus(LeaseStatus.State.UNCONFIRMED, now + 1_000_000_000L).confirmedNow(), "unconfirmed is never valid");
        say("ok validity runs out by time");
    }

    static void confirmedBeatsListOwnerships() {
        var ownership = ShardOwnership.newBuilder().setGroup("g").setMemberId("m")
                .addRanges(OwnedShards.newBuilder().setFirst(2).setLast(4).setEpoch(9))
                .addRanges(OwnedShards.newBuilder().setFirst(7).setLast(7).setEpoch(11)).build();
        var leadership = Leadership.newBuilder().setElection("e").setCandidateId("c").setTerm(3).setFencingToken(40).build();
        var beat = new ConfirmedBeat(0, Set.of("e"), List.of(leadership), Set.of("g"), List.of(ownership));
        check(beat.ownedShards("g", "m").equals(Map.of(2, 9L, 3, 9L, 4, 9L, 7, 11L)), beat.ownedShards("g", "m"));
        check(beat.ownedShards("g", "other").isEmpty() && beat.namesGroup("g") && !beat.namesGroup("h"), beat);
        check(beat.leadership("e", "c").orElseThrow().getFencingToken() == 40 && beat.leadership("e", "d").isEmpty(), beat);
        say("ok confirmed beats list ownerships");
    }
}
