package io.zkcoord.client;

/**
 * A shard the member may work on now: write {@code epoch} with its data (and let the database
 * refuse older epochs), and stop by {@code validUntilNanos}, a {@link System#nanoTime()} instant
 * (the send time of the last confirmed heartbeat that listed it + the lease's granted ttl).
 */
public record OwnedShard(int shard, long epoch, long validUntilNanos) {
    /** Nanoseconds left until {@code validUntilNanos} (0 when it has passed). */
    public long remainingNanos() {
        return Math.max(0, validUntilNanos - System.nanoTime());
    }
}
