use super::run::choose;
use super::*;
use versa_onnx::{IntoArcTensor, TValue, TVec, TensorSpec};
use versa_proto::tensorflow::DataType;

fn sig(inputs: &[&str], outputs: &[&str]) -> Signature {
    let spec =
        |a: &&str| TensorSpec { alias: (*a).to_owned(), dtype: DataType::DtFloat, shape: vec![-1] };
    Signature {
        inputs: inputs.iter().map(spec).collect(),
        outputs: outputs.iter().map(spec).collect(),
    }
}

#[test]
fn input_names_must_match_the_signature() {
    let s = sig(&["a", "b"], &["y"]);
    assert!(check_input_names(&s, ["b", "a"].into_iter()).is_ok());
    let err = check_input_names(&s, ["a", "c", "d"].into_iter()).expect_err("size");
    assert_eq!(
        err.message,
        "input size does not match signature: 3!=2 len({a,c,d}) != len({a,b}). Sent extra: {c,d}. Missing but required: {b}."
    );
    let err = check_input_names(&s, ["a", "c"].into_iter()).expect_err("alias");
    assert_eq!(
        err.message,
        "input tensor alias not found in signature: c. Inputs expected to be in the set {a,b}."
    );
    assert_eq!(err.code, Code::InvalidArgument);
}

#[test]
fn output_filter_rules() {
    let s = sig(&["x"], &["sum", "product"]);
    assert_eq!(select_outputs(&s, &[]).expect("all"), vec![0, 1]);
    assert_eq!(select_outputs(&s, &["product".into()]).expect("one"), vec![1]);
    let err = select_outputs(&s, &["nope".into()]).expect_err("unknown");
    assert_eq!(
        err.message,
        "output tensor alias not found in signature: nope Outputs expected to be in the set {product,sum}."
    );
    let err = select_outputs(&s, &["sum".into(), "sum".into()]).expect_err("dup");
    assert_eq!(err.message, "duplicate output tensor alias: sum");
}

#[test]
fn chosen_outputs_share_the_answer_a_mirror_copy_keeps() {
    use versa_onnx::IntoTValue;
    let signature = sig(&["x"], &["a", "b"]);
    let tensor = |v: f32| versa_onnx::convert::tensor_from_vec(&[2], vec![v; 2]).into_tvalue();
    let produced: TVec<TValue> = [tensor(1.0), tensor(2.0)].into_iter().collect();
    let kept = produced.clone();
    let chosen = choose(&signature, &produced, vec![1]).expect("chosen");
    assert_eq!(chosen[0].0, "b");
    let shared = kept[1].clone().into_arc_tensor();
    assert!(Arc::ptr_eq(&chosen[0].1, &shared), "the client's output was copied for the mirror");
    assert!(choose(&signature, &produced, vec![2]).is_err());
}
