//! The client processes: candidates campaigning in one election and lockers looping
//! Lock/Unlock, each through the Rust client library, acting only on a passing
//! [`certify`](crate::certify) check and recording everything in its history file.

use std::{
    collections::BTreeMap,
    future::Future,
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::time::{Instant, sleep, timeout};
use zkcoord_client::{
    CampaignOptions, Client, Error, LeaderElector, LeaseKeeper, LeaseOptions, LeaseStatus, LockGuard, LockOptions,
    ShardEvent, ShardMember, ShardOptions,
};

use crate::{
    certify::{Certificate, Certifier, ShardCertificate, ShardCertifier, ShardMode},
    clock::{now_ns, ns_of},
    history::{ELECTION, Event, Recorder, shard_res},
    rng::Rng,
    store::Store,
};

/// The election every candidate campaigns in.
pub const ELECTION_NAME: &str = "chaos";
/// The key every locker also locks alone.
pub const SOLO_KEY: &str = "solo";
/// The pool multi-key locks draw 3 keys from.
pub const POOL: [&str; 5] = ["k0", "k1", "k2", "k3", "k4"];
/// How long a Lock call waits at most (server side).
pub const LOCK_WAIT: Duration = Duration::from_secs(2);
/// What a call may take beyond its own deadline before it counts as hung.
pub const HANG_MARGIN: Duration = Duration::from_secs(20);
/// Deadline of calls that have none of their own (Grant, Campaign's first answer, Unlock, …).
pub const CALL_DEADLINE: Duration = Duration::from_secs(5);
/// Candidates write to the store at most this often while leading.
const WRITE_EVERY: Duration = Duration::from_millis(100);
/// The shard group every member joins.
pub const SHARD_GROUP: &str = "chaos";
/// Its number of shards.
pub const SHARD_COUNT: u32 = 16;
/// A member acts on (writes to the store for) each of its shards at most this often.
const ACT_EVERY: Duration = Duration::from_millis(250);
/// How long a graceful Leave waits for the member's shards to be handed off.
const LEAVE_WAIT: Duration = Duration::from_secs(5);
/// How long a member retries Join while its id is still bound to its previous (crashed)
/// incarnation's lease.
const JOIN_PATIENCE: Duration = Duration::from_secs(15);

/// What every client process is told.
#[derive(Clone, Debug)]
pub struct Common {
    /// Its name (candidate id / lease owner), also its history file's.
    pub name: String,
    /// The run directory.
    pub dir: PathBuf,
    /// zkcoord endpoints (its own proxies to the instances).
    pub endpoints: Vec<String>,
    /// Its random seed.
    pub seed: u64,
    /// When to stop (`CLOCK_MONOTONIC` ns).
    pub until_ns: u64,
}

/// One process's recording context.
struct Ctx {
    name: String,
    rec: Recorder,
    store: Store,
}

impl Ctx {
    fn open(common: &Common) -> std::io::Result<Self> {
        Ok(Self {
            name: common.name.clone(),
            rec: Recorder::open(&common.dir.join(format!("{}.jsonl", common.name)))?,
            store: Store::new(&common.dir)?,
        })
    }

    /// Runs `call` with a deadline of `deadline + HANG_MARGIN` and records how it ended.
    async fn call<T>(&self, rpc: &str, deadline: Duration, call: impl Future<Output = Result<T, Error>>) -> Option<T> {
        self.call_coded(rpc, deadline, call).await.ok()
    }

    /// [`Ctx::call`], with the code it ended with on failure.
    async fn call_coded<T>(
        &self,
        rpc: &str,
        deadline: Duration,
        call: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, String> {
        let t0 = now_ns();
        let outcome = timeout(deadline + HANG_MARGIN, call).await;
        let (code, message, value) = match outcome {
            Ok(Ok(value)) => ("Ok".to_owned(), String::new(), Some(value)),
            Ok(Err(Error::Status(status))) => (format!("{:?}", status.code()), status.message().to_owned(), None),
            Ok(Err(error)) => (format!("{error:?}").chars().take(40).collect(), error.to_string(), None),
            Err(_) => ("Hang".to_owned(), format!("no answer within {:?}", deadline + HANG_MARGIN), None),
        };
        self.rec.record(&Event::Call {
            t0,
            t1: now_ns(),
            owner: self.name.clone(),
            rpc: rpc.to_owned(),
            code: code.clone(),
            message,
            deadline_ms: deadline.as_millis() as u64,
        });
        value.ok_or(code)
    }

    fn status(&self, what: String) {
        self.rec.record(&Event::Status { t: now_ns(), owner: self.name.clone(), what });
    }

    fn cert(&self, res: &str, hold: &str, c: &Certificate, token: u64, exclusive: bool) {
        self.rec.record(&Event::Cert {
            t: ns_of(c.checked),
            until: ns_of(c.valid_until),
            owner: self.name.clone(),
            res: res.to_owned(),
            hold: hold.to_owned(),
            token,
            exclusive,
        });
    }

    fn stop(&self, res: &str, hold: &str) {
        self.stop_at(now_ns(), res, hold);
    }

    /// A stop decided at `t` (ns): a shard member's check that found a shard no longer valid
    /// (and maybe another ownership of it valid, recorded as from that same check).
    fn stop_at(&self, t: u64, res: &str, hold: &str) {
        self.rec.record(&Event::Stop { t, owner: self.name.clone(), res: res.to_owned(), hold: hold.to_owned() });
    }

    fn write(&self, res: &str, token: u64) {
        match self.store.write(res, token, &self.name) {
            Ok((accepted, highest, t)) => self.rec.record(&Event::Write {
                t,
                owner: self.name.clone(),
                res: res.to_owned(),
                token,
                accepted,
                highest,
            }),
            Err(error) => self.status(format!("store write failed: {error}")),
        }
    }

    fn lease(&self, lease: &LeaseKeeper, state: &str) {
        self.rec.record(&Event::Lease {
            t: now_ns(),
            owner: self.name.clone(),
            lease: lease.id(),
            state: state.to_owned(),
            ttl_ms: lease.ttl().as_millis() as u64,
        });
    }

    /// Grants a lease with a health check reading `unhealthy` (a file the orchestrator
    /// creates to flip this process NOT_SERVING).
    async fn grant(&self, client: &Client, ttl: Duration, unhealthy: Option<PathBuf>) -> Option<LeaseKeeper> {
        let mut options = LeaseOptions::new(self.name.clone(), ttl);
        if let Some(flag) = unhealthy {
            options = options.check("chaos", move || {
                let flag = flag.clone();
                async move { if flag.exists() { Err("chaos: flipped NOT_SERVING".to_owned()) } else { Ok(()) } }
            });
        }
        let lease = self.call("Lease.Grant", CALL_DEADLINE, LeaseKeeper::grant(client, options)).await?;
        self.lease(&lease, "granted");
        Some(lease)
    }
}

fn past(until_ns: u64) -> bool {
    now_ns() >= until_ns
}

/// Records lease status changes (by kind) and returns whether the lease is lost.
fn watch_lease(ctx: &Ctx, lease: &LeaseKeeper, last: &mut Option<&'static str>) -> bool {
    let kind = match lease.status() {
        LeaseStatus::Confirmed { .. } => "confirmed",
        LeaseStatus::Unconfirmed => "unconfirmed",
        LeaseStatus::Lost => "lost",
    };
    if *last != Some(kind) {
        *last = Some(kind);
        if kind == "lost" {
            ctx.lease(lease, "lost");
        } else {
            ctx.status(format!("lease {kind}"));
        }
    }
    kind == "lost"
}

/// How a candidate campaigns.
#[derive(Clone, Debug)]
pub struct CandidateArgs {
    /// Lease ttl.
    pub ttl: Duration,
    /// Campaign priority (0 best).
    pub priority: i32,
    /// Resign and exit after this long (a preempting candidate), if set.
    pub lifetime: Option<Duration>,
    /// Ignore validity (for testing the checker).
    pub broken: bool,
}

/// A candidate: campaigns, acts as leader (store writes with its fencing token) only on a
/// passing check; a new lease and campaign when its lease ends.
pub async fn candidate(common: Common, args: CandidateArgs) -> std::io::Result<()> {
    let ctx = Ctx::open(&common)?;
    let mut rng = Rng::new(common.seed);
    let client = Client::new(common.endpoints.iter().map(String::as_str)).map_err(std::io::Error::other)?;
    let flag = unhealthy_flag(&common.dir, &common.name);
    let mut until_ns = common.until_ns;
    if let Some(lifetime) = args.lifetime {
        until_ns = until_ns.min(now_ns() + lifetime.as_nanos() as u64);
    }
    let mut certifier = if args.broken { Certifier::broken(4 * args.ttl) } else { Certifier::honest() };
    while !past(until_ns) {
        let Some(lease) = ctx.grant(&client, args.ttl, Some(flag.clone())).await else {
            sleep(Duration::from_millis(200)).await;
            continue;
        };
        let options = CampaignOptions::new(ELECTION_NAME, common.name.clone()).priority(args.priority).preempt(true);
        let Some(mut elector) =
            ctx.call("Election.Campaign", CALL_DEADLINE, LeaderElector::campaign(&client, &lease, options)).await
        else {
            sleep(Duration::from_millis(200)).await;
            continue;
        };
        certifier.reset();
        let mut acting: Option<String> = None;
        let mut last_write = Instant::now() - WRITE_EVERY;
        let mut lease_kind = None;
        let mut over = false;
        while !past(until_ns) {
            if watch_lease(&ctx, &lease, &mut lease_kind) {
                over = true;
            }
            if over {
                sleep(Duration::from_millis(rng.range(10, 40))).await;
            } else {
                tokio::select! {
                event = elector.next() => match event {
                    Some(event) => ctx.status(format!("{event:?}")),
                    None => {
                        ctx.status("candidacy ended".into());
                        over = true;
                    }
                },
                () = sleep(Duration::from_millis(rng.range(10, 40))) => {}
                }
            }
            let cert = if over && !args.broken { None } else { certifier.leadership(&lease, &elector) };
            match cert {
                Some(c) => {
                    let hold = format!("{}/{}", common.name, c.token);
                    if acting.as_ref() != Some(&hold) {
                        if let Some(old) = acting.take() {
                            ctx.stop(ELECTION, &old);
                        }
                        acting = Some(hold.clone());
                    }
                    ctx.cert(ELECTION, &hold, &c, c.token, true);
                    if last_write.elapsed() >= WRITE_EVERY {
                        last_write = Instant::now();
                        ctx.write(ELECTION, c.token);
                    }
                }
                None => {
                    if let Some(old) = acting.take() {
                        ctx.stop(ELECTION, &old);
                    }
                    if over {
                        break;
                    }
                }
            }
        }
        if let Some(old) = acting.take() {
            ctx.stop(ELECTION, &old);
        }
        if !over {
            // The end of the run or of this candidate's lifetime: step down cleanly.
            ctx.call("Election.Resign", CALL_DEADLINE, elector.resign()).await;
            ctx.call("Lease.Revoke", CALL_DEADLINE, lease.revoke()).await;
            break;
        }
    }
    Ok(())
}

/// The file whose existence makes `name`'s health check fail.
pub fn unhealthy_flag(dir: &Path, name: &str) -> PathBuf {
    dir.join("ctl").join(format!("{name}.unhealthy"))
}

/// A locker: loops Lock / act a few ms / Unlock on the solo key or 3 keys of the pool,
/// shared or exclusive; a new lease when its lease ends.
pub async fn locker(common: Common, ttl: Duration) -> std::io::Result<()> {
    let ctx = Ctx::open(&common)?;
    let mut rng = Rng::new(common.seed);
    let client = Client::new(common.endpoints.iter().map(String::as_str)).map_err(std::io::Error::other)?;
    let mut lease: Option<LeaseKeeper> = None;
    let mut lease_kind = None;
    while !past(common.until_ns) {
        if lease.as_ref().is_some_and(|l| watch_lease(&ctx, l, &mut lease_kind)) {
            lease = None;
        }
        let Some(held_lease) = lease.as_ref() else {
            lease = ctx.grant(&client, ttl, None).await;
            lease_kind = None;
            if lease.is_none() {
                sleep(Duration::from_millis(200)).await;
            }
            continue;
        };
        let (keys, exclusive): (Vec<String>, bool) = if rng.chance(40) {
            (vec![SOLO_KEY.to_owned()], rng.chance(75))
        } else {
            let mut pool: Vec<&str> = POOL.to_vec();
            let mut keys = Vec::new();
            for _ in 0..3 {
                keys.push(pool.remove(rng.below(pool.len())).to_owned());
            }
            (keys, rng.chance(60))
        };
        let options = if exclusive { LockOptions::exclusive(keys.clone()) } else { LockOptions::shared(keys.clone()) };
        let rpc = if exclusive { "Lock.Lock(exclusive)" } else { "Lock.Lock(shared)" };
        let acquire = LockGuard::acquire(&client, held_lease, options.timeout(LOCK_WAIT));
        let guard = match ctx.call_coded(rpc, LOCK_WAIT, acquire).await {
            Ok(guard) => guard,
            Err(code) => {
                if !matches!(code.as_str(), "DeadlineExceeded" | "NotFound" | "PermissionDenied") {
                    // The README's rule: a failed Lock may have been served (held or queued)
                    // by an instance that died mid-call. This client cleans up by ending the
                    // lease, which releases everything bound to it.
                    ctx.status(format!("ending the lease after an uncertain Lock ({code})"));
                    if let Some(lease) = lease.take() {
                        ctx.call("Lease.Revoke", CALL_DEADLINE, lease.revoke()).await;
                    }
                }
                sleep(Duration::from_millis(rng.range(5, 50))).await;
                continue;
            }
        };
        hold(&ctx, &mut rng, held_lease, &guard, exclusive).await;
        if let Err(code) = ctx.call_coded("Lock.Unlock", CALL_DEADLINE, guard.unlock()).await
            && code != "NotFound"
        {
            // The hold may still be there: it ends with the lease.
            ctx.status(format!("ending the lease after a failed Unlock ({code})"));
            if let Some(lease) = lease.take() {
                ctx.call("Lease.Revoke", CALL_DEADLINE, lease.revoke()).await;
            }
        }
        sleep(Duration::from_millis(rng.range(0, 10))).await;
    }
    if let Some(lease) = lease {
        ctx.call("Lease.Revoke", CALL_DEADLINE, lease.revoke()).await;
    }
    Ok(())
}

/// Acts on a hold for a random few ms while the check passes; exclusive holders write each
/// key with its token once.
async fn hold(ctx: &Ctx, rng: &mut Rng, lease: &LeaseKeeper, guard: &LockGuard, exclusive: bool) {
    let mut certifier = Certifier::honest();
    let end = Instant::now() + Duration::from_millis(rng.range(1, 20));
    let mut last_until = None;
    let mut first = true;
    while let Some(c) = certifier.hold(lease, guard) {
        if last_until != Some(c.valid_until) {
            last_until = Some(c.valid_until);
            for (key, &token) in guard.tokens() {
                ctx.cert(key, guard.handle(), &c, token, exclusive);
            }
        }
        if first && exclusive {
            for (key, &token) in guard.tokens() {
                ctx.write(key, token);
            }
        }
        first = false;
        if Instant::now() >= end {
            break;
        }
        sleep(Duration::from_millis(rng.range(1, 5))).await;
    }
    if !first {
        for key in guard.tokens().keys() {
            ctx.stop(key, guard.handle());
        }
    }
}

/// How a shard member runs.
#[derive(Clone, Debug)]
pub struct MemberArgs {
    /// Lease ttl.
    pub ttl: Duration,
    /// Wait this long before the first Join (members join one after another).
    pub delay: Duration,
    /// Ignore revocations and validity (for testing the checker).
    pub broken: bool,
}

/// How one membership (one lease) of a member ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// Its lifetime is over: leave gracefully or crash, as drawn.
    Lifetime,
    /// The run is over: leave gracefully.
    RunOver,
    /// The lease was lost or the membership ended.
    Lost,
}

/// A shard member: joins group [`SHARD_GROUP`] with a lease of its own, acts on (writes to the
/// store with the epoch) each shard a passing check allows, and after a random lifetime leaves
/// gracefully or crashes (drops its lease and membership without a word), then joins again with
/// a new lease. A membership ignores Revoke events a quarter of the time (see [`ShardMode`]).
pub async fn member(common: Common, args: MemberArgs) -> std::io::Result<()> {
    let ctx = Ctx::open(&common)?;
    let mut rng = Rng::new(common.seed);
    let client = Client::new(common.endpoints.iter().map(String::as_str)).map_err(std::io::Error::other)?;
    let flag = unhealthy_flag(&common.dir, &common.name);
    sleep(args.delay).await;
    while !past(common.until_ns) {
        let Some(lease) = ctx.grant(&client, args.ttl, Some(flag.clone())).await else {
            sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mode = if args.broken {
            ShardMode::Broken(4 * args.ttl)
        } else if rng.chance(25) {
            ShardMode::Deaf
        } else {
            ShardMode::Prompt
        };
        let Some(mut membership) = join(&ctx, &client, &lease, mode).await else {
            if !matches!(lease.status(), LeaseStatus::Lost) {
                ctx.call("Lease.Revoke", CALL_DEADLINE, lease.revoke()).await;
            }
            sleep(Duration::from_millis(rng.range(200, 600))).await;
            continue;
        };
        ctx.status(format!("joined as {mode:?}"));
        let lifetime = Duration::from_millis(rng.range(5_000, 20_000));
        let ending = act_on_shards(&ctx, &mut rng, &lease, &mut membership, mode, lifetime, common.until_ns).await;
        if ending == Ending::Lifetime && rng.chance(50) {
            // A crash: the lease stops being kept alive; the membership ends when it expires.
            ctx.status("crashing (dropping the membership and the lease)".into());
            drop(membership);
            drop(lease);
        } else {
            if ending != Ending::Lost {
                ctx.call("Shards.Leave", CALL_DEADLINE + LEAVE_WAIT, membership.leave(LEAVE_WAIT)).await;
            }
            ctx.call("Lease.Revoke", CALL_DEADLINE, lease.revoke()).await;
        }
        if past(common.until_ns) {
            break;
        }
        sleep(Duration::from_millis(rng.range(300, 3_000))).await;
    }
    Ok(())
}

/// Joins [`SHARD_GROUP`] with `lease`, retrying while the member id is still bound to a
/// previous incarnation's lease (FAILED_PRECONDITION until that lease expires).
async fn join(ctx: &Ctx, client: &Client, lease: &LeaseKeeper, mode: ShardMode) -> Option<ShardMember> {
    let give_up = Instant::now() + JOIN_PATIENCE;
    loop {
        let mut options = ShardOptions::new(SHARD_GROUP, ctx.name.clone(), SHARD_COUNT);
        if mode == ShardMode::Deaf {
            options = options.manual_release();
        }
        match ctx.call_coded("Shards.Join", CALL_DEADLINE, ShardMember::join(client, lease, options)).await {
            Ok(membership) => return Some(membership),
            Err(code) if code == "FailedPrecondition" && Instant::now() < give_up => {
                sleep(Duration::from_millis(500)).await;
                if matches!(lease.status(), LeaseStatus::Lost) {
                    return None;
                }
            }
            Err(_) => return None,
        }
    }
}

/// One membership's work: follows its events and, every 10–40 ms, acts on each shard the
/// certifier allows (a passing check recorded right before each action), recording when it
/// stops acting on one. Returns why it ended; every shard is stopped by then.
async fn act_on_shards(
    ctx: &Ctx,
    rng: &mut Rng,
    lease: &LeaseKeeper,
    membership: &mut ShardMember,
    mode: ShardMode,
    lifetime: Duration,
    until_ns: u64,
) -> Ending {
    let mut certifier = ShardCertifier::new(mode);
    let hold = |c: &ShardCertificate| format!("{}/{}", lease.id(), c.epoch);
    // What it acts on: shard → (hold, last valid_until recorded, last action).
    let mut acting: BTreeMap<u32, (String, Instant, Instant)> = BTreeMap::new();
    let end = Instant::now() + lifetime;
    let mut lease_kind = None;
    let ending = loop {
        if past(until_ns) {
            break Ending::RunOver;
        }
        if Instant::now() >= end {
            break Ending::Lifetime;
        }
        if watch_lease(ctx, lease, &mut lease_kind) {
            break Ending::Lost;
        }
        tokio::select! {
            event = membership.next() => match event {
                Some(event) => {
                    ctx.status(format!("{event:?}"));
                    if let ShardEvent::Revoked { shard, epoch } = event {
                        certifier.revoked(shard, epoch);
                    }
                }
                None => {
                    ctx.status("membership ended".into());
                    break Ending::Lost;
                }
            },
            () = sleep(Duration::from_millis(rng.range(10, 40))) => {}
        }
        // Check; stop what the check no longer allows (before the next event is asked for,
        // which releases what was revoked), as of the check; act on what it allows.
        let checked = Instant::now();
        let owned = certifier.owned(membership, checked);
        acting.retain(|shard, (h, _, _)| {
            let keep = owned.get(shard).is_some_and(|c| hold(c) == *h);
            if !keep {
                ctx.stop_at(ns_of(checked), &shard_res(*shard), h);
            }
            keep
        });
        for (shard, c) in &owned {
            let res = shard_res(*shard);
            let h = hold(c);
            let cert = Certificate { term: 0, token: c.epoch, checked: c.checked, valid_until: c.valid_until };
            match acting.get_mut(shard) {
                None => {
                    ctx.cert(&res, &h, &cert, c.epoch, true);
                    ctx.write(&res, c.epoch);
                    acting.insert(*shard, (h, c.valid_until, c.checked));
                }
                Some((_, until, acted)) => {
                    let due = c.checked.duration_since(*acted) >= ACT_EVERY;
                    if due || *until != c.valid_until {
                        ctx.cert(&res, &h, &cert, c.epoch, true);
                        *until = c.valid_until;
                    }
                    if due {
                        ctx.write(&res, c.epoch);
                        *acted = c.checked;
                    }
                }
            }
        }
    };
    for (shard, (h, _, _)) in acting {
        ctx.stop(&shard_res(shard), &h);
    }
    ending
}
