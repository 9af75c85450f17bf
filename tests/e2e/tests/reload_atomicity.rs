//! A reload whose caller goes away mid-way is applied whole or not at all:
//! the models and the labels in force always come from one config.

mod common;

use common::{start, version_of};
use std::time::Duration;
use versa_e2e::{Choice, versioned_request};
use versa_proto::serving::ReloadConfigRequest;

fn config(root: &str, with_ints: bool) -> ReloadConfigRequest {
    let stable = if with_ints { 2 } else { 1 };
    let ints = if with_ints {
        format!("config {{ name: \"ints\" base_path: \"{root}/ints\" model_platform: \"onnx\" }}")
    } else {
        String::new()
    };
    let text = format!(
        "model_config_list {{ config {{ name: \"versioned\" base_path: \"{root}/versioned\" model_platform: \"onnx\" model_version_policy {{ all {{}} }} version_labels {{ key: \"stable\" value: {stable} }} }} {ints} }}"
    );
    ReloadConfigRequest {
        config: Some(
            versa_server::config::parse_text("tensorflow.serving.ModelServerConfig", &text)
                .expect("valid config"),
        ),
        metric_names: Vec::new(),
    }
}

#[tokio::test]
async fn a_reload_cancelled_by_its_caller_is_applied_whole_or_not_at_all() {
    let f = start(&[]);
    let root = f.root.path().display().to_string();
    // Entries that are not versions, so that listing the base path — done
    // while a reload is applied — takes long enough for a caller to go
    // away in the middle of it.
    for i in 0..10_000 {
        std::fs::write(f.path(&format!("versioned/not-a-version-{i}")), b"").expect("write");
    }
    let mut predict = f.server.prediction_client().await;
    for attempt in 0..16u64 {
        let with_ints = attempt % 2 == 0;
        let mut models = f.server.model_client().await;
        // The caller gives up after 0–9 ms, while the reload is under way.
        let request = config(&root, with_ints);
        let _ = tokio::time::timeout(
            Duration::from_micros(attempt * 600),
            models.handle_reload_config_request(request),
        )
        .await;
        drop(models);
        // Whatever was committed has finished by now.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let stable = predict
            .predict(versioned_request("versioned", Choice::Label("stable")))
            .await
            .map(|r| version_of(&r.into_inner()));
        let ints_known = f
            .server
            .model_client()
            .await
            .get_model_status(versa_proto::serving::GetModelStatusRequest {
                model_spec: Some(versa_e2e::spec("ints", Choice::Latest)),
            })
            .await
            .map(|s| {
                s.into_inner().model_version_status.iter().any(|v| {
                    v.state != versa_proto::serving::model_version_status::State::End as i32
                })
            })
            .unwrap_or(false);
        let stable = stable.expect("the stable label always resolves");
        // The config with `ints` labels 2 stable; the one without, 1.
        assert_eq!(
            stable == 2.0,
            ints_known,
            "attempt {attempt}: stable → {stable} while ints is {}: half a config applied",
            if ints_known { "served" } else { "not served" }
        );
    }
}

#[tokio::test]
async fn reloads_from_a_replaced_operator_leader_are_refused() {
    let f = start(&[]);
    let root = f.root.path().display().to_string();
    let mut models = f.server.model_client().await;
    let with_epoch = |with_ints: bool, epoch: &str| {
        let mut request = tonic::Request::new(config(&root, with_ints));
        request.metadata_mut().insert("x-versa-leader-epoch", epoch.parse().expect("ascii"));
        request
    };
    models.handle_reload_config_request(with_epoch(false, "5")).await.expect("epoch 5");
    let stale = models.handle_reload_config_request(with_epoch(true, "4")).await;
    let status = stale.expect_err("an older leader is refused");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(status.message().contains("epoch 4; a leader of epoch 5"), "{}", status.message());
    let mut predict = f.server.prediction_client().await;
    let stable = predict
        .predict(versioned_request("versioned", Choice::Label("stable")))
        .await
        .map(|r| version_of(&r.into_inner()))
        .expect("stable");
    assert_eq!(stable, 1.0, "nothing of the refused reload was applied");
    models.handle_reload_config_request(with_epoch(true, "6")).await.expect("a newer leader");
    // Reloads without an epoch (people, scripts) are not fenced.
    models.handle_reload_config_request(config(&root, false)).await.expect("no epoch");
    let bad = models.handle_reload_config_request(with_epoch(false, "x")).await;
    assert_eq!(bad.expect_err("garbage").code(), tonic::Code::InvalidArgument);
}
