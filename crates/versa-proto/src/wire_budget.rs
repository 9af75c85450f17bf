//! How much memory a protobuf message takes once decoded, bounded from its
//! wire bytes before prost allocates anything.
//!
//! Decoding can cost many times the message: an empty element of a repeated
//! `bytes` field is 2 bytes on the wire and a 24-byte `Vec` in memory, and an
//! entry of a map of messages is a few bytes on the wire and a whole struct
//! in a hash table. [`decoded_size`] walks the wire format once, guided by the
//! message's descriptor, and adds up what each field will allocate, stopping
//! as soon as the total passes a limit. It accepts exactly what prost
//! accepts for a known message; anything prost would refuse is refused here
//! too, so a message it does not finish scanning is never decoded.

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};

/// What a scan found wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("the message would take more than {limit} bytes once decoded")]
    TooLarge { limit: usize },
    #[error("malformed protobuf message: {0}")]
    Malformed(&'static str),
}

/// Nesting prost refuses beyond (its recursion limit).
const MAX_DEPTH: u32 = 100;
/// What one heap value of a field costs beyond its own bytes: a `Vec` or
/// `String` header (24 bytes) in a repeated field.
const HEADER: usize = 24;
/// What a decoded struct costs per field it declares, over-estimated so
/// that nested messages and options fit in it.
const PER_FIELD: usize = 32;
/// A repeated field grows its buffer by doubling while prost decodes it:
/// at the last growth the old buffer and the new one (up to twice the
/// elements) are both held — at most three times what the elements need.
const GROWTH: usize = 3;

/// Bytes a decoded message of `message`'s type holds on the heap, estimated
/// from above; `Err(TooLarge)` as soon as that passes `limit`.
pub fn decoded_size(
    message: &MessageDescriptor,
    bytes: &[u8],
    limit: usize,
) -> Result<usize, WireError> {
    let mut scan = Scan { used: 0, limit };
    scan.message(message, bytes, 0)?;
    Ok(scan.used)
}

/// What one element of a repeated field of this message type costs.
fn struct_size(message: &MessageDescriptor) -> usize {
    HEADER + PER_FIELD * message.fields().len()
}

/// Size in memory of one scalar of this kind (`None`: not a scalar).
fn scalar_size(kind: &Kind) -> Option<usize> {
    Some(match kind {
        Kind::Bool => 1,
        Kind::Int32 | Kind::Uint32 | Kind::Sint32 | Kind::Fixed32 | Kind::Sfixed32 => 4,
        Kind::Float | Kind::Enum(_) => 4,
        Kind::Int64 | Kind::Uint64 | Kind::Sint64 | Kind::Fixed64 | Kind::Sfixed64 => 8,
        Kind::Double => 8,
        Kind::String | Kind::Bytes | Kind::Message(_) => return None,
    })
}

/// The wire type a scalar of this kind has when not packed.
fn scalar_wire_type(kind: &Kind) -> u8 {
    match kind {
        Kind::Fixed64 | Kind::Sfixed64 | Kind::Double => FIXED64,
        Kind::Fixed32 | Kind::Sfixed32 | Kind::Float => FIXED32,
        _ => VARINT,
    }
}

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const GROUP_START: u8 = 3;
const GROUP_END: u8 = 4;
const FIXED32: u8 = 5;

