//! Bounded list answers: a default cap, a `limit` argument, and a cursor where more exists.
//!
//! Every list or history tool takes [`PageParams`] (flattened into its parameters) and
//! answers with a [`Page`]'s fields, so no answer grows without bound as a fleet does.
//! The cursor is opaque to clients: an offset into the ordered list, tagged so that a
//! cursor from another list is refused instead of silently misread.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use vllm_core::config::LimitsConfig;
use vllm_core::{Error, Result};

/// Paging arguments shared by list tools.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct PageParams {
    /// Most items to return (default and maximum set in the config's [limits]).
    pub limit: Option<u32>,
    /// `next_cursor` from a previous answer, to continue where it stopped.
    pub cursor: Option<String>,
}

/// One page of a list.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Items in the whole list.
    pub total: usize,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Cuts one page out of an ordered list. `list` names the list in the cursor.
pub fn paginate<T>(
    items: Vec<T>,
    params: &PageParams,
    limits: &LimitsConfig,
    list: &str,
) -> Result<Page<T>> {
    let limit = match params.limit {
        None => limits.list_default,
        Some(0) => return Err(Error::invalid("limit", "must be at least 1")),
        Some(n) if n > limits.list_max => {
            return Err(Error::invalid(
                "limit",
                format!(
                    "{n} is above the maximum of {} (limits.list_max)",
                    limits.list_max
                ),
            ));
        }
        Some(n) => n,
    } as usize;
    let start = match &params.cursor {
        None => 0,
        Some(c) => c
            .strip_prefix(list)
            .and_then(|r| r.strip_prefix(':'))
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| {
                Error::invalid("cursor", format!("`{c}` is not a cursor of this list"))
            })?,
    };
    let total = items.len();
    let next_cursor = (start + limit < total).then(|| format!("{list}:{}", start + limit));
    let items = items.into_iter().skip(start).take(limit).collect();
    Ok(Page {
        items,
        total,
        next_cursor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_cover_the_list_once() {
        let limits = LimitsConfig {
            list_default: 3,
            list_max: 10,
            ..LimitsConfig::default()
        };
        let mut seen = Vec::new();
        let mut params = PageParams::default();
        loop {
            let p = paginate((0..8).collect(), &params, &limits, "models").unwrap();
            assert_eq!(p.total, 8);
            seen.extend(p.items);
            match p.next_cursor {
                Some(c) => params.cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, (0..8).collect::<Vec<_>>());
    }

    #[test]
    fn bad_paging_arguments() {
        let limits = LimitsConfig::default();
        let p = |limit, cursor: Option<&str>| PageParams {
            limit,
            cursor: cursor.map(String::from),
        };
        for (params, field) in [
            (p(Some(0), None), "limit"),
            (p(Some(5000), None), "limit"),
            (p(None, Some("states:3")), "cursor"),
            (p(None, Some("models:x")), "cursor"),
        ] {
            let e = paginate(vec![1, 2, 3], &params, &limits, "models").unwrap_err();
            assert_eq!(e.details()["field"], field);
        }
    }
}
