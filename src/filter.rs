//! The filter language of `top`'s `/` prompt and of the status API's `/api/v1/tail?filter=`:
//! whitespace-separated terms, all of which must hold.
//!
//! | term | holds for a record when | and for a host's row when |
//! |---|---|---|
//! | `aliyun` or `host:aliyun` | the host contains the text (any case) | the same |
//! | `host~^api\.` | the host matches the regular expression | the same |
//! | `status:5xx`, `status:404` | the status is in the class, or is the code | the host had such a response |
//! | `flag:UF` | the response flags include `UF` | the host had a response with `UF` |
//! | `src:payments/*` | the source (workload or IP) matches the glob | one of its top sources does |
//! | `method:POST` | the method is `POST` (any case) | (records only) |
//! | `dur>500ms`, `dur>2s` | the duration is above it | its p99 is above it |

use regex::Regex;

use crate::live::TailRecord;
use crate::stats::HostReport;

#[derive(Debug, Clone, Default)]
pub struct Filter {
    text: String,
    terms: Vec<Term>,
}

#[derive(Debug, Clone)]
enum Term {
    /// Lower case.
    HostContains(String),
    HostRegex(Regex),
    Status(StatusMatch),
    Flag(String),
    Source(Glob),
    /// Upper case.
    Method(String),
    SlowerThanMs(f64),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum StatusMatch {
    /// `1xx` … `5xx`: the first digit.
    Class(u16),
    Code(u16),
}

impl StatusMatch {
    fn holds(self, code: u16) -> bool {
        match self {
            StatusMatch::Class(class) => code / 100 == class,
            StatusMatch::Code(wanted) => code == wanted,
        }
    }

    /// The key of a host report's `status` map it counts under: a code's class, the finest
    /// a row counts.
    fn class_name(self) -> String {
        match self {
            StatusMatch::Class(class) => format!("{class}xx"),
            StatusMatch::Code(code) => format!("{}xx", code / 100),
        }
    }
}

/// A glob with `*` for any run of characters.
#[derive(Debug, Clone)]
struct Glob(Vec<String>);

impl Glob {
    fn new(pattern: &str) -> Glob {
        Glob(pattern.split('*').map(str::to_owned).collect())
    }

    fn matches(&self, text: &str) -> bool {
        let parts = &self.0;
        let [first, middle @ .., last] = parts.as_slice() else {
            return parts.first().is_some_and(|only| only == text);
        };
        let Some(mut rest) = text.strip_prefix(first.as_str()) else { return false };
        for part in middle {
            match rest.find(part.as_str()) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
        rest.len() >= last.len() && rest.ends_with(last.as_str())
    }
}

/// Why a filter does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FilterError(String);

impl Filter {
    /// Parses `text`; empty text is the filter that holds for everything.
    pub fn parse(text: &str) -> Result<Filter, FilterError> {
        let terms = text.split_whitespace().map(term).collect::<Result<_, _>>()?;
        Ok(Filter { text: text.trim().to_owned(), terms })
    }

    /// The text it was parsed from, for a title.
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    pub fn matches_record(&self, record: &TailRecord) -> bool {
        self.terms.iter().all(|term| match term {
            Term::HostContains(text) => contains_lower(&record.host, text),
            Term::HostRegex(re) => re.is_match(&record.host),
            Term::Status(status) => record.status.is_some_and(|code| status.holds(code)),
            Term::Flag(flag) => {
                record.flags.as_deref().is_some_and(|flags| flags.split(',').any(|f| f == flag))
            }
            Term::Source(glob) => record.source.as_deref().is_some_and(|s| glob.matches(s)),
            Term::Method(method) => record.method.as_deref() == Some(method.as_str()),
            Term::SlowerThanMs(ms) => record.duration_ms.is_some_and(|d| d > *ms),
        })
    }

    /// Whether a host's row holds; `method:` terms say nothing about rows (no per-method
    /// counts are kept), so they hold.
    pub fn matches_host(&self, host: &HostReport) -> bool {
        self.terms.iter().all(|term| match term {
            Term::HostContains(text) => contains_lower(&host.host, text),
            Term::HostRegex(re) => re.is_match(&host.host),
            Term::Status(status) => {
                host.status.get(status.class_name().as_str()).is_some_and(|n| *n > 0)
            }
            Term::Flag(flag) => {
                host.response_flags.keys().any(|flags| flags.split(',').any(|f| f == flag))
            }
            Term::Source(glob) => host.top_sources.iter().any(|s| glob.matches(&s.value)),
            Term::Method(_) => true,
            Term::SlowerThanMs(ms) => host.duration_ms.as_ref().is_some_and(|p| p.p99 > *ms),
        })
    }

