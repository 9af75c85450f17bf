//! Whether a load run really succeeded, from the server's own counters
//! (its Prometheus page) and what the generator saw: gRPC errors arrive as
//! HTTP 200 with a `grpc-status` trailer, which h2load does not read.

use crate::generators::Run;
use crate::promtext;
use crate::workload::MODEL_NAME;

/// Which server's metric names to read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Flavour {
    /// versa-server: `versa_requests_total{status}`, shed and panic counters.
    Versa,
    /// MLServer: `model_infer_request_{success,failure}_total`, REST and gRPC
    /// handler counters.
    MlServer,
}

/// Requests a server counted as answered OK, and its counters of failed
/// requests by what they count (one failure may show in two of them).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Outcomes {
    pub(crate) ok: u64,
    failed: std::collections::BTreeMap<&'static str, u64>,
}

impl Outcomes {
    fn fail(&mut self, what: &'static str, n: u64) {
        *self.failed.entry(what).or_default() += n;
    }

    /// The counters in a server's Prometheus page.
    pub(crate) fn parse(flavour: Flavour, text: &str) -> Self {
        let mut out = Outcomes::default();
        for s in promtext::samples(text) {
            let n = s.value as u64;
            match (flavour, s.name) {
                // Failures count under any model name (an unknown one is
                // `__unknown__`), successes only for ours.
                (Flavour::Versa, "versa_requests_total") if s.label("status") != "OK" => {
                    out.fail("not OK (versa_requests_total)", n)
                }
                (Flavour::Versa, "versa_requests_total") if s.label("model") == MODEL_NAME => {
                    out.ok += n
                }
                (Flavour::Versa, "versa_shed_requests_total") => {
                    out.fail("shed (versa_shed_requests_total)", n)
                }
                (Flavour::Versa, "versa_handler_panics_total") => {
                    out.fail("panicked (versa_handler_panics_total)", n)
                }
                (Flavour::MlServer, "model_infer_request_success_total")
                    if s.label("model") == MODEL_NAME =>
                {
                    out.ok += n
                }
                (Flavour::MlServer, "model_infer_request_failure_total") => {
                    out.fail("failed (model_infer_request_failure_total)", n)
                }
                (Flavour::MlServer, "rest_server_requests_total")
                    if s.label("path").ends_with("/infer")
                        && !s.label("status_code").starts_with('2') =>
                {
                    out.fail("not 2xx (rest_server_requests_total)", n)
                }
                (Flavour::MlServer, "grpc_server_handled_total")
                    if s.label("grpc_method") == "ModelInfer" && s.label("grpc_code") != "OK" =>
                {
                    out.fail("not OK (grpc_server_handled_total)", n)
                }
                _ => {}
            }
        }
        out
    }

    /// The failure counters that grew from `before`, with how much.
    pub(crate) fn new_failures(&self, before: &Self) -> Vec<String> {
        self.failed
            .iter()
            .filter_map(|(what, n)| {
                let grew = n.saturating_sub(before.failed.get(what).copied().unwrap_or(0));
                (grew > 0).then(|| format!("{grew} {what}"))
            })
            .collect()
    }
}

