use super::*;
use versa_proto::tensorflow::TensorShapeProto;

fn spec(dtype: DataType, shape: &[i64]) -> TensorSpec {
    TensorSpec { alias: "x".into(), dtype, shape: shape.to_vec() }
}

fn proto(dtype: DataType, dims: &[i64]) -> TensorProto {
    TensorProto {
        dtype: dtype as i32,
        tensor_shape: Some(shape_proto(dims)),
        ..TensorProto::default()
    }
}

/// Every shared dtype: typed values in, typed values and tensor_content out,
/// tensor_content back in — all equal.
#[test]
fn every_dtype_round_trips_through_typed_fields_and_tensor_content() {
    type Fill = Box<dyn Fn(&mut TensorProto)>;
    let cases: Vec<(DataType, Fill)> = vec![
        (DataType::DtFloat, Box::new(|p| p.float_val = vec![1.5, -2.0, f32::INFINITY, 0.0])),
        (DataType::DtDouble, Box::new(|p| p.double_val = vec![1e300, -2.5, 0.1, 7.0])),
        (DataType::DtHalf, Box::new(|p| p.half_val = vec![0x3c00, 0xc000, 0x7c00, 0])),
        (DataType::DtInt8, Box::new(|p| p.int_val = vec![-128, 127, 0, 5])),
        (DataType::DtInt16, Box::new(|p| p.int_val = vec![-32768, 32767, 1, 2])),
        (DataType::DtInt32, Box::new(|p| p.int_val = vec![i32::MIN, i32::MAX, 3, 4])),
        (
            DataType::DtInt64,
            Box::new(|p| p.int64_val = vec![i64::MIN, i64::MAX, 9_007_199_254_740_993, -1]),
        ),
        (DataType::DtUint8, Box::new(|p| p.int_val = vec![0, 255, 17, 1])),
        (DataType::DtUint16, Box::new(|p| p.int_val = vec![0, 65535, 2, 3])),
        (DataType::DtUint32, Box::new(|p| p.uint32_val = vec![0, u32::MAX, 5, 6])),
        (DataType::DtUint64, Box::new(|p| p.uint64_val = vec![0, u64::MAX, 7, 8])),
        (DataType::DtBool, Box::new(|p| p.bool_val = vec![true, false, false, true])),
        (
            DataType::DtString,
            Box::new(|p| {
                p.string_val = vec![b"a".to_vec(), b"".to_vec(), "é".into(), b"zz".to_vec()]
            }),
        ),
    ];
    for (dtype, fill) in cases {
        let mut request = proto(dtype, &[2, 2]);
        fill(&mut request);
        let tensor =
            tensor_from_proto(&request, &spec(dtype, &[-1, 2]), &mut TensorBudget::unlimited())
                .expect("converts");
        assert_eq!(tensor.shape(), &[2, 2]);
        let typed = tensor_to_proto("x", &tensor, false).expect("encodes");
        assert_eq!(typed, request, "{dtype:?} typed round trip");
        if dtype == DataType::DtString {
            continue; // strings have no tensor_content form
        }
        let content = tensor_to_proto("x", &tensor, true).expect("encodes");
        assert!(!content.tensor_content.is_empty(), "{dtype:?}");
        let back =
            tensor_from_proto(&content, &spec(dtype, &[2, 2]), &mut TensorBudget::unlimited())
                .expect("content converts");
        assert_eq!(
            tensor_to_proto("x", &back, false).expect("encodes"),
            request,
            "{dtype:?} content round trip"
        );
    }
}

#[test]
fn one_typed_value_fills_the_shape() {
    let mut p = proto(DataType::DtFloat, &[2, 3]);
    p.float_val = vec![4.0];
    let t =
        tensor_from_proto(&p, &spec(DataType::DtFloat, &[-1, 3]), &mut TensorBudget::unlimited())
            .expect("broadcast");
    assert_eq!(t.try_as_plain_ram().expect("plain").as_slice::<f32>().expect("f32"), &[4.0; 6]);
}

#[test]
fn scalars_and_empty_tensors() {
    let mut p = TensorProto { dtype: DataType::DtInt64 as i32, ..TensorProto::default() };
    p.int64_val = vec![42];
    let t = tensor_from_proto(&p, &spec(DataType::DtInt64, &[]), &mut TensorBudget::unlimited())
        .expect("scalar");
    assert_eq!(t.shape(), &[] as &[usize]);
    let empty = proto(DataType::DtFloat, &[0, 3]);
    let t = tensor_from_proto(
        &empty,
        &spec(DataType::DtFloat, &[-1, 3]),
        &mut TensorBudget::unlimited(),
    )
    .expect("empty batch");
    assert_eq!(t.shape(), &[0, 3]);
}

