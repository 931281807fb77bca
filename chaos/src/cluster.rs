//! The orchestrator of a run: a 3-node ZooKeeper ensemble with proxied quorum links, three
//! zkcoord instances each reaching ZooKeeper through its own proxies, candidate, locker and
//! shard member processes each reaching the instances through their own proxies, and the
//! fault schedule.
//! Every process is a child of the orchestrator's main thread (PR_SET_PDEATHSIG), stopped by
//! PID at the end; every wait is bounded.

use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use tokio::runtime::Runtime;
use zkcoord_client::{
    Client,
    pb::{LeaderRequest, TransferRequest, election_client::ElectionClient},
};

use crate::{
    check,
    clock::now_ns,
    faults::{FaultKind, Planned, schedule},
    harness::{
        proxy::{Direction, Proxy},
        zk::{Ensemble, free_ports},
    },
    history::{Event, Recorder},
    procs,
    rng::Rng,
    store::Store,
    workload::{ELECTION_NAME, unhealthy_flag},
};

/// The ZooKeeper session timeout of the zkcoord instances: short, so faults matter.
pub const SESSION_TIMEOUT: &str = "2s";
/// Time for everything to start before the first fault.
const WARMUP: Duration = Duration::from_secs(8);
/// Shard members start this far apart.
const MEMBER_STAGGER: Duration = Duration::from_millis(1500);
/// The longest any admin call (Leader, Transfer) may take.
const ADMIN_DEADLINE: Duration = Duration::from_secs(5);

/// What to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The seed of the fault schedule and the workload.
    pub seed: u64,
    /// The whole run, warm-up and quiet period included.
    pub duration: Duration,
    /// The run directory (history, logs, report).
    pub dir: PathBuf,
    /// Candidate processes.
    pub candidates: usize,
    /// Locker processes.
    pub lockers: usize,
    /// Shard member processes.
    pub members: usize,
    /// Candidate 0 and member 0 ignore validity (tests the checker).
    pub broken: bool,
    /// Fault kinds to draw from.
    pub faults: Vec<FaultKind>,
    /// Fault-free time at the end (the liveness bound is checked in it).
    pub quiet: Duration,
    /// The `zkcoord` binary.
    pub zkcoord: PathBuf,
}

/// A zkcoord instance process.
struct Instance {
    name: String,
    addr: SocketAddr,
    hosts: String,
    log: PathBuf,
    child: Option<Child>,
    /// Its links to the ZooKeeper members.
    zk_links: Vec<Proxy>,
}

