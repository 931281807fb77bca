package io.zkcoord.client;

import com.google.protobuf.ByteString;
import io.grpc.Channel;
import io.grpc.Status;
import io.grpc.stub.ClientCallStreamObserver;
import io.grpc.stub.ClientResponseObserver;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.HashSet;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;
import java.util.logging.Level;
import java.util.logging.Logger;
import zkcoord.v1.ElectionGrpc;
import zkcoord.v1.ElectionOuterClass.CampaignRequest;
import zkcoord.v1.ElectionOuterClass.CampaignResponse;
import zkcoord.v1.ElectionOuterClass.CandidateKey;
import zkcoord.v1.ElectionOuterClass.CandidateState;
import zkcoord.v1.ElectionOuterClass.DeposedReason;
import zkcoord.v1.ElectionOuterClass.LeaderInfo;
import zkcoord.v1.ElectionOuterClass.PreemptPolicy;
import zkcoord.v1.ElectionOuterClass.ResignRequest;
import zkcoord.v1.ElectionOuterClass.TransferRequest;
import zkcoord.v1.LeaseOuterClass;

/**
 * A candidacy in an election, bound to a {@link LeaseKeeper}, and the events of its leadership.
 *
 * <p>{@link Builder#campaign()} campaigns (on the current endpoint, then the next ones while they
 * answer UNAVAILABLE) and throws {@link ZkcoordException} when the campaign is refused
 * (INVALID_ARGUMENT, FAILED_PRECONDITION for another preemption policy or a candidate id taken by
 * another lease, ...). A background thread then follows the Campaign stream, campaigning again
 * on the next endpoint when it breaks (the same candidacy comes back).
 *
 * <p>The safety rule: this candidate leads only while the lease's <b>last confirmed
 * heartbeat</b> listed the leadership (the keeper names this election in every heartbeat), and
 * only until that heartbeat's send time + the lease's granted ttl, by {@link System#nanoTime()}.
 * {@link #leadership()} applies it at every call ({@link #isLeader()} on top of it); check it
 * right before each action and pass its fencing token along. The events ({@link #nextEvent},
 * or a {@link LeaderListener}) report its changes, including a validity that runs out with no
 * message at all (a timer).
 *
 * <p>The Campaign stream only notifies: ELECTED makes the keeper send a heartbeat at once (to
 * get the listing quickly); DEPOSED (other than resigned / lease-expired) gives that term up here
 * first (never acted on again, even if a late answer lists it) and is then acknowledged to
 * zkcoord (Resign with {@code stay_candidate}, retried in the background), so that the successor
 * is elected at once instead of after this leadership's validity surely ran out. A confirmed
 * heartbeat that names the election but no longer lists a leadership held ends it at once, and
 * it is acknowledged the same way (its DEPOSED may never come, e.g. from a frozen instance).
 *
 * <p>Automatic acknowledgement assumes the application checks {@link #leadership()} right before
 * each action. An application that needs time to stop turns it off
 * ({@link Builder#autoAcknowledge(boolean)}) and calls {@link #acknowledge(long)} once it has
 * stopped; without it the successor waits for this term's validity to run out.
 *
 * <p>{@link #stop()} stops following the election (the candidacy lives on with the lease until
 * {@link #resign()}); {@link #close()} (try-with-resources) resigns.
 */
public final class LeaderElector implements AutoCloseable {
    private static final Logger LOG = Logger.getLogger("io.zkcoord.client");

    private static final Map<DeposedReason, String> DEPOSED_REASONS = Map.of(
            DeposedReason.DEPOSED_REASON_RESIGNED, "resigned",
            DeposedReason.DEPOSED_REASON_LEASE_EXPIRED, "lease-expired",
            DeposedReason.DEPOSED_REASON_PREEMPTED, "preempted",
            DeposedReason.DEPOSED_REASON_UNHEALTHY, "unhealthy",
            DeposedReason.DEPOSED_REASON_TRANSFERRED, "transferred");
    private static final Set<String> FINAL_REASONS = Set.of("resigned", "lease-expired");
    /** How long a background acknowledgement is retried at most, beyond the lease's ttl. */
    private static final long ACK_PATIENCE_MS = 5000;
    /** When to look again while nothing happens and nothing runs out. */
    private static final long IDLE_WAIT_NANOS = TimeUnit.SECONDS.toNanos(1);
    /** Closes the events queue. */
    private static final Object END = new Object();
    /** Wakes the thread: the stop was asked for. */
    private static final Object STOP = new Object();
    /** Wakes the thread: the lease's status changed (or a report is due). */
    private static final Object LEASE = new Object();

