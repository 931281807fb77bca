package io.zkcoord.client;

import io.grpc.Channel;
import io.grpc.Context;
import io.grpc.Status;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Optional;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.logging.Level;
import java.util.logging.Logger;
import zkcoord.v1.ShardsGrpc;
import zkcoord.v1.ShardsOuterClass;
import zkcoord.v1.ShardsOuterClass.JoinRequest;
import zkcoord.v1.ShardsOuterClass.LeaveRequest;
import zkcoord.v1.ShardsOuterClass.MemberKey;
import zkcoord.v1.ShardsOuterClass.ReleaseRequest;
import zkcoord.v1.ShardsOuterClass.ReleasedShard;
import zkcoord.v1.ShardsOuterClass.WatchRequest;
import zkcoord.v1.ShardsOuterClass.WatchResponse;

/**
 * A membership of a shard group, bound to a {@link LeaseKeeper}, and the events of its shards.
 *
 * <p>{@link Builder#join()} joins (on the current endpoint, then the next ones while they answer
 * UNAVAILABLE) and throws {@link ZkcoordException} when the join is refused (INVALID_ARGUMENT;
 * FAILED_PRECONDITION for another shard count or a member id bound to another lease). A
 * background thread follows the member's Watch stream, opening it again on the next endpoint
 * when it breaks, and turns it into events: {@link ShardEvent.Assigned} and
 * {@link ShardEvent.Revoked} (also for shards a new stream's snapshot no longer assigns).
 *
 * <p>The safety rule: the member may act as a shard's owner only while the lease's <b>last
 * confirmed heartbeat</b> listed that shard with that epoch (the keeper names the group in every
 * heartbeat), only until that heartbeat's send time + the lease's granted ttl, by
 * {@link System#nanoTime()}, and never after it released (shard, epoch). {@link #owns(int)} and
 * {@link #owned()} apply it at every call: check {@code owns()} right before each action and
 * write its epoch with the data. The events only notify; a validity that runs out sends none.
 *
 * <p>Release: unless {@link Builder#manualRelease(boolean)}, a shard revoked by an event
 * {@link #nextEvent} returned is given up here and released to zkcoord (in the background, the
 * shards of one batch of events together) when the application asks for the next event. With
 * manual release the application calls {@link #release} itself.
 *
 * <p>{@link #stop()} stops following the group (the membership lives on with the lease);
 * {@link #leave(Duration)} hands every shard off gracefully and ends the membership, as
 * {@link #close()} (try-with-resources) does. {@code nextEvent} is for one consumer thread;
 * {@code owns} / {@code owned} may be called from any thread.
 */
public final class ShardMember implements AutoCloseable {
    private static final Logger LOG = Logger.getLogger("io.zkcoord.client");
    /** How long a background release is retried at most while no instance answers, beyond the ttl. */
    private static final long RELEASE_PATIENCE_MS = 5000;
    /** Pause before opening the Watch stream again after it broke. */
    private static final long REOPEN_PAUSE_MS = 200;
    private static final Object END = new Object();

    private final ZkcoordClient client;
    private final LeaseKeeper lease;
    private final String group;
    private final String memberId;
    private final boolean manualRelease;
    private final MemberKey key;
    private final int shardCount;
    private final Object lock = new Object();
    private final BlockingQueue<Object> events = new LinkedBlockingQueue<>();
    private final Set<List<Long>> released = new HashSet<>();
    private final List<long[]> handed = new ArrayList<>();
    private List<long[]> toRelease = new ArrayList<>();
    private volatile boolean stop;
    private volatile boolean over;
    private boolean leaving;
    private boolean named;
    private Context.CancellableContext watching;
    private final Thread thread;

    /** How to join: {@link ShardMember#builder}. */
    public static final class Builder {
        private final ZkcoordClient client;
        private final LeaseKeeper lease;
        private final String group;
        private final String memberId;
        private final int shardCount;
        private int weight = 1;
        private final Map<String, String> labels = new LinkedHashMap<>();
        private boolean manualRelease;

        private Builder(ZkcoordClient client, LeaseKeeper lease, String group, String memberId, int shardCount) {
            this.client = client;
            this.lease = lease;
            this.group = group;
            this.memberId = memberId;
            this.shardCount = shardCount;
        }

