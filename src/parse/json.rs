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

impl Value<'_> {
    /// The JSON type's name, for `wrong_type` rejects.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::Str(_) => "string",
            Value::Object(_) => "object",
            Value::Array(_) => "array",
        }
    }
}

/// Walks the members of the top-level object of `text`.
#[derive(Debug)]
pub struct ObjectScanner<'a> {
    text: &'a str,
    pos: usize,
    first: bool,
}

impl<'a> ObjectScanner<'a> {
    /// Starts at the opening brace (leading whitespace allowed).
    pub fn new(text: &'a str) -> Result<Self, JsonError> {
        let mut scanner = ObjectScanner { text, pos: 0, first: true };
        scanner.skip_ws();
        scanner.expect(b'{')?;
        Ok(scanner)
    }

    /// The next member, or `None` after the closing brace (and only whitespace after it).
    pub fn next_member(&mut self) -> Result<Option<(JsonStr<'a>, Value<'a>)>, JsonError> {
        self.skip_ws();
        if self.peek()? == b'}' {
            self.pos += 1;
            self.skip_ws();
            return if self.pos == self.text.len() { Ok(None) } else { Err(self.syntax()) };
        }
        if !self.first {
            self.expect(b',')?;
            self.skip_ws();
        }
        self.first = false;
        self.expect(b'"')?;
        let key = self.string_body()?;
        self.skip_ws();
        self.expect(b':')?;
        self.skip_ws();
        let value = self.value(1)?;
        Ok(Some((key, value)))
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn peek(&self) -> Result<u8, JsonError> {
        self.bytes().get(self.pos).copied().ok_or(JsonError::Truncated)
    }

    fn syntax(&self) -> JsonError {
        JsonError::Syntax(self.pos)
    }

    fn expect(&mut self, byte: u8) -> Result<(), JsonError> {
        if self.peek()? == byte {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.syntax())
        }
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\r' | b'\n') = self.bytes().get(self.pos) {
            self.pos += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value<'a>, JsonError> {
        let start = self.pos;
        match self.peek()? {
            b'"' => {
                self.pos += 1;
                Ok(Value::Str(self.string_body()?))
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
        if rest[..n] != word.as_bytes()[..n] {
            return Err(self.syntax());
        }
        if n < word.len() {
            return Err(JsonError::Truncated);
        }
        self.pos += n;
        Ok(value)
    }

    /// Scans the body of a string whose opening quote was consumed; leaves `pos` after the close.
    /// Raw control characters are tolerated: rejecting them would lose a good entry for nothing.
    fn string_body(&mut self) -> Result<JsonStr<'a>, JsonError> {
        let start = self.pos;
        let mut escaped = false;
        loop {
            let rest = &self.bytes()[self.pos..];
            let Some(i) = memchr::memchr2(b'"', b'\\', rest) else {
                return Err(JsonError::Truncated);
            };
            self.pos += i;
            if rest[i] == b'"' {
                let raw = &self.text[start..self.pos];
                self.pos += 1;
                return Ok(JsonStr { raw, escaped });
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

    fn digits(&mut self) -> Result<usize, JsonError> {
        let start = self.pos;
        while self.bytes().get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
        Ok(self.pos - start)
    }

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
        let mut scanner = ObjectScanner::new(text)?;
        let mut out = Vec::new();
        while let Some((key, value)) = scanner.next_member()? {
            out.push((key.decode().into_owned(), value));
        }
        Ok(out)
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
