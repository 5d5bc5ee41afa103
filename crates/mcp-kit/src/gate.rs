//! The permission gate: tiers, allow and deny lists, checked before any side effect.
//!
//! This sits on top of Crush's own per-tool `enabled_tools`/`disabled_tools` and its
//! approval of each call: the default lets every tier through because a person already
//! approves each call there; `max_tier = "read"` makes the servers read-only for setups
//! where calls are auto-approved.

use vllm_core::config::{SecurityConfig, Tier};
use vllm_core::{Error, Result};

/// Decides whether a call may go ahead.
#[derive(Debug, Clone)]
pub struct Gate {
    max_tier: Tier,
    allow: Vec<String>,
    deny: Vec<String>,
}

impl Gate {
    /// The gate the config describes.
    pub fn new(sec: &SecurityConfig) -> Gate {
        Gate {
            max_tier: sec.max_tier,
            allow: sec.allow_tools.clone(),
            deny: sec.deny_tools.clone(),
        }
    }

    /// `Ok` when `tool` at `tier` is allowed; `PERMISSION_DENIED` saying why otherwise.
    /// Tool names in the lists may be bare (`load-model`) or as Crush shows them
    /// (`mcp_vllm-model-manager_load-model`).
    pub fn check(&self, tool: &str, tier: Tier) -> Result<()> {
        let named = |list: &[String]| {
            list.iter().any(|t| {
                t == tool
                    || t.strip_prefix("mcp_")
                        .and_then(|r| r.rsplit_once('_'))
                        .map(|(_, n)| n)
                        == Some(tool)
            })
        };
        let deny = |reason: String| {
            Err(Error::PermissionDenied {
                tool: tool.to_string(),
                reason,
            })
        };
        if named(&self.deny) {
            return deny("the tool is in security.deny_tools".into());
        }
        if !self.allow.is_empty() && !named(&self.allow) {
            return deny("the tool is not in security.allow_tools".into());
        }
        if tier > self.max_tier {
            return deny(format!(
                "this call is tier `{}` and security.max_tier is `{}`",
                tier.as_str(),
                self.max_tier.as_str()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(max: Tier, allow: &[&str], deny: &[&str]) -> Gate {
        Gate::new(&SecurityConfig {
            max_tier: max,
            allow_tools: allow.iter().map(|s| s.to_string()).collect(),
            deny_tools: deny.iter().map(|s| s.to_string()).collect(),
            ..SecurityConfig::default()
        })
    }

    #[test]
    fn tiers_and_lists() {
        let g = gate(Tier::Read, &[], &[]);
        assert!(g.check("list-models", Tier::Read).is_ok());
        let e = g.check("load-model", Tier::Control).unwrap_err();
        assert_eq!(e.code(), "PERMISSION_DENIED");
        assert!(e.to_string().contains("max_tier"));

        let g = gate(
            Tier::Destructive,
            &[],
            &["mcp_vllm-state-persistence_clear-state"],
        );
        assert!(g.check("clear-state", Tier::Destructive).is_err());
        assert!(g.check("save-state", Tier::Control).is_ok());

        let g = gate(Tier::Destructive, &["server-health"], &[]);
        assert!(g.check("server-health", Tier::Read).is_ok());
        assert!(g.check("list-models", Tier::Read).is_err());
    }
}
