//! A small JSON reader and writer for the REST API. It accepts what
//! TensorFlow Serving accepts beyond strict JSON — the bare number tokens
//! `NaN`, `Infinity` and `-Infinity` — and keeps numbers as their source
//! text, so an int64 is converted exactly once the target dtype is known.
//! Strings without escapes and numbers borrow from the request body.
//!
//! A rectangular array of numbers — the bulk of any predict body — is not
//! turned into one JSON value per element: in one pass the parser checks
//! its syntax and shape and reads every number, and keeps it as
//! [`Numbers`]: the values as `f64` (what a float tensor needs) and the
//! source text (for exact integers), which the tensor code copies straight
//! into the tensor's buffer.

use std::borrow::Cow;

mod budget;
mod numbers;
mod write;
pub use budget::{ParseBudget, TREE_BYTES_PER_BODY_BYTE};
pub use numbers::{NumberTokens, Numbers};
pub use write::{write_f32, write_f64, write_int, write_string, write_value};

/// A parsed JSON value borrowing from the input.
#[derive(Debug, Clone, PartialEq)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    /// The number's text, including `NaN`, `Infinity`, `-Infinity`.
    Number(&'a str),
    String(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    /// Members in document order.
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
    /// A rectangular array of numbers, nested to any depth (see [`Numbers`]);
    /// boxed, so that every other value stays small.
    Numbers(Box<Numbers<'a>>),
}

impl<'a> Json<'a> {
    /// The member `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        match self {
            Json::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// What kind of value this is, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Json::Null => "Null",
            Json::Bool(_) => "Bool",
            Json::Number(_) => "Number",
            Json::String(_) => "String",
            Json::Array(_) => "Array",
            Json::Object(_) => "Object",
            Json::Numbers(_) => "Array",
        }
    }

    /// A short rendering for error messages.
    pub fn preview(&self) -> String {
        let mut out = String::new();
        write_value(&mut out, self);
        if out.len() > 64 {
            let mut cut = 64;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
            out.push_str("...");
        }
        out
    }
}

/// Nesting deeper than this is refused (no stack exhaustion on hostile input).
pub const MAX_DEPTH: usize = 128;

/// A body that is not JSON; the message is TensorFlow Serving's style.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("JSON Parse error: {reason}{}", at.map(|o| format!(" at offset {o}")).unwrap_or_default())]
pub struct JsonError {
    pub reason: String,
    pub at: Option<usize>,
}

/// Parses a whole document.
pub fn parse(input: &str) -> Result<Json<'_>, JsonError> {
    parse_within(input, ParseBudget::UNLIMITED)
}

/// Parses a whole document within `budget`.
pub fn parse_within(input: &str, budget: ParseBudget) -> Result<Json<'_>, JsonError> {
    parse_counting_scans(input, budget).0
}

/// [`parse`] without [`Numbers`]: every array is a tree. The reference the
/// tests hold the fast path to, and the benchmark's comparison.
pub fn parse_as_tree(input: &str) -> Result<Json<'_>, JsonError> {
    let mut p = Parser::new(input, ParseBudget::UNLIMITED);
    p.no_numbers_before = usize::MAX;
    p.document()
}

/// [`parse`], and how many bytes the [`Numbers`] scans went over.
fn parse_counting_scans(input: &str, budget: ParseBudget) -> (Result<Json<'_>, JsonError>, usize) {
    let mut p = Parser::new(input, budget);
    let parsed = p.document();
    (parsed, p.scanned)
}

impl<'a> Parser<'a> {
    fn document(&mut self) -> Result<Json<'a>, JsonError> {
        self.skip_ws();
        if self.i == self.b.len() {
            return Err(JsonError { reason: "The document is empty".into(), at: None });
        }
        let value = self.value(0)?;
        self.skip_ws();
        if self.i != self.b.len() {
            return Err(self.error("The document root must not be followed by other values"));
        }
        Ok(value)
    }
}

struct Parser<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
    /// Where the last failed [`Parser::numbers`] scan stopped. An array
    /// starting before it encloses or precedes that failure, so scanning it
    /// again would only fail again: skipping it keeps every byte scanned at
    /// most once by `numbers`, whatever the nesting.
    no_numbers_before: usize,
    /// Bytes gone over by `numbers` scans, successful or not.
    scanned: usize,
    budget: ParseBudget,
    /// Heap bytes the values parsed so far hold.
    used: usize,
}

impl<'a> Parser<'a> {
    fn new(input: &'a str, budget: ParseBudget) -> Self {
        Self {
            s: input,
            b: input.as_bytes(),
            i: 0,
            no_numbers_before: 0,
            scanned: 0,
            budget,
            used: 0,
        }
    }

    fn error(&self, reason: &str) -> JsonError {
        JsonError { reason: reason.to_owned(), at: Some(self.i) }
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn eat(&mut self, literal: &str) -> bool {
        if self.s[self.i..].starts_with(literal) {
            self.i += literal.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json<'a>, JsonError> {
        if depth > MAX_DEPTH {
            return Err(self.error("Nesting too deep"));
        }
        match self.b.get(self.i) {
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => Ok(Json::String(self.string()?)),
            Some(b't') if self.eat("true") => Ok(Json::Bool(true)),
            Some(b'f') if self.eat("false") => Ok(Json::Bool(false)),
            Some(b'n') if self.eat("null") => Ok(Json::Null),
            Some(b'N') if self.eat("NaN") => Ok(Json::Number("NaN")),
            Some(b'I') if self.eat("Infinity") => Ok(Json::Number("Infinity")),
            Some(b'-') if self.s[self.i..].starts_with("-Infinity") => {
                self.i += "-Infinity".len();
                Ok(Json::Number("-Infinity"))
            }
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.error("Invalid value")),
            None => Err(self.error("Unexpected end of input")),
        }
    }

    /// A number as its text (the value is converted once the dtype is
    /// known); the grammar is [`Parser::number_value`]'s.
    fn number(&mut self) -> Result<Json<'a>, JsonError> {
        let start = self.i;
        self.number_value()?;
        Ok(Json::Number(&self.s[start..self.i]))
    }

