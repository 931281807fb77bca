//! The elections and shard groups a lease's heartbeats name, for `max_candidacies_per_lease`.
//!
//! Each name a heartbeat carries costs the answering instance a proven view while it is named
//! (a ZooKeeper read when first named and a watch, kept for [`crate::zk::proven::IDLE`] after
//! the last heartbeat naming it): a heartbeat naming 64 new random names a millisecond would
//! make an instance hold millions of views and watches. So the distinct names one lease's
//! heartbeats carry within that time are bounded, by the number of candidacies a lease may have
//! (`max_candidacies_per_lease`, default 1,000 — far above the few elections a lease
//! campaigns in). A heartbeat naming one more is refused `RESOURCE_EXHAUSTED`
//! ("too many elections and shard groups named by this lease's heartbeats"), which ends its
//! KeepAlive stream; names not named for that time make room again.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::{
    error::{self, Error, Result},
    sync_util::lock,
};

/// Whether a name is an election's or a shard group's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NameKind {
    /// An election.
    Election,
    /// A shard group.
    ShardGroup,
}

/// The names one lease's heartbeats carried recently, with when each was last named.
#[derive(Debug, Default)]
pub struct NamedRecently(Mutex<HashMap<(NameKind, String), Instant>>);

impl NamedRecently {
    /// Notes that a heartbeat at `now` names `names`; at most `max` distinct names may have
    /// been named within `recent`.
    ///
    /// # Errors
    /// [`Error::LimitReached`] ([`error::TOO_MANY_NAMED`]) when one of `names` would be one
    /// too many; nothing is noted then.
    pub fn note<'a>(
        &self,
        names: impl Iterator<Item = (NameKind, &'a str)> + Clone,
        max: usize,
        recent: Duration,
        now: Instant,
    ) -> Result<()> {
        let mut named = lock(&self.0);
        let new = names.clone().filter(|(kind, name)| !named.contains_key(&(*kind, (*name).to_owned()))).count();
        if named.len() + new > max {
            named.retain(|_, at| now < *at + recent);
            let new = names.clone().filter(|(kind, name)| !named.contains_key(&(*kind, (*name).to_owned()))).count();
            if named.len() + new > max {
                return Err(Error::LimitReached(error::TOO_MANY_NAMED));
            }
        }
        for (kind, name) in names {
            named.insert((kind, name.to_owned()), now);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elections(names: &'static [&'static str]) -> impl Iterator<Item = (NameKind, &'static str)> + Clone {
        names.iter().map(|n| (NameKind::Election, *n))
    }

    #[test]
    fn distinct_names_are_bounded_until_old_ones_are_not_named_for_a_while() {
        let named = NamedRecently::default();
        let (recent, t0) = (Duration::from_secs(60), Instant::now());
        named.note(elections(&["a", "b"]), 3, recent, t0).expect("2 of 3");
        named.note(elections(&["a", "b"]), 3, recent, t0).expect("the same names again");
        let refused = named.note(elections(&["c", "d"]), 3, recent, t0);
        assert!(matches!(refused, Err(Error::LimitReached(m)) if m == error::TOO_MANY_NAMED));
        named.note(elections(&["c"]), 3, recent, t0).expect("3 of 3: nothing was noted by the refusal");
        // A group of the same name is another name.
        assert!(named.note([(NameKind::ShardGroup, "a")].into_iter(), 3, recent, t0).is_err());
        // "a" stays named; "b" and "c" are not named for a minute and make room.
        named.note(elections(&["a"]), 3, recent, t0 + Duration::from_secs(30)).expect("named again");
        named.note(elections(&["d", "e"]), 3, recent, t0 + Duration::from_secs(61)).expect("room again");
        assert!(named.note(elections(&["f"]), 3, recent, t0 + Duration::from_secs(62)).is_err(), "a, d, e");
    }
}
