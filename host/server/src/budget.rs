//! [`BodyBudget`]: the memory every request body the server holds whole (read-test-writes,
//! allocations, corruption advisories) may take at once, node-wide (`http.body-memory`).
//!
//! A request takes its share of the budget before the first byte of its body is read, from the
//! length it declares (or the most its endpoint accepts, when it declares none), and holds it
//! until its work is done, the redo record a read-test-write becomes included. A body counts
//! [`CHARGE`] times its length: the bytes as received, the values they decode into, and the
//! redo record the writes become (each alive at once at some point). A request that cannot
//! have its share within [`BODY_WAIT`] is answered 503 without its body being read, so however
//! many bodies arrive at once, and whatever holds them up (a busy storage index), the memory
//! they take stays within the budget.
//!
//! Immutable share data (PATCH) is not held whole and takes no budget: the server holds at
//! most one chunk of it per request, handed to the backend as it fills.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// How many times its length a body held whole counts against the budget.
pub const CHARGE: u64 = 3;
/// The longest a request waits for its share of the budget.
pub const BODY_WAIT: Duration = Duration::from_secs(30);
/// The budget is counted in units of this many bytes (a semaphore permit each).
const UNIT: u64 = 64 * 1024;

/// The node-wide budget for bodies held whole.
#[derive(Debug, Clone)]
pub(crate) struct BodyBudget {
    units: Arc<Semaphore>,
    total: u32,
}

/// A request's share of the budget, given back when dropped.
#[derive(Debug)]
pub(crate) struct BodyPermit {
    _units: OwnedSemaphorePermit,
}

impl BodyBudget {
    /// A budget of `bytes` (at least one unit).
    pub(crate) fn new(bytes: u64) -> Self {
        let total = u32::try_from(bytes.div_ceil(UNIT).max(1)).unwrap_or(u32::MAX >> 4);
        BodyBudget { units: Arc::new(Semaphore::new(total as usize)), total }
    }

    /// The units a body of `len` bytes takes: [`CHARGE`] times its length, at least one unit,
    /// at most the whole budget (so the largest body the endpoint accepts can still pass, alone).
    fn units_for(&self, len: u64) -> u32 {
        let units = len.saturating_mul(CHARGE).div_ceil(UNIT).max(1);
        u32::try_from(units).unwrap_or(u32::MAX).min(self.total)
    }

    /// Take the share of a body of `len` bytes, waiting at most `wait`; 503 if it does not come.
    pub(crate) async fn take(&self, len: u64, wait: Duration) -> Result<BodyPermit, ApiError> {
        let units = self.units_for(len);
        match tokio::time::timeout(wait, self.units.clone().acquire_many_owned(units)).await {
            Ok(Ok(permit)) => Ok(BodyPermit { _units: permit }),
            // The semaphore is never closed; either way the request cannot go on now.
            Ok(Err(_)) | Err(_) => Err(ApiError::BodiesFull),
        }
    }

    /// Bytes of the budget in use now.
    #[cfg(test)]
    pub(crate) fn in_use(&self) -> u64 {
        u64::from(self.total).saturating_sub(self.units.available_permits() as u64) * UNIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[tokio::test(start_paused = true)]
    async fn bodies_past_the_budget_wait_and_then_are_refused() {
        let budget = BodyBudget::new(10 << 20);
        // 3 MiB counts 9 MiB: one fits, a second does not.
        let first = budget.take(3 << 20, BODY_WAIT).await.unwrap();
        assert_eq!(budget.in_use(), 9 << 20);
        let refused = budget.take(3 << 20, Duration::from_secs(1)).await.unwrap_err();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(budget.in_use(), 9 << 20, "a refused request holds nothing");
        // One that waits gets its share when the first gives it back.
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.take(3 << 20, BODY_WAIT).await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(first);
        waiting.await.unwrap().unwrap();
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn the_largest_body_takes_at_most_the_whole_budget_and_the_smallest_one_unit() {
        let budget = BodyBudget::new(256 << 20);
        assert_eq!(budget.units_for(128 << 20), budget.total);
        assert_eq!(budget.units_for(0), 1);
        assert_eq!(budget.units_for(u64::MAX), budget.total);
        assert_eq!(BodyBudget::new(0).total, 1);
    }
}
