//! A model repository in a temp dir and a server serving it.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use versa_e2e::ServerProcess;
use versa_testmodels as models;

#[derive(Debug)]
pub struct Fixture {
    pub root: tempfile::TempDir,
    pub server: ServerProcess,
}

impl Fixture {
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }
}

/// The text config serving `versioned` (all versions, labels stable→1,
/// canary→2), `pair` and `broken` from `root`.
pub fn standard_config(root: &Path) -> String {
    format!(
        r#"model_config_list {{
  config {{
    name: "versioned"
    base_path: "{root}/versioned"
    model_platform: "onnx"
    model_version_policy {{ all {{}} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 2 }}
  }}
  config {{
    name: "pair"
    base_path: "{root}/pair"
    model_platform: "onnx"
  }}
  config {{
    name: "broken"
    base_path: "{root}/broken"
    model_platform: "onnx"
    model_version_policy {{ all {{}} }}
  }}
}}
"#,
        root = root.display()
    )
}

/// Writes the example repository and starts a server on the standard config.
pub fn start(extra: &[&str]) -> Fixture {
    let root = tempfile::tempdir().expect("tempdir");
    models::write_example_repository(root.path()).expect("models");
    let config = root.path().join("models.config");
    std::fs::write(&config, standard_config(root.path())).expect("config");
    let mut args = vec![
        format!("--model_config_file={}", config.display()),
        "--file_system_poll_wait_seconds=1".to_owned(),
        "--max_num_load_retries=0".to_owned(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let server = ServerProcess::start(&args);
    Fixture { root, server }
}

pub fn version_of(response: &versa_proto::serving::PredictResponse) -> f32 {
    response.outputs["y"].float_val[0]
}
