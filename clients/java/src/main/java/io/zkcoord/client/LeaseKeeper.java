package io.zkcoord.client;

import io.grpc.Status;
import io.grpc.stub.ClientCallStreamObserver;
import io.grpc.stub.StreamObserver;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.OptionalLong;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;
import zkcoord.v1.Common.Health;
import zkcoord.v1.Common.LeaseRef;
import zkcoord.v1.LeaseGrpc;
import zkcoord.v1.LeaseOuterClass.GrantRequest;
import zkcoord.v1.LeaseOuterClass.GrantResponse;
import zkcoord.v1.LeaseOuterClass.KeepAliveRequest;
import zkcoord.v1.LeaseOuterClass.KeepAliveResponse;
import zkcoord.v1.LeaseOuterClass.RevokeRequest;

/**
 * Grants a lease and keeps it alive in a background thread until it is revoked or closed.
 *
 * <p>One KeepAlive stream at a time carries a heartbeat every ttl/3 with the health checks'
 * results (each check bounded by ttl/6; a failing or slow check makes the lease report
 * NOT_SERVING, which deposes a leader but keeps the lease alive), the names of the elections its
 * {@link LeaderElector}s campaign in and of the shard groups its {@link ShardMember}s belong to.
 * When the stream breaks, two heartbeats go unanswered, or its answers stay
 * {@code confirmed=false} for a third of the ttl, the keeper moves to the next endpoint;
 * NOT_FOUND means the lease has ended ({@link LeaseStatus.State#LOST}).
 *
 * <p>Safety rule: act on what the lease covers only while its last confirmed heartbeat covered
 * it, and only until that heartbeat's send time + the granted ttl, by {@link System#nanoTime()}
 * ({@link #validUntilNanos()}; for a leadership use {@link LeaderElector#leadership()}, for a
 * shard {@link ShardMember#owns(int)}). An unconfirmed answer suspends acting until the next
 * confirmed one.
 *
 * <p>{@link #close()} stops the heartbeats (the lease then expires after its ttl);
 * {@link #revoke()} ends the lease at once. Thread-safe.
 *
 * <pre>{@code
 * try (var lease = LeaseKeeper.builder(client, "ledger-node-a").ttl(Duration.ofSeconds(3))
 *         .check("database", () -> db.ping() ? null : "db down").grant()) { ... }
 * }</pre>
 * (leaving the block revokes the lease: see {@link #close()} for the difference).
 */
public final class LeaseKeeper implements AutoCloseable {
    /**
     * How long heartbeats may go unconfirmed on one instance before the keeper moves to another,
     * as a fraction of the ttl: long enough not to move during a ZooKeeper leader election
     * (every instance answers unconfirmed then), short enough to move before the last
     * confirmation runs out.
     */
    static final int UNCONFIRMED_PATIENCE_DIVISOR = 3;

    private final ZkcoordClient client;
    private final HealthChecks checks;
    private final long id;
    private final String secret;
    private final long ttlMs;
    private final String owner;
    private final Thread thread;
    private final List<Consumer<LeaseStatus>> listeners = new CopyOnWriteArrayList<>();
    private final Map<String, Integer> elections = new TreeMap<>();
    private final Map<String, Integer> shardGroups = new TreeMap<>();
    private final Object lock = new Object();
    private volatile boolean stopped;
    private volatile boolean revokeOnClose = true;
    private LeaseStatus status;
    private ConfirmedBeat last;
    private BlockingQueue<Message> inbox;
    private ClientCallStreamObserver<KeepAliveRequest> call;
    private boolean beatWanted;
    private volatile String instance;
    private volatile Health lastHealth;

    /** What the keeper's thread waits for. */
    private record Message(Kind kind, Object value) {
        enum Kind { BEAT, STOP, ANSWER, END, ERROR }
    }

    /** How one KeepAlive stream ended. */
    private enum Outcome { MOVE, LOST, STOPPED }

    /** How to grant a lease: {@link LeaseKeeper#builder}. */
    public static final class Builder {
        private final ZkcoordClient client;
        private final String owner;
        private long ttlMs = 3000;
        private final Map<String, String> metadata = new LinkedHashMap<>();
        private final Map<String, HealthCheck> checks = new LinkedHashMap<>();

