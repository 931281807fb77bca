//! zkcoord's integration tests: one test binary, compiled and linked once, with one module per
//! area. A module's tests run alone with `cargo test --test it <module>::`, e.g.
//! `cargo test --test it lease_failures::`. Tests of all modules run in parallel threads of
//! this one process; what they share is in [`support`] (one standalone ZooKeeper for the tests
//! that do not kill it, each test in a namespace of its own).

#[path = "../support/mod.rs"]
mod support;

mod api_surface;
mod authz;
mod cleanup;
mod cli;
mod client;
mod config;
mod deploy;
mod election;
mod election_failures;
mod election_safety;
mod flow_workers;
mod health;
mod java_client;
mod lease;
mod lease_failures;
mod limits;
mod lock;
mod lock_client;
mod lock_failures;
mod master_standby;
mod metrics;
mod paging;
mod python;
mod python_client;
mod shard_member;
mod shards;
mod tenants;
mod tls;
mod traces;
mod zk_cost;
mod zk_quorum;
mod zk_security;

/// Every integration test is a module of this binary: no `tests/*.rs` of its own (Cargo.toml
/// sets `autotests = false`, so it would never run), and every `tests/it/*.rs` is declared
/// above (an undeclared one would never be compiled).
#[test]
fn every_integration_test_file_is_a_module_of_this_binary() {
    let tests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let rust_files = |dir: &std::path::Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .map(|entry| entry.expect("a directory entry").file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".rs"))
            .collect();
        names.sort();
        names
    };
    assert_eq!(rust_files(&tests), Vec::<String>::new(), "tests/*.rs belong in tests/it/ as modules");
    let main = std::fs::read_to_string(tests.join("it/main.rs")).expect("read tests/it/main.rs");
    for file in rust_files(&tests.join("it")) {
        let module = file.trim_end_matches(".rs");
        assert!(
            module == "main" || main.lines().any(|line| line == format!("mod {module};")),
            "tests/it/{file} is not declared in tests/it/main.rs"
        );
    }
}
