//! The one behaviour suite every [`SessionStore`] must pass.
//!
//! `store_behaviour_suite!(make_store)` expands to one `#[tokio::test]` per
//! case, so each failing behaviour reports on its own. `make_store` is an
//! async fn returning a [`Harness`]: the store plus whatever must stay alive
//! for it (a redis-server process, say).

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use session::{SessionId, SessionStore};

/// A store under test and what keeps its backend alive.
pub(crate) struct Harness {
    pub(crate) store: Arc<dyn SessionStore>,
    _keep_alive: Box<dyn Any>,
}

impl Harness {
    pub(crate) fn new(store: Arc<dyn SessionStore>, keep_alive: impl Any) -> Self {
        Self {
            store,
            _keep_alive: Box::new(keep_alive),
        }
    }
}

pub(crate) const LONG: Duration = Duration::from_secs(600);

pub(crate) async fn created(
    store: &dyn SessionStore,
    fields: &[(&str, &str)],
    ttl: Duration,
) -> SessionId {
    let id = SessionId::generate();
    assert!(
        store.create(&id, fields, ttl).await.expect("create"),
        "a fresh id is free"
    );
    id
}

#[macro_export]
macro_rules! store_behaviour_suite {
    ($make_store:ident) => {
        mod store_behaviour {
            use std::sync::Arc;
            use std::time::Duration;

            use session::{SessionId, StoreError};

            use super::$make_store as make_store;
            use $crate::store_suite::{LONG, created};

            #[tokio::test]
            async fn a_created_session_loads_with_exactly_its_fields() {
                let harness = make_store().await;
                let id = created(&*harness.store, &[("count", "1"), ("user", "ada")], LONG).await;
                let fields = harness
                    .store
                    .load(&id)
                    .await
                    .expect("load")
                    .expect("exists");
                assert_eq!(fields.len(), 2);
                assert_eq!(fields["count"], "1");
                assert_eq!(fields["user"], "ada");
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
                ];
                let pairs: Vec<(String, &str)> = odd
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (format!("f{i}"), *v))
                    .collect();
                let fields: Vec<(&str, &str)> =
                    pairs.iter().map(|(k, v)| (k.as_str(), *v)).collect();
                let id = created(&*harness.store, &fields, LONG).await;
                let loaded = harness
                    .store
                    .load(&id)
                    .await
                    .expect("load")
                    .expect("exists");
                for (field, value) in &fields {
                    assert_eq!(loaded[*field], *value, "field {field}");
                }
            }

            #[tokio::test]
            async fn create_refuses_a_taken_id_and_keeps_the_owner_data() {
                let harness = make_store().await;
                let id = created(&*harness.store, &[("user", "owner")], LONG).await;
                let taken = harness
                    .store
                    .create(&id, &[("user", "intruder")], LONG)
                    .await
                    .expect("create");
                assert!(!taken);
                let fields = harness
                    .store
                    .load(&id)
                    .await
                    .expect("load")
                    .expect("exists");
                assert_eq!(fields["user"], "owner");
            }

            #[tokio::test]
            async fn create_and_update_with_no_fields_are_refused_and_write_nothing() {
                let harness = make_store().await;
                let id = SessionId::generate();
                assert!(harness.store.create(&id, &[], LONG).await.is_err());
                assert_eq!(harness.store.load(&id).await.expect("load"), None);
                let existing = created(&*harness.store, &[("a", "1")], LONG).await;
                assert!(harness.store.update(&existing, &[], LONG).await.is_err());
                let fields = harness
                    .store
                    .load(&existing)
                    .await
                    .expect("load")
                    .expect("exists");
                assert_eq!(fields.len(), 1);
            }

            #[tokio::test]
            async fn load_with_ttl_gives_the_fields_and_the_time_left() {
                let harness = make_store().await;
                let id =
                    created(&*harness.store, &[("count", "3")], Duration::from_secs(100)).await;
                let (fields, ttl) = harness
                    .store
                    .load_with_ttl(&id)
                    .await
                    .expect("load")
                    .expect("exists");
                assert_eq!(fields["count"], "3");
                let ttl = ttl.expect("sessions always expire");
                assert!(
                    ttl > Duration::from_secs(90) && ttl <= Duration::from_secs(100),
                    "{ttl:?}"
                );
                assert!(
                    harness
                        .store
                        .load_with_ttl(&SessionId::generate())
                        .await
                        .expect("load")
                        .is_none()
                );
            }

            #[tokio::test]
            async fn an_unknown_id_loads_as_none() {
                let harness = make_store().await;
                assert_eq!(
                    harness
                        .store
                        .load(&SessionId::generate())
                        .await
                        .expect("load"),
                    None
                );
            }

            #[tokio::test]
            async fn update_changes_only_the_given_fields() {
                let harness = make_store().await;
                let id = created(&*harness.store, &[("a", "1"), ("b", "2")], LONG).await;
                assert!(
                    harness
                        .store
                        .update(&id, &[("b", "20"), ("c", "30")], LONG)
                        .await
                        .expect("update")
                );
                let fields = harness
                    .store
                    .load(&id)
                    .await
                    .expect("load")
                    .expect("exists");
                assert_eq!(
                    (
                        fields["a"].as_str(),
                        fields["b"].as_str(),
                        fields["c"].as_str()
                    ),
                    ("1", "20", "30")
                );
            }

            #[tokio::test]
            async fn update_never_creates_a_missing_session() {
                let harness = make_store().await;
                let id = SessionId::generate();
                assert!(
                    !harness
                        .store
                        .update(&id, &[("a", "1")], LONG)
                        .await
                        .expect("update")
                );
                assert_eq!(harness.store.load(&id).await.expect("load"), None);
            }

            #[tokio::test]
            async fn increment_returns_the_new_value_and_a_missing_field_starts_at_zero() {
                let harness = make_store().await;
                let id = created(&*harness.store, &[("count", "41")], LONG).await;
                assert_eq!(
                    harness
                        .store
                        .increment(&id, "count", 1, LONG)
                        .await
                        .expect("incr"),
                    Some(42)
                );
                assert_eq!(
                    harness
                        .store
                        .increment(&id, "other", -5, LONG)
                        .await
                        .expect("incr"),
                    Some(-5)
                );
                let fields = harness
                    .store
                    .load(&id)
                    .await
                    .expect("load")
                    .expect("exists");
                assert_eq!(
                    (fields["count"].as_str(), fields["other"].as_str()),
                    ("42", "-5")
                );
            }

            #[tokio::test]
            async fn concurrent_increments_are_all_counted() {
                let harness = make_store().await;
                let id = created(&*harness.store, &[("count", "0")], LONG).await;
                let mut tasks = tokio::task::JoinSet::new();
                for _ in 0..200 {
                    let (store, id) = (Arc::clone(&harness.store), id.clone());
                    tasks.spawn(async move {
                        store.increment(&id, "count", 1, LONG).await.expect("incr")
                    });
                }
                let mut seen: Vec<i64> = tasks
                    .join_all()
                    .await
                    .into_iter()
                    .map(|v| v.expect("exists"))
                    .collect();
                seen.sort_unstable();
                assert_eq!(
                    seen,
                    (1..=200).collect::<Vec<i64>>(),
                    "every increment saw a distinct value"
                );
            }

            #[tokio::test]
            async fn increment_never_creates_a_missing_session() {
                let harness = make_store().await;
                let id = SessionId::generate();
                assert_eq!(
                    harness
                        .store
                        .increment(&id, "count", 1, LONG)
                        .await
                        .expect("incr"),
                    None
                );
                assert_eq!(harness.store.load(&id).await.expect("load"), None);
            }

            #[tokio::test]
            async fn increment_of_a_non_integer_is_invalid_data_and_changes_nothing() {
                let harness = make_store().await;
                for bad in [
                    "abc",
                    "",
                    "1.5",
                    "+1",
                    "01",
                    " 1",
                    "-0",
                    "9223372036854775808",
                ] {
                    let id = created(&*harness.store, &[("count", bad)], LONG).await;
                    let outcome = harness.store.increment(&id, "count", 1, LONG).await;
                    assert!(
                        matches!(outcome, Err(StoreError::InvalidData(_))),
                        "{bad:?}: {outcome:?}"
                    );
                    let fields = harness
                        .store
                        .load(&id)
                        .await
                        .expect("load")
                        .expect("exists");
                    assert_eq!(fields["count"], bad, "{bad:?} must be left as it was");
                }
            }

            #[tokio::test]
            async fn increment_that_would_overflow_is_invalid_data_and_changes_nothing() {
                let harness = make_store().await;
                let max = i64::MAX.to_string();
                let id = created(&*harness.store, &[("count", max.as_str())], LONG).await;
                let outcome = harness.store.increment(&id, "count", 1, LONG).await;
                assert!(
                    matches!(outcome, Err(StoreError::InvalidData(_))),
                    "{outcome:?}"
                );
                let fields = harness
                    .store
                    .load(&id)
                    .await
                    .expect("load")
                    .expect("exists");
                assert_eq!(fields["count"], max);
            }

            #[tokio::test]
            async fn delete_removes_the_session_and_says_whether_it_existed() {
                let harness = make_store().await;
                let id = created(&*harness.store, &[("a", "1")], LONG).await;
                assert!(harness.store.delete(&id).await.expect("delete"));
                assert!(!harness.store.delete(&id).await.expect("delete"));
                assert_eq!(harness.store.load(&id).await.expect("load"), None);
            }

            #[tokio::test]
            async fn nothing_resurrects_a_deleted_session() {
                let harness = make_store().await;
                let id = created(&*harness.store, &[("count", "5")], LONG).await;
                assert!(harness.store.delete(&id).await.expect("delete"));
                assert_eq!(
                    harness
                        .store
                        .increment(&id, "count", 1, LONG)
                        .await
                        .expect("incr"),
                    None
                );
                assert!(
                    !harness
                        .store
                        .update(&id, &[("count", "6")], LONG)
                        .await
                        .expect("update")
                );
                assert!(!harness.store.touch(&id, LONG).await.expect("touch"));
                assert_eq!(harness.store.load(&id).await.expect("load"), None);
            }

            #[tokio::test]
            async fn a_session_expires_after_its_ttl() {
                let harness = make_store().await;
                let id = created(&*harness.store, &[("a", "1")], Duration::from_secs(1)).await;
                tokio::time::sleep(Duration::from_millis(2100)).await;
                assert_eq!(harness.store.load(&id).await.expect("load"), None);
                assert_eq!(
                    harness
                        .store
                        .increment(&id, "a", 1, LONG)
                        .await
                        .expect("incr"),
                    None
                );
            }

            #[tokio::test]
            async fn touch_increment_and_update_each_restart_the_ttl() {
                let harness = make_store().await;
                let one = Duration::from_secs(1);
                let three = Duration::from_secs(3);
                let touched = created(&*harness.store, &[("a", "1")], one).await;
                let counted = created(&*harness.store, &[("a", "1")], one).await;
                let updated = created(&*harness.store, &[("a", "1")], one).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
                assert!(harness.store.touch(&touched, three).await.expect("touch"));
                assert!(
                    harness
                        .store
                        .increment(&counted, "a", 1, three)
                        .await
                        .expect("incr")
                        .is_some()
                );
                assert!(
                    harness
                        .store
                        .update(&updated, &[("b", "2")], three)
                        .await
                        .expect("update")
                );
                // Past the original 1 s expiry, well inside the new 3 s one.
                tokio::time::sleep(Duration::from_millis(1500)).await;
                for id in [&touched, &counted, &updated] {
                    assert!(
                        harness.store.load(id).await.expect("load").is_some(),
                        "{id} should still be alive"
                    );
                }
                assert!(
                    !harness
                        .store
                        .touch(&SessionId::generate(), three)
                        .await
                        .expect("touch")
                );
            }

            #[tokio::test]
            async fn a_healthy_store_says_so() {
                let harness = make_store().await;
                harness.store.check_health().await.expect("healthy");
            }
        }
    };
}
