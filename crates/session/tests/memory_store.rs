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
