//! Integration tests of `vllm-prom`: the parser against real vLLM captures and tricky
//! inputs, histogram quantiles and windows with hand-computed values, and the typed view.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use vllm_prom::{
    self as prom, Bucket, Exposition, Histogram, MetricKind, VllmSnapshot, counter_increase,
    counter_rate, gauge_mean, gauge_time_weighted_mean, histogram_quantile,
};

const IDLE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/data/vllm-reference/metrics_idle.txt"
));
const AFTER_LOAD: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/data/vllm-reference/metrics_after_load.txt"
));
const DEVLORA: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/data/vllm-reference/metrics_devlora.txt"
));
const CAPTURES: [(&str, &str); 3] = [
    ("metrics_idle", IDLE),
    ("metrics_after_load", AFTER_LOAD),
    ("metrics_devlora", DEVLORA),
];

/// The `/metrics` body of a capture: two of them start with the HTTP response head.
fn body(capture: &str) -> &str {
    if capture.starts_with("HTTP/") {
        capture.split_once("\r\n\r\n").expect("HTTP head ends").1
    } else {
        capture
    }
}

/// How many lines the HTTP head of a capture takes (to cite capture line numbers).
fn head_lines(capture: &str) -> usize {
    capture[..capture.len() - body(capture).len()]
        .matches('\n')
        .count()
}

// ---------------------------------------------------------------------------------------
// Rendering, and the data-driven helpers
// ---------------------------------------------------------------------------------------

/// A canonical text form of an exposition: a `family NAME KIND [help="..."]` line per
/// family, then one line per sample with label values and help debug-escaped.
fn render(e: &Exposition) -> String {
    let mut out = String::new();
    for f in e.families() {
        write!(out, "family {} {}", f.name, f.kind.as_str()).unwrap();
        if let Some(h) = &f.help {
            write!(out, " help={h:?}").unwrap();
        }
        out.push('\n');
        for s in &f.samples {
            write!(out, "{}", s.name).unwrap();
            if !s.labels.is_empty() {
                let labels: Vec<String> =
                    s.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
                write!(out, "{{{}}}", labels.join(",")).unwrap();
            }
            write!(out, " {:?}", s.value).unwrap();
            if let Some(ts) = s.timestamp_ms {
                write!(out, " @{ts}").unwrap();
            }
            out.push('\n');
        }
    }
    out
}

/// Parses `input` strictly and compares the rendering with `expected` (whose lines are
/// trimmed, so it can be indented).
#[track_caller]
fn check(input: &str, expected: &str) {
    let e = match prom::parse(input) {
        Ok(e) => e,
        Err(p) => panic!("{p}\ninput:\n{input}"),
    };
    let want: String = expected
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("{}\n", l.trim()))
        .collect();
    assert_eq!(render(&e), want, "input:\n{input}");
}

/// Strict parsing of `input` fails at `line` with a message containing `fragment`.
#[track_caller]
fn check_err(input: &str, line: usize, fragment: &str) {
    match prom::parse(input) {
        Ok(e) => panic!("parsed, expected an error at line {line}:\n{}", render(&e)),
        Err(p) => {
            assert_eq!(p.line, line, "{p}");
            assert!(p.message.contains(fragment), "{p:?} lacks {fragment:?}");
        }
    }
}

#[track_caller]
fn assert_close(got: f64, want: f64, what: &str) {
    let tol = 1e-12 * want.abs().max(1.0);
    assert!(
        (got - want).abs() <= tol || (got.is_nan() && want.is_nan()) || got == want,
        "{what}: got {got:?}, want {want:?}"
    );
}

fn buckets(pairs: &[(f64, f64)]) -> Vec<Bucket> {
    pairs
        .iter()
        .map(|&(le, count)| Bucket { le, count })
        .collect()
}

const INF: f64 = f64::INFINITY;

// ---------------------------------------------------------------------------------------
// The real captures
// ---------------------------------------------------------------------------------------

/// The name before `{` or the first blank of a sample line.
fn raw_sample_name(line: &str) -> &str {
    let end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
    &line[..end]
}

#[test]
fn captures_parse_without_losing_a_family_or_a_sample() {
    for (name, capture) in CAPTURES {
        let text = body(capture);
        let e = prom::parse(text).unwrap_or_else(|err| panic!("{name}: {err}"));

        // Independent of the parser: every `# TYPE` line declares one family...
        let declared: BTreeMap<&str, &str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split_once(' ').expect("name and type"))
            .collect();
        let parsed: BTreeMap<&str, &str> = e
            .families()
            .iter()
            .map(|f| (&*f.name, f.kind.as_str()))
            .collect();
        assert_eq!(parsed, declared, "{name}: families and their types");
        assert_eq!(e.families().len(), declared.len(), "{name}: no duplicate");

        // ...and every sample line is one sample, under the same series name.
        let raw_lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .collect();
        assert_eq!(e.sample_count(), raw_lines.len(), "{name}: sample count");
        let mut raw_names: Vec<&str> = raw_lines.iter().map(|l| raw_sample_name(l)).collect();
        let mut parsed_names: Vec<&str> = e.samples().map(|(_, s)| &*s.name).collect();
        raw_names.sort_unstable();
        parsed_names.sort_unstable();
        assert_eq!(parsed_names, raw_names, "{name}: sample names");

        // Every sample sits in the family whose name is its stem.
        for (f, s) in e.samples() {
            let suffix = s.name.strip_prefix(&*f.name).unwrap_or_else(|| {
                panic!("{name}: {} filed under {}", s.name, f.name);
            });
            match f.kind {
                MetricKind::Histogram => {
                    assert!(
                        ["_bucket", "_sum", "_count"].contains(&suffix),
                        "{}",
                        s.name
                    )
                }
                MetricKind::Summary => {
                    assert!(["", "_sum", "_count"].contains(&suffix), "{}", s.name)
                }
                _ => assert_eq!(suffix, "", "{}", s.name),
            }
        }

        // vLLM's families: all there (39 in these captures, 42 with dev mode and LoRA,
        // not counting the `_created` gauges).
        let vllm: BTreeSet<&str> = declared
            .keys()
            .copied()
            .filter(|n| n.starts_with("vllm:"))
            .collect();
        for n in &vllm {
            assert!(e.family(n).is_some(), "{name}: {n}");
        }
        let main = vllm.iter().filter(|n| !n.ends_with("_created")).count();
        let want = if name == "metrics_devlora" { 42 } else { 39 };
        assert_eq!(main, want, "{name}: vllm: families");

        // And the lenient parser agrees, with nothing to report.
        let (lenient, problems) = prom::parse_lenient(text);
        assert!(problems.is_empty(), "{name}: {problems:?}");
        assert_eq!(render(&lenient), render(&e), "{name}");
    }
}

