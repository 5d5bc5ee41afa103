//! Set-up shared by the whole-fleet tests: a rig with an attached mock-vllm endpoint, a
//! Crush database with one generated session, and servers spawned on them.

// Each test binary compiles this module on its own and uses only a part of it.
#![allow(dead_code)]

use serde_json::json;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use vllm_core::states::{self, StateMeta};
use vllm_core::store::Store;
use vllm_core::store::rusqlite;
use vllm_crush_gen::{self as generate, ConversationSpec};
use vllm_mcp_testkit::wire::{Wire, text_of};
use vllm_mcp_testkit::{MockVllm, ServerRig};

pub struct Fleet {
    /// The attached endpoint (serving `model`, named like it up to the `/`), alive as
    /// long as the fleet.
    _mock: MockVllm,
    pub rig: ServerRig,
    /// Crush's database, with one session.
    pub crush: PathBuf,
    pub session: String,
}

impl Fleet {
    /// A rig whose config holds `extra`, then the endpoint serving `model`.
    pub fn new(model: &str, extra: &str, spec: ConversationSpec) -> Fleet {
        let mock = MockVllm::start(&[model], &[]);
        let name = model.split('/').next().unwrap_or("ep");
        let rig = ServerRig::new(&format!(
            "{extra}\n[[endpoints]]\nname = {name:?}\nbase_url = {:?}\n",
            mock.base_url
        ));
        let crush = rig.dir.path().join("crush/crush.db");
        std::fs::create_dir_all(crush.parent().unwrap()).unwrap();
        let conn = rusqlite::Connection::open(&crush).unwrap();
        let session = generate::insert(&conn, &spec).unwrap();
        Fleet {
            _mock: mock,
            rig,
            crush,
            session,
        }
    }

    /// The command of one of our servers on this fleet (two fake GPUs).
    pub fn command(&self, name: &str) -> Command {
        let mut cmd = self.rig.command(name);
        cmd.env("VLLM_MCP_FAKE_GPUS", "2")
            .env("VLLM_MCP_CRUSH_DB", &self.crush);
        cmd
    }

    /// Spawns a server and completes the handshake.
    pub fn spawn(&self, name: &str) -> Wire {
        let mut w = Wire::spawn(self.command(name));
        w.initialize();
        w
    }

    /// Calls one tool on a manager of its own, and checks it succeeded.
    pub fn manage(&self, tool: &str, args: serde_json::Value) -> serde_json::Value {
        let mut m = self.spawn("vllm-model-manager");
        let a = text_of(&m.call(tool, args));
        assert_eq!(a["success"], true, "{tool}: {a}");
        m.close(Duration::from_secs(5));
        a
    }

    /// Loads `model_id` (a mock-vllm server) and waits until it is served.
    pub fn load(&self, model_id: &str) {
        let a = self.manage(
            "load-model",
            json!({"model_id": model_id, "wait_seconds": 60}),
        );
        assert_eq!(a["status"], "loaded", "{a}");
    }
}

/// Every state in `ids` is in the store and each of its parts decodes whole; their
/// records, for further checks.
pub fn saved_states_whole(store: &Store, ids: &[String]) -> Vec<StateMeta> {
    ids.iter()
        .map(|id| {
            let meta = states::get(store, id)
                .unwrap()
                .unwrap_or_else(|| panic!("state {id} was reported saved and is gone"));
            for part in &meta.parts {
                let frame = states::read_frame(store, id, part.part).unwrap().unwrap();
                let _: serde_json::Value = states::decode_part(id, part.part, &frame).unwrap();
            }
            meta
        })
        .collect()
}
