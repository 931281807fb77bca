//! Coordination recipes over ZooKeeper. Nothing here knows about gRPC: inputs are validated
//! domain values, outputs plain structs, failures [`crate::Error`].

pub mod election;
pub mod health;
pub mod instance;
pub mod lease;
pub mod lock;
pub mod shards;

/// Locks a std mutex, ignoring poisoning: every critical section in the recipes leaves its
/// data consistent, so a panic elsewhere must not wedge the instance.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
