package io.zkcoord.client;

import static io.zkcoord.client.Checks.check;
import static io.zkcoord.client.Checks.cue;
import static io.zkcoord.client.Checks.eventually;
import static io.zkcoord.client.Checks.eventuallyPresent;
import static io.zkcoord.client.Checks.expectError;
import static io.zkcoord.client.Checks.expectEvent;
import static io.zkcoord.client.Checks.noEvent;
import static io.zkcoord.client.Checks.say;
import static io.zkcoord.client.Checks.seconds;
import static io.zkcoord.client.Checks.sleep;
import static io.zkcoord.client.Checks.staysConfirmed;

import io.grpc.Status.Code;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicReference;
import java.util.stream.Collectors;
import zkcoord.v1.Common.HealthStatus;
import zkcoord.v1.ElectionOuterClass.LeaderInfo;
import zkcoord.v1.ElectionOuterClass.TransferRequest;
import zkcoord.v1.LeaseOuterClass.Binding;
import zkcoord.v1.LeaseOuterClass.LeaseInfo;
import zkcoord.v1.LeaseOuterClass.RevokeRequest;
import zkcoord.v1.LockOuterClass.Holder;
import zkcoord.v1.LockOuterClass.KeyHolders;
import zkcoord.v1.ShardsOuterClass.ShardRange;
import zkcoord.v1.ShardsOuterClass.ShardState;

/**
 * Checks of the Java client against running zkcoord instances (and ZooKeeper), run by
 * tests/it/java_client.rs:
 *
 * <pre>java -cp CLASSPATH io.zkcoord.client.ClientChecks --endpoints HOST:PORT,HOST:PORT --scenario lease</pre>
 *
 * Scenarios: lease, election, lock (two instances or more), failover (three instances: the
 * first a process the driver kills on the cue {@code cue kill-first}, the second one it shuts
 * down gracefully on {@code cue shutdown-second}), frozen (two instances: the first a process the
 * driver freezes with SIGSTOP on {@code cue freeze-first} and kills on {@code cue kill-first}),
 * lock_crash and shards (two instances: the first killed on {@code cue kill-first}), tls. The
 * driver answers each cue with a line {@code done} on stdin.
 *
 * <p>Prints {@code ok <scenario>} per scenario and {@code java client checks passed} at the end;
 * any failed check exits with status 1.
 */
public final class ClientChecks {
    /**
     * The ttl of most leases here: 2 s, twice the Python checks', since a JVM on a loaded machine
     * (JIT, class loading, many threads) pauses longer than CPython's C-core client.
     */
    static final long TTL_MS = 2000;
    static final Duration LONG = Duration.ofSeconds(10);

    private ClientChecks() {}

    public static void main(String[] args) throws Exception {
        List<String> endpoints = null;
        List<String> scenarios = new ArrayList<>();
        for (int i = 0; i + 1 < args.length; i += 2) {
            switch (args[i]) {
                case "--endpoints" -> endpoints = List.of(args[i + 1].split(","));
                case "--scenario" -> scenarios.add(args[i + 1]);
                default -> throw new IllegalArgumentException("unknown argument " + args[i]);
            }
        }
        if (endpoints == null || scenarios.isEmpty()) {
            System.err.println("usage: ClientChecks --endpoints HOST:PORT[,...] --scenario NAME [--scenario NAME ...]");
            System.exit(64);
        }
        try {
            if (!scenarios.contains("tls")) {
                warmUp(endpoints, null);
            }
            for (String name : scenarios) {
                long started = System.nanoTime();
                say("scenario " + name);
                switch (name) {
                    case "lease" -> lease(endpoints);
                    case "election" -> election(endpoints);
                    case "transfer" -> transfer(endpoints);
                    case "lock" -> lock(endpoints);
                    case "failover" -> failover(endpoints);
                    case "lock_crash" -> lockCrash(endpoints);
                    case "frozen" -> frozen(endpoints);
                    case "tls" -> tls(endpoints);
                    case "shards" -> shards(endpoints);
                    default -> throw new IllegalArgumentException("unknown scenario " + name);
                }
                say(String.format("ok %s (%.1f s)", name, seconds(System.nanoTime() - started)));
            }
        } catch (Throwable failure) {
            System.out.flush();
            failure.printStackTrace();
            System.exit(1);
        }
        say("java client checks passed");
        System.exit(0);
    }

    /**
     * Loads the client's classes and connects to every endpoint once before the scenarios: a
     * lease's validity counts from the send time of the grant, which in a cold JVM on a loaded
     * machine would include all of that (a correct, but for 1-second ttls a needlessly short,
     * first validity).
     */
    static void warmUp(List<String> endpoints, Tls tls) {
        long started = System.nanoTime();
        for (String endpoint : endpoints) {
            var builder = ZkcoordClient.builder(endpoint).timeout(Duration.ofSeconds(30));
            try (var client = (tls == null ? builder : builder.tls(tls)).build()) {
                client.leader("java-warm-up");
                LeaseKeeper.grant(client, "java-warm-up", 5000).close();
            } catch (ZkcoordException e) {
                say("  (warm-up of " + endpoint + ": " + e + ")"); // the scenario will tell
            }
        }
        say(String.format("  (warmed up in %.1f s)", seconds(System.nanoTime() - started)));
    }

    static List<String> reversed(List<String> endpoints) {
        List<String> copy = new ArrayList<>(endpoints);
        Collections.reverse(copy);
        return copy;
    }

    static LeaseInfo leaseInfo(ZkcoordClient client, long leaseId) {
        return client.timeToLive(leaseId).getLease();
    }

    /** Whether TimeToLive shows {@code status} and the checks name → "STATUS message". */
    static boolean health(ZkcoordClient client, long leaseId, HealthStatus status, Map<String, String> checks) {
        var health = leaseInfo(client, leaseId).getHealth();
        Map<String, String> seen = health.getChecksList().stream()
                .collect(Collectors.toMap(c -> c.getName(), c -> c.getStatus().name() + " " + c.getMessage()));
        return health.getStatus() == status && seen.equals(checks);
    }

