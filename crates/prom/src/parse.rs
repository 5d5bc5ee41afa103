//! The Prometheus text exposition format 0.0.4 parser: line by line over the bytes, no regex.
//!
//! # What is accepted
//! - `# HELP name text` (text unescaped: `\\` and `\n`), `# TYPE name kind` with kind one
//!   of `counter`, `gauge`, `histogram`, `summary`, `untyped` (any case, as Prometheus'
//!   own parser); any other `#` line is a comment and ignored.
//! - Sample lines `name{label="value",...} value [timestamp_ms]`: metric names
//!   `[a-zA-Z_:][a-zA-Z0-9_:]*` (colons included: every vLLM family is `vllm:...`), label
//!   names `[a-zA-Z_][a-zA-Z0-9_]*`, label values with the escapes `\"`, `\\`, `\n`, blanks
//!   and tabs around every token, a trailing comma and an empty set `{}`; values as Rust's
//!   `f64` parser reads them (decimal, exponent, `NaN`, `+Inf`, `-Inf`, `inf`, any case);
//!   an optional integer timestamp in milliseconds.
//! - Blank lines, `\r\n` line ends.
//!
//! Not accepted (Prometheus' newer quoted UTF-8 names `{"my.metric"}`, Go's hexadecimal
//! floats): a problem is reported.
//!
//! # How samples find their family
//! In order: the family of the previous line if the name equals it or is its name plus a
//! suffix its kind allows (`_bucket`, `_sum`, `_count`, `_created` for a histogram;
//! `_sum`, `_count`, `_created` for a summary; `_total`, `_created` for a counter); then a
//! family of exactly that name anywhere; then the family of the name without such a
//! suffix; else a new untyped family named after the sample. Samples of one family need
//! not be adjacent. vLLM declares every `x_created` series as a gauge family of its own
//! (`# TYPE x_created gauge`), and that declaration comes first, so those samples land in
//! that family, not in `x`.
//!
//! # Strict and lenient
//! [`parse`] stops at the first
//! problem and reports its 1-based line number: for tests, and wherever a malformed body
//! means a bug. [`parse_lenient`] keeps every good line and returns the problems beside the
//! exposition: for scraping a live server whose output may be broken (a crashing process,
//! a proxy cutting the body) without losing every metric to one bad line. A line with a
//! problem contributes nothing in lenient mode.
//!
//! The format requires a line feed after the last line. A body whose last line has none
//! (and is not blank) is taken as truncated: strict mode fails on it and lenient mode
//! drops that line, because `12` cut from `123` parses fine and would be a wrong value.
//!
//! Also reported: a second `# HELP` or `# TYPE` for one family, a `# TYPE` after that
//! family's samples, a label named twice in one sample (as `expfmt` does).

use crate::{Exposition, Family, FxBuildHasher, Labels, MetricKind, Sample};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// One malformed line: where, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseProblem {
    /// 1-based line number in the text given to the parser.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "malformed metrics at line {}: {}",
            self.line, self.message
        )
    }
}

impl std::error::Error for ParseProblem {}

/// Parses a whole exposition; the first malformed line is returned as a [`ParseProblem`]
/// (with its line number). [`parse_lenient`] keeps the good lines instead.
pub fn parse(text: &str) -> Result<Exposition, ParseProblem> {
    let mut p = Parser::new(text, true);
    p.run()?;
    Ok(p.finish())
}

/// Parses what can be parsed: every good line is kept, every bad one is listed (in line
/// order) and skipped. Never fails and never panics.
pub fn parse_lenient(text: &str) -> (Exposition, Vec<ParseProblem>) {
    let mut p = Parser::new(text, false);
    // In lenient mode run() records problems instead of returning them.
    let _ = p.run();
    let problems = std::mem::take(&mut p.problems);
    (p.finish(), problems)
}

