//! [`Numbers`]: rectangular arrays of numbers, read in one pass of the
//! parser without a JSON value per element.

use super::{JsonError, MAX_DEPTH, Parser};

/// Why a [`Parser::numbers`] scan stopped short.
#[derive(Debug)]
pub(super) enum Stop {
    /// Not a rectangular array of numbers: where the scan stopped (the
    /// caller parses the array as a tree instead).
    NotNumbers(usize),
    /// The values read would pass the parse budget.
    OverBudget(JsonError),
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
    /// The source text, from the opening `[` to the closing `]`.
    pub fn text(&self) -> &'a str {
        self.text
    }

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

impl<'a> Parser<'a> {
    /// Scans the array at `self.i` as [`Numbers`]; on anything else
    /// (another kind of value, a ragged shape, a syntax error) returns where
    /// the scan stopped, and the caller parses the array as a tree, which
    /// also reports any error properly.
    pub(super) fn numbers(&mut self, depth: usize) -> Result<Numbers<'a>, Stop> {
        let used_before = self.used;
        let scan = self.scan_numbers(depth);
        if let Err(Stop::NotNumbers(_)) = scan {
            // The values read are dropped: what they were charged comes back.
            self.used = used_before;
        }
        scan
    }

    fn scan_numbers(&mut self, depth: usize) -> Result<Numbers<'a>, Stop> {
        let not_numbers = |at: usize| Err(Stop::NotNumbers(at));
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
                            return not_numbers(self.i);
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
                            _ => return not_numbers(self.i),
                        }
                        let value = match byte {
                            Some(b'N') if self.eat("NaN") => Some(f64::NAN),
                            Some(b'I') if self.eat("Infinity") => Some(f64::INFINITY),
                            Some(b'-') if self.eat("-Infinity") => Some(f64::NEG_INFINITY),
                            _ => self.number_value().ok(),
                        };
                        let Some(value) = value else {
                            return not_numbers(self.i);
                        };
                        self.push(&mut values, value).map_err(Stop::OverBudget)?;
                        if let Some(count) = open.last_mut() {
                            *count += 1;
                        }
                        expect_value = false;
                        continue;
                    }
                    _ => return not_numbers(self.i),
                }
            }
            match byte {
                Some(b',') => {
                    self.i += 1;
                    expect_value = true;
                }
                Some(b']') => {
                    let (Some(len), level) = (open.pop(), open.len()) else {
                        return not_numbers(self.i);
                    };
                    match dims[level] {
                        None => dims[level] = Some(len),
                        Some(seen) if seen == len => {}
                        Some(_) => return not_numbers(self.i),
                    }
                    self.i += 1;
                    if open.is_empty() {
                        let shape = dims.into_iter().map(|d| d.unwrap_or(0)).collect();
                        return Ok(Numbers { text: &self.s[start..self.i], values, shape });
                    }
                }
                _ => return not_numbers(self.i),
            }
        }
    }

    /// Reads the JSON number at `self.i` in one pass — the parser's one
    /// number grammar: its value, or the error at the offending offset. Values
    /// with at most 19 significant digits, a mantissa below 2^53 and a
    /// decimal exponent within ±22 are one exact multiplication or division
    /// of two exactly representable numbers, hence correctly rounded; any
    /// other number goes through `str::parse`, so the result is always the
    /// same as `str::parse::<f64>` on the token.
    pub(super) fn number_value(&mut self) -> Result<f64, JsonError> {
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
            _ => {
                self.i = i;
                return Err(self.error("Invalid value"));
            }
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
                self.i = i;
                return Err(self.error("Miss fraction part in number"));
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
                self.i = i;
                return Err(self.error("Miss exponent in number"));
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
            return Ok(if negative { -v } else { v });
        }
        // Every text the grammar above accepts is a valid Rust float.
        self.s[start..i].parse().map_err(|_| self.error("Invalid value"))
    }
}
