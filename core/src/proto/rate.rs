//! Per-peer rate limits as token buckets, without I/O: time comes in as `now_ms`.

use std::collections::BTreeMap;

/// A token bucket: `capacity` tokens, refilled at `per_second`.
#[derive(Clone, Debug)]
pub struct Bucket {
    tokens: f64,
    last_ms: u64,
}

/// Token buckets for many peers, with a bound on how many peers are tracked.
#[derive(Debug)]
pub struct RateLimiter<K: Ord> {
    capacity: f64,
    per_second: f64,
    max_peers: usize,
    buckets: BTreeMap<K, Bucket>,
}

impl<K: Ord + Clone> RateLimiter<K> {
    /// `capacity` requests in a burst, `per_second` sustained, at most `max_peers` tracked
    /// (beyond that the fullest buckets are forgotten first: they had the most room left).
    pub fn new(capacity: u32, per_second: u32, max_peers: usize) -> Self {
        Self {
            capacity: f64::from(capacity),
            per_second: f64::from(per_second),
            max_peers,
            buckets: BTreeMap::new(),
        }
    }

    /// Takes one token for `key`; `false` means over the limit.
    pub fn allow(&mut self, key: &K, now_ms: u64) -> bool {
        if !self.buckets.contains_key(key) && self.buckets.len() >= self.max_peers {
            self.evict(now_ms);
        }
        let capacity = self.capacity;
        let per_second = self.per_second;
        let bucket = self.buckets.entry(key.clone()).or_insert(Bucket {
            tokens: capacity,
            last_ms: now_ms,
        });
        refill(bucket, capacity, per_second, now_ms);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How many peers are tracked.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// True when no peer is tracked.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    fn evict(&mut self, now_ms: u64) {
        let (capacity, per_second) = (self.capacity, self.per_second);
        for bucket in self.buckets.values_mut() {
            refill(bucket, capacity, per_second, now_ms);
        }
        // Full buckets carry no information: forgetting them changes nothing.
        self.buckets.retain(|_, b| b.tokens < capacity);
        while self.buckets.len() >= self.max_peers {
            if self.buckets.pop_first().is_none() {
                break;
            }
        }
    }
}

fn refill(bucket: &mut Bucket, capacity: f64, per_second: f64, now_ms: u64) {
    let elapsed = now_ms.saturating_sub(bucket.last_ms) as f64 / 1000.0;
    bucket.tokens = (bucket.tokens + elapsed * per_second).min(capacity);
    bucket.last_ms = bucket.last_ms.max(now_ms);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_sustained_rate() {
        let mut limiter = RateLimiter::new(10, 5, 100);
        let allowed = (0..20).filter(|_| limiter.allow(&"mallory", 0)).count();
        assert_eq!(allowed, 10);
        assert!(!limiter.allow(&"mallory", 100));
        assert!(
            limiter.allow(&"mallory", 200),
            "one token after 200 ms at 5/s"
        );
        // Others are not affected by one peer's flood.
        assert!(limiter.allow(&"alice", 200));
        // A minute later the bucket is full again, not more.
        let allowed = (0..20)
            .filter(|_| limiter.allow(&"mallory", 60_200))
            .count();
        assert_eq!(allowed, 10);
    }

    #[test]
    fn tracked_peers_are_bounded() {
        let mut limiter = RateLimiter::new(2, 1, 8);
        for peer in 0..1000u32 {
            limiter.allow(&peer, 0);
            limiter.allow(&peer, 0);
            assert!(limiter.len() <= 8);
        }
    }
}
