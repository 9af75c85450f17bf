//! Convolutional networks for benchmarks: a small CNN and a network with
//! MobileNetV2's layer structure and size (inverted residual blocks,
//! depthwise convolutions, ReLU6), both NCHW with random weights. Batch
//! normalisation is folded into the convolutions' biases, as exporters do
//! for inference graphs.

use crate::onnx::{BATCH, Dim, encode, f32_tensor, graph, int, ints, node, value_info, weights};
use tract_onnx::pb::{self, NodeProto, tensor_proto::DataType};

/// Accumulates nodes and initializers with unique names.
#[derive(Default)]
struct Net {
    nodes: Vec<NodeProto>,
    inits: Vec<pb::TensorProto>,
    counter: usize,
}

/// One convolution's shape.
struct ConvSpec {
    cin: usize,
    cout: usize,
    kernel: usize,
    stride: usize,
    /// Depthwise: one group per channel (cin == cout).
    depthwise: bool,
}

impl Net {
    fn fresh(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}{}", self.counter)
    }

    /// A convolution with bias, `same` padding.
    fn conv(&mut self, input: &str, spec: &ConvSpec) -> String {
        let id = self.fresh("conv");
        let (w, b) = (format!("{id}_w"), format!("{id}_b"));
        let per_group_in = if spec.depthwise { 1 } else { spec.cin };
        let fan_in = per_group_in * spec.kernel * spec.kernel;
        let scale = (3.0 / fan_in as f32).sqrt();
        let k = spec.kernel as i64;
        self.inits.push(f32_tensor(
            &w,
            &[spec.cout as i64, per_group_in as i64, k, k],
            weights(self.counter as u64, spec.cout * fan_in, scale),
        ));
        self.inits.push(f32_tensor(
            &b,
            &[spec.cout as i64],
            weights(self.counter as u64 + 10_000, spec.cout, 0.05),
        ));
        let pad = (spec.kernel / 2) as i64;
        let group = if spec.depthwise { spec.cin as i64 } else { 1 };
        self.nodes.push(node(
            "Conv",
            &[input, &w, &b],
            &[&id],
            vec![
                ints("kernel_shape", &[k, k]),
                ints("strides", &[spec.stride as i64, spec.stride as i64]),
                ints("pads", &[pad, pad, pad, pad]),
                int("group", group),
            ],
        ));
        id
    }

    fn relu(&mut self, input: &str) -> String {
        let out = self.fresh("relu");
        self.nodes.push(node("Relu", &[input], &[&out], vec![]));
        out
    }

    /// ReLU6: Clip(x, 0, 6) with the bounds as inputs (opset 13).
    fn relu6(&mut self, input: &str) -> String {
        if !self.inits.iter().any(|t| t.name == "relu6_min") {
            self.inits.push(f32_tensor("relu6_min", &[], vec![0.0]));
            self.inits.push(f32_tensor("relu6_max", &[], vec![6.0]));
        }
        let out = self.fresh("relu6_");
        self.nodes.push(node("Clip", &[input, "relu6_min", "relu6_max"], &[&out], vec![]));
        out
    }

    fn max_pool2(&mut self, input: &str) -> String {
        let out = self.fresh("pool");
        self.nodes.push(node(
            "MaxPool",
            &[input],
            &[&out],
            vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
        ));
        out
    }

    fn add(&mut self, a: &str, b: &str) -> String {
        let out = self.fresh("add");
        self.nodes.push(node("Add", &[a, b], &[&out], vec![]));
        out
    }

    fn flatten(&mut self, input: &str) -> String {
        let out = self.fresh("flat");
        self.nodes.push(node("Flatten", &[input], &[&out], vec![int("axis", 1)]));
        out
    }

    /// `input @ W + b` into `output`.
    fn dense(&mut self, input: &str, fan_in: usize, fan_out: usize, output: &str) {
        let id = self.fresh("dense");
        let (w, b, mm) = (format!("{id}_w"), format!("{id}_b"), format!("{id}_mm"));
        let scale = (6.0 / (fan_in + fan_out) as f32).sqrt();
        self.inits.push(f32_tensor(
            &w,
            &[fan_in as i64, fan_out as i64],
            weights(self.counter as u64, fan_in * fan_out, scale),
        ));
        self.inits.push(f32_tensor(
            &b,
            &[fan_out as i64],
            weights(self.counter as u64 + 10_000, fan_out, 0.1),
        ));
        self.nodes.push(node("MatMul", &[input, &w], &[&mm], vec![]));
        self.nodes.push(node("Add", &[&mm, &b], &[output], vec![]));
    }

    /// The model: `image` f32 [batch, c, h, w] in, `logits` f32 [batch, classes] out.
    fn finish(self, name: &str, [c, h, w]: [i64; 3], classes: i64) -> Vec<u8> {
        let image = value_info(
            "image",
            DataType::Float,
            &[BATCH, Dim::Fixed(c), Dim::Fixed(h), Dim::Fixed(w)],
        );
        let logits = value_info("logits", DataType::Float, &[BATCH, Dim::Fixed(classes)]);
        encode(graph(name, self.nodes, self.inits, vec![image], vec![logits]))
    }
}

