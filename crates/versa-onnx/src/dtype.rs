//! TensorFlow `DataType` ↔ tract `DatumType`, for the dtypes ONNX and
//! TensorFlow share.

use tract_onnx::prelude::DatumType;
use versa_proto::tensorflow::DataType;

/// The TensorFlow dtype of a tract datum type, if the two share it.
pub fn to_tf(dt: DatumType) -> Option<DataType> {
    Some(match dt {
        DatumType::F32 => DataType::DtFloat,
        DatumType::F64 => DataType::DtDouble,
        DatumType::F16 => DataType::DtHalf,
        DatumType::I8 => DataType::DtInt8,
        DatumType::I16 => DataType::DtInt16,
        DatumType::I32 => DataType::DtInt32,
        DatumType::I64 => DataType::DtInt64,
        DatumType::U8 => DataType::DtUint8,
        DatumType::U16 => DataType::DtUint16,
        DatumType::U32 => DataType::DtUint32,
        DatumType::U64 => DataType::DtUint64,
        DatumType::Bool => DataType::DtBool,
        DatumType::String => DataType::DtString,
        _ => return None,
    })
}

/// The tract datum type of a TensorFlow dtype, if the two share it.
pub fn from_tf(dt: DataType) -> Option<DatumType> {
    Some(match dt {
        DataType::DtFloat => DatumType::F32,
        DataType::DtDouble => DatumType::F64,
        DataType::DtHalf => DatumType::F16,
        DataType::DtInt8 => DatumType::I8,
        DataType::DtInt16 => DatumType::I16,
        DataType::DtInt32 => DatumType::I32,
        DataType::DtInt64 => DatumType::I64,
        DataType::DtUint8 => DatumType::U8,
        DataType::DtUint16 => DatumType::U16,
        DataType::DtUint32 => DatumType::U32,
        DataType::DtUint64 => DatumType::U64,
        DataType::DtBool => DatumType::Bool,
        DataType::DtString => DatumType::String,
        _ => return None,
    })
}

/// The wire name of a dtype value, e.g. `DT_FLOAT`, or the number if unknown.
pub fn name(dtype: i32) -> String {
    DataType::try_from(dtype)
        .map(|d| d.as_str_name().to_owned())
        .unwrap_or_else(|_| format!("DataType({dtype})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shared_dtype_round_trips() {
        let shared = [
            DatumType::F32,
            DatumType::F64,
            DatumType::F16,
            DatumType::I8,
            DatumType::I16,
            DatumType::I32,
            DatumType::I64,
            DatumType::U8,
            DatumType::U16,
            DatumType::U32,
            DatumType::U64,
            DatumType::Bool,
            DatumType::String,
        ];
        for dt in shared {
            let tf = to_tf(dt).expect("shared");
            assert_eq!(from_tf(tf), Some(dt), "{dt:?} ↔ {tf:?}");
        }
        assert_eq!(from_tf(DataType::DtComplex64), None);
        assert_eq!(name(DataType::DtFloat as i32), "DT_FLOAT");
        assert_eq!(name(999), "DataType(999)");
    }
}
