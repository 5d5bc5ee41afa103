//! vllm-crush-gen: a fixed-seed generator of realistic Crush conversations, for tests and
//! benchmarks.
//!
//! The output looks like what Crush writes (`internal/message/content.go`): user turns of
//! prose (sometimes pasted logs, code, an image), assistant turns with reasoning, text,
//! tool calls (`input` is a JSON string inside the JSON) and a finish part, tool turns
//! with results (file views with line numbers, compiler and test output, grep hits,
//! directory trees, long pretty-printed JSON from fetches), sub-agent sessions with
//! Crush's `<message id>$$<tool call id>` ids, todos, file history and read files.
//! Prose mixes English with CJK, emoji and right-to-left text.
//!
//! Deterministic for a seed: a hand-written SplitMix64, no clock, no hash map order.
//! Compressibility is realistic (zstd level 3 gives about 4-8x on the `parts`, like
//! real sessions): words come from a technical vocabulary with a Zipf-like skew,
//! identifiers are built from the same words, and the few incompressible bits
//! (reasoning signatures, image data) are rare and small. Not random noise, not a
//! repeated template.

use rusqlite::Connection;
use serde_json::{Value, json};
use vllm_crush_db::{self as crush_db, Conversation, Row};
use vllm_crush_db::{Error, Result};

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationSpec {
    /// Same seed, same conversation, byte for byte.
    pub seed: u64,
    /// Messages over all sessions.
    pub messages: usize,
    /// Sub-agent sessions; every second one is nested in the one before, so two give
    /// two levels (root → sub → sub-sub).
    pub sub_sessions: usize,
    /// Approximate total size of the messages' `parts`, in bytes; `None`: about 1.5 KB
    /// a message. Averages below ~600 bytes a message come out larger than asked (the
    /// JSON of a tool call or result alone is a few hundred bytes).
    pub target_bytes: Option<usize>,
}

impl ConversationSpec {
    /// A spec with no sub-sessions and natural sizes.
    pub fn new(seed: u64, messages: usize) -> ConversationSpec {
        ConversationSpec {
            seed,
            messages,
            sub_sessions: 0,
            target_bytes: None,
        }
    }
}

/// Inserts a generated conversation into a Crush database, creating Crush's schema
/// first when the database has no `sessions` table; returns the root session id. The
/// rows are stored exactly as [`conversation`] returns them (the same insert path as
/// `crush_db::restore`), so an export of the root equals `conversation(spec)`.
pub fn insert(conn: &Connection, spec: &ConversationSpec) -> Result<String> {
    let has_schema: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sessions')",
        [],
        |r| r.get(0),
    )?;
    if !has_schema {
        crush_db::create_schema(conn)?;
    }
    let conv = conversation(spec);
    let path = conn
        .path()
        .map(std::path::PathBuf::from)
        .unwrap_or_default();
    let tx = conn.unchecked_transaction()?;
    let report = crush_db::insert_conversation(&tx, &conv, &path)?;
    if !report.sessions_skipped_existing.is_empty() {
        return Err(Error::invalid(
            "spec",
            format!(
                "the database already has session(s) {:?} of this seed",
                report.sessions_skipped_existing
            ),
        ));
    }
    tx.commit()?;
    Ok(conv.root_id)
}

/// A generated conversation, without a database (for benchmarks).
pub fn conversation(spec: &ConversationSpec) -> Conversation {
    Generator::new(spec).run()
}

/// SplitMix64: tiny, fast, and good enough for test data.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`); the modulo bias is irrelevant here.
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }

    /// Skewed towards the front of `xs`, like word frequencies.
    fn zipf<T: Copy>(&mut self, xs: &[T]) -> T {
        let u = self.unit();
        xs[((xs.len() as f64) * u * u * u) as usize]
    }

    /// A log-normal-ish weight with median 1.
    fn spread(&mut self, sigma: f64) -> f64 {
        // Sum of uniforms: close enough to a normal for a size distribution.
        let n: f64 = (0..4).map(|_| self.unit()).sum::<f64>() - 2.0;
        (n * sigma * 1.7).exp()
    }

    fn hex(&mut self, len: usize) -> String {
        const HEX: &[u8] = b"0123456789abcdef";
        (0..len).map(|_| char::from(HEX[self.below(16)])).collect()
    }

    /// A version-4 UUID, as Crush's ids are.
    fn uuid(&mut self) -> String {
        let variant = ['8', '9', 'a', 'b'][self.below(4)];
        format!(
            "{}-{}-4{}-{}{}-{}",
            self.hex(8),
            self.hex(4),
            self.hex(3),
            variant,
            self.hex(3),
            self.hex(12)
        )
    }

    fn base64(&mut self, len: usize) -> String {
        const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s: String = (0..len).map(|_| char::from(B64[self.below(64)])).collect();
        while !s.len().is_multiple_of(4) {
            s.push('=');
        }
        s
    }
}

/// Words of a coding session, most frequent first (the order matters to [`Rng::zipf`]).
const WORDS_TEXT: &str = "the to a of and is in that it this for we be on with not as file function test error so \
     can are should but now from which model when if value config server will then need use \
     type there request first one by an all state session call check path code let was return \
     only output field line new run time struct method data message tool build each module \
     crate memory result option also case because change read write store update handler \
     client response token cache queue worker thread lock timeout retry endpoint metric gauge \
     counter histogram window sample batch prompt kv block layer weight tensor parallel shard \
     gpu device driver process signal child parent group pid port socket stream chunk buffer \
     bytes length limit range index key map list vector string number integer float boolean \
     schema column row table query transaction commit rollback migration version upgrade \
     default argument flag parser token span trace log warning failure panic assert expected \
     actual mismatch missing invalid unknown duplicate stale fresh latest previous next \
     current simple small large slow fast safe exact async blocking runtime spawn join await \
     future task channel sender receiver closure trait generic lifetime borrow owned clone \
     serialize deserialize json toml yaml http header body status route middleware auth \
     secret redact audit permission tier gate lease holder renew expire reaper sampler \
     launcher estimate quantization context sequence scheduler preemption prefix hit rate \
     throughput latency percentile p99 median budget pressure";