    static void lease(List<String> endpoints) throws Exception {
        var client = ZkcoordClient.connect(String.join(",", endpoints));
        var other = ZkcoordClient.builder(reversed(endpoints)).build(); // reads through another instance
        AtomicBoolean ok = new AtomicBoolean(true);
        AtomicBoolean hang = new AtomicBoolean(false);
        AtomicBoolean busDown = new AtomicBoolean(false);
        LeaseKeeper keeper = LeaseKeeper.builder(client, "java-owner")
                .ttlMs(TTL_MS)
                .metadata("zone", "eu-1")
                .check("database", () -> {
                    if (hang.get()) {
                        Thread.sleep(2000);
                    }
                    return ok.get() ? null : "connection refused";
                })
                .check("message-bus", HealthCheck.of(() -> {
                    if (busDown.get()) {
                        throw new IllegalStateException("bus down");
                    }
                    return true;
                }))
                .grant();
        check(keeper.id() > 0 && !keeper.secret().isEmpty() && keeper.ttlMs() == TTL_MS, keeper);
        check(keeper.isConfirmed(), "confirmed right after the grant", keeper);

        // Kept alive past several ttls, confirmed all along, health visible from another instance.
        staysConfirmed(keeper, 3.5 * TTL_MS / 1000, "kept alive");
        LeaseInfo info = leaseInfo(other, keeper.id());
        check(info.getOwner().equals("java-owner") && info.getMetadataMap().equals(Map.of("zone", "eu-1")), info);
        check(info.getGrantedTtlMs() == TTL_MS, info);
        Map<String, String> fine = Map.of("database", "HEALTH_STATUS_SERVING ", "message-bus", "HEALTH_STATUS_SERVING ");
        check(health(other, keeper.id(), HealthStatus.HEALTH_STATUS_SERVING, fine), info);
        say("  lease " + keeper.id() + " alive after 3.5 ttls: " + keeper.status() + ", health SERVING");

        // A failing check reports NOT_SERVING with its reason; the lease lives on.
        ok.set(false);
        Map<String, String> down = Map.of("database", "HEALTH_STATUS_NOT_SERVING connection refused", "message-bus", "HEALTH_STATUS_SERVING ");
        eventually(() -> health(other, keeper.id(), HealthStatus.HEALTH_STATUS_NOT_SERVING, down), "NOT_SERVING is visible");
        eventually(keeper::isConfirmed, "confirmed while NOT_SERVING");
        say("  failing check: NOT_SERVING (connection refused)");

        // A check that throws, and one that does not answer within ttl/6, fail too; the heartbeats
        // keep their pace meanwhile.
        ok.set(true);
        hang.set(true);
        busDown.set(true);
        Map<String, String> hung = Map.of(
                "database", "HEALTH_STATUS_NOT_SERVING no answer within " + Math.round(TTL_MS / 6.0) + " ms",
                "message-bus", "HEALTH_STATUS_NOT_SERVING IllegalStateException: bus down");
        eventually(() -> health(other, keeper.id(), HealthStatus.HEALTH_STATUS_NOT_SERVING, hung), "hung and throwing checks fail");
        staysConfirmed(keeper, 2.5 * TTL_MS / 1000, "kept alive while a check hangs");
        say("  hanging and throwing checks: NOT_SERVING, lease still confirmed");
        hang.set(false);
        busDown.set(false);
        eventually(() -> health(other, keeper.id(), HealthStatus.HEALTH_STATUS_SERVING, fine), "SERVING again", Duration.ofSeconds(8));

        // Revoke ends it everywhere.
        keeper.revoke();
        check(keeper.isLost() && !keeper.isConfirmed(), keeper);
        expectError(() -> other.timeToLive(keeper.id()), Code.NOT_FOUND);

        // A lease ended by someone else (here: a raw Revoke) is noticed as lost.
        LeaseKeeper second = LeaseKeeper.grant(client, "java-owner-2", TTL_MS);
        other.leases().revoke(RevokeRequest.newBuilder().setLease(second.leaseRef()).build());
        eventually(second::isLost, "the keeper notices its lease ended", Duration.ofSeconds(3));
        check(!second.isConfirmed(), second);
        say("  revoked elsewhere: the keeper reports lost");

        // Stopping the heartbeats: unconfirmed within a ttl of the last heartbeat, then expired.
        try (LeaseKeeper third = LeaseKeeper.grant(client, "java-owner-3", TTL_MS)) {
            third.stop();
            long stopped = System.nanoTime();
            long until = third.lastConfirmed().untilNanos();
            check(until - stopped <= TTL_MS * 1_000_000L, "confirmed at most one ttl after the last heartbeat");
            eventually(() -> !third.isConfirmed(), "confirmation runs out", Duration.ofSeconds(2));
            check(System.nanoTime() - until >= 0, "confirmed until then");
            eventually(() -> {
                try {
                    other.timeToLive(third.id());
                    return false;
                } catch (ZkcoordException e) {
                    return e.code() == Code.NOT_FOUND;
                }
            }, "the stopped lease expires", Duration.ofSeconds(3));
        } // closing revokes: NOT_FOUND is ignored
        say("  stopped: unconfirmed within a ttl, then expired");
        client.close();
        other.close();
    }

