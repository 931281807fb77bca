//! Shard group membership: join with a lease, receive the member's shards as events, act on a
//! shard only while the crate's safety rule allows ([`ShardMember::owns`]), and release revoked
//! shards when the application has stopped working on them.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{sync::mpsc, task::JoinHandle, time::Instant};

use crate::{
    Client, Error, LeaseKeeper,
    lease::{Beats, ConfirmedBeat},
    pb::{self, shards_client::ShardsClient},
};

/// How long a release is retried while no instance answers, beyond the lease's ttl (after that
/// the shard has moved on without it anyway).
const RELEASE_PATIENCE: Duration = Duration::from_secs(5);
/// Pause before reopening a Watch stream that failed.
const REOPEN_PAUSE: Duration = Duration::from_millis(200);

/// How to join a shard group.
#[derive(Clone, Debug)]
pub struct ShardOptions {
    group: String,
    member_id: String,
    shard_count: u32,
    weight: u32,
    labels: BTreeMap<String, String>,
    manual_release: bool,
}

impl ShardOptions {
    /// Member `member_id` of `group`, a group of `shard_count` shards (1 to 65,536; every member
    /// must agree).
    pub fn new(group: impl Into<String>, member_id: impl Into<String>, shard_count: u32) -> Self {
        Self {
            group: group.into(),
            member_id: member_id.into(),
            shard_count,
            weight: 1,
            labels: BTreeMap::new(),
            manual_release: false,
        }
    }

    /// The member's capacity relative to the others (1 to 1,000; default 1).
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// A label describing the member.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Release revoked shards only through [`ShardMember::release`]. By default a shard
    /// revoked by an event [`ShardMember::next`] returned is released when the application
    /// asks for the next event (its handling of the revocation is over).
    pub fn manual_release(mut self) -> Self {
        self.manual_release = true;
        self
    }
}

/// A change of the member's shards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardEvent {
    /// The member owns `shard` with `epoch`: it may work on it while [`ShardMember::owns`]
    /// says so (a heartbeat listing it is sent at once), writing `epoch` with its data.
    Assigned {
        /// The shard.
        shard: u32,
        /// Its epoch (greater than every earlier epoch of the shard).
        epoch: u64,
    },
    /// The member must stop working on `shard` now (it no longer owns it, or soon won't).
    Revoked {
        /// The shard.
        shard: u32,
        /// The epoch it was owned with.
        epoch: u64,
    },
}

/// A shard the member may work on now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwnedShard {
    /// The shard.
    pub shard: u32,
    /// Its epoch: write it with the shard's data and let the database refuse older ones.
    pub epoch: u64,
    /// Act on it no later than this (the last confirmed heartbeat's send time + ttl).
    pub until: Instant,
}

#[derive(Debug)]
struct Shared {
    group: String,
    member_id: String,
    beats: Arc<Beats>,
    beat: tokio::sync::watch::Receiver<Option<ConfirmedBeat>>,
    /// `(shard, epoch)` the application gave up: never acted on again.
    released: Mutex<HashSet<(u32, u64)>>,
    ttl: Duration,
}

impl Shared {
    fn owned(&self, now: Instant) -> Vec<OwnedShard> {
        let beat = self.beat.borrow();
        let Some(beat) = beat.as_ref().filter(|b| now < b.until && b.shard_groups.contains(&self.group)) else {
            return Vec::new();
        };
        let released = crate::lock(&self.released);
        let mut owned = Vec::new();
        for ownership in beat.shards.iter().filter(|o| o.group == self.group && o.member_id == self.member_id) {
            for range in &ownership.ranges {
                for shard in range.first..=range.last {
                    if !released.contains(&(shard, range.epoch)) {
                        owned.push(OwnedShard { shard, epoch: range.epoch, until: beat.until });
                    }
                }
            }
        }
        owned
    }
}

/// A membership of a shard group, bound to a lease. Dropping it stops following the group (the
/// membership lives on with the lease; call [`ShardMember::leave`] to hand off gracefully).
#[derive(Debug)]
pub struct ShardMember {
    client: Client,
    key: pb::MemberKey,
    shared: Arc<Shared>,
    events: mpsc::UnboundedReceiver<ShardEvent>,
    manual_release: bool,
    /// Revocations returned by `next` whose handling is over once `next` is called again.
    handed: Vec<(u32, u64)>,
    /// Revocations handled, to release together.
    to_release: Vec<(u32, u64)>,
    task: JoinHandle<()>,
}

impl Drop for ShardMember {
    fn drop(&mut self) {
        self.task.abort();
        self.shared.beats.forget_group(&self.shared.group);
    }
}