        /** The member's capacity relative to the others, 1 (default) to 1,000. */
        public Builder weight(int weight) {
            this.weight = weight;
            return this;
        }

        /** A label describing the member. */
        public Builder label(String key, String value) {
            labels.put(key, value);
            return this;
        }

        /** Release revoked shards with {@link ShardMember#release} instead of automatically. */
        public Builder manualRelease(boolean manualRelease) {
            this.manualRelease = manualRelease;
            return this;
        }

        /**
         * Joins the group and starts following the member's shards.
         *
         * @throws ZkcoordException when the join is refused
         */
        public ShardMember join() {
            return new ShardMember(this);
        }
    }

    /**
     * A builder for a membership of {@code group} (with {@code shardCount} shards, 1 to 65,536;
     * the first member sets it) as {@code memberId}, bound to {@code lease}.
     */
    public static Builder builder(ZkcoordClient client, LeaseKeeper lease, String group, String memberId, int shardCount) {
        return new Builder(client, lease, group, memberId, shardCount);
    }

    private ShardMember(Builder builder) {
        this.client = builder.client;
        this.lease = builder.lease;
        this.group = builder.group;
        this.memberId = builder.memberId;
        this.manualRelease = builder.manualRelease;
        this.key = MemberKey.newBuilder().setGroup(group).setMemberId(memberId).setLease(lease.leaseRef()).build();
        JoinRequest request = JoinRequest.newBuilder()
                .setKey(key)
                .setShardCount(builder.shardCount)
                .setWeight(builder.weight)
                .putAllLabels(builder.labels)
                .build();
        lease.nameGroup(group);
        named = true;
        try {
            this.shardCount = client.retrying(ch -> ShardsGrpc.newBlockingStub(ch)
                    .withDeadlineAfter(client.deadlineMs(), TimeUnit.MILLISECONDS)
                    .join(request)).getShardCount();
        } catch (RuntimeException e) {
            unname();
            throw e;
        }
        thread = new Thread(this::run, "zkcoord-shards-" + group + "-" + memberId);
        thread.setDaemon(true);
        thread.start();
    }

    /** The group's name. */
    public String group() {
        return group;
    }

    /** This member's id. */
    public String memberId() {
        return memberId;
    }

    /** The group's number of shards. */
    public int shardCount() {
        return shardCount;
    }

    /** The membership as a zkcoord.v1.MemberKey, for raw calls. */
    public MemberKey memberKey() {
        return key;
    }

    /** Whether the membership has ended (or this member stopped following it) and every event was taken. */
    public boolean isOver() {
        return over && (events.isEmpty() || events.peek() == END);
    }

    // The safety rule.

    /** Every shard the member may work on now (the safety rule), in shard order. */
    public List<OwnedShard> owned() {
        long now = System.nanoTime();
        LeaseStatus status = lease.status();
        if (status.state() != LeaseStatus.State.CONFIRMED || now - status.untilNanos() >= 0) {
            return List.of();
        }
        ConfirmedBeat beat = lease.lastConfirmed();
        if (now - beat.untilNanos() >= 0 || !beat.namesGroup(group)) {
            return List.of();
        }
        Map<Integer, Long> listed = beat.ownedShards(group, memberId);
        List<OwnedShard> owned = new ArrayList<>();
        synchronized (lock) {
            if (stop) {
                return List.of();
            }
            for (var entry : listed.entrySet()) {
                if (!released.contains(List.of((long) entry.getKey(), entry.getValue()))) {
                    owned.add(new OwnedShard(entry.getKey(), entry.getValue(), beat.untilNanos()));
                }
            }
        }
        return owned;
    }

    /**
     * The ownership of {@code shard} the member may act on now (epoch, valid until), or empty: the
     * safety rule. Check it right before each action; it can end (by time) before an event says so.
     */
    public Optional<OwnedShard> owns(int shard) {
        return owned().stream().filter(o -> o.shard() == shard).findFirst();
    }

    // Events.

