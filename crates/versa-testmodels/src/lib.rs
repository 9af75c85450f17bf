//! ONNX models Versa generates for its own tests, demo and benchmarks. Every
//! model is built here from code (random weights where it has any); nothing
//! is downloaded.
//!
//! | model | inputs → outputs | what it is for |
//! |---|---|---|
//! | [`versioned`] | `x` f32 [batch, 4] → `y` = x + version | outputs reveal which version answered |
//! | [`failing`] | as [`versioned`] | answers inputs ≤ 0.5, fails above with a tract error (a canary to abort) |
//! | [`slow`] | as [`versioned`] | the same answers as [`versioned`], slower as `work` grows (a canary to abort) |
//! | [`scaled`] | `x` f32 [batch, 4] → `y` = x ⊙ weights | class scores whose argmax a version's weights move (shadow traffic) |
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

/// [`versioned`]'s signature and answers (`y = x + version`) for inputs
/// whose every element is at most 0.5 (zeros, the server's warm-up, among
/// them), and a tract error at run time for any input with an element
/// above 0.5: a version that loads, warms up and becomes AVAILABLE, then
/// fails the requests a client chooses (a canary to abort).
///
/// It gathers `x` along its last axis (length 4) at indices
/// `[0, 1, 2, 3] + 4 × (x > 0.5)`: in range (the identity) or out of it, never known
/// before the run. tract's GatherElements reports an index out of range as
/// an error, not a panic.
pub fn failing(version: i64) -> Vec<u8> {
    encode(graph(
        "failing",
        vec![
            node("Greater", &["x", "half"], &["above"], vec![]),
            node("Cast", &["above"], &["above_i64"], vec![onnx::int("to", DataType::Int64 as i64)]),
            node("Mul", &["above_i64", "four"], &["shift"], vec![]),
            node("Add", &["shift", "iota"], &["indices"], vec![]),
            node("GatherElements", &["x", "indices"], &["gathered"], vec![onnx::int("axis", 1)]),
            node("Add", &["gathered", "offset"], &["y"], vec![]),
        ],
        vec![
            f32_tensor("half", &[], vec![0.5]),
            i64_tensor("four", &[], vec![4]),
            i64_tensor("iota", &[1, 4], vec![0, 1, 2, 3]),
            f32_tensor("offset", &[], vec![version as f32]),
        ],
        vec![value_info("x", DataType::Float, &[BATCH, Dim::Fixed(4)])],
        vec![value_info("y", DataType::Float, &[BATCH, Dim::Fixed(4)])],
    ))
}

/// Layers of [`slow`]'s chain of matrix products.
pub const SLOW_LAYERS: usize = 8;

/// The signature and answers of [`versioned`] (`y = x + version`, exactly,
/// for any input), after work that costs about `batch × SLOW_LAYERS × work³`
/// multiply-adds per run, so a version of it is measurably slower.
///
/// Each row is turned into a bounded [work, work] matrix (the outer product
/// of two projections of `isnan(x)`, so it depends on the input and cannot
/// be folded at load, yet stays finite whatever the input), multiplied
/// [`SLOW_LAYERS`] times by a constant [work, work] matrix scaled by
/// 1/work (so it stays bounded), and summed. `isinf(sum)`, always false, cast
/// to 0.0, is added to the version, which is then added to `x`: the very
/// `x + version` of [`versioned`]. (Not `sum × 0`: tract folds a product
/// by a constant zero away, and the chain with it.) Weights: `(work + 5) ×
/// work` floats.
pub fn slow(version: i64, work: usize) -> Vec<u8> {
    assert!(work > 0, "slow: work must be at least 1");
    let w = work as i64;
    let mut nodes = vec![
        node("IsNaN", &["x"], &["nan"], vec![]),
        node("Cast", &["nan"], &["nan_f32"], vec![onnx::int("to", DataType::Float as i64)]),
        node("MatMul", &["nan_f32", "project"], &["row"], vec![]),
        node("Unsqueeze", &["row", "axis2"], &["column"], vec![]),
        node("MatMul", &["column", "spread"], &["h0"], vec![]),
    ];
    for layer in 0..SLOW_LAYERS {
        let (input, output) = (format!("h{layer}"), format!("h{}", layer + 1));
        nodes.push(node("MatMul", &[&input, "square"], &[&output], vec![]));
    }
    let last = format!("h{SLOW_LAYERS}");
    nodes.extend([
        node("ReduceSum", &[&last, "axes12"], &["sum"], vec![onnx::int("keepdims", 0)]),
        node("Unsqueeze", &["sum", "axis1"], &["sum_column"], vec![]),
        node("IsInf", &["sum_column"], &["never"], vec![]),
        node("Cast", &["never"], &["nothing"], vec![onnx::int("to", DataType::Float as i64)]),
        node("Add", &["offset", "nothing"], &["offsets"], vec![]),
        node("Add", &["x", "offsets"], &["y"], vec![]),
    ]);
    encode(graph(
        "slow",
        nodes,
        vec![
            f32_tensor("project", &[4, w], weights(201, 4 * work, 1.0)),
            f32_tensor("spread", &[1, w], weights(202, work, 1.0)),
            f32_tensor("square", &[w, w], weights(203, work * work, 1.0 / work as f32)),
            i64_tensor("axis2", &[1], vec![2]),
            i64_tensor("axis1", &[1], vec![1]),
            i64_tensor("axes12", &[2], vec![1, 2]),
            f32_tensor("offset", &[], vec![version as f32]),
        ],
        vec![value_info("x", DataType::Float, &[BATCH, Dim::Fixed(4)])],
        vec![value_info("y", DataType::Float, &[BATCH, Dim::Fixed(4)])],
    ))
}

