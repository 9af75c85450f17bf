//! `kubectl versa status`: a ModelDeployment's models and rollouts as text.
//! Pure: takes the object, returns the lines.

use std::fmt::Write as _;
use versa_crd::command::COMMAND_ANNOTATION;
use versa_crd::{AnalysisRunStatus, ModelDeployment, ModelStatus, RolloutStatus};

/// The whole report.
pub(crate) fn status(md: &ModelDeployment) -> String {
    let mut out = String::new();
    let name = md.metadata.name.as_deref().unwrap_or_default();
    let namespace = md.metadata.namespace.as_deref().unwrap_or("default");
    let _ = writeln!(out, "Name:       {name}");
    let _ = writeln!(out, "Namespace:  {namespace}");
    let Some(status) = md.status.as_ref() else {
        out.push_str("Status:     none yet (the operator has not passed over it)\n");
        return out;
    };
    if let Some(pending) = md.metadata.annotations.as_ref().and_then(|a| a.get(COMMAND_ANNOTATION))
    {
        let _ = writeln!(out, "Command:    {pending} (not taken by the operator yet)");
    }
    let generation = md.metadata.generation.unwrap_or_default();
    let observed = status.observed_generation.unwrap_or_default();
    let _ = writeln!(out, "Generation: {generation} (observed {observed})");
    for c in &status.conditions {
        let _ = writeln!(
            out,
            "{:<11} {} {}{}",
            format!("{}:", c.type_),
            c.status,
            c.reason,
            if c.message.is_empty() { String::new() } else { format!(": {}", c.message) }
        );
    }
    for model in &status.models {
        out.push('\n');
        model_section(&mut out, model);
    }
    out
}

fn model_section(out: &mut String, m: &ModelStatus) {
    let labels: Vec<String> = m.labels.iter().map(|(l, v)| format!("{l}=v{v}")).collect();
    let _ = writeln!(out, "Model {}: {} [{}]", m.name, m.phase, labels.join(" "));
    if !m.traffic.is_empty() {
        let traffic: Vec<String> = m.traffic.iter().map(|(l, w)| format!("{l} {w}%")).collect();
        let _ = writeln!(out, "  Traffic:   {}", traffic.join(", "));
    }
    if let Some(message) = &m.message {
        let _ = writeln!(out, "  Message:   {message}");
    }
    let Some(r) = &m.rollout else { return };
    rollout_section(out, r);
}

fn rollout_section(out: &mut String, r: &RolloutStatus) {
    // Steps done, as in `summary` and Argo's `Step: 1/5`.
    let step = r.state.step.min(r.step_count);
    let in_force = r.weight_in_force.map_or_else(|| "not yet".to_owned(), |w| format!("{w}%"));
    let _ = writeln!(
        out,
        "  Rollout:   {} v{} → v{}, step {}/{}, weight {}% (in force: {in_force})",
        r.phase, r.baseline, r.candidate, step, r.step_count, r.weight
    );
    if let Some(message) = &r.message {
        let _ = writeln!(out, "  Why:       {message}");
    }
    if let Some(last) = &r.last_command {
        let what =
            last.ignored.as_deref().map_or_else(String::new, |why| format!(" (ignored: {why})"));
        let _ = writeln!(out, "  Last command: {:?}{what}", last.command);
    }
    if let Some(run) = &r.step_analysis {
        analysis_section(out, "Step analysis", run);
    }
    if let Some(run) = &r.background_analysis {
        analysis_section(out, "Background analysis", run);
    }
}

fn analysis_section(out: &mut String, title: &str, run: &AnalysisRunStatus) {
    let _ = writeln!(out, "  {title} (run {}): {}", run.run, run.phase);
    if let Some(message) = &run.message {
        let _ = writeln!(out, "    {message}");
    }
    for (name, m) in &run.metrics {
        let _ = write!(
            out,
            "    {name}: {:?}, {} ok, {} failed, {} inconclusive, {} error",
            m.phase, m.successful, m.failed, m.inconclusive, m.error
        );
        if let Some(last) = m.measurements.last() {
            let _ = write!(
                out,
                "; last {} vs baseline {} over {} samples",
                value(last.value),
                value(last.baseline),
                last.samples
            );
            if let Some(message) = &last.message {
                let _ = write!(out, " ({message})");
            }
        }
        out.push('\n');
    }
}

fn value(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.4}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_rollout_shows_its_step_weight_and_each_metric_against_the_baseline() {
        let md: ModelDeployment = serde_json::from_value(json!({
            "apiVersion": "serving.versa.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "fraud", "namespace": "ml", "generation": 3},
            "spec": {"models": [], "server": {"image": "i", "modelVolume": {"name": "m"}}},
            "status": {"observedGeneration": 3, "models": [{
                "name": "fraud", "phase": "ShiftingTraffic",
                "labels": {"stable": 1, "canary": 2}, "traffic": {"canary": 25, "stable": 75},
                "rollout": {"baseline": 1, "candidate": 2, "phase": "Progressing",
                    "stepCount": 5, "weight": 25, "weightInForce": 25, "summary": "",
                    "state": {"step": 2, "stepStartedAt": 0},
                    "stepAnalysis": {"run": 1, "phase": "Running", "metrics": {"errors": {
                        "phase": "Running", "count": 1, "successful": 1,
                        "measurements": [{"phase": "Successful", "finishedAt": 5,
                            "value": 0.01, "baseline": 0.0, "samples": 120}]}}}}
            }]}
        }))
        .expect("a ModelDeployment");
        let text = status(&md);
        assert!(text.contains("Model fraud: ShiftingTraffic [canary=v2 stable=v1]"), "{text}");
        assert!(
            text.contains("Rollout:   Progressing v1 → v2, step 2/5, weight 25% (in force: 25%)"),
            "{text}"
        );
        assert!(text.contains("Step analysis (run 1): Running"), "{text}");
        assert!(
            text.contains(
                "errors: Running, 1 ok, 0 failed, 0 inconclusive, 0 error; last 0.0100 vs baseline 0.0000 over 120 samples"
            ),
            "{text}"
        );
    }
}
