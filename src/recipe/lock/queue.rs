//! The queue of one lock key, and who in it holds the key: the pure rules of the recipe.
//!
//! Requests are ordered by creation. Their sequence numbers say it (ZooKeeper numbers a key's
//! children with the key's child version at their creation), except that the counter is a
//! signed 32-bit number that wraps after 2^31 - 1 to -2^31 and, 2^31 later, from -1 to 0. So
//! the numbers are read modulo 2^32: as long as the queue's requests were created less than
//! 2^31 numbers apart (each creation or deletion of a request in the key counts one), they lie
//! on an arc shorter than half the circle, which starts after the one gap longer than half
//! the circle. Otherwise the names cannot tell the order, and [`Queue::parse`] says so: the
//! caller then orders the requests by creation zxid ([`Queue::by_creation`]) — one read per
//! request, for a queue in which a request has waited or held through more than 2^30 others.
//!
//! The holders are the first request if it is
//! exclusive, else the leading run of shared requests. So a request is granted once
//! * exclusive: nothing is before it;
//! * shared: no exclusive request is before it.
//!
//! An exclusive request therefore blocks every later shared one (no writer starvation), and
//! shared requests queued together are granted together. A granted request stays granted
//! until it leaves: requests only ever join at the end.

use crate::zk::layout::{self, QueuedHold};

/// The parsed, ordered queue of one key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Queue {
    /// The requests, in queue order. Nodes zkcoord did not create are ignored.
    pub nodes: Vec<QueuedHold>,
}

/// Where one request stands in a key's queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Standing {
    /// It holds the key.
    Granted,
    /// It waits; `behind` is the node whose deletion may grant it (the nearest earlier
    /// request it conflicts with), the one to watch.
    Blocked {
        /// A node name in the key's queue.
        behind: String,
    },
    /// It is not in the queue (its lease ended, or it was released).
    Missing,
}

/// A key's requests whose names cannot tell their order (they were created 2^31 or more
/// sequence numbers apart): order them with [`Queue::by_creation`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unordered(pub Vec<QueuedHold>);

/// Half the circle of sequence numbers read modulo 2^32.
const HALF: u64 = 1 << 31;

impl Queue {
    /// The queue of a key's children, in creation order as their names tell it (see the
    /// module docs).
    ///
    /// # Errors
    /// [`Unordered`] when the names cannot tell the order.
    pub fn parse(children: &[String]) -> Result<Self, Unordered> {
        let mut nodes: Vec<QueuedHold> = children.iter().filter_map(|c| layout::queued_hold(c)).collect();
        // Modulo 2^32: 2^31 - 1 is followed by -2^31 (2^31), and -1 (2^32 - 1) by 0.
        let position = |n: &QueuedHold| u64::from(n.seq as u32);
        nodes.sort_by_key(position);
        let (Some(first), Some(last)) = (nodes.first(), nodes.last()) else { return Ok(Self { nodes }) };
        // The gap after each node, the last one's wrapping around to the first.
        let wrap = (position(first) + (1 << 32) - position(last), nodes.len() - 1);
        let (widest, after) = nodes
            .windows(2)
            .enumerate()
            .map(|(at, pair)| (position(&pair[1]) - position(&pair[0]), at))
            .chain([wrap])
            .max()
            .unwrap_or(wrap);
        // Equal numbers are 2^32 apart (or more): the names tell nothing.
        let repeated = nodes.windows(2).any(|pair| position(&pair[0]) == position(&pair[1]));
        if widest <= HALF || repeated {
            return Err(Unordered(nodes));
        }
        let start = (after + 1) % nodes.len();
        nodes.rotate_left(start);
        Ok(Self { nodes })
    }

    /// The queue of requests in creation order: each with its node's creation zxid.
    pub fn by_creation(mut nodes: Vec<(QueuedHold, i64)>) -> Self {
        nodes.sort_by_key(|(_, czxid)| *czxid);
        Self { nodes: nodes.into_iter().map(|(node, _)| node).collect() }
    }

    /// The requests that hold the key.
    pub fn holders(&self) -> &[QueuedHold] {
        let granted = match self.nodes.first() {
            None => 0,
            Some(first) if first.exclusive => 1,
            Some(_) => self.nodes.iter().take_while(|n| !n.exclusive).count(),
        };
        &self.nodes[..granted]
    }

    /// The number of requests waiting.
    pub fn waiters(&self) -> usize {
        self.nodes.len() - self.holders().len()
    }

    /// Where request `hold` stands.
    pub fn standing(&self, hold: &str) -> Standing {
        let Some(at) = self.nodes.iter().position(|n| n.hold == hold) else {
            return Standing::Missing;
        };
        let before = &self.nodes[..at];
        let blocker = if self.nodes[at].exclusive { before.last() } else { before.iter().rev().find(|n| n.exclusive) };
        match blocker {
            None => Standing::Granted,
            Some(node) => Standing::Blocked { behind: node.node.clone() },
        }
    }

    /// Whether a request joining now would have to wait.
    pub fn would_block(&self, exclusive: bool) -> bool {
        if exclusive { !self.nodes.is_empty() } else { self.nodes.iter().any(|n| n.exclusive) }
    }

