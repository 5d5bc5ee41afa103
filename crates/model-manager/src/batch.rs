//! What `load-model` and `unload-model` share: one model id or a batch of them.

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;
use vllm_core::{Error, Result};

/// The answer of `load-model` (or of `unload-model`): one model, or `results` for a batch.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Batch<T> {
    One(T),
    Many {
        /// One answer per model, in order; each has its own `success`.
        results: Vec<Value>,
    },
}

pub(crate) fn ids_of(one: &Option<String>, many: &Option<Vec<String>>) -> Result<Vec<String>> {
    match (one, many) {
        (Some(_), Some(_)) => Err(Error::invalid(
            "model_ids",
            "give model_id or model_ids, not both",
        )),
        (Some(id), None) => Ok(vec![id.clone()]),
        (None, Some(ids)) if !ids.is_empty() && ids.len() <= 32 => Ok(ids.clone()),
        (None, Some(_)) => Err(Error::invalid("model_ids", "give 1 to 32 model ids")),
        (None, None) => Err(Error::invalid(
            "model_id",
            "missing: give the model to act on",
        )),
    }
}

pub(crate) async fn batch<F, Fut, T>(ids: Vec<String>, single: bool, f: F) -> Result<Batch<T>>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
    T: Serialize,
{
    if single {
        return Ok(Batch::One(
            f(ids.into_iter().next().unwrap_or_default()).await?,
        ));
    }
    let mut results = Vec::new();
    for id in ids {
        results.push(match f(id).await {
            Ok(v) => {
                vllm_mcp_kit::envelope::with_success(serde_json::to_value(v).unwrap_or_default())
            }
            Err(e) => vllm_mcp_kit::envelope::error_json(&e),
        });
    }
    Ok(Batch::Many { results })
}