#[test]
fn capture_helps_and_histogram_grouping() {
    let e = prom::parse(body(AFTER_LOAD)).unwrap();
    let f = e.family("vllm:e2e_request_latency_seconds").unwrap();
    assert_eq!(f.kind, MetricKind::Histogram);
    assert_eq!(
        f.help.as_deref(),
        Some("Histogram of e2e request latency in seconds.")
    );
    // 22 buckets (capture lines 374-395) + _count + _sum.
    assert_eq!(f.samples.len(), 24);
    let created = e
        .family("vllm:e2e_request_latency_seconds_created")
        .unwrap();
    assert_eq!(created.kind, MetricKind::Gauge);
    assert_eq!(created.samples.len(), 1);
    // A summary of prometheus_client without quantiles: _count and _sum per handler.
    let summary = e.family("http_request_size_bytes").unwrap();
    assert_eq!(summary.kind, MetricKind::Summary);
    assert_eq!(summary.samples.len(), 14);
    // Unlabelled histogram (capture: http_request_duration_highr_seconds).
    let highr = e.family("http_request_duration_highr_seconds").unwrap();
    let hs = highr.histograms();
    assert_eq!(hs.len(), 1);
    assert!(hs[0].0.is_empty());
    assert_eq!(hs[0].1.count, 37.0);
    // One series per handler/method.
    let by_handler = e
        .family("http_request_duration_seconds")
        .unwrap()
        .histograms();
    assert_eq!(by_handler.len(), 7);
    assert_eq!(by_handler[0].0.get("handler"), Some("/v1/models"));
    assert_eq!(by_handler[0].0.get("le"), None);
}

#[test]
fn head_lines_helper_counts_the_http_head() {
    // metrics_after_load.txt: 6 header lines and a blank one before the body.
    assert_eq!(head_lines(AFTER_LOAD), 7);
    assert_eq!(head_lines(DEVLORA), 0);
}

// ---------------------------------------------------------------------------------------
// Tricky inputs
// ---------------------------------------------------------------------------------------

#[test]
fn tricky_inputs() {
    // Escaped label values: \" \\ \n.
    check(
        "a{path=\"C:\\\\dir\",q=\"say \\\"hi\\\"\",nl=\"x\\ny\"} 1\n",
        r#"family a untyped
             a{path="C:\\dir",q="say \"hi\"",nl="x\ny"} 1.0"#,
    );
    // NaN, infinities, exponents, signs.
    check(
        "v{k=\"1\"} NaN\nv{k=\"2\"} +Inf\nv{k=\"3\"} -Inf\nv{k=\"4\"} 1.5e-3\nv{k=\"5\"} -2E+2\nv{k=\"6\"} +7\nv{k=\"7\"} nan\n",
        r#"family v untyped
             v{k="1"} NaN
             v{k="2"} inf
             v{k="3"} -inf
             v{k="4"} 0.0015
             v{k="5"} -200.0
             v{k="6"} 7.0
             v{k="7"} NaN"#,
    );
    // Timestamps, negative ones included.
    check(
        "t 1 1700000000000\nt{a=\"b\"} 2 -5\n",
        r#"family t untyped
             t 1.0 @1700000000000
             t{a="b"} 2.0 @-5"#,
    );
    // Colons in names (vLLM) and untyped with and without a TYPE line.
    check(
        "# TYPE vllm:x:y untyped\nvllm:x:y 1\n:leading_colon 2\n",
        r#"family vllm:x:y untyped
             vllm:x:y 1.0
           family :leading_colon untyped
             :leading_colon 2.0"#,
    );
    // Trailing comma, empty label set, blanks and tabs around every token.
    check(
        "a{x=\"1\",} 1\nb{} 2\n  c { x = \"1\" , y=\"2\" , }\t3 \t 4 \n",
        r#"family a untyped
             a{x="1"} 1.0
           family b untyped
             b 2.0
           family c untyped
             c{x="1",y="2"} 3.0 @4"#,
    );
    // CRLF line ends, blank lines, comments, HELP escapes.
    check(
        "# a comment\r\n\r\n# HELP g Two\\nlines, one \\\\ backslash\r\n# TYPE g gauge\r\ng 1\r\n   \r\n#TYPE-like comment\r\n",
        r#"family g gauge help="Two\nlines, one \\ backslash"
             g 1.0"#,
    );
    // A summary with quantiles, _sum, _count, grouped into one family.
    check(
        "# HELP rpc A summary.\n# TYPE rpc summary\nrpc{quantile=\"0.5\"} 4773\nrpc{quantile=\"0.99\"} 76656\nrpc_sum 1.7560473e+07\nrpc_count 2693\n",
        r#"family rpc summary help="A summary."
             rpc{quantile="0.5"} 4773.0
             rpc{quantile="0.99"} 76656.0
             rpc_sum 17560473.0
             rpc_count 2693.0"#,
    );
    // OpenMetrics-style families: counter `c` with c_total and c_created; a histogram's
    // _created with no TYPE line of its own stays in the histogram.
    check(
        "# TYPE c counter\nc_total 3\nc_created 1.7e9\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 2.5\nh_count 2\nh_created 1.7e9\n",
        r#"family c counter
             c_total 3.0
             c_created 1700000000.0
           family h histogram
             h_bucket{le="1"} 1.0
             h_bucket{le="+Inf"} 2.0
             h_sum 2.5
             h_count 2.0
             h_created 1700000000.0"#,
    );
    // prometheus_client (vLLM) style: `_created` declared as its own gauge family.
    check(
        "# TYPE x_total counter\nx_total 3\n# TYPE x_created gauge\nx_created 1.7e9\n",
        r#"family x_total counter
             x_total 3.0
           family x_created gauge
             x_created 1700000000.0"#,
    );
    // Without TYPE, _bucket samples are untyped families of their own; HELP alone gives
    // an untyped family with help; samples of a family need not be adjacent.
    check(
        "# HELP u Just help.\nu 1\nz_bucket{le=\"1\"} 1\nz_bucket{le=\"+Inf\"} 1\n# TYPE g gauge\ng 1\nu{a=\"b\"} 2\n",
        r#"family u untyped help="Just help."
             u 1.0
             u{a="b"} 2.0
           family z_bucket untyped
             z_bucket{le="1"} 1.0
             z_bucket{le="+Inf"} 1.0
           family g gauge
             g 1.0"#,
    );
    // HELP after TYPE, empty HELP, type words in any case, UTF-8 in values.
    check(
        "# TYPE k COUNTER\n# HELP k\nk{who=\"zoë ✓\"} 1\n",
        r#"family k counter help=""
             k{who="zoë ✓"} 1.0"#,
    );
    // Empty input and only comments: no families.
    check("", "");
    check("# just a comment\n\n", "");
}

