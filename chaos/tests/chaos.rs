//! The chaos suite as part of the test suite: a 2-minute run with a fixed seed must find no
//! violation, and a deliberately broken candidate and shard member must be caught.

#![allow(clippy::unwrap_used)]

use std::{
    path::PathBuf,
    process::{Command, Output},
    sync::Mutex,
};

/// One run at a time: each starts 3 JVMs, 3 zkcoord instances and 14 clients.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The CI run's seed (replay with `cargo run -p zkcoord-chaos -- run --seed 20261202 ...`).
const CI_SEED: u64 = 20_261_202;

/// The fault kinds the CI run draws from: every kind (the ones that found violations before
/// issue 12 included; see chaos/README.md, "Findings").
const CI_FAULTS: &str = "instance-kill,instance-freeze,instance-zk-cut,client-pause,client-link-stall,zk-leader-kill,\
zk-follower-kill,zk-follower-isolate,transfer,preempt,health-flip,transfer-while-paused,preempt-while-paused";

fn chaos() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_zkcoord-chaos"))
}

/// The `zkcoord` binary beside this package's binary (`cargo test --workspace` builds it);
/// built here when missing.
fn zkcoord() -> PathBuf {
    let path = chaos().with_file_name("zkcoord");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo).args(["build", "-p", "zkcoord", "--bin", "zkcoord"]).status().unwrap();
        assert!(status.success(), "cargo build -p zkcoord failed");
    }
    assert!(path.exists(), "{} is missing: cargo build -p zkcoord", path.display());
    path
}

fn run(args: &[&str], expect_violation: bool) -> (Output, String) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let output = Command::new(chaos())
        .arg("run")
        .args(args)
        .arg("--dir")
        .arg(&run_dir)
        .arg("--zkcoord")
        .arg(zkcoord())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    println!("{text}");
    if output.status.success() == expect_violation {
        // Keep the history of an unexpected outcome for a look.
        let kept = std::env::temp_dir().join(format!("zkcoord-chaos-failed-{}", std::process::id()));
        let _ = std::fs::rename(&run_dir, &kept);
        println!("history kept in {}", kept.display());
    }
    (output, text)
}

#[test]
fn two_minutes_of_faults_break_no_rule() {
    let seed = CI_SEED.to_string();
    let (output, text) = run(&["--seed", &seed, "--duration", "120s", "--faults", CI_FAULTS], false);
    assert!(output.status.success(), "the chaos run found a violation (seed {seed}):\n{text}");
    assert!(text.contains("VERDICT: OK"));
}

#[test]
fn the_checker_catches_a_candidate_and_a_shard_member_that_ignore_validity() {
    // Two candidates: every transfer moves leadership from one to the other, so the broken
    // one (cand-0) is deposed while it still acts. Three shard members (the default), member-0
    // broken.
    let (output, text) = run(
        &[
            "--seed",
            "7",
            "--duration",
            "35s",
            "--quiet",
            "8s",
            "--candidates",
            "2",
            "--lockers",
            "2",
            "--broken",
            "--faults",
            "transfer,health-flip",
        ],
        true,
    );
    assert_eq!(output.status.code(), Some(1), "the broken candidate went unnoticed:\n{text}");
    assert!(text.contains("FIRST VIOLATION"), "{text}");
    // The report's first violation of each kind: an overlap of the broken candidate's, and a
    // shard both the broken member and another acted on at once (member 0 joins first and
    // owns every shard; each newcomer takes some, which it keeps acting on).
    let first_of = |kind: &str| text.lines().find(|l| l.contains(&format!("[{kind}]"))).unwrap_or_default();
    assert!(first_of("overlap").contains("cand-0"), "the overlap names the broken candidate:\n{text}");
    assert!(first_of("shard-overlap").contains("member-0"), "the shard overlap names the broken member:\n{text}");
}