    private final ZkcoordClient client;
    private final LeaseKeeper lease;
    private final boolean autoAcknowledge;
    private final CandidateKey key;
    private final CampaignRequest request;
    private final Object lock = new Object();
    private final BlockingQueue<Object> inbox = new LinkedBlockingQueue<>();
    private final BlockingQueue<Object> events = new LinkedBlockingQueue<>();
    private final Consumer<LeaseStatus> onLease = status -> inbox.add(LEASE);
    private volatile boolean stop;
    private volatile boolean over;
    private boolean named;
    /** Terms up to this one were given up: a late heartbeat answer listing one is not acted on. */
    private long renounced;
    /** Terms given up by acknowledge() while zkcoord has not answered. */
    private final Set<Long> pending = new HashSet<>();
    /** The leadership last reported (term, token), or null. */
    private long[] leading;
    /** Why the last term ended, when a DEPOSED said so. */
    private String deposed;
    private int generation;
    private volatile ClientCallStreamObserver<CampaignRequest> call;
    private volatile Thread thread;

    /** One message of a Campaign stream. */
    private record Item(int generation, String kind, Object value) {}

    /** How to campaign: {@link LeaderElector#builder}. */
    public static final class Builder {
        private final ZkcoordClient client;
        private final LeaseKeeper lease;
        private final String election;
        private final String candidateId;
        private int priority;
        private ByteString value = ByteString.EMPTY;
        private PreemptPolicy preempt = PreemptPolicy.PREEMPT_POLICY_UNSPECIFIED;
        private boolean autoAcknowledge = true;
        private LeaderListener listener;

        private Builder(ZkcoordClient client, LeaseKeeper lease, String election, String candidateId) {
            this.client = client;
            this.lease = lease;
            this.election = election;
            this.candidateId = candidateId;
        }

        /** 0 (best, the default) to 1000. */
        public Builder priority(int priority) {
            this.priority = priority;
            return this;
        }

        /** What others see while it leads (e.g. its address). */
        public Builder value(byte[] value) {
            this.value = ByteString.copyFrom(value);
            return this;
        }

        /** What others see while it leads, as UTF-8. */
        public Builder value(String value) {
            this.value = ByteString.copyFrom(value, StandardCharsets.UTF_8);
            return this;
        }

        /** Require preemption on (true) or off (false); by default accept the election's policy. */
        public Builder preempt(boolean preempt) {
            this.preempt = preempt ? PreemptPolicy.PREEMPT_POLICY_ON : PreemptPolicy.PREEMPT_POLICY_OFF;
            return this;
        }

        /** Acknowledge depositions at once (default true; see the class documentation). */
        public Builder autoAcknowledge(boolean autoAcknowledge) {
            this.autoAcknowledge = autoAcknowledge;
            return this;
        }

        /**
         * Tell the events to {@code listener} (from a thread of the elector's) instead of
         * queueing them for {@link LeaderElector#nextEvent}.
         */
        public Builder listener(LeaderListener listener) {
            this.listener = listener;
            return this;
        }

        /**
         * Campaigns, and starts following the election.
         *
         * @throws ZkcoordException when the campaign is refused
         */
        public LeaderElector campaign() {
            return new LeaderElector(this);
        }
    }

    /** A builder for a candidacy of {@code candidateId} in {@code election}, bound to {@code lease}. */
    public static Builder builder(ZkcoordClient client, LeaseKeeper lease, String election, String candidateId) {
        return new Builder(client, lease, election, candidateId);
    }

