//! Scenario 8: the overhead floor.
