//! The queue of one lock key, and who in it holds the key: the pure rules of the recipe.
//!
//! Requests are ordered by their sequence number. The holders are the first request if it is
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

impl Queue {
    /// The queue of a key's children.
    pub fn parse(children: &[String]) -> Self {
        let mut nodes: Vec<QueuedHold> = children.iter().filter_map(|c| layout::queued_hold(c)).collect();
        nodes.sort_by_key(|n| n.seq);
        Self { nodes }
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

    fn node(mode: char, hold: u64, seq: u64) -> String {
        format!("{mode}-{}-{seq:010}", layout::hold_id(hold))
    }

    fn queue(nodes: &[(char, u64)]) -> Queue {
        let children: Vec<String> =
            nodes.iter().enumerate().rev().map(|(seq, &(mode, hold))| node(mode, hold, seq as u64)).collect();
        Queue::parse(&children)
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
        let q = Queue::parse(&children);
        assert_eq!(q.nodes.len(), 2);
        let q = q.without(&layout::hold_id(1));
        assert_eq!(q.standing(&layout::hold_id(2)), Standing::Granted);
    }
}
