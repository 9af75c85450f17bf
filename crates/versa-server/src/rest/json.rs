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

mod numbers;
pub use numbers::{NumberTokens, Numbers};

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

/// The memory a parse may take: what a document's values hold on the heap
/// (the value tree, the numbers read, unescaped strings), counted as it
/// grows. A parse that would pass it stops with an error naming `setting`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseBudget {
    pub bytes: usize,
    pub setting: &'static str,
}

impl ParseBudget {
    /// No bound (tests, tools).
    pub const UNLIMITED: ParseBudget = ParseBudget { bytes: usize::MAX, setting: "" };

    /// A request body's budget: [`TREE_BYTES_PER_BODY_BYTE`] times the body
    /// (plus a little for tiny bodies), never more than `cap`.
    pub fn for_body(body_len: usize, cap: usize, setting: &'static str) -> Self {
        let proportional =
            body_len.saturating_mul(TREE_BYTES_PER_BODY_BYTE).saturating_add(64 << 10);
        Self { bytes: proportional.min(cap), setting }
    }
}

/// How many bytes of parsed values one byte of body may become. Real
/// predict bodies stay well below: numbers take at most 4× (`1,` → an f64),
/// rows of named inputs about 10×; only floods of empty values come near.
pub const TREE_BYTES_PER_BODY_BYTE: usize = 16;

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

    /// Counts `bytes` more of parsed values, or fails once past the budget.
    fn charge(&mut self, bytes: usize) -> Result<(), JsonError> {
        self.used = self.used.saturating_add(bytes);
        if self.used <= self.budget.bytes {
            return Ok(());
        }
        let setting = if self.budget.setting.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.budget.setting)
        };
        Err(self.error(&format!(
            "the document needs more than {} bytes of memory to parse{setting}",
            self.budget.bytes
        )))
    }

    /// Pushes onto `items`, charging the growth of its buffer: the new one
    /// while the old one is still held, then the old one comes back.
    fn push<T>(&mut self, items: &mut Vec<T>, item: T) -> Result<(), JsonError> {
        if items.len() == items.capacity() {
            let size = std::mem::size_of::<T>();
            let old = items.capacity();
            // A full Vec doubles, starting at 4 elements.
            let grown = (old * 2).max(4);
            self.charge(grown * size)?;
            items.reserve_exact(grown - items.len());
            self.refund(old * size);
        }
        items.push(item);
        Ok(())
    }

    /// Gives back what a dropped value of `bytes` was charged.
    fn refund(&mut self, bytes: usize) {
        self.used = self.used.saturating_sub(bytes);
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

impl Parser<'_> {
    /// A finished array or object's items, its spare room handed back (a
    /// one-member object would otherwise keep room for four).
    fn fitted<T>(&mut self, mut items: Vec<T>) -> Result<Vec<T>, JsonError> {
        let size = std::mem::size_of::<T>();
        let held = items.capacity();
        if held > items.len() {
            // Shrinking copies into a new buffer while the old one is held.
            self.charge(items.len() * size)?;
            items.shrink_to_fit();
            self.refund(held * size);
        }
        Ok(items)
    }
}

/// Appends `s` as a JSON string literal.
pub fn write_string(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let escape = match c {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            c if (c as u32) < 0x20 => None,
            _ => continue,
        };
        out.push_str(&s[start..i]);
        match escape {
            Some(e) => out.push_str(e),
            None => out.push_str(&format!("\\u{:04x}", c as u32)),
        }
        start = i + c.len_utf8();
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Appends a float as TensorFlow Serving prints it: shortest round-trip
/// digits, `NaN`/`Infinity`/`-Infinity` as bare tokens.
pub fn write_f64(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "Infinity" } else { "-Infinity" });
    } else {
        out.push_str(ryu::Buffer::new().format_finite(v));
    }
}

/// Like [`write_f64`] for single precision (shortest digits of the f32).
pub fn write_f32(out: &mut String, v: f32) {
    if v.is_finite() {
        out.push_str(ryu::Buffer::new().format_finite(v));
    } else {
        write_f64(out, f64::from(v));
    }
}

pub fn write_int<I: itoa::Integer>(out: &mut String, v: I) {
    out.push_str(itoa::Buffer::new().format(v));
}

/// Appends any parsed value back as JSON.
pub fn write_value(out: &mut String, v: &Json<'_>) {
    match v {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Number(n) => out.push_str(n),
        Json::Numbers(numbers) => {
            out.extend(numbers.text().chars().filter(|c| !matches!(c, ' ' | '\t' | '\n' | '\r')));
        }
        Json::String(s) => write_string(out, s),
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Json::Object(members) => {
            out.push('{');
            for (i, (k, item)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, k);
                out.push(':');
                write_value(out, item);
            }
            out.push('}');
        }
    }
}

#[cfg(test)]
mod tests;