    /// The queue without request `hold`.
    pub fn without(mut self, hold: &str) -> Self {
        self.nodes.retain(|n| n.hold != hold);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node name as ZooKeeper makes it (`%010d`, sign included in the width).
    fn node(mode: char, hold: u64, seq: i32) -> String {
        format!("{mode}-{}-{seq:010}", layout::hold_id(hold))
    }

    fn queue(nodes: &[(char, u64)]) -> Queue {
        let children: Vec<String> =
            nodes.iter().enumerate().rev().map(|(seq, &(mode, hold))| node(mode, hold, seq as i32)).collect();
        Queue::parse(&children).expect("ordered")
    }

    /// The holds of a queue made of exclusive requests with sequence numbers `seqs` (hold n
    /// has `seqs[n]`), in queue order.
    fn order(seqs: &[i32]) -> Result<Vec<u64>, Unordered> {
        let children: Vec<String> = seqs.iter().enumerate().rev().map(|(n, &seq)| node('x', n as u64, seq)).collect();
        let queue = Queue::parse(&children)?;
        Ok(queue.nodes.iter().map(|n| u64::from_str_radix(&n.hold, 16).expect("hex")).collect())
    }

    /// Across the wrap from 2^31 - 1 to -2^31, and from -1 to 0, the order stays creation
    /// order: requests 0, 1, 2... created in that order keep it, whatever their numbers.
    #[test]
    fn the_order_survives_the_sequence_wrap() {
        let max = i32::MAX;
        let min = i32::MIN;
        for seqs in [
            vec![max - 1, max, min, min + 1],
            vec![max, min],
            vec![-2, -1, 0, 1],
            vec![-1, 0],
            vec![min, min + 1, -1],
            vec![5, 7, 1_000_000],
            vec![max - 3, min + 2_000_000_000],
        ] {
            let created: Vec<u64> = (0..seqs.len() as u64).collect();
            assert_eq!(order(&seqs), Ok(created), "{seqs:?}");
        }
        // The holder of a wrapped queue is the oldest request, not the smallest number.
        let q = Queue::parse(&[node('x', 2, min), node('s', 1, max)]).expect("ordered");
        assert_eq!(q.holders().iter().map(|n| n.hold.clone()).collect::<Vec<_>>(), [layout::hold_id(1)]);
        assert_eq!(q.standing(&layout::hold_id(2)), Standing::Blocked { behind: node('s', 1, max) });
    }

    /// Requests 2^31 or more numbers apart cannot be ordered by name; by creation zxid they
    /// can.
    #[test]
    fn requests_too_far_apart_are_ordered_by_creation_zxid() {
        for seqs in [vec![0, i32::MIN], vec![0, 1, i32::MIN], vec![-1, i32::MAX], vec![3, 3]] {
            let Err(Unordered(nodes)) = order(&seqs) else { panic!("{seqs:?} cannot be ordered by name") };
            assert_eq!(nodes.len(), seqs.len());
        }
        let nodes = vec![
            (layout::queued_hold(&node('x', 1, 0)).expect("valid"), 20),
            (layout::queued_hold(&node('x', 2, i32::MIN)).expect("valid"), 10),
        ];
        let q = Queue::by_creation(nodes);
        assert_eq!(q.holders()[0].hold, layout::hold_id(2));
        assert_eq!(q.waiters(), 1);
        assert_eq!(Queue::parse(&[]), Ok(Queue::default()));
        assert_eq!(order(&[i32::MIN]), Ok(vec![0]));
    }

    #[test]
    fn exclusive_waits_for_everything_before_it() {
        let q = queue(&[('x', 1), ('x', 2), ('s', 3)]);
        assert_eq!(q.standing(&layout::hold_id(1)), Standing::Granted);
        assert_eq!(q.standing(&layout::hold_id(2)), Standing::Blocked { behind: node('x', 1, 0) });
        assert_eq!(q.standing(&layout::hold_id(3)), Standing::Blocked { behind: node('x', 2, 1) });
        assert_eq!(q.standing(&layout::hold_id(9)), Standing::Missing);
        assert_eq!(q.holders().len(), 1);
        assert_eq!(q.waiters(), 2);
    }

    #[test]
    fn shared_requests_hold_together_until_an_exclusive_one() {
        let q = queue(&[('s', 1), ('s', 2), ('x', 3), ('s', 4)]);
        assert_eq!(q.standing(&layout::hold_id(1)), Standing::Granted);
        assert_eq!(q.standing(&layout::hold_id(2)), Standing::Granted);
        // The writer waits for the readers before it, and blocks the reader after it.
        assert_eq!(q.standing(&layout::hold_id(3)), Standing::Blocked { behind: node('s', 2, 1) });
        assert_eq!(q.standing(&layout::hold_id(4)), Standing::Blocked { behind: node('x', 3, 2) });
        assert_eq!(q.holders().len(), 2);
        assert_eq!(q.waiters(), 2);
        assert!(q.would_block(false));
        assert!(!queue(&[('s', 1)]).would_block(false));
        assert!(queue(&[('s', 1)]).would_block(true));
        assert!(!Queue::default().would_block(true));
    }

    #[test]
    fn strangers_are_ignored_and_removal_grants() {
        let mut children = vec!["junk".to_owned(), node('x', 1, 5)];
        children.push(node('s', 2, 7));
        let q = Queue::parse(&children).expect("ordered");
        assert_eq!(q.nodes.len(), 2);
        let q = q.without(&layout::hold_id(1));
        assert_eq!(q.standing(&layout::hold_id(2)), Standing::Granted);
    }
}