/// The parser's state. `'a` is the input: names are looked up by slices of it, so the
/// interner only allocates the first time a name is seen.
struct Parser<'a> {
    src: &'a str,
    strict: bool,
    families: Vec<Family>,
    /// Whether each family has had its `# TYPE` line (an untyped family may have had one).
    declared: Vec<bool>,
    index: HashMap<Arc<str>, usize, FxBuildHasher>,
    /// Metric names, label names and unescaped label values, shared by every sample that
    /// uses them.
    names: HashMap<&'a str, Arc<str>, FxBuildHasher>,
    /// The family the previous HELP, TYPE or sample line was about: the fast path, since
    /// a family's lines are adjacent in practice.
    current: Option<usize>,
    /// The sample pushed last, as (family, sample): its labels are the template the next
    /// sample's labels are compared with to share allocations.
    last: Option<(usize, usize)>,
    problems: Vec<ParseProblem>,
}

type LineResult = Result<(), String>;

impl<'a> Parser<'a> {
    fn new(src: &'a str, strict: bool) -> Parser<'a> {
        Parser {
            src,
            strict,
            families: Vec::new(),
            declared: Vec::new(),
            index: HashMap::default(),
            names: HashMap::default(),
            current: None,
            last: None,
            problems: Vec::new(),
        }
    }

    fn finish(self) -> Exposition {
        Exposition::from_parts(self.families, self.index)
    }

    /// Walks the lines. In strict mode the first problem is returned; in lenient mode
    /// problems are collected and `Ok` is returned.
    fn run(&mut self) -> Result<(), ParseProblem> {
        let src = self.src;
        let bytes = src.as_bytes();
        let mut pos = 0;
        let mut line_no = 0;
        while pos < bytes.len() {
            line_no += 1;
            // str::find with a char uses the standard library's word-at-a-time memchr,
            // several times faster than a byte loop.
            let (end, next, terminated) = match src[pos..].find('\n') {
                Some(i) => (pos + i, pos + i + 1, true),
                None => (bytes.len(), bytes.len(), false),
            };
            let raw = &src[pos..end];
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            pos = next;
            let result = if !terminated && !line.bytes().all(is_blank) {
                Err("the last line has no line feed: the body looks truncated".to_string())
            } else {
                self.line(line)
            };
            if let Err(message) = result {
                let problem = ParseProblem {
                    line: line_no,
                    message,
                };
                if self.strict {
                    return Err(problem);
                }
                self.problems.push(problem);
            }
        }
        Ok(())
    }

    fn line(&mut self, line: &'a str) -> LineResult {
        let b = line.as_bytes();
        let i = skip_blanks(b, 0);
        if i == b.len() {
            return Ok(());
        }
        if b[i] == b'#' {
            self.comment(line, i + 1)
        } else {
            self.sample(line, i)
        }
    }

    /// A `#` line from just after the `#`.
    fn comment(&mut self, line: &'a str, start: usize) -> LineResult {
        let b = line.as_bytes();
        let kw_start = skip_blanks(b, start);
        let kw_end = token_end(b, kw_start);
        let is_help = match &line[kw_start..kw_end] {
            "HELP" => true,
            "TYPE" => false,
            _ => return Ok(()), // an ordinary comment
        };
        let name_start = skip_blanks(b, kw_end);
        let name_end = metric_name_end(b, name_start);
        if name_end == name_start || (name_end < b.len() && !is_blank(b[name_end])) {
            return Err(format!(
                "`# {}` needs a valid metric name, found {:?}",
                if is_help { "HELP" } else { "TYPE" },
                snippet(&line[name_start..])
            ));
        }
        let name = &line[name_start..name_end];
        let rest_start = skip_blanks(b, name_end);
        if is_help {
            let help = unescape_help(&line[rest_start..])?;
            let f = self.family_named(name);
            if self.families[f].help.is_some() {
                return Err(format!("a second `# HELP` line for `{name}`"));
            }
            self.families[f].help = Some(help);
            self.current = Some(f);
        } else {
            let kind_end = token_end(b, rest_start);
            let kind = parse_kind(&line[rest_start..kind_end])?;
            if skip_blanks(b, kind_end) != b.len() {
                return Err(format!(
                    "unexpected text after the type of `{name}`: {:?}",
                    snippet(&line[kind_end..])
                ));
            }
            // Check before creating, so that a refused line leaves no empty family behind.
            let existing = match self.current {
                Some(f) if *self.families[f].name == *name => Some(f),
                _ => self.index.get(name).copied(),
            };
            if let Some(f) = existing {
                if self.declared[f] {
                    return Err(format!("a second `# TYPE` line for `{name}`"));
                }
                if !self.families[f].samples.is_empty() {
                    return Err(format!("`# TYPE` for `{name}` after its samples"));
                }
            }
            let f = self.family_named(name);
            self.families[f].kind = kind;
            self.declared[f] = true;
            self.current = Some(f);
        }
        Ok(())
    }

    /// A sample line from its first non-blank byte.
    fn sample(&mut self, line: &'a str, start: usize) -> LineResult {
        let b = line.as_bytes();
        let name_end = metric_name_end(b, start);
        if name_end == start {
            return Err(format!(
                "expected a metric name, found {:?}",
                snippet(&line[start..])
            ));
        }
        if name_end < b.len() && !is_blank(b[name_end]) && b[name_end] != b'{' {
            return Err(format!(
                "invalid character {:?} in metric name",
                snippet(&line[name_end..])
            ));
        }
        let name = &line[start..name_end];
        let mut i = skip_blanks(b, name_end);

        let mut labels = Vec::new();
        if b.get(i) == Some(&b'{') {
            // The previous sample's labels: most samples repeat them but for one or two.
            let template = self
                .last
                .map(|(f, s)| self.families[f].samples[s].labels.as_slice())
                .unwrap_or(&[]);
            i = parse_labels(line, i + 1, &mut labels, template, &mut self.names)?;
            i = skip_blanks(b, i);
        }

        let value_end = token_end(b, i);
        if value_end == i {
            return Err(format!("`{name}` has no value"));
        }
        let value = parse_value(&line[i..value_end])?;
        i = skip_blanks(b, value_end);
        let mut timestamp_ms = None;
        if i < b.len() {
            let ts_end = token_end(b, i);
            let ts = &line[i..ts_end];
            timestamp_ms = Some(ts.parse::<i64>().map_err(|_| {
                format!("invalid timestamp {:?} (integer milliseconds)", snippet(ts))
            })?);
            if skip_blanks(b, ts_end) != b.len() {
                return Err(format!(
                    "unexpected text after the timestamp: {:?}",
                    snippet(&line[ts_end..])
                ));
            }
        }

        let f = self.family_for_sample(name);
        let family = &mut self.families[f];
        let sample_name = match family.samples.last() {
            Some(prev) if *prev.name == *name => prev.name.clone(),
            _ => intern(&mut self.names, name),
        };
        family.samples.push(Sample {
            name: sample_name,
            labels: Labels::from_vec(labels),
            value,
            timestamp_ms,
        });
        self.last = Some((f, family.samples.len() - 1));
        self.current = Some(f);
        Ok(())
    }

    /// The family `name` names exactly, created (untyped) if new.
    fn family_named(&mut self, name: &'a str) -> usize {
        // `# TYPE` right after `# HELP` names the same family: no lookup.
        if let Some(f) = self.current
            && *self.families[f].name == *name
        {
            return f;
        }
        if let Some(&f) = self.index.get(name) {
            return f;
        }
        let arc = intern(&mut self.names, name);
        self.families.push(Family {
            name: arc.clone(),
            help: None,
            kind: MetricKind::Untyped,
            samples: Vec::new(),
        });
        self.declared.push(false);
        self.index.insert(arc, self.families.len() - 1);
        self.families.len() - 1
    }

    /// The family a sample named `name` belongs to (see the module documentation).
    fn family_for_sample(&mut self, name: &'a str) -> usize {
        if let Some(f) = self.current {
            let fam = &self.families[f];
            if *fam.name == *name {
                return f;
            }
            if let Some(suffix) = name.strip_prefix(&*fam.name)
                && fam.kind.accepts_suffix(suffix)
            {
                return f;
            }
        }
        if let Some(&f) = self.index.get(name) {
            return f;
        }
        for suffix in ["_bucket", "_sum", "_count", "_created", "_total"] {
            if let Some(stem) = name.strip_suffix(suffix)
                && let Some(&f) = self.index.get(stem)
                && self.families[f].kind.accepts_suffix(suffix)
            {
                return f;
            }
        }
        self.family_named(name)
    }
}

/// Parses the label set after `{`; returns the index just past `}`.
///
/// `template` is the previous sample's labels: a name or value equal to the one at the
/// same position there reuses its `Arc` without even hashing; other names and values go
/// through the interner `names`.
fn parse_labels<'a>(
    line: &'a str,
    mut i: usize,
    out: &mut Vec<(Arc<str>, Arc<str>)>,
    template: &[(Arc<str>, Arc<str>)],
    names: &mut HashMap<&'a str, Arc<str>, FxBuildHasher>,
) -> Result<usize, String> {
    let b = line.as_bytes();
    out.reserve(template.len());
    loop {
        i = skip_blanks(b, i);
        match b.get(i) {
            None => return Err("unterminated label set: no `}`".into()),
            Some(b'}') => return Ok(i + 1),
            _ => {}
        }
        let name_end = label_name_end(b, i);
        if name_end == i {
            return Err(format!(
                "expected a label name, found {:?}",
                snippet(&line[i..])
            ));
        }
        let lname = &line[i..name_end];
        i = skip_blanks(b, name_end);
        if b.get(i) != Some(&b'=') {
            return Err(format!("expected `=` after label name `{lname}`"));
        }
        i = skip_blanks(b, i + 1);
        if b.get(i) != Some(&b'"') {
            return Err(format!(
                "expected `\"` to open the value of label `{lname}`"
            ));
        }
        i += 1;
        let value_start = i;
        // Only values with escapes need a buffer; the others are a slice of the line.
        let mut unescaped: Option<String> = None;
        let mut segment = i;
        loop {
            match b.get(i) {
                None => return Err(format!("unterminated value of label `{lname}`")),
                Some(b'"') => break,
                Some(b'\\') => {
                    let buf = unescaped.get_or_insert_with(String::new);
                    buf.push_str(&line[segment..i]);
                    match b.get(i + 1) {
                        Some(b'"') => buf.push('"'),
                        Some(b'\\') => buf.push('\\'),
                        Some(b'n') => buf.push('\n'),
                        _ => {
                            return Err(format!(
                                "invalid escape in the value of label `{lname}` (only \\\", \\\\ and \\n)"
                            ));
                        }
                    }
                    i += 2;
                    segment = i;
                }
                Some(_) => i += 1,
            }
        }
        let pos = out.len();
        let same_slot = template.get(pos);
        let value: Arc<str> = match unescaped {
            Some(mut s) => {
                s.push_str(&line[segment..i]);
                Arc::from(s)
            }
            None => {
                let raw = &line[value_start..i];
                match same_slot {
                    Some((_, v)) if **v == *raw => v.clone(),
                    // Values repeat across families too (`le="1.0"`, `handler=...`).
                    _ => intern(names, raw),
                }
            }
        };
        i += 1; // the closing quote
        if out.iter().any(|(n, _)| **n == *lname) {
            return Err(format!("label `{lname}` appears twice"));
        }
        let name_arc = match same_slot {
            Some((n, _)) if **n == *lname => n.clone(),
            _ => intern(names, lname),
        };
        out.push((name_arc, value));
        i = skip_blanks(b, i);
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => return Ok(i + 1),
            _ => {
                return Err(format!(
                    "expected `,` or `}}` after the value of label `{lname}`"
                ));
            }
        }
    }
}

