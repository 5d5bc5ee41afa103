//! The permission gate: tiers, allow and deny lists, checked before any side effect.
//!
//! This sits on top of Crush's own per-tool `enabled_tools`/`disabled_tools` and its
//! approval of each call: the default lets every tier through because a person already
//! approves each call there; `max_tier = "read"` makes the servers read-only for setups
//! where calls are auto-approved.

use vllm_core::Result;
use vllm_core::config::{SecurityConfig, Tier};

/// Decides whether a call may go ahead: [`SecurityConfig::check_call`], the rule every
/// front end (these servers, the front door's page) shares.
#[derive(Debug, Clone)]
pub struct Gate {
    security: SecurityConfig,
}

impl Gate {
    /// The gate the config describes.
    pub fn new(sec: &SecurityConfig) -> Gate {
        Gate {
            security: sec.clone(),
        }
    }

    /// `Ok` when `tool` at `tier` is allowed; `PERMISSION_DENIED` saying why otherwise.
    pub fn check(&self, tool: &str, tier: Tier) -> Result<()> {
        self.security.check_call(tool, tier)
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