        private Builder(ZkcoordClient client, String owner) {
            this.client = client;
            this.owner = owner;
        }

        /** The lease's ttl (default 3 s). */
        public Builder ttl(Duration ttl) {
            this.ttlMs = ttl.toMillis();
            return this;
        }

        /** The lease's ttl in milliseconds (default 3000). */
        public Builder ttlMs(long ttlMs) {
            this.ttlMs = ttlMs;
            return this;
        }

        /** A metadata entry others see in TimeToLive. */
        public Builder metadata(String key, String value) {
            metadata.put(key, value);
            return this;
        }

        /** A health check (see {@link HealthCheck}) run before every heartbeat. */
        public Builder check(String name, HealthCheck check) {
            checks.put(name, check);
            return this;
        }

        /**
         * Grants the lease (on the current endpoint, then the next ones while they answer
         * UNAVAILABLE) and starts keeping it alive.
         *
         * @throws ZkcoordException when the grant is refused (e.g. INVALID_ARGUMENT for a bad ttl)
         */
        public LeaseKeeper grant() {
            return new LeaseKeeper(this);
        }
    }

    /** A builder for a lease owned by {@code owner} (a name others see, e.g. the host). */
    public static Builder builder(ZkcoordClient client, String owner) {
        return new Builder(client, owner);
    }

    /** Grants a lease with this ttl and no checks (see {@link #builder}). */
    public static LeaseKeeper grant(ZkcoordClient client, String owner, long ttlMs) {
        return builder(client, owner).ttlMs(ttlMs).grant();
    }

    private LeaseKeeper(Builder builder) {
        this.client = builder.client;
        this.owner = builder.owner;
        this.checks = new HealthChecks(builder.checks, "zkcoord-check-" + builder.owner);
        this.lastHealth = checks.run(Math.round(builder.ttlMs / 6.0));
        GrantRequest request = GrantRequest.newBuilder()
                .setTtlMs(builder.ttlMs)
                .setOwner(builder.owner)
                .putAllMetadata(builder.metadata)
                .setHealth(lastHealth)
                .build();
        long sent = System.nanoTime();
        // Repeated on UNAVAILABLE: a grant that happened anyway expires after its ttl, as nobody
        // keeps it alive.
        GrantResponse granted;
        try {
            granted = client.retrying(ch -> LeaseGrpc.newBlockingStub(ch)
                    .withDeadlineAfter(client.deadlineMs(), TimeUnit.MILLISECONDS)
                    .grant(request));
        } catch (RuntimeException e) {
            checks.shutdown();
            throw e;
        }
        this.id = granted.getLeaseId();
        this.secret = granted.getSecret();
        this.ttlMs = granted.getTtlMs();
        long until = sent + TimeUnit.MILLISECONDS.toNanos(ttlMs);
        this.status = new LeaseStatus(LeaseStatus.State.CONFIRMED, until);
        this.last = ConfirmedBeat.grant(until);
        this.instance = granted.getInstance();
        this.thread = new Thread(this::keep, "zkcoord-lease-" + id);
        thread.setDaemon(true);
        thread.start();
    }

    /** The lease id. */
    public long id() {
        return id;
    }

    /** The lease secret (every call acting for the lease needs it). Keep it private. */
    public String secret() {
        return secret;
    }

    /** The owner named at grant. */
    public String owner() {
        return owner;
    }

    /** The granted ttl in milliseconds. */
    public long ttlMs() {
        return ttlMs;
    }

    /** The id of the zkcoord instance that answered the last heartbeat. */
    public String instance() {
        return instance;
    }

    /** The health sent with the last heartbeat. */
    public Health lastHealth() {
        return lastHealth;
    }

    /** The lease as a zkcoord.v1.LeaseRef, for raw calls. */
    public LeaseRef leaseRef() {
        return LeaseRef.newBuilder().setId(id).setSecret(secret).build();
    }

    /** The current status (confirmed until / unconfirmed / lost). */
    public LeaseStatus status() {
        synchronized (lock) {
            return status;
        }
    }

    /**
     * Whether the lease is confirmed now: the safety rule (send time of the last confirmed
     * heartbeat + the granted ttl, by {@link System#nanoTime()}).
     */
    public boolean isConfirmed() {
        return status().confirmedNow();
    }

