package io.zkcoord.client;

/**
 * Told about leadership changes, in the style of Apache Curator's {@code LeaderLatchListener}:
 * called from one thread per elector, in order, never concurrently. A listener must not block
 * for long; it must still check {@link LeaderElector#isLeader()} (or
 * {@link LeaderElector#leadership()}) right before each action, since a leadership can end by
 * time before {@code notLeader} is called.
 */
public interface LeaderListener {
    /** This candidate leads {@code term}: write {@code fencingToken} with everything it does. */
    void isLeader(long term, long fencingToken);

    /** This candidate must stop acting as leader now (see {@link LeadershipEvent.Lost} for the reasons). */
    void notLeader(String reason);
}