#[test]
fn malformed_lines_are_reported_with_their_line_number() {
    let cases: &[(&str, usize, &str)] = &[
        ("a 1\nb{x=\"y} 2\n", 2, "unterminated value of label `x`"),
        ("a 1\n\nb{x=\"y\"}\n", 3, "has no value"),
        ("a 1 2 3\n", 1, "after the timestamp"),
        ("a 1 1.5\n", 1, "invalid timestamp"),
        ("a xyz\n", 1, "invalid sample value"),
        ("a 0x1p-2\n", 1, "invalid sample value"),
        ("# TYPE a foo\n", 1, "unknown metric type"),
        (
            "# TYPE a counter extra\n",
            1,
            "unexpected text after the type",
        ),
        ("# TYPE a counter\n# TYPE a gauge\n", 2, "second `# TYPE`"),
        ("a 1\n# TYPE a counter\n", 2, "after its samples"),
        ("# HELP a x\n# HELP a y\n", 2, "second `# HELP`"),
        ("# HELP a bad \\t escape\n", 1, "invalid escape"),
        ("# HELP\n", 1, "valid metric name"),
        ("# TYPE 9a counter\n", 1, "valid metric name"),
        ("a{b=\"\\x\"} 1\n", 1, "invalid escape"),
        ("a{b=\"1\",b=\"2\"} 1\n", 1, "appears twice"),
        ("{a=\"b\"} 1\n", 1, "expected a metric name"),
        ("a-b 1\n", 1, "invalid character"),
        ("a{1b=\"c\"} 1\n", 1, "expected a label name"),
        ("a{b=\"c\",,} 1\n", 1, "expected a label name"),
        ("a{b=c} 1\n", 1, "expected `\"`"),
        ("a{b \"c\"} 1\n", 1, "expected `=`"),
        ("a{b=\"c\" d=\"e\"} 1\n", 1, "expected `,` or `}`"),
        ("a{b=\"c\"\n", 1, "expected `,` or `}`"),
        ("a{b=\"c\",\n", 1, "unterminated label set"),
        ("\"quoted\" 1\n", 1, "expected a metric name"),
        // Truncated bodies: no line feed after the last line.
        ("a 1\nb 2", 2, "truncated"),
        ("a 1\nb{x=\"y", 2, "truncated"),
        ("# HELP a cut", 1, "truncated"),
    ];
    for &(input, line, fragment) in cases {
        check_err(input, line, fragment);
    }
}

#[test]
fn strict_parse_error_names_the_line() {
    let err = prom::parse("a 1\nb 2\nc{ 3\n").unwrap_err();
    assert_eq!(err.line, 3);
    assert!(
        err.to_string().contains("malformed metrics at line 3"),
        "{err}"
    );
}

#[test]
fn lenient_parse_keeps_the_good_lines() {
    let input = "# TYPE a gauge\na 1\na{x=\"1} 2\nb 2\n# TYPE a counter\nc{ 3\nd 4";
    let (e, problems) = prom::parse_lenient(input);
    let lines: Vec<usize> = problems.iter().map(|p| p.line).collect();
    // Line 3: unterminated value; 5: TYPE after samples; 6: bad label set; 7: no line
    // feed after the last line (dropped: it may be cut short).
    assert_eq!(lines, [3, 5, 6, 7], "{problems:?}");
    assert_eq!(
        render(&e),
        "family a gauge\na 1.0\nfamily b untyped\nb 2.0\n",
        "the bad lines left nothing behind"
    );
    // A blank unterminated last line is not a truncation.
    assert!(prom::parse_lenient("a 1\n  ").1.is_empty());
    assert!(prom::parse("a 1\n  ").is_ok());
}

