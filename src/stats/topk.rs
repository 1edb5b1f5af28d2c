//! Bounded heavy hitters (Metwally et al.'s Space-Saving): at most `capacity` keys are kept;
//! a new key evicts the smallest and inherits its count as an error bound, so memory stays
//! fixed whatever the cardinality of paths or source IPs.

use std::collections::HashMap;

use foldhash::fast::RandomState;

#[derive(Debug, Clone)]
pub struct TopK {
    capacity: usize,
    /// key -> (count, overestimate bound)
    counts: HashMap<Box<str>, (u64, u64), RandomState>,
    /// Increments that went to an evicted key's slot: what the bound made approximate.
    evictions: u64,
}

impl TopK {
    pub fn new(capacity: usize) -> Self {
        TopK { capacity: capacity.max(1), counts: HashMap::default(), evictions: 0 }
    }

    pub fn add(&mut self, key: &str, n: u64) {
        if let Some((count, _)) = self.counts.get_mut(key) {
            *count += n;
            return;
        }
        if self.counts.len() < self.capacity {
            self.counts.insert(key.into(), (n, 0));
            return;
        }
        self.evictions += 1;
        let (min_key, min_count) = self
            .counts
            .iter()
            .min_by_key(|(_, (count, _))| *count)
            .map(|(k, (c, _))| (k.clone(), *c))
            .expect("a full TopK has entries");
        self.counts.remove(&min_key);
        self.counts.insert(key.into(), (min_count + n, min_count));
    }

    pub fn merge(&mut self, other: &TopK) {
        for (key, (count, _)) in &other.counts {
            self.add(key, *count);
        }
        self.evictions += other.evictions;
    }

    /// The `n` largest, largest first, ties by key for a stable report.
    pub fn top(&self, n: usize) -> Vec<(&str, u64)> {
        let mut all: Vec<(&str, u64)> =
            self.counts.iter().map(|(k, (c, _))| (k.as_ref(), *c)).collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        all.truncate(n);
        all
    }

    /// Whether every count is exact (no key was ever evicted).
    pub fn is_exact(&self) -> bool {
        self.evictions == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_below_capacity() {
        let mut top = TopK::new(4);
        for key in ["/a", "/b", "/a", "/c", "/a", "/b"] {
            top.add(key, 1);
        }
        assert_eq!(top.top(2), [("/a", 3), ("/b", 2)]);
        assert!(top.is_exact());
    }

    #[test]
    fn heavy_hitter_survives_a_flood_of_rare_keys() {
        let mut top = TopK::new(8);
        for i in 0..10_000 {
            top.add("/hot", 1);
            top.add(&format!("/rare/{i}"), 1);
        }
        assert_eq!(top.top(1)[0].0, "/hot");
        assert!(top.top(1)[0].1 >= 10_000);
        assert!(!top.is_exact());
        assert_eq!(top.counts.len(), 8);
    }

    #[test]
    fn merge_adds_counts() {
        let mut a = TopK::new(4);
        let mut b = TopK::new(4);
        a.add("x", 2);
        b.add("x", 3);
        b.add("y", 1);
        a.merge(&b);
        assert_eq!(a.top(5), [("x", 5), ("y", 1)]);
    }
}
