//! The lifecycle operations without MCP: locate's one resolution order, load with a
//! wait and its events, unload of a launched and of an attached model, a start that
//! fails while waited for, a snapshot written and opened, and a restore's plan and
//! actions. mock-vllm is both the launched `vllm serve` and the
//! attached endpoint; the rig kills whatever a failing test leaves.

use std::sync::Arc;
use std::time::Duration;
use vllm_core::config::Config;
use vllm_core::gpu::{FakeGpus, Gpus};
use vllm_core::launch_args::LaunchArgs;
use vllm_core::models::ModelStatus;
use vllm_core::states::{ModelsPart, PartKind, SavedModel};
use vllm_core::store::Store;
use vllm_core::vllm::{EndpointSpec, VllmClient};
use vllm_fleet::adapters;
use vllm_fleet::chat;
use vllm_fleet::inventory;
use vllm_fleet::launcher::supervisor::{LaunchOutcome, LaunchRequest, Launcher};
use vllm_fleet::lifecycle::{Fleet, LoadEvent, Located, UnloadReport};
use vllm_fleet::power::{self, MemorySource, Served, SleepLevel};
use vllm_fleet::restore::{self, Action};
use vllm_fleet::sampling;
use vllm_fleet::snapshot::{self, Snapshot};
use vllm_mcp_testkit::{MockVllm, ServerRig};

/// Where a scenario runs: this host, or the Ray cluster (`[launcher] backend = "ray"`).
/// Every scenario passes on both: see the `local` module and `on_a_ray_cluster`.
enum Backend {
    Local,
    Ray(String),
}

impl Backend {
    /// The rig of a scenario, with `extra` config, on this backend.
    fn rig(&self, extra: &str) -> ServerRig {
        let rig = ServerRig::new(extra);
        match self {
            Backend::Local => rig,
            Backend::Ray(address) => rig.on_ray(address, ""),
        }
    }
}

/// A launcher over the rig's config and store, and clients of the attached endpoints.
fn fleet_parts(rig: &ServerRig) -> (Arc<Config>, Launcher, Vec<VllmClient>) {
    let config = Arc::new(Config::load(Some(&rig.config)).unwrap());
    let store = Store::open(&rig.store_path()).unwrap();
    let gpus: Gpus = Arc::new(FakeGpus::without_driver());
    let launcher = Launcher::new(config.clone(), store, gpus);
    let endpoints = config
        .endpoints
        .iter()
        .map(|e| {
            EndpointSpec::from_config(e, &config.http)
                .and_then(VllmClient::new)
                .unwrap()
        })
        .collect();
    (config, launcher, endpoints)
}

