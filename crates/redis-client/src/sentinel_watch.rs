//! Following a Sentinel failover as it happens, as the Redis Sentinel
//! client guidelines ask: every Sentinel's event channel is watched, and
//!
//! - from `+failover-state-send-slaveof-noone` (the replica is being
//!   promoted) until the promotion is seen done, writes are refused with
//!   [`RedisClientError::Unavailable`] (503) instead of being sent to a
//!   master that is about to be demoted, whose acknowledged writes would be
//!   thrown away;
//! - the promotion is done at `+promoted-slave` (the leader saw the
//!   replica answer as master) or at `+switch-master`, whichever comes
//!   first: every connection opened before is dropped, and new ones go
//!   straight to the address announced (see `pool.rs`), never through a
//!   Sentinel that may not have heard of the switch yet.
//!
//! A promotion that never completes (the failover aborts, or no
//! switch arrives within [`FAILOVER_HOLD`]) lifts the refusal. A
//! Sentinel that is down or silent only means its watcher reconnects with
//! a backoff: no request waits for a Sentinel.
//!
//! Each watcher also asks its Sentinel for the master (`SENTINEL MASTER`)
//! after every subscription and after [`QUIET`] without events, to catch
//! up a switch it missed. A Sentinel that was cut off or restarted can
//! still name the OLD master for a few seconds; its answer carries the
//! configuration epoch it knows, and an answer no newer than what we know
//! is ignored, so a lagging Sentinel can never switch us back.
//!
//! A master cut off from the Sentinels but not from the app sends no event
//! at all: see the README on `min-replicas-to-write`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use deadpool_redis::redis::{self, Client, IntoConnectionInfo};
use futures_util::StreamExt;

use crate::RedisClientError;

/// How long a promotion may refuse calls without `+switch-master`.
const FAILOVER_HOLD: Duration = Duration::from_secs(5);

/// What the watchers learned, read by every call (two atomic loads).
#[derive(Debug, Default)]
pub(crate) struct FailoverState {
    /// Bumped on `+switch-master` to a new address. Connections remember
    /// the generation they were opened in; older ones are dropped.
    generation: AtomicU64,
    /// When the current promotion began, in ms since [`CLOCK_START`] plus
    /// one (0: none).
    promoting_since: AtomicU64,
    /// The master as last announced, to count each switch once although
    /// every Sentinel announces it, and for new connections to go to.
    master: Mutex<Known>,
}

/// The master we follow, and the newest configuration epoch we know it by.
#[derive(Debug, Default)]
struct Known {
    /// `ip:port`; `None` until a Sentinel first answered.
    address: Option<String>,
    /// A lower bound of the epoch of `address`: an event does not carry
    /// the epoch, but every switch raises it by at least one.
    epoch: u64,
}

static CLOCK_START: LazyLock<Instant> = LazyLock::new(Instant::now);

