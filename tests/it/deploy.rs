//! `deploy/`: the Kubernetes manifests parse and agree with each other and with zkcoord (ports,
//! probes, config), the systemd unit and the Dockerfile are hardened, and the local
//! production-like script really runs a 3-node ensemble with two zkcoord instances that a
//! client can fail over between.

#![allow(clippy::unwrap_used)]

use crate::support;

use std::{
    collections::BTreeMap,
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use tonic_health::pb::health_check_response::ServingStatus;
use yaml_rust2::{Yaml, YamlLoader};
use zkcoord::{config::Config, server::LIVENESS_SERVICE};
use zkcoord_client::{Client, LeaseKeeper, LeaseOptions};

fn deploy(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy").join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Follows a path of mapping keys and sequence indexes (`"0"`, `"1"`, …).
fn at<'a>(doc: &'a Yaml, path: &str) -> &'a Yaml {
    path.split('.').fold(doc, |node, key| match key.parse::<usize>() {
        Ok(i) => &node[i],
        Err(_) => &node[key],
    })
}

fn string_map(node: &Yaml) -> BTreeMap<String, String> {
    node.as_hash()
        .unwrap_or_else(|| panic!("a mapping, not {node:?}"))
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().to_owned(), v.as_str().unwrap().to_owned()))
        .collect()
}

fn is_subset(part: &BTreeMap<String, String>, whole: &BTreeMap<String, String>) -> bool {
    part.iter().all(|(k, v)| whole.get(k) == Some(v))
}

#[test]
fn kubernetes_manifests_agree_with_each_other_and_with_zkcoord() {
    let kustomization = &YamlLoader::load_from_str(&read(&deploy("kubernetes/kustomization.yaml"))).unwrap()[0];
    let mut by_kind = BTreeMap::new();
    for resource in kustomization["resources"].as_vec().unwrap() {
        let path = deploy(&format!("kubernetes/{}", resource.as_str().unwrap()));
        for doc in YamlLoader::load_from_str(&read(&path)).unwrap() {
            let kind = doc["kind"].as_str().unwrap_or_else(|| panic!("{} has a kind", path.display())).to_owned();
            assert!(doc["apiVersion"].as_str().is_some(), "{kind} has an apiVersion");
            assert_eq!(doc["metadata"]["name"].as_str(), Some("zkcoord"), "{kind} is named zkcoord");
            by_kind.insert(kind, doc);
        }
    }
    let kinds: Vec<&str> = by_kind.keys().map(String::as_str).collect();
    assert_eq!(kinds, ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service"]);

    let deployment = &by_kind["Deployment"];
    assert!(at(deployment, "spec.replicas").as_i64().unwrap() >= 2, "at least two replicas");
    let pod_labels = string_map(at(deployment, "spec.template.metadata.labels"));
    assert!(is_subset(&string_map(at(deployment, "spec.selector.matchLabels")), &pod_labels));
    assert!(is_subset(&string_map(at(&by_kind["Service"], "spec.selector")), &pod_labels), "Service selects the pods");
    assert!(
        is_subset(&string_map(at(&by_kind["PodDisruptionBudget"], "spec.selector.matchLabels")), &pod_labels),
        "the PDB selects the pods"
    );
    assert!(at(&by_kind["PodDisruptionBudget"], "spec.minAvailable").as_i64().unwrap() >= 1);

    let pod = at(deployment, "spec.template.spec");
    assert_eq!(at(pod, "securityContext.runAsNonRoot").as_bool(), Some(true));
    let container = at(pod, "containers.0");
    assert_eq!(at(container, "securityContext.readOnlyRootFilesystem").as_bool(), Some(true));
    assert_eq!(at(container, "securityContext.allowPrivilegeEscalation").as_bool(), Some(false));
    assert_eq!(at(container, "ports.0.name").as_str(), Some("grpc"));
    let port = at(container, "ports.0.containerPort").as_i64().unwrap();
    assert_eq!(at(&by_kind["Service"], "spec.ports.0.targetPort").as_str(), Some("grpc"));
    // Readiness follows the ZooKeeper session (""), liveness only the process.
    assert_eq!(at(container, "readinessProbe.grpc.port").as_i64(), Some(port));
    assert!(at(container, "readinessProbe.grpc.service").is_badvalue(), "readiness checks the whole server");
    assert_eq!(at(container, "livenessProbe.grpc.port").as_i64(), Some(port));
    assert_eq!(at(container, "livenessProbe.grpc.service").as_str(), Some(LIVENESS_SERVICE));

    // The container reads the ConfigMap's file, and zkcoord accepts it and listens on the port.
    let args: Vec<&str> = at(container, "args").as_vec().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    let config_path = Path::new(args[args.iter().position(|a| *a == "--config").unwrap() + 1]);
    assert_eq!(at(container, "volumeMounts.0.mountPath").as_str(), config_path.parent().unwrap().to_str());
    assert_eq!(at(pod, "volumes.0.configMap.name").as_str(), Some("zkcoord"));
    let file_name = config_path.file_name().unwrap().to_str().unwrap();
    let toml = by_kind["ConfigMap"]["data"][file_name].as_str().expect("the ConfigMap holds the config file");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(file_name);
    std::fs::write(&file, toml).unwrap();
    let config = Config::resolve(Default::default(), Some(file), |_| None).expect("zkcoord accepts the ConfigMap");
    assert_eq!(i64::from(config.listen.port()), port);
    assert_eq!(
        config.metrics_listen.map(|a| i64::from(a.port())),
        at(container, "ports.1.containerPort").as_i64(),
        "the metrics port is declared"
    );
    assert_eq!(at(deployment, "spec.template.metadata.annotations").as_hash().map(|a| a.len()), Some(3));
    assert!(
        Duration::from_secs(at(pod, "terminationGracePeriodSeconds").as_i64().unwrap() as u64) > config.shutdown_grace,
        "Kubernetes waits longer than zkcoord drains"
    );
}

#[test]
fn the_systemd_unit_is_hardened() {
    let unit = read(&deploy("systemd/zkcoord.service"));
    let settings: Vec<(&str, &str)> =
        unit.lines().filter(|l| !l.starts_with('#') && !l.starts_with('[')).filter_map(|l| l.split_once('=')).collect();
    let get = |key: &str| settings.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    assert!(get("ExecStart").unwrap().contains(" serve --config "), "runs zkcoord serve with a config file");
    for (key, value) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("DynamicUser", "yes"),
        ("CapabilityBoundingSet", ""),
        ("KillSignal", "SIGTERM"),
        ("MemoryDenyWriteExecute", "yes"),
    ] {
        assert_eq!(get(key), Some(value), "{key}");
    }
    let stop_timeout: u64 = get("TimeoutStopSec").unwrap().parse().unwrap();
    assert!(stop_timeout > 10, "systemd waits longer than the default shutdown_grace (10 s)");
}

