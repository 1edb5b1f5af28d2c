//! `--redact`: what must not leave the collector, taken out of every record as it is parsed,
//! before the store, the export and the live view see it.
//!
//! - `query`: the query string of `path` (and so of the spans' `url.full`);
//! - `user_agent`: replaced by a stable hash (`ua:` and 16 hex digits), which still groups
//!   requests by client;
//! - `x_forwarded_for`: dropped (client addresses hashed would be one guess of 2³² away).
//!
//! A record's raw line (kept as a finding's evidence) has the same values taken out; when one
//! of them is not in the line as written (JSON escaping), the line is withheld instead. A
//! rejected line cannot be read, so with any redaction on its text is withheld too.

use std::borrow::Cow;

use crate::parse::Entry;

/// What a raw line becomes when it cannot be shown redacted.
pub const WITHHELD: &[u8] = b"(withheld: --redact)";

/// The fields `--redact` names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Redaction {
    pub query: bool,
    pub user_agent: bool,
    pub x_forwarded_for: bool,
}

impl Redaction {
    /// `query,user_agent,x_forwarded_for`, any of them.
    pub fn parse(list: &str) -> Result<Redaction, String> {
        let mut redaction = Redaction::default();
        for field in list.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            match field {
                "query" => redaction.query = true,
                "user_agent" => redaction.user_agent = true,
                "x_forwarded_for" => redaction.x_forwarded_for = true,
                other => {
                    return Err(format!(
                        "cannot redact {other:?}: say query, user_agent or x_forwarded_for"
                    ));
                }
            }
        }
        Ok(redaction)
    }

    pub fn is_on(self) -> bool {
        self.query || self.user_agent || self.x_forwarded_for
    }

    /// `entry` redacted, with its raw `line` redacted alike (or withheld).
    pub fn entry<'a>(self, mut entry: Entry<'a>, line: &'a [u8]) -> (Entry<'a>, Cow<'a, [u8]>) {
        let mut line = Cow::Borrowed(line);
        let mut found = true;
        if self.query
            && let Some(path) = entry.path.take()
        {
            entry.path = Some(match path.find('?') {
                Some(at) => {
                    found &= cut(&mut line, &path[at..], "");
                    Cow::Owned(path[..at].to_owned())
                }
                None => path,
            });
        }
        if self.user_agent
            && let Some(agent) = entry.user_agent.take_if(|a| a != "-")
        {
            let hashed = user_agent_hash(&agent);
            found &= cut(&mut line, &agent, &hashed);
            entry.user_agent = Some(Cow::Owned(hashed));
        }
        if self.x_forwarded_for
            && let Some(forwarded) = entry.x_forwarded_for.take()
        {
            found &= cut(&mut line, &forwarded, "");
        }
        if !found {
            line = Cow::Borrowed(WITHHELD);
        }
        (entry, line)
    }
}

/// Replaces every `value` in `line` with `with`; false when `value` is not in it. Envoy's
/// `-` (no value) is left alone: it is no secret, and it is everywhere in a line.
fn cut(line: &mut Cow<'_, [u8]>, value: &str, with: &str) -> bool {
    if value.is_empty() || value == "-" {
        return true;
    }
    let value = value.as_bytes();
    let finder = memchr::memmem::Finder::new(value);
    if finder.find(line).is_none() {
        return false;
    }
    let mut out = Vec::with_capacity(line.len());
    let mut rest: &[u8] = line;
    while let Some(at) = finder.find(rest) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(with.as_bytes());
        rest = &rest[at + value.len()..];
    }
    out.extend_from_slice(rest);
    *line = Cow::Owned(out);
    true
}

/// `ua:` and the 64-bit FNV-1a hash of `agent` in hex: the same agent, the same text, on
/// every collector and in every release.
fn user_agent_hash(agent: &str) -> String {
    let hash = agent
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("ua:{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(path: &'a str, agent: &'a str, forwarded: &'a str) -> Entry<'a> {
        Entry {
            path: Some(path.into()),
            user_agent: Some(agent.into()),
            x_forwarded_for: Some(forwarded.into()),
            ..Entry::default()
        }
    }

    #[test]
    fn every_field_named_is_taken_out_of_the_entry_and_its_line() {
        let all = Redaction::parse("query, user_agent,x_forwarded_for").unwrap();
        let line = br#"{"path":"/pay?card=4111","user_agent":"curl/8.5.0","x_forwarded_for":"203.0.113.9"}"#;
        let (redacted, shown) =
            all.entry(entry("/pay?card=4111", "curl/8.5.0", "203.0.113.9"), line);
        assert_eq!(redacted.path.as_deref(), Some("/pay"));
        assert_eq!(redacted.user_agent.as_deref(), Some(user_agent_hash("curl/8.5.0").as_str()));
        assert_eq!(redacted.x_forwarded_for, None);
        let shown = String::from_utf8(shown.into_owned()).unwrap();
        assert_eq!(
            shown,
            format!(
                r#"{{"path":"/pay","user_agent":"{}","x_forwarded_for":""}}"#,
                user_agent_hash("curl/8.5.0")
            )
        );
    }

    #[test]
    fn a_line_that_does_not_hold_a_value_as_written_is_withheld() {
        let query = Redaction::parse("query").unwrap();
        // JSON may escape what the entry holds decoded.
        let line = br#"{"path":"/a?x=1\u0026y=2"}"#;
        let (redacted, shown) = query.entry(entry("/a?x=1&y=2", "-", "-"), line);
        assert_eq!(redacted.path.as_deref(), Some("/a"));
        assert_eq!(&*shown, WITHHELD);
        // Nothing to take out: the line as it was, Envoy's `-` (no value) included.
        let line = br#"{"path":"/a","user_agent":"-","x_forwarded_for":"-"}"#;
        let all = Redaction::parse("query,user_agent,x_forwarded_for").unwrap();
        let (redacted, shown) = all.entry(entry("/a", "-", "-"), line);
        assert_eq!(&*shown, line);
        assert_eq!(redacted.user_agent.as_deref(), Some("-"));
    }

    #[test]
    fn unknown_fields_are_refused_and_the_hash_is_stable() {
        assert!(Redaction::parse("query,cookie").unwrap_err().contains("\"cookie\""));
        assert!(!Redaction::parse("").unwrap().is_on());
        assert_eq!(user_agent_hash(""), "ua:cbf29ce484222325");
    }
}