    private LeaderElector(Builder builder) {
        this.client = builder.client;
        this.lease = builder.lease;
        this.autoAcknowledge = builder.autoAcknowledge;
        this.key = CandidateKey.newBuilder()
                .setElection(builder.election)
                .setCandidateId(builder.candidateId)
                .setLease(lease.leaseRef())
                .build();
        this.request = CampaignRequest.newBuilder()
                .setKey(key)
                .setValue(builder.value)
                .setPriority(builder.priority)
                .setPreempt(builder.preempt)
                .build();
        lease.name(key.getElection());
        named = true;
        CampaignResponse first;
        try {
            first = firstCampaign();
        } catch (RuntimeException e) {
            unname();
            throw e;
        }
        lease.subscribe(onLease);
        thread = new Thread(() -> run(first), "zkcoord-elector-" + key.getCandidateId());
        thread.setDaemon(true);
        thread.start();
        if (builder.listener != null) {
            LeaderListener listener = builder.listener;
            Thread dispatcher = new Thread(() -> dispatch(listener), "zkcoord-elector-listener-" + key.getCandidateId());
            dispatcher.setDaemon(true);
            dispatcher.start();
        }
    }

    /** The election's name. */
    public String election() {
        return key.getElection();
    }

    /** This candidate's id. */
    public String candidateId() {
        return key.getCandidateId();
    }

    /** The candidacy as a zkcoord.v1.CandidateKey, for raw calls. */
    public CandidateKey candidateKey() {
        return key;
    }

    /**
     * The leadership this candidate may act on now (term, fencing token, valid until), or empty:
     * the safety rule. Check it right before each action; it can end (by time) before an event
     * says so.
     */
    public Optional<Leadership> leadership() {
        long now = System.nanoTime();
        LeaseStatus status = lease.status();
        if (status.state() != LeaseStatus.State.CONFIRMED || now - status.untilNanos() >= 0) {
            return Optional.empty();
        }
        ConfirmedBeat beat = lease.lastConfirmed();
        if (now - beat.untilNanos() >= 0 || !beat.names(key.getElection())) {
            return Optional.empty();
        }
        Optional<LeaseOuterClass.Leadership> listed = beat.leadership(key.getElection(), key.getCandidateId());
        if (listed.isEmpty()) {
            return Optional.empty();
        }
        long term = listed.get().getTerm();
        synchronized (lock) {
            if (stop || term <= renounced || pending.contains(term)) {
                return Optional.empty();
            }
        }
        return Optional.of(new Leadership(term, listed.get().getFencingToken(), beat.untilNanos()));
    }

    /** Whether this candidate may act as leader now (see {@link #leadership()}). */
    public boolean isLeader() {
        return leadership().isPresent();
    }

    /**
     * The next event, waiting up to {@code timeout} (null: as long as it takes). Empty on timeout,
     * or once the candidacy has ended and every event was taken. Not for electors with a
     * {@link LeaderListener} (their events go to it).
     */
    public Optional<LeadershipEvent> nextEvent(Duration timeout) throws InterruptedException {
        if (over && events.isEmpty()) {
            return Optional.empty();
        }
        Object event = timeout == null ? events.take() : events.poll(timeout.toNanos(), TimeUnit.NANOSECONDS);
        if (event == null) {
            return Optional.empty();
        }
        if (event == END) {
            events.add(END); // for later callers
            return Optional.empty();
        }
        return Optional.of((LeadershipEvent) event);
    }

    /** Whether the candidacy has ended (resigned, lease expired or lost) or the elector was closed. */
    public boolean isOver() {
        return over;
    }

    /**
     * Tells zkcoord that this candidate has stopped acting as leader of {@code term} (Resign with
     * {@code stay_candidate}): a deposition from {@code term} completes at once. The term is given
     * up here first and never acted on again.
     *
     * @throws ZkcoordException FAILED_PRECONDITION when the candidacy still leads {@code term}
     *     undeposed (then it is not given up: use {@link #resign()} to step down); UNAVAILABLE when
     *     no instance answered (the term stays given up)
     */
    public void acknowledge(long term) {
        boolean tentative;
        synchronized (lock) {
            tentative = term > renounced && !pending.contains(term);
            if (tentative) {
                pending.add(term);
            }
        }
        try {
            client.retrying(ch -> stepDown(ch, term));
        } catch (ZkcoordException e) {
            settle(term, tentative, e.code());
            throw e;
        }
        settle(term, tentative, Status.Code.OK);
    }

    /**
     * Withdraws the candidacy (a leader steps down; the next candidate is elected). A leader
     * stops leading before the call is sent and is told {@code Lost("resigned")}.
     *
     * @throws ZkcoordException with the Resign call's status
     */
    public void resign() {
        stopFollowing();
        report("resigned");
        ResignRequest resign = ResignRequest.newBuilder().setKey(key).build();
        try {
            client.retrying(ch -> ElectionGrpc.newBlockingStub(ch).withDeadlineAfter(client.deadlineMs(), TimeUnit.MILLISECONDS).resign(resign));
        } finally {
            finish();
        }
    }

