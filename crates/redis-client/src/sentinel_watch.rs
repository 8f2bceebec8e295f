//! Following a Sentinel failover as it happens, as the Redis Sentinel
//! client guidelines ask: every Sentinel's event channel is watched, and
//!
//! - from `+failover-state-send-slaveof-noone` (the replica is being
//!   promoted) until the promotion is done, writes are refused with
//!   [`RedisClientError::Unavailable`] (503) instead of being sent to a
//!   master that is about to be demoted, whose acknowledged writes would be
//!   thrown away;
//! - the promotion is done at `+promoted-slave`, which the leader sends
//!   once the replica answers as master (the failover cannot abort after
//!   it), or when a Sentinel confirms a `+switch-master`. Every connection
//!   opened before is then dropped, and new ones go straight to the new
//!   master's address (see `pool.rs`), never through a Sentinel that may
//!   not have heard of the switch yet.
//!
//! An event carries no configuration epoch, and a Sentinel that adopts
//! configurations one by one can announce an older switch after a newer
//! one. So `+switch-master` is only a hint: the watcher asks that Sentinel
//! for the master (`SENTINEL MASTER`), and the answer counts only if its
//! `config-epoch` is newer than the newest we know. The same question is
//! asked after every subscription and after [`QUIET`] without events, to
//! catch up a switch no watcher heard; a Sentinel that was cut off or
//! restarted, and still names the OLD master with its old epoch, can never
//! switch us back. Answers from a Sentinel in the middle of a failover are
//! ignored: it already has the new epoch but still the old address.
//!
//! A promotion that never completes (the failover aborts, or nothing ends
//! it within [`FAILOVER_HOLD`]) lifts the refusal. A Sentinel that is down
//! or silent only means its watcher reconnects with a backoff: no request
//! waits for a Sentinel.
//!
//! A master cut off from the Sentinels but not from the app sends no event
//! at all: see the README on `min-replicas-to-write`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use deadpool_redis::redis::{self, Client, IntoConnectionInfo};
use futures_util::StreamExt;

use crate::RedisClientError;

/// How long a promotion may refuse calls without being seen done.
const FAILOVER_HOLD: Duration = Duration::from_secs(5);

/// What the watchers learned, read by every call (two atomic loads).
#[derive(Debug, Default)]
pub(crate) struct FailoverState {
    /// Bumped whenever the master's address changes (and once at the first
    /// answer: connections opened before it asked a Sentinel that may have
    /// been stale). Connections remember the generation they were opened
    /// in; older ones are dropped.
    generation: AtomicU64,
    /// When the current promotion began, in ms since [`CLOCK_START`] plus
    /// one (0: none).
    promoting_since: AtomicU64,
    /// The master as last learned, for new connections to go to.
    master: Mutex<Known>,
}

/// The master we follow, and the newest configuration epoch a Sentinel
/// confirmed for it.
#[derive(Debug, Default)]
struct Known {
    /// `ip:port` (`[ip]:port` for IPv6); `None` until a Sentinel answered.
    address: Option<String>,
    epoch: u64,
}

/// What one `SENTINEL MASTER` answer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    address: String,
    epoch: u64,
    /// The Sentinel is in the middle of a failover of this master: its
    /// epoch is already the new one, its address still the old one.
    failing_over: bool,
}

static CLOCK_START: LazyLock<Instant> = LazyLock::new(Instant::now);

