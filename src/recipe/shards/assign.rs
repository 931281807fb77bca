//! The assignment function: which eligible member should own each shard. Pure, deterministic,
//! and unit-tested here; [`super::table`] turns its answer into two-phase handoffs.
//!
//! # Properties
//! * **Balanced by weight**: member `i` of weight `w_i` (total `W`) gets `⌊N·w_i/W⌋` or
//!   `⌈N·w_i/W⌉` of the `N` shards — within one shard of its weighted share.
//! * **Sticky**: a member keeps the shards it owns up to its target; only a member's excess, the
//!   shards of members that are gone or ineligible, and unowned shards move. So a member that
//!   joins takes shards only from the over-loaded, and a member that leaves gives only its own
//!   (for equal weights; see the tests).
//! * **Deterministic**: the answer depends only on the members (ids, weights) and the current
//!   owners, never on order of arrival or on timing.
//! * **Contiguous where it can be**: a member gives back its highest-numbered shards and takes
//!   the lowest-numbered free ones, so the table stays a few ranges.

/// One eligible member: its weight (≥ 1). Members are identified by their index in the slice,
/// which the caller sorts by member id (the tie-break order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Weight(pub u32);

/// The desired owner (an index into `weights`) of each of the `current.len()` shards, given each
/// shard's current owner (an index into `weights`, or `None` when unowned or owned by a member
/// that is not eligible). Every shard gets an owner when there is at least one member.
pub fn assign(weights: &[Weight], current: &[Option<usize>]) -> Vec<Option<usize>> {
    let n = current.len() as u64;
    if weights.is_empty() {
        return vec![None; current.len()];
    }
    let total: u64 = weights.iter().map(|w| u64::from(w.0.max(1))).sum();
    let mut kept: Vec<Vec<usize>> = vec![Vec::new(); weights.len()];
    for (shard, owner) in current.iter().enumerate() {
        if let Some(owner) = owner.filter(|o| *o < weights.len()) {
            kept[owner].push(shard);
        }
    }
    // Targets: the floor of each share, plus one for `extras` members whose share is not whole.
    let mut targets: Vec<usize> = Vec::with_capacity(weights.len());
    let mut remainders: Vec<u64> = Vec::with_capacity(weights.len());
    for w in weights {
        let scaled = n * u64::from(w.0.max(1));
        targets.push((scaled / total) as usize);
        remainders.push(scaled % total);
    }
    let extras = current.len() - targets.iter().sum::<usize>();
    let mut order: Vec<usize> = (0..weights.len()).filter(|i| remainders[*i] > 0).collect();
    // Extras go first to members that already hold more than their floor (nothing moves for
    // them), then to the largest remainders, then by member order.
    order.sort_by_key(|i| (kept[*i].len() <= targets[*i], std::cmp::Reverse(remainders[*i]), *i));
    for i in order.into_iter().take(extras) {
        targets[i] += 1;
    }
    let mut desired: Vec<Option<usize>> = vec![None; current.len()];
    for (i, shards) in kept.iter().enumerate() {
        for shard in shards.iter().take(targets[i]) {
            desired[*shard] = Some(i);
        }
    }
    let mut free = desired.iter().enumerate().filter(|(_, d)| d.is_none()).map(|(s, _)| s).collect::<Vec<_>>();
    free.reverse(); // pop() yields the lowest-numbered free shard
    for (i, target) in targets.iter().enumerate() {
        let have = kept[i].len().min(*target);
        for _ in have..*target {
            if let Some(shard) = free.pop() {
                desired[shard] = Some(i);
            }
        }
    }
    desired
}

#[cfg(test)]
mod tests {
    use super::*;

    fn equal(m: usize) -> Vec<Weight> {
        vec![Weight(1); m]
    }

    fn counts(desired: &[Option<usize>], members: usize) -> Vec<usize> {
        let mut c = vec![0; members];
        for d in desired.iter().flatten() {
            c[*d] += 1;
        }
        c
    }

    fn moved(before: &[Option<usize>], after: &[Option<usize>]) -> usize {
        before.iter().zip(after).filter(|(b, a)| b.is_some() && b != a).count()
    }

