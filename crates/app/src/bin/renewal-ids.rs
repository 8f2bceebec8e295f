//! Draws the ids that logins move sessions to, for the benchmark's
//! instruction counts (`scripts/bench/instructions.sh`): on Redis Cluster
//! the id must hash to the old id's slot, elsewhere any fresh id will do.
//!
//! ```text
//! cargo run --release -p app --bin renewal-ids -- 1000 cluster
//! cargo run --release -p app --bin renewal-ids -- 1000 standalone
//! cargo run --release -p app --bin renewal-ids -- 1000 cluster-hashed
//! ```
//!
//! `cluster-hashed` is a cluster store with ids hashed at rest
//! (`session.hash_ids`), whose keys carry the id's last 4 characters as
//! their hash tag.
//!
//! No server is needed: the client connects lazily, and drawing an id
//! sends nothing.
//!
//! It exercises only the `session` crate, but lives beside the app's
//! binaries so that one `cargo build --release -p app` builds it with the
//! app's dependency features: as an example of `session` it pulled in that
//! crate's dev-dependencies and rebuilt most of the release tree (2.7 of the
//! instruction benchmark's 4 minutes in CI). The Docker image copies only
//! `app`.

use redis_client::{RedisMode, RedisService, RedisSettings};
use session::{RedisSessionStore, SessionId, SessionStore};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().as_deref().unwrap_or("1000").parse()?;
    let mode = args.next();
    let settings = match mode.as_deref() {
        Some("cluster" | "cluster-hashed") => RedisSettings {
            mode: RedisMode::Cluster,
            nodes: vec!["redis://127.0.0.1:7000".to_owned()],
            ..RedisSettings::default()
        },
        _ => RedisSettings::default(),
    };
    let mut store = RedisSessionStore::new(RedisService::new(&settings)?);
    if mode.as_deref() == Some("cluster-hashed") {
        store = store.with_hashed_ids(false)?;
    }
    let old = SessionId::generate();
    // Fold the ids into a checksum, so that no draw can be optimized away.
    let mut checksum = 0_u64;
    for _ in 0..count {
        let new = store.id_for_renewal(&old);
        checksum = checksum.wrapping_add(u64::from(new.as_str().as_bytes()[0]));
    }
    println!("{count} ids drawn (checksum {checksum})");
    Ok(())
}