/// Waits (10 s at most) until no process of the rig is left: at once on this host; on
/// Ray, the job's command and its supervisor go a moment after the job is reported ended.
async fn no_launched_process_left(rig: &ServerRig) {
    let t = std::time::Instant::now();
    while !rig.marked_pids().is_empty() {
        let left: Vec<String> = rig
            .marked_pids()
            .iter()
            .map(|p| {
                std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                    .unwrap_or_default()
                    .replace('\0', " ")
            })
            .collect();
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "launched processes left: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What identifies one server of a model: its process group here, its job on Ray.
fn instance(r: &vllm_core::models::ModelRecord) -> (Option<u32>, Option<String>) {
    (r.pid, r.job.as_ref().map(|j| j.submission_id.clone()))
}

fn request(model_id: &str, args: LaunchArgs) -> LaunchRequest {
    LaunchRequest {
        model_id: model_id.into(),
        source: Some(format!("mock/{model_id}")),
        args,
        ..LaunchRequest::default()
    }
}

fn kind(l: &Located) -> &'static str {
    match l {
        Located::Launched(_) => "launched",
        Located::Attached { .. } => "attached",
        Located::Adapter { .. } => "adapter",
        Located::Catalog { .. } => "catalog",
        Located::Cached { .. } => "cached",
    }
}

async fn locate_load_and_unload_in_one_order(b: &Backend) {
    let attached = MockVllm::start(&["mock/ext", "--served-model-name", "ext"], &[]);
    let rig = b.rig(&format!(
        "[[endpoints]]\nname = \"ep\"\nbase_url = {:?}\n\
         [catalog.alias]\nsource = \"mock/alias\"\n[catalog.alias.args]\nmax_model_len = 256\n",
        attached.base_url
    ));
    let (config, launcher, endpoints) = fleet_parts(&rig);
    let fleet = Fleet {
        launcher: Some(&launcher),
        endpoints: &endpoints,
        config: &config,
    };

    // Before anything is launched: the endpoint's model, the catalog alias, nothing.
    let ext = fleet.locate("ext", &[ModelStatus::Loaded]).await.unwrap();
    assert_eq!(kind(&ext), "attached");
    let alias = fleet.locate("alias", &ModelStatus::ALL).await.unwrap();
    match &alias {
        Located::Catalog { source, args } => {
            assert_eq!(source, "mock/alias");
            assert_eq!(args.max_model_len, Some(256));
        }
        other => panic!("{other:?}"),
    }
    let e = fleet.locate("nobody", &ModelStatus::ALL).await.unwrap_err();
    assert_eq!(e.code(), "MODEL_NOT_FOUND");
    let e = fleet.locate("../x", &ModelStatus::ALL).await.unwrap_err();
    assert_eq!(e.code(), "INVALID_ARGUMENT");

    // Load with a wait: the start is announced, then it settles loaded.
    let mut events = Vec::new();
    let report = fleet
        .load(
            &request("tiny", LaunchArgs::default()),
            Duration::from_secs(60),
            |e| {
                events.push(match e {
                    LoadEvent::Started { record, .. } => format!("started {}", record.model_id),
                    LoadEvent::Waited { .. } => "waited".into(),
                })
            },
        )
        .await
        .unwrap();
    assert!(matches!(report.outcome, LaunchOutcome::Started { .. }));
    let settled = report.settled.expect("waited for");
    assert_eq!(settled.status, ModelStatus::Loaded);
    assert_eq!(events.first().map(String::as_str), Some("started tiny"));
    let found = fleet.locate("tiny", &[ModelStatus::Loaded]).await.unwrap();
    let client = found.client(&fleet).expect("a loaded model has a client");
    assert!(
        client
            .models()
            .await
            .unwrap()
            .iter()
            .any(|c| c.id == "tiny")
    );

    // The same load again runs nothing; a dry run reports the current status.
    let again = fleet
        .load(
            &request("tiny", LaunchArgs::default()),
            Duration::ZERO,
            |_| {},
        )
        .await
        .unwrap();
    assert!(matches!(
        again.outcome,
        LaunchOutcome::AlreadyRunning { .. }
    ));
    let mut dry = request("tiny", LaunchArgs::default());
    dry.dry_run = true;
    dry.replace = true;
    let dry = fleet.load(&dry, Duration::ZERO, |_| {}).await.unwrap();
    assert_eq!(dry.current, ModelStatus::Loaded);

    // Unload: the launched one stops; it is still located, in its new status.
    let UnloadReport::Stopped(out) = fleet.unload("tiny", false).await.unwrap() else {
        panic!("a launched model is stopped");
    };
    assert!(out.was_running && out.remaining_pids.is_empty());
    match fleet.locate("tiny", &[ModelStatus::Loaded]).await.unwrap() {
        Located::Launched(r) => assert_eq!(r.status, ModelStatus::Unloaded),
        other => panic!("{other:?}"),
    }
    // An attached model cannot be stopped; without sleep mode it is not ours to unload.
    let e = fleet.unload("ext", false).await.unwrap_err();
    assert_eq!(e.code(), "NOT_MANAGED");
    no_launched_process_left(&rig).await;
}

async fn a_start_that_fails_while_waited_for_is_its_classified_reason(b: &Backend) {
    let rig = b.rig("");
    let (config, launcher, endpoints) = fleet_parts(&rig);
    let fleet = Fleet {
        launcher: Some(&launcher),
        endpoints: &endpoints,
        config: &config,
    };
    let args = LaunchArgs {
        extra_args: vec!["--no-such-flag".into()],
        ..LaunchArgs::default()
    };
    let e = fleet
        .load(&request("bad", args), Duration::from_secs(60), |_| {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), "MODEL_LOAD_FAILED", "{e}");
    assert_eq!(e.details()["reason"], "UNKNOWN_FLAG", "{:?}", e.details());
    // Without a launcher (no store), loading says why and locating still answers.
    let bare = Fleet {
        launcher: None,
        endpoints: &endpoints,
        config: &config,
    };
    let e = bare
        .load(&request("x", LaunchArgs::default()), Duration::ZERO, |_| {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), "STORAGE_ERROR");
    assert_eq!(
        bare.locate("x", &ModelStatus::ALL)
            .await
            .unwrap_err()
            .code(),
        "MODEL_NOT_FOUND"
    );
}

/// Sleep and wake without MCP: the record follows (sleeping, loaded), the memory a sleep
/// gave back is measured (resident memory on this CPU machine), a second sleep is a no-op,
/// and a server without the sleep routes is `UNSUPPORTED` in the core's own words.
async fn sleep_and_wake_move_the_record_and_measure_what_was_freed(b: &Backend) {
    let plain = MockVllm::start(&["mock/ext", "--served-model-name", "ext"], &[]);
    let rig = b
        .rig(&format!(
            "[[endpoints]]\nname = \"ep\"\nbase_url = {:?}\n",
            plain.base_url
        ))
        .with_launcher_env(&[("VLLM_SERVER_DEV_MODE", "1")]);
    let (config, launcher, endpoints) = fleet_parts(&rig);
    let fleet = Fleet {
        launcher: Some(&launcher),
        endpoints: &endpoints,
        config: &config,
    };
    let loaded = fleet
        .load(
            &request("tiny", LaunchArgs::default()),
            Duration::from_secs(60),
            |_| {},
        )
        .await
        .unwrap();
    let record = loaded.settled.expect("waited for");
    let client = launcher.client_for(&record).unwrap();
    let gpus = FakeGpus::without_driver();
    let served = Served {
        model_id: "tiny",
        client: &client,
        record: Some(&record),
    };
    assert_eq!(
        SleepLevel::from_number(3).unwrap_err().code(),
        "INVALID_ARGUMENT"
    );
    let r = power::sleep(Some(&launcher), &gpus, served, SleepLevel::OffloadWeights)
        .await
        .unwrap();
    assert!(!r.already_sleeping);
    match b {
        Backend::Local => {
            assert_eq!(r.memory_source, Some(MemorySource::Rss));
            assert!(r.memory_freed_mb.is_some(), "{r:?}");
        }
        // On another node: nothing of this host to measure, and nothing made up.
        Backend::Ray(_) => assert_eq!((r.memory_source, r.memory_freed_mb), (None, None)),
    }
    assert!(r.without_sleep_flag);
    let status = |id: &str| {
        vllm_core::models::get(launcher.store(), id)
            .unwrap()
            .unwrap()
            .status
    };
    assert_eq!(status("tiny"), ModelStatus::Sleeping);

    // Asleep already: nothing is done, nothing is freed.
    let asleep = vllm_core::models::get(launcher.store(), "tiny")
        .unwrap()
        .unwrap();
    let served = Served {
        record: Some(&asleep),
        ..served
    };
    let again = power::sleep(Some(&launcher), &gpus, served, SleepLevel::DiscardAll)
        .await
        .unwrap();
    assert!(again.already_sleeping);
    assert_eq!(again.memory_freed_mb, Some(0));

    let w = power::wake(Some(&launcher), served, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(w.was_sleeping);
    assert_eq!(status("tiny"), ModelStatus::Loaded);
    let awake = power::wake(Some(&launcher), served, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(!awake.was_sleeping, "{awake:?}");

    // A server without VLLM_SERVER_DEV_MODE has no /sleep: unsupported, naming no tool.
    let ext = Served {
        model_id: "ext",
        client: &endpoints[0],
        record: None,
    };
    let e = power::sleep(None, &gpus, ext, SleepLevel::OffloadWeights)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "UNSUPPORTED", "{e}");
    assert!(e.to_string().contains("VLLM_SERVER_DEV_MODE"), "{e}");
    // Awake without the routes is simply awake.
    assert!(
        !power::wake(None, ext, Duration::from_secs(5))
            .await
            .unwrap()
            .was_sleeping
    );
    fleet.unload("tiny", false).await.unwrap();
}

/// Sampling defaults without MCP: where they may be set, merged over the stored ones,
/// kept for the next launch of a running model or applied now by a relaunch.
async fn sampling_defaults_are_merged_and_applied_now_only_when_asked(b: &Backend) {
    let attached = MockVllm::start(&["mock/ext", "--served-model-name", "ext"], &[]);
    let rig = b.rig(&format!(
        "[[endpoints]]\nname = \"ep\"\nbase_url = {:?}\n",
        attached.base_url
    ));
    let (config, launcher, endpoints) = fleet_parts(&rig);
    let fleet = Fleet {
        launcher: Some(&launcher),
        endpoints: &endpoints,
        config: &config,
    };
    let code = |r: vllm_core::Result<sampling::SamplingTarget>| r.unwrap_err().code();
    assert_eq!(
        code(sampling::target(&fleet, "nowhere").await),
        "MODEL_NOT_FOUND"
    );
    assert_eq!(code(sampling::target(&fleet, "ext").await), "UNSUPPORTED");

    let args = LaunchArgs {
        max_model_len: Some(256),
        ..LaunchArgs::default()
    };
    fleet
        .load(&request("tiny", args), Duration::from_secs(60), |_| {})
        .await
        .unwrap();
    let defaults = |pairs: &[(&str, f64)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
            .collect::<vllm_core::launch_args::SamplingDefaults>()
    };
    let t = sampling::target(&fleet, "tiny").await.unwrap();
    assert_eq!(t.max_model_len, Some(256));
    let e = sampling::set(&fleet, t.clone(), defaults(&[]), false).await;
    assert_eq!(e.unwrap_err().code(), "INVALID_ARGUMENT");
    let r = sampling::set(&fleet, t, defaults(&[("temperature", 0.2)]), false)
        .await
        .unwrap();
    assert_eq!(r.takes_effect, sampling::TakesEffect::NextLaunch);
    assert!(r.running_unchanged);
    assert_eq!(r.status, ModelStatus::Loaded);

    let t = sampling::target(&fleet, "tiny").await.unwrap();
    let before = instance(t.record.as_ref().unwrap());
    let r = sampling::set(&fleet, t, defaults(&[("top_p", 0.9)]), true)
        .await
        .unwrap();
    assert_eq!(r.takes_effect, sampling::TakesEffect::Now);
    assert_eq!(r.merged, defaults(&[("temperature", 0.2), ("top_p", 0.9)]));
    assert_eq!(r.status, ModelStatus::Loading, "relaunched");
    let now = vllm_core::models::get(launcher.store(), "tiny")
        .unwrap()
        .unwrap();
    assert_ne!(instance(&now), before, "a new server");
    fleet.unload("tiny", false).await.unwrap();
}

/// The inventory lists each model once, in locate's precedence: a launched model hides an
/// attached endpoint's model of the same id and a catalog alias of it; an endpoint that
/// does not answer is named, not fatal.
async fn the_inventory_lists_each_model_once_in_locates_order(b: &Backend) {
    let attached = MockVllm::start(&["mock/tiny", "--served-model-name", "tiny", "ext"], &[]);
    let rig = b.rig(&format!(
        "[[endpoints]]\nname = \"ep\"\nbase_url = {:?}\n\
         [[endpoints]]\nname = \"gone\"\nbase_url = \"http://127.0.0.1:9\"\n\
         [catalog.tiny]\nsource = \"mock/tiny\"\n[catalog.alias]\nsource = \"mock/alias\"\n\
         [catalog.alias.args]\nmax_model_len = 256\n",
        attached.base_url
    ));
    let (config, launcher, endpoints) = fleet_parts(&rig);
    let fleet = Fleet {
        launcher: Some(&launcher),
        endpoints: &endpoints,
        config: &config,
    };
    let kinds = |inv: &inventory::Inventory<'_>| -> Vec<(String, &'static str, ModelStatus)> {
        let kind = |e: &inventory::Entry<'_>| match e {
            inventory::Entry::Launched(_) => "launched",
            inventory::Entry::Attached { .. } => "attached",
            inventory::Entry::Catalog { .. } => "catalog",
            inventory::Entry::Cached { .. } => "cached",
        };
        inv.entries
            .iter()
            .map(|e| (e.id().to_string(), kind(e), e.status()))
            .collect()
    };
    let inv = inventory::inventory(&fleet).await.unwrap();
    assert_eq!(
        kinds(&inv),
        [
            ("tiny".to_string(), "attached", ModelStatus::Loaded),
            ("ext".to_string(), "attached", ModelStatus::Loaded),
            ("alias".to_string(), "catalog", ModelStatus::Unloaded),
        ]
    );
    assert_eq!(inv.unreachable.len(), 1, "{:?}", inv.unreachable);
    assert!(
        inv.unreachable[0].starts_with("gone ("),
        "{:?}",
        inv.unreachable
    );
    match &inv.entries[2] {
        inventory::Entry::Catalog { context_window, .. } => assert_eq!(*context_window, Some(256)),
        other => panic!("{other:?}"),
    }

    fleet
        .load(
            &request("tiny", LaunchArgs::default()),
            Duration::from_secs(60),
            |_| {},
        )
        .await
        .unwrap();
    let inv = inventory::inventory(&fleet).await.unwrap();
    assert_eq!(
        kinds(&inv)[..2],
        [
            ("tiny".to_string(), "launched", ModelStatus::Loaded),
            ("ext".to_string(), "attached", ModelStatus::Loaded),
        ]
    );
    assert_eq!(
        inv.entries.len(),
        3,
        "the launched tiny hides the attached and the alias"
    );
    fleet.unload("tiny", false).await.unwrap();
}

