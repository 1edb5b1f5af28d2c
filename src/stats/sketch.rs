//! Latency distributions with 1 % relative error in little memory: logarithmic buckets as in
//! DDSketch (Masson, Rim and Lee, VLDB 2019), bucket `k` holding values in `(γ^(k-1), γ^k]`.
//!
//! Most sketches are small — a window slot of one host sees a handful of requests — so the
//! buckets are kept sparse, as sorted `(key, count)` pairs, and turn into a dense run of counts
//! only when that is smaller. Counts are 32-bit: a sparse bucket past 2³² makes the buckets
//! dense, and a dense one keeps its high half in a short list of carries. Keys lie in a fixed range (−690 to 1 497), so a sketch
//! never holds more than about 2 200 counts whatever it is fed.

/// Relative accuracy of every estimate.
pub const RELATIVE_ACCURACY: f64 = 0.01;
/// γ = (1 + α) / (1 − α).
const GAMMA: f64 = (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY);
/// Values at or below one nanosecond count as zero (Envoy writes 0 ms for fast requests).
const MIN_INDEXED_MS: f64 = 1e-6;
/// Above about 300 years everything shares the top bucket (the maximum stays exact).
const MAX_INDEXED_MS: f64 = 1e13;
/// Sparse pairs kept before the buckets may go dense.
const MIN_DENSE: usize = 16;
/// Sparse pairs kept before the buckets go dense anyway.
const MAX_SPARSE: usize = 128;

/// ln γ, written out (`f64::ln` is not const); a test checks it against `GAMMA.ln()`.
const LN_GAMMA: f64 = 0.020_000_666_706_669_435;

fn key_of(ms: f64) -> i16 {
    let ms = ms.min(MAX_INDEXED_MS);
    // Within i16: ln(1e-6)/ln γ ≈ −684, ln(1e13)/ln γ ≈ 1 482.
    (ms.ln() / LN_GAMMA).ceil() as i16
}

/// The estimate for bucket `key`: within α of every value the bucket holds.
fn value_of(key: i16) -> f64 {
    2.0 * GAMMA.powi(i32::from(key)) / (GAMMA + 1.0)
}

#[derive(Debug, Clone)]
enum Buckets {
    /// `(key, count)` sorted by key; a count past 32 bits makes the buckets dense.
    Sparse(Vec<(i16, u32)>),
    /// Boxed: a sketch that is only ever sparse (most window cells) stays small.
    Dense(Box<Dense>),
}

/// Counts of keys `first..first + low.len()`: their low 32 bits, and the high ones of the
/// buckets that have them as `(key, high)` sorted by key.
#[derive(Debug, Clone)]
struct Dense {
    first: i16,
    low: Vec<u32>,
    high: Vec<(i16, u32)>,
}

impl Dense {
    /// Counts for the keys of sorted `pairs`.
    fn of(pairs: &[(i16, u32)]) -> Dense {
        let first = pairs[0].0;
        let span = (pairs[pairs.len() - 1].0 - first) as usize + 1;
        let mut dense = Dense { first, low: vec![0; span], high: Vec::new() };
        pairs.iter().for_each(|&(key, n)| dense.add(key, n.into()));
        dense
    }

    fn add(&mut self, key: i16, n: u64) {
        if key < self.first {
            let grow = (self.first - key) as usize;
            self.low.splice(0..0, std::iter::repeat_n(0, grow));
            self.first = key;
        }
        let i = (key - self.first) as usize;
        if i >= self.low.len() {
            self.low.resize(i + 1, 0);
        }
        let sum = u64::from(self.low[i]) + n;
        self.low[i] = sum as u32;
        let carry = (sum >> 32) as u32;
        if carry > 0 {
            match self.high.binary_search_by_key(&key, |(k, _)| *k) {
                Ok(j) => self.high[j].1 += carry,
                Err(j) => self.high.insert(j, (key, carry)),
            }
        }
    }

    fn for_each(&self, mut each: impl FnMut(i16, u64)) {
        let mut high = self.high.iter().peekable();
        for (key, &low) in (self.first..).zip(&self.low) {
            let top = high.next_if(|(k, _)| *k == key).map_or(0, |(_, h)| u64::from(*h));
            each(key, top << 32 | u64::from(low));
        }
    }
}

/// A latency distribution in milliseconds.
#[derive(Clone)]
pub struct LatencySketch {
    count: u64,
    zeros: u64,
    min: f64,
    max: f64,
    buckets: Buckets,
}

