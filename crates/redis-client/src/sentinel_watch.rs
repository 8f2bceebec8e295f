//! Following a Sentinel failover as it happens, as the Redis Sentinel
//! client guidelines ask: every Sentinel's event channel is watched, and
//!
//! - from `+failover-state-send-slaveof-noone` (the replica is being
//!   promoted) until `+switch-master`, calls are refused with
//!   [`RedisClientError::Unavailable`] (503) instead of being sent to a
//!   master that is about to be demoted, whose acknowledged writes would be
//!   thrown away;
//! - on `+switch-master` to a new address, every connection opened before
//!   is dropped, so the next call asks the Sentinels for the new master.
//!
//! A promotion that never completes (the failover aborts, or no
//! `+switch-master` arrives within [`FAILOVER_HOLD`]) lifts the refusal. A
//! Sentinel that is down or silent only means its watcher reconnects with
//! a backoff: no request waits for a Sentinel.
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
    /// The master the last `+switch-master` named, to count each switch
    /// once although every Sentinel announces it.
    master: Mutex<Option<String>>,
}

static CLOCK_START: LazyLock<Instant> = LazyLock::new(Instant::now);

fn now_ms() -> u64 {
    u64::try_from(CLOCK_START.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl FailoverState {
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
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
        let _ = self.promoting_since.compare_exchange(
            0,
            now_ms() + 1,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }

    /// What a Sentinel answers for the master now, asked after every
    /// (re)subscription and after a quiet spell: a switch announced while
    /// no watcher listened is caught up here. The first answer only
    /// records the address (connections were opened by asking, too).
    fn observed(&self, current_master: &str) {
        let mut master = self
            .master
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match master.as_deref() {
            None => *master = Some(current_master.to_owned()),
            Some(known) if known != current_master => {
                drop(master);
                self.switched(current_master);
            }
            Some(_) => {}
        }
    }

    fn switched(&self, new_master: &str) {
        let mut master = self
            .master
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if master.as_deref() != Some(new_master) {
            *master = Some(new_master.to_owned());
            self.generation.fetch_add(1, Ordering::AcqRel);
            log::info!("Sentinels switched the master to {new_master}: reconnecting");
        }
        self.promoting_since.store(0, Ordering::Release);
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
                self.switched(&format!("{}:{}", words[3], words[4]));
            }
            // "slave <id> <ip> <port> @ <name> <master ip> <master port>"
            "+failover-state-send-slaveof-noone"
                if words.iter().skip_while(|w| **w != "@").nth(1) == Some(&master_name) =>
            {
                self.promoting();
            }
            // "master <name> <ip> <port>"
            abort if abort.starts_with("-failover-abort") && words.get(1) == Some(&master_name) => {
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
                if let Ok(master) = ask_master(&url, certificates.clone(), &master_name).await {
                    state.observed(&master);
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
                                Ok(master) => state.observed(&master),
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

/// `SENTINEL get-master-addr-by-name`, as `ip:port`, within 1 s.
async fn ask_master(
    url: &str,
    certificates: Option<redis::TlsCertificates>,
    master_name: &str,
) -> redis::RedisResult<String> {
    let client = client_for(url, certificates)?;
    let ask = async {
        let mut connection = client.get_multiplexed_async_connection().await?;
        let (ip, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(master_name)
            .query_async(&mut connection)
            .await?;
        Ok(format!("{ip}:{port}"))
    };
    tokio::time::timeout(Duration::from_secs(1), ask)
        .await
        .map_err(|_| timed_out())?
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

    #[test]
    fn a_promotion_refuses_calls_until_the_switch_which_bumps_the_generation_once() {
        let state = FailoverState::default();
        assert!(state.check().is_ok());
        state.handle(
            "+failover-state-send-slaveof-noone",
            "slave 127.0.0.1:6380 127.0.0.1 6380 @ mymaster 127.0.0.1 6379",
            "mymaster",
        );
        assert!(state.check().is_err());
        for _ in 0..3 {
            // Every Sentinel announces it.
            state.handle(
                "+switch-master",
                "mymaster 127.0.0.1 6379 127.0.0.1 6380",
                "mymaster",
            );
        }
        assert!(state.check().is_ok());
        assert_eq!(state.generation(), 1);
    }

    #[test]
    fn a_switch_missed_while_no_watcher_listened_is_caught_up_by_asking() {
        let state = FailoverState::default();
        state.observed("127.0.0.1:6379"); // the first answer: no bump
        state.observed("127.0.0.1:6379");
        assert_eq!(state.generation(), 0);
        state.observed("127.0.0.1:6380"); // the switch nobody heard
        assert_eq!(state.generation(), 1);
        state.handle(
            "+switch-master",
            "mymaster 127.0.0.1 6379 127.0.0.1 6380",
            "mymaster",
        );
        assert_eq!(state.generation(), 1, "the same switch, announced late");
    }

    #[test]
    fn other_masters_and_aborts_do_not_hold_calls() {
        let state = FailoverState::default();
        state.handle(
            "+failover-state-send-slaveof-noone",
            "slave 1 127.0.0.1 1 @ othermaster 127.0.0.1 2",
            "mymaster",
        );
        state.handle("+switch-master", "othermaster a 1 b 2", "mymaster");
        assert!(state.check().is_ok());
        assert_eq!(state.generation(), 0);
        state.handle(
            "+failover-state-send-slaveof-noone",
            "slave 1 127.0.0.1 1 @ mymaster 127.0.0.1 2",
            "mymaster",
        );
        state.handle(
            "-failover-abort-not-elected",
            "master mymaster 127.0.0.1 2",
            "mymaster",
        );
        assert!(state.check().is_ok());
    }
}