    /** Whether the lease has ended. */
    public boolean isLost() {
        return status().state() == LeaseStatus.State.LOST;
    }

    /**
     * Until when ({@link System#nanoTime()}) what the lease covers (its lock holds) may be acted
     * on: the send time of the last confirmed heartbeat + the granted ttl, if that is still ahead
     * and no unconfirmed answer came since; empty when nothing may be acted on now.
     */
    public OptionalLong validUntilNanos() {
        LeaseStatus now = status();
        return now.confirmedNow() ? OptionalLong.of(now.untilNanos()) : OptionalLong.empty();
    }

    /** The answer to the last confirmed heartbeat (at first: the grant, naming nothing). */
    public ConfirmedBeat lastConfirmed() {
        synchronized (lock) {
            return last;
        }
    }

    /** Waits up to {@code timeout} until the lease is confirmed; returns whether it is. */
    public boolean waitConfirmed(Duration timeout) throws InterruptedException {
        long deadline = System.nanoTime() + timeout.toNanos();
        while (!isConfirmed()) {
            if (isLost() || System.nanoTime() - deadline >= 0) {
                return false;
            }
            Thread.sleep(10);
        }
        return true;
    }

    /**
     * Asks for a heartbeat now rather than at the next ttl/3 tick (an elector asks when it is
     * told ELECTED, a shard member when it is told ASSIGNED: only a confirmed answer listing the
     * leadership or the shard lets it act).
     */
    public void beatNow() {
        BlockingQueue<Message> to;
        synchronized (lock) {
            to = inbox;
            if (to == null) {
                beatWanted = true;
            }
        }
        if (to != null) {
            to.add(new Message(Message.Kind.BEAT, null));
        }
    }

    /**
     * Calls {@code listener} from the keeper's thread on every status change and every
     * confirmed heartbeat (after {@link #lastConfirmed()} shows it). It must return quickly.
     */
    public void subscribe(Consumer<LeaseStatus> listener) {
        listeners.add(listener);
    }

    /** Stops calling {@code listener}. */
    public void unsubscribe(Consumer<LeaseStatus> listener) {
        listeners.remove(listener);
    }

    void name(String election) {
        synchronized (lock) {
            elections.merge(election, 1, Integer::sum);
        }
    }

    void forget(String election) {
        synchronized (lock) {
            elections.computeIfPresent(election, (k, n) -> n <= 1 ? null : n - 1);
        }
    }

    void nameGroup(String group) {
        synchronized (lock) {
            shardGroups.merge(group, 1, Integer::sum);
        }
    }

    void forgetGroup(String group) {
        synchronized (lock) {
            shardGroups.computeIfPresent(group, (k, n) -> n <= 1 ? null : n - 1);
        }
    }

    /** The elections named in every heartbeat now (for tests and diagnostics). */
    public Set<String> namedElections() {
        synchronized (lock) {
            return Set.copyOf(new TreeSet<>(elections.keySet()));
        }
    }

    /** The shard groups named in every heartbeat now (for tests and diagnostics). */
    public Set<String> namedShardGroups() {
        synchronized (lock) {
            return Set.copyOf(new TreeSet<>(shardGroups.keySet()));
        }
    }

