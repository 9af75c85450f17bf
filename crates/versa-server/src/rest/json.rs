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
    /// A rectangular array of numbers, nested to any depth (see [`Numbers`]).
    Numbers(Numbers<'a>),
}

/// A rectangular array (of arrays …) of numbers, with its source text.
/// Every array at one nesting level has the same length and every number
/// sits at the innermost level; anything else parses as [`Json::Array`].
#[derive(Debug, Clone, PartialEq)]
pub struct Numbers<'a> {
    /// From the opening `[` to the closing `]`.
    text: &'a str,
    /// Every number in row-major order as the nearest `f64` (what
    /// `str::parse::<f64>` gives for its token).
    values: Vec<f64>,
    /// The length of the arrays at each nesting level, outermost first. A
    /// zero length is always the last entry (an empty array has no levels
    /// below it).
    shape: Vec<usize>,
}

impl<'a> Numbers<'a> {
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// How many numbers the array holds.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every number in row-major order as the nearest `f64`.
    pub fn values(&self) -> &[f64] {
        &self.values
    }

    /// The number tokens in row-major order (`NaN`, `Infinity` and
    /// `-Infinity` included), borrowed from the document.
    pub fn tokens(&self) -> NumberTokens<'a> {
        NumberTokens { text: self.text, i: 0 }
    }
}

/// Iterator over the tokens of [`Numbers`].
#[derive(Debug, Clone)]
pub struct NumberTokens<'a> {
    text: &'a str,
    i: usize,
}

fn is_separator(b: u8) -> bool {
    matches!(b, b'[' | b']' | b',' | b' ' | b'\t' | b'\n' | b'\r')
}

impl<'a> Iterator for NumberTokens<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let b = self.text.as_bytes();
        while self.i < b.len() && is_separator(b[self.i]) {
            self.i += 1;
        }
        if self.i == b.len() {
            return None;
        }
        let start = self.i;
        while self.i < b.len() && !is_separator(b[self.i]) {
            self.i += 1;
        }
        // Tokens end at ASCII separators, so both ends are char boundaries.
        Some(&self.text[start..self.i])
    }
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
    parse_counting_scans(input).0
}

/// [`parse`] without [`Numbers`]: every array is a tree. The reference the
/// tests hold the fast path to, and the benchmark's comparison.
pub fn parse_as_tree(input: &str) -> Result<Json<'_>, JsonError> {
    let mut p =
        Parser { s: input, b: input.as_bytes(), i: 0, no_numbers_before: usize::MAX, scanned: 0 };
    p.document()
}

/// [`parse`], and how many bytes the [`Numbers`] scans went over.
fn parse_counting_scans(input: &str) -> (Result<Json<'_>, JsonError>, usize) {
    let mut p = Parser { s: input, b: input.as_bytes(), i: 0, no_numbers_before: 0, scanned: 0 };
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
}

impl<'a> Parser<'a> {
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

    fn number(&mut self) -> Result<Json<'a>, JsonError> {
        let start = self.i;
        let digits = |p: &mut Self| {
            let from = p.i;
            while let Some(b'0'..=b'9') = p.b.get(p.i) {
                p.i += 1;
            }
            p.i > from
        };
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        if self.b.get(self.i) == Some(&b'0') {
            self.i += 1;
        } else if !digits(self) {
            return Err(self.error("Invalid value"));
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            if !digits(self) {
                return Err(self.error("Miss fraction part in number"));
            }
        }
        if let Some(b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
            if let Some(b'+' | b'-') = self.b.get(self.i) {
                self.i += 1;
            }
            if !digits(self) {
                return Err(self.error("Miss exponent in number"));
            }
        }
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
        let mut owned = String::from(&self.s[start..self.i]);
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