fn intern<'a>(names: &mut HashMap<&'a str, Arc<str>, FxBuildHasher>, name: &'a str) -> Arc<str> {
    names.entry(name).or_insert_with(|| Arc::from(name)).clone()
}

fn parse_kind(word: &str) -> Result<MetricKind, String> {
    const KINDS: [MetricKind; 5] = [
        MetricKind::Counter,
        MetricKind::Gauge,
        MetricKind::Histogram,
        MetricKind::Summary,
        MetricKind::Untyped,
    ];
    KINDS
        .into_iter()
        .find(|k| k.as_str().eq_ignore_ascii_case(word))
        .ok_or_else(|| {
            format!(
                "unknown metric type {:?} (counter, gauge, histogram, summary or untyped)",
                snippet(word)
            )
        })
}

fn parse_value(token: &str) -> Result<f64, String> {
    token
        .parse::<f64>()
        .map_err(|_| format!("invalid sample value {:?}", snippet(token)))
}

/// `# HELP` text: `\\` is a backslash, `\n` a line feed; any other escape is an error.
fn unescape_help(text: &str) -> Result<String, String> {
    if !text.contains('\\') {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some(other) => {
                return Err(format!(
                    "invalid escape `\\{other}` in `# HELP` text (only \\\\ and \\n)"
                ));
            }
            None => return Err("`# HELP` text ends with a lone backslash".into()),
        }
    }
    Ok(out)
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn skip_blanks(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && is_blank(b[i]) {
        i += 1;
    }
    i
}

