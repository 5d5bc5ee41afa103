//! Property tests of the Prometheus parser: no input makes it panic, and any exposition
//! written by the text format's rules reads back to the same families, labels and values.

use proptest::prelude::*;
use std::collections::BTreeMap;
use vllm_prom as prom;

/// One generated gauge family: its help text and its series (labels → value).
type Families = BTreeMap<String, (String, Vec<(BTreeMap<String, String>, f64)>)>;

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        8 => any::<f64>().prop_filter("finite", |v| v.is_finite()),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(f64::NAN),
        2 => (-1_000_000i64..1_000_000).prop_map(|v| v as f64),
    ]
}

fn families() -> impl Strategy<Value = Families> {
    let labels = prop::collection::btree_map("l_[a-zA-Z0-9_]{0,8}", any::<String>(), 0..4);
    let series = prop::collection::vec((labels, value()), 1..5);
    // Whitespace around a help text is not part of it (the format skips the blanks
    // after the name), so generated ones have none.
    let help = any::<String>().prop_map(|h| h.trim_matches([' ', '\t']).to_string());
    prop::collection::btree_map("[a-zA-Z_:][a-zA-Z0-9_:]{0,20}", (help, series), 1..6)
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

fn render_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v:?}")
    }
}

/// The text format, with a distinct `series` label so no two samples are the same series.
fn render(f: &Families) -> String {
    let mut out = String::new();
    for (name, (help, series)) in f {
        out.push_str(&format!(
            "# HELP {name} {}\n# TYPE {name} gauge\n",
            escape_help(help)
        ));
        for (i, (labels, v)) in series.iter().enumerate() {
            let mut pairs = vec![format!("series=\"{i}\"")];
            pairs.extend(
                labels
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v))),
            );
            out.push_str(&format!(
                "{name}{{{}}} {}\n",
                pairs.join(","),
                render_value(*v)
            ));
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn no_text_makes_it_panic(text in any::<String>()) {
        let _ = prom::parse(&text);
        let _ = prom::parse_lenient(&text);
    }

    #[test]
    fn no_line_of_exposition_like_bytes_makes_it_panic(
        text in "([a-z_{}=\",# \\\\.+\\-eE0-9]|\n|NaN|Inf|TYPE|HELP){0,200}"
    ) {
        let _ = prom::parse(&text);
        let (_, problems) = prom::parse_lenient(&text);
        prop_assert!(problems.len() <= text.lines().count() + 1);
    }

    #[test]
    fn what_the_format_writes_reads_back(f in families()) {
        let text = render(&f);
        let expo = prom::parse(&text)
            .map_err(|e| TestCaseError::fail(format!("{e:?}\n{text}")))?;
        prop_assert_eq!(expo.families().len(), f.len());
        for (name, (help, series)) in &f {
            let fam = expo.family(name).ok_or_else(|| TestCaseError::fail(format!("no {name}")))?;
            prop_assert_eq!(fam.help.as_deref().unwrap_or(""), help.as_str());
            prop_assert_eq!(fam.samples.len(), series.len());
            for (i, (labels, v)) in series.iter().enumerate() {
                let idx = i.to_string();
                let s = fam
                    .samples
                    .iter()
                    .find(|s| s.labels.get("series") == Some(idx.as_str()))
                    .ok_or_else(|| TestCaseError::fail(format!("no series {i} of {name}")))?;
                for (k, want) in labels {
                    prop_assert_eq!(s.labels.get(k), Some(want.as_str()));
                }
                prop_assert_eq!(s.labels.len(), labels.len() + 1);
                if v.is_nan() {
                    prop_assert!(s.value.is_nan());
                } else {
                    prop_assert_eq!(s.value, *v);
                }
            }
        }
    }
}
