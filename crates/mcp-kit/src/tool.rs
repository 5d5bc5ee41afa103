//! The tool registry: typed handlers, inline JSON schemas, tiers and annotations.
//!
//! We register tools here rather than with rmcp's `#[tool]` macros so that one code path
//! owns what every call must do: refuse at the permission gate before any side effect,
//! deserialize arguments into *our* error shape (`INVALID_ARGUMENT` naming the field),
//! put the JSON answer in the text content (Crush reads only that) and in
//! `structuredContent`, and audit the call.

use crate::context::Kit;
use crate::envelope;
use crate::service::Service;
use futures_util::future::BoxFuture;
use rmcp::model::{JsonObject, ProgressNotificationParam, ProgressToken, Tool, ToolAnnotations};
use rmcp::service::{Peer, RoleServer};
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::future::Future;
use std::sync::Arc;
use vllm_core::config::Tier;
use vllm_core::{Error, Result};

/// What a tool is, apart from its code.
#[derive(Debug, Clone, Copy)]
pub struct ToolDef {
    /// The spec's name (`load-model`); Crush shows it as `mcp_<server>_<name>`.
    pub name: &'static str,
    /// What the model reads to decide when to call it.
    pub description: &'static str,
    /// The permission tier of a plain call.
    pub tier: Tier,
    /// Boolean arguments that, when `true`, make the call [`Tier::Destructive`]
    /// (`force`, `replace`, ...).
    pub raising_args: &'static [&'static str],
    /// The call changes nothing.
    pub read_only: bool,
    /// The call may destroy data or interrupt work.
    pub destructive: bool,
    /// Repeating the call with the same arguments has no further effect.
    pub idempotent: bool,
    /// The call starts GPU work (a launch, a wake, generation): it takes a slot of
    /// `limits.gpu_work_per_minute` before it runs.
    pub gpu_work: bool,
}

impl ToolDef {
    /// A read-only, idempotent tool.
    pub const fn read(name: &'static str, description: &'static str) -> ToolDef {
        ToolDef {
            name,
            description,
            tier: Tier::Read,
            raising_args: &[],
            read_only: true,
            destructive: false,
            idempotent: true,
            gpu_work: false,
        }
    }

    /// A tool that changes something: tier control, not idempotent unless said.
    pub const fn control(name: &'static str, description: &'static str) -> ToolDef {
        ToolDef {
            tier: Tier::Control,
            read_only: false,
            idempotent: false,
            ..ToolDef::read(name, description)
        }
    }

    /// The tier of one call, given its arguments.
    pub fn tier_for(&self, args: &Value) -> Tier {
        let raised = self
            .raising_args
            .iter()
            .any(|a| args.get(a).and_then(Value::as_bool) == Some(true));
        if raised { Tier::Destructive } else { self.tier }
    }
}

/// What a handler can do besides computing its answer.
#[derive(Clone)]
pub struct CallCtx {
    /// The connected client.
    pub peer: Peer<RoleServer>,
    /// Present when the client asked for progress notifications (Crush never does).
    pub progress_token: Option<ProgressToken>,
}

impl CallCtx {
    /// Sends a progress notification when the client asked for them; otherwise nothing.
    pub async fn progress(&self, progress: f64, total: Option<f64>, message: impl Into<String>) {
        if let Some(token) = &self.progress_token {
            let mut p = ProgressNotificationParam::new(token.clone(), progress)
                .with_message(message.into());
            if let Some(t) = total {
                p = p.with_total(t);
            }
            let _ = self.peer.notify_progress(p).await;
        }
    }
}

type Handler<S> =
    Arc<dyn Fn(Arc<S>, Value, CallCtx) -> BoxFuture<'static, Result<Value>> + Send + Sync>;

pub(crate) struct Entry<S> {
    pub def: ToolDef,
    pub tool: Tool,
    pub handler: Handler<S>,
}

/// Every tool of one server, with its handler over the server's state `S`.
pub struct Toolbox<S> {
    pub(crate) entries: Vec<Entry<S>>,
}

impl<S> Default for Toolbox<S> {
    fn default() -> Self {
        Toolbox {
            entries: Vec::new(),
        }
    }
}

