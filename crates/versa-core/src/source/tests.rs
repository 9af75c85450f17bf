//! The filesystem source against real temporary directories, alone and
//! feeding a real manager.

use super::*;
use crate::test_double::TestDoubleLoader;
use crate::{
    AspiredVersionsManager, ManagerOptions, ManagerState, ServableId, ServableStateMonitor,
    VersionChoice,
};
use std::sync::Mutex;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Records what the source emits.
#[derive(Default)]
struct RecordingSink {
    emitted: Mutex<Vec<(String, Vec<i64>)>>,
    notify: Mutex<Option<mpsc::UnboundedSender<()>>>,
}

impl AspiredVersionsSink for RecordingSink {
    fn set_aspired_versions(&self, model: &str, versions: Vec<AspiredVersion>) {
        let versions = versions.iter().map(|a| a.version).collect();
        self.emitted.lock().expect("lock").push((model.to_owned(), versions));
        if let Some(tx) = &*self.notify.lock().expect("lock") {
            let _ = tx.send(());
        }
    }
}

impl RecordingSink {
    fn take(&self) -> Vec<(String, Vec<i64>)> {
        let mut emitted = std::mem::take(&mut *self.emitted.lock().expect("lock"));
        emitted.sort();
        emitted
    }
}

fn model_dir(root: &Path, name: &str, versions: &[&str]) -> PathBuf {
    let base = root.join(name);
    std::fs::create_dir_all(&base).expect("mkdir");
    for v in versions {
        std::fs::create_dir_all(base.join(v)).expect("mkdir");
    }
    base
}

fn watch(name: &str, base_path: PathBuf, policy: VersionPolicy) -> ServableToMonitor {
    ServableToMonitor { name: name.to_owned(), base_path, policy }
}

fn emitted(pairs: &[(&str, &[i64])]) -> Vec<(String, Vec<i64>)> {
    pairs.iter().map(|(m, v)| (m.to_string(), v.to_vec())).collect()
}

#[tokio::test]
async fn emits_each_models_aspired_versions() {
    let root = tempfile::tempdir().expect("tempdir");
    let sink = Arc::new(RecordingSink::default());
    let source = FileSystemSource::new(sink.clone(), PollInterval::Once, false);
    source
        .update_config(vec![
            watch(
                "a",
                model_dir(root.path(), "a", &["1", "2", "3", "tmp"]),
                VersionPolicy::Latest(2),
            ),
            watch("b", model_dir(root.path(), "b", &["5", "0006"]), VersionPolicy::All),
        ])
        .await;
    assert_eq!(sink.take(), emitted(&[("a", &[2, 3]), ("b", &[5, 6])]));
    assert!(source.errors().is_empty());
}

#[tokio::test]
async fn a_broken_base_path_skips_only_that_model() {
    let root = tempfile::tempdir().expect("tempdir");
    let not_a_dir = root.path().join("file");
    std::fs::write(&not_a_dir, b"x").expect("write");
    let sink = Arc::new(RecordingSink::default());
    let source = FileSystemSource::new(sink.clone(), PollInterval::Once, false);
    source
        .update_config(vec![
            watch("missing", root.path().join("nope"), VersionPolicy::Latest(1)),
            watch("unreadable", not_a_dir, VersionPolicy::Latest(1)),
            watch("good", model_dir(root.path(), "good", &["4"]), VersionPolicy::Latest(1)),
        ])
        .await;
    // Nothing is emitted for the broken models (so nothing of theirs unloads),
    // and the healthy one is updated in the same poll.
    assert_eq!(sink.take(), emitted(&[("good", &[4])]));
    let errors = source.errors();
    assert_eq!(errors.keys().collect::<Vec<_>>(), vec!["missing", "unreadable"]);
    let message = errors["missing"].to_string();
    assert!(message.starts_with("Could not find base path "), "{message}");
    assert!(message.contains("for servable missing"), "{message}");
    assert_eq!(errors["missing"].code(), Code::InvalidArgument);
}

#[tokio::test]
async fn an_empty_base_path_unloads_unless_versions_must_stay_present() {
    let root = tempfile::tempdir().expect("tempdir");
    let base = model_dir(root.path(), "m", &["not-a-version"]);
    for (always_present, expected) in [(false, emitted(&[("m", &[])])), (true, emitted(&[]))] {
        let sink = Arc::new(RecordingSink::default());
        let source = FileSystemSource::new(sink.clone(), PollInterval::Once, always_present);
        source.update_config(vec![watch("m", base.clone(), VersionPolicy::Latest(1))]).await;
        assert_eq!(sink.take(), expected, "always_present={always_present}");
        assert_eq!(source.errors().contains_key("m"), always_present);
    }
}

#[tokio::test]
async fn removed_models_get_an_empty_list() {
    let root = tempfile::tempdir().expect("tempdir");
    let sink = Arc::new(RecordingSink::default());
    let source = FileSystemSource::new(sink.clone(), PollInterval::Once, false);
    let a = watch("a", model_dir(root.path(), "a", &["1"]), VersionPolicy::Latest(1));
    let b = watch("b", model_dir(root.path(), "b", &["1"]), VersionPolicy::Latest(1));
    source.update_config(vec![a.clone(), b]).await;
    sink.take();
    source.update_config(vec![a]).await;
    assert_eq!(sink.take(), emitted(&[("a", &[1]), ("b", &[])]));
}

