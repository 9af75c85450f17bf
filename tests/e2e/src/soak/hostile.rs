//! The soak's hostile clients, one kind each.

use super::{Draw, Shared, Target, WIDTH, grpc_client, note, unexpected, valid_request};
use crate::spec;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tonic::Code;
use versa_proto::serving::PredictRequest;
use versa_proto::tensorflow::{DataType, TensorProto, TensorShapeProto, tensor_shape_proto};

/// One hostile client of `kind`: 0 malformed, 1 oversized, 2 cancelled,
/// 3 slow, 4 invented names, 5 connection churn.
pub(super) async fn client(
    target: Target,
    kind: u8,
    tally: Shared,
    over: Arc<AtomicBool>,
    all: Arc<AtomicBool>,
    seed: u64,
) {
    let mut draw = Draw(seed | 1);
    let http = reqwest::Client::new();
    let rest = |path: &str| format!("http://127.0.0.1:{}{path}", target.rest_port);
    let mut grpc = grpc_client(target.grpc_port).await;
    while !all.load(Ordering::Relaxed) {
        if over.load(Ordering::Relaxed) {
            // Below capacity the hostile mix goes on, slower.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        match kind {
            0 => {
                let bodies = [
                    "{\"inputs\": [[1, 2",
                    "{\"inputs\": [[\"a\", \"b\"]]}",
                    "{\"inputs\": [[1, 2, 3]]}",
                    "{\"instances\": [{\"nope\": [1]}]}",
                    "[]",
                    "{\"inputs\": {\"b64\": 7}}",
                ];
                let body = bodies[draw.next(bodies.len() as u64) as usize];
                let class = "malformed";
                match http
                    .post(rest(&format!("/v1/models/{}:predict", target.model)))
                    .body(body)
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 400 => note(&tally, class, "refused"),
                    Ok(r) if r.status() == 429 => note(&tally, class, "shed"),
                    Ok(r) => unexpected(&tally, class, format!("{} for {body}", r.status())),
                    Err(e) => unexpected(&tally, class, e.to_string()),
                }
            }
            1 => {
                let class = "oversized";
                if draw.next(2) == 0 {
                    let bomb = TensorProto {
                        dtype: DataType::DtFloat as i32,
                        tensor_shape: Some(TensorShapeProto {
                            dim: [1i64 << 26, WIDTH as i64]
                                .iter()
                                .map(|&size| tensor_shape_proto::Dim { size, name: String::new() })
                                .collect(),
                            unknown_rank: false,
                        }),
                        float_val: vec![1.0],
                        ..TensorProto::default()
                    };
                    let request = PredictRequest {
                        model_spec: Some(spec(target.model, crate::Choice::Latest)),
                        inputs: [("input".to_owned(), bomb)].into(),
                        ..PredictRequest::default()
                    };
                    if let Some(client) = grpc.as_mut() {
                        match client.predict(request).await {
                            Err(e) if e.code() == Code::InvalidArgument => {
                                note(&tally, class, "refused")
                            }
                            Err(e) if e.code() == Code::ResourceExhausted => {
                                note(&tally, class, "shed")
                            }
                            other => unexpected(&tally, class, format!("{:?}", other.map(|_| ()))),
                        }
                    }
                } else {
                    let flood = format!("{{\"instances\": [{}]}}", vec!["{}"; 400_000].join(","));
                    match http
                        .post(rest(&format!("/v1/models/{}:predict", target.model)))
                        .body(flood)
                        .send()
                        .await
                    {
                        Ok(r) if r.status() == 400 || r.status() == 413 => {
                            note(&tally, class, "refused")
                        }
                        Ok(r) if r.status() == 429 => note(&tally, class, "shed"),
                        Ok(r) => unexpected(&tally, class, r.status().to_string()),
                        Err(e) => unexpected(&tally, class, e.to_string()),
                    }
                }
            }
            2 => {
                let class = "cancelled";
                let patience = Duration::from_micros(200 + draw.next(3000));
                if let Some(client) = grpc.as_mut() {
                    let mut request = tonic::Request::new(valid_request(target.model, 4));
                    request.set_timeout(patience);
                    match client.predict(request).await {
                        Ok(_) => note(&tally, class, "ok"),
                        Err(e) if matches!(e.code(), Code::DeadlineExceeded | Code::Cancelled) => {
                            note(&tally, class, "cancelled")
                        }
                        Err(e) if e.code() == Code::ResourceExhausted => {
                            note(&tally, class, "shed")
                        }
                        Err(e) => {
                            unexpected(&tally, class, format!("{:?}: {}", e.code(), e.message()))
                        }
                    }
                }
                // And a REST call given up half-way by dropping it.
                let call = http.post(rest(&format!("/v1/models/{}:predict", target.model))).body(
                    format!("{{\"inputs\": {}}}", serde_json::json!(vec![vec![0.25; WIDTH]; 4])),
                );
                match tokio::time::timeout(patience, call.send()).await {
                    Err(_) => note(&tally, class, "cancelled"),
                    Ok(Ok(r)) if r.status() == 200 || r.status() == 429 => {
                        note(&tally, class, "ok")
                    }
                    Ok(other) => unexpected(&tally, class, format!("{other:?}")),
                }
            }
            3 => {
                // Headers sent a byte at a time, never finished: cut off by the server.
                use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                let class = "slow";
                let Ok(mut stream) =
                    tokio::net::TcpStream::connect(("127.0.0.1", target.rest_port)).await
                else {
                    unexpected(&tally, class, "cannot connect".into());
                    continue;
                };
                let opened = Instant::now();
                let mut cut_off = false;
                for byte in b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nX-Slow: "
                    .iter()
                    .cycle()
                    .take(400)
                {
                    if stream.write_all(&[*byte]).await.is_err() {
                        cut_off = true;
                        break;
                    }
                    let mut buf = [0u8; 64];
                    match tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buf))
                        .await
                    {
                        Ok(Ok(0)) | Ok(Err(_)) => {
                            cut_off = true;
                            break;
                        }
                        Ok(Ok(_)) => {
                            cut_off = true; // answered (408) and closing
                            break;
                        }
                        Err(_) => {}
                    }
                    if all.load(Ordering::Relaxed) {
                        break;
                    }
                }
                if cut_off && opened.elapsed() < Duration::from_secs(10) {
                    note(&tally, class, "cut off");
                } else if !all.load(Ordering::Relaxed) {
                    unexpected(&tally, class, format!("held for {:?}", opened.elapsed()));
                }
            }
            4 => {
                let class = "invented-name";
                let name = format!("nosuch{}", draw.next(1 << 30));
                match http
                    .post(rest(&format!("/v1/models/{name}:predict")))
                    .body("{\"inputs\": [[0]]}")
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 404 => note(&tally, class, "refused"),
                    Ok(r) => unexpected(&tally, class, r.status().to_string()),
                    Err(e) => unexpected(&tally, class, e.to_string()),
                }
            }
            _ => {
                let class = "connection-churn";
                match tokio::net::TcpStream::connect(("127.0.0.1", target.grpc_port)).await {
                    Ok(stream) => {
                        drop(stream);
                        note(&tally, class, "opened and dropped");
                    }
                    Err(e) => unexpected(&tally, class, e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}