/// A tiny deterministic generator, so the fuzz test needs no dependency.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn no_input_makes_the_parser_panic() {
    let text = body(AFTER_LOAD);
    // Truncated at many points (on char boundaries: the parser takes &str).
    let mut cut = 0;
    while cut < text.len() {
        if text.is_char_boundary(cut) {
            let prefix = &text[..cut];
            let strict = prom::parse(prefix);
            let (_, problems) = prom::parse_lenient(prefix);
            // A cut inside a line is always noticed.
            if !prefix.is_empty() && !prefix.ends_with('\n') {
                assert!(strict.is_err() && !problems.is_empty(), "cut at {cut}");
            }
        }
        cut += 89;
    }
    // Random bytes replaced by characters the grammar cares about.
    let specials = [
        '{', '}', '"', '\\', ',', '=', ' ', '\n', '\r', '#', 'e', '+', '-', '.', 'é',
    ];
    let mut rng = Lcg(7);
    for _ in 0..300 {
        let mut s: Vec<char> = text[..4000].chars().collect();
        for _ in 0..5 {
            let i = rng.next() as usize % s.len();
            s[i] = specials[rng.next() as usize % specials.len()];
        }
        let s: String = s.into_iter().collect();
        let _ = prom::parse(&s);
        let _ = prom::parse_lenient(&s);
    }
}

// ---------------------------------------------------------------------------------------
// histogram_quantile
// ---------------------------------------------------------------------------------------

#[test]
fn quantiles_hand_computed() {
    // le=0.1:10, 0.5:30, 1:40, +Inf:40 (40 observations).
    let b = buckets(&[(0.1, 10.0), (0.5, 30.0), (1.0, 40.0), (INF, 40.0)]);
    let cases: &[(f64, f64)] = &[
        // rank 20 falls in (0.1, 0.5]: 0.1 + (20-10)/(30-10) * 0.4 = 0.3
        (0.5, 0.3),
        // rank 36 in (0.5, 1]: 0.5 + (36-30)/(40-30) * 0.5 = 0.8
        (0.9, 0.8),
        // rank 4 in the first bucket, interpolated from 0: 0 + 4/10 * 0.1 = 0.04
        (0.1, 0.04),
        // rank 0: first bucket, 0 + 0/10 * 0.1 = 0
        (0.0, 0.0),
        // rank 40: the first finite bucket reaching 40 is le=1: 0.5 + 10/10 * 0.5 = 1
        (1.0, 1.0),
        // out of range
        (-0.1, f64::NEG_INFINITY),
        (1.01, INF),
        (f64::NAN, f64::NAN),
    ];
    for &(q, want) in cases {
        assert_close(histogram_quantile(q, &b), want, &format!("q={q}"));
    }

    // The quantile in the +Inf bucket: le=1:5, 2:10, +Inf:20; q=0.9 gives rank 18, which
    // no finite bucket reaches, so the second-highest bound is returned: 2.
    let b = buckets(&[(1.0, 5.0), (2.0, 10.0), (INF, 20.0)]);
    assert_eq!(histogram_quantile(0.9, &b), 2.0);
    // q=0.5, rank 10 reaches le=2 exactly: 1 + (10-5)/(10-5) * 1 = 2.
    assert_eq!(histogram_quantile(0.5, &b), 2.0);

    // Unsorted input is sorted first (same buckets as above).
    let b = buckets(&[(INF, 20.0), (2.0, 10.0), (1.0, 5.0)]);
    assert_eq!(histogram_quantile(0.25, &b), 1.0); // rank 5 reaches le=1: 0 + 5/5 * 1

    // NaN cases: no observations, no buckets, only +Inf, no +Inf.
    let nan_cases: [Vec<Bucket>; 4] = [
        buckets(&[(0.1, 0.0), (1.0, 0.0), (INF, 0.0)]),
        buckets(&[]),
        buckets(&[(INF, 5.0)]),
        buckets(&[(0.1, 1.0), (1.0, 2.0)]),
    ];
    for b in &nan_cases {
        assert!(histogram_quantile(0.5, b).is_nan(), "{b:?}");
    }
    // q out of range wins even over an empty histogram, as in Prometheus.
    assert_eq!(histogram_quantile(2.0, &[]), INF);
}

