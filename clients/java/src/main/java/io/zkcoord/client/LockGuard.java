package io.zkcoord.client;

import io.grpc.Status;
import java.time.Duration;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.OptionalLong;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import zkcoord.v1.Common.LeaseRef;
import zkcoord.v1.LeaseGrpc;
import zkcoord.v1.LeaseOuterClass.Binding;
import zkcoord.v1.LeaseOuterClass.TimeToLiveRequest;
import zkcoord.v1.LeaseOuterClass.TimeToLiveResponse;
import zkcoord.v1.LockGrpc;
import zkcoord.v1.LockOuterClass.KeyToken;
import zkcoord.v1.LockOuterClass.LockRequest;
import zkcoord.v1.LockOuterClass.LockResponse;
import zkcoord.v1.LockOuterClass.TryLockRequest;
import zkcoord.v1.LockOuterClass.TryLockResponse;
import zkcoord.v1.LockOuterClass.UnlockRequest;

/**
 * Held locks on a set of keys (all or nothing), with a fencing token per key; release them with
 * {@link #unlock()} or by leaving a try-with-resources block. They also end with the lease.
 *
 * <pre>{@code
 * try (LockGuard guard = LockGuard.lock(client, lease, List.of("order-17", "order-18"), LockMode.EXCLUSIVE, Duration.ofSeconds(5))) {
 *     write(record, guard.token("order-17"));
 * }
 * }</pre>
 *
 * <p>A hold is covered by its lease's confirmed heartbeats (the client rule): act on the records
 * only while {@link #validUntilNanos()} is present, until that moment at the latest, and pass
 * {@link #token(String)} with every write.
 *
 * <p>After an ambiguous answer to a Lock (UNAVAILABLE: the instance may have died with the
 * request queued; or the call's own deadline) the request may still be queued, or granted, under
 * the lease. Retrying blindly would wait behind that orphan forever (it is the lease's own), so
 * {@link #lock} first releases it: it lists the lease's lock bindings (Lease.TimeToLive) and
 * Unlocks every request on exactly the call's keys that no guard of this process holds, retrying
 * until that succeeds or the lease is gone. A concurrent {@code lock} of the same keys under the
 * same lease in this process cannot be told from the orphan: its request may be released too,
 * and that call then queues again.
 */
public final class LockGuard implements AutoCloseable {
    /** How much longer than the wait a Lock call's own deadline is. */
    private static final long CALL_MARGIN_MS = 10_000;
    /** Pause between attempts to release an orphaned request while no instance answers. */
    private static final long RELEASE_PAUSE_MS = 200;
    /** The message of a Lock whose queued request was released by an Unlock with its handle. */
    private static final String RELEASED = "lock request was released";

    /** The handles held by this process's guards, per lease id: never taken for orphans. */
    private static final Map<Long, Set<String>> HELD = new HashMap<>();
    /** How many orphan clean-ups released something. */
    private static long cleanups;

    private final ZkcoordClient client;
    private final LeaseKeeper keeper;
    private final LeaseRef lease;
    private final String handle;
    private final Map<String, Long> tokens;
    private volatile boolean released;

    private LockGuard(ZkcoordClient client, LeaseKeeper keeper, String handle, List<KeyToken> tokens) {
        this.client = client;
        this.keeper = keeper;
        this.lease = keeper.leaseRef();
        this.handle = handle;
        Map<String, Long> byKey = new LinkedHashMap<>();
        for (KeyToken token : tokens) {
            byKey.put(token.getKey(), token.getFencingToken());
        }
        this.tokens = Map.copyOf(byKey);
        synchronized (HELD) {
            HELD.computeIfAbsent(lease.getId(), id -> new HashSet<>()).add(handle);
        }
    }