/// A cursor over wire bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        let mut value: u64 = 0;
        for shift in 0..10 {
            let byte = *self.bytes.get(self.at).ok_or(WireError::Malformed("truncated varint"))?;
            self.at += 1;
            if shift == 9 && byte > 1 {
                return Err(WireError::Malformed("varint overflows 64 bits"));
            }
            value |= u64::from(byte & 0x7f) << (shift * 7);
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(WireError::Malformed("varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or(WireError::Malformed("a field runs past the end of its message"))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn length_delimited(&mut self) -> Result<&'a [u8], WireError> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| WireError::Malformed("length too large"))?;
        self.take(len)
    }

    /// The next field's number and wire type.
    fn key(&mut self) -> Result<(u32, u8), WireError> {
        let key = self.varint()?;
        let key = u32::try_from(key).map_err(|_| WireError::Malformed("invalid key"))?;
        let wire_type = (key & 7) as u8;
        let number = key >> 3;
        if number == 0 {
            return Err(WireError::Malformed("field number 0"));
        }
        Ok((number, wire_type))
    }

    /// Skips a value of `wire_type` (groups: up to their end).
    fn skip(&mut self, number: u32, wire_type: u8, depth: u32) -> Result<(), WireError> {
        match wire_type {
            VARINT => self.varint().map(drop),
            FIXED64 => self.take(8).map(drop),
            LEN => self.length_delimited().map(drop),
            FIXED32 => self.take(4).map(drop),
            GROUP_START => {
                if depth >= MAX_DEPTH {
                    return Err(WireError::Malformed("groups nested too deep"));
                }
                loop {
                    if self.done() {
                        return Err(WireError::Malformed("unterminated group"));
                    }
                    let (inner, inner_type) = self.key()?;
                    if inner_type == GROUP_END {
                        if inner != number {
                            return Err(WireError::Malformed("mismatched group end"));
                        }
                        return Ok(());
                    }
                    self.skip(inner, inner_type, depth + 1)?;
                }
            }
            GROUP_END => Err(WireError::Malformed("unexpected group end")),
            _ => Err(WireError::Malformed("invalid wire type")),
        }
    }
}

struct Scan {
    used: usize,
    limit: usize,
}

impl Scan {
    fn charge(&mut self, bytes: usize) -> Result<(), WireError> {
        self.used = self.used.saturating_add(bytes);
        if self.used > self.limit {
            return Err(WireError::TooLarge { limit: self.limit });
        }
        Ok(())
    }

    fn message(
        &mut self,
        message: &MessageDescriptor,
        bytes: &[u8],
        depth: u32,
    ) -> Result<(), WireError> {
        if depth >= MAX_DEPTH {
            return Err(WireError::Malformed("messages nested too deep"));
        }
        let mut r = Reader { bytes, at: 0 };
        while !r.done() {
            let (number, wire_type) = r.key()?;
            match message.get_field(number) {
                None => r.skip(number, wire_type, depth)?,
                Some(field) => self.field(&field, wire_type, &mut r, depth)?,
            }
        }
        Ok(())
    }

    fn field(
        &mut self,
        field: &FieldDescriptor,
        wire_type: u8,
        r: &mut Reader<'_>,
        depth: u32,
    ) -> Result<(), WireError> {
        let kind = field.kind();
        if field.is_map() {
            let Kind::Message(entry) = kind else {
                return Err(WireError::Malformed("map field without an entry type"));
            };
            let bytes = expect_len(wire_type, r)?;
            // A slot of the hash table (key, value and control byte), with
            // the table's spare room and its growth.
            let key = entry.map_entry_key_field();
            let value = entry.map_entry_value_field();
            let slot = inline_size(&key.kind()) + inline_size(&value.kind()) + 1;
            self.charge(2 * GROWTH * slot)?;
            return self.message(&entry, bytes, depth + 1);
        }
        let repeated = field.is_list();
        match (&kind, scalar_size(&kind)) {
            (Kind::Message(inner), _) => {
                let bytes = expect_len(wire_type, r)?;
                if repeated {
                    self.charge(GROWTH * struct_size(inner))?;
                }
                self.message(inner, bytes, depth + 1)
            }
            (Kind::String | Kind::Bytes, _) => {
                let bytes = expect_len(wire_type, r)?;
                self.charge(bytes.len() + if repeated { GROWTH * HEADER } else { 0 })
            }
            (_, Some(size)) if repeated && wire_type == LEN => {
                let packed = r.length_delimited()?;
                let count = match scalar_wire_type(&kind) {
                    FIXED64 => packed.len() / 8,
                    FIXED32 => packed.len() / 4,
                    _ => packed.iter().filter(|b| **b < 0x80).count(),
                };
                self.charge(count.saturating_mul(GROWTH * size))
            }
            (_, Some(size)) => {
                if wire_type != scalar_wire_type(&kind) {
                    return Err(WireError::Malformed("invalid wire type for a scalar field"));
                }
                r.skip(field.number(), wire_type, depth)?;
                self.charge(if repeated { GROWTH * size } else { 0 })
            }
            (_, None) => r.skip(field.number(), wire_type, depth),
        }
    }
}

/// What a value of this kind takes inline in a struct or map slot.
fn inline_size(kind: &Kind) -> usize {
    match kind {
        Kind::Message(m) => struct_size(m),
        Kind::String | Kind::Bytes => HEADER,
        other => scalar_size(other).unwrap_or(HEADER),
    }
}

fn expect_len<'a>(wire_type: u8, r: &mut Reader<'a>) -> Result<&'a [u8], WireError> {
    if wire_type != LEN {
        return Err(WireError::Malformed("invalid wire type for a length-delimited field"));
    }
    r.length_delimited()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serving::PredictRequest;
    use crate::tensorflow::{DataType, TensorProto};
    use crate::text_format::descriptor;
    use prost::Message as _;

    fn predict() -> MessageDescriptor {
        descriptor("tensorflow.serving.PredictRequest")
    }

    fn strings(n: usize) -> PredictRequest {
        let tensor = TensorProto {
            dtype: DataType::DtString as i32,
            string_val: vec![Vec::new(); n],
            ..TensorProto::default()
        };
        PredictRequest { inputs: [("x".to_owned(), tensor)].into(), ..PredictRequest::default() }
    }

    #[test]
    fn empty_strings_cost_their_headers_not_their_wire_bytes() {
        let wire = strings(1000).encode_to_vec();
        let size = decoded_size(&predict(), &wire, usize::MAX).expect("scans");
        assert!(wire.len() < 2100, "{}", wire.len());
        assert!(size >= 1000 * HEADER, "{size}");
        let err = decoded_size(&predict(), &wire, 10 * wire.len()).expect_err("over");
        assert_eq!(err, WireError::TooLarge { limit: 10 * wire.len() });
    }

    #[test]
    fn many_map_entries_cost_a_struct_each() {
        let request = PredictRequest {
            inputs: (0..500).map(|i| (format!("k{i}"), TensorProto::default())).collect(),
            ..PredictRequest::default()
        };
        let wire = request.encode_to_vec();
        let size = decoded_size(&predict(), &wire, usize::MAX).expect("scans");
        assert!(size > 500 * 17 * PER_FIELD, "{size} for {} wire bytes", wire.len());
    }

    #[test]
    fn packed_floats_cost_what_they_hold() {
        let tensor = TensorProto { float_val: vec![1.0; 10_000], ..TensorProto::default() };
        let request =
            PredictRequest { inputs: [("x".to_owned(), tensor)].into(), ..Default::default() };
        let wire = request.encode_to_vec();
        let size = decoded_size(&predict(), &wire, usize::MAX).expect("scans");
        assert!((3 * 40_000..3 * 40_000 + 4_000).contains(&size), "{size}");
    }

    #[test]
    fn what_prost_refuses_is_refused() {
        let d = predict();
        // field 2 (inputs) as a varint: a wire type prost refuses.
        assert!(matches!(decoded_size(&d, &[0x10, 0x01], 1 << 20), Err(WireError::Malformed(_))));
        // a length running past the end.
        assert!(matches!(
            decoded_size(&d, &[0x12, 0x05, 0x00], 1 << 20),
            Err(WireError::Malformed(_))
        ));
        assert!(PredictRequest::decode(&[0x12u8, 0x05, 0x00][..]).is_err());
        // unknown fields, groups included, are skipped as prost does.
        let unknown = [0x78, 0x01, 0x83, 0x01, 0x08, 0x01, 0x84, 0x01];
        assert_eq!(decoded_size(&d, &unknown, 1 << 20), Ok(0));
        assert!(PredictRequest::decode(&unknown[..]).is_ok());
    }
}
