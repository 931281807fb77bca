package io.zkcoord.client;

/** What {@link ShardMember#nextEvent} reports: {@link Assigned} or {@link Revoked}. */
public sealed interface ShardEvent {
    /** The shard. */
    int shard();

    /** Its epoch. */
    long epoch();

    /**
     * The member owns {@code shard} with {@code epoch} (greater than every earlier epoch of the
     * shard): it may work on it while {@link ShardMember#owns(int)} says so, writing {@code epoch}
     * with the shard's data.
     */
    record Assigned(int shard, long epoch) implements ShardEvent {}

    /**
     * The member must stop working on {@code shard} (owned with {@code epoch}) now. Unless the
     * member releases manually, the shard is released when the application asks for the next
     * event (its handling of the revocation is over).
     */
    record Revoked(int shard, long epoch) implements ShardEvent {}
}
