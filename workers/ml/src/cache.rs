//! Models kept in memory, deserialized, by name and version, bounded by the size of their
//! artifacts: the least recently used go first. A version never changes once stored, so an
//! entry is never stale; a new version is simply another entry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::learn::Model;

pub type ModelKey = (String, i32);

pub struct ModelCache {
    capacity_bytes: usize,
    inner: Mutex<Lru>,
}

#[derive(Default)]
struct Lru {
    entries: HashMap<ModelKey, Entry>,
    bytes: usize,
    clock: u64,
}

struct Entry {
    model: Arc<Model>,
    bytes: usize,
    used: u64,
}

impl ModelCache {
    pub fn new(capacity_bytes: usize) -> Self {
        Self {
            capacity_bytes,
            inner: Mutex::default(),
        }
    }

    pub fn get(&self, key: &ModelKey) -> Option<Arc<Model>> {
        let mut lru = self.inner.lock().expect("model cache poisoned");
        lru.clock += 1;
        let now = lru.clock;
        lru.entries.get_mut(key).map(|entry| {
            entry.used = now;
            entry.model.clone()
        })
    }

    /// Keeps `model` (whose artifact was `bytes` long), making room by dropping the least
    /// recently used. A model larger than the whole cache is not kept: the batch that loaded
    /// it uses it, and the next loads it again.
    pub fn insert(&self, key: ModelKey, model: Arc<Model>, bytes: usize) {
        if bytes > self.capacity_bytes {
            return;
        }
        let mut lru = self.inner.lock().expect("model cache poisoned");
        if let Some(old) = lru.entries.remove(&key) {
            lru.bytes -= old.bytes;
        }
        while lru.bytes + bytes > self.capacity_bytes {
            let Some(oldest) = lru
                .entries
                .iter()
                .min_by_key(|(_, entry)| entry.used)
                .map(|(key, _)| key.clone())
            else {
                break;
            };
            let dropped = lru.entries.remove(&oldest).expect("the key was just found");
            lru.bytes -= dropped.bytes;
        }
        lru.clock += 1;
        let used = lru.clock;
        lru.bytes += bytes;
        lru.entries.insert(key, Entry { model, bytes, used });
    }

    /// Bytes of the artifacts kept, and how many models.
    #[cfg(test)]
    fn size(&self) -> (usize, usize) {
        let lru = self.inner.lock().unwrap();
        (lru.bytes, lru.entries.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learn::{train, Algorithm, TrainSpec};

    fn model() -> Arc<Model> {
        let trained = train(&TrainSpec {
            algorithm: Algorithm::LinearRegression,
            task: None,
            params: &serde_json::Map::new(),
            data: r#"{"X": [[1.0], [2.0], [3.0]], "y": [2.0, 4.0, 6.0]}"#,
        })
        .unwrap();
        Arc::new(trained.model)
    }

    #[test]
    fn the_least_recently_used_go_first_and_the_bound_holds() {
        let cache = ModelCache::new(100);
        let m = model();
        cache.insert(("a".into(), 1), m.clone(), 40);
        cache.insert(("b".into(), 1), m.clone(), 40);
        assert!(cache.get(&("a".into(), 1)).is_some());
        cache.insert(("c".into(), 1), m.clone(), 40);
        assert!(
            cache.get(&("b".into(), 1)).is_none(),
            "b was the least recently used"
        );
        assert!(cache.get(&("a".into(), 1)).is_some());
        assert!(cache.get(&("c".into(), 1)).is_some());
        assert_eq!(cache.size(), (80, 2));
        cache.insert(("huge".into(), 1), m.clone(), 101);
        assert!(cache.get(&("huge".into(), 1)).is_none());
        cache.insert(("a".into(), 1), m, 60);
        assert_eq!(cache.size(), (100, 2));
    }
}
