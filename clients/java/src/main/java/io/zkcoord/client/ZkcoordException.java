package io.zkcoord.client;

import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;

/**
 * A zkcoord call failed: {@link #code()} is the gRPC status code, {@link #details()} zkcoord's
 * message (stable, see the README's error table), e.g. NOT_FOUND / "lease not found".
 *
 * <p>Unchecked, so that Kotlin callers and lambdas need no ceremony.
 */
public class ZkcoordException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    /** The response metadata key (a trailer) with which zkcoord tells why a call failed where the status code alone cannot. */
    public static final String REASON_METADATA = "zkcoord-reason";
    /** {@link #REASON_METADATA} of a Lock call whose wait ran out on the server (see {@link LockWaitTimeoutException}). */
    public static final String LOCK_WAIT_TIMEOUT = "lock-wait-timeout";

    private static final Metadata.Key<String> REASON_KEY = Metadata.Key.of(REASON_METADATA, Metadata.ASCII_STRING_MARSHALLER);

    private final Status.Code code;
    private final String details;

    public ZkcoordException(Status.Code code, String details) {
        super(code.name() + ": " + details);
        this.code = code;
        this.details = details;
    }

    /** The gRPC status code. */
    public Status.Code code() {
        return code;
    }

    /** zkcoord's message. */
    public String details() {
        return details;
    }

    /** Wraps the error of a stub call ({@link LockWaitTimeoutException} when zkcoord's reason says so). */
    public static ZkcoordException from(Throwable error) {
        if (error instanceof ZkcoordException known) {
            return known;
        }
        Status status = Status.fromThrowable(error);
        String details = status.getDescription() != null ? status.getDescription() : String.valueOf(error.getMessage());
        Metadata trailers = Status.trailersFromThrowable(error);
        String reason = trailers == null ? null : trailers.get(REASON_KEY);
        if (status.getCode() == Status.Code.DEADLINE_EXCEEDED && LOCK_WAIT_TIMEOUT.equals(reason)) {
            return new LockWaitTimeoutException(details);
        }
        return new ZkcoordException(status.getCode(), details);
    }

    /** The status code of any error of a stub call (UNKNOWN for anything that is not a gRPC status). */
    static Status.Code codeOf(Throwable error) {
        if (error instanceof ZkcoordException known) {
            return known.code;
        }
        if (error instanceof StatusRuntimeException || error instanceof io.grpc.StatusException) {
            return Status.fromThrowable(error).getCode();
        }
        return Status.Code.UNKNOWN;
    }
}