fn now_ms() -> u64 {
    u64::try_from(CLOCK_START.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// `ip:port`, bracketed for IPv6, as a URL authority.
fn address(ip: &str, port: &str) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

impl FailoverState {
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The master's address (`ip:port`, `[ip]:port` for IPv6) as last
    /// learned; `None` until a watcher first heard from a Sentinel.
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
        self.check_at(now_ms())
    }

    fn check_at(&self, now: u64) -> Result<(), RedisClientError> {
        let since = self.promoting_since.load(Ordering::Acquire);
        if since == 0 {
            return Ok(());
        }
        if Self::expired(since, now) {
            // Nothing ended it: give up refusing.
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

    /// Whether a hold that began at `since` (as stored: ms plus one) has
    /// run out at `now`.
    fn expired(since: u64, now: u64) -> bool {
        let hold = u64::try_from(FAILOVER_HOLD.as_millis()).unwrap_or(u64::MAX);
        now.saturating_sub(since - 1) > hold
    }

    fn promoting(&self) {
        self.promoting_at(now_ms());
    }

    /// A promotion began at `now`. A hold left over from one whose end was
    /// missed (expired, but not yet cleared by a call) is replaced.
    fn promoting_at(&self, now: u64) {
        let since = self.promoting_since.load(Ordering::Acquire);
        if since != 0 && !Self::expired(since, now) {
            return;
        }
        self.promoting_since.store(now + 1, Ordering::Release);
        log::info!("the Sentinels are promoting a replica: refusing writes until it is master");
    }

    /// What a Sentinel answered (`SENTINEL MASTER`): after every
    /// (re)subscription, after a quiet spell, and to confirm a
    /// `+switch-master`. Returns whether the master changed.
    fn observed(&self, answer: &Answer) -> bool {
        if answer.failing_over {
            return false;
        }
        let mut known = self.known();
        let first = known.address.is_none();
        if !first && answer.epoch <= known.epoch {
            return false; // not newer than what we know: a lagging Sentinel
        }
        known.epoch = answer.epoch;
        let changed = known.address.as_deref() != Some(answer.address.as_str());
        if !changed {
            return false;
        }
        known.address = Some(answer.address.clone());
        drop(known);
        // The first answer drops the start-up connections too: they asked
        // the Sentinels in order, and one of them may have been stale.
        self.generation.fetch_add(1, Ordering::AcqRel);
        if !first {
            self.promoting_since.store(0, Ordering::Release);
            log::info!(
                "Sentinels switched the master to {}: reconnecting",
                answer.address
            );
        }
        true
    }

    /// The leader promoted the replica at `new_master`: the failover is
    /// committed. Connections move there now; the epoch is learned from
    /// the next answer (the leader's own answers are ignored until its
    /// failover ends, see [`Answer::failing_over`]).
    fn promoted(&self, new_master: String) {
        let mut known = self.known();
        let changed = known.address.as_deref() != Some(new_master.as_str());
        if changed {
            known.address = Some(new_master.clone());
        }
        drop(known);
        if changed {
            self.generation.fetch_add(1, Ordering::AcqRel);
            log::info!("a Sentinel promoted {new_master} to master: reconnecting");
        }
        self.promoting_since.store(0, Ordering::Release);
    }

    fn aborted(&self) {
        self.promoting_since.store(0, Ordering::Release);
    }

    /// One event from a Sentinel's channels, for `master_name`. Returns
    /// true for a `+switch-master`, which the caller confirms by asking.
    fn handle(&self, channel: &str, payload: &str, master_name: &str) -> bool {
        let words: Vec<&str> = payload.split(' ').collect();
        match channel {
            // "<name> <old ip> <old port> <new ip> <new port>"
            "+switch-master" => words.len() == 5 && words[0] == master_name,
            // "slave <ip>:<port> <ip> <port> @ <name> <old ip> <old port>",
            // from the leader once the replica answers as master: about a
            // second before the leader's own +switch-master.
            "+promoted-slave" if words.len() == 8 && words[5] == master_name => {
                self.promoted(address(words[2], words[3]));
                false
            }
            // "slave <id> <ip> <port> @ <name> <master ip> <master port>"
            "+failover-state-send-slaveof-noone"
                if words.iter().skip_while(|w| **w != "@").nth(1) == Some(&master_name) =>
            {
                self.promoting();
                false
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
                false
            }
            _ => false,
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
/// for the master and the subscription is PINGed: bounds a missed switch,
/// and finds a half-open connection that would otherwise wait forever.
const QUIET: Duration = Duration::from_secs(3);

/// Failures in a row after which a watcher that cannot reach its Sentinel
/// says so at WARN (and every this many after): a Sentinel ACL without
/// `+subscribe` or `+sentinel|master`, or a wrong password, would
/// otherwise leave failovers followed only through `READONLY`, silently.
const FAILURES_BEFORE_WARNING: u32 = 5;

async fn watch(
    url: String,
    certificates: Option<redis::TlsCertificates>,
    master_name: String,
    state: Arc<FailoverState>,
) {
    let mut pause = Duration::from_millis(200);
    let mut failures = 0_u32;
    loop {
        let outcome = follow(&url, certificates.as_ref(), &master_name, &state).await;
        match outcome {
            Ok(()) => {
                failures = 0;
                pause = Duration::from_millis(200);
                log::info!("lost the event channel of a Sentinel; resubscribing");
            }
            Err(error) => {
                failures += 1;
                if failures.is_multiple_of(FAILURES_BEFORE_WARNING) {
                    log::warn!(
                        "cannot watch a Sentinel ({failures} tries): {error}; failovers are followed through the other Sentinels, or through READONLY"
                    );
                } else {
                    log::debug!("cannot watch a Sentinel yet: {error}");
                }
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// One subscription, followed until it fails: `Ok` once it had worked.
async fn follow(
    url: &str,
    certificates: Option<&redis::TlsCertificates>,
    master_name: &str,
    state: &FailoverState,
) -> redis::RedisResult<()> {
    let client = client_for(url, certificates.cloned())?;
    let (mut sink, mut messages) = subscribe(&client).await?.split();
    let ask = || async {
        match ask_master(&client, master_name).await {
            Ok(answer) => {
                state.observed(&answer);
                Ok(())
            }
            Err(error) => Err(error),
        }
    };
    ask().await?;
    loop {
        match tokio::time::timeout(QUIET, messages.next()).await {
            Ok(Some(message)) => {
                let payload: String = message.get_payload().unwrap_or_default();
                if state.handle(message.get_channel_name(), &payload, master_name) {
                    // A hint: confirm with this Sentinel's epoch.
                    if ask().await.is_err() {
                        return Ok(());
                    }
                }
            }
            Ok(None) => return Ok(()),
            Err(_) => {
                let pinged =
                    tokio::time::timeout(Duration::from_secs(1), sink.ping::<redis::Value>())
                        .await
                        .map_err(|_| timed_out())
                        .and_then(|pong| pong);
                if pinged.is_err() || ask().await.is_err() {
                    return Ok(()); // half-open or unreachable: resubscribe
                }
            }
        }
    }
}

/// `SENTINEL MASTER`, within 1 s.
async fn ask_master(client: &Client, master_name: &str) -> redis::RedisResult<Answer> {
    let ask = async {
        let mut connection = client.get_multiplexed_async_connection().await?;
        let fields: std::collections::HashMap<String, String> = redis::cmd("SENTINEL")
            .arg("MASTER")
            .arg(master_name)
            .query_async(&mut connection)
            .await?;
        answer_of(&fields).ok_or_else(|| {
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

/// The parts of a `SENTINEL MASTER` reply we use.
fn answer_of(fields: &std::collections::HashMap<String, String>) -> Option<Answer> {
    let ip = fields.get("ip")?;
    let port: u16 = fields.get("port")?.parse().ok()?;
    let epoch = fields.get("config-epoch")?.parse().ok()?;
    let failing_over = fields
        .get("flags")
        .is_some_and(|flags| flags.split(',').any(|flag| flag == "failover_in_progress"));
    Some(Answer {
        address: address(ip, &port.to_string()),
        epoch,
        failing_over,
    })
}

/// Subscribes to the failover events, within 2 s in all.
async fn subscribe(client: &Client) -> redis::RedisResult<redis::aio::PubSub> {
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

    /// The replica 6380 of mymaster, as failover events name it.
    const REPLICA_6380: &str = "slave 127.0.0.1:6380 127.0.0.1 6380 @ mymaster 127.0.0.1 6379";

    /// One event on a Sentinel channel, for the master we follow.
    fn event(state: &FailoverState, channel: &str, payload: &str) -> bool {
        state.handle(channel, payload, "mymaster")
    }

    fn answer(address: &str, epoch: u64) -> Answer {
        Answer {
            address: address.to_owned(),
            epoch,
            failing_over: false,
        }
    }

    #[test]
    fn a_promotion_refuses_calls_until_the_replica_is_master_and_switches_once() {
        let state = FailoverState::default();
        state.observed(&answer("127.0.0.1:6379", 0));
        assert_eq!(
            state.generation(),
            1,
            "the first answer drops start-up connections"
        );
        assert!(state.check().is_ok());
        event(&state, "+failover-state-send-slaveof-noone", REPLICA_6380);
        assert!(state.check().is_err());
        event(&state, "+promoted-slave", REPLICA_6380);
        assert!(state.check().is_ok());
        assert_eq!(state.generation(), 2);
        assert_eq!(state.master_address().as_deref(), Some("127.0.0.1:6380"));
        // Every Sentinel then announces the switch: a hint, confirmed by
        // an answer with the new epoch, which changes nothing more.
        assert!(event(
            &state,
            "+switch-master",
            "mymaster 127.0.0.1 6379 127.0.0.1 6380"
        ));
        assert!(!state.observed(&answer("127.0.0.1:6380", 1)));
        assert_eq!(state.generation(), 2);
    }

    #[test]
    fn a_late_switch_announcement_cannot_send_us_back() {
        let state = FailoverState::default();
        state.observed(&answer("A:1", 4));
        state.observed(&answer("B:1", 5));
        state.observed(&answer("A:1", 6));
        let generation = state.generation();
        // A Sentinel that adopts configurations one by one announces the
        // older switch late; asked, it answers with the older epoch.
        assert!(event(&state, "+switch-master", "mymaster A 1 B 1"));
        assert!(!state.observed(&answer("B:1", 5)));
        assert_eq!(state.master_address().as_deref(), Some("A:1"));
        assert_eq!(state.generation(), generation);
        // The truth, asked again, still counts.
        state.observed(&answer("A:1", 6));
        assert_eq!(state.master_address().as_deref(), Some("A:1"));
    }

    #[test]
    fn a_lagging_sentinel_naming_the_old_master_cannot_switch_back() {
        let state = FailoverState::default();
        state.observed(&answer("127.0.0.1:6379", 4));
        state.observed(&answer("127.0.0.1:6380", 5));
        let generation = state.generation();
        // A Sentinel that slept through the failover still says epoch 4.
        assert!(!state.observed(&answer("127.0.0.1:6379", 4)));
        assert_eq!(state.master_address().as_deref(), Some("127.0.0.1:6380"));
        // The leader, mid-failover, has the new epoch and the old address.
        let mut leader = answer("127.0.0.1:6379", 6);
        leader.failing_over = true;
        assert!(!state.observed(&leader));
        assert_eq!(state.generation(), generation);
        // A later failover back, missed, is caught up by its newer epoch.
        assert!(state.observed(&answer("127.0.0.1:6379", 6)));
        assert_eq!(state.generation(), generation + 1);
    }

    #[test]
    fn a_missed_end_does_not_disable_the_next_hold_and_a_repeat_does_not_lift_it() {
        let state = FailoverState::default();
        state.observed(&answer("127.0.0.1:6379", 0));
        let hold = u64::try_from(FAILOVER_HOLD.as_millis()).expect("a few seconds");
        // A promotion at t=0 whose end no watcher heard, and no call since.
        state.promoting_at(0);
        assert!(state.check_at(1).is_err());
        // The next one, after the first hold ran out, holds anew.
        state.promoting_at(hold + 1_000);
        assert!(state.check_at(hold + 1_001).is_err());
        assert!(
            state.check_at(2 * hold + 1_002).is_ok(),
            "and runs out in its turn"
        );
        state.promoting_at(3 * hold);
        // An answer repeating the known master does not lift it.
        state.observed(&answer("127.0.0.1:6379", 1));
        assert!(state.check_at(3 * hold + 1).is_err());
    }

    #[test]
    fn other_masters_and_aborts_do_not_hold_calls() {
        let state = FailoverState::default();
        state.observed(&answer("127.0.0.1:6379", 0));
        event(
            &state,
            "+failover-state-send-slaveof-noone",
            "slave 1 127.0.0.1 1 @ othermaster 127.0.0.1 2",
        );
        assert!(!event(&state, "+switch-master", "othermaster a 1 b 2"));
        event(
            &state,
            "+promoted-slave",
            "slave 127.0.0.1:7000 127.0.0.1 7000 @ othermaster 127.0.0.1 7001",
        );
        assert!(state.check().is_ok());
        assert_eq!(state.generation(), 1);
        event(&state, "+failover-state-send-slaveof-noone", REPLICA_6380);
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

    #[test]
    fn a_sentinel_master_reply_gives_address_epoch_and_failover_flag() {
        let fields = |pairs: &[(&str, &str)]| -> std::collections::HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let reply = fields(&[
            ("name", "mymaster"),
            ("ip", "10.0.0.5"),
            ("port", "6380"),
            ("config-epoch", "7"),
            ("flags", "master"),
        ]);
        assert_eq!(answer_of(&reply), Some(answer("10.0.0.5:6380", 7)));
        let mid = fields(&[
            ("ip", "::1"),
            ("port", "6380"),
            ("config-epoch", "8"),
            ("flags", "master,failover_in_progress"),
        ]);
        let parsed = answer_of(&mid).expect("parsed");
        assert_eq!(parsed.address, "[::1]:6380", "IPv6, bracketed for a URL");
        assert!(parsed.failing_over);
        assert_eq!(
            answer_of(&fields(&[
                ("ip", "a"),
                ("port", "x"),
                ("config-epoch", "1")
            ])),
            None
        );
        assert_eq!(
            answer_of(&fields(&[("ip", "a"), ("config-epoch", "1")])),
            None
        );
    }
}