    /**
     * Acquires {@code keys} (all or nothing) for {@code lease} in {@code mode}, waiting up to
     * {@code timeout} (null: as long as it takes), and returns the guard. Keys are not
     * re-entrant: asking again for a key the lease holds waits for itself.
     *
     * @throws LockWaitTimeoutException when the timeout passed (nothing stays held or queued)
     * @throws ZkcoordException INVALID_ARGUMENT for bad keys, PERMISSION_DENIED / NOT_FOUND for a
     *     bad or ended lease, DEADLINE_EXCEEDED when the call's own deadline (timeout + 10 s)
     *     passed, UNAVAILABLE from every instance (in both cases after the request left behind,
     *     if any, was released)
     */
    public static LockGuard lock(ZkcoordClient client, LeaseKeeper lease, List<String> keys, LockMode mode, Duration timeout) {
        // 0 means "no timeout" on the wire; a zero timeout is 1 ms, not forever.
        long waitMs = timeout == null ? 0 : Math.max(1, timeout.toMillis());
        LockRequest request = LockRequest.newBuilder()
                .addAllKeys(keys)
                .setLease(lease.leaseRef())
                .setMode(mode.wire())
                .setWaitTimeoutMs(waitMs)
                .build();
        Set<String> wanted = Set.copyOf(keys);
        int at = client.current();
        int unavailable = 0;
        while (true) {
            long before = cleanupCount();
            try {
                var stub = LockGrpc.newBlockingStub(client.channel(at));
                if (timeout != null) {
                    stub = stub.withDeadlineAfter(waitMs + CALL_MARGIN_MS, TimeUnit.MILLISECONDS);
                }
                LockResponse response = stub.lock(request);
                return new LockGuard(client, lease, response.getHandle(), response.getTokensList());
            } catch (RuntimeException e) {
                ZkcoordException error = ZkcoordException.from(e);
                if (error.code() == Status.Code.UNAVAILABLE) {
                    // The instance may have died with the request queued: release it, then try the
                    // next instance (every one once).
                    releaseOrphans(client, lease.leaseRef(), wanted);
                    unavailable++;
                    if (unavailable >= client.endpoints().size()) {
                        throw error;
                    }
                    at = client.rotate(at);
                    continue;
                }
                if (error.code() == Status.Code.DEADLINE_EXCEEDED && !(error instanceof LockWaitTimeoutException)) {
                    // The call's own deadline, not the server's wait: the request may be queued.
                    releaseOrphans(client, lease.leaseRef(), wanted);
                    throw error;
                }
                if (error.code() == Status.Code.FAILED_PRECONDITION && RELEASED.equals(error.details()) && cleanupCount() != before) {
                    continue; // taken for an orphan by a concurrent clean-up: queue again
                }
                throw error;
            }
        }
    }

    /** {@link #lock(ZkcoordClient, LeaseKeeper, List, LockMode, Duration)} of one key, exclusively. */
    public static LockGuard lock(ZkcoordClient client, LeaseKeeper lease, String key, Duration timeout) {
        return lock(client, lease, List.of(key), LockMode.EXCLUSIVE, timeout);
    }

    /**
     * Acquires {@code keys} (all or nothing) for {@code lease} only if that needs no waiting.
     *
     * @throws LockBusyException (with who holds each key that was in the way) when not acquired
     *     (nothing stays held or queued)
     * @throws ZkcoordException as {@link #lock}
     */
    public static LockGuard tryLock(ZkcoordClient client, LeaseKeeper lease, List<String> keys, LockMode mode) {
        TryLockRequest request = TryLockRequest.newBuilder().addAllKeys(keys).setLease(lease.leaseRef()).setMode(mode.wire()).build();
        int at = client.current();
        int unavailable = 0;
        TryLockResponse response;
        while (true) {
            try {
                response = LockGrpc.newBlockingStub(client.channel(at))
                        .withDeadlineAfter(client.deadlineMs(), TimeUnit.MILLISECONDS)
                        .tryLock(request);
                break;
            } catch (RuntimeException e) {
                ZkcoordException error = ZkcoordException.from(e);
                if (error.code() != Status.Code.UNAVAILABLE && error.code() != Status.Code.DEADLINE_EXCEEDED) {
                    throw error;
                }
                // The instance may have died between queueing and withdrawing the request.
                releaseOrphans(client, lease.leaseRef(), Set.copyOf(keys));
                unavailable++;
                if (error.code() == Status.Code.DEADLINE_EXCEEDED || unavailable >= client.endpoints().size()) {
                    throw error;
                }
                at = client.rotate(at);
            }
        }
        if (!response.getAcquired()) {
            throw new LockBusyException(response.getBlockedList());
        }
        return new LockGuard(client, lease, response.getHandle(), response.getTokensList());
    }

    /** {@link #tryLock(ZkcoordClient, LeaseKeeper, List, LockMode)} of one key, exclusively. */
    public static LockGuard tryLock(ZkcoordClient client, LeaseKeeper lease, String key) {
        return tryLock(client, lease, List.of(key), LockMode.EXCLUSIVE);
    }

    private static long cleanupCount() {
        synchronized (HELD) {
            return cleanups;
        }
    }

