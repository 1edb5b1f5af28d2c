//! Bounded heavy hitters (Metwally et al.'s Space-Saving): at most `capacity` keys are kept;
//! a new key evicts the smallest and inherits its count (so counts become upper bounds), and
//! memory stays fixed whatever the cardinality of paths or source IPs.

use std::hash::BuildHasher;

use foldhash::fast::FixedState;

/// A small table of counts by key. Searched by a linear scan of the keys' 32-bit hashes: at
/// the capacities used (tens of keys) that is as fast as a hash map and a third of its size.
#[derive(Debug, Clone)]
pub struct TopK {
    capacity: usize,
    /// The hash of each key in `entries`, at the same index.
    hashes: Vec<u32>,
    entries: Vec<(Box<str>, u64)>,
    /// Increments that went to an evicted key's slot: what made counts approximate.
    evictions: u64,
}

fn hash(key: &str) -> u32 {
    FixedState::with_seed(0).hash_one(key) as u32
}

impl TopK {
    pub fn new(capacity: usize) -> Self {
        TopK { capacity: capacity.max(1), hashes: Vec::new(), entries: Vec::new(), evictions: 0 }
    }

    pub fn add(&mut self, key: &str, n: u64) {
        let h = hash(key);
        let mut at = 0;
        while let Some(i) = self.hashes[at..].iter().position(|&x| x == h) {
            let entry = &mut self.entries[at + i];
            if *entry.0 == *key {
                entry.1 += n;
                return;
            }
            at += i + 1;
        }
        if self.entries.len() < self.capacity {
            self.hashes.push(h);
            self.entries.push((key.into(), n));
            return;
        }
        // Space-Saving: the new key takes the smallest one's place and count.
        self.evictions += 1;
        let (i, _) = self
            .entries
            .iter()
            .enumerate()
            .min_by_key(|(_, (_, count))| *count)
            .expect("a full TopK has entries");
        self.hashes[i] = h;
        let entry = &mut self.entries[i];
        *entry = (key.into(), entry.1 + n);
    }

    pub fn merge(&mut self, other: &TopK) {
        for (key, count) in &other.entries {
            self.add(key, *count);
        }
        self.evictions += other.evictions;
    }

    /// The `n` largest, largest first, ties by key for a stable report.
    pub fn top(&self, n: usize) -> Vec<(&str, u64)> {
        let mut all: Vec<(&str, u64)> =
            self.entries.iter().map(|(k, c)| (k.as_ref(), *c)).collect();
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
        assert_eq!(top.entries.len(), 8);
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

    #[test]
    fn keys_whose_hashes_collide_are_told_apart() {
        let mut top = TopK::new(4);
        top.hashes.push(hash("/b"));
        top.entries.push(("/a".into(), 1));
        top.add("/b", 2);
        top.add("/b", 3);
        assert_eq!(top.top(5), [("/b", 5), ("/a", 1)]);
    }
}
