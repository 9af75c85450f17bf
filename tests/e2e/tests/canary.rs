//! Weighted canary routing in the real binary: shares, sticky keys,
//! monotone weight changes, reloads under traffic, invalid splits.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tonic::Code;
use versa_e2e::{Choice, ServerProcess, versioned_request};
use versa_proto::serving::ReloadConfigRequest;
use versa_testmodels as models;

struct Canary {
    root: tempfile::TempDir,
    server: ServerProcess,
}

fn config(root: &std::path::Path, stable: u32, canary: u32) -> String {
    format!(
        r#"model_config_list {{
  config {{
    name: "versioned"
    base_path: "{}/versioned"
    model_platform: "onnx"
    model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 2 }}
    traffic_split {{ key: "stable" value: {stable} }}
    traffic_split {{ key: "canary" value: {canary} }}
  }}
}}"#,
        root.display()
    )
}

fn start(stable: u32, canary: u32) -> Canary {
    let root = tempfile::tempdir().expect("tempdir");
    for v in [1, 2] {
        models::write_version(&root.path().join("versioned"), v, &models::versioned(v))
            .expect("model");
    }
    let file = root.path().join("models.config");
    std::fs::write(&file, config(root.path(), stable, canary)).expect("config");
    let server = ServerProcess::start(&[format!("--model_config_file={}", file.display())]);
    Canary { root, server }
}

fn reload(c: &Canary, stable: u32, canary: u32) -> ReloadConfigRequest {
    ReloadConfigRequest {
        config: Some(
            versa_server::config::parse_text(
                "tensorflow.serving.ModelServerConfig",
                &config(c.root.path(), stable, canary),
            )
            .expect("valid"),
        ),
        metric_names: vec![],
    }
}

/// One unversioned Predict; returns the label that answered (from response
/// metadata) after checking it against the version in the output.
async fn predict_label(
    client: &mut versa_e2e::PredictionClient,
    key: Option<&str>,
) -> Result<String, tonic::Status> {
    let mut request = tonic::Request::new(versioned_request("versioned", Choice::Latest));
    if let Some(key) = key {
        request.metadata_mut().insert("x-versa-route-key", key.parse().expect("ascii key"));
    }
    let response = client.predict(request).await?;
    let label = response
        .metadata()
        .get("x-versa-model-label")
        .expect("label header")
        .to_str()
        .expect("ascii")
        .to_owned();
    let version: i64 = response
        .metadata()
        .get("x-versa-model-version")
        .expect("version header")
        .to_str()
        .expect("ascii")
        .parse()
        .expect("number");
    let value = response.into_inner().outputs["y"].float_val[0];
    assert_eq!(value, version as f32, "the output reveals the version that answered");
    assert_eq!(version, if label == "stable" { 1 } else { 2 });
    Ok(label)
}

async fn key_map(
    client: &versa_e2e::PredictionClient,
    keys: &[String],
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for key in keys {
        let mut c = client.clone();
        out.insert(key.clone(), predict_label(&mut c, Some(key)).await.expect("predict"));
    }
    out
}

#[tokio::test]
async fn unkeyed_shares_follow_the_weights() {
    let c = start(90, 10);
    let client = c.server.prediction_client().await;
    let n = 10_000;
    let tasks = 8;
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let mut client = client.clone();
        handles.push(tokio::spawn(async move {
            let mut canary = 0u32;
            for _ in 0..n / tasks {
                if predict_label(&mut client, None).await.expect("predict") == "canary" {
                    canary += 1;
                }
            }
            canary
        }));
    }
    let mut canary = 0;
    for h in handles {
        canary += h.await.expect("task");
    }
    let share = f64::from(canary) * 100.0 / f64::from(n);
    eprintln!("canary share over {n} unkeyed requests at 10%: {share:.2}%");
    assert!((share - 10.0).abs() <= 2.0, "canary share {share:.2}% not within 2 points of 10%");
}

