//! Scenarios 6 and 7: leases.
