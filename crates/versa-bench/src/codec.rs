//! `codec`: what turning a request into tensors, and tensors into a
//! response, costs in-process — the server's own work around the model,
//! without the network — next to one raw batch-1 inference of the model.

use crate::raw;
use crate::stats::{Stats, us};
use crate::workload::Workload;
use prost::Message as _;
use std::time::{Duration, Instant};
use versa_onnx::convert::{TensorBudget, tensor_from_proto, tensor_to_proto};
use versa_onnx::{IntoTValue, IntoTensor, ModelOptions, OnnxModel, TVec, Tensor};
use versa_proto::serving::PredictRequest;
use versa_server::rest::{json, tensors};

/// Runs `f` until `count` runs or `limit` have passed; its latencies.
fn time(
    count: usize,
    limit: Duration,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Stats> {
    for _ in 0..3 {
        f()?;
    }
    let mut latencies = Vec::with_capacity(count);
    let started = Instant::now();
    while latencies.len() < count && started.elapsed() < limit {
        let t = Instant::now();
        f()?;
        latencies.push(t.elapsed());
    }
    Ok(Stats::new(latencies, 0, started.elapsed()))
}

fn anyhow_of(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

pub(crate) fn codec(w: &Workload, count: usize, limit: Duration) -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let dir = versa_testmodels::write_version(&root.path().join("bench"), 1, &w.bytes)?;
    let raw_p50 = raw::sequential(&dir, w, count.min(500), limit)?.pct(0.5);
    let model = OnnxModel::load(&dir, ModelOptions::default()).map_err(anyhow_of)?;
    let signature = model.signature().clone();
    let outputs: Vec<(String, Tensor)> = {
        let produced = model.run(TVec::from_iter([w.tensor().into_tvalue()])).map_err(anyhow_of)?;
        signature
            .outputs
            .iter()
            .zip(produced)
            .map(|(spec, t)| (spec.alias.clone(), t.into_tensor()))
            .collect()
    };

    let body = w.rest_body();
    let decode_rest = |parse: fn(&str) -> Result<json::Json<'_>, json::JsonError>| {
        let signature = &signature;
        let body = &body;
        move || -> anyhow::Result<()> {
            let doc = parse(body).map_err(anyhow_of)?;
            let parsed = tensors::predict_body(&doc).map_err(anyhow_of)?;
            let inputs = tensors::input_tensors(signature, &parsed, &mut TensorBudget::unlimited())
                .map_err(anyhow_of)?;
            std::hint::black_box(inputs);
            Ok(())
        }
    };
    let rest_in = time(count, limit, decode_rest(json::parse))?;
    let rest_in_tree = time(count, limit, decode_rest(json::parse_as_tree))?;
    let rest_out = time(count, limit, || {
        let body = tensors::response_body(tensors::Format::Row, &outputs).map_err(anyhow_of)?;
        std::hint::black_box(body);
        Ok(())
    })?;

    let spec = &signature.inputs[0];
    let content_request = w.grpc_request().encode_to_vec();
    let mut typed = w.grpc_request();
    for proto in typed.inputs.values_mut() {
        proto.float_val = proto
            .tensor_content
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        proto.tensor_content.clear();
    }
    let typed_request = typed.encode_to_vec();
    let decode_grpc = |bytes: &[u8]| -> anyhow::Result<()> {
        let request = PredictRequest::decode(bytes)?;
        let tensor =
            tensor_from_proto(&request.inputs[&spec.alias], spec, &mut TensorBudget::unlimited())
                .map_err(anyhow_of)?;
        std::hint::black_box(tensor);
        Ok(())
    };
    let grpc_in_content = time(count, limit, || decode_grpc(&content_request))?;
    let grpc_in_typed = time(count, limit, || decode_grpc(&typed_request))?;
    let encode_grpc = |as_content: bool| -> anyhow::Result<()> {
        for (alias, tensor) in &outputs {
            let proto = tensor_to_proto(alias, tensor, as_content).map_err(anyhow_of)?;
            std::hint::black_box(proto.encode_to_vec());
        }
        Ok(())
    };
    let grpc_out_typed = time(count, limit, || encode_grpc(false))?;
    let grpc_out_content = time(count, limit, || encode_grpc(true))?;

    println!(
        "model: {} · input {:?} ({} values; REST body {} KiB) · raw tract batch 1 p50: {:.0} µs",
        w.name,
        w.shape(),
        w.sample_len(),
        body.len() / 1024,
        us(raw_p50)
    );
    println!();
    println!("| step (in-process, one request) | runs | p50 µs | p99 µs | p50 vs raw tract |");
    println!("|---|---|---|---|---|");
    let row = |name: &str, s: &Stats| {
        println!(
            "| {name} | {} | {:.1} | {:.1} | {:.3}× |",
            s.count,
            us(s.pct(0.5)),
            us(s.pct(0.99)),
            us(s.pct(0.5)) / us(raw_p50).max(1e-9)
        );
    };
    row("REST body → tensors (number runs decoded from the text)", &rest_in);
    row("REST body → tensors (reference: one JSON value per number)", &rest_in_tree);
    row("tensors → REST body (predictions)", &rest_out);
    row("gRPC PredictRequest bytes → tensor (tensor_content)", &grpc_in_content);
    row("gRPC PredictRequest bytes → tensor (float_val)", &grpc_in_typed);
    row("tensors → TensorProto bytes (float_val, the default)", &grpc_out_typed);
    row("tensors → TensorProto bytes (tensor_content)", &grpc_out_content);
    Ok(())
}
