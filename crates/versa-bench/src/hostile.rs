//! `--scenario hostile`: one request of each hostile class against a
//! server, and what it cost: the answer, the time to it, and how far the
//! server's resident memory peaked above where it was (the peak mark is
//! reset before each). Run it against any build (`--server`), so a change
//! can be compared with the code before it.

use crate::scenarios::Setup;
use crate::server::{Memory, Server, ServerOptions};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use versa_proto::serving::prediction_service_client::PredictionServiceClient;
use versa_proto::serving::{ModelSpec, PredictRequest};
use versa_proto::tensorflow::{DataType, TensorProto, TensorShapeProto, tensor_shape_proto};

fn shape(dims: &[i64]) -> Option<TensorShapeProto> {
    Some(TensorShapeProto {
        dim: dims
            .iter()
            .map(|&size| tensor_shape_proto::Dim { size, name: String::new() })
            .collect(),
        unknown_rank: false,
    })
}

fn predict(model: &str, input: &str, tensor: TensorProto) -> Box<PredictRequest> {
    Box::new(PredictRequest {
        model_spec: Some(ModelSpec { name: model.into(), ..ModelSpec::default() }),
        inputs: [(input.to_owned(), tensor)].into(),
        ..PredictRequest::default()
    })
}

/// A class of hostile request.
enum Attack {
    Grpc(&'static str, Box<PredictRequest>),
    Rest(&'static str, String),
    Raw(&'static str, Vec<u8>),
}

fn attacks() -> Vec<Attack> {
    let floats = TensorProto {
        dtype: DataType::DtFloat as i32,
        tensor_shape: shape(&[67_108_864, 4]),
        float_val: vec![1.0],
        ..TensorProto::default()
    };
    let strings = TensorProto {
        dtype: DataType::DtString as i32,
        tensor_shape: shape(&[268_435_456]),
        string_val: vec![b"boom".to_vec()],
        ..TensorProto::default()
    };
    let empties = TensorProto {
        dtype: DataType::DtString as i32,
        tensor_shape: shape(&[4_000_000]),
        string_val: vec![Vec::new(); 4_000_000],
        ..TensorProto::default()
    };
    let map_flood = Box::new(PredictRequest {
        model_spec: Some(ModelSpec { name: "versioned".into(), ..ModelSpec::default() }),
        inputs: (0..300_000).map(|i| (format!("k{i}"), TensorProto::default())).collect(),
        ..PredictRequest::default()
    });
    vec![
        Attack::Grpc("gRPC: one float broadcast to [2^26, 4] (1 GiB), 40 B", predict("versioned", "x", floats)),
        Attack::Grpc("gRPC: one string broadcast to 2^28 strings", predict("strings", "text", strings)),
        Attack::Grpc("gRPC: 4 M empty string_val (8 MB on the wire)", predict("strings", "text", empties)),
        Attack::Grpc("gRPC: 300 k map entries (2.4 MB on the wire)", map_flood),
        Attack::Rest("REST: 10 M empty objects (30 MB body)", format!("{{\"instances\": [{}]}}", vec!["{}"; 10_000_000].join(","))),
        Attack::Rest("REST: 5 M rows of 4 numbers (50 MB body)", format!("{{\"inputs\": [{}]}}", vec!["[0,0,0,0]"; 5_000_000].join(","))),
        Attack::Raw(
            "REST: unknown model, 50 MB declared, 13 B sent",
            b"POST /v1/models/nosuch:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\nConnection: close\r\n\r\n{\"instances\":".to_vec(),
        ),
        Attack::Raw(
            "REST: a raw non-ASCII byte in the path",
            b"POST /v1/models/m/versions\xc3\xa9 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}".to_vec(),
        ),
    ]
}

fn head(text: &str) -> String {
    let first = text.lines().next().unwrap_or_default();
    let mut cut = first.len().min(90);
    while !first.is_char_boundary(cut) {
        cut -= 1;
    }
    first[..cut].replace('|', "/")
}

async fn attack(server: &Server, attack: Attack) -> anyhow::Result<(&'static str, String)> {
    Ok(match attack {
        Attack::Grpc(name, request) => {
            let mut client = PredictionServiceClient::connect(server.grpc_url())
                .await?
                .max_encoding_message_size(usize::MAX)
                .max_decoding_message_size(usize::MAX);
            let answer = match client.predict(*request).await {
                Ok(_) => "OK".to_owned(),
                Err(e) => format!("{:?}: {}", e.code(), head(e.message())),
            };
            (name, answer)
        }
        Attack::Rest(name, body) => {
            let url = format!("http://127.0.0.1:{}/v1/models/versioned:predict", server.rest);
            let answer = match reqwest::Client::new().post(url).body(body).send().await {
                Ok(r) => format!(
                    "{}: {}",
                    r.status().as_u16(),
                    head(&r.text().await.unwrap_or_default())
                ),
                Err(e) => format!("no answer: {e}"),
            };
            (name, answer)
        }
        Attack::Raw(name, bytes) => {
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", server.rest)).await?;
            stream.write_all(&bytes).await?;
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut answer))
                .await;
            let text = String::from_utf8_lossy(&answer);
            let answer = if text.is_empty() {
                "connection closed, no answer".to_owned()
            } else {
                head(&text)
            };
            (name, answer)
        }
    })
}

pub(crate) async fn hostile(setup: &Setup) -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    versa_testmodels::write_example_repository(root.path())?;
    let config = root.path().join("models.config");
    let model = |name: &str| {
        format!(
            "config {{ name: \"{name}\" base_path: \"{}/{name}\" model_platform: \"onnx\" }}",
            root.path().display()
        )
    };
    std::fs::write(
        &config,
        format!("model_config_list {{ {} {} }}", model("versioned"), model("strings")),
    )?;
    let mut extra = vec![format!("--model_config_file={}", config.display())];
    extra.extend(setup.server_flags.iter().cloned());
    let server = Server::start(
        &setup.server,
        &root.path().join("versioned"),
        &ServerOptions { extra, ..ServerOptions::default() },
    )?;
    println!("server: {}", setup.server.display());
    println!();
    println!("| request | answer | ms | peak RSS above before, MiB | still serving |");
    println!("|---|---|---|---|---|");
    for a in attacks() {
        let before = Memory::of(server.pid())?;
        server.reset_peak()?;
        let started = Instant::now();
        let (name, answer) = attack(&server, a).await?;
        let took = started.elapsed();
        let after = Memory::of(server.pid());
        let live = reqwest::get(format!("http://127.0.0.1:{}/live", server.rest)).await;
        let alive = after.is_ok() && live.is_ok_and(|r| r.status() == 200);
        let peak = after
            .map(|m| m.peak.saturating_sub(before.rss) as f64 / f64::from(1 << 20))
            .unwrap_or(f64::NAN);
        println!(
            "| {name} | {answer} | {} | {peak:.1} | {} |",
            took.as_millis(),
            if alive { "yes" } else { "NO" }
        );
        if !alive {
            anyhow::bail!("the server did not survive: {name}");
        }
    }
    Ok(())
}
