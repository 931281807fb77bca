package io.zkcoord.client;

/**
 * What a {@link LeaseKeeper} knows about its lease.
 *
 * <ul>
 *   <li>{@link State#CONFIRMED}: zkcoord confirmed the lease until {@code untilNanos}, a
 *       {@link System#nanoTime()} instant (the send time of the last confirmed heartbeat + the
 *       granted ttl). It silently stops being true then: use {@link #confirmedNow()}.
 *   <li>{@link State#UNCONFIRMED}: zkcoord cannot vouch for the lease right now (the stream is
 *       moving, or the instance lost ZooKeeper); the lease may still be alive.
 *   <li>{@link State#LOST}: the lease has ended. Final.
 * </ul>
 */
public record LeaseStatus(State state, long untilNanos) {
    /** The three states of a lease as its keeper sees it. */
    public enum State {
        CONFIRMED,
        UNCONFIRMED,
        LOST
    }

    static final LeaseStatus UNCONFIRMED_STATUS = new LeaseStatus(State.UNCONFIRMED, 0);
    static final LeaseStatus LOST_STATUS = new LeaseStatus(State.LOST, 0);

    /** Whether this status confirms the lease at this moment. */
    public boolean confirmedNow() {
        return state == State.CONFIRMED && System.nanoTime() - untilNanos < 0;
    }

    @Override
    public String toString() {
        if (state == State.CONFIRMED) {
            return "confirmed for " + Math.max(0, (untilNanos - System.nanoTime()) / 1_000_000) + " ms";
        }
        return state.name().toLowerCase(java.util.Locale.ROOT);
    }
}