    /**
     * The next event, waiting up to {@code timeout} (null: as long as it takes). Empty on timeout,
     * or once the membership has ended (or {@link #stop()}) and every event was taken.
     *
     * <p>Unless manual release, calling it again releases the shards that earlier calls revoked
     * (their handling is over): they are given up here at once and released to zkcoord in the
     * background, together.
     */
    public Optional<ShardEvent> nextEvent(Duration timeout) throws InterruptedException {
        if (!manualRelease) {
            synchronized (lock) {
                toRelease.addAll(handed);
                handed.clear();
            }
        }
        Object event = events.poll();
        if (event == null) {
            flush();
            if (over && events.isEmpty()) {
                return Optional.empty();
            }
            event = timeout == null ? events.take() : events.poll(timeout.toNanos(), TimeUnit.NANOSECONDS);
            if (event == null) {
                return Optional.empty();
            }
        }
        if (event == END) {
            events.add(END); // for later callers
            flush();
            return Optional.empty();
        }
        if (event instanceof ShardEvent.Revoked revoked) {
            if (!manualRelease) {
                synchronized (lock) {
                    handed.add(new long[] {revoked.shard(), revoked.epoch()});
                }
            }
        } else {
            flush();
        }
        return Optional.of((ShardEvent) event);
    }

    /**
     * Gives up {@code shards} (shard → epoch; never acted on here again) and tells zkcoord in one
     * Release call, so that their next owners are assigned at once. Needed only with manual release.
     *
     * @throws ZkcoordException FAILED_PRECONDITION when a shard is not being revoked from this
     *     member with that epoch (then none is released by zkcoord); UNAVAILABLE when no instance
     *     answered (the shards stay given up here; zkcoord hands them off once their validity ran out)
     */
    public void release(Map<Integer, Long> shards) {
        List<long[]> list = new ArrayList<>();
        shards.forEach((shard, epoch) -> list.add(new long[] {shard, epoch}));
        giveUp(list);
        client.retrying(ch -> releaseOnce(ch, list));
    }

    /**
     * Leaves the group gracefully: gives up every shard here at once, releases every shard zkcoord
     * revokes meanwhile, and waits up to {@code wait} (at most 30 s) for zkcoord to hand them off
     * and end the membership. Returns whether it has ended (when not, it ends later by itself).
     * Stops following the group either way.
     *
     * @throws ZkcoordException with the Leave call's status
     */
    public boolean leave(Duration wait) {
        List<long[]> owned;
        synchronized (lock) {
            leaving = true;
            owned = new ArrayList<>(handed);
            owned.addAll(toRelease);
            handed.clear();
            toRelease.clear();
        }
        for (OwnedShard shard : owned()) {
            owned.add(new long[] {shard.shard(), shard.epoch()});
        }
        giveUp(owned);
        // Revocations queued but not taken: released now (the application stops anyway).
        List<long[]> revoked = new ArrayList<>();
        for (Iterator<Object> it = events.iterator(); it.hasNext();) {
            Object event = it.next();
            if (event instanceof ShardEvent.Revoked r) {
                revoked.add(new long[] {r.shard(), r.epoch()});
                it.remove();
            }
        }
        if (!revoked.isEmpty()) {
            giveUp(revoked);
            releaseInBackground(revoked);
        }
        long waitMs = Math.max(1, wait.toMillis());
        LeaveRequest request = LeaveRequest.newBuilder().setKey(key).setWaitMs(waitMs).build();
        try {
            return client.retrying(ch -> ShardsGrpc.newBlockingStub(ch)
                    .withDeadlineAfter(waitMs + client.deadlineMs(), TimeUnit.MILLISECONDS)
                    .leave(request)).getLeft();
        } finally {
            stop();
        }
    }

