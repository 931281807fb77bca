package io.zkcoord.client;

/** How a lock holds its keys. */
public enum LockMode {
    /** One holder per key. */
    EXCLUSIVE,
    /** Any number of shared holders, while no exclusive one holds the key. */
    SHARED;

    zkcoord.v1.LockOuterClass.LockMode wire() {
        return this == EXCLUSIVE ? zkcoord.v1.LockOuterClass.LockMode.LOCK_MODE_EXCLUSIVE : zkcoord.v1.LockOuterClass.LockMode.LOCK_MODE_SHARED;
    }
}
