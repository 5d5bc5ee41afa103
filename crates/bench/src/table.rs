//! The suite's figures: rows of a table (what, target, measured, met), and the
//! statistics they are made of.

use std::fmt::Write as _;
use std::time::Duration;

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was measured.
    pub what: String,
    /// The target, in words ("< 15 ms"); empty when there is none.
    pub target: String,
    /// The figure, in words.
    pub measured: String,
    /// Whether the target was met; `None` for rows without a target.
    pub met: Option<bool>,
}

impl Row {
    /// A row with a target.
    pub fn target(what: impl Into<String>, target: &str, measured: String, met: bool) -> Row {
        Row {
            what: what.into(),
            target: target.into(),
            measured,
            met: Some(met),
        }
    }

    /// A row that only informs.
    pub fn info(what: impl Into<String>, measured: String) -> Row {
        Row {
            what: what.into(),
            target: String::new(),
            measured,
            met: None,
        }
    }
}

/// The table as Markdown, with a header naming the section of each block of rows.
pub fn markdown(sections: &[(String, Vec<Row>)]) -> String {
    let mut out =
        String::from("| section | what | target | measured | met |\n|---|---|---|---|---|\n");
    for (name, rows) in sections {
        for r in rows {
            let met = match r.met {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "",
            };
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} | {met} |",
                r.what, r.target, r.measured
            );
        }
    }
    out
}

/// Sorted durations, for quantiles.
pub struct Samples(Vec<Duration>);

impl Samples {
    /// Sorts `v`.
    pub fn new(mut v: Vec<Duration>) -> Samples {
        v.sort();
        Samples(v)
    }

    /// The nearest-rank quantile `q` in 0..=1.
    pub fn quantile(&self, q: f64) -> Duration {
        let n = self.0.len();
        if n == 0 {
            return Duration::ZERO;
        }
        let rank = (q * n as f64).ceil() as usize;
        self.0[rank.clamp(1, n) - 1]
    }

    /// The median.
    pub fn median(&self) -> Duration {
        self.quantile(0.5)
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Milliseconds, for printing.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `median X ms, p99 Y ms (n=N)`.
pub fn median_p99(s: &Samples) -> String {
    format!(
        "median {:.2} ms, p99 {:.2} ms (n={})",
        ms(s.median()),
        ms(s.quantile(0.99)),
        s.len()
    )
}

/// Mebibytes of a `kB` figure from /proc.
pub fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let s = Samples::new((1..=100).rev().map(Duration::from_millis).collect());
        assert_eq!(s.median(), Duration::from_millis(50));
        assert_eq!(s.quantile(0.99), Duration::from_millis(99));
        assert_eq!(s.quantile(1.0), Duration::from_millis(100));
        assert_eq!(s.quantile(0.0), Duration::from_millis(1));
        assert_eq!(Samples::new(vec![]).median(), Duration::ZERO);
    }

    #[test]
    fn markdown_marks_missed_targets() {
        let t = markdown(&[(
            "start".into(),
            vec![
                Row::target("a", "< 1 ms", "2 ms".into(), false),
                Row::info("b", "3".into()),
            ],
        )]);
        assert!(t.contains("| start | a | < 1 ms | 2 ms | NO |"), "{t}");
        assert!(t.contains("| start | b |  | 3 |  |"), "{t}");
    }
}
