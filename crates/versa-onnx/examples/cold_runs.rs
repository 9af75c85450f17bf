//! Why a small model runs slower inside a server answering one request at a
//! time than in a tight loop: times batch-1 runs of the test MLP back to
//! back, after the caches were swept (8 MiB written between runs), and after
//! the thread slept for as long as a request's round trip takes.
//!
//! `cargo run --release -p versa-onnx --example cold_runs`
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};
use versa_onnx::{ModelOptions, OnnxModel, Tensor, tvec};

fn p50(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    versa_testmodels::write_version(dir.path(), 1, &versa_testmodels::mlp(&[784, 512, 256, 10]))?;
    let model = OnnxModel::load(&dir.path().join("1"), ModelOptions::default())?;
    let input = Tensor::zero::<f32>(&[1, 784])?;
    let mut sweep = vec![0u8; 8 << 20];
    let runs = 2000;
    let time = |before: &mut dyn FnMut()| -> Result<Duration, Box<dyn std::error::Error>> {
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            before();
            let started = Instant::now();
            model.run(tvec!(input.clone().into()))?;
            times.push(started.elapsed());
        }
        Ok(p50(times))
    };
    let hot = time(&mut || {})?;
    let swept = time(&mut || {
        for (i, b) in sweep.iter_mut().enumerate().step_by(64) {
            *b = b.wrapping_add(i as u8);
        }
    })?;
    let slept = time(&mut || std::thread::sleep(Duration::from_micros(250)))?;
    println!("MLP 784-512-256-10, batch 1, p50 of {runs} runs each:");
    println!("back to back         {:>6.1} µs", hot.as_secs_f64() * 1e6);
    println!("after an 8 MiB sweep {:>6.1} µs", swept.as_secs_f64() * 1e6);
    println!("after a 250 µs sleep {:>6.1} µs", slept.as_secs_f64() * 1e6);
    Ok(())
}