/// The end of a run of non-blank bytes.
fn token_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && !is_blank(b[i]) {
        i += 1;
    }
    i
}

/// The end of a metric name `[a-zA-Z_:][a-zA-Z0-9_:]*` starting at `i` (`i` if none).
fn metric_name_end(b: &[u8], start: usize) -> usize {
    let mut i = start;
    while i < b.len() {
        let c = b[i];
        let ok =
            c.is_ascii_alphabetic() || c == b'_' || c == b':' || (i > start && c.is_ascii_digit());
        if !ok {
            break;
        }
        i += 1;
    }
    i
}

/// The end of a label name `[a-zA-Z_][a-zA-Z0-9_]*` starting at `i` (`i` if none).
fn label_name_end(b: &[u8], start: usize) -> usize {
    let mut i = start;
    while i < b.len() {
        let c = b[i];
        let ok = c.is_ascii_alphabetic() || c == b'_' || (i > start && c.is_ascii_digit());
        if !ok {
            break;
        }
        i += 1;
    }
    i
}

/// At most 40 characters of `s`, for error messages (a bad line may be huge).
fn snippet(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_shared_between_samples() {
        let e = parse("a{x=\"1\",y=\"2\"} 1\na{x=\"1\",y=\"3\"} 2\n").unwrap();
        let s = &e.family("a").unwrap().samples;
        let (l0, l1) = (s[0].labels.as_slice(), s[1].labels.as_slice());
        assert!(Arc::ptr_eq(&s[0].name, &s[1].name));
        assert!(Arc::ptr_eq(&l0[0].0, &l1[0].0));
        assert!(Arc::ptr_eq(&l0[0].1, &l1[0].1), "equal values share");
        assert!(!Arc::ptr_eq(&l0[1].1, &l1[1].1));
    }

    #[test]
    fn snippet_cuts_on_char_boundaries() {
        let long = "é".repeat(100);
        assert_eq!(snippet(&long).chars().count(), 40);
        assert_eq!(snippet("ab"), "ab");
    }

    #[test]
    fn kinds_are_case_insensitive() {
        assert_eq!(parse_kind("COUNTER"), Ok(MetricKind::Counter));
        assert!(parse_kind("gaugehistogram").is_err());
    }
}
