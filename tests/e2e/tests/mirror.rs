//! Shadow traffic in the real binary: copies of the requests version 1
//! answers run on a mirror version, are judged against the client's answer
//! and counted — an identical mirror always agrees, a perturbed one
//! disagrees on exactly the requests a computation here predicts, a NaN
//! one is counted, a slow one is shed over its bound — and no client ever
//! gets the mirror's answer.

use std::time::Duration;
use versa_e2e::{Choice, PATIENCE, ServerProcess, eventually, f32_tensor, metrics_text, spec};
use versa_proto::serving::PredictRequest;
use versa_server::config::Sampling;
use versa_testmodels as models;

/// Bounds no copy of the counting tests reaches.
const EXACT: &str = "max_in_flight: 1024 timeout_ms: 60000";

struct Mirrored {
    _root: tempfile::TempDir,
    server: ServerProcess,
}

/// Model `scaled`: version 1 (label `stable`, all of the split) and
/// version 2 (label `candidate`, none of it) from `candidate`; `mirror`
/// is the model's mirror block.
fn start(candidate: &[u8], mirror: &str, flags: &[&str]) -> Mirrored {
    // Tests that count every copy must not lose one to a bound: other tests
    // share the cores, and mirror threads only get what they leave idle.
    let mirror = format!("{mirror} {EXACT}");
    let root = tempfile::tempdir().expect("tempdir");
    let base = root.path().join("scaled");
    models::write_version(&base, 1, &models::scaled([1.0; 4])).expect("v1");
    models::write_version(&base, 2, candidate).expect("v2");
    let file = root.path().join("models.config");
    std::fs::write(
        &file,
        format!(
            r#"model_config_list {{
  config {{
    name: "scaled"
    base_path: "{}"
    model_platform: "onnx"
    model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "candidate" value: 2 }}
    traffic_split {{ key: "stable" value: 100 }}
    traffic_split {{ key: "candidate" value: 0 }}
    mirror {{ {mirror} }}
  }}
}}"#,
            base.display()
        ),
    )
    .expect("config");
    let mut args = vec![
        format!("--model_config_file={}", file.display()),
        "--max_mirror_in_flight=4096".to_owned(),
    ];
    args.extend(flags.iter().map(|f| (*f).to_owned()));
    Mirrored { _root: root, server: ServerProcess::start(&args) }
}

/// Deterministic inputs in [0, 1): `rows` rows of 4 per request.
fn inputs(request: usize, rows: usize) -> Vec<f32> {
    (0..rows * 4)
        .map(|i| {
            let mut h = (request as u64 * 1_000_003 + i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            h ^= h >> 29;
            (h % 10_000) as f32 / 10_000.0
        })
        .collect()
}

fn request(values: Vec<f32>) -> PredictRequest {
    let rows = (values.len() / 4) as i64;
    PredictRequest {
        model_spec: Some(spec("scaled", Choice::Latest)),
        inputs: [("x".to_owned(), f32_tensor(&[rows, 4], values))].into_iter().collect(),
        ..PredictRequest::default()
    }
}

/// The index of the largest value, the lowest on ties.
fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best
}

/// The sum of `versa_mirror_requests_total` samples of model `scaled` with
/// this result.
fn copies(metrics: &str, result: &str) -> u64 {
    metric_where(
        metrics,
        "versa_mirror_requests_total{",
        &[r#"model="scaled""#, &format!(r#"result="{result}""#)],
    )
}

/// The sum of the samples of `series` whose labels hold every one of `having`.
fn metric_where(metrics: &str, series: &str, having: &[&str]) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(series) && having.iter().all(|h| l.contains(h)))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Waits until `n` copies have an outcome, and returns the metrics then.
async fn settled(server: &ServerProcess, n: u64) -> String {
    eventually("every copy has an outcome", Duration::from_millis(50), || async {
        let text = metrics_text(server).await;
        (total(&text) >= n).then_some(text)
    })
    .await
}

/// Every outcome a copy can have.
const OUTCOMES: [&str; 6] = ["agree", "disagree", "error", "timeout", "shed", "unavailable"];

