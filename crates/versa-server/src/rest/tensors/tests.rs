use super::*;
use crate::rest::json::{parse, parse_as_tree};

fn spec(alias: &str, dtype: DataType, shape: &[i64]) -> TensorSpec {
    TensorSpec { alias: alias.into(), dtype, shape: shape.to_vec() }
}

fn one_input(dtype: DataType, shape: &[i64]) -> Signature {
    Signature { inputs: vec![spec("x", dtype, shape)], outputs: vec![spec("y", dtype, shape)] }
}

fn two_inputs() -> Signature {
    Signature {
        inputs: vec![spec("a", DataType::DtFloat, &[-1, 2]), spec("b", DataType::DtInt64, &[-1])],
        outputs: vec![],
    }
}

fn tensors(signature: &Signature, body: &str) -> Result<Vec<Tensor>, ServingError> {
    let json = parse(body).expect("valid JSON");
    let body = predict_body(&json)?;
    input_tensors(signature, &body, &mut TensorBudget::unlimited())
}

/// Converts `body` through the [`Numbers`] fast path and through plain
/// trees; both must give the same tensors or the same error.
fn tensors_both_ways(signature: &Signature, body: &str) -> Result<Vec<Tensor>, ServingError> {
    let fast = tensors(signature, body);
    let json = parse_as_tree(body).expect("valid JSON");
    let tree = predict_body(&json)
        .and_then(|b| input_tensors(signature, &b, &mut TensorBudget::unlimited()));
    match (&fast, &tree) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "{body}"),
        (Err(a), Err(b)) => assert_eq!(a.message, b.message, "{body}"),
        _ => panic!("{body}: fast path {fast:?}, tree {tree:?}"),
    }
    fast
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.try_as_plain_ram().expect("plain").as_slice::<f32>().expect("f32").to_vec()
}