    static void election(List<String> endpoints) throws Exception {
        var onA = ZkcoordClient.connect(String.join(",", endpoints));
        var onB = ZkcoordClient.builder(reversed(endpoints)).build(); // the candidates talk to different instances
        AtomicBoolean healthy = new AtomicBoolean(true);
        LeaseKeeper leaseA = LeaseKeeper.builder(onA, "node-a").ttlMs(TTL_MS).check("database", () -> healthy.get() ? null : "db down").grant();
        LeaseKeeper leaseB = LeaseKeeper.grant(onB, "node-b", TTL_MS);
        String name = "java-election";
        LeaderElector a = LeaderElector.builder(onA, leaseA, name, "a").priority(0).value("10.0.0.1:9000").campaign();
        var first = expectEvent(a, LeadershipEvent.Elected.class, null);
        Leadership leadership = a.leadership().orElseThrow();
        ConfirmedBeat beat = leaseA.lastConfirmed();
        check(leadership.term() == first.term() && leadership.fencingToken() == first.fencingToken(), leadership);
        check(leadership.validUntilNanos() == beat.untilNanos() && beat.names(name), leadership, beat);
        check(leadership.remainingNanos() > 0 && leadership.remainingNanos() <= TTL_MS * 1_000_000L, leadership);
        check(beat.leaderships().size() == 1 && beat.leaderships().get(0).getCandidateId().equals("a"), beat);

        // A Curator-style listener sees the same story.
        List<String> heard = new CopyOnWriteArrayList<>();
        LeaderElector b = LeaderElector.builder(onB, leaseB, name, "b").priority(1).value("10.0.0.2:9000")
                .listener(new LeaderListener() {
                    @Override
                    public void isLeader(long term, long fencingToken) {
                        heard.add("isLeader " + term + " " + fencingToken);
                    }

                    @Override
                    public void notLeader(String reason) {
                        heard.add("notLeader " + reason);
                    }
                })
                .campaign();
        sleep(500);
        check(heard.isEmpty() && !b.isLeader(), heard, b);
        LeaderInfo leader = onB.leader(name).orElseThrow();
        check(leader.getCandidateId().equals("a") && leader.getValue().toStringUtf8().equals("10.0.0.1:9000") && leader.getTerm() == first.term(), leader);
        check(onA.candidates(name).getCandidatesList().stream().map(c -> c.getCandidateId()).toList().equals(List.of("a", "b")), "election order");

        // Transfer: a hears it lost first, then b is elected with a greater term and token;
        // acknowledged automatically, so at once.
        long started = System.nanoTime();
        LeaderInfo next = a.transfer("b");
        double took = seconds(System.nanoTime() - started);
        check(next.getCandidateId().equals("b") && next.getTerm() > first.term(), next);
        var lost = expectEvent(a, LeadershipEvent.Lost.class, "transferred");
        check(lost.term() == first.term() && !a.isLeader(), lost);
        eventually(b::isLeader, "b leads");
        check(!a.isLeader(), "one leader");
        Leadership second = b.leadership().orElseThrow();
        check(second.term() > first.term() && second.fencingToken() > first.fencingToken(), first, second);
        eventually(() -> heard.equals(List.of("isLeader " + second.term() + " " + second.fencingToken())), "b's listener heard isLeader");
        check(took < TTL_MS / 1000.0, "an acknowledged transfer takes less than the ttl", took);
        expectError(() -> a.transfer(null), Code.FAILED_PRECONDITION); // a does not lead
        say(String.format("  transfer a -> b in %.3f s; listener: %s", took, heard));

        // Resign: b steps down, a (still a candidate) is elected.
        b.resign();
        eventually(() -> heard.size() == 2 && heard.get(1).equals("notLeader resigned"), "b's listener heard notLeader resigned");
        check(b.isOver(), "b's candidacy is over");
        var third = expectEvent(a, LeadershipEvent.Elected.class, null);
        check(third.term() > second.term() && third.fencingToken() > second.fencingToken(), second, third);

        // An unhealthy leader is deposed, and elected again when healthy.
        healthy.set(false);
        expectEvent(a, LeadershipEvent.Lost.class, "unhealthy");
        healthy.set(true);
        var fourth = expectEvent(a, LeadershipEvent.Elected.class, null, LONG);
        check(fourth.term() > third.term(), third, fourth);

        // The validity rule: a leader whose heartbeats stop stops leading when its lease's
        // confirmation runs out (at most one ttl after the last confirmed heartbeat was sent),
        // before zkcoord may expire the lease and elect anyone else.
        LeaseKeeper leaseB2 = LeaseKeeper.grant(onB, "node-b", TTL_MS);
        LeaderElector b2 = LeaderElector.builder(onB, leaseB2, name, "b2").priority(1).campaign();
        noEvent(b2, Duration.ofMillis(300));
        leaseA.stop();
        long stopped = System.nanoTime();
        long until = leaseA.lastConfirmed().untilNanos();
        check(until - stopped <= TTL_MS * 1_000_000L, "confirmed at most one ttl after the last heartbeat");
        while (System.nanoTime() - (until - 50_000_000L) < 0) {
            check(a.isLeader(), "a leads while its lease is confirmed", a);
            sleep(20);
        }
        eventually(() -> System.nanoTime() - until >= 0 && !a.isLeader(), "a stops leading", Duration.ofSeconds(2));
        expectEvent(a, LeadershipEvent.Lost.class, "lease-unconfirmed", Duration.ofSeconds(3));
        var fifth = expectEvent(b2, LeadershipEvent.Elected.class, null, LONG);
        check(fifth.term() > fourth.term(), fourth, fifth);
        check(a.nextEvent(Duration.ofSeconds(3)).isEmpty() && a.isOver(), "a's candidacy ended with its lease");
        say(String.format("  heartbeats stopped: a stopped leading %.3f s later, then b2 was elected", seconds(until - stopped)));

        // Preemption: a better candidate takes over a preemptive election.
        LeaseKeeper leaseC = LeaseKeeper.grant(onA, "node-c", TTL_MS);
        LeaseKeeper leaseD = LeaseKeeper.grant(onB, "node-d", TTL_MS);
        LeaderElector c = LeaderElector.builder(onA, leaseC, "java-preempt", "c").priority(5).preempt(true).campaign();
        expectEvent(c, LeadershipEvent.Elected.class, null);
        expectError(() -> LeaderElector.builder(onB, leaseD, "java-preempt", "x").preempt(false).campaign(), Code.FAILED_PRECONDITION);
        check(leaseD.namedElections().isEmpty(), "a refused campaign names nothing", leaseD.namedElections());
        LeaderElector d = LeaderElector.builder(onB, leaseD, "java-preempt", "d").priority(0).campaign();
        expectEvent(c, LeadershipEvent.Lost.class, "preempted");
        expectEvent(d, LeadershipEvent.Elected.class, null);

        // A revoked lease ends the candidacy: the leader loses at once.
        leaseD.revoke();
        expectEvent(d, LeadershipEvent.Lost.class, "lease-lost");
        expectEvent(c, LeadershipEvent.Elected.class, null);
        try (c) {
            check(c.isLeader(), c);
        } // leaving the block resigns
        check(c.isOver() && !c.isLeader(), c);
        eventually(() -> onA.leader("java-preempt").isEmpty(), "no leader after c resigned");
        b2.resign();
        for (LeaseKeeper lease : List.of(leaseB, leaseB2, leaseC)) {
            lease.revoke();
        }
        onA.close();
        onB.close();
    }

    /** Samples two electors' leadership() in one process, new leader first: never both at once. */
    static final class Overlap {
        final AtomicReference<String> both = new AtomicReference<>();
        volatile Long oldLast;
        volatile Long newFirst;
        final AtomicBoolean stop = new AtomicBoolean();
        final Thread thread;

