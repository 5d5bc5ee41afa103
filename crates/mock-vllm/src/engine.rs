//! The fake engine: a scheduler loop that runs in steps of `MOCK_VLLM_TOKEN_LATENCY_MS`, batching
//! every running request (one token each per step, the prompt on its first step), with a waiting
//! queue bounded by `--max-num-seqs`, a block-granular KV cache, a prefix cache, sleep/wake, and the
//! statistics `/metrics` shows.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};

use crate::stats::{EngineStats, FinishReason};
use crate::tokenizer::Generator;

/// Something a request hears from the engine.
#[derive(Debug, Clone)]
pub enum Event {
    /// A generated token; `finish` is set on the last one.
    Token {
        index: u32,
        id: u32,
        text: String,
        finish: Option<(FinishReason, Option<String>)>,
    },
    /// The sequence ended without a token (aborted on shutdown, engine died).
    Finished { index: u32, reason: FinishReason },
}

/// One sequence to generate.
#[derive(Debug)]
pub struct GenRequest {
    /// Choice index in the response.
    pub index: u32,
    pub prompt: Vec<u32>,
    pub max_tokens: u32,
    pub n_param: u32,
    pub seed: u64,
    pub stop: Vec<String>,
    pub lora: Option<String>,
    pub tx: mpsc::UnboundedSender<Event>,
}

struct Running {
    req: GenRequest,
    generator: Generator,
    arrival: Instant,
    scheduled: Option<Instant>,
    first_token: Option<Instant>,
    last_token: Option<Instant>,
    generated: u32,
    text: String,
    cached: u64,
}

enum Step {
    Stop,
    Idle,
    Tokens(u64),
}

/// Sleep level as `vllm:engine_sleep_state` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SleepLevel {
    Awake,
    Level1,
    Level2,
}

struct Inner {
    inbox: VecDeque<Running>,
    waiting: VecDeque<Running>,
    running: Vec<Running>,
    sleep: SleepLevel,
    /// Components still asleep ("weights", "kv_cache").
    asleep_tags: Vec<String>,
    stopped: bool,
    stats: EngineStats,
    prefix: HashSet<u64>,
}

/// Engine settings fixed at start-up.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub max_num_seqs: usize,
    pub block_size: u64,
    pub kv_cache_tokens: u64,
    pub token_latency: Duration,
    pub enable_prefix_caching: bool,
    pub max_model_len: u64,
    pub enable_lora: bool,
    pub max_loras: u64,
}

pub struct Engine {
    inner: Mutex<Inner>,
    notify: Notify,
    pub cfg: EngineConfig,
}