fn conv(cin: usize, cout: usize, kernel: usize, stride: usize) -> ConvSpec {
    ConvSpec { cin, cout, kernel, stride, depthwise: false }
}

/// A small CNN: `image` f32 [batch, 1, 28, 28] → conv3×3(16) → ReLU →
/// maxpool → conv3×3(32) → ReLU → maxpool → dense(10) → `logits` [batch, 10].
pub fn small_cnn() -> Vec<u8> {
    let mut net = Net::default();
    let x = net.conv("image", &conv(1, 16, 3, 1));
    let x = net.relu(&x);
    let x = net.max_pool2(&x);
    let x = net.conv(&x, &conv(16, 32, 3, 1));
    let x = net.relu(&x);
    let x = net.max_pool2(&x);
    let x = net.flatten(&x);
    net.dense(&x, 32 * 7 * 7, 10, "logits");
    net.finish("small_cnn", [1, 28, 28], 10)
}

/// MobileNetV2's inverted residual stages: (expansion, output channels,
/// repeats, first stride).
const MOBILENET_V2_STAGES: [(usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];

/// A network shaped like MobileNetV2 (width 1.0, 224×224, 1000 classes,
/// ≈3.5 M parameters, ≈14 MB): `image` f32 [batch, 3, 224, 224] → `logits`
/// f32 [batch, 1000].
pub fn mobilenet_v2_like() -> Vec<u8> {
    let mut net = Net::default();
    let x = net.conv("image", &conv(3, 32, 3, 2));
    let mut x = net.relu6(&x);
    let mut channels = 32;
    for (expansion, cout, repeats, first_stride) in MOBILENET_V2_STAGES {
        for i in 0..repeats {
            let stride = if i == 0 { first_stride } else { 1 };
            let block_input = x.clone();
            let hidden = channels * expansion;
            let mut y = x.clone();
            if expansion != 1 {
                y = net.conv(&y, &conv(channels, hidden, 1, 1));
                y = net.relu6(&y);
            }
            y = net.conv(
                &y,
                &ConvSpec { cin: hidden, cout: hidden, kernel: 3, stride, depthwise: true },
            );
            y = net.relu6(&y);
            y = net.conv(&y, &conv(hidden, cout, 1, 1));
            x = if stride == 1 && channels == cout { net.add(&block_input, &y) } else { y };
            channels = cout;
        }
    }
    let x = net.conv(&x, &conv(channels, 1280, 1, 1));
    let x = net.relu6(&x);
    let pooled = net.fresh("gap");
    net.nodes.push(node("GlobalAveragePool", &[&x], &[&pooled], vec![]));
    let x = net.flatten(&pooled);
    net.dense(&x, 1280, 1000, "logits");
    net.finish("mobilenet_v2_like", [3, 224, 224], 1000)
}