        Overlap(LeaderElector old, LeaderElector successor) {
            thread = new Thread(() -> {
                while (!stop.get()) {
                    var next = successor.leadership(); // first: if the old one is still valid afterwards, both were
                    var previous = old.leadership();
                    long now = System.nanoTime();
                    if (previous.isPresent()) {
                        oldLast = now;
                        if (now - previous.get().validUntilNanos() >= 0) {
                            both.compareAndSet(null, "leadership() past its validity: " + previous.get());
                        }
                    }
                    if (next.isPresent() && newFirst == null) {
                        newFirst = now;
                    }
                    if (previous.isPresent() && next.isPresent()) {
                        both.compareAndSet(null, previous.get() + " and " + next.get());
                    }
                    try {
                        TimeUnit.MICROSECONDS.sleep(500);
                    } catch (InterruptedException e) {
                        return;
                    }
                }
            });
            thread.setDaemon(true);
            thread.start();
        }

        void stop() throws InterruptedException {
            eventually(() -> newFirst != null, "the new leader's leadership() is valid");
            stop.set(true);
            thread.join();
            check(both.get() == null, "two leaderships valid at once:", both.get());
            check(oldLast == null || oldLast - newFirst < 0, "the old leadership ended first");
        }
    }

    /** Transfers with the application's acknowledgement, and without any. */
    static void transfer(List<String> endpoints) throws Exception {
        long ttlMs = 3000; // without acknowledgement a transfer takes the ttl + about a second
        var onA = ZkcoordClient.connect(String.join(",", endpoints));
        var onB = ZkcoordClient.builder(reversed(endpoints)).build();
        LeaseKeeper leaseB = LeaseKeeper.grant(onB, "xfer-b", ttlMs);
        LeaseKeeper leaseC = LeaseKeeper.grant(onA, "xfer-c", ttlMs);
        String name = "java-transfer";
        LeaderElector c = LeaderElector.builder(onA, leaseC, name, "c").priority(0).autoAcknowledge(false).campaign();
        var first = expectEvent(c, LeadershipEvent.Elected.class, null);
        LeaderElector b = LeaderElector.builder(onB, leaseB, name, "b").priority(1).campaign();
        noEvent(b, Duration.ofMillis(300));

        // c needs time to stop: it acknowledges after half a second, and b is elected then.
        Overlap overlap = new Overlap(c, b);
        long started = System.nanoTime();
        CompletableFuture<LeaderInfo> moved = CompletableFuture.supplyAsync(() -> c.transfer("b"));
        var lost = expectEvent(c, LeadershipEvent.Lost.class, "transferred");
        check(lost.term() == first.term() && c.leadership().isEmpty(), lost);
        sleep(500);
        check(b.leadership().isEmpty() && !moved.isDone(), "no successor before the acknowledgement");
        c.acknowledge(lost.term());
        LeaderInfo leader = moved.get(ttlMs + 5000, TimeUnit.MILLISECONDS);
        double took = seconds(System.nanoTime() - started);
        check(leader.getCandidateId().equals("b"), leader);
        var second = expectEvent(b, LeadershipEvent.Elected.class, null);
        overlap.stop();
        check(took >= 0.5 && took < ttlMs / 1000.0, "the transfer waited for the acknowledgement", took);
        say(String.format("  transfer c -> b acknowledged by the application after 0.5 s: %.3f s", took));

        // Without any acknowledgement, the successor waits for the deposed leader's validity.
        b.transfer("c");
        expectEvent(b, LeadershipEvent.Lost.class, "transferred");
        var third = expectEvent(c, LeadershipEvent.Elected.class, null);
        check(third.term() > second.term(), second, third);
        overlap = new Overlap(c, b);
        started = System.nanoTime();
        c.transfer("b");
        took = seconds(System.nanoTime() - started);
        lost = expectEvent(c, LeadershipEvent.Lost.class, "transferred");
        check(took >= ttlMs / 1000.0, "an unacknowledged transfer waits the ttl", took);
        expectEvent(b, LeadershipEvent.Elected.class, null);
        overlap.stop();
        c.acknowledge(lost.term()); // late: the term is over, nothing to do
        say(String.format("  unacknowledged transfer c -> b: %.3f s", took));

        // Acknowledging a term still led undeposed is refused, and that term is not given up.
        Leadership led = eventuallyPresent(b::leadership, "b leads", Duration.ofSeconds(5));
        expectError(() -> b.acknowledge(led.term()), Code.FAILED_PRECONDITION);
        eventually(() -> b.leadership().map(l -> l.term() == led.term()).orElse(false), "b leads that term again");
        for (LeaderElector elector : List.of(b, c)) {
            elector.resign();
        }
        leaseB.revoke();
        leaseC.revoke();
        onA.close();
        onB.close();
    }