    /**
     * Releases the lease's lock requests on exactly {@code keys} that no guard of this process
     * holds, retrying through every instance until that succeeds or the lease is gone.
     */
    private static void releaseOrphans(ZkcoordClient client, LeaseRef lease, Set<String> keys) {
        TimeToLiveRequest request = TimeToLiveRequest.newBuilder().setLeaseId(lease.getId()).build();
        TimeToLiveResponse listed;
        while (true) {
            try {
                listed = client.retrying(ch -> LeaseGrpc.newBlockingStub(ch)
                        .withDeadlineAfter(client.deadlineMs(), TimeUnit.MILLISECONDS)
                        .timeToLive(request));
                break;
            } catch (ZkcoordException e) {
                if (e.code() == Status.Code.NOT_FOUND) {
                    return; // the lease is gone, and its requests with it
                }
                if (e.code() != Status.Code.UNAVAILABLE && e.code() != Status.Code.DEADLINE_EXCEEDED) {
                    throw e;
                }
                pause();
            }
        }
        Map<String, Set<String>> requests = new HashMap<>();
        for (Binding binding : listed.getBindingsList()) {
            if (binding.getKind() == Binding.Kind.KIND_LOCK) {
                requests.computeIfAbsent(binding.getId(), id -> new HashSet<>()).add(binding.getName());
            }
        }
        Set<String> held;
        synchronized (HELD) {
            held = Set.copyOf(HELD.getOrDefault(lease.getId(), Set.of()));
        }
        boolean any = false;
        for (var entry : requests.entrySet()) {
            if (!entry.getValue().equals(keys) || held.contains(entry.getKey())) {
                continue;
            }
            any = true;
            UnlockRequest unlock = UnlockRequest.newBuilder().setHandle(entry.getKey()).setLease(lease).build();
            while (true) {
                try {
                    client.retrying(ch -> LockGrpc.newBlockingStub(ch).withDeadlineAfter(client.deadlineMs(), TimeUnit.MILLISECONDS).unlock(unlock));
                    break;
                } catch (ZkcoordException e) {
                    if (e.code() == Status.Code.NOT_FOUND) {
                        break; // gone already (withdrawn, or with its lease)
                    }
                    if (e.code() != Status.Code.UNAVAILABLE && e.code() != Status.Code.DEADLINE_EXCEEDED) {
                        throw e;
                    }
                    pause();
                }
            }
        }
        if (any) {
            synchronized (HELD) {
                cleanups++;
            }
        }
    }

    private static void pause() {
        try {
            Thread.sleep(RELEASE_PAUSE_MS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new ZkcoordException(Status.Code.CANCELLED, "interrupted while releasing a lock request");
        }
    }

    /** The lock handle (what Lock.Unlock takes). */
    public String handle() {
        return handle;
    }

    /** Every key with its fencing token. */
    public Map<String, Long> tokens() {
        return tokens;
    }

    /**
     * The fencing token of {@code key}: pass it with every write to the guarded records and have
     * the store reject tokens lower than the highest it has seen.
     *
     * @throws IllegalArgumentException when the guard does not hold {@code key}
     */
    public long token(String key) {
        Long token = tokens.get(key);
        if (token == null) {
            throw new IllegalArgumentException("not held by this guard: " + key);
        }
        return token;
    }

    /** Whether {@link #unlock()} was called. */
    public boolean isReleased() {
        return released;
    }

    /**
     * Until when ({@link System#nanoTime()}) the holds may be acted on: the send time of the
     * lease's last confirmed heartbeat + ttl, if still ahead; empty when nothing may be done with
     * them now (or they were released).
     */
    public OptionalLong validUntilNanos() {
        return released ? OptionalLong.empty() : keeper.validUntilNanos();
    }

    /**
     * Releases the locks now (once; later calls do nothing).
     *
     * @throws ZkcoordException NOT_FOUND when they were already released (the lease ended);
     *     UNAVAILABLE when no instance answered (they are then released when the lease ends)
     */
    public void unlock() {
        synchronized (this) {
            if (released) {
                return;
            }
            released = true;
        }
        synchronized (HELD) {
            Set<String> handles = HELD.get(lease.getId());
            if (handles != null) {
                handles.remove(handle);
                if (handles.isEmpty()) {
                    HELD.remove(lease.getId());
                }
            }
        }
        UnlockRequest request = UnlockRequest.newBuilder().setHandle(handle).setLease(lease).build();
        boolean[] tried = {false};
        client.retrying(ch -> {
            boolean first = !tried[0];
            tried[0] = true;
            try {
                return LockGrpc.newBlockingStub(ch).withDeadlineAfter(client.deadlineMs(), TimeUnit.MILLISECONDS).unlock(request);
            } catch (RuntimeException e) {
                // After an UNAVAILABLE, the first attempt may have gone through.
                if (ZkcoordException.codeOf(e) == Status.Code.NOT_FOUND && !first) {
                    return null;
                }
                throw e;
            }
        });
    }

    /** Unlocks (ignoring NOT_FOUND: the holds ended with the lease), as leaving try-with-resources does. */
    @Override
    public void close() {
        try {
            unlock();
        } catch (ZkcoordException e) {
            if (e.code() != Status.Code.NOT_FOUND) {
                throw e;
            }
        }
    }

    @Override
    public String toString() {
        return "LockGuard(handle=" + handle + ", tokens=" + tokens + ", released=" + released + ")";
    }
}