/// The checks of `external`'s module doc, for a run between two counter
/// readings: no failure seen by the generator nor counted by the server, at
/// least as many OKs on the server as responses (at most `clients` more:
/// requests cut off at the end), and for gRPC response bytes that many OK
/// answers of `ok_response_bytes` each (an error answer carries no message).
pub(crate) fn verify(
    run: &Run,
    before: &Outcomes,
    after: &Outcomes,
    clients: usize,
    ok_response_bytes: Option<u64>,
) -> Result<String, String> {
    let ok = after.ok.saturating_sub(before.ok);
    let failures = after.new_failures(before);
    let (done, started) = (run.done as u64, (run.started.max(run.done) + clients) as u64);
    let mut problems = Vec::new();
    if run.failed > 0 {
        problems.push(format!("the generator saw {} failed", run.failed));
    }
    if !failures.is_empty() {
        problems.push(format!("the server counted {}", failures.join(", ")));
    }
    if ok < done || ok > started {
        problems.push(format!("the server counted {ok} OK for {done} responses"));
    }
    if let Some(size) = ok_response_bytes {
        let range = done * size..=run.started.max(run.done) as u64 * size;
        if !range.contains(&run.data_bytes) {
            problems.push(format!(
                "{} response bytes, not {done} × {size} of OK answers",
                run.data_bytes
            ));
        }
    }
    if problems.is_empty() {
        Ok(format!("yes: {ok} OK, 0 failed on the server"))
    } else {
        Err(problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generators::Percentiles;
    use std::time::Duration;

    fn run(started: usize, done: usize, failed: usize, data_bytes: u64) -> Run {
        Run {
            threads: 1,
            started,
            done,
            failed,
            data_bytes,
            elapsed: Duration::from_secs(1),
            latency: Percentiles::default(),
            cpu: Duration::ZERO,
        }
    }

    const VERSA_BEFORE: &str = "versa_requests_total{model=\"bench\",status=\"OK\"} 10\n";

    #[test]
    fn reads_each_servers_counters() {
        let versa = Outcomes::parse(
            Flavour::Versa,
            "versa_requests_total{model=\"bench\",status=\"OK\"} 7\n\
             versa_requests_total{model=\"__unknown__\",status=\"NOT_FOUND\"} 2\n\
             versa_requests_total{model=\"other\",status=\"OK\"} 5\n\
             versa_shed_requests_total{reason=\"inference_queue\",api=\"grpc\"} 1\n",
        );
        assert_eq!(versa.ok, 7);
        assert_eq!(versa.new_failures(&Outcomes::default()).len(), 2);
        let mlserver = Outcomes::parse(
            Flavour::MlServer,
            "model_infer_request_success_total{model=\"bench\",version=\"\"} 4.0\n\
             rest_server_requests_total{path=\"/v2/models/{model_name}/infer\",status_code=\"200\"} 4.0\n\
             rest_server_requests_total{path=\"/v2/models/{model_name}/infer\",status_code=\"500\"} 1.0\n",
        );
        assert_eq!(mlserver.ok, 4);
        assert_eq!(
            mlserver.new_failures(&Outcomes::default()),
            vec!["1 not 2xx (rest_server_requests_total)".to_owned()]
        );
    }

    #[test]
    fn a_run_is_good_only_when_every_check_holds() {
        let before = Outcomes::parse(Flavour::Versa, VERSA_BEFORE);
        let after = |ok: u64, failed: u64| {
            Outcomes::parse(
                Flavour::Versa,
                &format!(
                    "versa_requests_total{{model=\"bench\",status=\"OK\"}} {}\n\
                     versa_requests_total{{model=\"bench\",status=\"INTERNAL\"}} {failed}\n",
                    10 + ok
                ),
            )
        };
        // 100 done, 101 started, one more OK on the server: good.
        assert!(verify(&run(101, 100, 0, 5000), &before, &after(101, 0), 4, Some(50)).is_ok());
        // gRPC errors h2load took for successes: caught by the counters…
        assert!(verify(&run(100, 100, 0, 4000), &before, &after(80, 20), 4, Some(50)).is_err());
        // …and by the bytes, even if the server had not counted them.
        let short = verify(&run(100, 100, 0, 4000), &before, &after(100, 0), 4, Some(50));
        assert!(short.is_err_and(|e| e.contains("response bytes")));
        // Errors the generator saw (REST), fewer OKs than responses.
        assert!(verify(&run(100, 100, 3, 0), &before, &after(100, 0), 4, None).is_err());
        assert!(verify(&run(100, 100, 0, 0), &before, &after(90, 0), 4, None).is_err());
    }
}