impl std::fmt::Debug for LatencySketch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencySketch").field("count", &self.count).finish()
    }
}

impl Default for LatencySketch {
    fn default() -> Self {
        LatencySketch {
            count: 0,
            zeros: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            buckets: Buckets::Sparse(Vec::new()),
        }
    }
}

impl LatencySketch {
    /// Counts one value; a value that is not a number (or infinite) is not a latency and is
    /// left out.
    pub fn add(&mut self, ms: f64) {
        if !ms.is_finite() {
            return;
        }
        self.count += 1;
        self.min = self.min.min(ms);
        self.max = self.max.max(ms);
        if ms <= MIN_INDEXED_MS {
            self.zeros += 1;
        } else {
            self.add_key(key_of(ms), 1);
        }
    }

    fn add_key(&mut self, key: i16, n: u64) {
        match &mut self.buckets {
            Buckets::Sparse(pairs) => {
                let at = pairs.binary_search_by_key(&key, |(k, _)| *k);
                let sum = n + at.map_or(0, |i| u64::from(pairs[i].1));
                let Ok(sum) = u32::try_from(sum) else {
                    let mut dense = Dense::of(pairs);
                    dense.add(key, n);
                    self.buckets = Buckets::Dense(Box::new(dense));
                    return;
                };
                match at {
                    Ok(i) => pairs[i].1 = sum,
                    Err(i) => pairs.insert(i, (key, sum)),
                }
                let span = (pairs[pairs.len() - 1].0 - pairs[0].0) as usize + 1;
                // A dense count is half a sparse pair; a few pairs stay sparse however close,
                // as the next value may be far off.
                if pairs.len() > MAX_SPARSE || (pairs.len() >= MIN_DENSE && span <= pairs.len() * 2)
                {
                    self.buckets = Buckets::Dense(Box::new(Dense::of(pairs)));
                }
            }
            Buckets::Dense(dense) => dense.add(key, n),
        }
    }