    /**
     * Stops the heartbeats without revoking: the lease expires after its ttl (what it covers
     * stops being valid at most one ttl after the last confirmed heartbeat was sent). Waits for
     * the keeper's thread to end.
     */
    public void stop() {
        stopped = true;
        BlockingQueue<Message> to;
        ClientCallStreamObserver<KeepAliveRequest> open;
        synchronized (lock) {
            to = inbox;
            open = call;
        }
        if (to != null) {
            to.add(new Message(Message.Kind.STOP, null));
        }
        if (open != null) {
            open.cancel("lease keeper stopped", null);
        }
        if (Thread.currentThread() != thread) {
            try {
                thread.join(ttlMs + 1000);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
        checks.shutdown();
    }

    /**
     * Ends the lease now, releasing everything bound to it (candidacies, locks, memberships).
     *
     * @throws ZkcoordException NOT_FOUND when it had already ended; UNAVAILABLE when no instance answered
     */
    public void revoke() {
        stop();
        setStatus(LeaseStatus.LOST_STATUS);
        RevokeRequest request = RevokeRequest.newBuilder().setLease(leaseRef()).build();
        boolean[] tried = {false};
        client.retrying(ch -> {
            boolean first = !tried[0];
            tried[0] = true;
            try {
                return LeaseGrpc.newBlockingStub(ch).withDeadlineAfter(client.deadlineMs(), TimeUnit.MILLISECONDS).revoke(request);
            } catch (RuntimeException e) {
                // After an UNAVAILABLE, the first attempt may have gone through.
                if (ZkcoordException.codeOf(e) == Status.Code.NOT_FOUND && !first) {
                    return null;
                }
                throw e;
            }
        });
    }

    /**
     * Revokes the lease (ignoring NOT_FOUND: it had ended already), as leaving a
     * try-with-resources block does; {@link #stop()} only stops the heartbeats.
     */
    @Override
    public void close() {
        try {
            revoke();
        } catch (ZkcoordException e) {
            if (e.code() != Status.Code.NOT_FOUND) {
                throw e;
            }
        }
    }

    @Override
    public String toString() {
        return "LeaseKeeper(id=" + id + ", owner=" + owner + ", ttlMs=" + ttlMs + ", status=" + status() + ")";
    }

    // The background thread.

    private void setStatus(LeaseStatus next) {
        synchronized (lock) {
            if (status.equals(next) || status.state() == LeaseStatus.State.LOST) {
                return;
            }
            status = next;
        }
        tell(next);
    }

    private void confirm(ConfirmedBeat beat) {
        LeaseStatus next = new LeaseStatus(LeaseStatus.State.CONFIRMED, beat.untilNanos());
        synchronized (lock) {
            if (status.state() == LeaseStatus.State.LOST) {
                return;
            }
            last = beat;
            status = next;
        }
        tell(next);
    }

    private void tell(LeaseStatus next) {
        for (Consumer<LeaseStatus> listener : listeners) {
            try {
                listener.accept(next);
            } catch (RuntimeException e) {
                // A listener's failure is its own; the heartbeats go on.
            }
        }
    }

    /**
     * Keeps one KeepAlive stream at a time, moving to the next endpoint when it breaks, until
     * zkcoord says the lease has ended or the keeper is stopped.
     */
    private void keep() {
        int at = client.current();
        int failures = 0;
        int endpoints = client.endpoints().size();
        while (!stopped) {
            Outcome outcome = stream(at);
            if (outcome == Outcome.LOST) {
                setStatus(LeaseStatus.LOST_STATUS);
                return;
            }
            if (outcome == Outcome.STOPPED || stopped) {
                return;
            }
            // Not confirmed until a heartbeat on the next stream is.
            if (status().state() == LeaseStatus.State.CONFIRMED) {
                setStatus(LeaseStatus.UNCONFIRMED_STATUS);
            }
            at = client.rotate(at);
            failures++;
            if (failures % endpoints == 0) {
                try {
                    Thread.sleep(100); // every endpoint failed once: do not spin
                } catch (InterruptedException e) {
                    return;
                }
            }
        }
    }

    /** What a heartbeat named, and when it was sent. */
    private record Sent(long atNanos, Set<String> elections, Set<String> groups) {}

    /**
     * One KeepAlive stream on endpoint {@code at}: a heartbeat every ttl/3 (and whenever one is
     * asked for) with the checks' health and the named elections and groups, until it breaks,
     * two heartbeats go unanswered, its answers stay unconfirmed for ttl/3, or the lease ends.
     */
    private Outcome stream(int at) {
        long ttl = TimeUnit.MILLISECONDS.toNanos(ttlMs);
        long interval = ttl / 3;
        long patience = ttl / UNCONFIRMED_PATIENCE_DIVISOR;
        BlockingQueue<Message> messages = new LinkedBlockingQueue<>();
        ArrayDeque<Sent> sent = new ArrayDeque<>();
        LeaseRef ref = leaseRef();
        StreamObserver<KeepAliveResponse> answers = new StreamObserver<>() {
            @Override
            public void onNext(KeepAliveResponse answer) {
                messages.add(new Message(Message.Kind.ANSWER, answer));
            }

            @Override
            public void onError(Throwable error) {
                messages.add(new Message(Message.Kind.ERROR, error));
            }

            @Override
            public void onCompleted() {
                messages.add(new Message(Message.Kind.END, null));
            }
        };
        if (stopped) {
            return Outcome.STOPPED;
        }
        var requests = (ClientCallStreamObserver<KeepAliveRequest>) LeaseGrpc.newStub(client.channel(at)).keepAlive(answers);
        synchronized (lock) {
            inbox = messages;
            call = requests;
            beatWanted = false;
        }
        try {
            beat(requests, ref, sent);
            synchronized (lock) {
                if (beatWanted) {
                    beatWanted = false;
                    messages.add(new Message(Message.Kind.BEAT, null));
                }
            }
            long nextBeat = System.nanoTime() + interval;
            // Since when (send time) heartbeats here have been answered unconfirmed; null while
            // the last answer was confirmed.
            Long unconfirmedSince = null;
            while (true) {
                if (stopped) {
                    return Outcome.STOPPED;
                }
                Message message;
                try {
                    message = messages.poll(Math.max(0, nextBeat - System.nanoTime()), TimeUnit.NANOSECONDS);
                } catch (InterruptedException e) {
                    return Outcome.STOPPED;
                }
                Message.Kind kind = message == null ? Message.Kind.BEAT : message.kind();
                switch (kind) {
                    case BEAT -> {
                        if (sent.size() >= 2) {
                            return Outcome.MOVE; // two heartbeats unanswered: this instance is not keeping up
                        }
                        beat(requests, ref, sent);
                        if (message == null) {
                            nextBeat = Math.max(nextBeat + interval, System.nanoTime());
                        }
                    }
                    case STOP -> {
                        return Outcome.STOPPED;
                    }
                    case ANSWER -> {
                        Sent beat = sent.pollFirst();
                        if (beat == null) {
                            continue;
                        }
                        KeepAliveResponse answer = (KeepAliveResponse) message.value();
                        instance = answer.getInstance();
                        if (answer.getConfirmed()) {
                            unconfirmedSince = null;
                            // The granted ttl from the send time (the answer's ttl_ms counts from
                            // receipt, which is later).
                            confirm(new ConfirmedBeat(beat.atNanos() + ttl, beat.elections(), List.copyOf(answer.getLeadershipsList()),
                                    beat.groups(), List.copyOf(answer.getShardsList())));
                        } else {
                            setStatus(LeaseStatus.UNCONFIRMED_STATUS);
                            // Move to an instance that can vouch for the lease, unless this one may
                            // soon again (during a ZooKeeper leader election every instance answers
                            // unconfirmed for a moment).
                            if (unconfirmedSince == null) {
                                unconfirmedSince = beat.atNanos();
                            }
                            if (System.nanoTime() - (unconfirmedSince + patience) >= 0) {
                                return Outcome.MOVE;
                            }
                        }
                    }
                    case END -> {
                        return Outcome.MOVE;
                    }
                    case ERROR -> {
                        return ZkcoordException.codeOf((Throwable) message.value()) == Status.Code.NOT_FOUND ? Outcome.LOST : Outcome.MOVE;
                    }
                }
            }
        } catch (RuntimeException e) {
            return stopped ? Outcome.STOPPED : Outcome.MOVE; // e.g. a send on a cancelled stream
        } finally {
            synchronized (lock) {
                inbox = null;
                call = null;
            }
            requests.cancel("stream left", null);
        }
    }

    private void beat(StreamObserver<KeepAliveRequest> requests, LeaseRef ref, ArrayDeque<Sent> sent) {
        lastHealth = checks.run(Math.round(ttlMs / 6.0));
        Set<String> named;
        Set<String> groups;
        synchronized (lock) {
            named = Set.copyOf(elections.keySet());
            groups = Set.copyOf(shardGroups.keySet());
        }
        sent.addLast(new Sent(System.nanoTime(), named, groups));
        requests.onNext(KeepAliveRequest.newBuilder()
                .setLease(ref)
                .setHealth(lastHealth)
                .addAllElections(new TreeSet<>(named))
                .addAllShardGroups(new TreeSet<>(groups))
                .build());
    }
}