#[test]
fn quantiles_match_prometheus_test_data() {
    // promql/promqltest/testdata/histograms.test, `testhistogram` at 50m (counts x10).
    // Positive lowest bucket: 0.1:50, 0.2:70, 1:110, +Inf:120.
    let pos = buckets(&[(0.1, 50.0), (0.2, 70.0), (1.0, 110.0), (INF, 120.0)]);
    // q=0.2: rank 24, first bucket: 0.1 * 24/50 = 0.048
    // q=0.5: rank 60: 0.1 + 0.1 * (60-50)/(70-50) = 0.15
    // q=0.8: rank 96: 0.2 + 0.8 * (96-70)/(110-70) = 0.72
    // q=1: rank 120 is in +Inf: second-highest bound 1
    for (q, want) in [
        (0.0, 0.0),
        (0.2, 0.048),
        (0.5, 0.15),
        (0.8, 0.72),
        (1.0, 1.0),
    ] {
        assert_close(
            histogram_quantile(q, &pos),
            want,
            &format!("positive q={q}"),
        );
    }
    // Negative lowest bucket: -0.2:10, -0.1:20, 0.3:20, +Inf:30. A lowest bucket with a
    // bound <= 0 returns its bound instead of interpolating from 0.
    let neg = buckets(&[(-0.2, 10.0), (-0.1, 20.0), (0.3, 20.0), (INF, 30.0)]);
    // q=0.5: rank 15: -0.2 + 0.1 * (15-10)/(20-10) = -0.15; q=0.8: rank 24 is in +Inf: 0.3
    for (q, want) in [
        (0.0, -0.2),
        (0.2, -0.2),
        (0.5, -0.15),
        (0.8, 0.3),
        (1.0, 0.3),
    ] {
        assert_close(
            histogram_quantile(q, &neg),
            want,
            &format!("negative q={q}"),
        );
    }

    // `nonmonotonic_bucket` (current Prometheus): 0.1:20, 1:10, 10:50, 100:40, 1000:90,
    // +Inf:80. The envelope makes it 20, 20, 50, 50, 90, 90.
    let non = buckets(&[
        (0.1, 20.0),
        (1.0, 10.0),
        (10.0, 50.0),
        (100.0, 40.0),
        (1000.0, 90.0),
        (INF, 80.0),
    ]);
    // q=0.01: rank 0.9: 0.1 * 0.9/20 = 0.0045
    // q=0.5: rank 45: 1 + 9 * (45-20)/(50-20) = 8.5
    // q=0.99: rank 89.1: 100 + 900 * (89.1-50)/(90-50) = 979.75
    for (q, want) in [(0.01, 0.0045), (0.5, 8.5), (0.99, 979.75)] {
        assert_close(
            histogram_quantile(q, &non),
            want,
            &format!("nonmonotonic q={q}"),
        );
    }

    // `mixed_bucket`: one bound written three ways (0.2, 2e-1, 2.0e-1), through the parser,
    // and `+inf` in lower case. Coalesced: 0.1:1, 0.2:3, +Inf:4.
    let e = prom::parse(
        "mixed_bucket{le=\"0.1\"} 1\nmixed_bucket{le=\"0.2\"} 1\nmixed_bucket{le=\"2e-1\"} 1\n\
         mixed_bucket{le=\"2.0e-1\"} 1\nmixed_bucket{le=\"+Inf\"} 4\n",
    )
    .unwrap();
    let f = e.family("mixed_bucket").unwrap();
    let b: Vec<Bucket> = f
        .samples
        .iter()
        .map(|s| Bucket {
            le: s.labels.get("le").unwrap().parse().unwrap(),
            count: s.value,
        })
        .collect();
    // q=0.5: rank 2: 0.1 + 0.1 * (2-1)/(3-1) = 0.15; q=0.75: rank 3: 0.2; q=1: rank 4 in
    // +Inf: 0.2
    for (q, want) in [(0.5, 0.15), (0.75, 0.2), (1.0, 0.2)] {
        assert_close(histogram_quantile(q, &b), want, &format!("mixed q={q}"));
    }
    let zero = buckets(&[(INF, 0.0), ("+inf".parse().unwrap(), 0.0)]);
    assert!(histogram_quantile(0.5, &zero).is_nan());
}

#[test]
fn quantiles_ignore_float_noise_like_prometheus() {
    // promql/quantile_test.go, "simple - non-monotonic middle": 15.00000000001 is within
    // 1e-12 relative of 15 and is flattened to 15, so q=1 gives 15 (rank 15 reaches le=15:
    // 10 + 5 * 5/5). Without the flattening, the envelope would make the +Inf count
    // 15.00000000001, no bucket below le=20 would reach the rank, and q=1 would give 20.
    let b = buckets(&[
        (10.0, 10.0),
        (15.0, 15.0),
        (20.0, 15.00000000001),
        (30.0, 15.0),
        (INF, 15.0),
    ]);
    // q=0.5: rank 7.5: 10 * 7.5/10 = 7.5; q=0.9: rank 13.5: 10 + 5 * 3.5/5 = 13.5;
    // q=0.99: rank 14.85: 10 + 5 * 4.85/5 = 14.85
    for (q, want) in [(1.0, 15.0), (0.99, 14.85), (0.9, 13.5), (0.5, 7.5)] {
        assert_close(histogram_quantile(q, &b), want, &format!("q={q}"));
    }
    // "real example 2 - non-monotonic", expected values from Prometheus' test.
    let b = buckets(&[
        (0.005, 9.6),
        (0.01, 9.688888889),
        (0.025, 9.755555556),
        (0.05, 9.844444444),
        (0.1, 9.888888889),
        (0.25, 9.888888889),
        (0.5, 9.888888889),
        (1.0, 9.888888889),
        (2.5, 9.888888889),
        (5.0, 9.888888889),
        (10.0, 9.888888889001),
        (25.0, 9.888888889),
        (50.0, 9.888888888999),
        (100.0, 9.888888889),
        (INF, 9.888888889),
    ]);
    for (q, want) in [
        (1.0, 0.1),
        (0.99, 0.03468750000281261),
        (0.9, 0.00463541666671875),
        (0.5, 0.0025752314815104174),
    ] {
        assert_close(
            histogram_quantile(q, &b),
            want,
            &format!("real example q={q}"),
        );
    }
}

// ---------------------------------------------------------------------------------------
// Windows: histogram deltas, counters, gauges
// ---------------------------------------------------------------------------------------

fn hist(pairs: &[(f64, f64)], sum: f64) -> Histogram {
    let count = pairs.last().map_or(0.0, |b| b.1);
    Histogram::new(pairs.iter().copied(), sum, count)
}