    /**
     * Stops following the group: nothing is acted on here any more ({@link #owned()} is empty),
     * the heartbeats stop naming the group, and the events end. The membership lives on with the
     * lease (use {@link #leave} to hand its shards off now).
     */
    public void stop() {
        Context.CancellableContext open;
        synchronized (lock) {
            stop = true;
            open = watching;
        }
        if (open != null) {
            open.cancel(null);
        }
        if (Thread.currentThread() != thread) {
            try {
                thread.join(5000);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
        finish();
    }

    /** Leaves (up to 30 s; ignoring NOT_FOUND) unless stopped, as leaving try-with-resources does. */
    @Override
    public void close() {
        if (stop) {
            return;
        }
        try {
            leave(Duration.ofSeconds(30));
        } catch (ZkcoordException e) {
            if (e.code() != Status.Code.NOT_FOUND) {
                throw e;
            }
        }
    }

    @Override
    public String toString() {
        return "ShardMember(group=" + group + ", memberId=" + memberId + ", owned=" + owned().stream().map(OwnedShard::shard).toList() + ")";
    }

    // Internals.

    private void unname() {
        boolean was;
        synchronized (lock) {
            was = named;
            named = false;
        }
        if (was) {
            lease.forgetGroup(group);
        }
    }

    private void finish() {
        unname();
        synchronized (lock) {
            if (over) {
                return;
            }
            over = true;
        }
        events.add(END);
    }

    private void giveUp(List<long[]> shards) {
        synchronized (lock) {
            for (long[] shard : shards) {
                released.add(List.of(shard[0], shard[1]));
            }
        }
    }

    private void flush() {
        List<long[]> shards;
        synchronized (lock) {
            if (toRelease.isEmpty()) {
                return;
            }
            shards = toRelease;
            toRelease = new ArrayList<>();
        }
        giveUp(shards);
        releaseInBackground(shards);
    }

    private Object releaseOnce(Channel channel, List<long[]> shards) {
        ReleaseRequest.Builder request = ReleaseRequest.newBuilder().setKey(key);
        for (long[] shard : shards) {
            request.addShards(ReleasedShard.newBuilder().setShard((int) shard[0]).setEpoch(shard[1]));
        }
        return ShardsGrpc.newBlockingStub(channel).withDeadlineAfter(client.deadlineMs(), TimeUnit.MILLISECONDS).release(request.build());
    }

    /**
     * Releases {@code shards} (already given up) in a background thread: retried on the next
     * endpoints while none answers (up to the lease's ttl + 5 s); when zkcoord refuses the batch
     * (a shard moved on meanwhile), each shard alone.
     */
    private void releaseInBackground(List<long[]> shards) {
        long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(lease.ttlMs() + RELEASE_PATIENCE_MS);
        Thread release = new Thread(() -> {
            int at = client.current();
            long pause = 50;
            while (true) {
                Status.Code code;
                try {
                    releaseOnce(client.channel(at), shards);
                    return;
                } catch (RuntimeException e) {
                    code = ZkcoordException.codeOf(e);
                }
                if (code == Status.Code.FAILED_PRECONDITION) {
                    if (shards.size() > 1) {
                        for (long[] one : shards) {
                            try {
                                releaseOnce(client.channel(at), List.of(one));
                            } catch (RuntimeException e) {
                                // moved on already: nothing to release
                            }
                        }
                    }
                    return;
                }
                if ((code != Status.Code.UNAVAILABLE && code != Status.Code.DEADLINE_EXCEEDED) || System.nanoTime() - deadline >= 0) {
                    LOG.fine("shards not released (" + code + "); they move on when their validity has run out");
                    return;
                }
                at = client.rotate(at);
                try {
                    Thread.sleep(pause);
                } catch (InterruptedException e) {
                    return;
                }
                pause = Math.min(pause * 2, 500);
            }
        }, "zkcoord-release-" + memberId);
        release.setDaemon(true);
        release.start();
    }

    /** Hands events to the application; while leaving, releases revoked shards at once. */
    private void deliver(List<ShardEvent> delivered) {
        boolean nowLeaving;
        synchronized (lock) {
            nowLeaving = leaving;
            if (!nowLeaving) {
                events.addAll(delivered);
            }
        }
        if (nowLeaving) {
            List<long[]> revoked = new ArrayList<>();
            for (ShardEvent event : delivered) {
                if (event instanceof ShardEvent.Revoked r) {
                    revoked.add(new long[] {r.shard(), r.epoch()});
                }
            }
            if (!revoked.isEmpty()) {
                giveUp(revoked);
                releaseInBackground(revoked);
            }
        }
    }

    private void run() {
        try {
            follow();
        } catch (RuntimeException | Error e) {
            // Never leave shards acted on after a crash.
            LOG.log(Level.SEVERE, "zkcoord shard member " + group + "/" + memberId + " failed", e);
            synchronized (lock) {
                stop = true;
            }
            throw e;
        } finally {
            finish();
        }
    }

    /**
     * Follows the member's Watch stream, opening it again on the next endpoint when it breaks,
     * until the membership ends or the member stops following.
     */
    private void follow() {
        Map<Integer, Long> told = new TreeMap<>(); // what the application was told it owns
        int at = client.current();
        WatchRequest request = WatchRequest.newBuilder().setKey(key).build();
        while (true) {
            Context.CancellableContext context;
            synchronized (lock) {
                if (stop) {
                    return;
                }
                context = Context.current().withCancellation();
                watching = context;
            }
            Context previous = context.attach();
            try {
                Iterator<WatchResponse> messages = ShardsGrpc.newBlockingStub(client.channel(at)).watch(request);
                while (messages.hasNext()) {
                    List<ShardEvent> changes = changes(messages.next(), told);
                    if (changes.stream().anyMatch(e -> e instanceof ShardEvent.Assigned)) {
                        // Only a confirmed heartbeat listing the shard lets the member act.
                        lease.beatNow();
                    }
                    deliver(changes);
                }
            } catch (RuntimeException e) {
                if (stop) {
                    return;
                }
                if (ZkcoordException.codeOf(e) == Status.Code.NOT_FOUND) {
                    // The membership has ended (its lease ended, or it left).
                    List<ShardEvent> revoked = new ArrayList<>();
                    told.forEach((shard, epoch) -> revoked.add(new ShardEvent.Revoked(shard, epoch)));
                    deliver(revoked);
                    return;
                }
            } finally {
                context.detach(previous);
                context.cancel(null);
            }
            at = client.rotate(at);
            try {
                Thread.sleep(REOPEN_PAUSE_MS);
            } catch (InterruptedException e) {
                return;
            }
            if (stop) {
                return;
            }
        }
    }

    /**
     * The events one Watch message means for the application, updating {@code told} (what it was
     * told it owns). A snapshot (the first message of a stream) is compared with {@code told}:
     * shards it no longer assigns are revoked, shards being revoked that were never told are
     * revoked too (so that they are released), new ones assigned.
     */
    static List<ShardEvent> changes(WatchResponse message, Map<Integer, Long> told) {
        List<ShardEvent> out = new ArrayList<>();
        if (message.getSnapshot()) {
            Map<Integer, Long> assigned = new TreeMap<>();
            Map<Integer, Long> revoking = new TreeMap<>();
            for (ShardsOuterClass.ShardEvent event : message.getEventsList()) {
                if (event.getKind() == ShardsOuterClass.ShardEvent.Kind.KIND_ASSIGNED) {
                    assigned.put(event.getShard(), event.getEpoch());
                } else if (event.getKind() == ShardsOuterClass.ShardEvent.Kind.KIND_REVOKE) {
                    revoking.put(event.getShard(), event.getEpoch());
                }
            }
            told.forEach((shard, epoch) -> {
                if (!epoch.equals(assigned.get(shard))) {
                    out.add(new ShardEvent.Revoked(shard, epoch));
                }
            });
            revoking.forEach((shard, epoch) -> {
                if (!Objects.equals(told.get(shard), epoch)) {
                    out.add(new ShardEvent.Revoked(shard, epoch));
                }
            });
            assigned.forEach((shard, epoch) -> {
                if (!Objects.equals(told.get(shard), epoch)) {
                    out.add(new ShardEvent.Assigned(shard, epoch));
                }
            });
            told.clear();
            told.putAll(assigned);
            return out;
        }
        for (ShardsOuterClass.ShardEvent event : message.getEventsList()) {
            if (event.getKind() == ShardsOuterClass.ShardEvent.Kind.KIND_ASSIGNED) {
                told.put(event.getShard(), event.getEpoch());
                out.add(new ShardEvent.Assigned(event.getShard(), event.getEpoch()));
            } else if (event.getKind() == ShardsOuterClass.ShardEvent.Kind.KIND_REVOKE) {
                if (Objects.equals(told.get(event.getShard()), event.getEpoch())) {
                    told.remove(event.getShard());
                }
                out.add(new ShardEvent.Revoked(event.getShard(), event.getEpoch()));
            }
        }
        return out;
    }
}
