//! A validating, borrowing pull scanner for one JSON object per line.
//!
//! Envoy's access-log entries are flat objects, so the scanner walks top-level members and hands
//! out borrowed values: no `serde_json::Value`, no allocation unless a string holds an escape.
//! Nested objects and arrays are validated and returned as raw slices. It knows nothing about
//! Envoy; `envoy_json` gives the keys their meaning.

use std::borrow::Cow;

/// Nesting deeper than this is refused rather than recursed into.
const MAX_DEPTH: usize = 64;

/// Why a line is not one well-formed JSON object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonError {
    /// The input ended inside the object: a cut line.
    Truncated,
    /// An unexpected byte at this offset.
    Syntax(usize),
    /// Nesting deeper than [`MAX_DEPTH`].
    TooDeep,
}

/// A JSON string as it appears between its quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonStr<'a> {
    raw: &'a str,
    escaped: bool,
}

impl<'a> JsonStr<'a> {
    /// The raw text between the quotes, escapes not decoded.
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    /// Whether the string holds an escape (so `raw` differs from the decoded text).
    pub fn is_escaped(&self) -> bool {
        self.escaped
    }

    /// The decoded text; borrows unless the string holds an escape.
    pub fn decode(&self) -> Cow<'a, str> {
        if self.escaped { Cow::Owned(unescape(self.raw)) } else { Cow::Borrowed(self.raw) }
    }
}

