//! `limits.gpu_work_per_minute`: one slot per call that starts GPU work (a launch, a
//! wake, generation), counted in the store and shared by every server and the front
//! door on it.

use crate::error::{Error, Result};
use crate::store::Store;

/// Takes a slot for `who` (a tool's name, or the front door), or refuses with
/// `RATE_LIMITED` saying when one frees. A `limit` of 0 turns the limit off. A store
/// that cannot count lets the work through, with a warning: the limit guards the GPUs,
/// not the store. Blocking (a store write): call it on the blocking pool.
pub fn take_slot(store: &Store, who: &str, limit: u32) -> Result<()> {
    if limit == 0 {
        return Ok(());
    }
    let now = crate::time::unix_now();
    match store.take_rate_slot("gpu_work", who, limit, 60.0, now) {
        Ok(None) => Ok(()),
        Ok(Some(retry_after_s)) => Err(Error::RateLimited {
            limit: "limits.gpu_work_per_minute".into(),
            retry_after_s,
        }),
        Err(e) => {
            tracing::warn!(who, error = %e, "cannot count GPU work for the rate limit; it goes ahead");
            Ok(())
        }
    }
}
