//! A group's assignment table and the pure step that moves it toward the assignment
//! ([`super::assign`]) in two phases. Nothing here reads a clock or ZooKeeper: the caller says
//! which members are live and which handoffs have run out, so every rule is unit-tested.
//!
//! # The handoff rule
//! A shard owned by `A` that should go to `B` first becomes `HandingOff { owner: A }`: from that
//! write on, no heartbeat answer lists it for `A` (see [`super::ownership`]) and `A` is told
//! REVOKE. It becomes `Owned { owner: B }` with a new epoch only in a later write, made after
//! `A` released it ([`Table::release`]), or `A`'s membership ended (its lease ended, so its
//! validity did), or the handoff was seen for `A`'s ttl + the proof window + a margin
//! ([`super::follow`]) — when `A`'s validity has surely run out. So no two members are ever
//! valid owners of one shard at once.
//!
//! # Epochs
//! An epoch is the `mzxid` of the record version that assigned the shard: greater than every
//! earlier epoch of that shard (ZooKeeper's zxids grow). A write cannot contain its own zxid,
//! so a slot assigned by a write carries [`NEW`] in that version, and the next write, which
//! knows the previous version's `mzxid`, replaces it ([`Table::resolve`]).

use std::collections::BTreeSet;

use super::assign::{Weight, assign};

/// The epoch of a slot assigned by the record version that contains it (resolved to that
/// version's `mzxid` when read).
pub const NEW: u64 = 0;
/// No member (in `target`).
const NONE: u32 = u32::MAX;

/// A membership: a member id bound to a lease. A member that joins again with another lease is
/// another owner (its old ownerships ended with the old lease).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Owner {
    /// The member id.
    pub member: String,
    /// The lease it joined with.
    pub lease_id: i64,
}

/// One shard's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Nobody owns the shard.
    Unassigned,
    /// `owner` (an index into [`Table::owners`]) owns it with `epoch`.
    Owned {
        /// Index into the table's owners.
        owner: u32,
        /// The ownership's epoch.
        epoch: u64,
    },
    /// `owner` was told to release it; `target` (an index into the owners, or none) gets it
    /// next.
    HandingOff {
        /// Index into the table's owners.
        owner: u32,
        /// The ownership's epoch.
        epoch: u64,
        /// Index into the table's owners, or `u32::MAX`.
        target: u32,
    },
}

/// A group's table: its shard count, drained member ids, the owners referred to, one slot per
/// shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    /// The drained member ids.
    pub drained: BTreeSet<String>,
    /// The owners the slots refer to (the table's interning of memberships).
    pub owners: Vec<Owner>,
    /// One slot per shard.
    pub slots: Vec<Slot>,
}

/// A member as the planner needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Its membership.
    pub owner: Owner,
    /// Its weight (≥ 1).
    pub weight: u32,
    /// Whether it may own shards: healthy and not leaving (drain is in the table).
    pub eligible: bool,
}

/// Shard counts of a table (see [`Table::counts`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotCounts {
    /// Shards owned (not being handed off), by owner index.
    pub owned: Vec<u32>,
    /// Shards being handed off.
    pub handing_off: u32,
    /// Shards nobody owns.
    pub unassigned: u32,
}

/// Why a release was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleaseRefused {
    /// The member owns the shard and it is not being revoked.
    NotRevoked,
    /// The member does not hold the shard with that epoch (it has moved on, or never was).
    NotOwner,
}

impl Table {
    /// A table of `shards` unassigned shards.
    pub fn new(shards: u32) -> Self {
        Self { drained: BTreeSet::new(), owners: Vec::new(), slots: vec![Slot::Unassigned; shards as usize] }
    }

    /// The owner of slot index `i`.
    pub fn owner(&self, i: u32) -> Option<&Owner> {
        self.owners.get(i as usize)
    }