#[test]
fn histogram_delta_and_resets() {
    let h1 = hist(&[(0.1, 2.0), (0.5, 5.0), (INF, 6.0)], 1.5);
    let h2 = hist(&[(0.1, 4.0), (0.5, 9.0), (INF, 12.0)], 3.0);
    // h2 - h1, bucket by bucket: 2, 4, 6; sum 1.5; count 6.
    assert_eq!(
        Histogram::delta(&h2, &h1),
        hist(&[(0.1, 2.0), (0.5, 4.0), (INF, 6.0)], 1.5)
    );
    // h3 has a lower count than h2: the server restarted; h3 is the increase.
    let h3 = hist(&[(0.1, 1.0), (0.5, 1.0), (INF, 2.0)], 0.5);
    assert!(h3.is_reset_of(&h2));
    assert_eq!(Histogram::delta(&h3, &h2), h3);
    // Over h1..h4 with the reset inside the window: (h2-h1) + h3 + (h4-h3)
    //   buckets: 0.1: 2+1+2 = 5; 0.5: 4+1+3 = 8; +Inf: 6+2+3 = 11
    //   sum: 1.5 + 0.5 + (1.25-0.5) = 2.75; count 11
    let h4 = hist(&[(0.1, 3.0), (0.5, 4.0), (INF, 5.0)], 1.25);
    let window = Histogram::increase(&[h1.clone(), h2, h3, h4]).unwrap();
    assert_eq!(window, hist(&[(0.1, 5.0), (0.5, 8.0), (INF, 11.0)], 2.75));
    // p50 of the window: rank 5.5 in (0.1, 0.5]: 0.1 + 0.4 * (5.5-5)/(8-5) = 0.1666...
    assert_close(window.quantile(0.5), 0.1 + 0.4 * 0.5 / 3.0, "window p50");
    assert_close(window.mean().unwrap(), 0.25, "window mean 2.75/11");
    assert_eq!(Histogram::increase(std::slice::from_ref(&h1)), None);

    // One bucket going down, count not: still a reset (a restart resets all at once).
    let odd = hist(&[(0.1, 1.0), (0.5, 5.0), (INF, 6.0)], 1.5);
    assert!(odd.is_reset_of(&h1));
    // Different bounds: a restart with another configuration.
    let other = hist(&[(0.2, 3.0), (0.5, 6.0), (INF, 7.0)], 2.0);
    assert!(other.is_reset_of(&h1));
    assert_eq!(Histogram::delta(&other, &h1), other);
    // An idle window: all zero, quantile NaN, no mean.
    let idle = Histogram::delta(&h1, &h1);
    assert!(idle.quantile(0.5).is_nan());
    assert_eq!(idle.mean(), None);
}

#[test]
fn histograms_with_other_bounds_add_up_conservatively() {
    // A = {1:2, +Inf:3}, B = {0.5:1, 2:4, +Inf:4}. At each bound of the union, a side
    // without it counts its largest bound below:
    //   0.5: A 0 + B 1 = 1;  1: A 2 + B 1 = 3;  2: A 2 + B 4 = 6;  +Inf: 3 + 4 = 7
    let mut a = hist(&[(1.0, 2.0), (INF, 3.0)], 1.0);
    let b = hist(&[(0.5, 1.0), (2.0, 4.0), (INF, 4.0)], 2.0);
    a.add(&b);
    assert_eq!(
        a,
        hist(&[(0.5, 1.0), (1.0, 3.0), (2.0, 6.0), (INF, 7.0)], 3.0)
    );
}

#[test]
fn counter_increase_and_rate() {
    // 10 -> 15 -> 25: +5 +10 = 15 over 20 s = 0.75/s
    let p = [(0.0, 10.0), (10.0, 15.0), (20.0, 25.0)];
    assert_eq!(counter_increase(&p), Some(15.0));
    assert_eq!(counter_rate(&p), Some(0.75));
    // Reset: 100 -> 120 (+20) -> 5 (restart: +5) -> 25 (+20) = 45 over 30 s = 1.5/s
    let p = [(0.0, 100.0), (10.0, 120.0), (20.0, 5.0), (30.0, 25.0)];
    assert_eq!(counter_increase(&p), Some(45.0));
    assert_eq!(counter_rate(&p), Some(1.5));
    // A reset to exactly 0 adds 0.
    assert_eq!(counter_increase(&[(0.0, 7.0), (1.0, 0.0)]), Some(0.0));
    // NaN skipped: 1 -> 4 = 3 over 10 s
    let p = [(0.0, 1.0), (5.0, f64::NAN), (10.0, 4.0)];
    assert_eq!(counter_increase(&p), Some(3.0));
    assert_eq!(counter_rate(&p), Some(0.3));
    // Not enough to tell.
    assert_eq!(counter_increase(&[]), None);
    assert_eq!(counter_increase(&[(0.0, 5.0)]), None);
    assert_eq!(counter_increase(&[(0.0, 5.0), (1.0, f64::NAN)]), None);
    assert_eq!(counter_rate(&[(0.0, 5.0)]), None);
    // No time passed: an increase but no rate.
    assert_eq!(counter_increase(&[(5.0, 1.0), (5.0, 2.0)]), Some(1.0));
    assert_eq!(counter_rate(&[(5.0, 1.0), (5.0, 2.0)]), None);
}

#[test]
fn gauge_means() {
    // Plain: (1 + 3 + 8) / 3 = 4
    assert_eq!(
        gauge_mean(&[(0.0, 1.0), (10.0, 3.0), (20.0, 8.0)]),
        Some(4.0)
    );
    assert_eq!(gauge_mean(&[(0.0, f64::NAN), (1.0, 2.0)]), Some(2.0));
    assert_eq!(gauge_mean(&[]), None);
    // Time-weighted, each value holding until the next point: 1 for 10 s, 3 for 30 s,
    // the last point no weight: (1*10 + 3*30) / 40 = 2.5
    let p = [(0.0, 1.0), (10.0, 3.0), (40.0, 100.0)];
    assert_eq!(gauge_time_weighted_mean(&p), Some(2.5));
    assert_eq!(gauge_time_weighted_mean(&[(3.0, 7.0)]), Some(7.0));
    assert_eq!(gauge_time_weighted_mean(&[]), None);
}