/// LoRA adapters without MCP: loaded, loaded again from the same path (nothing done), a
/// taken name, unloaded, a base model refused as an adapter, and a server without runtime
/// updates refused by reason rather than by message.
async fn adapters_load_unload_and_say_why_a_server_refuses(b: &Backend) {
    let lora = MockVllm::start(
        &["mock/tiny", "--served-model-name", "tiny", "--enable-lora"],
        &[("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "True")],
    );
    let plain = MockVllm::start(&["mock/other", "--served-model-name", "other"], &[]);
    let rig = b.rig(&format!(
        "[[endpoints]]\nname = \"lora\"\nbase_url = {:?}\n\
         [[endpoints]]\nname = \"plain\"\nbase_url = {:?}\n",
        lora.base_url, plain.base_url
    ));
    let (_config, _launcher, endpoints) = fleet_parts(&rig);
    let dir = tempfile::tempdir().unwrap();
    let cfg = r#"{"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"]}"#;
    std::fs::write(dir.path().join("adapter_config.json"), cfg).unwrap();
    let path = dir.path().to_str().unwrap();
    let (c, other) = (&endpoints[0], &endpoints[1]);

    let r = adapters::load(c, "tiny", "ad1", path, Some(8))
        .await
        .unwrap();
    assert_eq!(
        r,
        adapters::Loaded::Now {
            adapters: vec!["ad1".into()],
            listed: true
        }
    );
    let again = adapters::load(c, "tiny", "ad1", path, Some(8))
        .await
        .unwrap();
    assert!(
        matches!(again, adapters::Loaded::Already { .. }),
        "{again:?}"
    );
    let taken = adapters::load(c, "tiny", "ad1", "/elsewhere", None)
        .await
        .unwrap();
    match taken {
        adapters::Loaded::Refused(adapters::Refusal::NameTaken { parent, root }) => {
            assert_eq!(parent.as_deref(), Some("tiny"));
            assert_eq!(root.as_deref(), Some(path));
        }
        other => panic!("{other:?}"),
    }
    let base = adapters::unload(c, "tiny", "tiny").await.unwrap();
    assert_eq!(
        base,
        adapters::Unloaded::Refused(adapters::Refusal::NotAnAdapter)
    );
    match adapters::unload(c, "tiny", "ad1").await.unwrap() {
        adapters::Unloaded::Now {
            adapters,
            path: from,
            still_listed,
        } => {
            assert!(adapters.is_empty() && !still_listed);
            assert_eq!(from.as_deref(), Some(path));
        }
        other => panic!("{other:?}"),
    }
    let gone = adapters::unload(c, "tiny", "ad1").await.unwrap_err();
    assert_eq!(gone.code(), "MODEL_NOT_FOUND");

    let refused = adapters::load(other, "other", "ad1", path, None)
        .await
        .unwrap();
    assert_eq!(
        refused,
        adapters::Loaded::Refused(adapters::Refusal::NoRuntimeUpdates)
    );
}

/// A chat without MCP: the reply and its usage read back, the sampling sent as given, and
/// a sleeping server answered at once without a request.
async fn a_chat_replies_and_a_sleeping_server_is_not_asked(b: &Backend) {
    let mock = MockVllm::start(
        &["mock/tiny", "--served-model-name", "tiny"],
        &[("VLLM_SERVER_DEV_MODE", "1")],
    );
    let rig = b.rig(&format!(
        "[[endpoints]]\nname = \"ep\"\nbase_url = {:?}\n",
        mock.base_url
    ));
    let (_config, _launcher, endpoints) = fleet_parts(&rig);
    let served = Served {
        model_id: "tiny",
        client: &endpoints[0],
        record: None,
    };
    let req = chat::ChatRequest {
        messages: serde_json::json!([{"role": "user", "content": "hello"}]),
        max_tokens: 3,
        seed: Some(7),
        ..chat::ChatRequest::default()
    };
    let chat::Chatted::Replied(r) = chat::chat(None, served, &req).await.unwrap() else {
        panic!("an awake server replies");
    };
    assert_eq!(r.completion_tokens, 3);
    assert_eq!(r.total_tokens, r.prompt_tokens + 3);
    assert!(r.finish_reason.is_some() && r.latency_ms > 0.0, "{r:?}");
    let gpus = FakeGpus::without_driver();
    power::sleep(None, &gpus, served, SleepLevel::OffloadWeights)
        .await
        .unwrap();
    assert_eq!(
        chat::chat(None, served, &req).await.unwrap(),
        chat::Chatted::Asleep
    );
    power::wake(None, served, Duration::from_secs(10))
        .await
        .unwrap();
    let missing = Served {
        model_id: "nobody",
        ..served
    };
    let e = chat::chat(None, missing, &req).await.unwrap_err();
    assert_eq!(e.code(), "MODEL_NOT_FOUND", "{e}");
}

fn saved(model_id: &str, status: &str, args: LaunchArgs) -> SavedModel {
    SavedModel {
        model_id: model_id.into(),
        source: format!("mock/{model_id}"),
        status: status.into(),
        args,
        argv: Vec::new(),
        env_names: Vec::new(),
        gpu_ids: Vec::new(),
        sampling: Default::default(),
        vllm_version: None,
        restart_policy: None,
        idle_ttl_seconds: None,
    }
}

fn actions(report: &restore::RestoreReport) -> Vec<(String, Action)> {
    let pairs = report
        .actions
        .iter()
        .map(|a| (a.model_id.clone(), a.action));
    pairs.collect()
}

async fn a_restore_is_checked_whole_then_launches_leaves_or_reports_drift(b: &Backend) {
    let rig = b.rig("");
    let (_config, launcher, _) = fleet_parts(&rig);
    let short = LaunchArgs {
        max_model_len: Some(128),
        ..LaunchArgs::default()
    };
    let long = LaunchArgs {
        max_model_len: Some(256),
        ..LaunchArgs::default()
    };
    // `b` runs now with other arguments than the saved ones.
    launcher.launch(&request("b", short)).await.unwrap();
    let mut part = ModelsPart {
        models: vec![
            saved("gone", "unloaded", LaunchArgs::default()),
            saved("a", "loaded", LaunchArgs::default()),
            saved("b", "loaded", long),
        ],
        ..ModelsPart::default()
    };

    let plan = restore::plan(&launcher, &part).unwrap();
    let report = restore::carry_out(&launcher, plan, false).await.unwrap();
    let s = |id: &str| id.to_string();
    assert_eq!(
        actions(&report),
        [
            (s("gone"), Action::NotRunningWhenSaved),
            (s("a"), Action::Launched),
            (s("b"), Action::Drift)
        ]
    );
    let drift = report.actions[2].differences.as_ref().unwrap();
    assert_eq!(drift["max_model_len"]["requested"], 256, "{drift:?}");
    assert_eq!((report.drift.as_slice(), report.models), (&[s("b")][..], 1));

    // With replace_drifted the drifted one is relaunched; `a` is left running.
    let plan = restore::plan(&launcher, &part).unwrap();
    let report = restore::carry_out(&launcher, plan, true).await.unwrap();
    assert_eq!(
        actions(&report)[1..],
        [(s("a"), Action::AlreadyRunning), (s("b"), Action::Replaced)]
    );
    let b = launcher.get("b").await.unwrap().unwrap();
    assert_eq!(b.args.max_model_len, Some(256));

    // One saved model the launcher would refuse refuses the whole plan.
    part.models
        .push(saved("../evil", "loaded", LaunchArgs::default()));
    let e = restore::plan(&launcher, &part).unwrap_err();
    assert_eq!(e.code(), "INVALID_ARGUMENT");
    for id in ["a", "b"] {
        launcher.stop(id, true).await.unwrap();
    }
    no_launched_process_left(&rig).await;
}

async fn a_snapshot_is_written_whole_and_opens_to_what_was_saved(b: &Backend) {
    let rig = b.rig("");
    let (_config, launcher, _) = fleet_parts(&rig);
    launcher
        .launch(&request("a", LaunchArgs::default()))
        .await
        .unwrap();
    let store = launcher.store().clone();
    let now = vllm_core::time::unix_now();

    // The monitor never sampled this store: nothing is invented.
    let metrics = snapshot::recent_metrics(&store, now).unwrap();
    assert!(metrics.saved.is_none());
    assert!(metrics.note.contains("never sampled"), "{}", metrics.note);

    let part = snapshot::models_part(&launcher, true).await.unwrap();
    assert_eq!(part.models.len(), 1);
    assert_eq!(part.models[0].source, "mock/a");
    assert_eq!(part.configurations.config_digest.len(), 64, "SHA-256 hex");
    let snap = Snapshot {
        session_id: "s1".into(),
        models: Some(part.clone()),
        conversation: None,
        metrics: Some(metrics.info),
        compress: true,
        keep: 2,
    };
    let written = snapshot::write(&store, snap, now).unwrap();
    assert_eq!(written.meta.model_count, 1);
    assert!(written.meta.models_index.contains_key("a"));

    let meta = vllm_core::states::find(&store, Some("s1"), None).unwrap();
    assert_eq!(meta.state_id, written.meta.state_id);
    let opened = vllm_core::states::open(&store, meta, &[PartKind::Models]).unwrap();
    assert_eq!(
        opened.models.as_ref(),
        Some(&part),
        "what was saved comes back"
    );

    // Nothing to store is refused, and nothing is stored.
    let empty = Snapshot {
        session_id: "s2".into(),
        models: None,
        conversation: None,
        metrics: None,
        compress: true,
        keep: 2,
    };
    let e = snapshot::write(&store, empty, now).unwrap_err();
    assert_eq!(e.code(), "INVALID_ARGUMENT");
    assert!(vllm_core::states::find(&store, Some("s2"), None).is_err());
    launcher.stop("a", true).await.unwrap();
}

/// The rule for blocking work: a launch whose store transaction waits for another
/// process's write lock (and then forks `vllm serve`) waits on the blocking pool, so the
/// runtime's one thread here keeps running other tasks meanwhile.
async fn a_launch_waiting_for_the_store_does_not_hold_the_runtime(b: &Backend) {
    let rig = b.rig("");
    let (_config, launcher, _) = fleet_parts(&rig);
    let path = rig.store_path();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let c = vllm_core::store::rusqlite::Connection::open(&path).unwrap();
        c.execute_batch("BEGIN IMMEDIATE").unwrap();
        locked_tx.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        c.execute_batch("COMMIT").unwrap();
    });
    locked_rx.recv().unwrap();
    let ticker = tokio::spawn(async {
        let (mut worst, mut last) = (Duration::ZERO, std::time::Instant::now());
        for _ in 0..150 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            worst = worst.max(last.elapsed());
            last = std::time::Instant::now();
        }
        worst
    });
    // The ticker runs before the launch starts waiting.
    tokio::time::sleep(Duration::from_millis(30)).await;
    let outcome = launcher.launch(&request("a", LaunchArgs::default())).await;
    let worst = ticker.await.unwrap();
    holder.join().unwrap();
    assert!(
        matches!(outcome, Ok(LaunchOutcome::Started { .. })),
        "{outcome:?}"
    );
    assert!(
        worst < Duration::from_millis(400),
        "the runtime stalled for {worst:?}"
    );
    launcher.stop("a", true).await.unwrap();
}

