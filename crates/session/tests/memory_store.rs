//! The store behaviour suite against [`MemorySessionStore`].

mod store_suite;

use std::sync::Arc;

use session::MemorySessionStore;
use store_suite::Harness;

async fn make_store() -> Harness {
    Harness::new(Arc::new(MemorySessionStore::new()), ())
}

store_behaviour_suite!(make_store);

/// The same suite with every value sealed (`SealedStore` over memory).
mod sealed {
    use super::*;

    async fn make_sealed_store() -> Harness {
        Harness::sealed(MemorySessionStore::new(), ())
    }

    store_behaviour_suite!(make_sealed_store);
}

/// A `__salt` that is not a salt (another writer's) is never sealed under,
/// and makes the session's sealed values unreadable: a fresh session.
#[tokio::test]
async fn a_session_whose_salt_is_not_a_salt_is_never_sealed_under_nor_read() {
    let harness = Harness::sealed(MemorySessionStore::new(), ());
    let store = &*harness.store;
    let policy = &*store_suite::LONG;
    let id = store_suite::created(store, &[("note", "hello")], policy).await;
    let mut hinted = store_suite::sets(&[("note", "bye")]);
    hinted.salt = Some("not a salt".to_owned());
    let refused = store.update(&id, &hinted, policy).await;
    assert!(
        matches!(refused, Err(session::StoreError::InvalidData(_))),
        "{refused:?}"
    );
    assert_eq!(
        store.load(&id).await.expect("load").expect("live").fields["note"],
        "hello"
    );
    // Another writer replaces the salt (metadata passes through unsealed).
    let mut replaced = store_suite::sets(&[]);
    replaced
        .upserts
        .push(("__salt".to_owned(), "not a salt".to_owned()));
    assert!(store.update(&id, &replaced, policy).await.expect("update"));
    assert_eq!(
        store.load(&id).await.expect("load"),
        None,
        "unreadable: gone"
    );
}
