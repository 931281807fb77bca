package io.zkcoord.client;

import io.grpc.Status;
import java.util.List;
import java.util.Optional;
import java.util.stream.Collectors;
import zkcoord.v1.LockOuterClass.Holder;
import zkcoord.v1.LockOuterClass.KeyHolders;

/**
 * {@code tryLock} could not take every key without waiting; nothing is held or queued.
 * {@link #blocked()} lists, per key that was in the way, its holders.
 */
public class LockBusyException extends ZkcoordException {
    private static final long serialVersionUID = 1L;

    private final transient List<KeyHolders> blocked;

    public LockBusyException(List<KeyHolders> blocked) {
        super(Status.Code.FAILED_PRECONDITION,
                "keys held by others: " + blocked.stream().map(KeyHolders::getKey).collect(Collectors.joining(", ")));
        this.blocked = List.copyOf(blocked);
    }

    /** Every key that was in the way, with its holders. */
    public List<KeyHolders> blocked() {
        return blocked;
    }

    /** The holders of {@code key}, when it was in the way. */
    public Optional<List<Holder>> holders(String key) {
        return blocked.stream().filter(b -> b.getKey().equals(key)).findFirst().map(KeyHolders::getHoldersList);
    }
}