fn now_ms() -> u64 {
    u64::try_from(CLOCK_START.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl FailoverState {
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The master's `ip:port` as the Sentinels last announced it; `None`
    /// until a watcher first heard from a Sentinel.
    pub(crate) fn master_address(&self) -> Option<String> {
        self.known().address.clone()
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.master
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `Err` while a promotion is under way: the caller answers 503.
    pub(crate) fn check(&self) -> Result<(), RedisClientError> {
        let since = self.promoting_since.load(Ordering::Acquire);
        if since == 0 {
            return Ok(());
        }
        if now_ms().saturating_sub(since - 1) > FAILOVER_HOLD.as_millis() as u64 {
            // No +switch-master came: give up refusing.
            let _ = self.promoting_since.compare_exchange(
                since,
                0,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
            return Ok(());
        }
        Err(RedisClientError::unavailable(
            "a Sentinel failover is in progress: the master is being replaced",
        ))
    }

    fn promoting(&self) {
        let began = self.promoting_since.compare_exchange(
            0,
            now_ms() + 1,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
        if began.is_ok() {
            log::info!("the Sentinels are promoting a replica: refusing writes until it is master");
        }
    }

    /// What a Sentinel answers for the master now (`SENTINEL MASTER`),
    /// asked after every (re)subscription and after a quiet spell: a switch
    /// announced while no watcher listened is caught up here. An answer
    /// whose epoch is not newer than ours is ignored: it comes from a
    /// Sentinel that has not heard of the last switch.
    fn observed(&self, address: &str, epoch: u64) {
        let mut known = self.known();
        match known.address.as_deref() {
            // The first answer only records the master: connections opened
            // so far asked the Sentinels too.
            None => {
                known.address = Some(address.to_owned());
                known.epoch = epoch;
            }
            Some(_) if epoch <= known.epoch => {}
            Some(current) if current == address => known.epoch = epoch,
            Some(_) => {
                known.epoch = epoch;
                drop(known);
                self.switched(address, epoch);
            }
        }
    }

    /// The Sentinels made `new_master` the master, in configuration epoch
    /// `epoch` (or at least one above what we knew, for an event).
    fn switched(&self, new_master: &str, epoch: u64) {
        let mut known = self.known();
        if known.address.as_deref() != Some(new_master) {
            known.address = Some(new_master.to_owned());
            known.epoch = known.epoch.max(epoch);
            self.generation.fetch_add(1, Ordering::AcqRel);
            log::info!("Sentinels switched the master to {new_master}: reconnecting");
        }
        drop(known);
        self.promoting_since.store(0, Ordering::Release);
    }

    /// A switch announced by an event, which carries no epoch.
    fn announced(&self, new_master: &str) {
        let epoch = self.known().epoch + 1;
        self.switched(new_master, epoch);
    }

    fn aborted(&self) {
        self.promoting_since.store(0, Ordering::Release);
    }

    /// One event from a Sentinel's channels, for `master_name`.
    fn handle(&self, channel: &str, payload: &str, master_name: &str) {
        let words: Vec<&str> = payload.split(' ').collect();
        match channel {
            // "<name> <old ip> <old port> <new ip> <new port>"
            "+switch-master" if words.len() == 5 && words[0] == master_name => {
                self.announced(&format!("{}:{}", words[3], words[4]));
            }
            // "slave <ip>:<port> <ip> <port> @ <name> <old ip> <old port>",
            // from the leader once the replica answers as master: about a
            // second before the leader's own +switch-master, and the
            // failover cannot abort any more.
            "+promoted-slave" if words.len() == 8 && words[5] == master_name => {
                self.announced(&format!("{}:{}", words[2], words[3]));
            }
            // "slave <id> <ip> <port> @ <name> <master ip> <master port>"
            "+failover-state-send-slaveof-noone"
                if words.iter().skip_while(|w| **w != "@").nth(1) == Some(&master_name) =>
            {
                self.promoting();
            }
            // "master <name> <ip> <port>". A Sentinel that lost the
            // election says -failover-abort-not-elected while the winner
            // goes on promoting: that one must not lift the hold.
            abort
                if abort.starts_with("-failover-abort")
                    && abort != "-failover-abort-not-elected"
                    && words.get(1) == Some(&master_name) =>
            {
                self.aborted();
            }
            _ => {}
        }
    }
}

/// Watches every Sentinel in `sentinels`; the tasks run on the current tokio
/// runtime until [`Watchers`] is dropped or closed. `None` outside a runtime
/// (then failovers are noticed only when the old master refuses a write).
pub(crate) fn spawn(
    sentinels: &[String],
    certificates: Option<redis::TlsCertificates>,
    master_name: &str,
    state: Arc<FailoverState>,
) -> Option<Watchers> {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        log::warn!("no tokio runtime: Sentinel failovers are followed only through READONLY");
        return None;
    };
    let tasks = sentinels
        .iter()
        .map(|url| {
            let (url, name, state) = (
                url.trim().to_owned(),
                master_name.to_owned(),
                Arc::clone(&state),
            );
            let certificates = certificates.clone();
            runtime.spawn(watch(url, certificates, name, state))
        })
        .collect();
    Some(Watchers(tasks))
}

/// The watcher tasks; aborted on [`Watchers::close`].
#[derive(Debug)]
pub(crate) struct Watchers(Vec<tokio::task::JoinHandle<()>>);

impl Watchers {
    pub(crate) fn close(&self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// A dropped `JoinHandle` alone would leave the task running.
impl Drop for Watchers {
    fn drop(&mut self) {
        self.close();
    }
}

/// How long a subscription may stay silent before its Sentinel is asked
/// for the master directly: bounds a missed switch, and finds a half-open
/// connection that would otherwise wait forever.
const QUIET: Duration = Duration::from_secs(3);

async fn watch(
    url: String,
    certificates: Option<redis::TlsCertificates>,
    master_name: String,
    state: Arc<FailoverState>,
) {
    let mut pause = Duration::from_millis(200);
    loop {
        match subscribe(&url, certificates.clone()).await {
            Ok(mut pubsub) => {
                pause = Duration::from_millis(200);
                if let Ok((master, epoch)) =
                    ask_master(&url, certificates.clone(), &master_name).await
                {
                    state.observed(&master, epoch);
                }
                let mut messages = pubsub.on_message();
                loop {
                    match tokio::time::timeout(QUIET, messages.next()).await {
                        Ok(Some(message)) => {
                            let payload: String = message.get_payload().unwrap_or_default();
                            state.handle(message.get_channel_name(), &payload, &master_name);
                        }
                        Ok(None) => break,
                        Err(_) => {
                            match ask_master(&url, certificates.clone(), &master_name).await {
                                Ok((master, epoch)) => state.observed(&master, epoch),
                                Err(_) => break, // silent and unreachable: resubscribe
                            }
                        }
                    }
                }
                log::info!("lost the event channel of a Sentinel; resubscribing");
            }
            Err(error) => {
                log::debug!("cannot watch a Sentinel yet: {error}");
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// `SENTINEL MASTER`: the master's `ip:port` and the configuration epoch
/// the Sentinel knows it by, within 1 s.
async fn ask_master(
    url: &str,
    certificates: Option<redis::TlsCertificates>,
    master_name: &str,
) -> redis::RedisResult<(String, u64)> {
    let client = client_for(url, certificates)?;
    let ask = async {
        let mut connection = client.get_multiplexed_async_connection().await?;
        let fields: std::collections::HashMap<String, String> = redis::cmd("SENTINEL")
            .arg("MASTER")
            .arg(master_name)
            .query_async(&mut connection)
            .await?;
        master_of(&fields).ok_or_else(|| {
            redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "SENTINEL MASTER lacks ip, port or config-epoch",
            ))
        })
    };
    tokio::time::timeout(Duration::from_secs(1), ask)
        .await
        .map_err(|_| timed_out())?
}

/// `ip:port` and `config-epoch` from a `SENTINEL MASTER` reply.
fn master_of(fields: &std::collections::HashMap<String, String>) -> Option<(String, u64)> {
    let ip = fields.get("ip")?;
    let port: u16 = fields.get("port")?.parse().ok()?;
    let epoch = fields.get("config-epoch")?.parse().ok()?;
    Some((format!("{ip}:{port}"), epoch))
}

/// Subscribes to the failover events, within 2 s in all.
async fn subscribe(
    url: &str,
    certificates: Option<redis::TlsCertificates>,
) -> redis::RedisResult<redis::aio::PubSub> {
    let client = client_for(url, certificates)?;
    let subscribed = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe("+switch-master").await?;
        pubsub
            .subscribe("+failover-state-send-slaveof-noone")
            .await?;
        pubsub.subscribe("+promoted-slave").await?;
        pubsub.psubscribe("-failover-abort*").await?;
        Ok(pubsub)
    };
    tokio::time::timeout(Duration::from_secs(2), subscribed)
        .await
        .map_err(|_| timed_out())?
}

fn client_for(
    url: &str,
    certificates: Option<redis::TlsCertificates>,
) -> redis::RedisResult<Client> {
    let info = url.into_connection_info()?;
    match certificates {
        Some(certificates) => Client::build_with_tls(info, certificates),
        None => Client::open(info),
    }
}

fn timed_out() -> redis::RedisError {
    redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `+switch-master` from 6379 to 6380.
    const SWITCH: &str = "mymaster 127.0.0.1 6379 127.0.0.1 6380";
    /// The replica 6380 of mymaster, as failover events name it.
    const REPLICA_6380: &str = "slave 127.0.0.1:6380 127.0.0.1 6380 @ mymaster 127.0.0.1 6379";

    /// One event on a Sentinel channel, for the master we follow.
    fn event(state: &FailoverState, channel: &str, payload: &str) {
        state.handle(channel, payload, "mymaster");
    }

    #[test]
    fn a_promotion_refuses_calls_until_the_switch_which_bumps_the_generation_once() {
        let state = FailoverState::default();
        assert!(state.check().is_ok());
        event(&state, "+failover-state-send-slaveof-noone", REPLICA_6380);
        assert!(state.check().is_err());
        for _ in 0..3 {
            // Every Sentinel announces it.
            event(&state, "+switch-master", SWITCH);
        }
        assert!(state.check().is_ok());
        assert_eq!(state.generation(), 1);
    }

    #[test]
    fn a_switch_missed_while_no_watcher_listened_is_caught_up_by_asking() {
        let state = FailoverState::default();
        state.observed("127.0.0.1:6379", 0); // the first answer: no bump
        state.observed("127.0.0.1:6379", 0);
        assert_eq!(state.generation(), 0);
        state.observed("127.0.0.1:6380", 1); // the switch nobody heard
        assert_eq!(state.generation(), 1);
        assert_eq!(state.master_address().as_deref(), Some("127.0.0.1:6380"));
        event(&state, "+switch-master", SWITCH);
        assert_eq!(state.generation(), 1, "the same switch, announced late");
    }

    #[test]
    fn a_lagging_sentinel_naming_the_old_master_cannot_switch_back() {
        let state = FailoverState::default();
        state.observed("127.0.0.1:6379", 4);
        event(&state, "+switch-master", SWITCH);
        assert_eq!(state.generation(), 1);
        // A Sentinel that slept through the failover still says epoch 4.
        state.observed("127.0.0.1:6379", 4);
        assert_eq!(state.generation(), 1);
        assert_eq!(state.master_address().as_deref(), Some("127.0.0.1:6380"));
        // One that took part answers with the new epoch: nothing to do.
        state.observed("127.0.0.1:6380", 5);
        state.observed("127.0.0.1:6379", 5);
        assert_eq!(state.generation(), 1);
        // A later failover back, missed, is caught up by its newer epoch.
        state.observed("127.0.0.1:6379", 6);
        assert_eq!(state.generation(), 2);
    }

    #[test]
    fn the_promotion_ends_the_hold_and_switches_before_switch_master() {
        let state = FailoverState::default();
        state.observed("127.0.0.1:6379", 0);
        event(&state, "+failover-state-send-slaveof-noone", REPLICA_6380);
        assert!(state.check().is_err());
        event(&state, "+promoted-slave", REPLICA_6380);
        assert!(state.check().is_ok());
        assert_eq!(state.generation(), 1);
        assert_eq!(state.master_address().as_deref(), Some("127.0.0.1:6380"));
        event(&state, "+switch-master", SWITCH);
        assert_eq!(state.generation(), 1);
        event(
            &state,
            "+promoted-slave",
            "slave 127.0.0.1:7000 127.0.0.1 7000 @ othermaster 127.0.0.1 7001",
        );
        assert_eq!(state.generation(), 1, "another master's promotion");
    }

    #[test]
    fn a_sentinel_master_reply_gives_address_and_epoch() {
        let fields: std::collections::HashMap<String, String> = [
            ("name", "mymaster"),
            ("ip", "10.0.0.5"),
            ("port", "6380"),
            ("config-epoch", "7"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(master_of(&fields), Some(("10.0.0.5:6380".to_owned(), 7)));
        let mut broken = fields.clone();
        broken.insert("port".to_owned(), "x".to_owned());
        assert_eq!(master_of(&broken), None);
        broken.remove("port");
        assert_eq!(master_of(&broken), None);
    }

    #[test]
    fn other_masters_and_aborts_do_not_hold_calls() {
        let state = FailoverState::default();
        event(
            &state,
            "+failover-state-send-slaveof-noone",
            "slave 1 127.0.0.1 1 @ othermaster 127.0.0.1 2",
        );
        state.handle("+switch-master", "othermaster a 1 b 2", "mymaster");
        assert!(state.check().is_ok());
        assert_eq!(state.generation(), 0);
        event(
            &state,
            "+failover-state-send-slaveof-noone",
            "slave 1 127.0.0.1 1 @ mymaster 127.0.0.1 2",
        );
        // The Sentinel that lost the election: the winner goes on.
        event(
            &state,
            "-failover-abort-not-elected",
            "master mymaster 127.0.0.1 2",
        );
        assert!(state.check().is_err());
        event(
            &state,
            "-failover-abort-no-good-slave",
            "master mymaster 127.0.0.1 2",
        );
        assert!(state.check().is_ok());
    }
}
