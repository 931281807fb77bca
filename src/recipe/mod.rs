//! Coordination recipes over ZooKeeper. Nothing here knows about gRPC: inputs are validated
//! domain values, outputs plain structs, failures [`crate::Error`].
//!
//! Imports go one way: [`instance`] and [`health`] (over [`crate::zk`]) → [`lease`], with its
//! bindings ([`lease::binding`]) → [`election`], [`lock`]. A recipe that ends with a lease
//! binds its znodes with a binding record; the lease never imports it.

pub mod election;
pub mod health;
pub mod instance;
pub mod lease;
pub mod lock;

/// Locks a std mutex, ignoring poisoning (named apart from the [`lock`] recipe): every critical section in the recipes leaves its
/// data consistent, so a panic elsewhere must not wedge the instance.
pub(crate) fn locked<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
