//! Where a model load's memory peak comes from: resident memory (RSS) and
//! the peak since the stage before, after each step `OnnxModel::load` and
//! the warm-up take, on the MobileNet-sized test model. Linux only (reads
//! `/proc/self/status`, resets the peak through `/proc/self/clear_refs`).
//!
//! `cargo run --release -p versa-onnx --example load_stages [-- --low-peak]`
//! (`--low-peak`: as a ResourcePreserving server loads, large blocks mapped).
#![allow(clippy::print_stdout)]

use tract_onnx::prelude::*;

/// A `/proc/self/status` field in MiB.
fn status_mib(key: &str) -> TractResult<f64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .ok_or_else(|| std::io::Error::other(format!("no {key} in /proc/self/status")))?;
    Ok(kib / 1024.0)
}

/// Memory at one stage, MiB.
#[derive(Debug, Clone, Copy)]
struct Mark {
    rss: f64,
    /// Anonymous memory only: the heap and mappings, not code paged in.
    anon: f64,
    /// Highest RSS since the mark before.
    peak: f64,
}

/// Prints RSS and the peak since the last mark, then resets the peak.
fn mark(stage: &str) -> TractResult<Mark> {
    let m = Mark {
        rss: status_mib("VmRSS:")?,
        anon: status_mib("RssAnon:")?,
        peak: status_mib("VmHWM:")?,
    };
    println!("| {stage} | {:.1} | {:.1} | {:.1} |", m.rss, m.anon, m.peak);
    std::fs::write("/proc/self/clear_refs", "5")?;
    Ok(m)
}

fn main() -> TractResult<()> {
    let low_peak = std::env::args().any(|a| a == "--low-peak");
    let dir = tempfile::tempdir()?;
    let file = dir.path().join(versa_onnx::MODEL_FILE);
    std::fs::write(&file, versa_testmodels::mobilenet_v2_like())?;
    versa_malloc::release_free_memory();
    let mapped = low_peak.then(versa_malloc::LargeBlocksMapped::hold);
    println!("| stage | RSS MiB | of it anonymous | peak since the row above |");
    println!("|---|---|---|---|");
    let start = mark("before the load")?;
    let mut highest = 0f64;

    let inference = tract_onnx::onnx().model_for_path(&file)?;
    highest = highest.max(mark("parsed (protobuf decoded, then converted)")?.peak);
    let typed = inference.into_typed()?.into_decluttered()?;
    highest = highest.max(mark("typed and decluttered (kept by the model)")?.peak);
    let batch = match typed.input_fact(0)?.shape.iter().next() {
        Some(TDim::Sym(s)) => s.clone(),
        _ => {
            return Err(
                std::io::Error::other("the test model has no symbolic batch dimension").into()
            );
        }
    };
    let one = std::collections::HashMap::from([(batch, TDim::Val(1))]);
    let plan = typed.set_symbols(&one)?.into_optimized()?.into_runnable()?;
    highest = highest.max(mark("batch-1 plan optimised")?.peak);
    let zeros = Tensor::zero::<f32>(&[1, 3, 224, 224])?;
    plan.run(tvec!(zeros.clone().into()))?;
    highest = highest.max(mark("warm-up run")?.peak);
    drop(mapped);
    versa_malloc::release_free_memory();
    let loaded = mark("loaded, freed memory returned")?;
    plan.run(tvec!(zeros.into()))?;
    let serving = mark("one more run (serving)")?;
    drop(plan);
    versa_malloc::release_free_memory();
    let without_plan = mark("plan dropped (the decluttered model stays)")?;
    drop(typed);
    versa_malloc::release_free_memory();
    mark("everything dropped")?;

    let copy = loaded.rss - start.rss;
    println!();
    println!(
        "loaded copy {copy:.1} MiB RSS: decluttered model {:.1} MiB and plan {:.1} MiB of heap, code paged in {:.1} MiB",
        without_plan.anon - start.anon,
        loaded.anon - without_plan.anon,
        (loaded.rss - loaded.anon) - (start.rss - start.anon)
    );
    println!(
        "load peak {:.2}× the copy; one serving run peaks at {:.2}×",
        (highest - start.rss) / copy,
        (serving.peak - start.rss) / copy
    );
    Ok(())
}