/// One JSON value, borrowed from the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Null,
    Bool(bool),
    /// The number's text, validated against the JSON grammar.
    Number(&'a str),
    Str(JsonStr<'a>),
    /// A whole nested object, braces included.
    Object(&'a str),
    /// A whole nested array, brackets included.
    Array(&'a str),
}

/// The keys a caller expects, found by their first byte and a word-wise compare, so the usual
/// member needs no scan for its key's closing quote and no string match afterwards.
#[derive(Debug)]
pub struct KeyTable {
    by_first_byte: Vec<Vec<TableKey>>,
}

/// Longest key the table compares word-wise; longer ones are matched by the general scan.
const TABLE_KEY_MAX: usize = 40;
const TABLE_WORDS: usize = TABLE_KEY_MAX / 8;

/// A known key as little-endian words, zero-padded, with masks covering its bytes.
#[derive(Debug, Clone)]
struct TableKey {
    words: [u64; TABLE_WORDS],
    masks: [u64; TABLE_WORDS],
    len: usize,
    index: usize,
}

impl KeyTable {
    /// `keys[i]` is reported as `MemberKey::Known(i)`.
    pub fn new(keys: &[&'static str]) -> Self {
        let mut by_first_byte = vec![Vec::new(); 256];
        for (index, key) in keys.iter().enumerate() {
            let bytes = key.as_bytes();
            let (Some(&first), true) = (bytes.first(), bytes.len() <= TABLE_KEY_MAX) else {
                continue;
            };
            let mut padded = [0u8; TABLE_KEY_MAX];
            padded[..bytes.len()].copy_from_slice(bytes);
            let mut entry = TableKey {
                words: [0; TABLE_WORDS],
                masks: [0; TABLE_WORDS],
                len: bytes.len(),
                index,
            };
            for w in 0..TABLE_WORDS {
                entry.words[w] = word_at(&padded, w * 8);
                let covered = bytes.len().saturating_sub(w * 8).min(8);
                entry.masks[w] = if covered == 8 { u64::MAX } else { (1u64 << (covered * 8)) - 1 };
            }
            by_first_byte[usize::from(first)].push(entry);
        }
        KeyTable { by_first_byte }
    }

    /// The known key that `rest` (the bytes after a key's opening quote) starts with, closing
    /// quote included: its index and length. Near the end of a line the general scan decides.
    #[inline]
    fn lookup(&self, rest: &[u8]) -> Option<(usize, usize)> {
        if rest.len() <= TABLE_KEY_MAX {
            return None;
        }
        let candidates = &self.by_first_byte[usize::from(rest[0])];
        candidates.iter().find_map(|key| {
            let same = rest[key.len] == b'"'
                && (0..key.len.div_ceil(8))
                    .all(|w| word_at(rest, w * 8) & key.masks[w] == key.words[w]);
            same.then_some((key.index, key.len))
        })
    }
}

/// Eight bytes at `at` as a little-endian word.
#[inline]
fn word_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("caller checked the length"))
}

/// A member's key: one the [`KeyTable`] recognised, or any other. The table is a fast path
/// only: a known key can still come as `Other` (escaped, or too near the end of the line), so
/// a caller matches `Other` keys itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberKey<'a> {
    Known(usize),
    Other(JsonStr<'a>),
}

/// Calls `each` for every member of the top-level object of `text`, in order, and checks that
/// nothing but whitespace follows the closing brace.
///
/// Values are handed to a closure rather than returned so that the hot loop keeps them in
/// registers: returning `Result<Option<(JsonStr, Value)>>` per member cost a third of the
/// parse time in store-forwarding stalls.
#[inline]
pub fn for_each_member<'a>(
    text: &'a str,
    keys: &KeyTable,
    mut each: impl FnMut(MemberKey<'a>, Value<'a>),
) -> Result<(), JsonError> {
    let mut s = Scanner { text, pos: 0 };
    s.skip_ws();
    s.expect(b'{')?;
    s.skip_ws();
    if s.peek()? != b'}' {
        loop {
            s.expect(b'"')?;
            let key = match keys.lookup(&text.as_bytes()[s.pos..]) {
                Some((index, len)) => {
                    s.pos += len + 1;
                    MemberKey::Known(index)
                }
                None => {
                    let key_start = s.pos;
                    let escaped = s.string_body()?;
                    MemberKey::Other(JsonStr { raw: &text[key_start..s.pos - 1], escaped })
                }
            };
            s.skip_ws();
            s.expect(b':')?;
            s.skip_ws();
            let value = s.value(1)?;
            each(key, value);
            s.skip_ws();
            match s.peek()? {
                b',' => {
                    s.pos += 1;
                    s.skip_ws();
                }
                b'}' => break,
                _ => return Err(s.syntax()),
            }
        }
    }
    s.pos += 1;
    s.skip_ws();
    if s.pos == text.len() { Ok(()) } else { Err(s.syntax()) }
}

/// Position in the text being scanned.
struct Scanner<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Scanner<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    #[inline]
    fn peek(&self) -> Result<u8, JsonError> {
        self.bytes().get(self.pos).copied().ok_or(JsonError::Truncated)
    }

    fn syntax(&self) -> JsonError {
        JsonError::Syntax(self.pos)
    }

    #[inline]
    fn expect(&mut self, byte: u8) -> Result<(), JsonError> {
        if self.peek()? == byte {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.syntax())
        }
    }

    #[inline]
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\r' | b'\n') = self.bytes().get(self.pos) {
            self.pos += 1;
        }
    }

    #[inline]
    fn value(&mut self, depth: usize) -> Result<Value<'a>, JsonError> {
        let start = self.pos;
        match self.peek()? {
            b'"' => {
                self.pos += 1;
                let escaped = self.string_body()?;
                Ok(Value::Str(JsonStr { raw: &self.text[start + 1..self.pos - 1], escaped }))
            }
            b'{' => {
                self.skip_container(depth, b'}')?;
                Ok(Value::Object(&self.text[start..self.pos]))
            }
            b'[' => {
                self.skip_container(depth, b']')?;
                Ok(Value::Array(&self.text[start..self.pos]))
            }
            b'n' => self.literal("null", Value::Null),
            b't' => self.literal("true", Value::Bool(true)),
            b'f' => self.literal("false", Value::Bool(false)),
            b'-' | b'0'..=b'9' => {
                self.number()?;
                Ok(Value::Number(&self.text[start..self.pos]))
            }
            _ => Err(self.syntax()),
        }
    }

    fn literal(&mut self, word: &str, value: Value<'a>) -> Result<Value<'a>, JsonError> {
        let rest = &self.bytes()[self.pos..];
        let n = word.len().min(rest.len());
        // Byte by byte: four or five bytes, where a `memcmp` call costs more.
        if rest[..n].iter().zip(word.bytes()).any(|(a, b)| *a != b) {
            return Err(self.syntax());
        }
        if n < word.len() {
            return Err(JsonError::Truncated);
        }
        self.pos += n;
        Ok(value)
    }

    /// Scans the body of a string whose opening quote was consumed; leaves `pos` after the close
    /// and tells whether the string held an escape. Raw control characters are tolerated:
    /// rejecting them would lose a good entry for nothing.
    #[inline]
    fn string_body(&mut self) -> Result<bool, JsonError> {
        let mut escaped = false;
        loop {
            let rest = &self.bytes()[self.pos..];
            let Some(i) = find_quote_or_backslash(rest) else {
                return Err(JsonError::Truncated);
            };
            self.pos += i;
            if rest[i] == b'"' {
                self.pos += 1;
                return Ok(escaped);
            }
            escaped = true;
            self.pos += 1;
            match self.peek()? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.pos += 1,
                b'u' => {
                    self.pos += 1;
                    for _ in 0..4 {
                        if !self.peek()?.is_ascii_hexdigit() {
                            return Err(self.syntax());
                        }
                        self.pos += 1;
                    }
                }
                _ => return Err(self.syntax()),
            }
        }
    }

    #[inline]
    fn digits(&mut self) -> Result<usize, JsonError> {
        let start = self.pos;
        while self.bytes().get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
        Ok(self.pos - start)
    }

    #[inline]
    fn number(&mut self) -> Result<(), JsonError> {
        if self.peek()? == b'-' {
            self.pos += 1;
        }
        match self.peek()? {
            b'0' => self.pos += 1,
            b'1'..=b'9' => {
                self.digits()?;
            }
            _ => return Err(self.syntax()),
        }
        if self.bytes().get(self.pos) == Some(&b'.') {
            self.pos += 1;
            if self.digits()? == 0 {
                self.peek()?;
                return Err(self.syntax());
            }
        }
        if let Some(b'e' | b'E') = self.bytes().get(self.pos) {
            self.pos += 1;
            if let b'+' | b'-' = self.peek()? {
                self.pos += 1;
            }
            if self.digits()? == 0 {
                self.peek()?;
                return Err(self.syntax());
            }
        }
        // A number must be followed by a delimiter; the end of input means the line was cut.
        match self.peek()? {
            b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n' => Ok(()),
            _ => Err(self.syntax()),
        }
    }

    /// Validates a nested object or array; `pos` is on its opening byte.
    fn skip_container(&mut self, depth: usize, close: u8) -> Result<(), JsonError> {
        if depth >= MAX_DEPTH {
            return Err(JsonError::TooDeep);
        }
        self.pos += 1;
        self.skip_ws();
        if self.peek()? == close {
            self.pos += 1;
            return Ok(());
        }
        loop {
            if close == b'}' {
                self.expect(b'"')?;
                self.string_body()?;
                self.skip_ws();
                self.expect(b':')?;
                self.skip_ws();
            }
            self.value(depth + 1)?;
            self.skip_ws();
            match self.peek()? {
                b',' => {
                    self.pos += 1;
                    self.skip_ws();
                }
                b if b == close => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(self.syntax()),
            }
        }
    }
}