/// `y = x ⊙ weights` (element by element, per row): with equal weights
/// two versions answer alike; raising one weight moves the argmax of the
/// rows where that class comes close, which a test can count offline; a
/// NaN weight puts NaN in every answer's column.
pub fn scaled(weights: [f32; 4]) -> Vec<u8> {
    encode(graph(
        "scaled",
        vec![node("Mul", &["x", "weights"], &["y"], vec![])],
        vec![f32_tensor("weights", &[1, 4], weights.to_vec())],
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

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::prelude::*;

    /// Prepares a model as versa-onnx does: typed and decluttered, then
    /// optimised with the batch dimension symbolic and set to `batch`.
    fn plans(bytes: &[u8], batch: usize) -> [std::sync::Arc<TypedRunnableModel>; 2] {
        let typed = tract_onnx::onnx()
            .model_for_read(&mut &bytes[..])
            .and_then(|m| m.into_typed())
            .and_then(|m| m.into_decluttered())
            .expect("typed and decluttered");
        let symbol = match typed.input_fact(0).expect("input").shape.iter().next() {
            Some(TDim::Sym(s)) => s.clone(),
            other => panic!("batch dimension is {other:?}"),
        };
        let concrete = std::collections::HashMap::from([(symbol, TDim::Val(batch as i64))]);
        let fixed = typed
            .set_symbols(&concrete)
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .expect("optimised for a concrete batch");
        let symbolic = typed
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .expect("optimised for any batch");
        [fixed, symbolic]
    }

    fn input(batch: usize, values: impl Fn(usize) -> f32) -> Tensor {
        let data: Vec<f32> = (0..batch * 4).map(values).collect();
        Tensor::from_shape(&[batch, 4], &data).expect("input")
    }

    fn output(plan: &std::sync::Arc<TypedRunnableModel>, x: &Tensor) -> Vec<f32> {
        let outputs = plan.run(tvec![x.clone().into_tvalue()]).expect("run");
        assert_eq!(outputs.len(), 1);
        assert_eq!(outputs[0].shape(), x.shape());
        outputs[0].to_plain_array_view::<f32>().expect("f32 output").iter().copied().collect()
    }

    fn inputs(batch: usize) -> Vec<Tensor> {
        vec![
            input(batch, |_| 0.0),
            input(batch, |i| i as f32 * 1.5 - 3.25),
            input(batch, |i| [f32::MAX, -1e30, f32::INFINITY, f32::NEG_INFINITY][i % 4]),
            input(batch, |i| if i % 3 == 0 { f32::NAN } else { -0.0 }),
        ]
    }

    #[test]
    fn versioned_adds_the_version() {
        for plan in plans(&versioned(7), 2) {
            assert_eq!(
                output(&plan, &input(2, |i| i as f32)),
                [7., 8., 9., 10., 11., 12., 13., 14.]
            );
        }
    }

    #[test]
    fn failing_answers_like_versioned_up_to_a_half_and_fails_above() {
        for batch in [1, 3] {
            let [healthy, _] = plans(&versioned(2), batch);
            for plan in plans(&failing(2), batch) {
                for x in [input(batch, |_| 0.0), input(batch, |i| i as f32 * -1.5 + 0.5)] {
                    assert_eq!(output(&plan, &x), output(&healthy, &x), "at most 0.5: answered");
                }
                for x in [input(batch, |_| 1.0), input(batch, |i| if i == 2 { 0.75 } else { 0.0 })]
                {
                    let err = plan.run(tvec![x.into_tvalue()]).expect_err("a run must fail");
                    assert!(format!("{err:#}").contains("GatherElements"), "{err:#}");
                }
            }
        }
    }

    #[test]
    fn slow_answers_exactly_what_versioned_does() {
        for (version, work) in [(0, 1), (3, 16), (-2, 40)] {
            for batch in [1, 2, 5] {
                let [healthy, _] = plans(&versioned(version), batch);
                for plan in plans(&slow(version, work), batch) {
                    for x in inputs(batch) {
                        let (got, want) = (output(&plan, &x), output(&healthy, &x));
                        // Equal as numbers (tract may fold `x + 0` to `x`, keeping -0.0).
                        let same = got
                            .iter()
                            .zip(&want)
                            .all(|(g, w)| g == w || (g.is_nan() && w.is_nan()));
                        assert!(
                            same && got.len() == want.len(),
                            "version {version}, work {work}: {got:?} vs {want:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn slow_keeps_its_work_through_optimisation() {
        for plan in plans(&slow(1, 8), 1) {
            let products = plan
                .model()
                .nodes()
                .iter()
                .filter(|n| {
                    let name = n.op().name();
                    name.contains("MatMul") || name.contains("EinSum") || name.contains("Mmm")
                })
                .count();
            assert!(products >= SLOW_LAYERS, "{products} matrix products left");
        }
    }
}
