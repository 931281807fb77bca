package io.zkcoord.client;

import io.grpc.Status;

/**
 * A lock's wait ran out on the server (DEADLINE_EXCEEDED with zkcoord-reason lock-wait-timeout):
 * nothing was acquired and nothing is left queued.
 *
 * <p>A deadline of the call itself is a plain {@link ZkcoordException} with DEADLINE_EXCEEDED:
 * then the request may still have been queued, and {@code LockGuard.lock} released it.
 */
public class LockWaitTimeoutException extends ZkcoordException {
    private static final long serialVersionUID = 1L;

    public LockWaitTimeoutException(String details) {
        super(Status.Code.DEADLINE_EXCEEDED, details);
    }
}
