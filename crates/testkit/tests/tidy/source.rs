//! A reader of Rust source just good enough for the tidy test: code without comments and
//! literals, test modules cut out, functions with their lengths, and the modules of a
//! crate that each module imports.

use std::collections::{BTreeMap, BTreeSet};

/// The text with every comment and every string or char literal's content blanked to
/// spaces (newlines kept), so braces and `crate::` paths can be read without a parser.
pub fn code_only(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = bytes.to_vec();
    let mut i = 0;
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for b in &mut out[from..to] {
            if *b != b'\n' {
                *b = b' ';
            }
        }
    };
    while i < bytes.len() {
        let rest = &bytes[i..];
        if rest.starts_with(b"//") {
            let end = rest
                .iter()
                .position(|&b| b == b'\n')
                .map_or(bytes.len(), |n| i + n);
            blank(&mut out, i, end);
            i = end;
        } else if rest.starts_with(b"/*") {
            let end = block_comment_end(bytes, i);
            blank(&mut out, i, end);
            i = end;
        } else if let Some(end) = raw_string_end(bytes, i) {
            blank(&mut out, i, end);
            i = end;
        } else if bytes[i] == b'"' {
            let end = quoted_end(bytes, i + 1, b'"');
            blank(&mut out, i + 1, end - 1);
            i = end;
        } else if bytes[i] == b'\'' && is_char_literal(rest) {
            let end = quoted_end(bytes, i + 1, b'\'');
            blank(&mut out, i + 1, end - 1);
            i = end;
        } else {
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn block_comment_end(bytes: &[u8], start: usize) -> usize {
    let (mut depth, mut i) = (0usize, start);
    while i + 1 < bytes.len() {
        if &bytes[i..i + 2] == b"/*" {
            depth += 1;
            i += 2;
        } else if &bytes[i..i + 2] == b"*/" {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    bytes.len()
}

/// The end of a raw string (`r"…"`, `r#"…"#`, `br#"…"#`) starting at `i`, if one does.
fn raw_string_end(bytes: &[u8], i: usize) -> Option<usize> {
    let prev_ident = i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
    let mut j = i;
    if bytes.get(j) == Some(&b'b') {
        j += 1;
    }
    if prev_ident || bytes.get(j) != Some(&b'r') {
        return None;
    }
    j += 1;
    let hashes = bytes[j..].iter().take_while(|&&b| b == b'#').count();
    j += hashes;
    if bytes.get(j) != Some(&b'"') {
        return None;
    }
    let mut closing = vec![b'"'];
    closing.extend(std::iter::repeat_n(b'#', hashes));
    let body = j + 1;
    let end = bytes[body..]
        .windows(closing.len())
        .position(|w| w == closing.as_slice())
        .map_or(bytes.len(), |n| body + n + closing.len());
    Some(end)
}

/// The index just past the closing `quote`, honouring backslash escapes.
fn quoted_end(bytes: &[u8], mut i: usize, quote: u8) -> usize {
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b if b == quote => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// `'x'`, `'\n'`, `'\u{..}'` or `'{'` rather than a lifetime `'a`.
fn is_char_literal(rest: &[u8]) -> bool {
    match rest.get(1) {
        Some(b'\\') => true,
        Some(_) => {
            // One character (possibly multi-byte) then a closing quote.
            let s = String::from_utf8_lossy(&rest[1..rest.len().min(6)]).into_owned();
            let mut chars = s.chars();
            chars.next();
            chars.next() == Some('\'')
        }
        None => false,
    }
}

/// The index of the brace that closes the one opened at `open`.
fn matching_brace(code: &[u8], open: usize) -> usize {
    let mut depth = 0usize;
    for (i, &b) in code.iter().enumerate().skip(open) {
        match b {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
    }
    code.len().saturating_sub(1)
}

/// `code` (from [`code_only`]) with every item under `#[cfg(test)]` blanked: the test
/// modules and test-only functions are not product code.
pub fn without_test_items(code: &str) -> String {
    let mut out = code.as_bytes().to_vec();
    let mut from = 0;
    while let Some(at) = code[from..].find("#[cfg(test)]").map(|n| from + n) {
        let after = at + "#[cfg(test)]".len();
        let (brace, semi) = (code[after..].find('{'), code[after..].find(';'));
        let end = match (brace, semi) {
            (Some(b), Some(s)) if s < b => after + s,
            (Some(b), _) => matching_brace(code.as_bytes(), after + b),
            (None, Some(s)) => after + s,
            (None, None) => code.len() - 1,
        };
        for b in &mut out[at..=end] {
            if *b != b'\n' {
                *b = b' ';
            }
        }
        from = end + 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A function of the source: its name, first line (1-based) and length in lines.
pub struct Function {
    pub name: String,
    pub line: usize,
    pub lines: usize,
}

/// Every function with a body in `code` (from [`code_only`]), nested ones too.
pub fn functions(code: &str) -> Vec<Function> {
    let bytes = code.as_bytes();
    let line_of = |i: usize| code[..i].matches('\n').count() + 1;
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find("fn ").map(|n| from + n) {
        from = at + 3;
        let word_start =
            at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_');
        if !word_start {
            continue;
        }
        let name: String = code[at + 3..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() {
            continue; // `fn(` in a type
        }
        let rest = &code[at..];
        let Some(open) = rest
            .find(['{', ';'])
            .filter(|&n| rest.as_bytes()[n] == b'{')
        else {
            continue; // a declaration without a body
        };
        let close = matching_brace(bytes, at + open);
        let line = line_of(at);
        found.push(Function {
            name,
            line,
            lines: line_of(close) - line + 1,
        });
    }
    found
}

/// The top-level modules of its crate that `code` (from [`code_only`], in module `own`)
/// names through `crate::…`, or through `super::…` from a top-level file. `root_names`
/// maps what the crate root re-exports (`pub use m::Name`) to the module that defines it.
pub fn imported_modules(
    code: &str,
    own: &str,
    modules: &BTreeSet<String>,
    root_names: &BTreeMap<String, String>,
    top_level_file: bool,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut prefixes = vec!["crate::"];
    if top_level_file {
        prefixes.push("super::");
    }
    for prefix in prefixes {
        let mut from = 0;
        while let Some(at) = code[from..].find(prefix).map(|n| from + n) {
            from = at + prefix.len();
            let prev = code[..at].chars().next_back();
            if prev.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue; // `$crate::`, `a::crate::` or a longer word
            }
            for first in first_segments(&code[from..]) {
                let module = if modules.contains(&first) {
                    Some(first)
                } else {
                    root_names.get(&first).cloned()
                };
                if let Some(m) = module.filter(|m| m != own) {
                    out.insert(m);
                }
            }
        }
    }
    out
}

/// The first path segment after `crate::`: one name, or each name of a `{…}` group.
fn first_segments(rest: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    if !rest.starts_with('{') {
        return vec![ident(rest)];
    }
    let close = matching_brace(rest.as_bytes(), 0);
    let inner = &rest[1..close];
    let (mut items, mut depth, mut start) = (Vec::new(), 0usize, 0usize);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(ident(&inner[start..i]));
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(ident(&inner[start..]));
    items.retain(|s| !s.is_empty() && s != "self");
    items
}

/// The strongly connected components of more than one node: each is a module cycle.
pub fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Two nodes share a cycle when each reaches the other; graphs here have tens of nodes.
    let reach = |from: &String| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(n) = todo.pop() {
            for next in graph.get(&n).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<_, _> = graph.keys().map(|n| (n.clone(), reach(n))).collect();
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for n in graph.keys() {
        if done.contains(n) || !reaches[n].contains(n) {
            continue;
        }
        let component: Vec<String> = graph
            .keys()
            .filter(|m| reaches[n].contains(*m) && reaches[*m].contains(n))
            .cloned()
            .collect();
        done.extend(component.iter().cloned());
        out.push(component);
    }
    out
}