    /**
     * Hands leadership to candidate {@code target} (or the next eligible one when null), if this
     * candidate leads; returns the new leader once it is elected. This leadership ends when
     * zkcoord deposes it ({@code Lost("transferred")}).
     *
     * @throws ZkcoordException FAILED_PRECONDITION when it does not lead or the target is not eligible
     */
    public LeaderInfo transfer(String target) {
        TransferRequest transfer = TransferRequest.newBuilder()
                .setElection(key.getElection())
                .setTargetCandidateId(target == null ? "" : target)
                .setTerm(leadership().map(Leadership::term).orElse(0L))
                .setFrom(key)
                .build();
        // The call waits for the successor: up to the ttl + about a second without acknowledgement.
        long deadline = client.deadlineMs() + lease.ttlMs() + 2000;
        return client.retrying(ch -> ElectionGrpc.newBlockingStub(ch).withDeadlineAfter(deadline, TimeUnit.MILLISECONDS).transfer(transfer))
                .getLeader();
    }

    /**
     * Stops following the election (the candidacy lives on with the lease, and the heartbeats
     * stop naming the election); a leader stops leading ({@code Lost("closed")}).
     */
    public void stop() {
        stopFollowing();
        report("closed");
        finish();
    }

    /**
     * Resigns (ignoring NOT_FOUND: the candidacy ended already) unless the candidacy is over, as
     * leaving a try-with-resources block does; {@link #stop()} only stops following.
     */
    @Override
    public void close() {
        if (over) {
            return;
        }
        try {
            resign();
        } catch (ZkcoordException e) {
            if (e.code() != Status.Code.NOT_FOUND) {
                throw e;
            }
        }
    }

    @Override
    public String toString() {
        return "LeaderElector(election=" + key.getElection() + ", candidateId=" + key.getCandidateId() + ", leadership="
                + leadership().orElse(null) + ")";
    }

    // Internals.

    private void dispatch(LeaderListener listener) {
        while (true) {
            Object event;
            try {
                event = events.take();
            } catch (InterruptedException e) {
                return;
            }
            if (event == END) {
                events.add(END);
                return;
            }
            try {
                if (event instanceof LeadershipEvent.Elected elected) {
                    listener.isLeader(elected.term(), elected.fencingToken());
                } else if (event instanceof LeadershipEvent.Lost lost) {
                    listener.notLeader(lost.reason());
                }
            } catch (RuntimeException e) {
                LOG.log(Level.WARNING, "zkcoord leader listener failed", e);
            }
        }
    }

    private void unname() {
        boolean was;
        synchronized (lock) {
            was = named;
            named = false;
        }
        if (was) {
            lease.forget(key.getElection());
        }
    }