    /// Every member within one shard of its weighted share, and every shard owned.
    fn assert_balanced(weights: &[Weight], desired: &[Option<usize>]) {
        let n = desired.len() as f64;
        let total: f64 = weights.iter().map(|w| f64::from(w.0)).sum();
        assert!(desired.iter().all(Option::is_some), "every shard owned");
        for (i, c) in counts(desired, weights.len()).into_iter().enumerate() {
            let share = n * f64::from(weights[i].0) / total;
            assert!((c as f64 - share).abs() < 1.0, "member {i}: {c} shards for a share of {share}");
        }
    }

    #[test]
    fn no_members_no_owners() {
        assert_eq!(assign(&[], &[Some(0), None]), vec![None, None]);
    }

    #[test]
    fn a_fresh_group_is_split_in_contiguous_balanced_ranges() {
        let d = assign(&equal(3), &[None; 10]);
        assert_balanced(&equal(3), &d);
        let owners: Vec<usize> = d.iter().flatten().copied().collect();
        assert_eq!(owners, vec![0, 0, 0, 0, 1, 1, 1, 2, 2, 2]);
        assert_eq!(assign(&equal(3), &[None; 10]), d, "deterministic");
    }

    #[test]
    fn a_joining_member_takes_at_most_its_share_and_only_from_the_overloaded() {
        for (n, m) in [(64usize, 3usize), (1024, 99), (10, 3), (7, 6), (65_536, 5), (3, 5)] {
            let before = assign(&equal(m), &vec![None; n]);
            let after = assign(&equal(m + 1), &before);
            assert_balanced(&equal(m + 1), &after);
            let limit = n.div_ceil(m + 1);
            assert!(moved(&before, &after) <= limit, "n={n} m={m}: moved {} > {limit}", moved(&before, &after));
            // Every moved shard went to the newcomer.
            for (b, a) in before.iter().zip(&after) {
                if b != a {
                    assert_eq!(*a, Some(m), "n={n} m={m}");
                }
            }
        }
    }

    #[test]
    fn a_leaving_member_gives_only_its_own_shards() {
        for (n, m, leaving) in [(64usize, 4usize, 1usize), (1024, 100, 37), (10, 4, 0), (5, 4, 3), (3, 5, 4)] {
            let before = assign(&equal(m), &vec![None; n]);
            // Re-index: members after `leaving` shift down by one.
            let current: Vec<Option<usize>> = before
                .iter()
                .map(|o| {
                    o.and_then(|o| {
                        if o == leaving {
                            None
                        } else if o > leaving {
                            Some(o - 1)
                        } else {
                            Some(o)
                        }
                    })
                })
                .collect();
            let after = assign(&equal(m - 1), &current);
            assert_balanced(&equal(m - 1), &after);
            for (shard, (b, a)) in current.iter().zip(&after).enumerate() {
                if b.is_some() {
                    assert_eq!(b, a, "n={n} m={m}: shard {shard} of a staying member moved");
                }
            }
        }
    }

    #[test]
    fn weights_are_honoured() {
        let weights = [Weight(1), Weight(3), Weight(4)];
        let d = assign(&weights, &[None; 64]);
        assert_balanced(&weights, &d);
        assert_eq!(counts(&d, 3), vec![8, 24, 32]);
        let weights = [Weight(2), Weight(1), Weight(1000)];
        assert_balanced(&weights, &assign(&weights, &[None; 1000]));
    }

    #[test]
    fn a_stable_assignment_does_not_change() {
        let m = equal(7);
        let first = assign(&m, &[None; 100]);
        assert_eq!(assign(&m, &first), first);
        // Also from any balanced start: keep what is within the targets.
        let scrambled: Vec<Option<usize>> = (0..100).map(|s| Some((s * 13) % 7)).collect();
        let once = assign(&m, &scrambled);
        assert_balanced(&m, &once);
        assert_eq!(assign(&m, &once), once);
    }

    #[test]
    fn ineligible_owners_shards_are_free() {
        // Shards of an owner outside the member list are reassigned.
        let d = assign(&equal(2), &[Some(5), Some(0), Some(1), None]);
        assert_balanced(&equal(2), &d);
        assert_eq!(d[1], Some(0));
        assert_eq!(d[2], Some(1));
    }
}