    static void lock(List<String> endpoints) throws Exception {
        var onA = ZkcoordClient.connect(String.join(",", endpoints));
        var onB = ZkcoordClient.builder(reversed(endpoints)).build();
        LeaseKeeper a = LeaseKeeper.grant(onA, "job-a", TTL_MS);
        LeaseKeeper b = LeaseKeeper.grant(onB, "job-b", TTL_MS);

        LockGuard guard = LockGuard.lock(onA, a, List.of("order-1", "order-2"), LockMode.EXCLUSIVE, Duration.ofSeconds(2));
        check(guard.tokens().keySet().equals(Set.of("order-1", "order-2")) && guard.token("order-1") > 0, guard);
        check(guard.token("order-1") == guard.token("order-2"), "one request, one token", guard);
        var until = guard.validUntilNanos();
        check(until.isPresent() && until.equals(a.validUntilNanos()), "a hold is covered by its lease", until);

        // Exclusive: b cannot have either key.
        try {
            LockGuard.tryLock(onB, b, List.of("order-2", "order-3"), LockMode.EXCLUSIVE);
            throw new Checks.CheckFailed("tryLock succeeded on a held key");
        } catch (LockBusyException busy) {
            List<Holder> holders = busy.holders("order-2").orElseThrow();
            check(holders.size() == 1 && holders.get(0).getOwner().equals("job-a") && holders.get(0).getLeaseId() == a.id(), holders);
            check(holders.get(0).getFencingToken() == guard.token("order-2"), holders);
            check(busy.holders("order-3").isEmpty(), busy.blocked());
        }
        check(onB.holders("order-3").isEmpty(), "a failed tryLock holds nothing");
        long started = System.nanoTime();
        var timedOut = expectError(() -> LockGuard.lock(onB, b, "order-1", Duration.ofMillis(300)), Code.DEADLINE_EXCEEDED);
        // The server's wait ran out (nothing queued), told apart from a deadline of the call's own.
        check(timedOut instanceof LockWaitTimeoutException, timedOut);
        double waited = seconds(System.nanoTime() - started);
        check(waited >= 0.25 && waited < 3, "timed out after about 0.3 s", waited);
        say("  exclusive: tryLock blocked by job-a, lock timed out");

        // A waiter gets the key when it is unlocked, with a greater token.
        CompletableFuture<LockGuard> waiter = CompletableFuture.supplyAsync(() -> LockGuard.lock(onB, b, "order-1", Duration.ofSeconds(10)));
        eventually(() -> onA.holders("order-1").stream().map(KeyHolders::getWaiters).toList().equals(List.of(1)), "b waits for order-1");
        sleep(300);
        check(!waiter.isDone(), "b still waits while a holds the key");
        guard.unlock();
        guard.unlock(); // once is enough; later calls do nothing
        check(guard.validUntilNanos().isEmpty(), "a released hold covers nothing");
        LockGuard got = waiter.get(5, TimeUnit.SECONDS);
        check(got.token("order-1") > guard.token("order-1"), got, guard);
        check(onA.holders("order-2").isEmpty(), "order-2 was released too");
        try (got) {
            check(onA.holders("order-1").stream().flatMap(k -> k.getHoldersList().stream()).map(Holder::getLeaseId).toList().equals(List.of(b.id())), got);
        }
        check(onA.holders("order-1").isEmpty(), "released on leaving the try block");
        say("  unlock hands the key to the waiter, with a greater token");

        // Shared: both at once; exclusive blocked meanwhile.
        LeaseKeeper c = LeaseKeeper.grant(onA, "job-c", TTL_MS);
        try (var sharedA = LockGuard.tryLock(onA, a, List.of("catalog"), LockMode.SHARED);
                var sharedB = LockGuard.lock(onB, b, List.of("catalog"), LockMode.SHARED, Duration.ofSeconds(2))) {
            var owners = onA.holders("catalog").stream().flatMap(k -> k.getHoldersList().stream()).map(Holder::getOwner).sorted().toList();
            check(owners.equals(List.of("job-a", "job-b")), owners, sharedA, sharedB);
            var busy = expectError(() -> LockGuard.tryLock(onA, c, "catalog"), Code.FAILED_PRECONDITION);
            check(busy instanceof LockBusyException lb && lb.holders("catalog").orElseThrow().size() == 2, busy);
        }
        try (var exclusive = LockGuard.tryLock(onA, c, "catalog")) {
            check(exclusive.token("catalog") > 0, exclusive);
        }
        say("  shared: two holders, exclusive blocked");

        // Locks end with their lease.
        LockGuard held = LockGuard.lock(onA, a, "order-9", null);
        a.revoke();
        eventually(() -> onB.holders("order-9").isEmpty(), "the hold ended with the lease");
        expectError(held::unlock, Code.NOT_FOUND);
        b.revoke();
        c.revoke();
        onA.close();
        onB.close();
    }

    static void failover(List<String> endpoints) throws Exception {
        check(endpoints.size() == 3, "failover needs three endpoints", endpoints);
        var client = ZkcoordClient.connect(String.join(",", endpoints));
        LeaseKeeper keeper = LeaseKeeper.builder(client, "java-failover").ttlMs(TTL_MS).check("database", () -> null).grant();
        LeaderElector elector = LeaderElector.builder(client, keeper, "java-failover", "only").campaign();
        var first = expectEvent(elector, LeadershipEvent.Elected.class, null);
        eventually(() -> !keeper.instance().isEmpty() && keeper.isConfirmed(), "a confirmed heartbeat");
        List<String> instances = new ArrayList<>(List.of(keeper.instance()));
        var onLast = ZkcoordClient.builder(endpoints.subList(2, 3)).build();
        String[][] steps = {{"kill-first", "1"}, {"shutdown-second", "2"}};
        for (int step = 0; step < steps.length; step++) {
            check(client.current() == step, "the stream is on endpoint", step, client.current());
            cue(steps[step][0]);
            long cut = System.nanoTime();
            // The heartbeats are unconfirmed while the keeper moves (the broken Campaign stream
            // alone would not end the leadership); the same term comes back.
            var lost = expectEvent(elector, LeadershipEvent.Lost.class, "lease-unconfirmed", Duration.ofSeconds(5));
            check(lost.term() == first.term(), lost);
            var again = expectEvent(elector, LeadershipEvent.Elected.class, null, LONG);
            check(again.equals(first), "the same term comes back", first, again);
            eventually(() -> keeper.isConfirmed() && !instances.contains(keeper.instance()), "heartbeats confirmed elsewhere");
            say(String.format("  %s: moved in %.2f s to %s", steps[step][0], seconds(System.nanoTime() - cut), keeper.instance()));
            instances.add(keeper.instance());
            check(client.current() == Integer.parseInt(steps[step][1]), "moved to the next endpoint", client.current());
            LeaseInfo info = leaseInfo(onLast, keeper.id());
            check(info.getInstance().equals(keeper.instance()) && info.getHealth().getStatus() == HealthStatus.HEALTH_STATUS_SERVING, info);
        }
        // Still alive and leading several ttls later, on the last instance.
        staysConfirmed(keeper, 3.0 * TTL_MS / 1000, "on the last instance");
        eventually(() -> elector.leadership().map(l -> l.term() == first.term() && l.fencingToken() == first.fencingToken()).orElse(false),
                "still leading the same term");
        check(onLast.leader("java-failover").orElseThrow().getCandidateId().equals("only"), "still the leader");
        elector.resign();
        keeper.revoke();
        expectError(() -> onLast.timeToLive(keeper.id()), Code.NOT_FOUND);
        client.close();
        onLast.close();
    }

