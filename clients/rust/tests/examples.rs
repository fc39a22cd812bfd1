//! Every example runs against the test's own server and exits 0.

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// `target/<profile>/examples/<name>`, next to this test's binary (in `deps/`). `cargo test`
/// builds the examples; when only this test was asked for (`--test examples`), build it.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path = profile_dir.join("examples").join(name);
    if !path.exists() {
        let mut build = Command::new(env!("CARGO"));
        build.args(["build", "-p", "fencelock", "--example", name]);
        if profile_dir.ends_with("release") {
            build.arg("--release");
        }
        assert!(build.status().unwrap().success(), "cannot build {name}");
    }
    assert!(path.exists(), "{} not built", path.display());
    path
}

fn run(name: &str) {
    let srv = Server::start();
    let mut child = Command::new(example(name))
        .env("REDIS_URL", srv.url())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name} ran for over 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{name}: {status}");
    // The example released everything it took.
    assert_eq!(int(call(&mut srv.conn(), &[b"DBSIZE"])), 0);
}

#[test]
fn guarded_work() {
    run("guarded_work");
}

#[test]
fn blocking_guarded_work() {
    run("blocking_guarded_work");
}

#[test]
fn report() {
    run("report");
}

/// The repository README's Rust example is `examples/report.rs`, word for word, so the code
/// users read is the code this suite runs.
#[test]
fn the_readme_shows_the_report_example() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("../../README.md")).unwrap();
    let example = std::fs::read_to_string(root.join("examples/report.rs")).unwrap();
    let block = format!("```rust,no_run\n{example}```");
    assert!(
        readme.contains(&block),
        "README.md's Rust block differs from examples/report.rs"
    );
}