/// Sends requests of `rows` rows until a copy of that size runs, and
/// returns the metrics once every copy sent has an outcome. The first ones
/// find the mirror version without a plan for `rows` rows: they are counted
/// unavailable (never run, so never built on a nice-19 mirror thread) and
/// have the plan built in the background, so later copies run.
async fn warmed(server: &ServerProcess, rows: usize) -> String {
    let mut client = server.prediction_client().await;
    let started = tokio::time::Instant::now();
    for i in 0.. {
        assert!(started.elapsed() < PATIENCE, "no copy of {rows} rows ever ran");
        client.predict(request(inputs(1_000_000 + i, rows))).await.expect("predict");
        let text = settled(server, i as u64 + 1).await;
        if copies(&text, "agree") + copies(&text, "disagree") > 0 {
            assert!(copies(&text, "unavailable") > 0, "a copy ran before its plan was built");
            return text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    unreachable!()
}

/// Sends `n` requests of `rows` rows; checks every answer came from
/// version 1 and is x itself; returns the inputs sent.
async fn send(server: &ServerProcess, n: usize, rows: usize) -> Vec<Vec<f32>> {
    let mut client = server.prediction_client().await;
    let mut sent = Vec::with_capacity(n);
    for i in 0..n {
        let values = inputs(i, rows);
        let response = client.predict(request(values.clone())).await.expect("predict").into_inner();
        let spec = response.model_spec.expect("spec");
        assert_eq!(
            spec.version_choice,
            Some(versa_proto::serving::model_spec::VersionChoice::Version(1)),
            "a client got an answer from the mirror"
        );
        assert_eq!(response.outputs["y"].float_val, values, "version 1 answers x");
        sent.push(values);
    }
    sent
}

#[tokio::test]
async fn an_identical_mirror_agrees_on_every_copy_over_grpc_and_rest() {
    let m = start(&models::scaled([1.0; 4]), r#"label: "candidate" percent: 100"#, &[]);
    let before = warmed(&m.server, 2).await;
    let warm = total(&before);
    send(&m.server, 150, 2).await;
    let http = reqwest::Client::new();
    for i in 0..50 {
        let body = serde_json::json!({ "instances": [inputs(1000 + i, 1)] });
        let response = http
            .post(m.server.rest_url("/v1/models/scaled:predict"))
            .json(&body)
            .send()
            .await
            .expect("REST predict");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-versa-model-version"], "1");
    }
    let text = settled(&m.server, warm + 200).await;
    let since = |r: &str| copies(&text, r) - copies(&before, r);
    assert_eq!(since("agree"), 200, "{}", mirror_lines(&text));
    assert_eq!(copies(&text, "disagree") + copies(&text, "error") + copies(&text, "shed"), 0);
    // Every copy's latency ratio is measured (no batching here).
    let ratios =
        |t: &str| metric_where(t, "versa_mirror_latency_ratio_count{", &[r#"version="2""#]);
    assert_eq!(ratios(&text) - ratios(&before), 200);
    // The copies are the candidate's only requests: no client was answered by it.
    assert_eq!(
        metric_where(&text, "versa_requests_total{", &[r#"model="scaled""#, r#"version="2""#]),
        0
    );
}

#[tokio::test]
async fn a_perturbed_mirror_disagrees_exactly_where_the_argmax_moves() {
    let weights = [1.0, 1.0, 1.0, 1.3];
    let m = start(&models::scaled(weights), r#"version: 2 percent: 100"#, &[]);
    let before = warmed(&m.server, 3).await;
    let warm = total(&before);
    let sent = send(&m.server, 300, 3).await;
    let expected = sent
        .iter()
        .filter(|values| {
            values.chunks(4).any(|row| {
                let scaled: Vec<f32> = row.iter().zip(weights).map(|(x, w)| x * w).collect();
                argmax(row) != argmax(&scaled)
            })
        })
        .count() as u64;
    assert!(expected > 30 && expected < 270, "the test needs both outcomes: {expected}");
    let text = settled(&m.server, warm + 300).await;
    let since = |r: &str| copies(&text, r) - copies(&before, r);
    assert_eq!(since("disagree"), expected, "{}", mirror_lines(&text));
    assert_eq!(since("agree"), 300 - expected);
    // Largest differences: 0.3 × x, so every copy's lies in (0.01, 1].
    let small = |t: &str| {
        metric_where(
            t,
            "versa_mirror_output_difference_bucket{",
            &[r#"output="y""#, r#"le="0.01""#],
        )
    };
    let all =
        |t: &str| metric_where(t, "versa_mirror_output_difference_count{", &[r#"output="y""#]);
    let since = |f: &dyn Fn(&str) -> u64| f(&text) - f(&before);
    assert_eq!((since(&small), since(&all)), (0, 300));
    assert_eq!(metric_where(&text, "versa_mirror_non_finite_total{", &[]), 0);
}

#[tokio::test]
async fn a_mirror_answering_nan_is_counted_and_disagrees() {
    let m = start(&models::scaled([1.0, 1.0, 1.0, f32::NAN]), r#"version: 2 percent: 100"#, &[]);
    send(&m.server, 40, 1).await;
    let text = settled(&m.server, 40).await;
    assert_eq!(copies(&text, "disagree"), 40, "{}", mirror_lines(&text));
    assert_eq!(metric_where(&text, "versa_mirror_non_finite_total{", &[r#"version="2""#]), 40);
}

#[tokio::test]
async fn route_key_sampling_copies_the_same_keys_every_time() {
    let m = start(&models::scaled([1.0; 4]), r#"label: "candidate" percent: 30"#, &[]);
    let mut client = m.server.prediction_client().await;
    let keys: Vec<String> = (0..120).map(|i| format!("customer-{i}")).collect();
    for _ in 0..2 {
        for key in &keys {
            let mut r = tonic::Request::new(request(inputs(7, 1)));
            r.metadata_mut().insert("x-versa-route-key", key.parse().expect("ascii"));
            client.predict(r).await.expect("predict");
        }
    }
    let sampled = keys
        .iter()
        .filter(|k| versa_server::mirror::is_sampled(30, Sampling::RouteKey, Some(k), 0.0))
        .count() as u64;
    assert!(sampled > 10 && sampled < 70, "{sampled}");
    let text = settled(&m.server, 2 * sampled).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text_later = metrics_text(&m.server).await;
    assert_eq!(copies(&text, "agree"), 2 * sampled);
    assert_eq!(copies(&text_later, "agree"), 2 * sampled, "more copies than sampled keys");
}

#[tokio::test]
async fn a_mirror_over_its_bound_is_shed_and_never_delays_or_answers_a_client() {
    // Version 2 answers like version 1 (x + 1) at many times its cost.
    let root = tempfile::tempdir().expect("tempdir");
    let base = root.path().join("scaled");
    models::write_version(&base, 1, &models::versioned(1)).expect("v1");
    models::write_version(&base, 2, &models::slow(1, 160)).expect("v2");
    let file = root.path().join("models.config");
    std::fs::write(
        &file,
        format!(
            r#"model_config_list {{ config {{ name: "scaled" base_path: "{}" model_platform: "onnx"
    model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
    version_labels {{ key: "stable" value: 1 }}
    mirror {{ version: 2 percent: 100 max_in_flight: 2 }} }} }}"#,
            base.display()
        ),
    )
    .expect("config");
    let server = ServerProcess::start(&[
        format!("--model_config_file={}", file.display()),
        "--mirror_threads=1".to_owned(),
    ]);
    let started = tokio::time::Instant::now();
    let mut clients = Vec::new();
    for c in 0..4 {
        let server_client = server.prediction_client().await;
        clients.push(tokio::spawn(async move {
            let mut client = server_client;
            for i in 0..100 {
                let mut r = request(inputs(c * 1000 + i, 1));
                r.model_spec = Some(spec("scaled", Choice::Label("stable")));
                let response = client.predict(r).await.expect("no client request fails");
                let version = response.into_inner().model_spec.expect("spec").version_choice;
                assert_eq!(
                    version,
                    Some(versa_proto::serving::model_spec::VersionChoice::Version(1))
                );
            }
        }));
    }
    for c in clients {
        c.await.expect("client");
    }
    assert!(started.elapsed() < PATIENCE);
    let text = settled(&server, 400).await;
    let (agree, shed) = (copies(&text, "agree"), copies(&text, "shed"));
    let timeout = copies(&text, "timeout");
    assert!(shed > 0, "over max_in_flight copies are shed: {}", mirror_lines(&text));
    assert!(agree + timeout > 0, "some copies ran: {}", mirror_lines(&text));
    assert_eq!(agree + shed + timeout, 400, "{}", mirror_lines(&text));
    let in_flight = metric_where(&text, "versa_mirror_in_flight{", &[r#"model="scaled""#]);
    assert!(in_flight <= 2, "{in_flight} copies in flight over max_in_flight 2");
}

#[tokio::test]
async fn mirrors_that_cannot_work_are_refused_at_start() {
    for (mirror, extra, says) in [
        (
            "version: 2 percent: 10",
            "transition_policy: RESOURCE_PRESERVING",
            "needs two versions loaded at once",
        ),
        (r#"label: "beta" percent: 10"#, "", "label 'beta' is not one of its version_labels"),
    ] {
        let root = tempfile::tempdir().expect("tempdir");
        let base = root.path().join("m");
        models::write_version(&base, 1, &models::scaled([1.0; 4])).expect("v1");
        let file = root.path().join("models.config");
        std::fs::write(
            &file,
            format!(
                r#"model_config_list {{ config {{ name: "m" base_path: "{}" model_platform: "onnx"
                   {extra} mirror {{ {mirror} }} }} }}"#,
                base.display()
            ),
        )
        .expect("config");
        match ServerProcess::try_start(&[format!("--model_config_file={}", file.display())]) {
            versa_e2e::server::Started::Exited { code, log } => {
                assert_ne!(code, Some(0));
                assert!(log.iter().any(|l| l.contains(says)), "{says}: {log:?}");
            }
            versa_e2e::server::Started::Serving(_) => panic!("a server started with {mirror}"),
        }
    }
}

/// Copies with an outcome, all outcomes together.
fn total(metrics: &str) -> u64 {
    OUTCOMES.iter().map(|r| copies(metrics, r)).sum()
}

/// The mirror's series, for failure messages.
fn mirror_lines(metrics: &str) -> String {
    metrics
        .lines()
        .filter(|l| l.starts_with("versa_mirror_requests_total"))
        .collect::<Vec<_>>()
        .join("\n")
}
