//! The one behaviour suite every [`SessionStore`] must pass.
//!
//! `store_behaviour_suite!(make_store)` expands to one `#[tokio::test]` per
//! case, so each failing behaviour reports on its own. `make_store` is an
//! async fn returning a [`Harness`]: the store plus whatever must stay alive
//! for it (a redis-server process, say).

use std::any::Any;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use session::{Changes, KeyRing, SealedStore, SessionId, SessionStore, WritePolicy};

/// A store under test and what keeps its backend alive.
pub(crate) struct Harness {
    pub(crate) store: Arc<dyn SessionStore>,
    /// The sealing key's id, when the store is a [`SealedStore`] (what the
    /// byte limits count grows by the envelope).
    sealed_by: Option<&'static str>,
    _keep_alive: Box<dyn Any>,
}

/// The fields the suite increments or compares: a sealed store keeps them
/// plain, as an app names its counters.
pub(crate) const PLAINTEXT_FIELDS: [&str; 9] = [
    "count", "other", "n", "step", "token", "user", "x", "c", "d",
];

impl Harness {
    pub(crate) fn new(store: Arc<dyn SessionStore>, keep_alive: impl Any) -> Self {
        Self {
            store,
            sealed_by: None,
            _keep_alive: Box::new(keep_alive),
        }
    }

    /// `store` wrapped in a [`SealedStore`] under one fresh key `k1`, with
    /// [`PLAINTEXT_FIELDS`] plain: the suite then runs on sealed values.
    #[allow(dead_code)] // not every test binary runs the sealed suite
    pub(crate) fn sealed(store: impl SessionStore, keep_alive: impl Any) -> Self {
        let key: [u8; 32] = std::array::from_fn(|i| i as u8 ^ 0x5a);
        let ring = KeyRing::parse(
            "session.encryption.keys",
            &[format!("k1:{}", base64_standard(&key))],
        )
        .expect("a valid key")
        .expect("one key");
        Self {
            store: Arc::new(SealedStore::new(store, ring).plaintext_fields(PLAINTEXT_FIELDS)),
            sealed_by: Some("k1"),
            _keep_alive: Box::new(keep_alive),
        }
    }

    /// What `fields` count against `max_bytes` as this store keeps them:
    /// names plus stored values (a sealed value's envelope included).
    pub(crate) fn bytes_of(&self, fields: &[(&str, &str)]) -> usize {
        fields
            .iter()
            .map(|(name, value)| {
                let stored = match self.sealed_by {
                    Some(key_id) if !PLAINTEXT_FIELDS.contains(name) => {
                        // 0x01 "v1:" id ":" base64url(24 + n + 16), unpadded.
                        5 + key_id.len() + (4 * (40 + value.len())).div_ceil(3)
                    }
                    _ => value.len(),
                };
                name.len() + stored
            })
            .sum()
    }
}