impl ShardMember {
    /// Joins the group with `lease`.
    ///
    /// # Errors
    /// The Join call's status (INVALID_ARGUMENT, FAILED_PRECONDITION for another shard count or
    /// a member id bound to another lease, ...).
    pub async fn join(client: &Client, lease: &LeaseKeeper, options: ShardOptions) -> Result<Self, Error> {
        let key = pb::MemberKey {
            group: options.group.clone(),
            member_id: options.member_id.clone(),
            lease: Some(lease.lease_ref()),
        };
        let request = pb::JoinRequest {
            key: Some(key.clone()),
            shard_count: options.shard_count,
            weight: options.weight,
            labels: options.labels.clone().into_iter().collect(),
        };
        let beats = lease.beats().clone();
        beats.name_group(&options.group);
        let joined = client
            .retrying(|channel| {
                let request = request.clone();
                async move { ShardsClient::new(channel).join(request).await }
            })
            .await;
        if let Err(err) = joined {
            beats.forget_group(&options.group);
            return Err(err);
        }
        let shared = Arc::new(Shared {
            group: options.group.clone(),
            member_id: options.member_id.clone(),
            beat: beats.subscribe(),
            beats,
            released: Mutex::new(HashSet::new()),
            ttl: lease.ttl(),
        });
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(follow(client.clone(), key.clone(), shared.clone(), tx));
        Ok(Self {
            client: client.clone(),
            key,
            shared,
            events,
            manual_release: options.manual_release,
            handed: Vec::new(),
            to_release: Vec::new(),
            task,
        })
    }

    /// The next event; `None` once the membership has ended. Unless
    /// [`ShardOptions::manual_release`], calling it again releases the shards the previous
    /// calls revoked (their handling is over): batched, in the background.
    ///
    /// # Cancellation safety
    /// Cancellation safe: no event is lost.
    pub async fn next(&mut self) -> Option<ShardEvent> {
        if !self.manual_release {
            self.to_release.append(&mut self.handed);
        }
        let event = match self.events.try_recv() {
            Ok(event) => event,
            Err(_) => {
                self.flush();
                self.events.recv().await?
            }
        };
        if let ShardEvent::Revoked { shard, epoch } = event {
            if !self.manual_release {
                self.handed.push((shard, epoch));
            }
        } else {
            self.flush();
        }
        Some(event)
    }

    fn flush(&mut self) {
        if self.to_release.is_empty() {
            return;
        }
        let shards = std::mem::take(&mut self.to_release);
        give_up(&self.shared, &shards);
        tokio::spawn(release(self.client.clone(), self.key.clone(), shards, self.shared.ttl));
    }

    /// Whether the member may work on `shard` now, and with which epoch until when (the
    /// crate's safety rule). Check it right before each action.
    pub fn owns(&self, shard: u32) -> Option<OwnedShard> {
        self.shared.owned(Instant::now()).into_iter().find(|o| o.shard == shard)
    }

    /// Every shard the member may work on now.
    pub fn owned(&self) -> Vec<OwnedShard> {
        self.shared.owned(Instant::now())
    }

    /// Gives up `shards` (`(shard, epoch)`; never acted on again here) and tells zkcoord, so
    /// that their next owners are assigned at once. Needed only with
    /// [`ShardOptions::manual_release`].
    ///
    /// # Errors
    /// The Release call's status (FAILED_PRECONDITION when a shard was not being revoked).
    pub async fn release(&self, shards: &[(u32, u64)]) -> Result<(), Error> {
        give_up(&self.shared, shards);
        release_once(&self.client, &self.key, shards).await
    }

    /// Leaves the group gracefully: gives up every shard here at once, then waits up to `wait`
    /// for zkcoord to hand them off and end the membership. Returns whether it has ended.
    ///
    /// # Errors
    /// The Leave call's status.
    pub async fn leave(mut self, wait: Duration) -> Result<bool, Error> {
        let all: Vec<(u32, u64)> = self.owned().into_iter().map(|o| (o.shard, o.epoch)).collect();
        give_up(&self.shared, &all);
        // Release what is revoked meanwhile (the membership's shards are all given up).
        let (_, none) = mpsc::unbounded_channel();
        let mut events = std::mem::replace(&mut self.events, none);
        let (client, key, shared) = (self.client.clone(), self.key.clone(), self.shared.clone());
        let releaser = tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if let ShardEvent::Revoked { shard, epoch } = event {
                    give_up(&shared, &[(shard, epoch)]);
                    let _ = release_once(&client, &key, &[(shard, epoch)]).await;
                }
            }
        });
        let wait_ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX).max(1);
        let key = self.key.clone();
        let answer = self
            .client
            .retrying(|channel| {
                let request = pb::LeaveRequest { key: Some(key.clone()), wait_ms };
                async move { ShardsClient::new(channel).leave(request).await }
            })
            .await;
        releaser.abort();
        Ok(answer?.into_inner().left)
    }
}

/// Marks `shards` given up: [`Shared::owned`] never lists them again.
fn give_up(shared: &Shared, shards: &[(u32, u64)]) {
    crate::lock(&shared.released).extend(shards.iter().copied());
}