#[test]
fn bad_tensors_get_clear_errors() {
    let float = |dims: &[i64], values: Vec<f32>| {
        let mut p = proto(DataType::DtFloat, dims);
        p.float_val = values;
        p
    };
    let s = spec(DataType::DtFloat, &[-1, 3]);
    let cases: Vec<(TensorProto, &TensorSpec, &str)> = vec![
        (
            {
                let mut p = proto(DataType::DtInt64, &[1, 3]);
                p.int64_val = vec![1, 2, 3];
                p
            },
            &s,
            "input 'x' expects DT_FLOAT but DT_INT64 was provided",
        ),
        (
            float(&[1, 4], vec![0.0; 4]),
            &s,
            "input 'x' has shape [1, 4] but the signature expects [-1, 3] (-1: any size)",
        ),
        (
            float(&[3], vec![0.0; 3]),
            &s,
            "input 'x' has shape [3] but the signature expects [-1, 3] (-1: any size)",
        ),
        (float(&[2, 3], vec![0.0; 5]), &s, "input 'x' has 5 values for shape [2, 3] (6 elements)"),
        (float(&[2, 3], vec![]), &s, "input 'x' has 0 values for shape [2, 3] (6 elements)"),
        (
            float(&[-2, 3], vec![]),
            &s,
            "input 'x' has an invalid shape [-2, 3]: dimensions must be >= 0",
        ),
        (
            float(&[1 << 40, 3], vec![1.0]),
            &s,
            "input 'x' would take 13194139533312 bytes of memory, more than the 1073741824 bytes a request's inputs may take together (--max_request_tensor_bytes)",
        ),
        (
            {
                let mut p = proto(DataType::DtFloat, &[1, 3]);
                p.tensor_content = vec![0; 11];
                p
            },
            &s,
            "input 'x' has 11 bytes of tensor_content; shape [1, 3] of DT_FLOAT needs 12",
        ),
        (
            {
                let mut p =
                    TensorProto { dtype: DataType::DtFloat as i32, ..TensorProto::default() };
                p.tensor_shape = Some(TensorShapeProto { dim: vec![], unknown_rank: true });
                p
            },
            &s,
            "input 'x' has an invalid shape []: unknown_rank is set",
        ),
    ];
    for (p, spec, message) in cases {
        let mut budget = TensorBudget::new(1 << 30, "--max_request_tensor_bytes");
        let err = tensor_from_proto(&p, spec, &mut budget).expect_err(message);
        assert_eq!(err.to_string(), message);
        assert_eq!(err.code(), Code::InvalidArgument);
    }

    let mut p = proto(DataType::DtUint8, &[1]);
    p.int_val = vec![300];
    let err = tensor_from_proto(&p, &spec(DataType::DtUint8, &[1]), &mut TensorBudget::unlimited())
        .expect_err("range");
    assert_eq!(err.to_string(), "input 'x' has a value out of range for DT_UINT8: 300");

    let mut p = proto(DataType::DtString, &[1]);
    p.string_val = vec![vec![0xff, 0xfe]];
    let err =
        tensor_from_proto(&p, &spec(DataType::DtString, &[1]), &mut TensorBudget::unlimited())
            .expect_err("utf8");
    assert_eq!(err.to_string(), "input 'x' has a string that is not valid UTF-8");

    let p = proto(DataType::DtComplex64, &[1]);
    let err =
        tensor_from_proto(&p, &spec(DataType::DtComplex64, &[1]), &mut TensorBudget::unlimited())
            .expect_err("complex");
    assert!(err.to_string().contains("DT_COMPLEX64"), "{err}");
}

#[test]
fn empty_tensors_with_huge_dimensions_are_refused_not_overflowed() {
    // No elements, but strides 2^80: tract's stride arithmetic would overflow.
    let s = spec(DataType::DtBool, &[-1, -1, -1]);
    let err = checked_shape("x", &[0, 1 << 40, 1 << 40], &s).expect_err("refused");
    assert!(err.to_string().contains("dimensions too large"), "{err}");
    assert_eq!(
        checked_shape("x", &[0, 1 << 20, 1 << 20], &s).expect("fits"),
        [0, 1 << 20, 1 << 20]
    );
}