    fn string(&mut self) -> Result<Cow<'a, str>, JsonError> {
        self.i += 1; // opening quote
        let start = self.i;
        // Fast path: no escapes, borrow.
        while let Some(&c) = self.b.get(self.i) {
            match c {
                b'"' => {
                    let s = &self.s[start..self.i];
                    self.i += 1;
                    return Ok(Cow::Borrowed(s));
                }
                b'\\' => break,
                0..=0x1f => return Err(self.error("Invalid encoding in string")),
                _ => self.i += 1,
            }
        }
        // Unescaping only shrinks the text: the raw length up to the closing
        // quote is room enough, charged and allocated once.
        let raw = self.raw_string_len(start);
        self.charge(raw)?;
        let mut owned = String::with_capacity(raw);
        owned.push_str(&self.s[start..self.i]);
        loop {
            let Some(&c) = self.b.get(self.i) else {
                return Err(self.error("Missing a closing quotation mark in string"));
            };
            match c {
                b'"' => {
                    self.i += 1;
                    return Ok(Cow::Owned(owned));
                }
                b'\\' => {
                    self.i += 1;
                    let escaped = match self.b.get(self.i) {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            self.i += 1;
                            let ch = self.unicode_escape()?;
                            owned.push(ch);
                            continue;
                        }
                        _ => return Err(self.error("Invalid escape character in string")),
                    };
                    owned.push(escaped);
                    self.i += 1;
                }
                0..=0x1f => return Err(self.error("Invalid encoding in string")),
                _ => {
                    // Copy one UTF-8 character.
                    let len = self.s[self.i..].chars().next().map_or(1, char::len_utf8);
                    owned.push_str(&self.s[self.i..self.i + len]);
                    self.i += len;
                }
            }
        }
    }

    /// Bytes from `start` to the string's closing quote (or the end).
    fn raw_string_len(&self, start: usize) -> usize {
        let mut i = self.i;
        while let Some(&c) = self.b.get(i) {
            match c {
                b'"' => break,
                b'\\' => i += 2,
                _ => i += 1,
            }
        }
        i.min(self.b.len()) - start
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let hex = self
            .s
            .get(self.i..self.i + 4)
            .ok_or_else(|| self.error("Incorrect hex digit after \\u escape"))?;
        let value = u32::from_str_radix(hex, 16)
            .map_err(|_| self.error("Incorrect hex digit after \\u escape"))?;
        self.i += 4;
        Ok(value)
    }

    fn unicode_escape(&mut self) -> Result<char, JsonError> {
        let first = self.hex4()?;
        let code = if (0xD800..0xDC00).contains(&first) {
            if !self.eat("\\u") {
                return Err(self.error("The surrogate pair in string is invalid"));
            }
            let second = self.hex4()?;
            if !(0xDC00..0xE000).contains(&second) {
                return Err(self.error("The surrogate pair in string is invalid"));
            }
            0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
        } else {
            first
        };
        char::from_u32(code).ok_or_else(|| self.error("The surrogate pair in string is invalid"))
    }

    fn array(&mut self, depth: usize) -> Result<Json<'a>, JsonError> {
        if self.i >= self.no_numbers_before {
            let start = self.i;
            let scan = self.numbers(depth);
            self.scanned += self.i - start;
            match scan {
                Ok(numbers) => {
                    self.charge(std::mem::size_of::<Numbers<'_>>())?;
                    return Ok(Json::Numbers(Box::new(numbers)));
                }
                Err(numbers::Stop::OverBudget(e)) => return Err(e),
                Err(numbers::Stop::NotNumbers(stopped)) => {
                    self.no_numbers_before = stopped.max(start + 1);
                    self.i = start;
                }
            }
        }
        self.i += 1;
        let mut items = Vec::new();
        self.skip_ws();
        if self.b.get(self.i) == Some(&b']') {
            self.i += 1;
            return Ok(Json::Array(items));
        }
        loop {
            self.skip_ws();
            let item = self.value(depth + 1)?;
            self.push(&mut items, item)?;
            self.skip_ws();
            match self.b.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(Json::Array(self.fitted(items)?));
                }
                _ => return Err(self.error("Missing a comma or ']' after an array element")),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Json<'a>, JsonError> {
        self.i += 1;
        let mut members = Vec::new();
        self.skip_ws();
        if self.b.get(self.i) == Some(&b'}') {
            self.i += 1;
            return Ok(Json::Object(members));
        }
        loop {
            self.skip_ws();
            if self.b.get(self.i) != Some(&b'"') {
                return Err(self.error("Missing a name for object member"));
            }
            let key = self.string()?;
            self.skip_ws();
            if self.b.get(self.i) != Some(&b':') {
                return Err(self.error("Missing a colon after a name of object member"));
            }
            self.i += 1;
            self.skip_ws();
            let value = self.value(depth + 1)?;
            self.push(&mut members, (key, value))?;
            self.skip_ws();
            match self.b.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(Json::Object(self.fitted(members)?));
                }
                _ => return Err(self.error("Missing a comma or '}' after an object member")),
            }
        }
    }
}

#[cfg(test)]
mod tests;