    /// Replaces [`NEW`] epochs by `mzxid`, the zxid of the version they were read from.
    pub fn resolve(&mut self, mzxid: u64) {
        for slot in &mut self.slots {
            match slot {
                Slot::Owned { epoch, .. } | Slot::HandingOff { epoch, .. } if *epoch == NEW => *epoch = mzxid,
                _ => {}
            }
        }
    }

    /// The shards `owner` owns (not being handed off), with their epochs, in shard order.
    pub fn owned_by(&self, owner: &Owner) -> Vec<(u32, u64)> {
        self.slots_of(owner, false)
    }

    /// The shards being revoked from `owner`, with their epochs.
    pub fn revoking(&self, owner: &Owner) -> Vec<(u32, u64)> {
        self.slots_of(owner, true)
    }

    fn slots_of(&self, owner: &Owner, handing_off: bool) -> Vec<(u32, u64)> {
        let Some(index) = self.owners.iter().position(|o| o == owner) else { return Vec::new() };
        let index = index as u32;
        let mut out = Vec::new();
        for (shard, slot) in self.slots.iter().enumerate() {
            match *slot {
                Slot::Owned { owner, epoch } if owner == index && !handing_off => out.push((shard as u32, epoch)),
                Slot::HandingOff { owner, epoch, .. } if owner == index && handing_off => {
                    out.push((shard as u32, epoch))
                }
                _ => {}
            }
        }
        out
    }

    /// Applies `owner`'s release of `shard` with `epoch`: the slot becomes unassigned (the next
    /// [`Table::plan`] gives it to its target at once).
    pub fn release(&mut self, owner: &Owner, shard: u32, epoch: u64) -> Result<(), ReleaseRefused> {
        let index = self.owners.iter().position(|o| o == owner).map(|i| i as u32);
        match self.slots.get(shard as usize).copied() {
            Some(Slot::HandingOff { owner: o, epoch: e, .. }) if Some(o) == index && e == epoch => {
                self.slots[shard as usize] = Slot::Unassigned;
                Ok(())
            }
            Some(Slot::Owned { owner: o, epoch: e }) if Some(o) == index && e == epoch => {
                Err(ReleaseRefused::NotRevoked)
            }
            _ => Err(ReleaseRefused::NotOwner),
        }
    }

    /// The next table: the assignment for `members` (sorted by member id), reached in two
    /// phases (see the module docs), or `None` when nothing changes. `live(owner)` says whether
    /// a membership still exists; `handoff_over(shard, owner, epoch)` whether a handoff has been
    /// seen long enough that its owner's validity has run out.
    pub fn plan(&self, members: &[Candidate], handoff_over: impl Fn(u32, &Owner, u64) -> bool) -> Option<Table> {
        let eligible: Vec<&Candidate> =
            members.iter().filter(|m| m.eligible && !self.drained.contains(&m.owner.member)).collect();
        let index_of = |owner: &Owner| eligible.iter().position(|m| &m.owner == owner);
        let live = |owner: &Owner| members.iter().any(|m| &m.owner == owner);
        let current: Vec<Option<usize>> = self
            .slots
            .iter()
            .map(|slot| match *slot {
                Slot::Owned { owner, .. } => self.owner(owner).and_then(index_of),
                Slot::HandingOff { target, .. } => self.owner(target).and_then(index_of),
                Slot::Unassigned => None,
            })
            .collect();
        let weights: Vec<Weight> = eligible.iter().map(|m| Weight(m.weight.max(1))).collect();
        let desired = assign(&weights, &current);

        let mut owners: Vec<Owner> = Vec::new();
        let mut slots = Vec::with_capacity(self.slots.len());
        for (shard, (slot, want)) in self.slots.iter().zip(&desired).enumerate() {
            let want = want.map(|i| &eligible[i].owner);
            let holder = match *slot {
                Slot::Unassigned => None,
                Slot::Owned { owner, .. } | Slot::HandingOff { owner, .. } => self.owner(owner),
            };
            let next_slot = match (*slot, holder) {
                // Kept: still live and still wanted.
                (Slot::Owned { epoch, .. }, Some(holder)) if live(holder) && want == Some(holder) => {
                    Slot::Owned { owner: intern(&mut owners, holder), epoch }
                }
                // To move: the holder lives, so it is told first (REVOKE); the target waits.
                (Slot::Owned { epoch, .. }, Some(holder)) if live(holder) => Slot::HandingOff {
                    owner: intern(&mut owners, holder),
                    epoch,
                    target: want.map_or(NONE, |w| intern(&mut owners, w)),
                },
                // A handoff still running: the holder lives, has not released it, its grace has
                // not run out, and it is not wanted back (then it is given it again with a new
                // epoch: it was told REVOKE and may have stopped).
                (Slot::HandingOff { epoch, .. }, Some(holder))
                    if live(holder) && !handoff_over(shard as u32, holder, epoch) && want != Some(holder) =>
                {
                    Slot::HandingOff {
                        owner: intern(&mut owners, holder),
                        epoch,
                        target: want.map_or(NONE, |w| intern(&mut owners, w)),
                    }
                }
                // Free: unassigned, released, ended, run out: assigned at once, with a new epoch.
                _ => match want {
                    Some(w) => Slot::Owned { owner: intern(&mut owners, w), epoch: NEW },
                    None => Slot::Unassigned,
                },
            };
            slots.push(next_slot);
        }
        let next = Table { drained: self.drained.clone(), owners, slots };
        (!self.same_as(&next)).then_some(next)
    }