impl Instance {
    fn spawn(&mut self, zkcoord: &Path) -> std::io::Result<()> {
        let log = fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut cmd = Command::new(zkcoord);
        cmd.args(["serve", "--listen", &self.addr.to_string(), "--zookeeper", &self.hosts])
            .args(["--session-timeout", SESSION_TIMEOUT, "--shutdown-grace", "1s"])
            .env_remove("ZKCOORD_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        let mut child = procs::spawn(cmd)?;
        let stdout = child.stdout.take().ok_or_else(|| std::io::Error::other("no stdout"))?;
        let mut line = String::new();
        // zkcoord prints its address once listening, or exits (EOF).
        BufReader::new(stdout).read_line(&mut line)?;
        if !line.starts_with("zkcoord listening on ") {
            procs::kill(&mut child);
            return Err(std::io::Error::other(format!(
                "{} did not start: {line:?}; see {}",
                self.name,
                self.log.display()
            )));
        }
        self.child = Some(child);
        Ok(())
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// A client process (candidate, locker, shard member, preempting candidate).
struct ClientProc {
    child: Child,
    /// The instance (and, for instances, the ZooKeeper member) it starts on.
    home: usize,
    /// Its links to the instances, by instance index.
    links: Vec<Proxy>,
}

/// Everything a run started.
struct Cluster {
    opts: RunOptions,
    runtime: Runtime,
    ensemble: Ensemble,
    instances: Vec<Instance>,
    clients: BTreeMap<String, ClientProc>,
    rec: Recorder,
    until_ns: u64,
    begin_ns: u64,
    preemptors: usize,
}

/// Runs the workload under the fault schedule, then the checker; returns the checker's report.
///
/// # Errors
/// When the cluster cannot be started or the history not read.
pub fn run(opts: RunOptions) -> std::io::Result<check::Report> {
    fs::create_dir_all(&opts.dir)?;
    if fs::read_dir(&opts.dir)?.next().is_some() {
        return Err(std::io::Error::other(format!("run directory {} is not empty", opts.dir.display())));
    }
    fs::create_dir_all(opts.dir.join("ctl"))?;
    Store::new(&opts.dir)?;
    println!(
        "zkcoord-chaos: seed {} duration {:?} dir {} (replay: zkcoord-chaos run --seed {} --duration {}s ...)",
        opts.seed,
        opts.duration,
        opts.dir.display(),
        opts.seed,
        opts.duration.as_secs()
    );
    let mut cluster = Cluster::start(opts)?;
    let outcome = cluster.drive();
    cluster.stop();
    outcome?;
    let events = crate::history::load(&cluster.opts.dir)?;
    let accepted = Store::accepted(&cluster.opts.dir)?;
    let report = check::check(&events, &accepted, check::Bounds::default());
    let text = report.render(check::origin(&events));
    fs::write(cluster.opts.dir.join("report.txt"), &text)?;
    println!("zkcoord-chaos: seed {}\n{text}", cluster.opts.seed);
    Ok(report)
}

impl Cluster {
    fn start(opts: RunOptions) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        let rec = Recorder::open(&opts.dir.join("faults.jsonl"))?;
        let ensemble = Ensemble::start_in(&opts.dir.join("zk"), 3, true);
        let ports = free_ports(3);
        let mut instances = Vec::new();
        for (k, port) in ports.iter().enumerate() {
            let zk_links: Vec<Proxy> = (0..3)
                .map(|j| {
                    Proxy::start_on(
                        runtime.handle(),
                        ensemble.members[(k + j) % 3].address().parse().expect("an address"),
                    )
                })
                .collect();
            let hosts = zk_links.iter().map(|p| p.addr.to_string()).collect::<Vec<_>>().join(",") + "/chaos";
            let mut instance = Instance {
                name: format!("zkcoord-{k}"),
                addr: ([127, 0, 0, 1], *port).into(),
                hosts,
                log: opts.dir.join(format!("zkcoord-{k}.log")),
                child: None,
                zk_links,
            };
            instance.spawn(&opts.zkcoord)?;
            instances.push(instance);
        }
        let begin_ns = now_ns();
        let until_ns = begin_ns + opts.duration.as_nanos() as u64;
        let mut cluster = Self {
            opts,
            runtime,
            ensemble,
            instances,
            clients: BTreeMap::new(),
            rec,
            until_ns,
            begin_ns,
            preemptors: 0,
        };
        cluster.rec.record(&Event::Run { t: begin_ns, phase: "begin".into() });
        let mut rng = Rng::new(cluster.opts.seed);
        for i in 0..cluster.opts.candidates {
            let ttl = rng.range(1000, 3000);
            let broken = cluster.opts.broken && i == 0;
            cluster.spawn_client(
                &format!("cand-{i}"),
                i,
                &["candidate", "--priority", "10", "--ttl-ms", &ttl.to_string()],
                broken,
            )?;
        }
        for i in 0..cluster.opts.lockers {
            let ttl = rng.range(1000, 3000);
            cluster.spawn_client(&format!("lock-{i}"), i, &["locker", "--ttl-ms", &ttl.to_string()], false)?;
        }
        for i in 0..cluster.opts.members {
            let ttl = rng.range(1000, 3000);
            // One after another: member 0 owns every shard first, then hands some to each
            // newcomer.
            let delay = MEMBER_STAGGER.as_millis() as u64 * i as u64;
            let broken = cluster.opts.broken && i == 0;
            cluster.spawn_client(
                &format!("member-{i}"),
                i,
                &["member", "--ttl-ms", &ttl.to_string(), "--delay-ms", &delay.to_string()],
                broken,
            )?;
        }
        Ok(cluster)
    }

    /// Starts client process `name` with its own proxies to the instances, starting at
    /// instance `index % 3`.
    fn spawn_client(&mut self, name: &str, index: usize, args: &[&str], broken: bool) -> std::io::Result<()> {
        let links: Vec<Proxy> = self.instances.iter().map(|i| Proxy::start_on(self.runtime.handle(), i.addr)).collect();
        let endpoints: Vec<String> =
            (0..links.len()).map(|j| links[(index + j) % links.len()].addr.to_string()).collect();
        let log = fs::File::create(self.opts.dir.join(format!("{name}.log")))?;
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args(args)
            .args(["--name", name, "--dir"])
            .arg(&self.opts.dir)
            .args(["--endpoints", &endpoints.join(",")])
            .args(["--seed", &(self.opts.seed ^ fnv1a(name)).to_string()])
            .args(["--until-ns", &self.until_ns.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if broken {
            cmd.arg("--broken");
        }
        let child = procs::spawn(cmd)?;
        self.clients.insert(name.to_owned(), ClientProc { child, home: index % 3, links });
        Ok(())
    }

    fn fault(&self, kind: FaultKind, target: &str, phase: &str) {
        self.rec.record(&Event::Fault {
            t: now_ns(),
            kind: kind.name().to_owned(),
            target: target.to_owned(),
            phase: phase.to_owned(),
        });
        println!("zkcoord-chaos: +{:>6.1}s {phase:5} {kind} {target}", self.elapsed());
    }

    /// Seconds since `begin`, as the checker's report counts.
    fn elapsed(&self) -> f64 {
        (now_ns() as f64 - self.begin_ns as f64) / 1e9
    }

    fn note(&self, what: String) {
        self.rec.record(&Event::Status { t: now_ns(), owner: "chaos".into(), what });
    }

    fn sleep_bounded(&self, d: Duration) {
        let left = Duration::from_nanos(self.until_ns.saturating_sub(now_ns()));
        std::thread::sleep(d.min(left));
    }

    /// The warm-up, the faults, the quiet period.
    fn drive(&mut self) -> std::io::Result<()> {
        std::thread::sleep(WARMUP.min(self.opts.duration / 4));
        self.rec.record(&Event::Run { t: now_ns(), phase: "start".into() });
        let faults_until = self.until_ns.saturating_sub(self.opts.quiet.as_nanos() as u64);
        let plan = schedule(self.opts.seed, &self.opts.faults, 1000);
        for planned in plan {
            // Each fault must heal before the quiet period.
            if now_ns() + (planned.hold + Duration::from_secs(5)).as_nanos() as u64 > faults_until {
                break;
            }
            self.inject(planned)?;
            self.sleep_bounded(planned.gap);
        }
        self.rec.record(&Event::Run { t: now_ns(), phase: "quiet".into() });
        println!("zkcoord-chaos: +{:>6.1}s quiet until the end", self.elapsed());
        self.sleep_bounded(self.opts.duration);
        self.rec.record(&Event::Run { t: now_ns(), phase: "end".into() });
        Ok(())
    }

    fn inject(&mut self, p: Planned) -> std::io::Result<()> {
        let kind = p.kind;
        let mut pick = Rng::new(p.pick);
        match kind {
            FaultKind::InstanceKill => {
                let k = self.near_leader(&mut pick).unwrap_or_else(|| pick.below(self.instances.len()));
                let target = self.instances[k].name.clone();
                self.fault(kind, &target, "start");
                if let Some(mut child) = self.instances[k].child.take() {
                    procs::kill(&mut child);
                }
                self.sleep_bounded(p.hold);
                let zkcoord = self.opts.zkcoord.clone();
                // The port may take a moment to be free again.
                let mut started = self.instances[k].spawn(&zkcoord);
                for _ in 0..20 {
                    if started.is_ok() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(250));
                    started = self.instances[k].spawn(&zkcoord);
                }
                started?;
                self.fault(kind, &target, "heal");
            }
            FaultKind::InstanceFreeze => {
                let k = self.near_leader(&mut pick).unwrap_or_else(|| pick.below(self.instances.len()));
                let target = self.instances[k].name.clone();
                let pid = self.instances[k].pid();
                self.fault(kind, &target, "start");
                pid.into_iter().for_each(|pid| procs::pause(pid, true));
                self.sleep_bounded(p.hold);
                pid.into_iter().for_each(|pid| procs::pause(pid, false));
                self.fault(kind, &target, "heal");
            }
            FaultKind::InstanceZkCut => {
                let k = self.near_leader(&mut pick).unwrap_or_else(|| pick.below(self.instances.len()));
                let target = self.instances[k].name.clone();
                self.fault(kind, &target, "start");
                self.instances[k].zk_links.iter().for_each(|l| l.stall(Direction::Both));
                self.sleep_bounded(p.hold);
                self.instances[k].zk_links.iter().for_each(Proxy::resume);
                self.fault(kind, &target, "heal");
            }
            FaultKind::ClientPause => {
                let leader = if pick.chance(50) { self.leader() } else { None };
                // Otherwise a shard member half the time (its shards then move by timeout).
                let member = if pick.chance(50) { self.member(&mut pick) } else { None };
                let names: Vec<String> = self.clients.keys().cloned().collect();
                let target = leader
                    .filter(|l| self.clients.contains_key(l))
                    .or(member)
                    .unwrap_or_else(|| names[pick.below(names.len())].clone());
                self.pause_client(kind, &target, p.hold, |_| {});
            }
            FaultKind::ClientLinkStall => {
                let names: Vec<String> = self.clients.keys().cloned().collect();
                let name = names[pick.below(names.len())].clone();
                let index = name.rsplit('-').next().and_then(|n| n.parse::<usize>().ok()).unwrap_or(0);
                // Mostly the instance it starts on (likely the one it uses).
                let k = if pick.chance(60) { index % 3 } else { pick.below(3) };
                let direction = [Direction::Both, Direction::Upstream, Direction::Downstream][pick.below(3)];
                let target = format!("{name}->zkcoord-{k}:{direction:?}");
                self.fault(kind, &target, "start");
                if let Some(c) = self.clients.get(&name) {
                    c.links[k].stall(direction);
                }
                self.sleep_bounded(p.hold);
                if let Some(c) = self.clients.get(&name) {
                    c.links[k].resume();
                }
                self.fault(kind, &target, "heal");
            }
            FaultKind::ZkLeaderKill | FaultKind::ZkFollowerKill => {
                let want = if kind == FaultKind::ZkLeaderKill { "leader" } else { "follower" };
                let Some(m) = self.zk_member(want, &mut pick) else {
                    self.note(format!("{kind}: no {want} found; skipped"));
                    return Ok(());
                };
                let target = format!("zk-{}", m + 1);
                self.fault(kind, &target, "start");
                self.ensemble.members[m].kill();
                self.sleep_bounded(p.hold);
                self.ensemble.members[m].spawn();
                self.ensemble.members[m].wait_serving();
                self.fault(kind, &target, "heal");
            }
            FaultKind::ZkFollowerIsolate => {
                // Mostly the member the leader's instance prefers, when it is a follower.
                let preferred = self
                    .near_leader(&mut pick)
                    .filter(|&k| self.ensemble.members[k].mode().as_deref() == Some("follower"));
                let Some(m) = preferred.or_else(|| self.zk_member("follower", &mut pick)) else {
                    self.note(format!("{kind}: no follower found; skipped"));
                    return Ok(());
                };
                let target = format!("zk-{}", m + 1);
                self.fault(kind, &target, "start");
                self.ensemble.isolate(m);
                self.sleep_bounded(p.hold);
                self.ensemble.heal(m);
                self.fault(kind, &target, "heal");
            }
            FaultKind::Transfer => {
                let target = self.leader().unwrap_or_else(|| "none".into());
                self.fault(kind, &target, "start");
                self.transfer();
                self.fault(kind, &target, "heal");
            }
            FaultKind::Preempt => {
                let name = self.spawn_preemptor(p.hold)?;
                self.fault(kind, &name, "start");
                self.sleep_bounded(p.hold);
                self.fault(kind, &name, "heal");
            }
            FaultKind::HealthFlip => {
                // A shard member a third of the time (it gets no shards while NOT_SERVING: all
                // of its shards are handed off, and some come back).
                let member = if pick.chance(33) { self.member(&mut pick) } else { None };
                let leader = || self.leader().filter(|l| l.starts_with("cand-"));
                let target = member
                    .or_else(leader)
                    .unwrap_or_else(|| format!("cand-{}", pick.below(self.opts.candidates.max(1))));
                let flag = unhealthy_flag(&self.opts.dir, &target);
                self.fault(kind, &target, "start");
                fs::write(&flag, b"")?;
                self.sleep_bounded(p.hold);
                let _ = fs::remove_file(&flag);
                self.fault(kind, &target, "heal");
            }
            FaultKind::TransferWhilePaused => {
                let Some(leader) = self.leader().filter(|l| self.clients.contains_key(l)) else {
                    self.note(format!("{kind}: no leader found; skipped"));
                    return Ok(());
                };
                self.pause_client(kind, &leader, p.hold, |c| c.transfer());
            }
            FaultKind::PreemptWhilePaused => {
                let Some(leader) = self.leader().filter(|l| self.clients.contains_key(l)) else {
                    self.note(format!("{kind}: no leader found; skipped"));
                    return Ok(());
                };
                let lifetime = p.hold + Duration::from_secs(3);
                self.pause_client(kind, &leader, p.hold, |c| {
                    if let Err(error) = c.spawn_preemptor(lifetime) {
                        c.note(format!("preemptor not started: {error}"));
                    }
                });
            }
        }
        Ok(())
    }

    /// SIGSTOPs client `name` for `hold`, doing `meanwhile` right after stopping it.
    fn pause_client(&mut self, kind: FaultKind, name: &str, hold: Duration, meanwhile: impl FnOnce(&mut Self)) {
        let Some(pid) = self.clients.get(name).map(|c| c.child.id()) else { return };
        self.fault(kind, name, "start");
        procs::pause(pid, true);
        meanwhile(self);
        self.sleep_bounded(hold);
        procs::pause(pid, false);
        self.fault(kind, name, "heal");
    }

    /// A candidate with the best priority, for `lifetime`; returns its name.
    fn spawn_preemptor(&mut self, lifetime: Duration) -> std::io::Result<String> {
        let name = format!("pre-{}", self.preemptors);
        self.preemptors += 1;
        let index = self.opts.candidates + self.preemptors;
        let lifetime_ms = lifetime.as_millis().to_string();
        self.spawn_client(
            &name,
            index,
            &["candidate", "--priority", "0", "--ttl-ms", "2000", "--lifetime-ms", &lifetime_ms],
            false,
        )?;
        Ok(name)
    }

    /// Half the time, the instance the current leader's client starts on (likely the one
    /// holding its Campaign stream; instance k also prefers ZooKeeper member k).
    fn near_leader(&self, pick: &mut Rng) -> Option<usize> {
        if !pick.chance(50) {
            return None;
        }
        self.leader().and_then(|l| self.clients.get(&l)).map(|c| c.home)
    }

    /// A shard member process, at random (none when there are none).
    fn member(&self, pick: &mut Rng) -> Option<String> {
        (self.opts.members > 0).then(|| format!("member-{}", pick.below(self.opts.members)))
    }

    /// The index of a ZooKeeper member in `mode` (`leader`, `follower`).
    fn zk_member(&self, mode: &str, pick: &mut Rng) -> Option<usize> {
        let found: Vec<usize> = (0..self.ensemble.members.len())
            .filter(|&m| self.ensemble.members[m].mode().as_deref() == Some(mode))
            .collect();
        (!found.is_empty()).then(|| found[pick.below(found.len())])
    }

    /// An admin client to the instances directly (not through the clients' proxies).
    fn admin(&self) -> Option<Client> {
        let _entered = self.runtime.enter();
        Client::new(self.instances.iter().map(|i| i.addr.to_string())).ok()
    }

    /// The current leader's candidate id, asked of the instances.
    fn leader(&self) -> Option<String> {
        let client = self.admin()?;
        let answer = self.runtime.block_on(async {
            tokio::time::timeout(
                ADMIN_DEADLINE,
                client.retrying(|channel| async move {
                    ElectionClient::new(channel).leader(LeaderRequest { election: ELECTION_NAME.into() }).await
                }),
            )
            .await
        });
        match answer {
            Ok(Ok(response)) => response.into_inner().leader.map(|l| l.candidate_id),
            other => {
                self.note(format!("Election.Leader: {other:?}"));
                None
            }
        }
    }

    /// Election.Transfer to the next eligible candidate (no `from`: an operator's transfer).
    fn transfer(&self) {
        let Some(client) = self.admin() else { return };
        let answer = self.runtime.block_on(async {
            tokio::time::timeout(
                ADMIN_DEADLINE,
                client.retrying(|channel| async move {
                    let request = TransferRequest { election: ELECTION_NAME.into(), ..Default::default() };
                    ElectionClient::new(channel).transfer(request).await
                }),
            )
            .await
        });
        let what = match answer {
            Ok(Ok(response)) => {
                format!("Election.Transfer: new leader {:?}", response.into_inner().leader.map(|l| l.candidate_id))
            }
            Ok(Err(error)) => format!("Election.Transfer: {error}"),
            Err(_) => "Election.Transfer: no answer within the deadline".into(),
        };
        println!("zkcoord-chaos:          {what}");
        self.note(what);
    }

    /// Waits for the clients to finish (bounded), then stops everything by PID.
    fn stop(&mut self) {
        for client in self.clients.values_mut() {
            procs::pause(client.child.id(), false);
        }
        let grace = Duration::from_secs(30);
        let deadline = std::time::Instant::now() + grace;
        for client in self.clients.values_mut() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            procs::wait_or_kill(&mut client.child, left.max(Duration::from_millis(100)));
        }
        for instance in &mut self.instances {
            if let Some(mut child) = instance.child.take() {
                procs::pause(child.id(), false);
                procs::kill(&mut child);
            }
        }
        for member in &mut self.ensemble.members {
            member.kill();
        }
    }
}

/// FNV-1a of `name`: each process's own seed from the run's.
fn fnv1a(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}
