//! The benchmark's smoke run (`--quick`): every scenario with tiny counts, so the benchmark
//! cannot rot; the abuse scenario (11) must lose nothing well-behaved. etcd's rows are required when etcd is installed (scripts/test.sh installs it)
//! and say "not measured" otherwise.

use std::{path::Path, process::Command, time::Instant};

use serde_json::Value;

#[test]
fn quick_run_measures_every_system() {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("bench.json");
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_zkcoord-bench"))
        .arg("--quick")
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run zkcoord-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "zkcoord-bench --quick failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    eprintln!("{stderr}\n{stdout}\n(took {:?})", started.elapsed());
    assert!(stdout.contains("| scenario | system |"), "no table on stdout:\n{stdout}");

    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).expect("read the JSON")).expect("JSON");
    assert!(report["cores"].as_u64().is_some_and(|n| n >= 1), "cores: {}", report["cores"]);
    let rows = report["rows"].as_array().expect("rows");
    let etcd_installed = Path::new("/usr/bin/etcd").exists();
    let measured = |scenario: &str, system: &str| {
        rows.iter().any(|r| {
            r["scenario"].as_str().is_some_and(|s| s.starts_with(scenario))
                && r["system"] == system
                && r["note"].is_null()
                && r["cpu"].is_object()
        })
    };
    for scenario in ["1 ", "4 "] {
        let mut systems = vec!["zkcoord", "zookeeper"];
        if etcd_installed {
            systems.push("etcd");
        }
        for system in systems {
            assert!(measured(scenario, system), "scenario {scenario}not measured on {system}:\n{stdout}");
        }
    }
    // Issue 17: the abuse scenario measures both phases, and nobody well-behaved lost anything
    // (a loss makes the scenario a "not measured" row naming it).
    let abuse: Vec<&Value> =
        rows.iter().filter(|r| r["scenario"].as_str().is_some_and(|s| s.starts_with("11 "))).collect();
    assert_eq!(abuse.len(), 2, "scenario 11 should give a row per phase:\n{stdout}");
    for row in &abuse {
        assert!(row["note"].is_null() && row["cpu"].is_object(), "scenario 11 not measured: {row}");
        assert_eq!(row["metrics"]["leases_lost"].as_f64(), Some(0.0), "{row}");
        assert_eq!(row["metrics"]["leaderships_lost"].as_f64(), Some(0.0), "{row}");
    }
    let refused = abuse[1]["metrics"].as_object().expect("metrics").iter().any(|(name, count)| {
        name.starts_with("abuser ") && name.ends_with(" ResourceExhausted") && count.as_f64().is_some_and(|n| n > 0.0)
    });
    assert!(refused, "the abuser reached no limit in phase B: {}", abuse[1]);
    for row in rows {
        if row["note"].is_null() {
            assert!(row["metrics"].as_object().is_some_and(|m| !m.is_empty()), "a measured row without figures: {row}");
        }
    }
}
