//! The cross-language proof: a Python grpcio client (tests/python/cross_language.py, stubs
//! generated from proto/ by grpcio-tools) calls health, reflection and zkcoord RPCs on a real
//! zkcoord backed by a real ZooKeeper.
//!
//! The Python interpreter is `$ZKCOORD_TEST_PYTHON`, or the venv `scripts/test.sh` creates in
//! `target/pyvenv`. Without one this test fails (it never silently passes).

#![allow(clippy::unwrap_used)]

use crate::support;

use std::{path::PathBuf, process::Command, time::Duration};

#[tokio::test]
async fn python_grpcio_client_uses_the_service() {
    let python = support::python();
    let zk = support::zk::shared();
    let instance = support::start_zkcoord(&zk.hosts(), &support::namespace("python")).await;
    let addr = instance.addr().to_string();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/cross_language.py");
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::from(Command::new(python)).arg(script).args(["--addr", &addr]).output(),
    )
    .await
    .expect("the python client finishes within 120 s")
    .expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "python client failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("cross-language checks passed"), "{stdout}");
    instance.shutdown().await;
}