impl<S: Service> Toolbox<S> {
    /// Registers a tool: `P` its parameters, `R` its answer (`success: true` is added).
    pub fn add<P, R, F, Fut>(&mut self, def: ToolDef, f: F)
    where
        P: DeserializeOwned + JsonSchema + Send + 'static,
        R: Serialize + JsonSchema + 'static,
        F: Fn(Arc<S>, P, CallCtx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R>> + Send + 'static,
    {
        assert!(
            !self.entries.iter().any(|e| e.def.name == def.name),
            "tool {} registered twice",
            def.name
        );
        let f = Arc::new(f);
        let handler: Handler<S> = Arc::new(move |state, args, ctx| {
            let f = f.clone();
            Box::pin(async move {
                let params: P = parse_args(args)?;
                take_gpu_work_slot(state.kit(), &def).await?;
                let out = f(state, params, ctx)
                    .await
                    .map_err(|e| e.attributed_to(def.name))?;
                let value = serde_json::to_value(out)
                    .map_err(|e| Error::Internal(format!("answer not serializable: {e}")))?;
                Ok(envelope::with_success(value))
            })
        });
        let annotations = ToolAnnotations::new()
            .read_only(def.read_only)
            .destructive(def.destructive)
            .idempotent(def.idempotent)
            .open_world(false);
        let tool = Tool::new(def.name, def.description, Arc::new(schema_for::<P>()))
            .with_raw_output_schema(Arc::new(output_schema_for::<R>()))
            .with_annotations(annotations);
        self.entries.push(Entry { def, tool, handler });
    }

    /// The rmcp tool descriptions, in registration order.
    pub fn tools(&self) -> Vec<Tool> {
        self.entries.iter().map(|e| e.tool.clone()).collect()
    }

    /// The tool definitions, in registration order.
    pub fn defs(&self) -> impl Iterator<Item = &ToolDef> {
        self.entries.iter().map(|e| &e.def)
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Entry<S>> {
        self.entries.iter().find(|e| e.def.name == name)
    }
}

/// Deserializes arguments into `P`, naming the offending field on failure.
pub fn parse_args<P: DeserializeOwned>(args: Value) -> Result<P> {
    let args = if args.is_null() {
        Value::Object(Default::default())
    } else {
        args
    };
    serde_path_to_error::deserialize(args).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde names missing and unknown fields in its message, not in the path.
        let field = if path == "." {
            inner
                .split('`')
                .nth(1)
                .map(String::from)
                .unwrap_or_else(|| "arguments".into())
        } else {
            path
        };
        Error::invalid(field, inner)
    })
}

fn generator() -> schemars::SchemaGenerator {
    // Inline every subschema: Crush keeps only `properties` and `required`, so a `$ref`
    // into `$defs` would dangle there. This covers nested types without per-type attributes.
    schemars::generate::SchemaSettings::draft2020_12()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .with_transform(schemars::transform::RecursiveTransform(portable_format))
        .into_generator()
}

/// The formats JSON Schema defines: the only ones a validator knows.
const JSON_SCHEMA_FORMATS: &[&str] = &[
    "date-time",
    "date",
    "time",
    "duration",
    "email",
    "idn-email",
    "hostname",
    "idn-hostname",
    "ipv4",
    "ipv6",
    "uri",
    "uri-reference",
    "iri",
    "iri-reference",
    "uuid",
    "uri-template",
    "json-pointer",
    "relative-json-pointer",
    "regex",
];

/// schemars names Rust's number types as formats (`uint32`, `int64`, `double`), which are
/// not JSON Schema's: a validator that checks formats (MCP Inspector's) prints a warning
/// for each, dozens per server, hiding the answer. They become the bounds they mean.
fn portable_format(schema: &mut schemars::Schema) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    let Some(format) = obj.get("format").and_then(Value::as_str) else {
        return;
    };
    if JSON_SCHEMA_FORMATS.contains(&format) {
        return;
    }
    let (min, max): (Option<i64>, Option<i64>) = match format {
        "uint8" => (Some(0), Some(u8::MAX.into())),
        "uint16" => (Some(0), Some(u16::MAX.into())),
        "uint32" => (Some(0), Some(u32::MAX.into())),
        "uint64" | "uint" | "uint128" => (Some(0), None),
        "int8" => (Some(i8::MIN.into()), Some(i8::MAX.into())),
        "int16" => (Some(i16::MIN.into()), Some(i16::MAX.into())),
        "int32" => (Some(i32::MIN.into()), Some(i32::MAX.into())),
        _ => (None, None),
    };
    obj.remove("format");
    if let Some(min) = min {
        obj.entry("minimum").or_insert(min.into());
    }
    if let Some(max) = max {
        obj.entry("maximum").or_insert(max.into());
    }
}

/// The input schema of `T`: an object schema with no `$defs`.
pub fn schema_for<T: JsonSchema>() -> JsonObject {
    let mut v = generator().into_root_schema_for::<T>().to_value();
    if let Some(o) = v.as_object_mut() {
        o.remove("$defs");
        o.remove("title");
        o.entry("type")
            .or_insert_with(|| Value::String("object".into()));
        o.entry("properties")
            .or_insert_with(|| Value::Object(Default::default()));
    }
    match v {
        Value::Object(o) => o,
        _ => JsonObject::new(),
    }
}