/// Sentences of the kind that recur in coding sessions; `{i}` is an identifier, `{t}` a
/// type, `{p}` a path, `{w}` a word, `{n}` a number.
const PHRASES: &[&str] = &[
    "Let me look at `{i}` in {p} first.",
    "Now I'll update `{i}` to handle the {w} case.",
    "The test fails because `{i}` returns `{t}` instead of `{t}`.",
    "I'll run the tests again to check that the change works.",
    "All {n} tests pass now.",
    "Let me check how `{i}` is used elsewhere in the code.",
    "This is the cause: `{i}` is called before `{i}` is set.",
    "I need to read {p} to see what `{t}` looks like.",
    "The build succeeded, but there is a warning about `{i}` being unused.",
    "Now let me fix the error in {p}.",
    "I found the problem. The `{i}` field is never updated when the {w} changes.",
    "Let me search for `{i}` to find every caller.",
    "Good, that compiles. Next, the `{t}` type needs a `{i}` method.",
    "I'll add a test for the {w} {w} case.",
    "The {w} is {w} because `{i}` holds the lock while it waits for the {w}.",
    "Can you make `{i}` return an error instead of panicking?",
    "Please also update the docs for `{t}`.",
    "Done. I changed {n} files: {p} and {p}.",
];

/// [`WORDS_TEXT`] split once.
fn words() -> &'static [&'static str] {
    static WORDS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    WORDS.get_or_init(|| WORDS_TEXT.split_whitespace().collect())
}

const CJK: &str = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处理府研";
const EMOJI: &[&str] = &[
    "🚀", "✅", "❌", "🔥", "💡", "🐛", "📦", "⚠️", "🎉", "👍", "🙏", "😅", "🤔", "📝", "🔧",
];
const RTL: &[&str] = &[
    "مرحبا",
    "شكرا",
    "الملف",
    "البرنامج",
    "الخطأ",
    "النظام",
    "قاعدة البيانات",
    "الخادم",
    "שלום",
    "קובץ",
    "שגיאה",
    "מערכת",
    "תודה",
    "בדיקה",
    "שרת",
];
const LANGS: &[&str] = &["rust", "python", "go", "typescript"];
const RUST_TYPES: &[&str] = &[
    "String",
    "u64",
    "usize",
    "i64",
    "f64",
    "bool",
    "Vec<String>",
    "Option<u64>",
    "Duration",
    "PathBuf",
    "Value",
];
const TOOLS: &[&str] = &[
    "view",
    "bash",
    "grep",
    "edit",
    "ls",
    "view",
    "bash",
    "fetch",
    "glob",
    "write",
    "multiedit",
    "view",
    "agent",
    "todos",
    "diagnostics",
];
const MODELS: &[&str] = &[
    "Qwen/Qwen3-Coder-30B-A3B-Instruct",
    "meta-llama/Llama-3.3-70B-Instruct",
    "openai/gpt-oss-120b",
    "mistralai/Devstral-Small-2507",
];
const DIRS: &[&str] = &[
    "src",
    "src/server",
    "src/store",
    "crates/core/src",
    "crates/cli/src",
    "tests",
    "internal/db",
    "internal/agent",
    "pkg/api",
    "scripts",
];
const EXTS: &[&str] = &["rs", "rs", "rs", "py", "go", "ts", "toml", "md"];
const FINISH: &[&str] = &["end_turn", "end_turn", "end_turn", "max_tokens", "canceled"];

/// What one message will be, decided before any content so that sizes can be planned.
struct Slot {
    session: usize,
    role: &'static str,
    /// Tool names: calls of an assistant message, results of a tool message.
    tools: Vec<&'static str>,
    /// Tool call ids, shared by a call and its result.
    call_ids: Vec<String>,
    /// The last assistant message of a turn (finish `end_turn`, no tool calls).
    final_turn: bool,
    weight: f64,
}

struct Generator {
    rng: Rng,
    spec: ConversationSpec,
    project: String,
    /// The project's identifiers and type names: real code reuses a few hundred names.
    idents: Vec<String>,
    types: Vec<String>,
    /// The files the session keeps coming back to (viewed, grepped, edited again and
    /// again), which is most of why real sessions compress as well as they do.
    work: Vec<WorkFile>,
    /// Test names of the project, as `cargo test` prints them run after run.
    tests: Vec<String>,
}

struct WorkFile {
    path: String,
    lines: Vec<String>,
}

impl Generator {
    fn new(spec: &ConversationSpec) -> Generator {
        let mut rng = Rng(spec.seed ^ 0x5DEE_CE66_D1CE_4E5B);
        let project = format!(
            "/home/{}/{}-{}",
            ["dev", "alice", "kim", "omar", "yuki"][rng.below(5)],
            rng.zipf(&words()[40..]),
            rng.zipf(&words()[60..])
        );
        let mut g = Generator {
            rng,
            spec: spec.clone(),
            project,
            idents: Vec::new(),
            types: Vec::new(),
            work: Vec::new(),
            tests: Vec::new(),
        };
        g.idents = (0..240).map(|_| g.fresh_ident()).collect();
        g.types = (0..60).map(|_| g.fresh_type_name()).collect();
        let nwork = (12 + spec.messages / 150).min(80);
        for _ in 0..nwork {
            let path = g.fresh_file_path();
            let lang = match path.rsplit('.').next() {
                Some("py") => "python",
                Some("go") => "go",
                Some("ts") => "typescript",
                _ => "rust",
            };
            let len = g.rng.range(1500, 12_000);
            let lines = g.code(lang, len).lines().map(str::to_owned).collect();
            g.work.push(WorkFile { path, lines });
        }
        g.tests = (0..120)
            .map(|_| format!("{}::tests::{}", g.ident(), g.ident()))
            .collect();
        g
    }