#[test]
fn the_dockerfile_builds_in_one_stage_and_runs_as_non_root_in_another() {
    let dockerfile = read(&deploy("Dockerfile"));
    let instructions: Vec<&str> = dockerfile.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).collect();
    assert_eq!(instructions.iter().filter(|l| l.starts_with("FROM ")).count(), 2, "multi-stage");
    assert!(instructions.iter().any(|l| l.contains("cargo build --release --locked")));
    let user = instructions.iter().rev().find_map(|l| l.strip_prefix("USER ")).expect("a USER");
    let uid = user.split(':').next().unwrap();
    assert!(uid.parse::<u32>().is_ok_and(|uid| uid != 0), "a numeric non-root user, not {user:?}");
    let last_from = instructions.iter().rposition(|l| l.starts_with("FROM ")).unwrap();
    let user_at = instructions.iter().rposition(|l| l.starts_with("USER ")).unwrap();
    assert!(user_at > last_from, "the runtime stage sets the user");
    assert!(instructions.iter().any(|l| l.starts_with("ENTRYPOINT") && l.contains("zkcoord")));
}

/// A base port with the 22 ports the script uses free.
fn free_base_port() -> u16 {
    (0..200)
        .map(|i| 20_000 + ((std::process::id() as u16 % 500) * 40 + i * 97) % 30_000)
        .find(|base| (0..22).all(|p| TcpListener::bind(("127.0.0.1", base + p)).is_ok()))
        .expect("a free port range")
}

/// Runs `deploy/local-cluster.sh down` when dropped, so a failing test stops everything.
struct Cluster {
    dir: tempfile::TempDir,
    base: u16,
}

impl Cluster {
    fn run(&self, args: &[&str]) -> String {
        let output = Command::new(deploy("local-cluster.sh"))
            .args(args)
            .arg(self.dir.path())
            .env("BASE_PORT", self.base.to_string())
            .env("ZKCOORD_BIN", env!("CARGO_BIN_EXE_zkcoord"))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "local-cluster.sh {args:?}: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(deploy("local-cluster.sh"))
            .arg("down")
            .arg(self.dir.path())
            .env("BASE_PORT", self.base.to_string())
            .output();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_local_cluster_script_runs_an_ensemble_and_two_instances_to_fail_over_between() {
    let cluster = Cluster { dir: tempfile::tempdir().unwrap(), base: free_base_port() };
    let up = tokio::task::block_in_place(|| cluster.run(&["up"]));
    let endpoints = up.lines().find_map(|l| l.strip_prefix("zkcoord endpoints:")).expect("endpoints printed").trim();
    let endpoints: Vec<&str> = endpoints.split(',').collect();
    assert_eq!(endpoints.len(), 2);
    for endpoint in &endpoints {
        support::wait_serving(endpoint.parse().unwrap()).await;
    }

    let client = Client::new(&endpoints).unwrap();
    let lease = LeaseKeeper::grant(&client, LeaseOptions::new("by-hand", Duration::from_secs(2))).await.unwrap();
    // The instance the lease is kept on dies, and so does a ZooKeeper member: the lease lives on.
    tokio::task::block_in_place(|| {
        cluster.run(&["kill", "zkcoord1"]);
        cluster.run(&["kill", "zk1"]);
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(lease.is_confirmed(), "the lease lives on through zkcoord2: {:?}", lease.status());
    let status = tokio::task::block_in_place(|| cluster.run(&["status"]));
    assert!(status.contains("zkcoord1 stopped") && status.contains("zkcoord2 running"), "{status}");
    let channel = support::channel(endpoints[1].parse().unwrap()).await;
    assert_eq!(support::health(&channel, "").await, ServingStatus::Serving);

    tokio::task::block_in_place(|| cluster.run(&["start", "zkcoord1"]));
    support::wait_serving(endpoints[0].parse().unwrap()).await;
    lease.revoke().await.unwrap();
    let down = tokio::task::block_in_place(|| {
        cluster.run(&["down"]);
        cluster.run(&["status"])
    });
    assert_eq!(down.matches("stopped").count(), 5, "everything stopped: {down}");
}