/// Standard base64, padded: the key form the settings take.
#[allow(dead_code)] // as `Harness::sealed`
fn base64_standard(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Ten minutes idle, no absolute cap, roomy limits.
pub(crate) static LONG: LazyLock<WritePolicy> =
    LazyLock::new(|| policy(Duration::from_secs(600), None));

pub(crate) fn policy(idle: Duration, absolute: Option<Duration>) -> WritePolicy {
    WritePolicy::new(idle, absolute, 64, 16 * 1024).expect("a valid policy")
}

/// `at` as the `__created` field holds it: ms since the Unix epoch.
pub(crate) fn millis_since_epoch(at: std::time::SystemTime) -> String {
    at.duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis()
        .to_string()
}

pub(crate) fn sets(fields: &[(&str, &str)]) -> Changes {
    Changes {
        upserts: fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Changes::default()
    }
}

pub(crate) async fn created(
    store: &dyn SessionStore,
    fields: &[(&str, &str)],
    policy: &WritePolicy,
) -> SessionId {
    let id = SessionId::generate();
    assert!(
        store
            .create(&id, &sets(fields), policy)
            .await
            .expect("create"),
        "a fresh id is free"
    );
    id
}

#[macro_export]
macro_rules! store_behaviour_suite {
    ($make_store:ident) => {
        mod store_behaviour {
            use std::sync::Arc;
            use std::time::{Duration, SystemTime};

            use session::{Changes, SessionFields, SessionId, SessionStore, StoreError};
            use session::{Limit, Renewal};

            use super::$make_store as make_store;
            use $crate::store_suite::{LONG, created, millis_since_epoch, policy, sets};

            async fn fields_of(store: &dyn SessionStore, id: &SessionId) -> SessionFields {
                store
                    .load(id)
                    .await
                    .expect("load")
                    .expect("the session exists")
                    .fields
            }

            async fn is_gone(store: &dyn SessionStore, id: &SessionId) -> bool {
                store.load(id).await.expect("load").is_none()
            }

            #[tokio::test]
            async fn a_created_session_loads_with_its_fields_and_creation_time() {
                let harness = make_store().await;
                let before = SystemTime::now() - Duration::from_secs(5);
                let id = created(&*harness.store, &[("count", "1"), ("user", "ada")], &LONG).await;
                let loaded = harness
                    .store
                    .load(&id)
                    .await
                    .expect("load")
                    .expect("exists");
                assert_eq!(loaded.fields.len(), 2, "{:?}", loaded.fields);
                assert_eq!(loaded.fields["count"], "1");
                assert_eq!(loaded.fields["user"], "ada");
                let created_at = loaded.created.expect("stamped");
                assert!(created_at > before, "{created_at:?}");
                assert_eq!(loaded.seen, loaded.created);
            }

            #[tokio::test]
            async fn values_are_stored_verbatim() {
                let harness = make_store().await;
                let odd = [
                    "",
                    " padded ",
                    "ünïcødé ✓",
                    "{\"json\":[1,2]}",
                    "line\nbreak",
                    "*?[glob]",
                    "-- not lua",
                ];
                for value in odd {
                    let id = created(&*harness.store, &[("v", value)], &LONG).await;
                    assert_eq!(fields_of(&*harness.store, &id).await["v"], value);
                }
            }

            #[tokio::test]
            async fn create_refuses_a_taken_id_and_keeps_the_owner_data() {
                let harness = make_store().await;
                let id = created(&*harness.store, &[("user", "owner")], &LONG).await;
                let again = harness
                    .store
                    .create(&id, &sets(&[("user", "intruder")]), &LONG)
                    .await
                    .expect("create");
                assert!(!again);
                assert_eq!(fields_of(&*harness.store, &id).await["user"], "owner");
            }

            #[tokio::test]
            async fn load_gives_the_time_left() {
                let harness = make_store().await;
                let id = created(&*harness.store, &[("a", "1")], &LONG).await;
                let ttl = harness
                    .store
                    .load(&id)
                    .await
                    .expect("load")
                    .expect("exists")
                    .ttl
                    .expect("an expiry");
                assert!(ttl <= Duration::from_secs(600), "{ttl:?}");
                assert!(ttl > Duration::from_secs(590), "{ttl:?}");
            }

            #[tokio::test]
            async fn an_unknown_id_loads_as_none() {
                let harness = make_store().await;
                assert!(is_gone(&*harness.store, &SessionId::generate()).await);
            }

            #[tokio::test]
            async fn update_sets_and_removes_only_the_named_fields() {
                let harness = make_store().await;
                let store = &*harness.store;
                let id = created(
                    store,
                    &[("keep", "k"), ("change", "1"), ("drop", "d")],
                    &LONG,
                )
                .await;
                let changes = Changes {
                    removals: vec!["drop".into()],
                    upserts: vec![("change".into(), "2".into()), ("new".into(), "n".into())],
                    ..Changes::default()
                };
                assert!(store.update(&id, &changes, &LONG).await.expect("update"));
                let fields = fields_of(store, &id).await;
                assert_eq!(fields.len(), 3, "{fields:?}");
                assert_eq!(
                    (
                        &fields["keep"][..],
                        &fields["change"][..],
                        &fields["new"][..]
                    ),
                    ("k", "2", "n")
                );
            }

            #[tokio::test]
            async fn clear_removes_every_user_field_but_the_session_lives_on() {
                let harness = make_store().await;
                let store = &*harness.store;
                let id = created(store, &[("a", "1"), ("b", "2")], &LONG).await;
                let changes = Changes {
                    clear: true,
                    upserts: vec![("c".into(), "3".into())],
                    ..Changes::default()
                };
                assert!(store.update(&id, &changes, &LONG).await.expect("update"));
                let loaded = store.load(&id).await.expect("load").expect("alive");
                assert_eq!(loaded.fields.len(), 1, "{:?}", loaded.fields);
                assert_eq!(loaded.fields["c"], "3");
                assert!(loaded.created.is_some(), "metadata survives a clear");

                let only_clear = Changes {
                    clear: true,
                    ..Changes::default()
                };
                assert!(store.update(&id, &only_clear, &LONG).await.expect("update"));
                let loaded = store.load(&id).await.expect("load").expect("still alive");
                assert!(loaded.fields.is_empty(), "{:?}", loaded.fields);
            }

            #[tokio::test]
            async fn concurrent_updates_of_different_fields_all_land() {
                let harness = make_store().await;
                let id = created(&*harness.store, &[("seed", "0")], &LONG).await;
                let writers = (0..40).map(|n| {
                    let (store, id) = (Arc::clone(&harness.store), id.clone());
                    tokio::spawn(async move {
                        let field = format!("field{n}");
                        let value = n.to_string();
                        store.update(&id, &sets(&[(&field, &value)]), &LONG).await
                    })
                });
                for writer in writers {
                    assert!(writer.await.expect("task").expect("update"));
                }
                let fields = fields_of(&*harness.store, &id).await;
                assert_eq!(fields.len(), 41, "{fields:?}");
                for n in 0..40 {
                    assert_eq!(fields[&format!("field{n}")], n.to_string());
                }
            }

            #[tokio::test]
            async fn update_never_creates_a_missing_session() {
                let harness = make_store().await;
                let id = SessionId::generate();
                let written = harness
                    .store
                    .update(&id, &sets(&[("user", "mallory")]), &LONG)
                    .await
                    .expect("update");
                assert!(!written);
                assert!(is_gone(&*harness.store, &id).await);
            }

            #[tokio::test]
            async fn an_empty_update_refreshes_the_ttl_and_changes_no_field() {
                let harness = make_store().await;
                let store = &*harness.store;
                let short = policy(Duration::from_secs(3), None);
                let id = created(store, &[("a", "1")], &short).await;
                tokio::time::sleep(Duration::from_millis(1200)).await;
                assert!(
                    store
                        .update(&id, &Changes::default(), &LONG)
                        .await
                        .expect("touch")
                );
                let loaded = store.load(&id).await.expect("load").expect("alive");
                assert!(loaded.ttl.expect("ttl") > Duration::from_secs(590));
                assert_eq!(loaded.fields.len(), 1);
                assert!(loaded.seen > loaded.created, "{loaded:?}");
            }

            #[tokio::test]
            async fn increment_returns_the_new_value_and_a_missing_field_starts_at_zero() {
                let harness = make_store().await;
                let store = &*harness.store;
                let id = created(store, &[("count", "5")], &LONG).await;
                assert_eq!(
                    store.increment(&id, "count", 1, &LONG).await.expect("incr"),
                    Some(6)
                );
                assert_eq!(
                    store
                        .increment(&id, "count", -10, &LONG)
                        .await
                        .expect("incr"),
                    Some(-4)
                );
                assert_eq!(
                    store.increment(&id, "other", 3, &LONG).await.expect("incr"),
                    Some(3)
                );
                let fields = fields_of(store, &id).await;
                assert_eq!((&fields["count"][..], &fields["other"][..]), ("-4", "3"));
            }

            #[tokio::test]
            async fn concurrent_increments_are_all_counted() {
                let harness = make_store().await;
                let id = created(&*harness.store, &[("count", "0")], &LONG).await;
                let tasks = (0..100).map(|_| {
                    let (store, id) = (Arc::clone(&harness.store), id.clone());
                    tokio::spawn(async move { store.increment(&id, "count", 1, &LONG).await })
                });
                let mut seen = Vec::new();
                for task in tasks {
                    seen.push(task.await.expect("task").expect("incr").expect("exists"));
                }
                seen.sort_unstable();
                assert_eq!(seen, (1..=100).collect::<Vec<i64>>(), "each value once");
                assert_eq!(fields_of(&*harness.store, &id).await["count"], "100");
            }

            #[tokio::test]
            async fn increment_never_creates_a_missing_session() {
                let harness = make_store().await;
                let id = SessionId::generate();
                let counted = harness
                    .store
                    .increment(&id, "count", 1, &LONG)
                    .await
                    .expect("incr");
                assert_eq!(counted, None);
                assert!(is_gone(&*harness.store, &id).await);
            }

            #[tokio::test]
            async fn increment_of_a_non_integer_is_invalid_data_and_changes_nothing() {
                let harness = make_store().await;
                let store = &*harness.store;
                // Redis's own integer rule, which every store must keep to
                // the letter: a store that accepts "+1" where Redis refuses
                // it has drifted from the script.
                for bad in [
                    "abc",
                    "1.5",
                    " 1",
                    "1 ",
                    "",
                    "+1",
                    "01",
                    "-0",
                    "0x1",
                    "1e3",
                    "9223372036854775808",
                    "-9223372036854775809",
                ] {
                    let id = created(store, &[("count", bad)], &LONG).await;
                    let error = store.increment(&id, "count", 1, &LONG).await;
                    assert!(
                        matches!(error, Err(StoreError::InvalidData(_))),
                        "{bad:?}: {error:?}"
                    );
                    assert_eq!(fields_of(store, &id).await["count"], bad);
                }
            }

            #[tokio::test]
            async fn increment_that_would_overflow_is_invalid_data_and_changes_nothing() {
                let harness = make_store().await;
                let store = &*harness.store;
                let max = i64::MAX.to_string();
                let id = created(store, &[("count", &max)], &LONG).await;
                let error = store.increment(&id, "count", 1, &LONG).await;
                assert!(
                    matches!(error, Err(StoreError::InvalidData(_))),
                    "{error:?}"
                );
                assert_eq!(fields_of(store, &id).await["count"], max);
                assert_eq!(
                    store
                        .increment(&id, "count", -1, &LONG)
                        .await
                        .expect("incr"),
                    Some(i64::MAX - 1),
                    "values near the 64-bit edge come back exact"
                );
            }

            #[tokio::test]
            async fn increment_of_canonical_integers_counts_on_them() {
                let harness = make_store().await;
                let store = &*harness.store;
                for (stored, by, after) in [("0", 1, 1), ("-5", 2, -3), ("41", 1, 42)] {
                    let id = created(store, &[("count", stored)], &LONG).await;
                    let counted = store.increment(&id, "count", by, &LONG).await;
                    assert_eq!(counted.expect("incr"), Some(after), "{stored:?}");
                }
            }

            #[tokio::test]
            async fn a_clear_with_ten_thousand_removals_applies_whole() {
                // Redis does not roll back a script that fails halfway: the
                // deletes of a clear must not land while the rest fails.
                let harness = make_store().await;
                let store = &*harness.store;
                let id = created(store, &[("a", "1"), ("b", "2")], &LONG).await;
                let changes = Changes {
                    clear: true,
                    removals: (0..10_000).map(|n| format!("gone{n}")).collect(),
                    upserts: vec![("kept".to_owned(), "yes".to_owned())],
                    ..Changes::default()
                };
                assert!(store.update(&id, &changes, &LONG).await.expect("update"));
                let fields = fields_of(store, &id).await;
                assert_eq!(fields.len(), 1, "{fields:?}");
                assert_eq!(fields["kept"], "yes");
            }

            #[tokio::test]
            async fn a_change_naming_more_fields_than_the_limit_fails_before_any_write() {
                let harness = make_store().await;
                let store = &*harness.store;
                let id = created(store, &[("a", "1"), ("b", "2")], &LONG).await;
                // The same name sent 65 times: over the 64-field limit as
                // sent, whatever it would come to.
                let changes = Changes {
                    clear: true,
                    removals: vec!["a".to_owned()],
                    upserts: (0..65).map(|_| ("x".to_owned(), "1".to_owned())).collect(),
                    ..Changes::default()
                };
                let outcome = store.update(&id, &changes, &LONG).await;
                assert!(
                    matches!(outcome, Err(StoreError::LimitExceeded(Limit::Fields(64)))),
                    "{outcome:?}"
                );
                let fields = fields_of(store, &id).await;
                assert_eq!(
                    (&fields["a"][..], &fields["b"][..]),
                    ("1", "2"),
                    "nothing cleared"
                );
            }

            #[tokio::test]
            async fn an_increment_that_lengthens_a_number_past_max_bytes_changes_nothing() {
                let harness = make_store().await;
                let store = &*harness.store;
                // "n" + "9" + "pad" + its value: exactly the limit.
                let limit = harness.bytes_of(&[("n", "9"), ("pad", "xxxxx")]);
                let tight = session::WritePolicy::new(LONG.idle_timeout(), None, 64, limit)
                    .expect("a valid policy");
                let id = created(store, &[("n", "9"), ("pad", "xxxxx")], &tight).await;
                let outcome = store.increment(&id, "n", 1, &tight).await;
                assert!(
                    matches!(outcome, Err(StoreError::LimitExceeded(Limit::Bytes(l))) if l == limit),
                    "{outcome:?}"
                );
                assert_eq!(fields_of(store, &id).await["n"], "9", "nothing changed");
                // A count that keeps its length still counts.
                let down = store.increment(&id, "n", -1, &tight).await;
                assert_eq!(down.expect("incr"), Some(8));
            }

            #[tokio::test]
            async fn compare_and_set_swaps_only_on_a_match() {
                let harness = make_store().await;
                let store = &*harness.store;
                let id = created(store, &[("step", "cart")], &LONG).await;
                let cas = |expected: Option<&'static str>, new: Option<&'static str>| {
                    let (store, id) = (Arc::clone(&harness.store), id.clone());
                    async move {
                        store
                            .compare_and_set(&id, "step", expected, new, &LONG)
                            .await
                            .expect("cas")
                    }
                };
                assert_eq!(cas(Some("paid"), Some("shipped")).await, Some(false));
                assert_eq!(cas(None, Some("shipped")).await, Some(false));
                assert_eq!(fields_of(store, &id).await["step"], "cart");
                assert_eq!(cas(Some("cart"), Some("paid")).await, Some(true));
                assert_eq!(fields_of(store, &id).await["step"], "paid");
                assert_eq!(cas(Some("paid"), None).await, Some(true));
                assert!(!fields_of(store, &id).await.contains_key("step"));
                assert_eq!(cas(None, Some("cart")).await, Some(true));
                assert_eq!(fields_of(store, &id).await["step"], "cart");
            }

            #[tokio::test]
            async fn concurrent_compare_and_set_has_exactly_one_winner() {
                let harness = make_store().await;
                let id = created(&*harness.store, &[("token", "unused")], &LONG).await;
                let tasks = (0..30).map(|n| {
                    let (store, id) = (Arc::clone(&harness.store), id.clone());
                    tokio::spawn(async move {
                        let mine = format!("used-by-{n}");
                        store
                            .compare_and_set(&id, "token", Some("unused"), Some(&mine), &LONG)
                            .await
                    })
                });
                let mut winners = 0;
                for task in tasks {
                    if task.await.expect("task").expect("cas") == Some(true) {
                        winners += 1;
                    }
                }
                assert_eq!(winners, 1);
                assert!(fields_of(&*harness.store, &id).await["token"].starts_with("used-by-"));
            }

            #[tokio::test]
            async fn compare_and_set_never_creates_a_missing_session() {
                let harness = make_store().await;
                let id = SessionId::generate();
                let swapped = harness
                    .store
                    .compare_and_set(&id, "step", None, Some("x"), &LONG)
                    .await
                    .expect("cas");
                assert_eq!(swapped, None);
                assert!(is_gone(&*harness.store, &id).await);
            }

            #[tokio::test]
            async fn delete_removes_the_session_and_says_whether_it_existed() {
                let harness = make_store().await;
                let id = created(&*harness.store, &[("a", "1")], &LONG).await;
                assert!(harness.store.delete(&id).await.expect("delete"));
                assert!(!harness.store.delete(&id).await.expect("delete"));
                assert!(is_gone(&*harness.store, &id).await);
            }

            #[tokio::test]
            async fn nothing_resurrects_a_deleted_session() {
                let harness = make_store().await;
                let store = &*harness.store;
                let id = created(store, &[("user", "ada")], &LONG).await;
                assert!(store.delete(&id).await.expect("delete"));
                assert!(
                    !store
                        .update(&id, &sets(&[("user", "ada")]), &LONG)
                        .await
                        .expect("update")
                );
                assert!(
                    !store
                        .update(&id, &Changes::default(), &LONG)
                        .await
                        .expect("touch")
                );
                assert_eq!(
                    store.increment(&id, "count", 1, &LONG).await.expect("incr"),
                    None
                );
                assert_eq!(
                    store
                        .compare_and_set(&id, "step", None, Some("x"), &LONG)
                        .await
                        .expect("cas"),
                    None
                );
                let renewed = store
                    .renew(&id, &store.id_for_renewal(&id), &Changes::default(), &LONG)
                    .await
                    .expect("renew");
                assert_eq!(renewed, Renewal::Missing);
                assert!(is_gone(store, &id).await);
            }

            #[tokio::test]
            async fn a_session_expires_after_its_idle_timeout() {
                let harness = make_store().await;
                let short = policy(Duration::from_secs(1), None);
                let id = created(&*harness.store, &[("a", "1")], &short).await;
                tokio::time::sleep(Duration::from_millis(1300)).await;
                assert!(is_gone(&*harness.store, &id).await);
            }

            #[tokio::test]
            async fn every_write_slides_the_idle_timeout() {
                let harness = make_store().await;
                let store = &*harness.store;
                let short = policy(Duration::from_millis(1500), None);
                let id = created(store, &[("count", "0")], &short).await;
                // Six writes 600 ms apart: 3.6 s in all, well past one idle
                // timeout, yet each lands inside the previous one's TTL.
                for round in 0..6 {
                    tokio::time::sleep(Duration::from_millis(600)).await;
                    let alive = match round % 3 {
                        0 => store
                            .increment(&id, "count", 1, &short)
                            .await
                            .expect("incr")
                            .is_some(),
                        1 => store
                            .update(&id, &sets(&[("x", "y")]), &short)
                            .await
                            .expect("update"),
                        _ => store
                            .compare_and_set(&id, "x", Some("y"), Some("z"), &short)
                            .await
                            .expect("cas")
                            .is_some(),
                    };
                    assert!(alive, "round {round}");
                }
                tokio::time::sleep(Duration::from_millis(1700)).await;
                assert!(is_gone(store, &id).await, "then idleness ends it");
            }

            #[tokio::test]
            async fn with_a_touch_threshold_a_write_slides_the_ttl_only_once_it_is_due() {
                let harness = make_store().await;
                let store = &*harness.store;
                let idle = Duration::from_secs(4);
                let touchy = policy(idle, None).with_touch_after(Duration::from_millis(1500));
                let id = created(store, &[("count", "0")], &touchy).await;
                let ttl = |loaded: Option<session::LoadedSession>| {
                    loaded.expect("alive").ttl.expect("an expiry")
                };
                tokio::time::sleep(Duration::from_millis(700)).await;
                // Inside the threshold: the write lands, the TTL runs on.
                assert_eq!(
                    store.increment(&id, "count", 1, &touchy).await.expect("incr"),
                    Some(1)
                );
                assert!(
                    store
                        .update(&id, &sets(&[("x", "y")]), &touchy)
                        .await
                        .expect("update")
                );
                assert_eq!(
                    store
                        .compare_and_set(&id, "x", Some("y"), Some("z"), &touchy)
                        .await
                        .expect("cas"),
                    Some(true)
                );
                let loaded = store.load(&id).await.expect("load");
                let left = ttl(loaded.clone());
                assert!(left <= idle - Duration::from_millis(600), "not slid: {left:?}");
                assert_eq!(loaded.expect("alive").fields["x"], "z", "every write landed");
                // Past it: the next write slides the TTL back to the full idle timeout.
                tokio::time::sleep(Duration::from_millis(1000)).await;
                assert_eq!(
                    store.increment(&id, "count", 1, &touchy).await.expect("incr"),
                    Some(2)
                );
                let left = ttl(store.load(&id).await.expect("load"));
                assert!(left > idle - Duration::from_millis(400), "slid: {left:?}");
            }

            #[tokio::test]
            async fn with_a_touch_threshold_a_refresh_without_changes_always_slides_the_ttl() {
                let harness = make_store().await;
                let store = &*harness.store;
                let idle = Duration::from_secs(4);
                let touchy = policy(idle, None).with_touch_after(Duration::from_secs(3));
                let id = created(store, &[("a", "1")], &touchy).await;
                tokio::time::sleep(Duration::from_millis(800)).await;
                assert!(store.update(&id, &Changes::default(), &touchy).await.expect("touch"));
                let left = store
                    .load(&id)
                    .await
                    .expect("load")
                    .expect("alive")
                    .ttl
                    .expect("an expiry");
                assert!(left > idle - Duration::from_millis(400), "slid: {left:?}");
            }

            #[tokio::test]
            async fn a_touch_threshold_as_long_as_the_idle_timeout_still_keeps_a_busy_session() {
                // Asked to slide only once the whole idle timeout has run
                // down (when the key is already gone), the policy slides at
                // half of it: writes 400 ms apart keep a 1.5 s session alive.
                let harness = make_store().await;
                let store = &*harness.store;
                let idle = Duration::from_millis(1500);
                let greedy = policy(idle, None).with_touch_after(idle);
                assert_eq!(greedy.touch_after(), idle / 2);
                let id = created(store, &[("count", "0")], &greedy).await;
                for round in 1..=8 {
                    tokio::time::sleep(Duration::from_millis(400)).await;
                    assert_eq!(
                        store.increment(&id, "count", 1, &greedy).await.expect("incr"),
                        Some(round),
                        "round {round}"
                    );
                }
            }

            #[tokio::test]
            async fn with_a_touch_threshold_a_session_written_steadily_never_expires() {
                // Writes 500 ms apart against an idle timeout of 1.5 s and a
                // threshold of 0.5 s: each lands before the TTL left by the
                // last refresh runs out, so the session lives on.
                let harness = make_store().await;
                let store = &*harness.store;
                let touchy = policy(Duration::from_millis(1500), None)
                    .with_touch_after(Duration::from_millis(500));
                let id = created(store, &[("count", "0")], &touchy).await;
                for round in 1..=8 {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    assert_eq!(
                        store.increment(&id, "count", 1, &touchy).await.expect("incr"),
                        Some(round),
                        "round {round}"
                    );
                }
                tokio::time::sleep(Duration::from_millis(1700)).await;
                assert!(is_gone(store, &id).await, "then idleness ends it");
            }

            #[tokio::test]
            async fn the_absolute_lifetime_ends_even_a_busy_session() {
                let harness = make_store().await;
                let store = &*harness.store;
                let capped = policy(Duration::from_secs(60), Some(Duration::from_secs(2)));
                let id = created(store, &[("count", "0")], &capped).await;
                let ttl = store
                    .load(&id)
                    .await
                    .expect("load")
                    .expect("alive")
                    .ttl
                    .expect("ttl");
                assert!(
                    ttl <= Duration::from_secs(2),
                    "the TTL is cut to the cap: {ttl:?}"
                );
                let mut last = 0;
                for _ in 0..20 {
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    match store
                        .increment(&id, "count", 1, &capped)
                        .await
                        .expect("incr")
                    {
                        Some(value) => last = value,
                        None => break,
                    }
                }
                assert!(last >= 8, "busy for a while first: {last}");
                tokio::time::sleep(Duration::from_millis(400)).await;
                assert_eq!(
                    store
                        .increment(&id, "count", 1, &capped)
                        .await
                        .expect("incr"),
                    None
                );
                assert!(
                    !store
                        .update(&id, &Changes::default(), &capped)
                        .await
                        .expect("touch")
                );
                assert!(is_gone(store, &id).await);
            }

            #[tokio::test]
            async fn renew_moves_the_data_to_the_new_id_and_the_old_id_dies() {
                let harness = make_store().await;
                let store = &*harness.store;
                let old = created(store, &[("count", "3"), ("cart", "2 books")], &LONG).await;
                let created_at = store
                    .load(&old)
                    .await
                    .expect("load")
                    .expect("alive")
                    .created;
                let new = store.id_for_renewal(&old);
                let changes = sets(&[("user", "ada")]);
                assert_eq!(
                    store
                        .renew(&old, &new, &changes, &LONG)
                        .await
                        .expect("renew"),
                    Renewal::Renewed
                );
                assert!(is_gone(store, &old).await);
                let loaded = store.load(&new).await.expect("load").expect("moved");
                assert_eq!(loaded.fields.len(), 3, "{:?}", loaded.fields);
                assert_eq!(loaded.fields["user"], "ada");
                assert_eq!(loaded.fields["cart"], "2 books");
                assert_eq!(
                    loaded.created, created_at,
                    "the absolute lifetime carries over"
                );
            }

            #[tokio::test]
            async fn a_renewal_that_sets_created_restarts_the_absolute_lifetime() {
                let harness = make_store().await;
                let store = &*harness.store;
                // A 60 s lifetime, of which the session has used 55 s.
                let short = policy(Duration::from_secs(600), Some(Duration::from_secs(60)));
                let old = created(store, &[("count", "1")], &short).await;
                let renewed_at = std::time::SystemTime::now();
                let aged = renewed_at - Duration::from_secs(55);
                let age = session::Changes {
                    upserts: vec![("__created".to_owned(), millis_since_epoch(aged))],
                    ..session::Changes::default()
                };
                let new = store.id_for_renewal(&old);
                assert_eq!(
                    store.renew(&old, &new, &age, &short).await.expect("renew"),
                    Renewal::Renewed
                );
                let loaded = store.load(&new).await.expect("load").expect("alive");
                assert!(
                    loaded.ttl.expect("a TTL") <= Duration::from_secs(5),
                    "5 s left of the aged lifetime: {:?}",
                    loaded.ttl
                );
                // A sign-in: the lifetime counts from it.
                let signed_in = session::Changes {
                    upserts: vec![("__created".to_owned(), millis_since_epoch(renewed_at))],
                    ..session::Changes::default()
                };
                let newer = store.id_for_renewal(&new);
                assert_eq!(
                    store.renew(&new, &newer, &signed_in, &short).await.expect("renew"),
                    Renewal::Renewed
                );
                let loaded = store.load(&newer).await.expect("load").expect("alive");
                assert!(
                    loaded.ttl.expect("a TTL") > Duration::from_secs(55),
                    "a whole lifetime again: {:?}",
                    loaded.ttl
                );
                assert_eq!(
                    loaded.created.map(millis_since_epoch),
                    Some(millis_since_epoch(renewed_at))
                );
            }

            #[tokio::test]
            async fn renew_refuses_a_taken_new_id_and_changes_nothing() {
                let harness = make_store().await;
                let store = &*harness.store;
                let old = created(store, &[("user", "ada")], &LONG).await;
                let taken = store.id_for_renewal(&old);
                assert!(
                    store
                        .create(&taken, &sets(&[("user", "bob")]), &LONG)
                        .await
                        .expect("create")
                );
                assert_eq!(
                    store
                        .renew(&old, &taken, &sets(&[("x", "1")]), &LONG)
                        .await
                        .expect("renew"),
                    Renewal::Taken
                );
                assert_eq!(fields_of(store, &old).await.len(), 1);
                assert_eq!(fields_of(store, &taken).await["user"], "bob");
            }

            #[tokio::test]
            async fn too_many_fields_are_refused_whole() {
                let harness = make_store().await;
                let store = &*harness.store;
                let tight =
                    session::WritePolicy::new(LONG.idle_timeout(), None, 3, LONG.max_bytes())
                        .expect("a valid policy");
                let four = sets(&[("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")]);
                let refused = store.create(&SessionId::generate(), &four, &tight).await;
                assert!(
                    matches!(refused, Err(StoreError::LimitExceeded(Limit::Fields(3)))),
                    "{refused:?}"
                );
                let id = created(store, &[("a", "1"), ("b", "2")], &tight).await;
                let two_more = sets(&[("b", "changed"), ("c", "3"), ("d", "4")]);
                let refused = store.update(&id, &two_more, &tight).await;
                assert!(
                    matches!(refused, Err(StoreError::LimitExceeded(_))),
                    "{refused:?}"
                );
                let fields = fields_of(store, &id).await;
                assert_eq!(
                    (fields.len(), &fields["b"][..]),
                    (2, "2"),
                    "nothing half-written"
                );
                let refused = store.increment(&id, "c", 1, &tight).await;
                assert!(refused.is_ok(), "a third field fits: {refused:?}");
                let refused = store.increment(&id, "d", 1, &tight).await;
                assert!(
                    matches!(refused, Err(StoreError::LimitExceeded(_))),
                    "{refused:?}"
                );
                let swap = Changes {
                    removals: vec!["a".into()],
                    upserts: vec![("d".into(), "4".into())],
                    ..Changes::default()
                };
                assert!(
                    store
                        .update(&id, &swap, &tight)
                        .await
                        .expect("room was made")
                );
            }

            #[tokio::test]
            async fn a_session_holds_exactly_max_fields_and_not_one_more() {
                // Metadata (a sealing store's __salt, a sign-in's __user)
                // counts toward no limit, on every store.
                let harness = make_store().await;
                let store = &*harness.store;
                let tight =
                    session::WritePolicy::new(LONG.idle_timeout(), None, 3, LONG.max_bytes())
                        .expect("a valid policy");
                let three = sets(&[("a", "1"), ("b", "2"), ("e", "3")]);
                let id = SessionId::generate();
                assert!(store.create(&id, &three, &tight).await.expect("three fit"));
                let mut signed_in = sets(&[("b", "changed")]);
                signed_in.upserts.push(("__user".to_owned(), "ada".to_owned()));
                assert!(store.update(&id, &signed_in, &tight).await.expect("metadata is free"));
                let refused = store.update(&id, &sets(&[("f", "4")]), &tight).await;
                assert!(
                    matches!(refused, Err(StoreError::LimitExceeded(Limit::Fields(3)))),
                    "{refused:?}"
                );
                assert_eq!(fields_of(store, &id).await.len(), 3);
            }

            #[tokio::test]
            async fn too_many_bytes_are_refused_whole() {
                let harness = make_store().await;
                let store = &*harness.store;
                let big = "y".repeat(60);
                // Room for the note at 60 bytes, and 5 more.
                let limit = harness.bytes_of(&[("note", &big)]) + 5;
                let tight =
                    session::WritePolicy::new(LONG.idle_timeout(), None, LONG.max_fields(), limit)
                        .expect("a valid policy");
                let id = created(store, &[("note", &"x".repeat(50))], &tight).await;
                let refused = store.update(&id, &sets(&[("other", &big)]), &tight).await;
                assert!(
                    matches!(refused, Err(StoreError::LimitExceeded(Limit::Bytes(l))) if l == limit),
                    "{refused:?}"
                );
                let refused = store
                    .compare_and_set(&id, "other", None, Some(&big), &tight)
                    .await;
                assert!(
                    matches!(refused, Err(StoreError::LimitExceeded(_))),
                    "{refused:?}"
                );
                let fields = fields_of(store, &id).await;
                assert_eq!(fields.len(), 1, "nothing half-written: {fields:?}");
                let replaced = store.update(&id, &sets(&[("note", &big)]), &tight).await;
                assert!(replaced.expect("a replaced value counts once"));
            }

            fn entry(id: &SessionId, created_secs_ago: u64) -> session::UserEntry {
                session::UserEntry {
                    handle: session::SessionHandle::generate(),
                    id: id.clone(),
                    created: SystemTime::now() - Duration::from_secs(created_secs_ago),
                }
            }

            fn eight_hours() -> session::WritePolicy {
                policy(
                    Duration::from_secs(600),
                    Some(Duration::from_secs(8 * 3600)),
                )
            }

            #[tokio::test]
            async fn a_user_index_lists_its_entries_newest_first_and_drops_on_request() {
                let harness = make_store().await;
                let store = &*harness.store;
                let p = eight_hours();
                assert_eq!(store.user_epoch("ada").await.expect("epoch"), 0);
                assert!(
                    store
                        .user_entries("ada", &p)
                        .await
                        .expect("list")
                        .is_empty()
                );
                let a = SessionId::generate();
                let b = created(store, &[("mark", "b")], &LONG).await;
                let (older, newer) = (entry(&a, 60), entry(&b, 5));
                for e in [&older, &newer] {
                    let over = store.join_user("ada", 0, e, &p, 100).await.expect("join");
                    assert_eq!(over, Some(vec![]), "under the cap");
                }
                let listed = store.user_entries("ada", &p).await.expect("list");
                let handles: Vec<_> = listed.iter().map(|e| e.handle.clone()).collect();
                assert_eq!(handles, [newer.handle.clone(), older.handle.clone()]);
                // The id as the store keeps it (a hashing store: the hash),
                // which addresses the session.
                assert_eq!(fields_of(store, &listed[0].id).await["mark"], "b");
                let ms = |t: SystemTime| {
                    t.duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap()
                        .as_millis()
                };
                assert_eq!(ms(listed[1].created), ms(older.created));
                assert!(
                    store
                        .user_entries("bob", &p)
                        .await
                        .expect("list")
                        .is_empty(),
                    "per user"
                );
                // Marked first: drop removes only entries being ended.
                store
                    .take_user_entry("ada", &older.handle)
                    .await
                    .expect("take");
                store
                    .drop_user_entries("ada", std::slice::from_ref(&older.handle))
                    .await
                    .expect("drop");
                let listed = store.user_entries("ada", &p).await.expect("list");
                assert_eq!(listed.len(), 1);
                assert_eq!(listed[0].handle, newer.handle);
            }

            #[tokio::test]
            async fn a_revocation_raises_the_epoch_so_a_sign_in_that_read_the_old_one_cannot_join()
            {
                let harness = make_store().await;
                let store = &*harness.store;
                let p = eight_hours();
                let epoch = store.user_epoch("ada").await.expect("epoch");
                let (kept, doomed) = (
                    entry(&SessionId::generate(), 10),
                    entry(&SessionId::generate(), 5),
                );
                for e in [&kept, &doomed] {
                    store
                        .join_user("ada", epoch, e, &p, 100)
                        .await
                        .expect("join");
                }
                let revoked = store
                    .revoke_user("ada", Some(&kept.handle), &p)
                    .await
                    .expect("revoke");
                assert_eq!(revoked.len(), 1);
                assert_eq!(revoked[0].handle, doomed.handle, "all but the spared one");
                assert_eq!(store.user_epoch("ada").await.expect("epoch"), epoch + 1);
                // Marked as being ended, and left in place until the
                // caller has ended the sessions, so that a crash in between
                // leaves them revocable: listed, and returned again by the
                // next revocation.
                assert_eq!(store.user_entries("ada", &p).await.expect("list").len(), 2);
                let again = store
                    .revoke_user("ada", Some(&kept.handle), &p)
                    .await
                    .expect("revoke");
                assert_eq!(again, revoked, "still there to end");
                let late = entry(&SessionId::generate(), 0);
                let joined = store
                    .join_user("ada", epoch, &late, &p, 100)
                    .await
                    .expect("join");
                assert_eq!(joined, None, "the old epoch is refused");
                let listed = store.user_entries("ada", &p).await.expect("list");
                assert!(
                    listed.iter().all(|e| e.handle != late.handle),
                    "nothing written"
                );
                // A user never seen before has epoch 0; a revoke makes it 1.
                store.revoke_user("new", None, &p).await.expect("revoke");
                assert_eq!(store.user_epoch("new").await.expect("epoch"), 1);
            }

            #[tokio::test]
            async fn a_renewal_moves_its_entry_only_while_nothing_has_ended_it() {
                let harness = make_store().await;
                let store = &*harness.store;
                let p = eight_hours();
                let epoch = store.user_epoch("ada").await.expect("epoch");
                let (old, new, newer) = (
                    SessionId::generate(),
                    SessionId::generate(),
                    SessionId::generate(),
                );
                let signed_in = entry(&old, 10);
                let handle = signed_in.handle.clone();
                store
                    .join_user("ada", epoch, &signed_in, &p, 100)
                    .await
                    .expect("join");
                let rejoin = |from: &SessionId, to: &SessionId| {
                    let (from, to, handle) = (from.clone(), to.clone(), handle.clone());
                    async move {
                        store
                            .rejoin_user("ada", &handle, &from, &to)
                            .await
                            .expect("rejoin")
                    }
                };
                assert!(!rejoin(&new, &newer).await, "not from an id it does not name");
                assert!(rejoin(&old, &new).await, "the handle stays, the id moves");
                let listed = store.user_entries("ada", &p).await.expect("list");
                assert_eq!(listed.len(), 1);
                assert_eq!(listed[0].handle, handle);
                // A drop by a caller that read the entry earlier (a list, a
                // cap) leaves an entry nothing marked: a renewal holds it.
                store
                    .drop_user_entries("ada", std::slice::from_ref(&handle))
                    .await
                    .expect("drop");
                assert_eq!(store.user_entries("ada", &p).await.expect("list").len(), 1);

                // Taken: marked as being ended, naming the id it was moved to.
                let taken = store
                    .take_user_entry("ada", &handle)
                    .await
                    .expect("take")
                    .expect("an entry");
                assert_eq!(taken.handle, handle);
                let moved = store.user_entries("ada", &p).await.expect("list");
                assert_eq!(taken.id, moved[0].id, "the moved id, which the caller ends");
                assert_eq!(moved.len(), 1, "still listed until dropped");
                assert!(
                    !rejoin(&new, &newer).await,
                    "a renewal cannot move an entry being ended"
                );
                let unknown = session::SessionHandle::generate();
                assert_eq!(
                    store.take_user_entry("ada", &unknown).await.expect("take"),
                    None
                );
                store
                    .drop_user_entries("ada", std::slice::from_ref(&handle))
                    .await
                    .expect("drop");
                assert_eq!(
                    store.revoke_user("ada", None, &p).await.expect("revoke"),
                    vec![],
                    "dropped for good"
                );
            }

            #[tokio::test]
            async fn past_the_cap_a_join_names_the_oldest_entries() {
                let harness = make_store().await;
                let store = &*harness.store;
                let p = eight_hours();
                let oldest = created(store, &[("mark", "oldest")], &LONG).await;
                let entries: Vec<_> = (0..3)
                    .map(|i| {
                        let id = if i == 0 { oldest.clone() } else { SessionId::generate() };
                        entry(&id, 30 - i * 10)
                    })
                    .collect();
                let mut over = Vec::new();
                for e in &entries {
                    over = store
                        .join_user("ada", 0, e, &p, 2)
                        .await
                        .expect("join")
                        .expect("joined");
                }
                assert_eq!(over.len(), 1, "{over:?}");
                assert_eq!(over[0].handle, entries[0].handle, "the oldest");
                assert_eq!(fields_of(store, &over[0].id).await["mark"], "oldest");
                assert!(store.delete(&over[0].id).await.expect("delete"), "it ends it");
            }

            #[tokio::test]
            async fn the_cap_never_names_the_session_signing_in_however_old() {
                let harness = make_store().await;
                let store = &*harness.store;
                let p = eight_hours();
                let young = entry(&SessionId::generate(), 1);
                store
                    .join_user("ada", 0, &young, &p, 1)
                    .await
                    .expect("join");
                // A renewed session keeps its creation time: it may be the oldest.
                let old = entry(&SessionId::generate(), 600);
                let over = store
                    .join_user("ada", 0, &old, &p, 1)
                    .await
                    .expect("join")
                    .expect("joined");
                assert_eq!(over.len(), 1, "{over:?}");
                assert_eq!(over[0].handle, young.handle, "the other one, not itself");
            }

            #[tokio::test]
            async fn entries_past_the_absolute_lifetime_are_pruned_when_touched() {
                let harness = make_store().await;
                let store = &*harness.store;
                let short = policy(Duration::from_secs(600), Some(Duration::from_secs(60)));
                let (dead, alive) = (
                    entry(&SessionId::generate(), 120),
                    entry(&SessionId::generate(), 1),
                );
                store
                    .join_user("ada", 0, &dead, &short, 100)
                    .await
                    .expect("join");
                store
                    .join_user("ada", 0, &alive, &short, 100)
                    .await
                    .expect("join");
                let listed = store.user_entries("ada", &short).await.expect("list");
                assert_eq!(listed.len(), 1);
                assert_eq!(listed[0].handle, alive.handle);
            }

            #[tokio::test]
            async fn user_ids_with_braces_and_odd_bytes_keep_their_own_index() {
                let harness = make_store().await;
                let store = &*harness.store;
                let p = eight_hours();
                let users = ["{ada}", "}{", "{", "a:b{c}d", "ünï {}"];
                for user in users {
                    let e = entry(&SessionId::generate(), 1);
                    store.join_user(user, 0, &e, &p, 100).await.expect("join");
                    store
                        .revoke_user(user, Some(&e.handle), &p)
                        .await
                        .expect("revoke");
                }
                for user in users {
                    let listed = store.user_entries(user, &p).await.expect("list");
                    assert_eq!(listed.len(), 1, "{user}");
                    assert_eq!(store.user_epoch(user).await.expect("epoch"), 1, "{user}");
                }
            }

            #[tokio::test]
            async fn load_many_answers_in_order() {
                let harness = make_store().await;
                let store = &*harness.store;
                let a = created(store, &[("n", "1")], &LONG).await;
                let b = created(store, &[("n", "2")], &LONG).await;
                let missing = SessionId::generate();
                let loaded = store
                    .load_many(&[b.clone(), missing, a.clone()])
                    .await
                    .expect("load");
                assert_eq!(loaded.len(), 3);
                assert_eq!(loaded[0].as_ref().expect("b").fields["n"], "2");
                assert!(loaded[1].is_none());
                assert_eq!(loaded[2].as_ref().expect("a").fields["n"], "1");
            }

            #[tokio::test]
            async fn a_healthy_store_says_so() {
                let harness = make_store().await;
                harness.store.check_health().await.expect("healthy");
                harness.store.prepare().await.expect("ready");
            }
        }
    };
}