/// A snapshot of the live gauges.
#[derive(Debug, Clone)]
pub struct Gauges {
    pub running: usize,
    pub waiting: usize,
    pub kv_usage: f64,
    pub sleep: SleepLevel,
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Arc<Engine> {
        let engine = Arc::new(Engine {
            inner: Mutex::new(Inner {
                inbox: VecDeque::new(),
                waiting: VecDeque::new(),
                running: Vec::new(),
                sleep: SleepLevel::Awake,
                asleep_tags: Vec::new(),
                stopped: false,
                stats: EngineStats::new(cfg.max_model_len),
                prefix: HashSet::new(),
            }),
            notify: Notify::new(),
            cfg,
        });
        if engine.cfg.enable_lora {
            engine
                .lock()
                .stats
                .note_lora(String::new(), String::new(), unix_now());
        }
        engine
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a sequence; its events arrive on `req.tx`.
    pub fn submit(&self, req: GenRequest) {
        let prompt = req.prompt.clone();
        let seed = req.seed;
        let r = Running {
            generator: Generator::new(&prompt, seed),
            req,
            arrival: Instant::now(),
            scheduled: None,
            first_token: None,
            last_token: None,
            generated: 0,
            text: String::new(),
            cached: 0,
        };
        let mut g = self.lock();
        if g.stopped {
            let _ = r.req.tx.send(Event::Finished {
                index: r.req.index,
                reason: FinishReason::Abort,
            });
            return;
        }
        g.inbox.push_back(r);
        drop(g);
        self.notify.notify_one();
    }

    /// Runs the scheduler until [`Engine::stop`].
    pub async fn run(self: Arc<Self>) {
        loop {
            match self.schedule() {
                Step::Stop => return,
                Step::Idle => self.notify.notified().await,
                Step::Tokens(step_tokens) => {
                    tokio::time::sleep(self.cfg.token_latency).await;
                    if !self.emit(step_tokens) {
                        return;
                    }
                }
            }
        }
    }

    /// Admits waiting requests and counts the tokens of the coming step.
    fn schedule(&self) -> Step {
        let mut g = self.lock();
        if g.stopped {
            return Step::Stop;
        }
        if g.sleep == SleepLevel::Awake {
            while let Some(r) = g.inbox.pop_front() {
                g.waiting.push_back(r);
            }
        }
        let idle = g.sleep != SleepLevel::Awake || (g.waiting.is_empty() && g.running.is_empty());
        if idle {
            if self.cfg.enable_lora {
                g.stats.note_lora(String::new(), String::new(), unix_now());
            }
            return Step::Idle;
        }
        let now = Instant::now();
        let mut tokens = 0u64;
        while g.running.len() < self.cfg.max_num_seqs {
            let Some(mut r) = g.waiting.pop_front() else {
                break;
            };
            r.scheduled = Some(now);
            let cached = self.prefix_lookup(&mut g, &r.req.prompt);
            r.cached = cached;
            g.running.push(r);
        }
        for r in &g.running {
            tokens += if r.generated == 0 {
                r.req.prompt.len() as u64 - r.cached + 1
            } else {
                1
            };
        }
        if self.cfg.enable_lora {
            let names = |v: &mut dyn Iterator<Item = &Running>| {
                let mut n: Vec<String> = v.filter_map(|r| r.req.lora.clone()).collect();
                n.sort();
                n.dedup();
                n.join(",")
            };
            let running = names(&mut g.running.iter());
            let waiting = names(&mut g.waiting.iter());
            g.stats.note_lora(running, waiting, unix_now());
        }
        Step::Tokens(tokens)
    }

    /// Ends a step: one token for every running request. False once stopped.
    fn emit(&self, step_tokens: u64) -> bool {
        let mut g = self.lock();
        if g.stopped {
            return false;
        }
        if g.sleep != SleepLevel::Awake {
            return true;
        }
        g.stats
            .observe("vllm:iteration_tokens_total", step_tokens as f64);
        let now = Instant::now();
        let running = std::mem::take(&mut g.running);
        let mut keep = Vec::with_capacity(running.len());
        for mut r in running {
            if r.generated == 0 {
                let p = r.req.prompt.len() as u64;
                g.stats.prompt_tokens += p;
                g.stats.cached_prompt_tokens += r.cached;
            }
            let (id, text) = r.generator.next_token();
            r.generated += 1;
            g.stats.generation_tokens += 1;
            match r.last_token {
                None => {
                    r.first_token = Some(now);
                    g.stats.observe(
                        "vllm:time_to_first_token_seconds",
                        now.duration_since(r.arrival).as_secs_f64(),
                    );
                }
                Some(prev) => g.stats.observe(
                    "vllm:inter_token_latency_seconds",
                    (now - prev).as_secs_f64(),
                ),
            }
            r.last_token = Some(now);
            let mut piece = text;
            let mut finish: Option<(FinishReason, Option<String>)> = None;
            let before = r.text.len();
            r.text.push_str(&piece);
            if let Some((pos, stop)) = r
                .req
                .stop
                .iter()
                .filter(|s| !s.is_empty())
                .filter_map(|s| r.text.find(s.as_str()).map(|p| (p, s.clone())))
                .min_by_key(|(p, _)| *p)
            {
                let cut = pos.max(before);
                piece = r.text[before..cut].to_string();
                r.text.truncate(pos);
                finish = Some((FinishReason::Stop, Some(stop)));
            } else if r.generated >= r.req.max_tokens {
                finish = Some((FinishReason::Length, None));
            }
            let sent = r
                .req
                .tx
                .send(Event::Token {
                    index: r.req.index,
                    id,
                    text: piece,
                    finish: finish.clone(),
                })
                .is_ok();
            if !sent {
                finish = Some((FinishReason::Abort, None));
            }
            match finish {
                Some((reason, _)) => Self::record_finished(&mut g.stats, &r, reason, now),
                None => keep.push(r),
            }
        }
        // Requests that hung up while waiting.
        let mut still_waiting = VecDeque::new();
        while let Some(r) = g.waiting.pop_front() {
            if r.req.tx.is_closed() {
                Self::record_finished(&mut g.stats, &r, FinishReason::Abort, now);
            } else {
                still_waiting.push_back(r);
            }
        }
        g.waiting = still_waiting;
        g.running = keep;
        true
    }

    fn prefix_lookup(&self, g: &mut Inner, prompt: &[u32]) -> u64 {
        let len = prompt.len() as u64;
        g.stats.prefix_queries += len;
        if !self.cfg.enable_prefix_caching || len < 2 {
            return 0;
        }
        let bs = self.cfg.block_size.max(1);
        // vLLM never serves the last prompt token from the cache.
        let full_blocks = (len - 1) / bs;
        let mut hash: u64 = 0xcbf29ce484222325;
        let mut hits = 0;
        let mut still_hitting = true;
        for b in 0..full_blocks {
            let start = (b * bs) as usize;
            let end = ((b + 1) * bs) as usize;
            for t in &prompt[start..end] {
                for byte in t.to_le_bytes() {
                    hash ^= byte as u64;
                    hash = hash.wrapping_mul(0x100000001b3);
                }
            }
            if still_hitting && g.prefix.contains(&hash) {
                hits += bs;
            } else {
                still_hitting = false;
                g.prefix.insert(hash);
            }
        }
        g.stats.prefix_hits += hits;
        hits
    }

    fn record_finished(stats: &mut EngineStats, r: &Running, reason: FinishReason, now: Instant) {
        stats.finished(reason);
        let p = r.req.prompt.len() as f64;
        stats.observe("vllm:request_prompt_tokens", p);
        stats.observe("vllm:request_generation_tokens", r.generated as f64);
        stats.observe(
            "vllm:request_max_num_generation_tokens",
            r.req.max_tokens as f64,
        );
        stats.observe("vllm:request_params_max_tokens", r.req.max_tokens as f64);
        stats.observe("vllm:request_params_n", r.req.n_param as f64);
        stats.observe(
            "vllm:request_prefill_kv_computed_tokens",
            p - r.cached as f64,
        );
        stats.observe("vllm:request_num_preemptions", 0.0);
        stats.observe(
            "vllm:e2e_request_latency_seconds",
            now.duration_since(r.arrival).as_secs_f64(),
        );
        let scheduled = r.scheduled.unwrap_or(now);
        stats.observe(
            "vllm:request_queue_time_seconds",
            (scheduled - r.arrival).as_secs_f64(),
        );
        if let (Some(first), Some(last)) = (r.first_token, r.last_token) {
            stats.observe(
                "vllm:request_prefill_time_seconds",
                (first - scheduled).as_secs_f64(),
            );
            let decode = (last - first).as_secs_f64();
            stats.observe("vllm:request_decode_time_seconds", decode);
            stats.observe(
                "vllm:request_inference_time_seconds",
                (last - scheduled).as_secs_f64(),
            );
            let tpot = if r.generated > 1 {
                decode / (r.generated - 1) as f64
            } else {
                0.0
            };
            stats.observe("vllm:request_time_per_output_token_seconds", tpot);
        }
    }

    /// Ends every request with `reason` (abort on shutdown, error when the engine died) and stops.
    pub fn stop(&self, reason: FinishReason) {
        let mut g = self.lock();
        g.stopped = true;
        let now = Instant::now();
        let mut all: Vec<Running> = Vec::new();
        all.extend(std::mem::take(&mut g.running));
        all.extend(std::mem::take(&mut g.waiting));
        all.extend(std::mem::take(&mut g.inbox));
        for r in all {
            let _ = r.req.tx.send(Event::Finished {
                index: r.req.index,
                reason,
            });
            Self::record_finished(&mut g.stats, &r, reason, now);
        }
        drop(g);
        self.notify.notify_one();
    }

    pub fn gauges(&self) -> Gauges {
        let g = self.lock();
        let bs = self.cfg.block_size.max(1);
        let blocks_total = (self.cfg.kv_cache_tokens / bs).max(1);
        let used: u64 = g
            .running
            .iter()
            .map(|r| (r.req.prompt.len() as u64 + r.generated as u64).div_ceil(bs))
            .sum();
        Gauges {
            running: g.running.len(),
            waiting: g.waiting.len(),
            kv_usage: (used as f64 / blocks_total as f64).min(1.0),
            sleep: g.sleep,
        }
    }

    /// Number of sequences queued or running (the `/load` figure).
    pub fn load(&self) -> usize {
        let g = self.lock();
        g.running.len() + g.waiting.len() + g.inbox.len()
    }

    pub fn with_stats<R>(&self, f: impl FnOnce(&EngineStats) -> R) -> R {
        f(&self.lock().stats)
    }

    /// `/sleep?level=N`.
    pub fn sleep(&self, level: u8) {
        let t0 = Instant::now();
        let mut g = self.lock();
        if g.sleep == SleepLevel::Awake {
            g.sleep = if level >= 2 {
                SleepLevel::Level2
            } else {
                SleepLevel::Level1
            };
            g.asleep_tags = vec!["weights".into(), "kv_cache".into()];
            if level >= 2 {
                g.prefix.clear();
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        if let Some(h) = g.stats.sleep_ops.get_mut("sleep") {
            h.observe(secs);
        }
    }

    /// `/wake_up[?tags=...]`; returns whether the engine is awake afterwards.
    pub fn wake(&self, tags: Option<&[String]>) -> bool {
        let t0 = Instant::now();
        let mut g = self.lock();
        match tags {
            None => g.asleep_tags.clear(),
            Some(tags) => g.asleep_tags.retain(|t| !tags.contains(t)),
        }
        let awake = g.asleep_tags.is_empty();
        if awake {
            g.sleep = SleepLevel::Awake;
        }
        let secs = t0.elapsed().as_secs_f64();
        if let Some(h) = g.stats.sleep_ops.get_mut("wake") {
            h.observe(secs);
        }
        drop(g);
        self.notify.notify_one();
        awake
    }

    pub fn is_sleeping(&self) -> bool {
        self.lock().sleep != SleepLevel::Awake
    }

    pub fn reset_prefix_cache(&self) {
        self.lock().prefix.clear();
    }
}
