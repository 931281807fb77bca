package io.zkcoord.client;

/**
 * A health check riding on a lease's heartbeats, e.g. {@code () -> db.ping() ? null : "db down"}.
 *
 * <p>It passes when it returns {@code null} or {@code true}; it fails when it returns a string
 * (the reason; an empty one means "check failed") or {@code false}, when it throws (the reason
 * is the exception's class and message), or when it does not answer within ttl/6.
 */
@FunctionalInterface
public interface HealthCheck {
    /** Runs the check once. */
    Object check() throws Exception;

    /** A check from a {@link java.util.function.Supplier} (same rules). */
    static HealthCheck of(java.util.function.Supplier<?> supplier) {
        return supplier::get;
    }
}