    static void lockCrash(List<String> endpoints) throws Exception {
        check(endpoints.size() == 2, "lock_crash needs two endpoints", endpoints);
        var client = ZkcoordClient.connect(String.join(",", endpoints));
        LeaseKeeper keeper = LeaseKeeper.grant(client, "java-lock-crash", 5000);
        var onSecond = ZkcoordClient.builder(endpoints.subList(1, 2)).build();
        LeaseKeeper holder = LeaseKeeper.grant(onSecond, "java-lock-holder", 5000);
        LockGuard held = LockGuard.lock(onSecond, holder, List.of("crash-1", "crash-2"), LockMode.EXCLUSIVE, Duration.ofSeconds(2));
        CompletableFuture<LockGuard> waiter = CompletableFuture.supplyAsync(
                () -> LockGuard.lock(client, keeper, List.of("crash-2", "crash-1"), LockMode.EXCLUSIVE, null));
        eventually(() -> onSecond.holders("crash-1").stream().anyMatch(k -> k.getWaiters() == 1), "the request is queued");
        cue("kill-first");
        sleep(1000);
        check(!waiter.isDone(), "lock() waits while the keys are held");
        held.unlock();
        LockGuard guard = waiter.get(15, TimeUnit.SECONDS);
        var handles = onSecond.timeToLive(keeper.id()).getBindingsList().stream()
                .filter(x -> x.getKind() == Binding.Kind.KIND_LOCK).map(Binding::getId).collect(Collectors.toSet());
        check(handles.equals(Set.of(guard.handle())), "no orphan hold is left", handles, guard);
        guard.unlock();
        say("  the orphan was released; the retry got the keys");
        keeper.revoke();
        holder.revoke();
        client.close();
        onSecond.close();
    }

    static void frozen(List<String> endpoints) throws Exception {
        check(endpoints.size() == 2, "frozen needs two endpoints", endpoints);
        var onFirst = ZkcoordClient.builder(endpoints.subList(0, 1)).build(); // the leader reaches only the instance that freezes
        var onSecond = ZkcoordClient.builder(endpoints.subList(1, 2)).build();
        LeaseKeeper leaseA = LeaseKeeper.grant(onFirst, "frozen-a", TTL_MS);
        LeaseKeeper leaseB = LeaseKeeper.grant(onSecond, "frozen-b", TTL_MS);
        String name = "java-frozen";
        LeaderElector a = LeaderElector.builder(onFirst, leaseA, name, "a").priority(0).campaign();
        var first = expectEvent(a, LeadershipEvent.Elected.class, null);
        LeaderElector b = LeaderElector.builder(onSecond, leaseB, name, "b").priority(1).campaign();
        noEvent(b, Duration.ofMillis(300));
        eventually(a::isLeader, "a leads");
        // c's Campaign stream is on the first instance, its heartbeats on the second; short call
        // deadlines let its acknowledgement move on from the frozen instance quickly.
        long cTtlMs = 3000;
        var onBoth = ZkcoordClient.builder(endpoints).timeout(Duration.ofMillis(500)).build();
        LeaseKeeper leaseC = LeaseKeeper.grant(onSecond, "frozen-c", cTtlMs);
        LeaseKeeper leaseD = LeaseKeeper.grant(onSecond, "frozen-d", cTtlMs);
        String other = "java-silent";
        LeaderElector c = LeaderElector.builder(onBoth, leaseC, other, "c").priority(0).campaign();
        var cFirst = expectEvent(c, LeadershipEvent.Elected.class, null);
        LeaderElector d = LeaderElector.builder(onSecond, leaseD, other, "d").priority(1).campaign();
        noEvent(d, Duration.ofMillis(300));

        cue("freeze-first");
        long frozen = System.nanoTime();
        Long lastValid = null;
        long validUntil = Long.MIN_VALUE;
        LeadershipEvent lost = null;
        Long lostAt = null;
        Long elected = null;
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (elected == null) {
            check(System.nanoTime() - deadline < 0, "b is elected within 30 s of the freeze");
            var next = b.leadership();
            var old = a.leadership();
            long now = System.nanoTime();
            if (old.isPresent()) {
                check(next.isEmpty(), "two leaderships valid at once", old, next);
                check(now - old.get().validUntilNanos() < 0, "leadership() past its validity", old);
                lastValid = now;
                validUntil = Math.max(validUntil, old.get().validUntilNanos());
            }
            if (lost == null) {
                lost = a.nextEvent(Duration.ZERO).orElse(null);
                lostAt = lost == null ? null : System.nanoTime();
            }
            if (next.isPresent()) {
                elected = now;
            }
            sleep(1);
        }
        long until = leaseA.lastConfirmed().untilNanos(); // nothing was confirmed after the freeze
        check(leaseA.validUntilNanos().isEmpty() && a.leadership().isEmpty(), leaseA);
        check(lastValid != null && lastValid - until < 0 && validUntil <= until, "a acted only within its validity");
        check(lost instanceof LeadershipEvent.Lost l && l.reason().equals("lease-unconfirmed") && l.term() == first.term(), lost);
        check(lostAt - until <= 500_000_000L, "the loss is reported when the validity runs out", seconds(lostAt - until));
        check(elected - until > 0, "b leads only after a's validity ran out");
        say(String.format("  frozen instance: a stopped %.0f ms after the freeze (reported %+.0f ms), b leading %.2f s after it",
                (until - frozen) / 1e6, (lostAt - until) / 1e6, seconds(elected - frozen)));

        Overlap overlap = new Overlap(c, d);
        long started = System.nanoTime();
        TransferRequest request = TransferRequest.newBuilder().setElection(other).setTargetCandidateId("d").build();
        LeaderInfo next = onSecond.elections().transfer(request).getLeader();
        double took = seconds(System.nanoTime() - started);
        check(next.getCandidateId().equals("d") && next.getTerm() > cFirst.term(), next);
        var cLost = expectEvent(c, LeadershipEvent.Lost.class, "unconfirmed");
        check(cLost.term() == cFirst.term(), cLost);
        expectEvent(d, LeadershipEvent.Elected.class, null);
        overlap.stop();
        check(took < cTtlMs / 1000.0, "the silent leader's acknowledgement made the transfer fast", took);
        say(String.format("  transfer away from a leader whose Campaign stream is frozen: %.3f s (ttl 3 s)", took));

        cue("kill-first");
        a.stop();
        leaseA.stop();
        for (LeaderElector elector : List.of(b, c, d)) {
            elector.resign();
        }
        for (LeaseKeeper lease : List.of(leaseB, leaseC, leaseD)) {
            lease.revoke();
        }
        for (ZkcoordClient client : List.of(onFirst, onSecond, onBoth)) {
            client.close();
        }
    }

