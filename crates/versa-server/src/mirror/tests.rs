//! Copies end to end inside the process: real models, a fixed set of
//! versions standing in for the serving map, the mirror's own threads.

use super::*;
use crate::config::Sampling;
use std::collections::BTreeMap;
use versa_core::ServableId;
use versa_onnx::{IntoTValue, ModelOptions};
use versa_testmodels as models;

/// The versions a copy can find; emptied to stand for an unload.
#[derive(Default)]
struct Fixed(Mutex<HashMap<i64, ServableHandle<OnnxModel>>>);

impl Fixed {
    fn with(handle: &ServableHandle<OnnxModel>) -> Self {
        let fixed = Self::default();
        fixed.0.lock().expect("lock").insert(handle.id().version, handle.clone());
        fixed
    }
}

impl Versions for Fixed {
    fn find(&self, _model: &str, version: i64) -> Option<ServableHandle<OnnxModel>> {
        self.0.lock().expect("lock").get(&version).cloned()
    }
}

/// Version `version` of model `m`, loaded from `bytes`.
fn model(bytes: &[u8], version: i64) -> (tempfile::TempDir, ServableHandle<OnnxModel>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = models::write_version(dir.path(), version, bytes).expect("write");
    let model = OnnxModel::load(&path, ModelOptions::default()).expect("loads");
    (dir, ServableHandle::detached(ServableId { name: "m".to_owned(), version }, model))
}

fn mirror() -> Arc<Mirror> {
    mirror_of(64 << 20)
}

/// One mirror thread; copies may hold `max_bytes` bytes.
fn mirror_of(max_bytes: usize) -> Arc<Mirror> {
    let metrics = MirrorMetrics::register(&prometheus::Registry::new());
    Arc::new(Mirror::new(1, 64, max_bytes, metrics))
}

/// Keeps the one mirror thread of `mirror` busy until the sender is used.
fn block(mirror: &Mirror) -> std::sync::mpsc::Sender<()> {
    let (go, wait) = std::sync::mpsc::channel::<()>();
    assert!(mirror.workers.submit(Box::new(move || {
        let _ = wait.recv();
    })));
    go
}

/// A copy of a request of model `m`, version 1 answering, to version 2.
fn sampled() -> Sampled {
    Sampled {
        model: "m".to_owned(),
        spec: Arc::new(MirrorSpec {
            target: MirrorTarget::Version(2),
            percent: 100,
            sampling: Sampling::Random,
            max_in_flight: 64,
            timeout: Duration::from_secs(60),
            outputs: BTreeMap::new(),
            log_per_minute: 0,
        }),
        target: 2,
        baseline: 1,
        route_key: None,
    }
}

/// A request of `rows` rows of 4 floats, answered by `baseline`.
fn answered(baseline: &ServableHandle<OnnxModel>, rows: usize) -> Original {
    let values: Vec<f32> = (0..rows * 4).map(|i| i as f32 / 10.0).collect();
    let x = versa_onnx::convert::tensor_from_vec(&[rows, 4], values).into_tvalue();
    let inputs: TVec<TValue> = [x].into_iter().collect();
    let outputs = baseline.run(inputs.clone()).expect("baseline runs");
    Original { baseline: baseline.shared_signature(), inputs, outputs, cpu: None }
}

fn count(mirror: &Mirror, result: &str) -> u64 {
    mirror.metrics.requests.with_label_values(&["m", "2", "1", result]).get()
}

/// Waits (bounded) until `check` holds.
fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_mirror_copy_whose_plan_is_not_built_is_not_run_and_has_it_built_for_later_copies() {
    let (_b, baseline) = model(&models::scaled([1.0; 4]), 1);
    let (_c, candidate) = model(&models::scaled([1.0; 4]), 2);
    let versions: Arc<dyn Versions> = Arc::new(Fixed::with(&candidate));
    let mirror = mirror();
    assert!(!candidate.plan_ready(3), "only the batch-1 plan is built at load");
    mirror.submit(sampled(), Arc::clone(&versions), answered(&baseline, 3));
    // Counted on the request's side: no mirror thread went near the plan.
    assert_eq!(count(&mirror, "unavailable"), 1);
    eventually("the plan built in the background", || candidate.plan_ready(3));
    mirror.submit(sampled(), versions, answered(&baseline, 3));
    eventually("the next copy runs", || count(&mirror, "agree") == 1);
    assert_eq!(count(&mirror, "unavailable"), 1);
}

#[test]
fn a_queued_mirror_copy_holds_no_version_and_is_unavailable_once_its_version_is_gone() {
    let (_b, baseline) = model(&models::scaled([1.0; 4]), 1);
    let (_c, candidate) = model(&models::scaled([1.0; 4]), 2);
    let fixed = Arc::new(Fixed::with(&candidate));
    let mirror = mirror();
    let go = block(&mirror);
    let versions: Arc<dyn Versions> = Arc::clone(&fixed) as _;
    mirror.submit(sampled(), Arc::clone(&versions), answered(&baseline, 1));
    // Unloaded while the copy waits: no handle on it is left anywhere.
    fixed.0.lock().expect("lock").clear();
    drop(candidate);
    go.send(()).expect("the blocker waits");
    eventually("the copy has an outcome", || count(&mirror, "unavailable") == 1);
    assert_eq!(count(&mirror, "agree"), 0);
    // With its version there, the same copy runs.
    let (_c, candidate) = model(&models::scaled([1.0; 4]), 2);
    fixed.0.lock().expect("lock").insert(2, candidate);
    mirror.submit(sampled(), versions, answered(&baseline, 1));
    eventually("the copy runs", || count(&mirror, "agree") == 1);
}

#[test]
fn a_mirror_copy_over_max_mirror_bytes_is_shed_and_bytes_are_given_back() {
    let (_b, baseline) = model(&models::scaled([1.0; 4]), 1);
    let (_c, candidate) = model(&models::scaled([1.0; 4]), 2);
    let versions: Arc<dyn Versions> = Arc::new(Fixed::with(&candidate));
    // One row: 16 bytes of inputs and 16 of outputs; room for one copy.
    let mirror = mirror_of(40);
    let go = block(&mirror);
    mirror.submit(sampled(), Arc::clone(&versions), answered(&baseline, 1));
    mirror.submit(sampled(), Arc::clone(&versions), answered(&baseline, 1));
    assert_eq!(count(&mirror, "shed"), 1, "the second copy does not fit");
    go.send(()).expect("the blocker waits");
    eventually("the first copy runs", || count(&mirror, "agree") == 1);
    eventually("its bytes are given back", || {
        mirror.metrics.in_flight.with_label_values(&["m"]).get() == 0
    });
    mirror.submit(sampled(), versions, answered(&baseline, 1));
    eventually("a copy fits again", || count(&mirror, "agree") == 2);
    assert_eq!(count(&mirror, "shed"), 1);
}

#[test]
fn a_mirror_version_taking_other_inputs_counts_the_copy_as_an_error_without_running_it() {
    let (_b, baseline) = model(&models::scaled([1.0; 4]), 1);
    let (_c, candidate) = model(&models::two_in_two_out(), 2);
    let versions: Arc<dyn Versions> = Arc::new(Fixed::with(&candidate));
    let mirror = mirror();
    mirror.submit(sampled(), versions, answered(&baseline, 1));
    eventually("the copy has an outcome", || count(&mirror, "error") == 1);
    assert_eq!(count(&mirror, "agree") + count(&mirror, "disagree"), 0);
}
