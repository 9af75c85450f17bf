//! The REST API of the real binary: every path, both formats, every error.

mod common;

use common::start;
use serde_json::{Value, json};

async fn call(
    method: reqwest::Method,
    url: String,
    body: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let client = reqwest::Client::new();
    let mut request = client.request(method, url);
    if let Some(body) = body {
        request = request.body(body.to_owned());
    }
    let response = request.send().await.expect("HTTP request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.expect("body"))
}

async fn post(f: &common::Fixture, path: &str, body: &str) -> (u16, String) {
    let (status, headers, text) =
        call(reqwest::Method::POST, f.server.rest_url(path), Some(body)).await;
    if path.starts_with("/v1/") {
        assert_eq!(headers["content-type"], "application/json", "{path}");
    }
    (status, text)
}

async fn get(f: &common::Fixture, path: &str) -> (u16, String) {
    let (status, _, text) = call(reqwest::Method::GET, f.server.rest_url(path), None).await;
    (status, text)
}

fn parsed(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[tokio::test]
async fn predict_in_row_and_columnar_formats() {
    let f = start(&[]);
    let (status, body) =
        post(&f, "/v1/models/versioned:predict", r#"{"instances": [[0,0,0,0], [1,1,1,1]]}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(parsed(&body), json!({"predictions": [[3.0, 3.0, 3.0, 3.0], [4.0, 4.0, 4.0, 4.0]]}));

    let (status, body) =
        post(&f, "/v1/models/versioned/versions/1:predict", r#"{"inputs": [[0,0,0,0]]}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(parsed(&body), json!({"outputs": [[1.0, 1.0, 1.0, 1.0]]}));

    let (status, body) =
        post(&f, "/v1/models/versioned/labels/canary:predict", r#"{"inputs": [[0,0,0,0]]}"#).await;
    assert_eq!((status, parsed(&body)), (200, json!({"outputs": [[2.0, 2.0, 2.0, 2.0]]})));

    let (status, body) = post(
        &f,
        "/v1/models/pair:predict",
        r#"{"signature_name": "serving_default", "instances": [{"a": [1, 2, 3], "b": [2, 2, 2]}]}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        parsed(&body),
        json!({"predictions": [{"sum": [3.0, 4.0, 5.0], "product": [2.0, 4.0, 6.0]}]})
    );

    let (status, body) =
        post(&f, "/v1/models/pair:predict", r#"{"inputs": {"a": [[1, 2, 3]], "b": [[1, 1, 1]]}}"#)
            .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        parsed(&body),
        json!({"outputs": {"sum": [[2.0, 3.0, 4.0]], "product": [[1.0, 2.0, 3.0]]}})
    );
}

#[tokio::test]
async fn nan_and_infinity_pass_both_ways() {
    let f = start(&[]);
    let (status, body) =
        post(&f, "/v1/models/versioned:predict", r#"{"inputs": [[NaN, Infinity, -Infinity, 1]]}"#)
            .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, r#"{"outputs":[[NaN,Infinity,-Infinity,4.0]]}"#);
}

#[tokio::test]
async fn version_and_label_headers_tell_who_answered() {
    let f = start(&[]);
    let (status, headers, _) = call(
        reqwest::Method::POST,
        f.server.rest_url("/v1/models/versioned/labels/stable:predict"),
        Some(r#"{"instances": [[0,0,0,0]]}"#),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-versa-model-version"], "1");
    assert_eq!(headers["x-versa-model-label"], "stable");
}

#[tokio::test]
async fn status_and_metadata() {
    let f = start(&[]);
    let (status, body) = get(&f, "/v1/models/versioned").await;
    assert_eq!(status, 200);
    let v = parsed(&body);
    let versions: Vec<&str> = v["model_version_status"]
        .as_array()
        .expect("list")
        .iter()
        .map(|s| s["version"].as_str().expect("string"))
        .collect();
    assert_eq!(versions, ["3", "2", "1"]);
    assert_eq!(v["model_version_status"][0]["state"], "AVAILABLE");
    assert_eq!(
        v["model_version_status"][0]["status"],
        json!({"error_code": "OK", "error_message": ""})
    );

    let (status, body) = get(&f, "/v1/models/versioned/versions/2").await;
    assert_eq!(status, 200);
    assert_eq!(parsed(&body)["model_version_status"].as_array().expect("list").len(), 1);

    // A label in a status path is ignored: all versions are returned.
    let (status, body) = get(&f, "/v1/models/versioned/labels/stable").await;
    assert_eq!(status, 200);
    assert_eq!(parsed(&body)["model_version_status"].as_array().expect("list").len(), 3);

    let (status, body) = get(&f, "/v1/models/broken").await;
    assert_eq!(status, 200);
    let broken = parsed(&body);
    let v1 = broken["model_version_status"]
        .as_array()
        .expect("list")
        .iter()
        .find(|s| s["version"] == "1")
        .expect("v1");
    assert_eq!(v1["state"], "END");
    assert_eq!(v1["status"]["error_code"], "DATA_LOSS");

    let (status, body) = get(&f, "/v1/models/versioned/labels/canary/metadata").await;
    assert_eq!(status, 200);
    let m = parsed(&body);
    assert_eq!(m["model_spec"], json!({"name": "versioned", "signature_name": "", "version": "2"}));
    let sig = &m["metadata"]["signature_def"]["signature_def"]["serving_default"];
    assert_eq!(sig["method_name"], "tensorflow/serving/predict");
    assert_eq!(sig["inputs"]["x"]["dtype"], "DT_FLOAT");
    assert_eq!(sig["inputs"]["x"]["tensor_shape"]["dim"][0]["size"], "-1");
    assert_eq!(sig["inputs"]["x"]["tensor_shape"]["dim"][1]["size"], "4");
}

#[tokio::test]
async fn every_error_case_has_upstreams_status_and_body() {
    let f = start(&["--rest_api_enable_cors_support"]);
    let instance = r#"{"instances": [[0,0,0,0]]}"#;
    let cases: Vec<(reqwest::Method, &str, Option<&str>, u16, &str)> = vec![
        (
            reqwest::Method::POST,
            "/v1/models/nope:predict",
            Some(instance),
            404,
            "Servable not found for request: Latest(nope)",
        ),
        (
            reqwest::Method::POST,
            "/v1/models/versioned/versions/9:predict",
            Some(instance),
            404,
            "Servable not found for request: Specific(versioned, 9)",
        ),
        (
            reqwest::Method::POST,
            "/v1/models/versioned/labels/beta:predict",
            Some(instance),
            400,
            "Unrecognized servable version label: beta",
        ),
        (
            reqwest::Method::POST,
            "/v1/models/versioned:predict",
            Some(r#"{"signature_name": "other", "instances": [[0,0,0,0]]}"#),
            400,
            "Serving signature key \"other\" not found.",
        ),
        (
            reqwest::Method::POST,
            "/v1/models/versioned:predict",
            Some(""),
            400,
            "JSON Parse error: The document is empty",
        ),
        (
            reqwest::Method::POST,
            "/v1/models/versioned:predict",
            Some("{"),
            400,
            "JSON Parse error: Missing a name for object member at offset 1",
        ),
        (
            reqwest::Method::POST,
            "/v1/models/versioned:predict",
            Some(r#"{"x": 1}"#),
            400,
            "Missing 'inputs' or 'instances' key",
        ),
        (
            reqwest::Method::POST,
            "/v1/models/versioned:predict",
            Some(r#"{"inputs": [[0]], "instances": [[0]]}"#),
            400,
            "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist",
        ),
        (
            reqwest::Method::POST,
            "/v1/models/versioned:predict",
            Some(r#"{"inputs": [[0, 0, 0]]}"#),
            400,
            "input 'x' has shape [1, 3] but the signature expects [-1, 4] (-1: any size)",
        ),
        (
            reqwest::Method::POST,
            "/v1/models/versioned:predict",
            Some(r#"{"inputs": [["a", 0, 0, 0]]}"#),
            400,
            "JSON Value: \"a\" Type: String is not of expected type: float",
        ),
        (
            reqwest::Method::POST,
            "/v1/models/pair:predict",
            Some(instance),
            400,
            "instances is a plain list, but expecting list of objects as multiple input tensors required as per tensorinfo_map",
        ),
        (reqwest::Method::POST, "/v1/models/versioned:classify", Some("{}"), 501, ""),
        (
            reqwest::Method::POST,
            "/v1/models/versioned",
            Some(instance),
            400,
            "Malformed request: POST /v1/models/versioned",
        ),
        (reqwest::Method::GET, "/v1/models", None, 400, "Missing model name in request."),
        (
            reqwest::Method::GET,
            "/v1/models/versioned/versions/x",
            None,
            400,
            "Malformed request: GET /v1/models/versioned/versions/x",
        ),
        (
            reqwest::Method::GET,
            "/v1/models/nope",
            None,
            404,
            "Could not find any versions of model nope",
        ),
        (
            reqwest::Method::GET,
            "/v1/models/versioned/versions/8",
            None,
            404,
            "Could not find version 8 of model versioned",
        ),
        (
            reqwest::Method::GET,
            "/v1/models/nope/metadata",
            None,
            404,
            "Servable not found for request: Latest(nope)",
        ),
        (
            reqwest::Method::DELETE,
            "/v1/models/versioned",
            None,
            400,
            "Malformed request: DELETE /v1/models/versioned",
        ),
        (
            reqwest::Method::OPTIONS,
            "/v1/models/versioned:predict",
            None,
            400,
            "Origin header is missing in CORS preflight",
        ),
    ];
    for (method, path, body, status, message) in cases {
        let (got_status, headers, text) = call(method.clone(), f.server.rest_url(path), body).await;
        assert_eq!(got_status, status, "{method} {path}: {text}");
        assert_eq!(headers["content-type"], "application/json", "{method} {path}");
        let error = parsed(&text);
        let got = error["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path}: no error in {text}"));
        if !message.is_empty() {
            assert_eq!(got, message, "{method} {path}");
        }
        assert_eq!(headers["access-control-allow-origin"], "*", "CORS headers on {method} {path}");
    }
}

#[tokio::test]
async fn paths_are_case_insensitive_and_names_url_decoded() {
    let f = start(&[]);
    let (status, body) =
        post(&f, "/V1/MODELS/versioned/LABELS/stable:PREDICT", r#"{"instances": [[0,0,0,0]]}"#)
            .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) =
        post(&f, "/v1/models/version%65d:predict", r#"{"instances": [[0,0,0,0]]}"#).await;
    assert_eq!(status, 200);
}

/// Bodies from 256 KiB up are decoded on the inference pool, not on the
/// async worker: same answers, same errors, same headers.
#[tokio::test]
async fn large_bodies_answer_like_small_ones() {
    let f = start(&[]);
    let rows = 20_000;
    let instances: Vec<String> = (0..rows).map(|i| format!("[{i},{i},{i},{i}]")).collect();
    let body = format!(r#"{{"instances": [{}]}}"#, instances.join(", "));
    assert!(body.len() > 256 * 1024, "{} bytes", body.len());
    let (status, headers, text) = call(
        reqwest::Method::POST,
        f.server.rest_url("/v1/models/versioned/labels/canary:predict"),
        Some(&body),
    )
    .await;
    assert_eq!(status, 200, "{}", &text[..text.len().min(300)]);
    assert_eq!(headers["x-versa-model-version"], "2");
    let predictions = parsed(&text)["predictions"].as_array().expect("predictions").clone();
    assert_eq!(predictions.len(), rows);
    for (i, row) in predictions.iter().enumerate() {
        let expected = (i + 2) as f64;
        assert_eq!(row, &json!([expected, expected, expected, expected]), "row {i}");
    }
    // An error in the last row of a large body reads as in a small one.
    let bad = body.replace(&format!("[{0},{0},{0},{0}]]", rows - 1), r#"[1,2,3,"x"]]"#);
    assert_ne!(bad, body);
    let (status, text) = post(&f, "/v1/models/versioned:predict", &bad).await;
    assert_eq!(status, 400, "{text}");
    assert_eq!(
        parsed(&text)["error"],
        "JSON Value: \"x\" Type: String is not of expected type: float",
        "{text}"
    );
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let f = start(&["--rest_api_max_body_bytes=1000"]);
    let big = format!(r#"{{"inputs": [[{}]]}}"#, vec!["0"; 2000].join(","));
    let (status, body) = post(&f, "/v1/models/versioned:predict", &big).await;
    // 413, not 429: retrying the same body can never succeed.
    assert_eq!(status, 413, "{body}");
    let error = parsed(&body)["error"].as_str().expect("error").to_owned();
    assert!(error.contains("larger than 1000 bytes (--rest_api_max_body_bytes)"), "{error}");
}

#[tokio::test]
async fn liveness_readiness_and_metrics() {
    let root = tempfile::tempdir().expect("tempdir");
    versa_testmodels::write_example_repository(root.path()).expect("models");
    let monitoring = root.path().join("monitoring.config");
    std::fs::write(
        &monitoring,
        "prometheus_config { enable: true path: \"/monitoring/prometheus/metrics\" }",
    )
    .expect("write");
    let f = common::Fixture {
        server: versa_e2e::ServerProcess::start(&[
            format!("--model_base_path={}/versioned", root.path().display()),
            "--model_name=versioned".into(),
            format!("--monitoring_config_file={}", monitoring.display()),
        ]),
        root,
    };
    assert_eq!(get(&f, "/live").await.0, 200);
    assert_eq!(get(&f, "/ready").await.0, 200);
    let (status, _) =
        post(&f, "/v1/models/versioned:predict", r#"{"instances": [[0,0,0,0]]}"#).await;
    assert_eq!(status, 200);
    let (status, _) =
        post(&f, "/v1/models/versioned/versions/1:predict", r#"{"instances": [[0,0,0,0]]}"#).await;
    assert_eq!(status, 404, "single-model mode serves only the latest version");
    let (status, text) = get(&f, "/monitoring/prometheus/metrics").await;
    assert_eq!(status, 200);
    for expected in [
        ":tensorflow:serving:request_count{model_name=\"versioned\",status=\"OK\"} 1",
        ":tensorflow:serving:request_count{model_name=\"versioned\",status=\"NOT_FOUND\"} 1",
        "# TYPE :tensorflow:serving:request_latency histogram",
        ":tensorflow:cc:saved_model:load_attempt_count{",
        "versa_model_version_state{model=\"versioned\",version=\"3\"} 30",
        "versa_requests_total{entrypoint=\"REST\",label=\"\",model=\"versioned\",split=\"false\",status=\"OK\",version=\"3\"} 1",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert_eq!(get(&f, "/metrics").await.0, 200);
}