    /// Scans the array at `self.i` as [`Numbers`]; on anything else
    /// (another kind of value, a ragged shape, a syntax error) returns where
    /// the scan stopped, and the caller parses the array as a tree, which
    /// also reports any error properly.
    fn numbers(&mut self, depth: usize) -> Result<Numbers<'a>, usize> {
        let start = self.i;
        // Per nesting level (0 = outermost): the length its arrays have.
        let mut dims: Vec<Option<usize>> = Vec::new();
        // Per open array: elements seen so far.
        let mut open: Vec<usize> = Vec::new();
        let mut number_level: Option<usize> = None;
        let mut values = Vec::new();
        let mut expect_value = true;
        loop {
            self.skip_ws();
            let byte = self.b.get(self.i).copied();
            if expect_value {
                match byte {
                    Some(b'[') => {
                        let level = open.len();
                        if number_level.is_some_and(|l| level > l) || depth + level >= MAX_DEPTH {
                            return Err(self.i);
                        }
                        if let Some(parent) = open.last_mut() {
                            *parent += 1;
                        }
                        open.push(0);
                        if dims.len() == level {
                            dims.push(None);
                        }
                        self.i += 1;
                        self.skip_ws();
                        // `[]`: go straight to closing it.
                        expect_value = self.b.get(self.i) != Some(&b']');
                        continue;
                    }
                    Some(b'-' | b'0'..=b'9' | b'N' | b'I') => {
                        let level = open.len();
                        match number_level {
                            None if dims.len() == level => number_level = Some(level),
                            Some(l) if l == level => {}
                            _ => return Err(self.i),
                        }
                        let value = match byte {
                            Some(b'N') if self.eat("NaN") => Some(f64::NAN),
                            Some(b'I') if self.eat("Infinity") => Some(f64::INFINITY),
                            Some(b'-') if self.eat("-Infinity") => Some(f64::NEG_INFINITY),
                            _ => self.number_value(),
                        };
                        let Some(value) = value else {
                            return Err(self.i);
                        };
                        values.push(value);
                        if let Some(count) = open.last_mut() {
                            *count += 1;
                        }
                        expect_value = false;
                        continue;
                    }
                    _ => return Err(self.i),
                }
            }
            match byte {
                Some(b',') => {
                    self.i += 1;
                    expect_value = true;
                }
                Some(b']') => {
                    let (Some(len), level) = (open.pop(), open.len()) else {
                        return Err(self.i);
                    };
                    match dims[level] {
                        None => dims[level] = Some(len),
                        Some(seen) if seen == len => {}
                        Some(_) => return Err(self.i),
                    }
                    self.i += 1;
                    if open.is_empty() {
                        let shape = dims.into_iter().map(|d| d.unwrap_or(0)).collect();
                        return Ok(Numbers { text: &self.s[start..self.i], values, shape });
                    }
                }
                _ => return Err(self.i),
            }
        }
    }

    /// Reads the JSON number at `self.i` in one pass: its value, or `None`
    /// (position unspecified) when the text is not a JSON number. Values
    /// with at most 19 significant digits, a mantissa below 2^53 and a
    /// decimal exponent within ±22 are one exact multiplication or division
    /// of two exactly representable numbers, hence correctly rounded; any
    /// other number goes through `str::parse`, so the result is always the
    /// same as `str::parse::<f64>` on the token.
    fn number_value(&mut self) -> Option<f64> {
        const POW10: [f64; 23] = [
            1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
            1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
        ];
        let (b, start) = (self.b, self.i);
        let mut i = start;
        let negative = b.get(i) == Some(&b'-');
        i += usize::from(negative);
        let mut mantissa: u64 = 0;
        let mut significant = 0u32;
        let mut exponent: i64 = 0;
        let mut push = |digit: u8| {
            if significant < 19 {
                mantissa = mantissa * 10 + u64::from(digit - b'0');
                significant += u32::from(mantissa != 0);
                true
            } else {
                false
            }
        };
        let mut fits = true;
        match b.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                while let Some(&d @ b'0'..=b'9') = b.get(i) {
                    fits &= push(d);
                    i += 1;
                }
            }
            _ => return None,
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            let from = i;
            while let Some(&d @ b'0'..=b'9') = b.get(i) {
                fits &= push(d);
                exponent -= 1;
                i += 1;
            }
            if i == from {
                return None;
            }
        }
        if let Some(b'e' | b'E') = b.get(i) {
            i += 1;
            let sign = match b.get(i) {
                Some(b'-') => -1,
                Some(b'+') => 1,
                _ => 0,
            };
            i += usize::from(sign != 0);
            let from = i;
            let mut e: i64 = 0;
            while let Some(&d @ b'0'..=b'9') = b.get(i) {
                e = (e * 10 + i64::from(d - b'0')).min(1 << 20);
                i += 1;
            }
            if i == from {
                return None;
            }
            exponent += if sign < 0 { -e } else { e };
        }
        self.i = i;
        if fits && mantissa <= 1 << 53 && (-22..=22).contains(&exponent) {
            let m = mantissa as f64;
            let v = if exponent >= 0 {
                m * POW10[exponent as usize]
            } else {
                m / POW10[(-exponent) as usize]
            };
            return Some(if negative { -v } else { v });
        }
        self.s[start..i].parse().ok()
    }

    fn array(&mut self, depth: usize) -> Result<Json<'a>, JsonError> {
        if self.i >= self.no_numbers_before {
            let start = self.i;
            let scan = self.numbers(depth);
            self.scanned += self.i - start;
            match scan {
                Ok(numbers) => return Ok(Json::Numbers(numbers)),
                Err(stopped) => {
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
            items.push(self.value(depth + 1)?);
            self.skip_ws();
            match self.b.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(Json::Array(items));
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
            members.push((key, self.value(depth + 1)?));
            self.skip_ws();
            match self.b.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(Json::Object(members));
                }
                _ => return Err(self.error("Missing a comma or '}' after an object member")),
            }
        }
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
            out.extend(numbers.text.chars().filter(|c| !matches!(c, ' ' | '\t' | '\n' | '\r')));
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
mod tests {
    use super::*;