#[tokio::test]
async fn never_polling_emits_nothing() {
    let root = tempfile::tempdir().expect("tempdir");
    let sink = Arc::new(RecordingSink::default());
    let source = FileSystemSource::new(sink.clone(), PollInterval::Never, false);
    source
        .update_config(vec![watch(
            "a",
            model_dir(root.path(), "a", &["1"]),
            VersionPolicy::Latest(1),
        )])
        .await;
    source.clone().run().await; // returns at once
    assert!(sink.take().is_empty());
}

#[test]
fn poll_interval_follows_the_flag() {
    assert_eq!(PollInterval::from_seconds(0), PollInterval::Once);
    assert_eq!(PollInterval::from_seconds(-1), PollInterval::Never);
    assert_eq!(PollInterval::from_seconds(3), PollInterval::Every(Duration::from_secs(3)));
}

#[test]
fn start_up_check_finds_models_without_versions() {
    let root = tempfile::tempdir().expect("tempdir");
    let good = watch("good", model_dir(root.path(), "good", &["1"]), VersionPolicy::Latest(1));
    let empty = watch("empty", model_dir(root.path(), "empty", &[]), VersionPolicy::Latest(1));
    assert_eq!(check_versions_present(std::slice::from_ref(&good)), Ok(()));
    let err = check_versions_present(&[good, empty.clone()]).expect_err("empty model");
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(
        err.to_string(),
        format!(
            "Unable to find a numerical version path for servable empty at: {}",
            empty.base_path.display()
        )
    );
}

#[tokio::test]
async fn periodic_polls_pick_up_new_versions() {
    let root = tempfile::tempdir().expect("tempdir");
    let base = model_dir(root.path(), "m", &["1"]);
    let sink = Arc::new(RecordingSink::default());
    let (tx, mut rx) = mpsc::unbounded_channel();
    *sink.notify.lock().expect("lock") = Some(tx);
    let source =
        FileSystemSource::new(sink.clone(), PollInterval::Every(Duration::from_millis(20)), false);
    source.update_config(vec![watch("m", base.clone(), VersionPolicy::Latest(1))]).await;
    tokio::spawn(source.clone().run());
    std::fs::create_dir(base.join("2")).expect("mkdir");
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            rx.recv().await.expect("sink open");
            if sink.emitted.lock().expect("lock").iter().any(|(_, v)| v == &vec![2]) {
                return;
            }
        }
    })
    .await;
    assert!(found.is_ok(), "version 2 picked up by a later poll");
}

/// The source and the manager together, on real directories: a version
/// appears, another replaces it, and deleting the newest rolls back.
#[tokio::test]
async fn versions_appearing_and_disappearing_on_disk_drive_the_manager() {
    let root = tempfile::tempdir().expect("tempdir");
    let base = model_dir(root.path(), "m", &["1"]);
    let manager = AspiredVersionsManager::new(
        TestDoubleLoader::new(),
        ManagerOptions {
            load_retry_interval: Duration::from_millis(1),
            ..ManagerOptions::default()
        },
        ServableStateMonitor::new(),
    );
    let source = FileSystemSource::new(Arc::new(manager.clone()), PollInterval::Once, false);
    let deadline = || Instant::now() + Duration::from_secs(20);
    let served = |manager: &AspiredVersionsManager<TestDoubleLoader>| {
        manager
            .serving_map()
            .resolve("m", &VersionChoice::Latest)
            .map(|h| (h.id().version, h.path.clone()))
    };

    source.update_config(vec![watch("m", base.clone(), VersionPolicy::Latest(1))]).await;
    manager
        .monitor()
        .wait_for_state(&ServableId::new("m", 1), ManagerState::Available, deadline())
        .await
        .expect("v1");
    assert_eq!(served(&manager), Ok((1, base.join("1"))));

    std::fs::create_dir(base.join("2")).expect("mkdir");
    source.poll_once().await;
    manager
        .monitor()
        .wait_for_state(&ServableId::new("m", 1), ManagerState::End, deadline())
        .await
        .expect("v1 gone");
    assert_eq!(served(&manager).map(|s| s.0), Ok(2));

    // Rollback by deletion: version 1 is loaded again, then 2 goes.
    std::fs::remove_dir(base.join("2")).expect("rmdir");
    source.poll_once().await;
    manager
        .monitor()
        .wait_for_state(&ServableId::new("m", 2), ManagerState::End, deadline())
        .await
        .expect("v2 gone");
    assert_eq!(served(&manager).map(|s| s.0), Ok(1));

    // A vanished base path changes nothing.
    std::fs::rename(&base, root.path().join("moved")).expect("rename");
    source.poll_once().await;
    assert!(source.errors().contains_key("m"));
    assert_eq!(served(&manager).map(|s| s.0), Ok(1));
}
