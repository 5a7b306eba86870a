//! Which offsets are safe to commit when messages finish out of order.
//!
//! Work on a partition may complete in any order; the committed offset may only move past a
//! message once it and every message before it are done. The tracker keeps, per partition, the
//! offsets still in flight and reports the new commit point whenever it advances. Each
//! ownership of a partition is a generation: work begun before the partition was revoked
//! completes into nothing, even when the partition came straight back.

use std::collections::{BTreeSet, HashMap};

#[derive(Debug)]
struct PartitionState {
    generation: u64,
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
    /// Bumped by every `forget`, so a partition owned again starts a new generation.
    generation: u64,
}

impl OffsetTracker {
    /// Records `offset` as in flight; returns the generation to complete it with.
    pub fn begin(&mut self, topic: &str, partition: i32, offset: i64) -> u64 {
        if !self.topics.contains_key(topic) {
            self.topics.insert(topic.to_string(), HashMap::new());
        }
        let generation = self.generation;
        let partitions = self.topics.get_mut(topic).expect("inserted above");
        let state = partitions
            .entry(partition)
            .or_insert_with(|| PartitionState {
                generation,
                in_flight: BTreeSet::new(),
                next: offset,
                committed: offset,
            });
        state.in_flight.insert(offset);
        state.next = state.next.max(offset + 1);
        state.generation
    }

    /// Marks `offset` done; returns the offset to commit (the next one to consume) if the
    /// commit point moved.
    pub fn complete(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        generation: u64,
    ) -> Option<i64> {
        let state = self.topics.get_mut(topic)?.get_mut(&partition)?;
        if state.generation != generation || !state.in_flight.remove(&offset) {
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
        self.generation += 1;
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
        let g = (10..14).map(|o| t.begin("t", 0, o)).last().unwrap();
        assert_eq!(t.complete("t", 0, 12, g), None);
        assert_eq!(t.complete("t", 0, 11, g), None);
        assert_eq!(t.complete("t", 0, 10, g), Some(13));
        assert_eq!(t.complete("t", 0, 13, g), Some(14));
    }

    #[test]
    fn partitions_advance_independently() {
        let mut t = OffsetTracker::default();
        let g0 = t.begin("t", 0, 5);
        let g1 = t.begin("t", 1, 7);
        assert_eq!(t.complete("t", 1, 7, g1), Some(8));
        assert_eq!(t.complete("t", 0, 5, g0), Some(6));
    }

    #[test]
    fn work_of_an_earlier_ownership_completes_into_nothing() {
        let mut t = OffsetTracker::default();
        let old = t.begin("t", 0, 10);
        t.forget("t", 0);
        // The partition comes straight back and offset 10 is delivered again.
        let new = t.begin("t", 0, 10);
        assert_ne!(old, new);
        assert_eq!(t.complete("t", 0, 10, old), None, "the old delivery");
        assert_eq!(t.complete("t", 0, 10, new), Some(11), "the new one");
    }
}
