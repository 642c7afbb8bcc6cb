//! Per-connection inbound rate limiting (`maxInboundRate`).

use tokio::time::Instant;

/// Token bucket for the per-connection inbound message rate.
pub struct Bucket {
    capacity: f64,
    tokens: f64,
    rate: f64,
    last: Instant,
}

impl Bucket {
    pub fn new(per_second: u32) -> Self {
        let rate = f64::from(per_second.max(1));
        Bucket {
            capacity: rate,
            tokens: rate,
            rate,
            last: Instant::now(),
        }
    }

    /// Takes `n` tokens if available.
    pub fn take(&mut self, n: usize) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        if self.tokens >= n as f64 {
            self.tokens -= n as f64;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_refills_over_time() {
        let mut b = Bucket::new(2);
        assert!(b.take(2));
        assert!(!b.take(1));
        tokio::time::advance(std::time::Duration::from_millis(600)).await;
        assert!(b.take(1));
        assert!(!b.take(1));
    }
}
