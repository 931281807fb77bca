package io.zkcoord.client;

/** What {@link LeaderElector#nextEvent} reports: {@link Elected} or {@link Lost}. */
public sealed interface LeadershipEvent {
    /** The term the event is about. */
    long term();

    /**
     * This candidate leads {@code term}; pass {@code fencingToken} to whatever it writes, and
     * check {@link LeaderElector#leadership()} right before each action.
     */
    record Elected(long term, long fencingToken) implements LeadershipEvent {}

    /**
     * This candidate must stop acting as leader (of {@code term}) now. {@code reason} is one of:
     *
     * <ul>
     *   <li>zkcoord deposed it: "resigned", "lease-expired", "preempted", "unhealthy",
     *       "transferred" (or "deposed" for a reason this client does not know);
     *   <li>"unconfirmed": a confirmed heartbeat answer no longer lists the leadership;
     *   <li>"lease-unconfirmed": the last confirmed heartbeat's validity ran out (send time +
     *       ttl), or an answer was not confirmed (the lease's stream is moving, or its instance
     *       lost ZooKeeper); the leadership comes back with the next confirmed answer listing it;
     *   <li>"lease-lost": the lease has ended;
     *   <li>"closed": {@link LeaderElector#stop()} stopped following the election.
     * </ul>
     */
    record Lost(String reason, long term) implements LeadershipEvent {}
}
