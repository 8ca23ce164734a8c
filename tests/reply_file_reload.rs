//! Live reload of the reply file in every way it can be replaced, without Postfix.

use helpdesk_milter::config::Config;
use helpdesk_milter::live::Live;
use helpdesk_milter::reply_file::ReplyFile;
use helpdesk_milter::state::ReplyState;
use helpdesk_milter::watch::watch_reply_file;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const BASE: &str = include_str!("data/reply.toml");

fn version(n: u32) -> String {
    BASE.replace("Test reply v1", &format!("Test reply v{n}"))
}

fn subject(shared: &Live) -> String {
    shared.reply_file().unwrap().render("en").subject
}

/// Waits for the subject to become `want`; a change must be live within 2 seconds.
fn live(shared: &Live, want: &str) {
    let t0 = Instant::now();
    while subject(shared) != want {
        assert!(t0.elapsed() < Duration::from_secs(2), "still {:?}, want {want:?}", subject(shared));
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Checks the version in use stays `want` for longer than a reload would take.
fn stays(shared: &Live, want: &str) {
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(subject(shared), want);
}

fn setup(path: &Path) -> Arc<Live> {
    let config = Config::defaults(Path::new("/x.toml"));
    let file = ReplyFile::load(path).unwrap();
    Live::new(config, Some(file), Arc::new(ReplyState::in_memory()), None, None)
}

#[test]
fn renames_in_place_writes_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reply.toml");
    std::fs::write(&path, version(1)).unwrap();
    let shared = setup(&path);
    let _w = watch_reply_file(shared.clone(), path.clone()).unwrap();

    // Replaced by rename (editors, git).
    std::fs::write(dir.path().join(".reply.toml.swp"), version(2)).unwrap();
    std::fs::rename(dir.path().join(".reply.toml.swp"), &path).unwrap();
    live(&shared, "Test reply v2");
    // Rewritten in place.
    std::fs::write(&path, version(3)).unwrap();
    live(&shared, "Test reply v3");
    // Half written, emptied, deleted, made a directory: all refused, v3 stays.
    std::fs::write(&path, &version(4)[..BASE.len() / 2]).unwrap();
    stays(&shared, "Test reply v3");
    std::fs::write(&path, "").unwrap();
    stays(&shared, "Test reply v3");
    std::fs::remove_file(&path).unwrap();
    stays(&shared, "Test reply v3");
    std::fs::create_dir(&path).unwrap();
    stays(&shared, "Test reply v3");
    std::fs::remove_dir(&path).unwrap();
    // Back, valid: in use again.
    std::fs::write(&path, version(5)).unwrap();
    live(&shared, "Test reply v5");
}

#[test]
fn symlink_swaps_of_the_file_and_of_a_directory_above_it() {
    let dir = tempfile::tempdir().unwrap();
    for (release, v) in [("r1", 1), ("r2", 2), ("r3", 3)] {
        std::fs::create_dir(dir.path().join(release)).unwrap();
        std::fs::write(dir.path().join(release).join("reply.toml"), version(v)).unwrap();
    }
    // current -> r1 ; the configured path goes through the directory link.
    symlink("r1", dir.path().join("current")).unwrap();
    let path = dir.path().join("current").join("reply.toml");
    let shared = setup(&path);
    let _w = watch_reply_file(shared.clone(), path.clone()).unwrap();

    // Atomic swap of the directory link, as deployment tools do it.
    symlink("r2", dir.path().join("current.new")).unwrap();
    std::fs::rename(dir.path().join("current.new"), dir.path().join("current")).unwrap();
    live(&shared, "Test reply v2");

    // A file that is itself a link, swapped to another target.
    let link = dir.path().join("reply-link.toml");
    symlink(dir.path().join("r1/reply.toml"), &link).unwrap();
    let shared = setup(&link);
    let _w2 = watch_reply_file(shared.clone(), link.clone()).unwrap();
    symlink(dir.path().join("r3/reply.toml"), dir.path().join("reply-link.new")).unwrap();
    std::fs::rename(dir.path().join("reply-link.new"), &link).unwrap();
    live(&shared, "Test reply v3");
}
