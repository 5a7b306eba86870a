//! Which offsets are safe to commit when messages finish out of order.
//!
//! Work on a partition may complete in any order; the committed offset may only move past a
//! message once it and every message before it are done. The tracker keeps, per partition, the
//! offsets still in flight and reports the new commit point whenever it advances.

use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Default)]
struct PartitionState {
    in_flight: BTreeSet<i64>,
    /// One past the highest offset handed out; the commit point once nothing is in flight.
    next: i64,
    /// The last commit point reported.
    committed: i64,
}

/// Keyed by topic, then partition, so that lookups by `&str` allocate nothing.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    topics: HashMap<String, HashMap<i32, PartitionState>>,
}

impl OffsetTracker {
    pub fn begin(&mut self, topic: &str, partition: i32, offset: i64) {
        if !self.topics.contains_key(topic) {
            self.topics.insert(topic.to_string(), HashMap::new());
        }
        let partitions = self.topics.get_mut(topic).expect("inserted above");
        let state = partitions
            .entry(partition)
            .or_insert_with(|| PartitionState {
                next: offset,
                committed: offset,
                ..PartitionState::default()
            });
        state.in_flight.insert(offset);
        state.next = state.next.max(offset + 1);
    }

    /// Marks `offset` done; returns the offset to commit (the next one to consume) if the
    /// commit point moved.
    pub fn complete(&mut self, topic: &str, partition: i32, offset: i64) -> Option<i64> {
        let state = self.topics.get_mut(topic)?.get_mut(&partition)?;
        if !state.in_flight.remove(&offset) {
            return None;
        }
        let point = state.in_flight.first().copied().unwrap_or(state.next);
        (point > state.committed).then(|| {
            state.committed = point;
            point
        })
    }

    /// Forgets a partition this consumer no longer owns; late completions for it are ignored.
    pub fn forget(&mut self, topic: &str, partition: i32) {
        if let Some(partitions) = self.topics.get_mut(topic) {
            partitions.remove(&partition);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_point_waits_for_the_oldest_message() {
        let mut t = OffsetTracker::default();
        for o in 10..14 {
            t.begin("t", 0, o);
        }
        assert_eq!(t.complete("t", 0, 12), None);
        assert_eq!(t.complete("t", 0, 11), None);
        assert_eq!(t.complete("t", 0, 10), Some(13));
        assert_eq!(t.complete("t", 0, 13), Some(14));
    }

    #[test]
    fn partitions_advance_independently() {
        let mut t = OffsetTracker::default();
        t.begin("t", 0, 5);
        t.begin("t", 1, 7);
        assert_eq!(t.complete("t", 1, 7), Some(8));
        assert_eq!(t.complete("t", 0, 5), Some(6));
    }

    #[test]
    fn forgotten_partitions_ignore_late_completions() {
        let mut t = OffsetTracker::default();
        t.begin("t", 0, 1);
        t.forget("t", 0);
        assert_eq!(t.complete("t", 0, 1), None);
        t.begin("t", 0, 40);
        assert_eq!(t.complete("t", 0, 1), None);
        assert_eq!(t.complete("t", 0, 40), Some(41));
    }
}