async fn remote_code_is_refused_for_a_load_a_catalog_entry_and_a_restore_unless_allowed(
    b: &Backend,
) {
    let rig = b.rig(
        "[catalog.remote]\nsource = \"mock/remote\"\n\
         [catalog.remote.args]\nextra_args = [\"--trust-remote-code\"]\n",
    );
    let (_, launcher, _) = fleet_parts(&rig);
    let remote = LaunchArgs {
        extra_args: vec!["--trust-remote-code".into()],
        ..LaunchArgs::default()
    };
    let refused = |e: vllm_core::Error| {
        assert_eq!(e.code(), "PERMISSION_DENIED", "{e}");
        assert!(e.to_string().contains("allow_remote_code"), "{e}");
    };
    refused(
        launcher
            .launch(&request("tiny", remote.clone()))
            .await
            .unwrap_err(),
    );
    let catalog = LaunchRequest {
        model_id: "remote".into(),
        ..LaunchRequest::default()
    };
    refused(launcher.launch(&catalog).await.unwrap_err());
    let part = ModelsPart {
        models: vec![saved("tiny", "loaded", remote.clone())],
        ..ModelsPart::default()
    };
    refused(restore::plan(&launcher, &part).err().unwrap());
    assert!(
        launcher.list().await.unwrap().is_empty(),
        "nothing was launched"
    );

    // Allowed: the same launch passes the check (a dry run, so nothing starts).
    let rig = b.rig("[security]\nallow_remote_code = true\n");
    let (_, launcher, _) = fleet_parts(&rig);
    let dry = LaunchRequest {
        dry_run: true,
        ..request("tiny", remote)
    };
    assert!(matches!(
        launcher.launch(&dry).await.unwrap(),
        LaunchOutcome::DryRun { .. }
    ));
}