// ---------------------------------------------------------------------------------------
// The typed view
// ---------------------------------------------------------------------------------------

#[test]
fn typed_view_of_metrics_after_load() {
    let snap = VllmSnapshot::from_exposition(&prom::parse(body(AFTER_LOAD)).unwrap());
    assert_eq!(snap.models.keys().collect::<Vec<_>>(), ["tiny"]);
    let m = snap.single_model().unwrap();
    // Capture line numbers below are those of metrics_after_load.txt.
    assert_eq!(m.model_name, "tiny");
    assert_eq!(m.num_requests_running, Some(0.0)); // line 64
    assert_eq!(m.num_requests_waiting, Some(0.0)); // line 67
    assert_eq!(m.kv_cache_usage, Some(0.0)); // line 79
    assert_eq!(m.sleep_state.as_deref(), Some("awake")); // line 74
    assert_eq!(m.prefix_cache_queries_total, Some(210.0)); // line 82
    assert_eq!(m.prefix_cache_hits_total, Some(0.0)); // line 88
    assert_eq!(m.num_preemptions_total, Some(0.0)); // line 118
    assert_eq!(m.prompt_tokens_total, Some(210.0)); // line 124
    assert_eq!(m.generation_tokens_total, Some(1820.0)); // line 160
    // Lines 166-170: stop 0, length 27, abort 0, error 0, repetition 0.
    assert_eq!(m.request_success_total, Some(27.0));
    let by_reason = m.request_success_by_reason.as_ref().unwrap();
    assert_eq!(by_reason.len(), 5);
    assert_eq!(by_reason["length"], 27.0);
    assert_eq!(by_reason["stop"], 0.0);

    // Histograms: _count and _sum.
    let h = |name: &str, h: &Option<Histogram>| h.clone().unwrap_or_else(|| panic!("{name}"));
    let e2e = h("e2e", &m.e2e_request_latency_seconds);
    assert_eq!(e2e.count, 27.0); // line 396
    assert_eq!(e2e.sum, 14.062761545181274); // line 397
    assert_eq!(e2e.buckets.len(), 22); // lines 374-395
    assert_eq!(
        e2e.buckets[0],
        Bucket {
            le: 0.3,
            count: 21.0
        }
    ); // line 374
    assert_eq!(
        e2e.buckets[21],
        Bucket {
            le: INF,
            count: 27.0
        }
    ); // line 395
    // p50: rank 13.5 in the first bucket (0.3:21): 0.3 * 13.5/21
    assert_close(e2e.quantile(0.5), 0.3 * 13.5 / 21.0, "e2e p50");
    // p90: rank 24.3 in (1.5, 2.0] (1.5:21, 2.0:27, lines 378-379): 1.5 + 0.5 * 3.3/6 = 1.775
    assert_close(e2e.quantile(0.9), 1.775, "e2e p90");

    let ttft = h("ttft", &m.time_to_first_token_seconds);
    assert_eq!((ttft.count, ttft.sum), (27.0, 0.699984073638916)); // lines 313-314
    // p50: rank 13.5 in (0.01, 0.02] (0.01:1, 0.02:14, lines 292-293):
    //   0.01 + 0.01 * (13.5-1)/(14-1) = 0.019615384...
    assert_close(ttft.quantile(0.5), 0.01 + 0.01 * 12.5 / 13.0, "ttft p50");

    let itl = h("itl", &m.inter_token_latency_seconds);
    assert_eq!((itl.count, itl.sum), (1793.0, 13.357205723999755)); // lines 340-341
    let queue = h("queue", &m.request_queue_time_seconds);
    assert_eq!((queue.count, queue.sum), (27.0, 0.0009420779996389683)); // lines 425-426
    let prefill = h("prefill", &m.request_prefill_time_seconds);
    assert_eq!((prefill.count, prefill.sum), (27.0, 0.2936487380006838)); // lines 483-484
    let decode = h("decode", &m.request_decode_time_seconds);
    assert_eq!((decode.count, decode.sum), (27.0, 13.357205723999755)); // lines 512-513
    let inference = h("inference", &m.request_inference_time_seconds);
    assert_eq!(inference.count, 27.0);
    let prompt = h("prompt", &m.request_prompt_tokens);
    assert_eq!((prompt.count, prompt.sum), (27.0, 210.0)); // lines 198-199
    assert_eq!(
        prompt.buckets[1],
        Bucket {
            le: 2.0,
            count: 7.0
        }
    ); // line 189
    let generation = h("generation", &m.request_generation_tokens);
    assert_eq!((generation.count, generation.sum), (27.0, 1820.0));
    let iteration = h("iteration", &m.iteration_tokens);
    assert_eq!((iteration.count, iteration.sum), (546.0, 2030.0)); // lines 236-237

    // Line 551: vllm:cache_config_info.
    let cc = snap.cache_config.as_ref().unwrap();
    assert_eq!(cc.engine.as_deref(), Some("0"));
    assert_eq!(cc.num_gpu_blocks, Some(8192));
    assert_eq!(cc.block_size, Some(128));
    assert_eq!(cc.kv_cache_memory_bytes, Some(1_073_741_824));
    assert_eq!(cc.num_cpu_blocks, None); // num_cpu_blocks="None"
    assert_eq!(cc.gpu_memory_utilization, Some(0.92));
    assert_eq!(cc.enable_prefix_caching, Some(true));
    assert_eq!(cc.cache_dtype.as_deref(), Some("auto"));
    assert_eq!(cc.labels.len(), 37);
    assert_eq!(snap.lora, None);
}