    static void tls(List<String> endpoints) throws Exception {
        Path certs = Path.of(System.getenv("ZKCOORD_TEST_TLS_DIR"));
        byte[] ca = Files.readAllBytes(certs.resolve("ca.crt"));
        Tls tls = Tls.mutual(ca, Files.readAllBytes(certs.resolve("client.crt")), Files.readAllBytes(certs.resolve("client.key")))
                .withServerName("localhost");
        warmUp(endpoints, tls);
        var client = ZkcoordClient.builder(endpoints).tls(tls).tenant("a").build();
        LeaseKeeper keeper = LeaseKeeper.grant(client, "java-tls", TTL_MS);
        staysConfirmed(keeper, 2.5 * TTL_MS / 1000, "heartbeats over mTLS");
        check(client.timeToLive(keeper.id()).getLease().getOwner().equals("java-tls"), "the lease is in tenant a");
        try (var guard = LockGuard.lock(client, keeper, "k", Duration.ofSeconds(5))) {
            check(guard.token("k") > 0, "a fencing token");
        }
        LeaderElector elector = LeaderElector.builder(client, keeper, "java-tls-master", "only").campaign();
        expectEvent(elector, LeadershipEvent.Elected.class, null);
        // The default tenant does not see tenant a's lease.
        var defaultTenant = ZkcoordClient.builder(endpoints).tls(tls).build();
        expectError(() -> defaultTenant.timeToLive(keeper.id()), Code.NOT_FOUND);
        // Without a client certificate, the handshake is refused.
        var noCert = ZkcoordClient.builder(endpoints).tls(Tls.trusting(ca).withServerName("localhost")).timeout(Duration.ofSeconds(3)).build();
        expectError(() -> noCert.timeToLive(keeper.id()), Code.UNAVAILABLE);
        elector.resign();
        keeper.revoke();
        for (ZkcoordClient c : List.of(client, defaultTenant, noCert)) {
            c.close();
        }
    }

    /** Takes a ShardMember's events in a thread, as an application does, and keeps them. */
    static final class Pump {
        final ShardMember member;
        final List<ShardEvent> events = new CopyOnWriteArrayList<>();

        Pump(ShardMember member) {
            this.member = member;
            Thread thread = new Thread(() -> {
                try {
                    while (!member.isOver()) {
                        member.nextEvent(Duration.ofMillis(10)).ifPresent(events::add);
                    }
                } catch (InterruptedException e) {
                    // stopped
                }
            });
            thread.setDaemon(true);
            thread.start();
        }

        Set<List<Long>> revoked() {
            return events.stream().filter(e -> e instanceof ShardEvent.Revoked).map(e -> List.of((long) e.shard(), e.epoch())).collect(Collectors.toSet());
        }

        Map<Integer, Long> assigned() {
            Map<Integer, Long> out = new TreeMap<>();
            events.stream().filter(e -> e instanceof ShardEvent.Assigned).forEach(e -> out.put(e.shard(), e.epoch()));
            return out;
        }
    }

    /**
     * Samples every member's owned() one after the other until stopped: no shard valid for two
     * members at once, and a shard's epoch grows whenever its owner changes.
     */
    static final class Exclusive {
        final List<ShardMember> members = new CopyOnWriteArrayList<>();
        final AtomicReference<String> failure = new AtomicReference<>();
        final AtomicBoolean stop = new AtomicBoolean();
        volatile int samples;
        final Thread thread;

        Exclusive() {
            thread = new Thread(() -> {
                Map<Integer, Object[]> last = new HashMap<>(); // shard -> (member id, epoch)
                while (!stop.get() && failure.get() == null) {
                    Map<Integer, Object[]> seen = new HashMap<>(); // shard -> (member id, valid until)
                    for (ShardMember member : members) {
                        long at = System.nanoTime();
                        for (OwnedShard owned : member.owned()) {
                            if (at - owned.validUntilNanos() >= 0) {
                                failure.compareAndSet(null, "owned() past its validity: " + member.memberId() + " " + owned);
                            }
                            Object[] previous = seen.get(owned.shard());
                            if (previous != null && (long) previous[1] - at > 0) {
                                failure.compareAndSet(null, "shard " + owned.shard() + " valid for " + previous[0] + " and " + member.memberId());
                            }
                            seen.put(owned.shard(), new Object[] {member.memberId(), owned.validUntilNanos()});
                            Object[] before = last.get(owned.shard());
                            if (before != null && !before[0].equals(member.memberId()) && owned.epoch() <= (long) before[1]) {
                                failure.compareAndSet(null, "shard " + owned.shard() + " moved to " + member.memberId() + " with epoch " + owned.epoch());
                            }
                            last.put(owned.shard(), new Object[] {member.memberId(), owned.epoch()});
                        }
                    }
                    samples++;
                    sleep(1);
                }
            });
            thread.setDaemon(true);
            thread.start();
        }

        int stop() throws InterruptedException {
            stop.set(true);
            thread.join();
            check(failure.get() == null, failure.get());
            return samples;
        }
    }

    static List<Integer> counts(ShardMember... members) {
        List<Integer> out = new ArrayList<>();
        for (ShardMember member : members) {
            out.add(member.owned().size());
        }
        return out;
    }

    static Map<Integer, Long> epochs(ShardMember member) {
        Map<Integer, Long> out = new TreeMap<>();
        member.owned().forEach(o -> out.put(o.shard(), o.epoch()));
        return out;
    }

