//! Parsing REST paths the way TensorFlow Serving matches them:
//! `/v1/models/{name}[/versions/{v}|/labels/{l}][/metadata]` (GET) and
//! `/v1/models/{name}[/versions/{v}|/labels/{l}]:{predict|classify|regress}`
//! (POST); keywords are case-insensitive, names and labels URL-decoded.

use crate::error::ServingError;
use crate::serving::ModelRequest;
use axum::http::Method;
use versa_core::VersionChoice;

/// What a REST request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Route {
    /// GetModelStatus; a label in the path is ignored, as upstream.
    Status {
        name: String,
        version: Option<i64>,
    },
    Metadata(ModelRequest),
    Predict(ModelRequest),
    /// Classify / Regress: not available for ONNX models.
    Unimplemented {
        method: &'static str,
        request: ModelRequest,
    },
}

fn malformed(method: &Method, path: &str) -> ServingError {
    ServingError::invalid_argument(format!("Malformed request: {method} {path}"))
}

/// `s` without `prefix` (ASCII, any case). Byte-wise, so a path with
/// multi-byte characters where the prefix would end never panics.
fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.as_bytes().get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix.as_bytes()) {
        return None;
    }
    s.get(prefix.len()..)
}

fn decode(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment).decode_utf8_lossy().into_owned()
}

/// Splits off a `[^/:]+` segment.
fn segment(s: &str) -> (&str, &str) {
    let end = s.find(['/', ':']).unwrap_or(s.len());
    s.split_at(end)
}

pub(super) fn parse_route(method: &Method, path: &str) -> Result<Route, ServingError> {
    let bad = || malformed(method, path);
    let rest = strip_prefix_ci(path, "/v1/models").ok_or_else(bad)?;
    if rest.is_empty() || rest == "/" {
        return if method == Method::GET {
            Err(ServingError::invalid_argument("Missing model name in request."))
        } else {
            Err(bad())
        };
    }
    let rest = rest.strip_prefix('/').ok_or_else(bad)?;
    let (name, mut rest) = segment(rest);
    if name.is_empty() {
        return Err(bad());
    }
    let name = decode(name);
    let mut choice = VersionChoice::Latest;
    if let Some(after) = strip_prefix_ci(rest, "/versions/") {
        let (digits, after) = segment(after);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        choice = VersionChoice::Specific(digits.parse().map_err(|_| bad())?);
        rest = after;
    } else if let Some(after) = strip_prefix_ci(rest, "/labels/") {
        let (label, after) = segment(after);
        if label.is_empty() {
            return Err(bad());
        }
        choice = VersionChoice::Label(decode(label));
        rest = after;
    }
    let request = ModelRequest {
        name: name.clone(),
        choice: choice.clone(),
        signature: String::new(),
        route_key: None,
    };
    if *method == Method::GET {
        if rest.is_empty() {
            let version = match choice {
                VersionChoice::Specific(v) => Some(v),
                _ => None,
            };
            return Ok(Route::Status { name, version });
        }
        if rest.eq_ignore_ascii_case("/metadata") {
            return Ok(Route::Metadata(request));
        }
        return Err(bad());
    }
    if *method == Method::POST {
        let verb = rest.strip_prefix(':').ok_or_else(bad)?;
        return match verb.to_ascii_lowercase().as_str() {
            "predict" => Ok(Route::Predict(request)),
            "classify" => Ok(Route::Unimplemented { method: "classify", request }),
            "regress" => Ok(Route::Unimplemented { method: "regress", request }),
            _ => Err(bad()),
        };
    }
    Err(bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(name: &str, choice: VersionChoice) -> ModelRequest {
        ModelRequest { name: name.into(), choice, signature: String::new(), route_key: None }
    }

    #[test]
    fn every_path_shape() {
        let get = Method::GET;
        let post = Method::POST;
        let cases = vec![
            (&get, "/v1/models/m", Route::Status { name: "m".into(), version: None }),
            (&get, "/V1/Models/m/Versions/3", Route::Status { name: "m".into(), version: Some(3) }),
            (&get, "/v1/models/m/labels/stable", Route::Status { name: "m".into(), version: None }),
            (&get, "/v1/models/m/metadata", Route::Metadata(req("m", VersionChoice::Latest))),
            (
                &get,
                "/v1/models/m/versions/2/metadata",
                Route::Metadata(req("m", VersionChoice::Specific(2))),
            ),
            (
                &get,
                "/v1/models/m/labels/canary/METADATA",
                Route::Metadata(req("m", VersionChoice::Label("canary".into()))),
            ),
            (&post, "/v1/models/m:predict", Route::Predict(req("m", VersionChoice::Latest))),
            (
                &post,
                "/v1/models/my%20model/versions/7:PREDICT",
                Route::Predict(req("my model", VersionChoice::Specific(7))),
            ),
            (
                &post,
                "/v1/models/m/labels/a%2Fb:predict",
                Route::Predict(req("m", VersionChoice::Label("a/b".into()))),
            ),
            (
                &post,
                "/v1/models/m:classify",
                Route::Unimplemented {
                    method: "classify",
                    request: req("m", VersionChoice::Latest),
                },
            ),
        ];
        for (method, path, expected) in cases {
            assert_eq!(parse_route(method, path).expect(path), expected, "{method} {path}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_path_parses_or_is_malformed_never_a_panic(
            prefix in proptest::sample::select(vec!["", "/v1", "/v1/models", "/V1/MODELS/", "/v1/models/m"]),
            rest in "[a-zA-Z0-9/:%é\u{1F600}\u{80}-\u{ff}]{0,24}",
        ) {
            let path = format!("{prefix}{rest}");
            for method in [Method::GET, Method::POST, Method::PUT] {
                let _ = parse_route(&method, &path);
            }
        }
    }

    #[test]
    fn non_ascii_paths_are_malformed_not_a_panic() {
        for path in
            ["/v1/modelsé", "/v1/models/m/versionsé/1", "/v1/models/é/labels/ü:predict", "/v1/é"]
        {
            let _ = parse_route(&Method::POST, path);
            let _ = parse_route(&Method::GET, path);
        }
        assert_eq!(
            parse_route(&Method::GET, "/v1/models/m/versionsé").expect_err("bad").message,
            "Malformed request: GET /v1/models/m/versionsé"
        );
    }

    #[test]
    fn malformed_paths() {
        let cases = [
            (Method::GET, "/v1/models", "Missing model name in request."),
            (Method::GET, "/v1/models/", "Missing model name in request."),
            (Method::POST, "/v1/models/m", "Malformed request: POST /v1/models/m"),
            (Method::POST, "/v1/models/m:explode", "Malformed request: POST /v1/models/m:explode"),
            (
                Method::GET,
                "/v1/models/m/versions/abc",
                "Malformed request: GET /v1/models/m/versions/abc",
            ),
            (Method::GET, "/v1/models/m:predict", "Malformed request: GET /v1/models/m:predict"),
            (Method::PUT, "/v1/models/m", "Malformed request: PUT /v1/models/m"),
            (Method::GET, "/v1/other", "Malformed request: GET /v1/other"),
            (
                Method::GET,
                "/v1/models/m/versions/1/labels/x",
                "Malformed request: GET /v1/models/m/versions/1/labels/x",
            ),
        ];
        for (method, path, message) in cases {
            assert_eq!(parse_route(&method, path).expect_err(path).message, message);
        }
    }
}