/// Index of the first `"` or `\\`. Most JSON strings are short: 16-byte SSE2 vectors (always
/// present on x86-64) fit them better than `memchr2`'s 32-byte AVX2 path and its set-up.
#[inline]
fn find_quote_or_backslash(bytes: &[u8]) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    {
        use memchr::arch::x86_64::sse2::memchr::Two;
        static SEARCHER: std::sync::OnceLock<Option<Two>> = std::sync::OnceLock::new();
        if let Some(searcher) = SEARCHER.get_or_init(|| Two::new(b'"', b'\\')) {
            return searcher.find(bytes);
        }
    }
    memchr::memchr2(b'"', b'\\', bytes)
}

/// Decodes the escapes of a string body that the scanner validated.
fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('u') => {
                let high = hex4(&mut chars);
                let code = if (0xD800..0xDC00).contains(&high) {
                    let mut lookahead = chars.clone();
                    if lookahead.next() == Some('\\') && lookahead.next() == Some('u') {
                        let low = hex4(&mut lookahead);
                        if (0xDC00..0xE000).contains(&low) {
                            chars = lookahead;
                            0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
                        } else {
                            high
                        }
                    } else {
                        high
                    }
                } else {
                    high
                };
                out.push(char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER));
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

fn hex4(chars: &mut std::str::Chars<'_>) -> u32 {
    let mut code = 0;
    for _ in 0..4 {
        code = code * 16 + chars.next().and_then(|c| c.to_digit(16)).unwrap_or(0);
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(text: &str) -> Result<Vec<(String, Value<'_>)>, JsonError> {
        let keys = KeyTable::new(&["a", "ab", "g"]);
        let names = ["a", "ab", "g"];
        let mut out = Vec::new();
        for_each_member(text, &keys, |key, value| {
            let name = match key {
                MemberKey::Known(i) => names[i].to_owned(),
                MemberKey::Other(s) => s.decode().into_owned(),
            };
            out.push((name, value));
        })?;
        Ok(out)
    }

    #[test]
    fn known_keys_are_found_by_table_and_others_by_scan() {
        let keys = KeyTable::new(&["authority", "authority_for"]);
        let mut got = Vec::new();
        let text = r#"{"authority_for":1,"authority":2,"authorit":3,"authority\u005f":4,"":5}"#;
        for_each_member(text, &keys, |key, _| got.push(key)).unwrap();
        assert_eq!(got[0], MemberKey::Known(1));
        assert_eq!(got[1], MemberKey::Known(0));
        assert!(matches!(got[2], MemberKey::Other(s) if s.raw() == "authorit"));
        assert!(matches!(got[3], MemberKey::Other(s) if s.is_escaped()));
        assert!(matches!(got[4], MemberKey::Other(s) if s.raw().is_empty()));
    }

    #[test]
    fn flat_object_members_in_order() {
        let got = members(r#" {"a": 1, "b":"x\"y", "c":null,"d":true,"e":[1,{"f":2}],"g":{}} "#);
        let got = got.unwrap();
        let keys: Vec<_> = got.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "b", "c", "d", "e", "g"]);
        assert_eq!(got[0].1, Value::Number("1"));
        let Value::Str(s) = got[1].1 else { panic!("not a string") };
        assert_eq!(s.decode(), "x\"y");
        assert_eq!(got[4].1, Value::Array(r#"[1,{"f":2}]"#));
        assert_eq!(got[5].1, Value::Object("{}"));
    }

    #[test]
    fn cut_lines_are_truncated_not_syntax_errors() {
        for cut in [
            r#"{"a":1"#,
            r#"{"a":"#,
            r#"{"a"#,
            r#"{"ab"#,
            r#"{"a":"abc"#,
            r#"{"a":12"#,
            r#"{"a":[1,2"#,
            r#"{"a":nu"#,
            r#"{"a":"\u12"#,
            r#"{"#,
            r#"{"a":1,"#,
        ] {
            assert_eq!(members(cut).unwrap_err(), JsonError::Truncated, "{cut}");
        }
    }

    #[test]
    fn malformed_lines_are_syntax_errors() {
        for bad in [
            r#"{"a":1}x"#,
            r#"{"a" 1}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":tru}"#,
            r#"{"a":"\q"}"#,
            r#"{a:1}"#,
            r#"{"a":1 "b":2}"#,
            r#"{"a":[1 2]}"#,
            r#"[1]"#,
        ] {
            assert!(matches!(members(bad), Err(JsonError::Syntax(_))), "{bad}");
        }
    }

    #[test]
    fn quote_search_finds_the_first_at_every_offset() {
        for len in 0..80 {
            for at in 0..len {
                for byte in [b'"', b'\\'] {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = byte;
                    assert_eq!(find_quote_or_backslash(&bytes), Some(at), "{len} {at}");
                }
            }
            assert_eq!(find_quote_or_backslash(&vec![0xffu8; len]), None);
        }
    }

    #[test]
    fn deep_nesting_is_refused() {
        let deep = format!(r#"{{"a":{}{}}}"#, "[".repeat(100), "]".repeat(100));
        assert_eq!(members(&deep).unwrap_err(), JsonError::TooDeep);
    }

    #[test]
    fn unicode_escapes_decode_including_surrogate_pairs() {
        let got = members(r#"{"a":"caf\u00e9 \ud83d\ude00 \ud800x"}"#).unwrap();
        let Value::Str(s) = got[0].1 else { panic!("not a string") };
        assert_eq!(s.decode(), "café 😀 \u{fffd}x");
    }
}