    #[test]
    fn parses_values_and_special_number_tokens() {
        let v = parse(r#" {"a": [1, -2.5e3, NaN, Infinity, -Infinity, true, null], "s": "x\"y\u00e9\ud83d\ude00"} "#)
            .expect("parses");
        let a = v.get("a").expect("a");
        assert_eq!(
            a,
            &Json::Array(vec![
                Json::Number("1"),
                Json::Number("-2.5e3"),
                Json::Number("NaN"),
                Json::Number("Infinity"),
                Json::Number("-Infinity"),
                Json::Bool(true),
                Json::Null,
            ])
        );
        assert_eq!(v.get("s"), Some(&Json::String(Cow::Owned("x\"yé😀".into()))));
    }

    #[test]
    fn rejects_malformed_documents() {
        let cases = [
            ("", "JSON Parse error: The document is empty"),
            ("   ", "JSON Parse error: The document is empty"),
            ("[1,", "JSON Parse error: Unexpected end of input at offset 3"),
            (
                "[1 2]",
                "JSON Parse error: Missing a comma or ']' after an array element at offset 3",
            ),
            (
                "{\"a\" 1}",
                "JSON Parse error: Missing a colon after a name of object member at offset 5",
            ),
            (
                "01",
                "JSON Parse error: The document root must not be followed by other values at offset 1",
            ),
            ("1.", "JSON Parse error: Miss fraction part in number at offset 2"),
            ("\"abc", "JSON Parse error: Missing a closing quotation mark in string at offset 4"),
            ("nan", "JSON Parse error: Invalid value at offset 0"),
            (
                "{} {}",
                "JSON Parse error: The document root must not be followed by other values at offset 3",
            ),
        ];
        for (input, message) in cases {
            assert_eq!(parse(input).expect_err(input).to_string(), message, "{input:?}");
        }
        let deep = "[".repeat(MAX_DEPTH + 2) + &"]".repeat(MAX_DEPTH + 2);
        assert!(parse(&deep).expect_err("deep").reason.contains("too deep"));
    }

    fn numbers(input: &str) -> Numbers<'_> {
        match parse(input).expect("parses") {
            Json::Numbers(n) => n,
            other => panic!("{input:?} parsed as {other:?}"),
        }
    }

    #[test]
    fn rectangular_number_arrays_stay_text() {
        let n = numbers(" [ [1, -2.5e3 ,NaN], [Infinity,-Infinity, 0] ] ");
        assert_eq!(n.shape(), &[2, 3]);
        assert_eq!(
            n.tokens().collect::<Vec<_>>(),
            ["1", "-2.5e3", "NaN", "Infinity", "-Infinity", "0"]
        );
        let values = n.values();
        assert_eq!(values[..2], [1.0, -2500.0]);
        assert!(values[2].is_nan());
        assert_eq!(values[3..], [f64::INFINITY, f64::NEG_INFINITY, 0.0]);
        assert_eq!(Json::Numbers(n).preview(), "[[1,-2.5e3,NaN],[Infinity,-Infinity,0]]");
        assert_eq!(numbers("[]").shape(), &[0]);
        assert_eq!(numbers("[[],[]]").shape(), &[2, 0]);
        assert_eq!(numbers("[[[7]]]").shape(), &[1, 1, 1]);
        assert_eq!(numbers("[[],[]]").tokens().count(), 0);
        // Inside objects too.
        let doc = parse(r#"{"instances": [{"x": [1, 2]}], "k": [3]}"#).expect("parses");
        assert!(matches!(doc.get("k"), Some(Json::Numbers(_))));
        let Some(Json::Array(rows)) = doc.get("instances") else { panic!("rows are objects") };
        assert!(matches!(rows[0].get("x"), Some(Json::Numbers(_))));
    }

    #[test]
    fn numbers_read_in_the_scan_equal_str_parse() {
        let mut tokens: Vec<String> = [
            "0",
            "-0",
            "1",
            "-1",
            "0.1",
            "0.05882353",
            "123456789012345678",
            "1234567890123456789",
            "12345678901234567890",
            "9007199254740993",
            "9007199254740992",
            "1e22",
            "1e23",
            "1.5e-22",
            "1e-23",
            "2.2250738585072014e-308",
            "4.9e-324",
            "1e-400",
            "1e400",
            "1.7976931348623157e308",
            "0.000000000000000000000000000001",
            "3.141592653589793238462643",
            "-2.5E+3",
            "7e0",
            "1E-0",
        ]
        .iter()
        .map(|t| t.to_string())
        .collect();
        // A deterministic spread of shortest-round-trip and long decimals.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let f = f64::from_bits(x >> 2);
            if f.is_finite() {
                tokens.push(format!("{f:e}"));
                tokens.push(format!("{}", (x % 10_000_000) as f64 / 1e7));
                tokens.push(format!("{:.12}", (x % 1000) as f64 * 0.37));
            }
        }
        let doc = format!("[{}]", tokens.join(","));
        let n = numbers(&doc);
        assert_eq!(n.values().len(), tokens.len());
        for (token, value) in tokens.iter().zip(n.values()) {
            let expected: f64 = token.parse().expect("valid float");
            assert_eq!(value.to_bits(), expected.to_bits(), "{token}");
        }
    }

