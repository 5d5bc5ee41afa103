//! What each front door (gateway) passes on, per model, kept in the store so every
//! instance sees it: `unload-model` waits for (then refuses) a model with requests in
//! flight through any door, and list-models and get-model-info show a model's use.
//!
//! A door republishes its figures while it serves; rows older than [`FRESH_SECONDS`]
//! belong to a door that stopped or died and are ignored.
//!
//! The models pinned at run time (the page's pin button) are kept here too: a pinned
//! model is never swapped out to make room, as a catalog entry with `pinned = true`.

use crate::error::Result;
use crate::store::Store;
use crate::store::rusqlite::params;
use serde::Serialize;

/// A door's row counts for this long after its last publication.
pub const FRESH_SECONDS: f64 = 5.0;

/// One model's use through one door, as the door publishes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    pub model_id: String,
    pub in_flight: u32,
    pub waiting: u32,
    pub last_used: Option<f64>,
}

/// One model's use through every live door together.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct DoorUse {
    /// The front door's URL (the first door's, when several serve).
    pub url: String,
    /// Requests passed on and not yet answered in full.
    pub in_flight: u32,
    /// Requests waiting for the model to start.
    pub waiting: u32,
    /// The last request through a door, RFC 3339.
    pub last_used: Option<String>,
}

/// Replaces `holder`'s rows with `rows`, in one transaction, stamped now.
pub fn publish(store: &Store, holder: &str, url: &str, rows: &[Published]) -> Result<()> {
    let now = crate::time::unix_now();
    store.write(|tx| -> Result<()> {
        tx.execute("DELETE FROM door_use WHERE holder = ?1", [holder])?;
        let mut st = tx.prepare(
            "INSERT INTO door_use (model_id, holder, url, in_flight, waiting, last_used, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for r in rows {
            st.execute(params![
                r.model_id,
                holder,
                url,
                r.in_flight,
                r.waiting,
                r.last_used,
                now
            ])?;
        }
        Ok(())
    })
}

/// Removes `holder`'s rows (a door that stops serving).
pub fn withdraw(store: &Store, holder: &str) -> Result<()> {
    store.write(|tx| -> Result<()> {
        tx.execute("DELETE FROM door_use WHERE holder = ?1", [holder])?;
        Ok(())
    })
}

/// Every model's use through the live doors, by model id.
pub fn all(store: &Store) -> Result<Vec<(String, DoorUse)>> {
    let fresh = crate::time::unix_now() - FRESH_SECONDS;
    store.read(|c| -> Result<Vec<(String, DoorUse)>> {
        let mut st = c.prepare(
            "SELECT model_id, MIN(url), SUM(in_flight), SUM(waiting), MAX(last_used) \
             FROM door_use WHERE updated_at >= ?1 GROUP BY model_id ORDER BY model_id",
        )?;
        let rows = st.query_map([fresh], |r| {
            let last: Option<f64> = r.get(4)?;
            Ok((
                r.get::<_, String>(0)?,
                DoorUse {
                    url: r.get(1)?,
                    in_flight: r.get(2)?,
                    waiting: r.get(3)?,
                    last_used: last.map(|t| crate::time::format_rfc3339(t as i64)),
                },
            ))
        })?;
        Ok(rows.collect::<std::result::Result<Vec<_>, _>>()?)
    })
}

/// One model's use through the live doors, if any door passed it a request.
pub fn of_model(store: &Store, model_id: &str) -> Result<Option<DoorUse>> {
    Ok(all(store)?
        .into_iter()
        .find(|(m, _)| m == model_id)
        .map(|(_, u)| u))
}

/// The store's `meta` key holding the models pinned at run time, a JSON array.
const PINS_KEY: &str = "gateway.pins";

/// The models pinned at run time, sorted.
pub fn pins(store: &Store) -> Result<Vec<String>> {
    Ok(decode_pins(store.meta_get(PINS_KEY)?))
}

/// The stored pins; a value that does not decode pins nothing (the next pin rewrites it).
fn decode_pins(text: Option<String>) -> Vec<String> {
    text.and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// Pins `model_id` (or unpins it); returns the pins after. Read and written in one
/// transaction: two doors pinning at once both count.
pub fn set_pinned(store: &Store, model_id: &str, pinned: bool) -> Result<Vec<String>> {
    use crate::store::rusqlite::OptionalExtension;
    store.write(|tx| {
        let text: Option<String> = tx
            .query_row("SELECT value FROM meta WHERE key = ?1", [PINS_KEY], |r| {
                r.get(0)
            })
            .optional()?;
        let mut all = decode_pins(text);
        all.retain(|m| m != model_id);
        if pinned {
            all.push(model_id.to_string());
            all.sort();
        }
        let text =
            serde_json::to_string(&all).map_err(|e| crate::Error::Internal(e.to_string()))?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [PINS_KEY, text.as_str()],
        )?;
        Ok(all)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(model: &str, in_flight: u32) -> Published {
        Published {
            model_id: model.into(),
            in_flight,
            waiting: 0,
            last_used: Some(1_000.0),
        }
    }

    #[test]
    fn doors_add_up_replace_their_own_rows_and_withdraw() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        publish(
            &store,
            "a",
            "http://127.0.0.1:4000",
            &[row("m", 2), row("n", 0)],
        )
        .unwrap();
        publish(&store, "b", "http://127.0.0.1:4001", &[row("m", 1)]).unwrap();
        let m = of_model(&store, "m").unwrap().unwrap();
        assert_eq!((m.in_flight, m.url.as_str()), (3, "http://127.0.0.1:4000"));
        publish(&store, "a", "http://127.0.0.1:4000", &[row("m", 0)]).unwrap();
        assert_eq!(of_model(&store, "m").unwrap().unwrap().in_flight, 1);
        assert_eq!(of_model(&store, "n").unwrap(), None, "a's old row is gone");
        withdraw(&store, "b").unwrap();
        assert_eq!(of_model(&store, "m").unwrap().unwrap().in_flight, 0);
        // A door that stopped publishing long ago no longer counts.
        store
            .write(|tx| -> Result<()> {
                tx.execute("UPDATE door_use SET updated_at = 0", [])?;
                Ok(())
            })
            .unwrap();
        assert!(all(&store).unwrap().is_empty());
    }

    #[test]
    fn pins_are_kept_sorted_once_each_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = Store::open(&path).unwrap();
        assert!(pins(&store).unwrap().is_empty());
        set_pinned(&store, "b", true).unwrap();
        set_pinned(&store, "a", true).unwrap();
        assert_eq!(set_pinned(&store, "b", true).unwrap(), ["a", "b"]);
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(set_pinned(&store, "a", false).unwrap(), ["b"]);
        assert_eq!(pins(&store).unwrap(), ["b"]);
    }
}