/// Each scenario on this host.
mod local {
    use super::Backend;

    #[tokio::test]
    async fn locate_load_and_unload_in_one_order() {
        super::locate_load_and_unload_in_one_order(&Backend::Local).await;
    }

    #[tokio::test]
    async fn a_start_that_fails_while_waited_for_is_its_classified_reason() {
        super::a_start_that_fails_while_waited_for_is_its_classified_reason(&Backend::Local).await;
    }

    #[tokio::test]
    async fn sleep_and_wake_move_the_record_and_measure_what_was_freed() {
        super::sleep_and_wake_move_the_record_and_measure_what_was_freed(&Backend::Local).await;
    }

    #[tokio::test]
    async fn sampling_defaults_are_merged_and_applied_now_only_when_asked() {
        super::sampling_defaults_are_merged_and_applied_now_only_when_asked(&Backend::Local).await;
    }

    #[tokio::test]
    async fn the_inventory_lists_each_model_once_in_locates_order() {
        super::the_inventory_lists_each_model_once_in_locates_order(&Backend::Local).await;
    }

    #[tokio::test]
    async fn adapters_load_unload_and_say_why_a_server_refuses() {
        super::adapters_load_unload_and_say_why_a_server_refuses(&Backend::Local).await;
    }

    #[tokio::test]
    async fn a_chat_replies_and_a_sleeping_server_is_not_asked() {
        super::a_chat_replies_and_a_sleeping_server_is_not_asked(&Backend::Local).await;
    }