    private void stopFollowing() {
        synchronized (lock) {
            stop = true; // leadership() is empty from now on
            renounced = Long.MAX_VALUE;
        }
        inbox.add(STOP);
        var open = call;
        if (open != null) {
            open.cancel("elector stopped", null);
        }
        lease.unsubscribe(onLease);
        Thread running = thread;
        if (running != null && running != Thread.currentThread()) {
            try {
                running.join(5000);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
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
        lease.unsubscribe(onLease);
        events.add(END);
    }

    /** Opens a Campaign stream on endpoint {@code at}; its messages arrive tagged with the returned generation. */
    private int open(int at) {
        int tag;
        synchronized (lock) {
            tag = ++generation;
        }
        ElectionGrpc.newStub(client.channel(at)).campaign(request, new ClientResponseObserver<CampaignRequest, CampaignResponse>() {
            @Override
            public void beforeStart(ClientCallStreamObserver<CampaignRequest> requests) {
                call = requests;
            }

            @Override
            public void onNext(CampaignResponse status) {
                inbox.add(new Item(tag, "status", status));
            }

            @Override
            public void onError(Throwable error) {
                inbox.add(new Item(tag, "error", error));
            }

            @Override
            public void onCompleted() {
                inbox.add(new Item(tag, "end", null));
            }
        });
        return tag;
    }

    /** Campaigns until the first status arrives; throws when the campaign is refused. */
    private CampaignResponse firstCampaign() {
        int at = client.current();
        Throwable last = null;
        for (int i = 0; i < client.endpoints().size(); i++) {
            int tag = open(at);
            long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(client.deadlineMs());
            Item item;
            while (true) {
                Object next;
                try {
                    next = inbox.poll(Math.max(0, deadline - System.nanoTime()), TimeUnit.NANOSECONDS);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new ZkcoordException(Status.Code.CANCELLED, "interrupted while campaigning");
                }
                if (next == null) {
                    return null; // no status yet: the thread goes on waiting for it
                }
                if (next instanceof Item candidate && candidate.generation() == tag) {
                    item = candidate;
                    break;
                }
            }
            if (item.kind().equals("status")) {
                return (CampaignResponse) item.value();
            }
            if (item.kind().equals("error")) {
                Throwable error = (Throwable) item.value();
                if (ZkcoordException.codeOf(error) != Status.Code.UNAVAILABLE) {
                    throw ZkcoordException.from(error);
                }
                last = error;
            }
            at = client.rotate(at);
        }
        if (last != null) {
            throw ZkcoordException.from(last);
        }
        throw new ZkcoordException(Status.Code.UNAVAILABLE, "no zkcoord instance took the campaign");
    }

    private void run(CampaignResponse first) {
        try {
            follow(first);
        } catch (RuntimeException | Error e) {
            // Never leave a leadership reported after a crash.
            LOG.log(Level.SEVERE, "zkcoord elector " + key.getElection() + "/" + key.getCandidateId() + " failed", e);
            synchronized (lock) {
                stop = true;
                renounced = Long.MAX_VALUE;
            }
            report("closed");
            finish();
            throw e;
        }
        if (over || !stop) {
            finish();
        }
    }

    /**
     * Follows the Campaign stream (campaigning again elsewhere when it breaks) together with the
     * lease's heartbeats, until the candidacy ends or the elector stops.
     */
    private void follow(CampaignResponse first) {
        if (first != null && onStatus(first)) {
            return;
        }
        int at = client.current();
        Long reopenAt = null; // when to campaign again after a broken stream
        while (!stop) {
            if (lease.isLost()) {
                report("lease-lost");
                return;
            }
            report(null);
            long now = System.nanoTime();
            Optional<Leadership> held = leadership();
            long wake = held.isEmpty() ? now + IDLE_WAIT_NANOS : held.get().validUntilNanos() + 1_000_000;
            if (reopenAt != null) {
                if (now - reopenAt >= 0) {
                    reopenAt = null;
                    open(at);
                    continue;
                }
                wake = Math.min(wake, reopenAt);
            }
            Object next;
            try {
                next = inbox.poll(Math.max(0, wake - now), TimeUnit.NANOSECONDS);
            } catch (InterruptedException e) {
                return;
            }
            if (next == null || next == LEASE) {
                continue; // a validity ran out, time to campaign again, or news from the lease
            }
            if (next == STOP) {
                return;
            }
            Item item = (Item) next;
            int current;
            synchronized (lock) {
                current = generation;
            }
            if (item.generation() != current) {
                continue;
            }
            if (item.kind().equals("status")) {
                if (onStatus((CampaignResponse) item.value())) {
                    return;
                }
                continue;
            }
            // The stream broke, or could not be opened: campaign again elsewhere (the
            // leadership, if any, lives on with the heartbeats).
            if (item.kind().equals("error") && ZkcoordException.codeOf((Throwable) item.value()) == Status.Code.NOT_FOUND) {
                report("lease-lost");
                return;
            }
            at = client.rotate(at);
            reopenAt = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(100);
        }
    }

    /** Applies one Campaign status; true when the candidacy has ended. */
    private boolean onStatus(CampaignResponse status) {
        CandidateState state = status.getState();
        if (state == CandidateState.CANDIDATE_STATE_ELECTED) {
            // Only a confirmed heartbeat listing it makes it a leadership: ask for one now.
            lease.beatNow();
        } else if (state == CandidateState.CANDIDATE_STATE_DEPOSED) {
            String reason = DEPOSED_REASONS.getOrDefault(status.getReason(), "deposed");
            // Give the term up here first, then tell zkcoord.
            synchronized (lock) {
                deposed = reason;
                renounced = Math.max(renounced, status.getTerm());
            }
            report(reason);
            if (FINAL_REASONS.contains(reason)) {
                return true;
            }
            if (autoAcknowledge && status.getTerm() > 0) {
                acknowledgeInBackground(status.getTerm());
            }
        }
        // UNCONFIRMED, QUEUED: nothing to do; the heartbeats decide.
        return false;
    }

    /** Reports a change of leadership against the rule; {@code loss} is the reason to give if it ended. */
    private void report(String loss) {
        Optional<Leadership> now = leadership();
        long[] current = now.map(l -> new long[] {l.term(), l.fencingToken()}).orElse(null);
        Long withdrawn = null;
        synchronized (lock) {
            if (java.util.Arrays.equals(current, leading)) {
                return;
            }
            long[] previous = leading;
            leading = current;
            if (previous != null && withdrawn(previous[0])) {
                // zkcoord no longer lists it: deposed (its DEPOSED may never come, e.g. from a
                // frozen instance) or ended. Give it up for good.
                renounced = Math.max(renounced, previous[0]);
                withdrawn = previous[0];
            }
            if (previous != null) {
                String reason = loss != null ? loss
                        : deposed != null ? deposed
                        : lease.isConfirmed() ? "unconfirmed" : "lease-unconfirmed";
                events.add(new LeadershipEvent.Lost(reason, previous[0]));
            }
            if (current != null) {
                deposed = null;
                events.add(new LeadershipEvent.Elected(current[0], current[1]));
            }
        }
        if (withdrawn != null && autoAcknowledge && !stop) {
            acknowledgeInBackground(withdrawn);
        }
    }

    /**
     * Whether the last confirmed heartbeat, still valid, named this election without listing
     * {@code term} for this candidate: zkcoord withdrew that leadership.
     */
    private boolean withdrawn(long term) {
        ConfirmedBeat beat = lease.lastConfirmed();
        if (System.nanoTime() - beat.untilNanos() >= 0 || !beat.names(key.getElection())) {
            return false;
        }
        var listed = beat.leadership(key.getElection(), key.getCandidateId());
        return listed.isEmpty() || listed.get().getTerm() != term;
    }

    private Object stepDown(Channel channel, long term) {
        ResignRequest resign = ResignRequest.newBuilder().setKey(key).setTerm(term).setStayCandidate(true).build();
        return ElectionGrpc.newBlockingStub(channel).withDeadlineAfter(client.deadlineMs(), TimeUnit.MILLISECONDS).resign(resign);
    }

    /** Records zkcoord's answer to acknowledge(term); {@code tentative} when that call gave the term up. */
    private void settle(long term, boolean tentative, Status.Code code) {
        synchronized (lock) {
            if (code == Status.Code.OK) {
                renounced = Math.max(renounced, term);
                pending.remove(term);
            } else if (tentative && code == Status.Code.FAILED_PRECONDITION) {
                // It still leads that term undeposed (acknowledged too early).
                pending.remove(term);
            }
            // Otherwise (no answer): the term stays given up.
        }
        inbox.add(LEASE); // report the change, if any
    }

    /**
     * Tells zkcoord, in a background thread and retrying while no instance answers (up to the
     * ttl + 5 s), that this candidate stopped leading {@code term}, already given up here.
     */
    private void acknowledgeInBackground(long term) {
        long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(lease.ttlMs() + ACK_PATIENCE_MS);
        Thread ack = new Thread(() -> {
            int at = client.current();
            long pause = 50;
            Status.Code code;
            while (true) {
                try {
                    stepDown(client.channel(at), term);
                    code = Status.Code.OK;
                } catch (RuntimeException e) {
                    code = ZkcoordException.codeOf(e);
                }
                if ((code != Status.Code.UNAVAILABLE && code != Status.Code.DEADLINE_EXCEEDED) || System.nanoTime() - deadline >= 0) {
                    break;
                }
                at = client.rotate(at);
                try {
                    Thread.sleep(pause);
                } catch (InterruptedException e) {
                    return;
                }
                pause = Math.min(pause * 2, 500);
            }
            if (code != Status.Code.OK) {
                LOG.fine("deposition of term " + term + " not acknowledged (" + code + "); the successor waits for its validity to run out");
            }
        }, "zkcoord-ack-" + key.getCandidateId() + "-" + term);
        ack.setDaemon(true);
        ack.start();
    }
}