    /// Whether every term applies to host rows (`method:` does not).
    pub fn exact_for_hosts(&self) -> bool {
        !self.terms.iter().any(|t| matches!(t, Term::Method(_)))
    }
}

fn contains_lower(text: &str, lower: &str) -> bool {
    text.to_ascii_lowercase().contains(lower)
}

fn term(word: &str) -> Result<Term, FilterError> {
    let bad = |why: &str| FilterError(format!("{word}: {why}"));
    if let Some(pattern) = word.strip_prefix("host~") {
        return Regex::new(pattern).map(Term::HostRegex).map_err(|e| bad(&e.to_string()));
    }
    if let Some(ms) = word.strip_prefix("dur>") {
        return duration_ms(ms).map(Term::SlowerThanMs).ok_or_else(|| bad("say 500ms or 2s"));
    }
    let Some((key, value)) = word.split_once(':') else {
        return Ok(Term::HostContains(word.to_ascii_lowercase()));
    };
    if value.is_empty() {
        return Err(bad("nothing after the colon"));
    }
    match key {
        "host" => Ok(Term::HostContains(value.to_ascii_lowercase())),
        "status" => status(value).map(Term::Status).ok_or_else(|| bad("say 5xx or 503")),
        "flag" => Ok(Term::Flag(value.to_owned())),
        "src" => Ok(Term::Source(Glob::new(value))),
        "method" => Ok(Term::Method(value.to_ascii_uppercase())),
        _ => Err(bad("terms are host:, host~, status:, flag:, src:, method:, dur>")),
    }
}

fn status(value: &str) -> Option<StatusMatch> {
    let lower = value.to_ascii_lowercase();
    if let Some(class) = lower.strip_suffix("xx") {
        let class: u16 = class.parse().ok()?;
        return (1..=5).contains(&class).then_some(StatusMatch::Class(class));
    }
    let code: u16 = value.parse().ok()?;
    (100..=599).contains(&code).then_some(StatusMatch::Code(code))
}

/// `500ms`, `2s`, `1.5s` in milliseconds.
fn duration_ms(text: &str) -> Option<f64> {
    let (number, scale) = match text.strip_suffix("ms") {
        Some(number) => (number, 1.0),
        None => (text.strip_suffix('s')?, 1000.0),
    };
    let value: f64 = number.parse().ok()?;
    (value.is_finite() && value >= 0.0).then_some(value * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> TailRecord {
        TailRecord {
            host: "api.aliyun.com".into(),
            method: Some("POST".into()),
            status: Some(503),
            flags: Some("UF,URX".into()),
            duration_ms: Some(750.0),
            source: Some("payments/checkout".into()),
            ..TailRecord::default()
        }
    }

    #[test]
    fn every_term_must_hold() {
        let holds = |text: &str| Filter::parse(text).unwrap().matches_record(&record());
        assert!(holds(""));
        assert!(holds("ALIYUN status:5xx flag:URX src:payments/* method:post dur>500ms"));
        assert!(holds("host~^api\\. status:503 dur>0.5s"));
        assert!(!holds("aliyun status:4xx"));
        assert!(!holds("flag:U"));
        assert!(!holds("src:billing/*"));
        assert!(!holds("dur>1s"));
        assert!(!holds("host~^aliyun"));
    }

    #[test]
    fn bad_terms_say_what_is_wrong() {
        let error = |text: &str| Filter::parse(text).unwrap_err().to_string();
        assert_eq!(error("status:9xx"), "status:9xx: say 5xx or 503");
        assert_eq!(error("dur>fast"), "dur>fast: say 500ms or 2s");
        assert!(error("colour:red").contains("terms are"));
        assert!(error("host~(").starts_with("host~(:"));
        assert_eq!(error("flag:"), "flag:: nothing after the colon");
    }

    #[test]
    fn globs_anchor_both_ends() {
        let glob = Glob::new("pay*/check*");
        assert!(glob.matches("payments/checkout"));
        assert!(!glob.matches("xpayments/checkout"));
        assert!(Glob::new("10.0.0.7").matches("10.0.0.7"));
        assert!(!Glob::new("10.0.0.7").matches("10.0.0.77"));
        assert!(Glob::new("*").matches("anything"));
        assert!(!Glob::new("a*a").matches("a"));
    }
}