    static void shards(List<String> endpoints) throws Exception {
        check(endpoints.size() == 2, "shards needs two endpoints", endpoints);
        long ttlMs = 4000; // long enough that a drained member's shards cannot move by validity while the checks look
        int n = 12;
        String group = "java-shards";
        var onA = ZkcoordClient.connect(String.join(",", endpoints)); // the first instance, killed on the cue
        var onB = ZkcoordClient.builder(reversed(endpoints)).build();
        LeaseKeeper leaseA = LeaseKeeper.grant(onA, "shard-a", ttlMs);
        ShardMember a = ShardMember.builder(onA, leaseA, group, "a", n).join();
        check(a.shardCount() == n && a.group().equals(group) && a.memberId().equals("a"), a);
        Pump pumpA = new Pump(a);
        Exclusive exclusive = new Exclusive();
        exclusive.members.add(a);
        eventually(() -> a.owned().size() == n, "a owns every shard");
        Map<Integer, Long> first = epochs(a);
        eventually(() -> pumpA.assigned().equals(first), "the events say what a owns");
        ConfirmedBeat beat = leaseA.lastConfirmed();
        check(beat.namesGroup(group) && beat.ownedShards(group, "a").equals(first), beat);
        check(a.owns(3).orElseThrow().epoch() == first.get(3) && a.owns(3).get().remainingNanos() <= ttlMs * 1_000_000L, a.owns(3));
        check(a.owns(n).isEmpty(), "no shard beyond the count");
        say("  a owns " + n + " shards");

        // Refused joins name nothing in the heartbeats; a release of a shard not being revoked is refused.
        LeaseKeeper leaseX = LeaseKeeper.grant(onB, "shard-x", ttlMs);
        expectError(() -> ShardMember.builder(onB, leaseX, group, "x", n + 1).join(), Code.FAILED_PRECONDITION);
        expectError(() -> ShardMember.builder(onB, leaseX, group, "a", n).join(), Code.FAILED_PRECONDITION);
        expectError(() -> ShardMember.builder(onB, leaseX, group, "x", 0).join(), Code.INVALID_ARGUMENT);
        check(leaseX.namedShardGroups().isEmpty(), "refused joins name no group", leaseX.namedShardGroups());
        leaseX.revoke();
        expectError(() -> a.release(Map.of(0, first.get(0) + 1)), Code.FAILED_PRECONDITION);
        check(a.owns(0).isPresent(), "a still owns shard 0");

        // b joins through the other instance: half the shards move at once (released
        // automatically), with newer epochs; a keeps the others.
        LeaseKeeper leaseB = LeaseKeeper.grant(onB, "shard-b", ttlMs);
        long started = System.nanoTime();
        ShardMember b = ShardMember.builder(onB, leaseB, group, "b", n).join();
        new Pump(b);
        exclusive.members.add(b);
        eventually(() -> counts(a, b).equals(List.of(6, 6)), "a and b own 6 each", LONG);
        double took = seconds(System.nanoTime() - started);
        check(took < ttlMs / 1000.0, "the handoff took less than the ttl: a released at once", took);
        Map<Integer, Long> moved = epochs(b);
        check(moved.entrySet().stream().allMatch(e -> e.getValue() > first.get(e.getKey())), "moved shards have newer epochs", first, moved);
        check(moved.entrySet().stream().allMatch(e -> pumpA.revoked().contains(List.of((long) e.getKey(), first.get(e.getKey())))), "a was told", pumpA.events);
        check(a.owned().stream().allMatch(o -> o.epoch() == first.get(o.shard())), "a's other shards kept their epochs");
        say(String.format("  b joined: 6 shards moved in %.3f s", took));

        // c releases manually: drained, its shards move only when it releases them.
        LeaseKeeper leaseC = LeaseKeeper.grant(onA, "shard-c", ttlMs);
        ShardMember c = ShardMember.builder(onA, leaseC, group, "c", n).manualRelease(true).join();
        Pump pumpC = new Pump(c);
        exclusive.members.add(c);
        eventually(() -> counts(a, b, c).equals(List.of(4, 4, 4)), "4 each", LONG);
        Map<Integer, Long> held = epochs(c);
        onB.drain(group, "c");
        eventually(() -> pumpC.revoked().containsAll(held.entrySet().stream().map(e -> List.of((long) e.getKey(), e.getValue())).toList()),
                "c is told to give its shards up");
        eventually(() -> c.owned().isEmpty(), "c's heartbeats stop listing them");
        sleep(ttlMs / 4);
        check(counts(a, b).equals(List.of(4, 4)), "nothing moves before c releases", counts(a, b));
        Set<Integer> handing = new java.util.TreeSet<>();
        for (ShardRange range : onB.shardAssignment(group).getRangesList()) {
            if (range.getState() == ShardState.SHARD_STATE_HANDING_OFF && range.getOwner().equals("c")) {
                for (int s = range.getFirst(); s <= range.getLast(); s++) {
                    handing.add(s);
                }
            }
        }
        check(handing.equals(held.keySet()), "c's shards are handing off", handing);
        c.release(held);
        eventually(() -> counts(a, b).equals(List.of(6, 6)), "c's shards moved", Duration.ofMillis(ttlMs));
        check(onB.shardMembers(group).getDrainedList().equals(List.of("c")), "c is drained");
        onB.undrain(group, "c");
        eventually(() -> counts(a, b, c).equals(List.of(4, 4, 4)), "c gets its share back", LONG);
        check(c.leave(Duration.ofSeconds(10)), "c left");
        check(c.owned().isEmpty(), c);
        eventually(c::isOver, "c's events end");
        eventually(() -> counts(a, b).equals(List.of(6, 6)), "a and b own everything again", LONG);
        say("  c drained, released by hand, undrained, left");

        // The first instance dies: a's heartbeats and Watch stream move; nothing moves.
        List<Map<Integer, Long>> before = List.of(epochs(a), epochs(b));
        cue("kill-first");
        eventually(() -> onA.current() == 1 && leaseA.isConfirmed(), "a's heartbeats moved", LONG);
        eventually(() -> List.of(epochs(a), epochs(b)).equals(before), "a and b own the same shards", LONG);
        int events = pumpA.events.size();
        sleep(500);
        check(pumpA.events.size() == events, "no event after the move", pumpA.events.subList(events, pumpA.events.size()));
        say("  first instance killed: nothing moved");

        // a's heartbeats stop: a stops owning by its last confirmed heartbeat's send time + ttl,
        // and its shards move only after that.
        leaseA.stop();
        long until = leaseA.lastConfirmed().untilNanos();
        eventually(() -> a.owned().isEmpty(), "a stops owning", Duration.ofMillis(ttlMs + 1000));
        eventually(() -> b.owned().size() == n, "b owns every shard", Duration.ofMillis(3 * ttlMs + 5000));
        long movedAt = System.nanoTime();
        check(movedAt - until > 0, "b got a's shards after a's validity ran out");
        say(String.format("  a's heartbeats stopped: b got its shards %.2f s after a's validity ran out", seconds(movedAt - until)));
        int samples = exclusive.stop();
        check(samples > 100, "sampled", samples);
        check(b.leave(Duration.ofSeconds(10)), "b left");
        leaseB.revoke();
        leaseC.revoke();
        a.stop();
        say("  " + samples + " samples of every member's owned(): never two owners at once");
        onA.close();
        onB.close();
    }
}