/// One Release call (on each endpoint while UNAVAILABLE).
async fn release_once(client: &Client, key: &pb::MemberKey, shards: &[(u32, u64)]) -> Result<(), Error> {
    let request = pb::ReleaseRequest {
        key: Some(key.clone()),
        shards: shards.iter().map(|&(shard, epoch)| pb::ReleasedShard { shard, epoch }).collect(),
    };
    client
        .retrying(|channel| {
            let request = request.clone();
            async move { ShardsClient::new(channel).release(request).await }
        })
        .await
        .map(|_| ())
}

/// Releases `shards` in the background: retried while no instance answers (until the lease's
/// ttl + [`RELEASE_PATIENCE`]); when the batch is refused (one shard moved on meanwhile), each
/// shard alone.
async fn release(client: Client, key: pb::MemberKey, shards: Vec<(u32, u64)>, ttl: Duration) {
    let deadline = Instant::now() + ttl + RELEASE_PATIENCE;
    while Instant::now() < deadline {
        match release_once(&client, &key, &shards).await {
            Ok(()) => return,
            Err(err) if err.code() == Some(tonic::Code::FailedPrecondition) => {
                if shards.len() > 1 {
                    for shard in &shards {
                        let _ = release_once(&client, &key, std::slice::from_ref(shard)).await;
                    }
                }
                return;
            }
            Err(err) if err.code() == Some(tonic::Code::Unavailable) || err.code().is_none() => {
                tokio::time::sleep(REOPEN_PAUSE).await;
            }
            Err(_) => return,
        }
    }
}

/// Follows the member's Watch stream, moving between instances, and turns it into events for
/// the application: every shard assigned, every shard revoked — also those a reconnection's
/// snapshot no longer shows.
async fn follow(client: Client, key: pb::MemberKey, shared: Arc<Shared>, events: mpsc::UnboundedSender<ShardEvent>) {
    // What the application was told it owns.
    let mut told: BTreeMap<u32, u64> = BTreeMap::new();
    let mut at = client.current();
    loop {
        let opened = ShardsClient::new(client.channel(at)).watch(pb::WatchRequest { key: Some(key.clone()) }).await;
        let mut stream = match opened {
            Ok(stream) => stream.into_inner(),
            Err(status) if status.code() == tonic::Code::NotFound => return, // the membership ended
            Err(_) => {
                at = client.rotate(at);
                tokio::time::sleep(REOPEN_PAUSE).await;
                continue;
            }
        };
        loop {
            let message = match stream.message().await {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(status) if status.code() == tonic::Code::NotFound => {
                    for (&shard, &epoch) in &told {
                        let _ = events.send(ShardEvent::Revoked { shard, epoch });
                    }
                    return;
                }
                Err(_) => break,
            };
            let mut out = Vec::new();
            if message.snapshot {
                let of_kind = |kind: pb::shard_event::Kind| -> BTreeMap<u32, u64> {
                    message.events.iter().filter(|e| e.kind() == kind).map(|e| (e.shard, e.epoch)).collect()
                };
                let assigned = of_kind(pb::shard_event::Kind::Assigned);
                let revoking = of_kind(pb::shard_event::Kind::Revoke);
                // Told shards the snapshot no longer assigns (moved on, or being revoked).
                for (&shard, &epoch) in &told {
                    if assigned.get(&shard) != Some(&epoch) {
                        out.push(ShardEvent::Revoked { shard, epoch });
                    }
                }
                // Being revoked from us but never told: say so, so that it is released.
                for (&shard, &epoch) in &revoking {
                    if told.get(&shard) != Some(&epoch) {
                        out.push(ShardEvent::Revoked { shard, epoch });
                    }
                }
                for (&shard, &epoch) in &assigned {
                    if told.get(&shard) != Some(&epoch) {
                        out.push(ShardEvent::Assigned { shard, epoch });
                    }
                }
                told = assigned;
            } else {
                for event in &message.events {
                    match event.kind() {
                        pb::shard_event::Kind::Assigned => {
                            told.insert(event.shard, event.epoch);
                            out.push(ShardEvent::Assigned { shard: event.shard, epoch: event.epoch });
                        }
                        pb::shard_event::Kind::Revoke => {
                            if told.get(&event.shard) == Some(&event.epoch) {
                                told.remove(&event.shard);
                            }
                            out.push(ShardEvent::Revoked { shard: event.shard, epoch: event.epoch });
                        }
                        pb::shard_event::Kind::Unspecified => {}
                    }
                }
            }
            if out.iter().any(|e| matches!(e, ShardEvent::Assigned { .. })) {
                // Only a confirmed heartbeat listing the shard lets the application act.
                shared.beats.beat_now();
            }
            for event in out {
                if events.send(event).is_err() {
                    return;
                }
            }
        }
        at = client.rotate(at);
        tokio::time::sleep(REOPEN_PAUSE).await;
    }
}