    // ---------------------------------------------------------------- text

    fn word(&mut self) -> &'static str {
        self.rng.zipf(words())
    }

    fn fresh_ident(&mut self) -> String {
        let n = self.rng.range(1, 3);
        let mut s = String::new();
        for i in 0..n {
            if i > 0 {
                s.push('_');
            }
            let w = self.rng.zipf(&words()[20..]);
            s.push_str(w);
        }
        s
    }

    fn ident(&mut self) -> String {
        if !self.idents.is_empty() && self.rng.chance(0.9) {
            let i = self.rng.zipf(&(0..self.idents.len()).collect::<Vec<_>>());
            self.idents[i].clone()
        } else {
            self.fresh_ident()
        }
    }

    fn fresh_type_name(&mut self) -> String {
        let n = self.rng.range(1, 2);
        (0..n)
            .map(|_| {
                let w = self.rng.zipf(&words()[20..]);
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                    .unwrap_or_default()
            })
            .collect()
    }

    fn type_name(&mut self) -> String {
        if !self.types.is_empty() && self.rng.chance(0.9) {
            let i = self.rng.below(self.types.len());
            self.types[i].clone()
        } else {
            self.fresh_type_name()
        }
    }

    fn fresh_file_path(&mut self) -> String {
        let dir = self.rng.zipf(DIRS);
        let ext = self.rng.pick(EXTS);
        let name = self.fresh_ident();
        format!("{}/{dir}/{name}.{ext}", self.project)
    }

    /// A working-set file (skewed towards the first few), by index.
    fn work_file(&mut self) -> usize {
        let u = self.rng.unit();
        ((self.work.len() as f64) * u * u) as usize
    }

    fn file_path(&mut self) -> String {
        if !self.work.is_empty() && self.rng.chance(0.85) {
            let i = self.work_file();
            self.work[i].path.clone()
        } else {
            self.fresh_file_path()
        }
    }

    /// About `bytes` of consecutive lines of a working-set file, from a random line,
    /// with their line numbers (1-based) when `numbered`.
    fn file_slice(&mut self, bytes: usize, numbered: bool) -> String {
        let i = self.work_file();
        let n = self.work[i].lines.len().max(1);
        let start = self.rng.below(n);
        let mut s = String::new();
        let mut k = start;
        while s.len() < bytes && k < n {
            let line = &self.work[i].lines[k];
            if numbered {
                s.push_str(&format!("{:6}|{line}\n", k + 1));
            } else {
                s.push_str(line);
                s.push('\n');
            }
            k += 1;
        }
        s
    }

    fn sentence(&mut self) -> String {
        if self.rng.chance(0.5) {
            return self.phrase();
        }
        let n = self.rng.range(5, 18);
        let mut s = String::new();
        for i in 0..n {
            if i > 0 {
                s.push(' ');
            }
            match self.rng.below(40) {
                0 => {
                    let id = self.ident();
                    s.push_str(&format!("`{id}`"));
                }
                1 => {
                    let p = self.file_path();
                    s.push_str(&p);
                }
                2 => s.push_str(&self.rng.below(5000).to_string()),
                _ => {
                    let w = self.word();
                    s.push_str(w);
                }
            }
        }
        let mut c = s.chars();
        let mut out: String = c
            .next()
            .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
            .unwrap_or_default();
        out.push_str(self.rng.pick(&[".", ".", ".", ".", ":", "?", "!"]));
        if self.rng.chance(0.04) {
            out.push(' ');
            out.push_str(self.rng.pick(EMOJI));
        }
        out
    }

    /// One of [`PHRASES`], filled in.
    fn phrase(&mut self) -> String {
        let template = self.rng.zipf(PHRASES);
        let mut out = String::with_capacity(template.len() + 40);
        let mut rest = template;
        while let Some(pos) = rest.find('{') {
            out.push_str(&rest[..pos]);
            let key = &rest[pos + 1..pos + 2];
            match key {
                "i" => {
                    let v = self.ident();
                    out.push_str(&v);
                }
                "t" => {
                    let v = self.type_name();
                    out.push_str(&v);
                }
                "p" => {
                    let v = self.file_path();
                    out.push_str(&v);
                }
                "n" => out.push_str(&self.rng.range(2, 400).to_string()),
                _ => out.push_str(self.word()),
            }
            rest = &rest[pos + 3..];
        }
        out.push_str(rest);
        out
    }

    fn cjk_sentence(&mut self) -> String {
        let chars: Vec<char> = CJK.chars().collect();
        let n = self.rng.range(8, 30);
        let mut s: String = (0..n).map(|_| self.rng.zipf(&chars)).collect();
        s.push('。');
        s
    }

    fn rtl_sentence(&mut self) -> String {
        let n = self.rng.range(3, 9);
        let mut words: Vec<String> = (0..n).map(|_| (self.rng.pick(RTL)).to_owned()).collect();
        // Mixed direction, as when someone names a file in a Hebrew or Arabic sentence.
        if self.rng.chance(0.5) {
            words.insert(n / 2, format!("`{}`", self.ident()));
        }
        words.join(" ") + "."
    }

    /// Prose of about `bytes` bytes: paragraphs, bullet lists, sometimes other scripts.
    fn prose(&mut self, bytes: usize) -> String {
        let mut s = String::new();
        let multilingual = self.rng.chance(0.08);
        while s.len() < bytes {
            if !s.is_empty() {
                s.push_str("\n\n");
            }
            if self.rng.chance(0.15) {
                for _ in 0..self.rng.range(2, 5) {
                    s.push_str("- ");
                    s.push_str(&self.sentence());
                    s.push('\n');
                }
                continue;
            }
            for i in 0..self.rng.range(1, 5) {
                if i > 0 {
                    s.push(' ');
                }
                if multilingual && self.rng.chance(0.4) {
                    if self.rng.chance(0.6) {
                        s.push_str(&self.cjk_sentence());
                    } else {
                        s.push_str(&self.rtl_sentence());
                    }
                } else {
                    s.push_str(&self.sentence());
                }
                if s.len() >= bytes {
                    break;
                }
            }
        }
        s
    }

    /// A function or type definition in `lang`, a handful of lines.
    fn code_unit(&mut self, lang: &str) -> String {
        let name = self.ident();
        let ty = self.type_name();
        let ty2 = self.type_name();
        let field = self.ident();
        let arg = self.ident();
        let var = self.ident();
        let method = self.ident();
        let comment = self.sentence();
        let rt = self.rng.pick(RUST_TYPES);
        match lang {
            "rust" => match self.rng.below(3) {
                0 => {
                    let mut s = format!(
                        "/// {comment}\n#[derive(Debug, Clone, PartialEq)]\npub struct {ty} {{\n"
                    );
                    for _ in 0..self.rng.range(2, 6) {
                        let f = self.ident();
                        let t = self.rng.pick(RUST_TYPES);
                        s.push_str(&format!("    pub {f}: {t},\n"));
                    }
                    s.push_str("}\n");
                    s
                }
                1 => format!(
                    "impl {ty} {{\n    /// {comment}\n    pub fn {name}(&self, {arg}: &{rt}) -> Result<{ty2}> {{\n        let {var} = self.{field}.{method}({arg})?;\n        if {var}.is_empty() {{\n            return Err(Error::invalid(\"{field}\", \"{} {} {}\"));\n        }}\n        Ok({ty2}::from({var}))\n    }}\n}}\n",
                    self.word(),
                    self.word(),
                    self.word()
                ),
                _ => format!(
                    "#[test]\nfn {name}() {{\n    let {var} = {ty}::new({});\n    let {arg} = {var}.{method}(&\"{field}\".to_string()).unwrap();\n    assert_eq!({arg}.{field}, {}, \"{comment}\");\n}}\n",
                    self.rng.below(100),
                    self.rng.below(1000)
                ),
            },
            "python" => format!(
                "def {name}(self, {arg}: {ty}) -> {ty2}:\n    \"\"\"{comment}\"\"\"\n    {var} = self.{field}.{method}({arg})\n    if not {var}:\n        raise ValueError(f\"{field}: {{{arg}!r}}\")\n    return {ty2}({var}, timeout={})\n",
                self.rng.below(120)
            ),
            "go" => format!(
                "// {ty}{name} {comment}\nfunc (s *{ty}) {ty2}(ctx context.Context, {arg} string) (*{ty2}, error) {{\n\t{var}, err := s.{field}.{ty}(ctx, {arg})\n\tif err != nil {{\n\t\treturn nil, fmt.Errorf(\"{method}: %w\", err)\n\t}}\n\treturn &{ty2}{{ID: {var}.ID, Count: {}}}, nil\n}}\n",
                self.rng.below(64)
            ),
            _ => format!(
                "export async function {name}({arg}: {ty}): Promise<{ty2}> {{\n  // {comment}\n  const {var} = await {arg}.{method}({{ limit: {}, {field}: true }});\n  return {{ ...{var}, ok: {var}.status === 200 }};\n}}\n",
                self.rng.below(500)
            ),
        }
    }

    fn code(&mut self, lang: &str, bytes: usize) -> String {
        let mut s = String::new();
        while s.len() < bytes {
            if !s.is_empty() {
                s.push('\n');
            }
            s.push_str(&self.code_unit(lang));
        }
        s
    }

    /// Assistant or user text: prose with code blocks now and then.
    fn rich_text(&mut self, bytes: usize) -> String {
        let mut s = String::new();
        while s.len() + 2 < bytes {
            if !s.is_empty() {
                s.push_str("\n\n");
            }
            let left = bytes - s.len();
            if left > 300 && self.rng.chance(0.3) {
                let lang = self.rng.pick(LANGS);
                let len = (left / 2).min(self.rng.range(200, 1500));
                let body = self.code(lang, len);
                s.push_str(&format!("```{lang}\n{body}```"));
            } else {
                let len = left.min(self.rng.range(100, 700));
                s.push_str(&self.prose(len));
            }
        }
        s
    }

    // ---------------------------------------------------------------- tools

    fn tool_input(&mut self, tool: &str, bulk: usize) -> Value {
        match tool {
            "bash" => json!({
                "command": self.rng.pick(&[
                    "cargo test -p vllm-core", "cargo build --release", "git status --short",
                    "cargo clippy --all-targets -- -D warnings", "ls -la target/debug",
                    "go test ./internal/...", "pytest -x -q tests/", "rg -n TODO src",
                ]).to_string(),
                "description": self.sentence(),
            }),
            "view" => {
                json!({"file_path": self.file_path(), "offset": self.rng.below(400), "limit": 200})
            }
            "grep" => {
                json!({"pattern": format!("fn {}|{}", self.ident(), self.type_name()), "path": self.project.clone(), "include": "*.rs"})
            }
            "glob" => {
                json!({"pattern": format!("**/*{}*.{}", self.word(), self.rng.pick(EXTS)), "path": self.project.clone()})
            }
            "ls" => json!({"path": format!("{}/{}", self.project, self.rng.zipf(DIRS))}),
            "fetch" => {
                json!({"url": format!("https://api.github.com/repos/{}/{}/issues?state=open&per_page=50", self.word(), self.ident()), "format": "text", "timeout": 30})
            }
            "edit" | "multiedit" if !self.work.is_empty() => {
                // The old text is really in the file; the new one changes a line of it.
                let old = self.file_slice((bulk / 2).max(40), false);
                let mut lines: Vec<String> = old.lines().map(str::to_owned).collect();
                let k = self.rng.below(lines.len().max(1));
                if let Some(l) = lines.get_mut(k) {
                    let extra = self.ident();
                    l.push_str(&format!(" // {extra}"));
                }
                json!({
                    "file_path": self.file_path(),
                    "old_string": old,
                    "new_string": lines.join("\n"),
                })
            }
            "write" => {
                let lang = self.rng.pick(LANGS);
                json!({"file_path": self.file_path(), "content": self.code(lang, bulk)})
            }
            "agent" => json!({"prompt": self.prose(bulk.clamp(80, 2000))}),
            "todos" => json!({"todos": self.todos_value()}),
            _ => json!({"file_path": self.file_path()}),
        }
    }

    fn todos_value(&mut self) -> Value {
        let n = self.rng.range(2, 6);
        Value::Array(
            (0..n)
                .map(|i| {
                    let content = self.sentence();
                    json!({
                        "content": content,
                        "status": if i + 1 < n / 2 + 1 { "completed" } else if i == n / 2 { "in_progress" } else { "pending" },
                        "active_form": format!("{}ing {}", self.word(), self.word()),
                    })
                })
                .collect(),
        )
    }

    /// A tool's output of about `bytes` bytes.
    fn tool_output(&mut self, tool: &str, bytes: usize) -> String {
        let mut s = String::new();
        match tool {
            "view" => {
                s.push_str("<file>\n");
                if bytes < 16_000 && !self.work.is_empty() {
                    let slice = self.file_slice(bytes, true);
                    s.push_str(&slice);
                } else {
                    let lang = self.rng.pick(LANGS);
                    let code = self.code(lang, bytes);
                    for (i, line) in code.lines().enumerate() {
                        s.push_str(&format!("{:6}|{line}\n", i + 1));
                    }
                }
                s.push_str("</file>\n");
            }
            "bash" => {
                let krate = self.ident();
                while s.len() < bytes {
                    match self.rng.below(6) {
                        0 => s.push_str(&format!(
                            "   Compiling {krate} v0.{}.{} ({}/crates/{krate})\n",
                            self.rng.below(9),
                            self.rng.below(20),
                            self.project
                        )),
                        1 => {
                            let p = self.file_path();
                            let w = self.sentence();
                            s.push_str(&format!(
                                "error[E0{}]: {w}\n  --> {p}:{}:{}\n   |\n{:3}|     {}\n   |     ^^^^ {}\n\n",
                                self.rng.range(200, 799),
                                self.rng.below(400),
                                self.rng.below(60),
                                self.rng.below(400),
                                self.code_unit("rust").lines().next().unwrap_or_default(),
                                self.sentence()
                            ));
                        }
                        _ => {
                            let name = self.tests[self.rng.below(self.tests.len())].clone();
                            let ok = if self.rng.chance(0.93) {
                                "ok"
                            } else {
                                "FAILED"
                            };
                            s.push_str(&format!("test {name} ... {ok}\n"));
                        }
                    }
                }
                s.push_str(&format!(
                    "\ntest result: ok. {} passed; 0 failed; 0 ignored; finished in {}.{:02}s\n",
                    self.rng.below(300),
                    self.rng.below(20),
                    self.rng.below(100)
                ));
            }
            "grep" | "glob" => {
                s.push_str(&format!("Found {} matches\n", self.rng.range(3, 80)));
                while s.len() < bytes {
                    let p = self.file_path();
                    s.push_str(&format!("{p}:\n"));
                    for _ in 0..self.rng.range(1, 4) {
                        let line = self.code_unit("rust");
                        s.push_str(&format!(
                            "  Line {}: {}\n",
                            self.rng.below(900),
                            line.lines().nth(1).unwrap_or_default().trim()
                        ));
                    }
                }
            }
            "ls" => {
                s.push_str(&format!("- {}/\n", self.project));
                while s.len() < bytes {
                    let d = self.rng.zipf(DIRS);
                    s.push_str(&format!("  - {d}/\n"));
                    for _ in 0..self.rng.range(2, 8) {
                        let f = self.ident();
                        let e = self.rng.pick(EXTS);
                        s.push_str(&format!("    - {f}.{e}\n"));
                    }
                }
            }
            "fetch" => {
                // Pretty-printed JSON, like an API listing: long and repetitive in its keys.
                s.push_str("[\n");
                let mut first = true;
                while s.len() < bytes {
                    if !first {
                        s.push_str(",\n");
                    }
                    first = false;
                    let body_len = self.rng.range(60, 500);
                    let item = json!({
                        "id": 1_000_000 + self.rng.below(9_000_000),
                        "number": self.rng.below(5000),
                        "title": self.sentence(),
                        "state": if self.rng.chance(0.8) { "open" } else { "closed" },
                        "labels": (0..self.rng.below(3)).map(|_| json!({"name": self.word(), "color": self.rng.hex(6)})).collect::<Vec<_>>(),
                        "user": {"login": self.ident(), "id": self.rng.below(10_000_000), "type": "User"},
                        "comments": self.rng.below(40),
                        "created_at": format!("2025-{:02}-{:02}T{:02}:{:02}:{:02}Z", self.rng.range(1, 12), self.rng.range(1, 28), self.rng.below(24), self.rng.below(60), self.rng.below(60)),
                        "body": self.prose(body_len),
                    });
                    let pretty = serde_json::to_string_pretty(&item).unwrap_or_default();
                    for line in pretty.lines() {
                        s.push_str("  ");
                        s.push_str(line);
                        s.push('\n');
                    }
                    s.pop();
                }
                s.push_str("\n]\n");
            }
            "agent" => s.push_str(&self.rich_text(bytes)),
            "todos" => s.push_str("Todo list updated successfully.\n"),
            "diagnostics" => {
                while s.len() < bytes {
                    let p = self.file_path();
                    let sent = self.sentence();
                    s.push_str(&format!(
                        "{p}:{}:{} [warning] {sent}\n",
                        self.rng.below(500),
                        self.rng.below(80)
                    ));
                }
            }
            _ => {
                let p = self.file_path();
                s.push_str(&format!(
                    "<result>\nContent replaced in file: {p}\n</result>\n"
                ));
            }
        }
        s
    }

    // ---------------------------------------------------------------- parts

    fn parts_json(parts: Vec<(&str, Value)>) -> String {
        let list: Vec<Value> = parts
            .into_iter()
            .map(|(t, d)| json!({"type": t, "data": d}))
            .collect();
        serde_json::to_string(&list).unwrap_or_else(|_| "[]".into())
    }

    fn user_parts(&mut self, bytes: usize, session_prompt: Option<&str>) -> String {
        let mut parts = Vec::new();
        let text = match session_prompt {
            Some(p) => p.to_owned(),
            None => {
                let len = bytes.min(self.rng.range(40, 400));
                let mut t = self.prose(len);
                // People paste logs and code into their prompts.
                if bytes > t.len() + 100 {
                    let left = bytes - t.len();
                    if self.rng.chance(0.5) {
                        let out = self.tool_output("bash", left);
                        t.push_str(&format!("\n\n```\n{out}```"));
                    } else {
                        t.push_str("\n\n");
                        let more = self.rich_text(left);
                        t.push_str(&more);
                    }
                }
                t
            }
        };
        parts.push(("text", json!({"text": text})));
        if self.rng.chance(0.01) {
            let len = self.rng.range(1500, 6000);
            let data = self.rng.base64(len);
            let name = self.ident();
            let p = format!("{}/docs/{name}.png", self.project);
            parts.push((
                "binary",
                json!({"Path": p, "MIMEType": "image/png", "Data": data}),
            ));
        } else if self.rng.chance(0.005) {
            let url = format!("https://example.com/screenshots/{}.png", self.rng.hex(12));
            parts.push(("image_url", json!({"url": url, "detail": "auto"})));
        }
        Self::parts_json(parts)
    }

    fn assistant_parts(&mut self, slot: &Slot, bytes: usize, t: i64) -> String {
        let mut parts = Vec::new();
        let calls_share = if slot
            .tools
            .iter()
            .any(|t| matches!(*t, "edit" | "multiedit" | "write"))
        {
            bytes / 2
        } else {
            0
        };
        let rest = bytes.saturating_sub(calls_share + 120 * slot.tools.len() + 60);
        if self.rng.chance(0.6) {
            let thinking = self.prose((rest * 2 / 5).max(60));
            // Only some providers sign reasoning; vLLM's models do not.
            let signature = if self.rng.chance(0.05) {
                let len = self.rng.range(200, 400);
                self.rng.base64(len)
            } else {
                String::new()
            };
            parts.push((
                "reasoning",
                json!({
                    "thinking": thinking,
                    "signature": signature,
                    "thought_signature": "",
                    "tool_id": "",
                    "responses_data": null,
                    "started_at": t,
                    "finished_at": t + self.rng.range(1, 20) as i64,
                }),
            ));
        }
        let text_len = bytes.saturating_sub(
            Self::parts_json(parts.clone()).len() + calls_share + 120 * slot.tools.len() + 60,
        );
        if slot.final_turn || text_len > 200 || self.rng.chance(0.5) {
            let text = self.rich_text(text_len.max(30));
            parts.push(("text", json!({"text": text})));
        }
        let per_call = calls_share / slot.tools.len().max(1);
        for (tool, id) in slot.tools.iter().zip(&slot.call_ids) {
            let input = self.tool_input(tool, per_call);
            parts.push((
                "tool_call",
                json!({
                    "id": id,
                    "name": tool,
                    "input": input.to_string(),
                    "provider_executed": false,
                    "finished": true,
                }),
            ));
        }
        let reason = if slot.final_turn {
            self.rng.pick(FINISH)
        } else {
            "tool_use"
        };
        parts.push(("finish", json!({"reason": reason, "time": t + 1})));
        Self::parts_json(parts)
    }

    fn tool_parts(&mut self, slot: &Slot, bytes: usize, t: i64) -> String {
        let n = slot.tools.len().max(1);
        let weights: Vec<f64> = (0..n).map(|_| self.rng.spread(0.7)).collect();
        let total: f64 = weights.iter().sum();
        let mut parts = Vec::new();
        for ((tool, id), w) in slot.tools.iter().zip(&slot.call_ids).zip(weights) {
            let len = ((bytes.saturating_sub(220 * n)) as f64 * w / total) as usize;
            let is_error = self.rng.chance(0.05);
            let content = if is_error {
                format!("Error: {}", self.sentence())
            } else {
                self.tool_output(tool, len)
            };
            let metadata = match *tool {
                "bash" => json!({"start_time": t * 1000, "end_time": t * 1000 + self.rng.below(90_000) as i64, "description": self.sentence()}).to_string(),
                "view" => json!({"file_path": self.file_path(), "content": ""}).to_string(),
                "edit" | "multiedit" => json!({"additions": self.rng.below(40), "removals": self.rng.below(20)}).to_string(),
                _ => String::new(),
            };
            parts.push((
                "tool_result",
                json!({
                    "tool_call_id": id,
                    "name": tool,
                    "content": content,
                    "data": "",
                    "mime_type": "",
                    "metadata": metadata,
                    "is_error": is_error,
                }),
            ));
        }
        Self::parts_json(parts)
    }

    // ---------------------------------------------------------------- plan

    /// Message counts per session: the root gets most, each sub-session a share.
    fn split_messages(&mut self) -> Vec<usize> {
        let n = self.spec.messages;
        let subs = self.spec.sub_sessions;
        if subs == 0 {
            return vec![n];
        }
        let per_sub = ((n as f64 * 0.35) / subs as f64).floor() as usize;
        let per_sub = per_sub.max(2).min(n / (subs + 1));
        let mut counts = vec![n - per_sub * subs];
        counts.extend(std::iter::repeat_n(per_sub, subs));
        counts
    }

    fn call_id(&mut self) -> String {
        if self.rng.chance(0.5) {
            format!("call_{}", self.rng.hex(24))
        } else {
            format!(
                "toolu_{}",
                self.rng.base64(24).replace(['+', '/', '='], "x")
            )
        }
    }

    /// Turns for one session: user, then rounds of assistant (tool calls) and tool
    /// (results), then a final assistant answer.
    fn plan_session(&mut self, session: usize, count: usize, slots: &mut Vec<Slot>) {
        let mut made = 0;
        while made < count {
            slots.push(self.slot(session, "user", Vec::new(), false));
            made += 1;
            let rounds = self.rng.range(0, 4);
            for _ in 0..rounds {
                if made + 2 > count {
                    break;
                }
                let k = if self.rng.chance(0.7) {
                    1
                } else {
                    self.rng.range(2, 3)
                };
                let tools: Vec<&'static str> = (0..k).map(|_| self.rng.zipf(TOOLS)).collect();
                let ids: Vec<String> = (0..k).map(|_| self.call_id()).collect();
                let mut a = self.slot(session, "assistant", tools.clone(), false);
                a.call_ids = ids.clone();
                let mut r = self.slot(session, "tool", tools, false);
                r.call_ids = ids;
                slots.push(a);
                slots.push(r);
                made += 2;
            }
            if made < count {
                slots.push(self.slot(session, "assistant", Vec::new(), true));
                made += 1;
            }
        }
    }

    fn slot(
        &mut self,
        session: usize,
        role: &'static str,
        tools: Vec<&'static str>,
        final_turn: bool,
    ) -> Slot {
        let role_factor = match role {
            "user" => 0.35,
            "assistant" => 0.8,
            _ => 1.6,
        };
        let mut weight = role_factor * self.rng.spread(0.8);
        // Now and then a huge tool result: a whole file, a long log, a big API answer.
        if role == "tool" && self.rng.chance(0.004) {
            weight *= self.rng.range(60, 200) as f64;
        }
        Slot {
            session,
            role,
            tools,
            call_ids: Vec::new(),
            final_turn,
            weight,
        }
    }

    // ---------------------------------------------------------------- rows

    fn run(mut self) -> Conversation {
        let counts = self.split_messages();
        let nsess = counts.len();
        let mut slots = Vec::new();
        for (s, &c) in counts.iter().enumerate() {
            self.plan_session(s, c, &mut slots);
        }
        let target = self.spec.target_bytes.unwrap_or(1500 * self.spec.messages) as f64;
        let total_weight: f64 = slots.iter().map(|s| s.weight).sum::<f64>().max(1e-9);

        // Session ids and clocks: the root first, sub-sessions start later.
        let t0: i64 = 1_735_689_600 + self.rng.below(15_000_000) as i64;
        let span = (self.spec.messages as i64) * 15 + 60;
        let model = self.rng.pick(MODELS);
        let mut ids = Vec::with_capacity(nsess);
        let mut parents: Vec<Option<usize>> = Vec::with_capacity(nsess);
        let mut clocks = Vec::with_capacity(nsess);
        let mut titles = Vec::with_capacity(nsess);
        for s in 0..nsess {
            if s == 0 {
                ids.push(self.rng.uuid());
                parents.push(None);
                clocks.push(t0);
                let t = self.sentence();
                titles.push(
                    t.chars()
                        .take(50)
                        .collect::<String>()
                        .trim_end_matches(['.', ':', '?', '!'])
                        .to_owned(),
                );
            } else {
                let msg = self.rng.uuid();
                let call = self.call_id();
                ids.push(format!("{msg}$${call}"));
                // Odd sub-sessions nest in the one before: root → sub → sub-sub.
                parents.push(Some(if s % 2 == 0 { s - 1 } else { 0 }));
                let parent_clock = clocks[parents[s].unwrap_or(0)];
                clocks.push(parent_clock + 5 + self.rng.below(span as usize / 2 + 1) as i64);
                titles.push(format!("{} {}", self.word(), self.ident()));
            }
        }
        let start: Vec<i64> = clocks.clone();

        let mut messages = Vec::with_capacity(slots.len());
        let mut last_update = start.clone();
        let mut produced = 0usize;
        let mut planned = 0f64;
        let mut first_user_done = vec![false; nsess];
        for slot in &slots {
            planned += target * slot.weight / total_weight;
            // Error feedback: what earlier messages over- or undershot is made up here.
            let budget = (planned - produced as f64).max(40.0) as usize;
            let t = clocks[slot.session];
            let id = self.rng.uuid();
            let prompt =
                if slot.session > 0 && !first_user_done[slot.session] && slot.role == "user" {
                    first_user_done[slot.session] = true;
                    Some(self.prose(budget.clamp(60, 3000)))
                } else {
                    None
                };
            let parts = match slot.role {
                "user" => self.user_parts(budget, prompt.as_deref()),
                "assistant" => self.assistant_parts(slot, budget, t),
                _ => self.tool_parts(slot, budget, t),
            };
            produced += parts.len();
            let duration = match slot.role {
                "assistant" => self.rng.range(2, 45) as i64,
                _ => 0,
            };
            let mut row = Row::new();
            row.insert("id".into(), json!(id));
            row.insert("session_id".into(), json!(ids[slot.session]));
            row.insert("role".into(), json!(slot.role));
            row.insert("parts".into(), Value::String(parts));
            let (m, p) = if slot.role == "assistant" {
                (json!(model), json!("vllm"))
            } else {
                (Value::Null, Value::Null)
            };
            row.insert("model".into(), m);
            row.insert("created_at".into(), json!(t));
            row.insert("updated_at".into(), json!(t + duration));
            row.insert(
                "finished_at".into(),
                if slot.role == "assistant" {
                    json!(t + duration)
                } else {
                    Value::Null
                },
            );
            row.insert("provider".into(), p);
            row.insert("is_summary_message".into(), json!(0));
            messages.push(row);
            last_update[slot.session] = t + duration;
            clocks[slot.session] = t + duration + self.rng.range(0, 25) as i64;
        }

        let mut sessions = Vec::with_capacity(nsess);
        let mut files = Vec::new();
        let mut read_files = Vec::new();
        for s in 0..nsess {
            let count = slots.iter().filter(|sl| sl.session == s).count();
            let prompt_tokens = (count * self.rng.range(800, 4000)) as i64;
            let completion_tokens = (count * self.rng.range(100, 900)) as i64;
            let cost = ((prompt_tokens as f64 * 0.15 + completion_tokens as f64 * 0.6) / 1e6 * 1e6)
                .round()
                / 1e6;
            let mut row = Row::new();
            row.insert("id".into(), json!(ids[s]));
            row.insert(
                "parent_session_id".into(),
                parents[s].map(|p| json!(ids[p])).unwrap_or(Value::Null),
            );
            row.insert("title".into(), json!(titles[s]));
            row.insert("message_count".into(), json!(count));
            row.insert("prompt_tokens".into(), json!(prompt_tokens));
            row.insert("completion_tokens".into(), json!(completion_tokens));
            row.insert("cost".into(), Value::from(cost));
            row.insert("updated_at".into(), json!(last_update[s]));
            row.insert("created_at".into(), json!(start[s]));
            row.insert("summary_message_id".into(), Value::Null);
            row.insert(
                "todos".into(),
                if s == 0 && self.rng.chance(0.7) {
                    json!(self.todos_value().to_string())
                } else {
                    Value::Null
                },
            );
            sessions.push(row);

            // File history: a few files, some with several versions.
            let nfiles = self.rng.range(0, 4);
            // (path, session, version) is unique in Crush's `files`.
            let mut paths = std::collections::BTreeSet::new();
            for _ in 0..nfiles {
                let path = self.file_path();
                if !paths.insert(path.clone()) {
                    continue;
                }
                let lang = self.rng.pick(LANGS);
                let versions = self.rng.range(1, 3);
                for v in 0..versions {
                    let at = start[s] + (v as i64 + 1) * self.rng.range(5, 120) as i64;
                    let len = self.rng.range(300, 3000);
                    let mut f = Row::new();
                    f.insert("id".into(), json!(self.rng.uuid()));
                    f.insert("session_id".into(), json!(ids[s]));
                    f.insert("path".into(), json!(path));
                    f.insert("content".into(), json!(self.code(lang, len)));
                    f.insert("version".into(), json!(v));
                    f.insert("created_at".into(), json!(at));
                    f.insert("updated_at".into(), json!(at));
                    files.push(f);
                }
            }
            let nread = self.rng.range(1, 6);
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..nread {
                let path = self.file_path();
                if !seen.insert(path.clone()) {
                    continue;
                }
                let mut r = Row::new();
                r.insert("session_id".into(), json!(ids[s]));
                r.insert("path".into(), json!(path));
                r.insert(
                    "read_at".into(),
                    json!(start[s] + self.rng.range(1, 600) as i64),
                );
                read_files.push(r);
            }
        }

        // The order an export reads them in: by time, then insertion (stable sorts).
        let time = |r: &Row, k: &str| r.get(k).and_then(Value::as_i64).unwrap_or(0);
        sessions.sort_by_key(|r| time(r, "created_at"));
        messages.sort_by_key(|r| time(r, "created_at"));
        files.sort_by_key(|r| time(r, "created_at"));
        read_files.sort_by_key(|r| time(r, "read_at"));

        Conversation {
            root_id: ids[0].clone(),
            sessions,
            messages,
            files,
            read_files,
            skipped: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_spread() {
        let mut a = Rng(7);
        let mut b = Rng(7);
        let xs: Vec<u64> = (0..100).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        let mut hist = [0usize; 10];
        for _ in 0..10_000 {
            hist[a.below(10)] += 1;
        }
        assert!(hist.iter().all(|&h| (800..1200).contains(&h)), "{hist:?}");
        let u = a.uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
    }

    #[test]
    fn tiny_specs_work() {
        for (messages, subs) in [(0, 0), (0, 3), (1, 0), (1, 2), (5, 3), (7, 1)] {
            let c = conversation(&ConversationSpec {
                seed: 1,
                messages,
                sub_sessions: subs,
                target_bytes: Some(10),
            });
            assert_eq!(c.message_count(), messages);
            assert_eq!(c.session_count(), subs + 1);
        }
    }

    #[test]
    fn tool_calls_and_results_pair_up() {
        let c = conversation(&ConversationSpec::new(3, 60));
        let mut calls = std::collections::BTreeSet::new();
        let mut results = std::collections::BTreeSet::new();
        for m in &c.messages {
            let parts: Vec<Value> = serde_json::from_str(m["parts"].as_str().unwrap()).unwrap();
            for p in parts {
                match p["type"].as_str().unwrap() {
                    "tool_call" => {
                        calls.insert(p["data"]["id"].as_str().unwrap().to_owned());
                        let input: Value =
                            serde_json::from_str(p["data"]["input"].as_str().unwrap()).unwrap();
                        assert!(input.is_object());
                    }
                    "tool_result" => {
                        results.insert(p["data"]["tool_call_id"].as_str().unwrap().to_owned());
                    }
                    _ => {}
                }
            }
        }
        assert!(!calls.is_empty());
        assert_eq!(calls, results);
    }
}