    pub fn merge(&mut self, other: &LatencySketch) {
        if other.count == 0 {
            return;
        }
        self.count += other.count;
        self.zeros += other.zeros;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        match &other.buckets {
            Buckets::Sparse(pairs) => {
                pairs.iter().for_each(|&(key, n)| self.add_key(key, n.into()));
            }
            Buckets::Dense { .. } => other.for_each_bucket(|key, n| {
                if n > 0 {
                    self.add_key(key, n);
                }
            }),
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn max(&self) -> Option<f64> {
        (self.count > 0).then_some(self.max)
    }

    /// The value at nearest rank ⌈q·n⌉ (the usual definition of a percentile), within
    /// [`RELATIVE_ACCURACY`]; the top rank is the exact maximum.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.count;
        if n == 0 {
            return None;
        }
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
        if rank == n {
            return Some(self.max);
        }
        let mut seen = self.zeros;
        let estimate = if rank <= seen {
            0.0
        } else {
            let mut found = None;
            self.for_each_bucket(|key, count| {
                seen += count;
                if found.is_none() && rank <= seen {
                    found = Some(value_of(key));
                }
            });
            found.unwrap_or(self.max)
        };
        // The true value lies within [min, max], both exact; the bucket's estimate may not.
        Some(estimate.clamp(self.min, self.max))
    }

    fn for_each_bucket(&self, mut each: impl FnMut(i16, u64)) {
        match &self.buckets {
            Buckets::Sparse(pairs) => pairs.iter().for_each(|&(key, n)| each(key, n.into())),
            Buckets::Dense(dense) => dense.for_each(each),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Buckets a sketch can ever use, from the first key above zero to the top key.
    const MAX_BUCKETS: usize = 2_200;

    fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
        let n = sorted.len();
        sorted[((q * n as f64).ceil() as usize).clamp(1, n) - 1]
    }

    fn assert_close(sketch: &LatencySketch, sorted: &[f64]) {
        for q in [0.01, 0.25, 0.5, 0.9, 0.99, 0.999] {
            let exact = nearest_rank(sorted, q);
            let got = sketch.quantile(q).expect("not empty");
            assert!((got - exact).abs() <= exact * RELATIVE_ACCURACY, "q={q} {got} {exact}");
        }
        assert_eq!(sketch.max(), sorted.last().copied());
    }

    #[test]
    fn ln_gamma_is_the_logarithm_of_gamma() {
        assert!((LN_GAMMA - GAMMA.ln()).abs() < 1e-15, "{}", GAMMA.ln());
    }

    #[test]
    fn quantiles_are_nearest_rank_within_one_percent() {
        let mut sketch = LatencySketch::default();
        let values: Vec<f64> = (1..=1001).map(|v| f64::from(v) * 1.7).collect();
        values.iter().for_each(|v| sketch.add(*v));
        assert!(matches!(sketch.buckets, Buckets::Dense(_)));
        assert_close(&sketch, &values);
        assert_eq!(LatencySketch::default().quantile(0.5), None);
    }

    #[test]
    fn few_values_stay_sparse_and_exact_enough() {
        let mut sketch = LatencySketch::default();
        let values = [0.0, 3.0, 17.0, 250.0, 9_000.0];
        values.iter().for_each(|v| sketch.add(*v));
        assert!(matches!(&sketch.buckets, Buckets::Sparse(p) if p.len() == 4));
        assert_close(&sketch, &values);
        assert_eq!(sketch.quantile(0.2), Some(0.0), "zero is its own bucket");
    }

    #[test]
    fn merging_equals_adding_everything_to_one() {
        let values: Vec<f64> = (0..5_000).map(|i| f64::from(i % 997) * 0.37 + 0.1).collect();
        let mut one = LatencySketch::default();
        let mut parts = [LatencySketch::default(), LatencySketch::default()];
        for (i, v) in values.iter().enumerate() {
            one.add(*v);
            // One part stays sparse (few distinct values), the other goes dense.
            parts[usize::from(i % 50 == 0)].add(*v);
        }
        let [mut a, b] = parts;
        a.merge(&b);
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        for q in [0.1, 0.5, 0.9, 0.99] {
            assert_eq!(a.quantile(q), one.quantile(q));
        }
        assert_close(&a, &sorted);
        assert_eq!(a.count(), 5_000);
    }

    #[test]
    fn extreme_and_non_numeric_values_stay_bounded() {
        let mut sketch = LatencySketch::default();
        for v in [1e-300, 1e-7, 1e300, f64::MAX, 5.0, f64::NAN, f64::INFINITY, -3.0] {
            sketch.add(v);
        }
        assert_eq!(sketch.count(), 6, "NaN and infinity are not latencies");
        let buckets = match &sketch.buckets {
            Buckets::Sparse(p) => p.len(),
            Buckets::Dense(dense) => dense.low.len(),
        };
        assert!(buckets <= MAX_BUCKETS, "{buckets}");
        let span = key_of(MAX_INDEXED_MS * 2.0) - key_of(MIN_INDEXED_MS * 1.000_001) + 1;
        assert!(span as usize <= MAX_BUCKETS, "{span}");
        assert_eq!(sketch.quantile(0.5), Some(0.0), "three values count as zero");
        assert_eq!(sketch.max(), Some(f64::MAX), "the maximum is exact");
    }

    /// A sketch of `u32::MAX` values of 50 ms.
    fn heavy() -> LatencySketch {
        let n = u32::MAX;
        let buckets = Buckets::Sparse(vec![(key_of(50.0), n)]);
        LatencySketch { count: n.into(), zeros: 0, min: 50.0, max: 50.0, buckets }
    }

    #[test]
    fn a_sparse_count_past_32_bits_goes_dense() {
        let mut sketch = LatencySketch::default();
        sketch.merge(&heavy());
        assert!(matches!(&sketch.buckets, Buckets::Sparse(_)));
        sketch.merge(&heavy());
        assert!(matches!(&sketch.buckets, Buckets::Dense(d) if d.high.len() == 1));
        let mut total = 0;
        sketch.for_each_bucket(|_, n| total += n);
        assert_eq!((total, sketch.count()), (2 * u64::from(u32::MAX), 2 * u64::from(u32::MAX)));
    }

    #[test]
    fn dense_counts_carry_past_32_bits() {
        let mut sketch = LatencySketch::default();
        (1..=100).for_each(|v| sketch.add(f64::from(v)));
        for _ in 0..3 {
            sketch.merge(&heavy());
        }
        assert!(matches!(&sketch.buckets, Buckets::Dense(d) if d.high.len() == 1));
        let mut total = 0;
        sketch.for_each_bucket(|_, n| total += n);
        let want = 3 * u64::from(u32::MAX) + 100;
        assert_eq!((total, sketch.count()), (want, want));
        let median = sketch.quantile(0.5).unwrap();
        assert!((median - 50.0).abs() <= 50.0 * RELATIVE_ACCURACY, "{median}");
        assert_eq!(sketch.quantile(1e-12), Some(1.0), "the first rank");
    }
}