/// The output schema of `T` with the envelope's `success` added.
pub fn output_schema_for<T: JsonSchema>() -> JsonObject {
    let mut o = schema_for::<T>();
    if let Some(Value::Object(props)) = o.get_mut("properties") {
        props.insert(
            "success".into(),
            serde_json::json!({"type": "boolean", "description": "Always true in a successful answer."}),
        );
    }
    match o.get_mut("required") {
        Some(Value::Array(req)) => req.push(Value::String("success".into())),
        _ => {
            o.insert("required".into(), serde_json::json!(["success"]));
        }
    }
    o
}

/// Parameters of a tool that takes none.
#[derive(Debug, Default, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// `limits.gpu_work_per_minute`: a tool that starts GPU work takes a slot in the store
/// (shared by every server on it) before it runs, or is refused with `RATE_LIMITED`
/// saying when a slot frees. Taken once the arguments are valid, just before the
/// handler runs: a refused or malformed call costs no slot. 0 turns the limit off. A store that cannot count lets the
/// call through, with a warning: the limit guards the GPUs, not the store.
async fn take_gpu_work_slot(kit: &Kit, def: &ToolDef) -> Result<()> {
    let limit = kit.config.limits.gpu_work_per_minute;
    if !def.gpu_work || limit == 0 {
        return Ok(());
    }
    let tool = def.name;
    match kit
        .with_store(move |s| vllm_core::gpu_work::take_slot(s, tool, limit))
        .await
    {
        Err(e @ Error::RateLimited { .. }) => Err(e),
        Ok(()) => Ok(()),
        // No store to count in: the limit guards the GPUs, not the store.
        Err(e) => {
            tracing::warn!(tool, error = %e, "cannot count GPU work for the rate limit; the call goes ahead");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        /// A count.
        count: u32,
        inner: Option<Inner>,
        kind: Option<Kind>,
    }
    #[derive(Debug, serde::Deserialize, JsonSchema)]
    #[allow(dead_code)]
    struct Inner {
        x: f64,
    }
    #[derive(Debug, serde::Deserialize, JsonSchema)]
    #[serde(rename_all = "lowercase")]
    enum Kind {
        A,
        B,
    }

    #[derive(Debug, serde::Deserialize, JsonSchema)]
    #[allow(dead_code)]
    struct Numbers {
        small: u8,
        count: u32,
        big: Option<u64>,
        delta: i32,
        ratio: f64,
        nested: Vec<Option<u16>>,
        when: String,
    }

    #[test]
    fn number_formats_become_bounds() {
        let s = Value::Object(schema_for::<Numbers>());
        let text = s.to_string();
        assert!(!text.contains("\"format\""), "{text}");
        let p = &s["properties"];
        assert_eq!(
            (&p["small"]["minimum"], &p["small"]["maximum"]),
            (&0.into(), &255.into())
        );
        assert_eq!(p["count"]["maximum"], u32::MAX);
        assert_eq!(p["count"]["minimum"], 0);
        assert_eq!(p["delta"]["minimum"], i32::MIN);
        assert!(p["big"].get("maximum").is_none());
        assert_eq!(p["nested"]["items"]["maximum"], u16::MAX, "{text}");
        assert!(p["ratio"].get("minimum").is_none());
    }

    #[test]
    fn schemas_are_inline() {
        let s = serde_json::to_string(&schema_for::<Outer>()).unwrap();
        assert!(!s.contains("$ref") && !s.contains("$defs"), "{s}");
        assert!(s.contains("\"x\""), "nested fields inlined: {s}");
        let o = output_schema_for::<Outer>();
        assert!(
            o["required"]
                .as_array()
                .unwrap()
                .contains(&"success".into())
        );
    }

    #[test]
    fn bad_arguments_name_the_field() {
        let cases = [
            (serde_json::json!({"count": "three"}), "count"),
            (serde_json::json!({}), "count"),
            (serde_json::json!({"count": 1, "bogus": 2}), "bogus"),
            (
                serde_json::json!({"count": 1, "inner": {"x": "no"}}),
                "inner.x",
            ),
            (serde_json::json!({"count": 1, "kind": "c"}), "kind"),
            (serde_json::json!({"count": -1}), "count"),
        ];
        for (args, field) in cases {
            let e = parse_args::<Outer>(args.clone()).unwrap_err();
            assert_eq!(e.code(), "INVALID_ARGUMENT");
            assert_eq!(e.details()["field"], field, "{args} gave {e}");
        }
    }

    #[test]
    fn raising_args() {
        let def = ToolDef {
            raising_args: &["force"],
            ..ToolDef::control("unload-model", "")
        };
        assert_eq!(
            def.tier_for(&serde_json::json!({"force": false})),
            Tier::Control
        );
        assert_eq!(
            def.tier_for(&serde_json::json!({"force": true})),
            Tier::Destructive
        );
    }
}
