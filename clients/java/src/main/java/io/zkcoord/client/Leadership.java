package io.zkcoord.client;

/**
 * A leadership this candidate may act on, and until when.
 *
 * @param term the term
 * @param fencingToken the fencing token: pass it with every write, and have the store refuse
 *     tokens lower than the highest it has seen
 * @param validUntilNanos a {@link System#nanoTime()} instant: the send time of the confirmed
 *     heartbeat whose answer listed the leadership + the lease's granted ttl. Stop acting by
 *     then at the latest (the next confirmed heartbeat usually moves it on).
 */
public record Leadership(long term, long fencingToken, long validUntilNanos) {
    /** Nanoseconds left until {@code validUntilNanos} (0 when it has passed). */
    public long remainingNanos() {
        return Math.max(0, validUntilNanos - System.nanoTime());
    }
}