    /// How many shards each owner (by index into [`Table::owners`]) owns, and how many are
    /// being handed off or unassigned: one pass over the slots.
    pub fn counts(&self) -> SlotCounts {
        let mut counts = SlotCounts { owned: vec![0; self.owners.len()], handing_off: 0, unassigned: 0 };
        for slot in &self.slots {
            match *slot {
                Slot::Owned { owner, .. } => {
                    if let Some(n) = counts.owned.get_mut(owner as usize) {
                        *n += 1;
                    }
                }
                Slot::HandingOff { .. } => counts.handing_off += 1,
                Slot::Unassigned => counts.unassigned += 1,
            }
        }
        counts
    }

    /// The handoffs in progress: `(shard, owner, epoch)` of every `HandingOff` slot.
    pub fn handoffs(&self) -> Vec<(u32, &Owner, u64)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(shard, slot)| match *slot {
                Slot::HandingOff { owner, epoch, .. } => Some((shard as u32, self.owner(owner)?, epoch)),
                _ => None,
            })
            .collect()
    }

    /// The handoffs of this table that `next` (a later table) no longer has: the shard was
    /// released and assigned, moved after its grace, or was given back; as `(shard, owner,
    /// epoch)` of the handoff.
    pub fn handoffs_completed_by(&self, next: &Table) -> Vec<(u32, &Owner, u64)> {
        self.handoffs()
            .into_iter()
            .filter(|&(shard, owner, epoch)| match next.slots.get(shard as usize) {
                Some(&Slot::HandingOff { owner: o, epoch: e, .. }) => e != epoch || next.owner(o) != Some(owner),
                _ => true,
            })
            .collect()
    }

    /// Whether two tables say the same (owner indices may differ).
    pub fn same_as(&self, other: &Table) -> bool {
        if self.drained != other.drained || self.slots.len() != other.slots.len() {
            return false;
        }
        self.slots.iter().zip(&other.slots).all(|(a, b)| match (*a, *b) {
            (Slot::Unassigned, Slot::Unassigned) => true,
            (Slot::Owned { owner: a, epoch: x }, Slot::Owned { owner: b, epoch: y }) => {
                x == y && self.owner(a) == other.owner(b)
            }
            (
                Slot::HandingOff { owner: a, epoch: x, target: s },
                Slot::HandingOff { owner: b, epoch: y, target: t },
            ) => x == y && self.owner(a) == other.owner(b) && self.owner(s) == other.owner(t),
            _ => false,
        })
    }
}