#[test]
fn row_format_stacks_instances() {
    let sig = one_input(DataType::DtFloat, &[-1, 2]);
    let t = tensors(&sig, r#"{"instances": [[1, 2], [3, NaN]]}"#).expect("ok");
    assert_eq!(t[0].shape(), &[2, 2]);
    let v = f32s(&t[0]);
    assert_eq!(&v[..3], &[1.0, 2.0, 3.0]);
    assert!(v[3].is_nan());
    // Objects naming the single input work too.
    let t = tensors(&sig, r#"{"instances": [{"x": [1, 2]}]}"#).expect("ok");
    assert_eq!(t[0].shape(), &[1, 2]);
}

#[test]
fn row_format_with_several_inputs() {
    let t =
        tensors(&two_inputs(), r#"{"instances": [{"a": [1, 2], "b": 7}, {"b": 8, "a": [3, 4]}]}"#)
            .expect("ok");
    assert_eq!(t[0].shape(), &[2, 2]);
    assert_eq!(f32s(&t[0]), vec![1.0, 2.0, 3.0, 4.0]);
    assert_eq!(t[1].try_as_plain_ram().expect("plain").as_slice::<i64>().expect("i64"), &[7, 8]);
}

#[test]
fn columnar_format() {
    let t = tensors(&two_inputs(), r#"{"inputs": {"a": [[1, 2]], "b": [5, 6, 7]}}"#).expect("ok");
    assert_eq!(t[0].shape(), &[1, 2]);
    assert_eq!(t[1].shape(), &[3], "dim 0 may differ between inputs");
    let t =
        tensors(&one_input(DataType::DtFloat, &[-1, 2]), r#"{"inputs": [[1, 2], [3, 4], [5, 6]]}"#)
            .expect("ok");
    assert_eq!(t[0].shape(), &[3, 2]);
}

#[test]
fn strings_and_b64() {
    let sig = one_input(DataType::DtString, &[-1]);
    let t = tensors(&sig, r#"{"instances": ["plain", {"b64": "aGVsbG8="}]}"#).expect("ok");
    let v = t[0].try_as_plain_ram().expect("plain").as_slice::<String>().expect("strings").to_vec();
    assert_eq!(v, vec!["plain".to_owned(), "hello".to_owned()]);
}

#[test]
fn int64_values_are_exact() {
    let sig = one_input(DataType::DtInt64, &[-1]);
    let t = tensors(&sig, r#"{"inputs": [9007199254740993, -9223372036854775808]}"#).expect("ok");
    assert_eq!(
        t[0].try_as_plain_ram().expect("plain").as_slice::<i64>().expect("i64"),
        &[9_007_199_254_740_993, i64::MIN]
    );
}

#[test]
fn number_runs_decode_like_trees() {
    let f = one_input(DataType::DtFloat, &[-1, 2]);
    let any2 = one_input(DataType::DtFloat, &[-1, -1]);
    let any3 = one_input(DataType::DtFloat, &[-1, -1, -1]);
    let i64s = one_input(DataType::DtInt64, &[-1]);
    let two = two_inputs();
    // (signature, body, decodes)
    let cases: &[(&Signature, &str, bool)] = &[
        (&f, r#"{"instances": [[1, 2], [3, NaN]]}"#, true),
        (&f, r#"{"instances": [{"x": [1, 2]}, {"x": [3, -Infinity]}]}"#, true),
        (&f, r#"{"instances": [{"x": [1, 2]}, {"x": [3]}]}"#, false),
        (&f, r#"{"instances": [[1, 2], [3]]}"#, false),
        (&f, r#"{"instances": [[1, 2], [3, "a"]]}"#, false),
        (&f, r#"{"instances": [[1e40, 2.5e-3]]}"#, true),
        (&f, r#"{"inputs": [[1, 2], [3, 4], [5, 6]]}"#, true),
        (&f, r#"{"inputs": [[1, 2, 3]]}"#, false),
        (&f, r#"{"inputs": [[[1, 2]]]}"#, false),
        (&f, r#"{"instances": []}"#, false),
        (&any2, r#"{"instances": [[], []]}"#, true),
        (&any3, r#"{"inputs": [[[], []], [[], []]]}"#, true),
        (&any3, r#"{"inputs": [[[1, 2]], [[3, 4]]]}"#, true),
        (&any3, r#"{"inputs": [[[1], [2]], [3, 4]]}"#, false),
        (&any2, r#"{"inputs": [1, [2]]}"#, false),
        (&any2, r#"{"instances": [1, [2]]}"#, false),
        (&any3, r#"{"instances": [[1, [2]], [3, [4]]]}"#, false),
        (&any3, r#"{"instances": [{"x": [[1], [2]]}, {"x": [[3], [4]]}]}"#, true),
        (&any3, r#"{"instances": [{"x": [[1], [2]]}, {"x": [[3, 4]]}]}"#, false),
        (&i64s, r#"{"inputs": [9007199254740993, -9223372036854775808]}"#, true),
        (&i64s, r#"{"inputs": [1, 2.5]}"#, false),
        (&i64s, r#"{"inputs": [1, 9223372036854775808]}"#, false),
        (&two, r#"{"instances": [[1, 2]]}"#, false),
        (&two, r#"{"inputs": {"a": [[1, 2]], "b": [5, 6, 7]}}"#, true),
        (&two, r#"{"instances": [{"a": [1, 2], "b": 7}, {"b": 8, "a": [3, 4]}]}"#, true),
    ];
    for (signature, body, decodes) in cases {
        let result = tensors_both_ways(signature, body);
        assert_eq!(result.is_ok(), *decodes, "{body}: {result:?}");
    }
    // A large body, as a CNN client sends it.
    let image = one_input(DataType::DtFloat, &[-1, 3, 16, 16]);
    let pixels: Vec<String> = (0..3 * 16 * 16).map(|i| format!("{}", i as f32 / 7.0)).collect();
    let plane = |c: usize| {
        let rows: Vec<String> = (0..16)
            .map(|r| format!("[{}]", pixels[(c * 16 + r) * 16..(c * 16 + r + 1) * 16].join(", ")))
            .collect();
        format!("[{}]", rows.join(",\n"))
    };
    let body = format!(r#"{{"instances": [[{}, {}, {}]]}}"#, plane(0), plane(1), plane(2));
    let t = tensors_both_ways(&image, &body).expect("image decodes");
    assert_eq!(t[0].shape(), &[1, 3, 16, 16]);
    assert_eq!(f32s(&t[0])[767], 767.0 / 7.0);
}

#[test]
fn request_errors_match_upstream() {
    let sig = one_input(DataType::DtFloat, &[-1, 2]);
    let cases = [
        (
            r#"{"instances": [[1, 2]], "inputs": [[1, 2]]}"#,
            "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist",
        ),
        (r#"{"signature_name": "serving_default"}"#, "Missing 'inputs' or 'instances' key"),
        (
            r#"{"signature_name": 5, "instances": [[1, 2]]}"#,
            "Expecting 'signature_name' to be a string",
        ),
        (r#"{"instances": 5}"#, "Expecting 'instances' to be an list/array"),
        (r#"{"instances": []}"#, "'instances' is an empty list/array"),
        (
            r#"{"instances": [[1, 2], [3]]}"#,
            "Failed to process input 'x': rows have different shapes (tensors must be rectangular)",
        ),
        (
            r#"{"inputs": [[1, 2], [3]]}"#,
            "Failed to process input 'x': lists at the same depth have different lengths (tensors must be rectangular)",
        ),
        (
            r#"{"inputs": [[1, "a"]]}"#,
            "JSON Value: \"a\" Type: String is not of expected type: float",
        ),
        (
            r#"{"inputs": [[1, 2, 3]]}"#,
            "input 'x' has shape [1, 3] but the signature expects [-1, 2] (-1: any size)",
        ),
        (r#"[1]"#, "Request body must be a JSON object, got Array"),
    ];
    for (body, message) in cases {
        let err = tensors(&sig, body).expect_err(body);
        assert_eq!(err.message, message, "{body}");
        assert_eq!(err.code, versa_core::Code::InvalidArgument);
    }
    let int = one_input(DataType::DtInt32, &[-1]);
    assert_eq!(
        tensors(&int, r#"{"inputs": [1.5]}"#).expect_err("fraction").message,
        "JSON Value: 1.5 Type: Number is not of expected type: int32"
    );
    assert_eq!(
        tensors(&two_inputs(), r#"{"instances": [[1, 2]]}"#).expect_err("plain list").message,
        "instances is a plain list, but expecting list of objects as multiple input tensors required as per tensorinfo_map"
    );
    assert!(
        tensors(&two_inputs(), r#"{"instances": [{"a": [1, 2]}]}"#)
            .expect_err("missing")
            .message
            .starts_with("input size does not match signature")
    );
}

fn tensor_f32(shape: &[usize], v: Vec<f32>) -> Tensor {
    tensor_from_vec(shape, v)
}

#[test]
fn responses_in_both_formats() {
    let y = tensor_f32(&[2, 2], vec![1.0, 2.5, f32::NAN, -0.0]);
    let z = tensor_from_vec(&[2], vec![7i64, 8]);
    let one = vec![("y".to_owned(), y.clone())];
    let two = vec![("y".to_owned(), y), ("z".to_owned(), z)];
    assert_eq!(
        response_body(Format::Row, &one).expect("row"),
        r#"{"predictions":[[1.0,2.5],[NaN,-0.0]]}"#
    );
    assert_eq!(
        response_body(Format::Row, &two).expect("row"),
        r#"{"predictions":[{"y":[1.0,2.5],"z":7},{"y":[NaN,-0.0],"z":8}]}"#
    );
    assert_eq!(
        response_body(Format::Columnar, &one).expect("col"),
        r#"{"outputs":[[1.0,2.5],[NaN,-0.0]]}"#
    );
    assert_eq!(
        response_body(Format::Columnar, &two).expect("col"),
        r#"{"outputs":{"y":[[1.0,2.5],[NaN,-0.0]],"z":[7,8]}}"#
    );
    let uneven = vec![
        ("y".to_owned(), tensor_f32(&[2], vec![1.0, 2.0])),
        ("z".to_owned(), tensor_f32(&[3], vec![0.0; 3])),
    ];
    assert_eq!(
        response_body(Format::Row, &uneven).expect_err("uneven").message,
        "Tensor name: z has inconsistent batch size: 3 expecting: 2"
    );
}

#[test]
fn string_outputs_ending_in_bytes_are_b64() {
    let s = tensor_from_vec(&[1], vec!["hi".to_owned()]);
    let out = vec![("text_bytes".to_owned(), s.clone()), ("text".to_owned(), s)];
    assert_eq!(
        response_body(Format::Columnar, &out).expect("col"),
        r#"{"outputs":{"text_bytes":[{"b64":"aGk="}],"text":["hi"]}}"#
    );
}
