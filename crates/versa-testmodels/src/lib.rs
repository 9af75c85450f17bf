//! ONNX models Versa generates for its own tests, demo and benchmarks. Every
//! model is built here from code (random weights where it has any); nothing
//! is downloaded.
//!
//! | model | inputs → outputs | what it is for |
//! |---|---|---|
//! | [`versioned`] | `x` f32 [batch, 4] → `y` = x + version | outputs reveal which version answered |
//! | [`two_in_two_out`] | `a`, `b` f32 [batch, 3] → `sum`, `product` | multi-input/-output signatures |
//! | [`int_model`] | `ids` i64 [batch, 2] → `doubled` i64, `as_int32` i32 | integer dtypes |
//! | [`string_model`] | `text` string [batch] → `echo` string | string tensors |
//! | [`corrupt`] | — | a file that is not an ONNX model |
//! | [`mlp`] | `input` f32 [batch, 784] → `logits` f32 [batch, 10] | 784→512→256→10 MLP for benchmarks |
//! | [`small_cnn`] | `image` f32 [batch, 1, 28, 28] → `logits` f32 [batch, 10] | two conv layers, benchmarks |
//! | [`mobilenet_v2_like`] | `image` f32 [batch, 3, 224, 224] → `logits` f32 [batch, 1000] | MobileNetV2-sized CNN (≈14 MB), benchmarks and memory |

pub mod cnn;
pub mod onnx;

pub use cnn::{mobilenet_v2_like, small_cnn};

use onnx::{BATCH, Dim, encode, f32_tensor, graph, i64_tensor, node, value_info, weights};
use std::path::{Path, PathBuf};
use tract_onnx::pb::tensor_proto::DataType;

/// File name the server loads from each version directory.
pub const MODEL_FILE: &str = "model.onnx";

/// `y = x + version`: feeding zeros returns the version number.
pub fn versioned(version: i64) -> Vec<u8> {
    encode(graph(
        "versioned",
        vec![node("Add", &["x", "offset"], &["y"], vec![])],
        vec![f32_tensor("offset", &[], vec![version as f32])],
        vec![value_info("x", DataType::Float, &[BATCH, Dim::Fixed(4)])],
        vec![value_info("y", DataType::Float, &[BATCH, Dim::Fixed(4)])],
    ))
}

/// Two inputs, two outputs: `sum = a + b`, `product = a * b`.
pub fn two_in_two_out() -> Vec<u8> {
    let io = |name| value_info(name, DataType::Float, &[BATCH, Dim::Fixed(3)]);
    encode(graph(
        "two_in_two_out",
        vec![
            node("Add", &["a", "b"], &["sum"], vec![]),
            node("Mul", &["a", "b"], &["product"], vec![]),
        ],
        vec![],
        vec![io("a"), io("b")],
        vec![io("sum"), io("product")],
    ))
}

/// Integer model: `doubled = ids * 2` (int64) and `as_int32 = cast(ids)`.
pub fn int_model() -> Vec<u8> {
    encode(graph(
        "int_model",
        vec![
            node("Mul", &["ids", "two"], &["doubled"], vec![]),
            node("Cast", &["ids"], &["as_int32"], vec![onnx::int("to", DataType::Int32 as i64)]),
        ],
        vec![i64_tensor("two", &[], vec![2])],
        vec![value_info("ids", DataType::Int64, &[BATCH, Dim::Fixed(2)])],
        vec![
            value_info("doubled", DataType::Int64, &[BATCH, Dim::Fixed(2)]),
            value_info("as_int32", DataType::Int32, &[BATCH, Dim::Fixed(2)]),
        ],
    ))
}

/// String model: `echo` returns `text` unchanged.
pub fn string_model() -> Vec<u8> {
    encode(graph(
        "string_model",
        vec![node("Identity", &["text"], &["echo"], vec![])],
        vec![],
        vec![value_info("text", DataType::String, &[BATCH])],
        vec![value_info("echo", DataType::String, &[BATCH])],
    ))
}

/// Not an ONNX model at all.
pub fn corrupt() -> Vec<u8> {
    b"this is not an ONNX model; loading it must fail cleanly".to_vec()
}

/// A dense network with ReLU between layers, e.g. `mlp(&[784, 512, 256, 10])`.
pub fn mlp(widths: &[usize]) -> Vec<u8> {
    let mut nodes = Vec::new();
    let mut inits = Vec::new();
    let mut current = "input".to_owned();
    let layers = widths.len() - 1;
    for (i, pair) in widths.windows(2).enumerate() {
        let (fan_in, fan_out) = (pair[0], pair[1]);
        let (w, b, mm, add) =
            (format!("w{i}"), format!("b{i}"), format!("mm{i}"), format!("dense{i}"));
        let scale = (6.0 / (fan_in + fan_out) as f32).sqrt();
        inits.push(f32_tensor(
            &w,
            &[fan_in as i64, fan_out as i64],
            weights(i as u64 + 1, fan_in * fan_out, scale),
        ));
        inits.push(f32_tensor(&b, &[fan_out as i64], weights(i as u64 + 101, fan_out, 0.1)));
        nodes.push(node("MatMul", &[&current, &w], &[&mm], vec![]));
        let last = i + 1 == layers;
        let out = if last { "logits".to_owned() } else { add.clone() };
        nodes.push(node("Add", &[&mm, &b], &[&out], vec![]));
        current = out;
        if !last {
            let relu = format!("relu{i}");
            nodes.push(node("Relu", &[&current], &[&relu], vec![]));
            current = relu;
        }
    }
    encode(graph(
        "mlp",
        nodes,
        inits,
        vec![value_info("input", DataType::Float, &[BATCH, Dim::Fixed(widths[0] as i64)])],
        vec![value_info("logits", DataType::Float, &[BATCH, Dim::Fixed(widths[layers] as i64)])],
    ))
}

/// Writes `bytes` as `<base>/<version>/model.onnx` and returns the version directory.
pub fn write_version(base: &Path, version: i64, bytes: &[u8]) -> std::io::Result<PathBuf> {
    let dir = base.join(version.to_string());
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(MODEL_FILE), bytes)?;
    Ok(dir)
}

/// Publishes a version atomically: written under a temporary name (not a
/// number, so the server ignores it), then renamed into place.
pub fn publish_version(base: &Path, version: i64, bytes: &[u8]) -> std::io::Result<PathBuf> {
    let staging = base.join(format!(".staging-{version}"));
    std::fs::create_dir_all(&staging)?;
    std::fs::write(staging.join(MODEL_FILE), bytes)?;
    let dir = base.join(version.to_string());
    std::fs::rename(&staging, &dir)?;
    Ok(dir)
}

/// The example model repository used by the demo and the end-to-end tests:
/// `versioned` (versions 1, 2, 3), `pair` (two-input/two-output, version 1),
/// `ints` and `strings` (version 1), `broken` (version 1 corrupt, version 2 fine).
pub fn write_example_repository(root: &Path) -> std::io::Result<()> {
    for v in [1, 2, 3] {
        write_version(&root.join("versioned"), v, &versioned(v))?;
    }
    write_version(&root.join("pair"), 1, &two_in_two_out())?;
    write_version(&root.join("ints"), 1, &int_model())?;
    write_version(&root.join("strings"), 1, &string_model())?;
    write_version(&root.join("broken"), 1, &corrupt())?;
    write_version(&root.join("broken"), 2, &versioned(2))?;
    Ok(())
}