    #[tokio::test]
    async fn a_restore_is_checked_whole_then_launches_leaves_or_reports_drift() {
        super::a_restore_is_checked_whole_then_launches_leaves_or_reports_drift(&Backend::Local)
            .await;
    }

    #[tokio::test]
    async fn a_snapshot_is_written_whole_and_opens_to_what_was_saved() {
        super::a_snapshot_is_written_whole_and_opens_to_what_was_saved(&Backend::Local).await;
    }

    #[tokio::test]
    async fn a_launch_waiting_for_the_store_does_not_hold_the_runtime() {
        super::a_launch_waiting_for_the_store_does_not_hold_the_runtime(&Backend::Local).await;
    }

    #[tokio::test]
    async fn remote_code_is_refused_for_a_load_a_catalog_entry_and_a_restore_unless_allowed() {
        super::remote_code_is_refused_for_a_load_a_catalog_entry_and_a_restore_unless_allowed(
            &Backend::Local,
        )
        .await;
    }
}

/// Every scenario again, with the launcher's Ray backend on a real two-node cluster of
/// this machine: one cluster, the scenarios one after another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_ray_cluster() {
    let cluster = vllm_mcp_testkit::ray::RayCluster::start();
    let b = Backend::Ray(cluster.dashboard());
    eprintln!("on Ray: locate_load_and_unload_in_one_order");
    locate_load_and_unload_in_one_order(&b).await;
    eprintln!("on Ray: a_start_that_fails_while_waited_for_is_its_classified_reason");
    a_start_that_fails_while_waited_for_is_its_classified_reason(&b).await;
    eprintln!("on Ray: sleep_and_wake_move_the_record_and_measure_what_was_freed");
    sleep_and_wake_move_the_record_and_measure_what_was_freed(&b).await;
    eprintln!("on Ray: sampling_defaults_are_merged_and_applied_now_only_when_asked");
    sampling_defaults_are_merged_and_applied_now_only_when_asked(&b).await;
    eprintln!("on Ray: the_inventory_lists_each_model_once_in_locates_order");
    the_inventory_lists_each_model_once_in_locates_order(&b).await;
    eprintln!("on Ray: adapters_load_unload_and_say_why_a_server_refuses");
    adapters_load_unload_and_say_why_a_server_refuses(&b).await;
    eprintln!("on Ray: a_chat_replies_and_a_sleeping_server_is_not_asked");
    a_chat_replies_and_a_sleeping_server_is_not_asked(&b).await;
    eprintln!("on Ray: a_restore_is_checked_whole_then_launches_leaves_or_reports_drift");
    a_restore_is_checked_whole_then_launches_leaves_or_reports_drift(&b).await;
    eprintln!("on Ray: a_snapshot_is_written_whole_and_opens_to_what_was_saved");
    a_snapshot_is_written_whole_and_opens_to_what_was_saved(&b).await;
    eprintln!("on Ray: a_launch_waiting_for_the_store_does_not_hold_the_runtime");
    a_launch_waiting_for_the_store_does_not_hold_the_runtime(&b).await;
    eprintln!(
        "on Ray: remote_code_is_refused_for_a_load_a_catalog_entry_and_a_restore_unless_allowed"
    );
    remote_code_is_refused_for_a_load_a_catalog_entry_and_a_restore_unless_allowed(&b).await;
}
