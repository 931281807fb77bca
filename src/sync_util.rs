//! Helpers for the standard library's synchronization primitives.

/// Locks a std mutex, ignoring poisoning: every critical section in the recipes leaves its
/// data consistent, so a panic elsewhere must not wedge the instance.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
