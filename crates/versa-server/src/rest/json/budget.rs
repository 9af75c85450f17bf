//! [`ParseBudget`]: the memory a parse may take, charged as the parser's
//! buffers grow.

use super::{JsonError, Parser};

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

impl Parser<'_> {
    /// Counts `bytes` more of parsed values, or fails once past the budget.
    pub(super) fn charge(&mut self, bytes: usize) -> Result<(), JsonError> {
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
    pub(super) fn push<T>(&mut self, items: &mut Vec<T>, item: T) -> Result<(), JsonError> {
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
    pub(super) fn refund(&mut self, bytes: usize) {
        self.used = self.used.saturating_sub(bytes);
    }

    /// A finished array or object's items, its spare room handed back (a
    /// one-member object would otherwise keep room for four).
    pub(super) fn fitted<T>(&mut self, mut items: Vec<T>) -> Result<Vec<T>, JsonError> {
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