/// The index of `owner` in `owners`, added when missing.
fn intern(owners: &mut Vec<Owner>, owner: &Owner) -> u32 {
    match owners.iter().position(|o| o == owner) {
        Some(i) => i as u32,
        None => {
            owners.push(owner.clone());
            (owners.len() - 1) as u32
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, lease_id: i64) -> Candidate {
        Candidate { owner: Owner { member: id.into(), lease_id }, weight: 1, eligible: true }
    }

    fn never(_: u32, _: &Owner, _: u64) -> bool {
        false
    }

    /// Plans until nothing changes, resolving epochs as if each step were written at zxid
    /// `*zxid` (incremented).
    fn settle(
        mut table: Table,
        members: &[Candidate],
        over: impl Fn(u32, &Owner, u64) -> bool,
        zxid: &mut u64,
    ) -> Table {
        for _ in 0..10 {
            match table.plan(members, &over) {
                Some(mut next) => {
                    *zxid += 1;
                    next.resolve(*zxid);
                    table = next;
                }
                None => return table,
            }
        }
        panic!("did not settle");
    }

    fn count(table: &Table, owner: &Owner) -> usize {
        table.owned_by(owner).len()
    }

    #[test]
    fn a_new_group_is_assigned_in_one_step_with_one_epoch() {
        let members = [member("a", 1), member("b", 2)];
        let mut zxid = 100;
        let table = settle(Table::new(8), &members, never, &mut zxid);
        assert_eq!(zxid, 101, "one write");
        assert_eq!(table.owned_by(&members[0].owner), (0..4).map(|s| (s, 101)).collect::<Vec<_>>());
        assert_eq!(count(&table, &members[1].owner), 4);
    }

    #[test]
    fn a_moving_shard_is_revoked_before_it_is_assigned() {
        let a = member("a", 1);
        let b = member("b", 2);
        let mut zxid = 100;
        let table = settle(Table::new(4), std::slice::from_ref(&a), never, &mut zxid);
        // b joins: a's shards 2 and 3 are handed off, nobody else owns them yet.
        let members = [a.clone(), b.clone()];
        let mut step = table.plan(&members, never).expect("a change");
        step.resolve(102);
        assert_eq!(step.owned_by(&a.owner), vec![(0, 101), (1, 101)]);
        assert_eq!(step.revoking(&a.owner), vec![(2, 101), (3, 101)]);
        assert!(step.owned_by(&b.owner).is_empty(), "b waits for a");
        assert!(step.plan(&members, never).is_none(), "nothing happens until release or expiry");
        // a releases shard 2: b gets it with a new epoch; shard 3 still waits.
        assert_eq!(step.release(&b.owner, 2, 101), Err(ReleaseRefused::NotOwner));
        assert_eq!(step.release(&a.owner, 2, 100), Err(ReleaseRefused::NotOwner), "old epoch");
        assert_eq!(step.release(&a.owner, 0, 101), Err(ReleaseRefused::NotRevoked));
        step.release(&a.owner, 2, 101).expect("released");
        let mut after = step.plan(&members, never).expect("assigns the released shard");
        after.resolve(103);
        assert_eq!(after.owned_by(&b.owner), vec![(2, 103)]);
        assert_eq!(after.revoking(&a.owner), vec![(3, 101)]);
        // The grace of shard 3 runs out: it moves without a release.
        let mut last =
            after.plan(&members, |shard, owner, epoch| shard == 3 && owner == &a.owner && epoch == 101).expect("moves");
        last.resolve(104);
        assert_eq!(last.owned_by(&b.owner), vec![(2, 103), (3, 104)]);
        assert!(last.revoking(&a.owner).is_empty());
    }

    #[test]
    fn counts_and_completed_handoffs_follow_the_two_phases() {
        let a = member("a", 1);
        let b = member("b", 2);
        let mut zxid = 100;
        let table = settle(Table::new(4), std::slice::from_ref(&a), never, &mut zxid);
        assert_eq!(table.counts(), SlotCounts { owned: vec![4], handing_off: 0, unassigned: 0 });
        assert!(Table::new(4).handoffs_completed_by(&table).is_empty(), "no handoff before");
        let members = [a.clone(), b.clone()];
        let mut step = table.plan(&members, never).expect("a change");
        step.resolve(102);
        let counts = step.counts();
        assert_eq!((counts.handing_off, counts.unassigned, counts.owned.iter().sum::<u32>()), (2, 0, 2));
        assert_eq!(step.handoffs(), vec![(2, &a.owner, 101), (3, &a.owner, 101)]);
        assert!(table.handoffs_completed_by(&step).is_empty());
        let mut released = step.clone();
        released.release(&a.owner, 2, 101).expect("released");
        let mut after = released.plan(&members, never).expect("assigns the released shard");
        after.resolve(103);
        assert_eq!(step.handoffs_completed_by(&after), vec![(2, &a.owner, 101)], "shard 3 still waits");
        assert_eq!(after.counts().handing_off, 1);
        let last = after.plan(&members, |_, _, _| true).expect("moves");
        assert_eq!(after.handoffs_completed_by(&last), vec![(3, &a.owner, 101)]);
        assert_eq!(last.counts(), SlotCounts { owned: vec![2, 2], handing_off: 0, unassigned: 0 });
    }

    #[test]
    fn an_ended_membership_loses_its_shards_at_once() {
        let a = member("a", 1);
        let b = member("b", 2);
        let mut zxid = 10;
        let table = settle(Table::new(6), &[a.clone(), b.clone()], never, &mut zxid);
        let before_b = table.owned_by(&b.owner);
        let table = settle(table, std::slice::from_ref(&b), never, &mut zxid);
        assert_eq!(count(&table, &b.owner), 6);
        for (shard, epoch) in before_b {
            assert!(table.owned_by(&b.owner).contains(&(shard, epoch)), "b's own shards did not move");
        }
        // The same member id with a new lease is a new owner.
        let a2 = member("a", 3);
        let table = settle(table, &[a2.clone(), b.clone()], |_, _, _| true, &mut zxid);
        assert_eq!(count(&table, &a2.owner), 3);
        assert!(table.owned_by(&a.owner).is_empty());
    }

    #[test]
    fn drained_and_unhealthy_members_get_nothing_and_undrain_rebalances() {
        let a = member("a", 1);
        let b = member("b", 2);
        let members = [a.clone(), b.clone()];
        let mut zxid = 10;
        let mut table = settle(Table::new(10), &members, never, &mut zxid);
        table.drained.insert("a".into());
        let table = settle(table, &members, |_, _, _| true, &mut zxid);
        assert_eq!((count(&table, &a.owner), count(&table, &b.owner)), (0, 10));
        let mut table = table;
        table.drained.clear();
        let table = settle(table, &members, |_, _, _| true, &mut zxid);
        assert_eq!((count(&table, &a.owner), count(&table, &b.owner)), (5, 5));
        let sick = [Candidate { eligible: false, ..a.clone() }, b.clone()];
        let table = settle(table, &sick, |_, _, _| true, &mut zxid);
        assert_eq!((count(&table, &a.owner), count(&table, &b.owner)), (0, 10));
        // Nobody eligible: handed off to nobody, then unassigned.
        let none = [Candidate { eligible: false, ..b.clone() }];
        let table = settle(table, &none, |_, _, _| true, &mut zxid);
        assert!(table.slots.iter().all(|s| *s == Slot::Unassigned));
    }

    #[test]
    fn epochs_only_grow() {
        let a = member("a", 1);
        let b = member("b", 2);
        let mut zxid = 10;
        let mut last = [0u64; 16];
        let mut table = Table::new(16);
        for round in 0..6 {
            let members: Vec<Candidate> = if round % 2 == 0 { vec![a.clone(), b.clone()] } else { vec![b.clone()] };
            table = settle(table, &members, |_, _, _| true, &mut zxid);
            for m in &members {
                for (shard, epoch) in table.owned_by(&m.owner) {
                    assert!(epoch >= last[shard as usize]);
                    last[shard as usize] = epoch;
                }
            }
        }
    }
}