#[tokio::test]
async fn keys_are_sticky_and_raising_the_canary_only_moves_stable_keys() {
    let c = start(90, 10);
    let mut client = c.server.prediction_client().await;
    let first = predict_label(&mut client, Some("user-42")).await.expect("predict");
    for _ in 0..1000 {
        assert_eq!(predict_label(&mut client, Some("user-42")).await.expect("predict"), first);
    }
    // The same over REST with the header.
    let http = reqwest::Client::new();
    for _ in 0..50 {
        let response = http
            .post(c.server.rest_url("/v1/models/versioned:predict"))
            .header("x-versa-route-key", "user-42")
            .body(r#"{"instances": [[0,0,0,0]]}"#)
            .send()
            .await
            .expect("REST");
        assert_eq!(response.headers()["x-versa-model-label"], first.as_str());
    }

    let keys: Vec<String> = (0..1000).map(|i| format!("user-{i}")).collect();
    let before = key_map(&client, &keys).await;
    let mut models = c.server.model_client().await;
    models.handle_reload_config_request(reload(&c, 50, 50)).await.expect("reload 50/50");
    let after = key_map(&client, &keys).await;
    let moved = keys.iter().filter(|k| before[*k] != after[*k]).count();
    for k in &keys {
        if before[k] == "canary" {
            assert_eq!(after[k], "canary", "{k} moved back to stable");
        }
    }
    let canary_before = before.values().filter(|l| *l == "canary").count();
    let canary_after = after.values().filter(|l| *l == "canary").count();
    eprintln!(
        "keys on canary: {canary_before}/1000 at 10%, {canary_after}/1000 at 50%; {moved} moved, all stable→canary"
    );
    assert!(moved > 250, "raising the weight moved keys: {moved}");
}

#[tokio::test]
async fn weight_changes_under_traffic_fail_no_request() {
    let c = start(90, 10);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut handles = Vec::new();
    for i in 0..4 {
        let mut client = c.server.prediction_client().await;
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        handles.push(tokio::spawn(async move {
            for n in 0..20_000u32 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let key = (i % 2 == 0).then(|| format!("k{n}"));
                match predict_label(&mut client, key.as_deref()).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    let mut models = c.server.model_client().await;
    for (stable, canary) in [(50, 50), (0, 100), (100, 0), (75, 25), (10, 90), (90, 10)] {
        models.handle_reload_config_request(reload(&c, stable, canary)).await.expect("reload");
        tokio::time::sleep(std::time::Duration::from_millis(150)).await; // let traffic flow at this weight
    }
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.await.expect("task");
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("weight changes under traffic: {ok} ok, {failed} failed");
    assert!(ok > 100);
    assert_eq!(failed, 0);
}

#[tokio::test]
async fn invalid_splits_are_rejected_and_the_running_split_stays() {
    let c = start(0, 100);
    let mut models = c.server.model_client().await;
    let mut client = c.server.prediction_client().await;
    for (stable, canary) in [(50, 40), (80, 30)] {
        let err = models
            .handle_reload_config_request(reload(&c, stable, canary))
            .await
            .expect_err("bad weights");
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("must sum to 100"), "{}", err.message());
    }
    let unknown = config(c.root.path(), 0, 100)
        .replace(r#"traffic_split { key: "canary""#, r#"traffic_split { key: "beta""#);
    let request = ReloadConfigRequest {
        config: Some(
            versa_server::config::parse_text("tensorflow.serving.ModelServerConfig", &unknown)
                .expect("parses"),
        ),
        metric_names: vec![],
    };
    let err = models.handle_reload_config_request(request).await.expect_err("unknown label");
    assert!(err.message().contains("names label 'beta'"), "{}", err.message());
    for _ in 0..50 {
        assert_eq!(
            predict_label(&mut client, None).await.expect("predict"),
            "canary",
            "100% canary still in force"
        );
    }
    // Naming a version or label bypasses the split.
    let direct =
        client.predict(versioned_request("versioned", Choice::Version(1))).await.expect("v1");
    assert_eq!(direct.into_inner().outputs["y"].float_val[0], 1.0);
}

#[tokio::test]
async fn a_canary_without_an_available_version_falls_back_and_is_counted() {
    let c = start(0, 100);
    let mut client = c.server.prediction_client().await;
    assert_eq!(predict_label(&mut client, None).await.expect("predict"), "canary");
    // Version 2 disappears from disk: the source stops aspiring it and it unloads.
    std::fs::remove_dir_all(c.root.path().join("versioned/2")).expect("remove v2");
    versa_e2e::eventually(
        "canary falls back to stable",
        std::time::Duration::from_millis(100),
        || {
            let mut client = client.clone();
            async move {
                (predict_label(&mut client, Some("any")).await.ok()? == "stable").then_some(())
            }
        },
    )
    .await;
    let metrics = reqwest::get(c.server.rest_url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with(
                "versa_split_fallbacks_total{from=\"canary\",model=\"versioned\",to=\"stable\"}",
            )
        })
        .unwrap_or_else(|| panic!("fallback counter missing:\n{metrics}"));
    let count: f64 = line.rsplit(' ').next().expect("value").parse().expect("number");
    assert!(count >= 1.0, "{line}");
    assert!(metrics.contains("versa_routed_by_split_total{label=\"canary\",model=\"versioned\"}"));
}