    #[test]
    fn anything_but_rectangular_numbers_is_a_tree() {
        for input in [
            "[1, true]",
            "[[1, 2], [3]]",
            "[[1], 2]",
            "[1, [2]]",
            "[[], [1]]",
            "[[1], []]",
            "[[[]], [[], []]]",
            "[[[]], 1]",
            "[\"1\"]",
            "[null]",
        ] {
            let parsed = parse(input).expect(input);
            assert!(matches!(parsed, Json::Array(_)), "{input:?} parsed as {parsed:?}");
        }
        // Syntax errors are the tree parser's, at the same offsets.
        for (input, message) in [
            (
                "[1 2]",
                "JSON Parse error: Missing a comma or ']' after an array element at offset 3",
            ),
            ("[1,", "JSON Parse error: Unexpected end of input at offset 3"),
            ("[1.]", "JSON Parse error: Miss fraction part in number at offset 3"),
            ("[nan]", "JSON Parse error: Invalid value at offset 1"),
            (
                "[[1],[2]",
                "JSON Parse error: Missing a comma or ']' after an array element at offset 8",
            ),
        ] {
            assert_eq!(parse(input).expect_err(input).to_string(), message, "{input:?}");
        }
        // Deep nesting of numbers still hits the depth limit.
        let deep = "[".repeat(MAX_DEPTH + 2) + "1" + &"]".repeat(MAX_DEPTH + 2);
        assert!(parse(&deep).expect_err("deep").reason.contains("too deep"));
        let ok = "[".repeat(MAX_DEPTH - 1) + "1" + &"]".repeat(MAX_DEPTH - 1);
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn a_failed_scan_is_not_repeated_for_every_enclosing_level() {
        // Each level encloses a long run of numbers followed by a string:
        // without the failure mark each level would rescan the whole run.
        let levels = 100;
        let run = vec!["1"; 10_000].join(",");
        let doc = "[".repeat(levels) + &run + ",\"x\"" + &"]".repeat(levels);
        let (parsed, scanned) = parse_counting_scans(&doc);
        assert!(scanned <= doc.len(), "scanned {scanned} bytes of {}", doc.len());
        let parsed = parsed.expect("parses");
        let mut inner = &parsed;
        for _ in 1..levels {
            let Json::Array(items) = inner else { panic!("tree expected") };
            inner = &items[0];
        }
        let Json::Array(items) = inner else { panic!("tree expected") };
        assert_eq!(items.len(), 10_001);
    }

    #[test]
    fn writes_floats_like_upstream() {
        let mut out = String::new();
        for v in [1.0f32, 0.1, -2.5, f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            write_f32(&mut out, v);
            out.push(' ');
        }
        assert_eq!(out, "1.0 0.1 -2.5 NaN Infinity -Infinity ");
    }

    #[test]
    fn string_escapes_round_trip() {
        let original = "tab\tquote\"back\\slash\u{1}é";
        let mut out = String::new();
        write_string(&mut out, original);
        assert_eq!(parse(&out).expect("parses"), Json::String(Cow::Owned(original.into())));
    }
}