#[test]
fn typed_view_of_idle_and_devlora_captures() {
    let idle = VllmSnapshot::from_exposition(&prom::parse(body(IDLE)).unwrap());
    let m = idle.model("tiny").unwrap();
    let e2e = m.e2e_request_latency_seconds.as_ref().unwrap();
    assert_eq!(e2e.count, 0.0); // metrics_idle.txt line 396
    assert!(e2e.quantile(0.5).is_nan(), "no requests, no quantile");
    assert_eq!(e2e.mean(), None);

    let lora = VllmSnapshot::from_exposition(&prom::parse(body(DEVLORA)).unwrap());
    // metrics_devlora.txt lines 544-545: the newer series (…5808119e+09) has no adapters.
    let info = lora.lora.as_ref().unwrap();
    assert_eq!(info.max_lora, Some(1));
    assert!(info.running.is_empty() && info.waiting.is_empty());
    assert_eq!(info.updated_at, 1.795495635808119e9);
    // Line 389: one request served.
    let m = lora.model("tiny").unwrap();
    assert_eq!(m.e2e_request_latency_seconds.as_ref().unwrap().count, 1.0);
}

#[test]
fn typed_view_accepts_older_names_and_invents_nothing() {
    // An older vLLM: gpu_cache_usage_perc, time_per_output_token_seconds,
    // gpu_prefix_cache_*; two data-parallel engines; no waiting gauge, no histograms
    // but one.
    let text = "\
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{engine=\"0\",model_name=\"m\"} 0.25
vllm:gpu_cache_usage_perc{engine=\"1\",model_name=\"m\"} 0.75
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine=\"0\",model_name=\"m\"} 2
vllm:num_requests_running{engine=\"1\",model_name=\"m\"} 3
# TYPE vllm:gpu_prefix_cache_queries counter
vllm:gpu_prefix_cache_queries_total{engine=\"0\",model_name=\"m\"} 100
vllm:gpu_prefix_cache_queries_created{engine=\"0\",model_name=\"m\"} 1.7e9
# TYPE vllm:gpu_prefix_cache_hits_total counter
vllm:gpu_prefix_cache_hits_total{engine=\"0\",model_name=\"m\"} 40
# TYPE vllm:time_per_output_token_seconds histogram
vllm:time_per_output_token_seconds_bucket{engine=\"0\",le=\"0.1\",model_name=\"m\"} 4
vllm:time_per_output_token_seconds_bucket{engine=\"0\",le=\"+Inf\",model_name=\"m\"} 5
vllm:time_per_output_token_seconds_sum{engine=\"0\",model_name=\"m\"} 0.5
vllm:time_per_output_token_seconds_count{engine=\"0\",model_name=\"m\"} 5
vllm:time_per_output_token_seconds_bucket{engine=\"1\",le=\"0.1\",model_name=\"m\"} 1
vllm:time_per_output_token_seconds_bucket{engine=\"1\",le=\"+Inf\",model_name=\"m\"} 3
vllm:time_per_output_token_seconds_sum{engine=\"1\",model_name=\"m\"} 0.75
vllm:time_per_output_token_seconds_count{engine=\"1\",model_name=\"m\"} 3
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine=\"0\"} 9
";
    let snap = VllmSnapshot::from_exposition(&prom::parse(text).unwrap());
    let m = snap.model("m").unwrap();
    assert_eq!(m.kv_cache_usage, Some(0.5)); // mean of 0.25 and 0.75
    assert_eq!(m.num_requests_running, Some(5.0)); // 2 + 3
    assert_eq!(m.prefix_cache_queries_total, Some(100.0)); // _created not added
    assert_eq!(m.prefix_cache_hits_total, Some(40.0));
    // Engines added: 0.1: 4+1 = 5, +Inf: 5+3 = 8, sum 1.25, count 8.
    assert_eq!(
        m.inter_token_latency_seconds,
        Some(hist(&[(0.1, 5.0), (INF, 8.0)], 1.25))
    );
    // No model_name on the waiting gauge: not this model's.
    assert_eq!(m.num_requests_waiting, None);
    assert_eq!(m.prompt_tokens_total, None);
    assert_eq!(m.request_success_total, None);
    assert_eq!(m.request_success_by_reason, None);
    assert_eq!(m.e2e_request_latency_seconds, None);
    assert_eq!(m.sleep_state, None);
    assert_eq!(snap.cache_config, None);
    assert_eq!(snap.models.len(), 1);

    // When both names are exported, the current one is read and the old one ignored.
    let both = "\
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{model_name=\"m\"} 0.5
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name=\"m\"} 0.9
";
    let snap = VllmSnapshot::from_exposition(&prom::parse(both).unwrap());
    assert_eq!(snap.model("m").unwrap().kv_cache_usage, Some(0.5));

    // Nothing at all: no models.
    let empty = VllmSnapshot::from_exposition(&prom::parse("").unwrap());
    assert!(empty.models.is_empty() && empty.single_model().is_none());
}

#[test]
fn windows_over_two_real_scrapes() {
    // idle -> after_load of the same server: the window's served requests.
    let idle = VllmSnapshot::from_exposition(&prom::parse(body(IDLE)).unwrap());
    let load = VllmSnapshot::from_exposition(&prom::parse(body(AFTER_LOAD)).unwrap());
    let (a, b) = (idle.model("tiny").unwrap(), load.model("tiny").unwrap());
    let window = Histogram::delta(
        b.e2e_request_latency_seconds.as_ref().unwrap(),
        a.e2e_request_latency_seconds.as_ref().unwrap(),
    );
    assert_eq!(window.count, 27.0);
    let served = counter_increase(&[
        (0.0, a.generation_tokens_total.unwrap()),
        (27.0, b.generation_tokens_total.unwrap()),
    ]);
    assert_eq!(served, Some(1820.0 - a.generation_tokens_total.unwrap()));
}
