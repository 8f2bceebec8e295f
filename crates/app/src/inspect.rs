//! `session-inspect`: one session's fields, decrypted with the app's key
//! ring, for an operator. Once values are sealed, `redis-cli HGETALL` shows
//! only ciphertext; this shows what a request would read, and why a field
//! would be refused. It never writes: one `HGETALL` + `PTTL` (two when a
//! raw key may still hold the session), no script load, no migration.

use std::fmt::Write as _;

use redis_client::RedisService;
use session::{FieldState, Inspection, RedisSessionStore, SealedStore, SessionId};

use crate::settings::{Settings, StoreKind};

/// What went wrong, in one line for stderr.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// Not a session id (a signed cookie's `.tag` is dropped first).
    #[error("not a session id: give the id from the cookie (a UUID), as an argument or on stdin")]
    NotAnId,
    /// The settings name no encryption key.
    #[error(
        "no encryption keys: set session.encryption.keys (or keys_file) as the app has them, \
         e.g. APP__SESSION__ENCRYPTION__KEYS=k2:...,k1:..."
    )]
    NoKeys,
    /// A setting that can never work.
    #[error("{0}")]
    Settings(String),
    /// The store could not be read.
    #[error("cannot read the session store: {0}")]
    Store(#[from] session::StoreError),
}

/// How the inspection ended: the process's exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every field read: 0.
    Readable,
    /// Some field would be refused (the session counts as gone): 3.
    Unreadable,
    /// No live session under that id: 2.
    NoSession,
}

/// Reads session `id_text` with `settings` (the app's own) and writes a
/// report to `out`.
///
/// # Errors
///
/// [`InspectError`]: a bad id, no keys, bad settings, an unreachable store.
pub async fn inspect(
    settings: &Settings,
    id_text: &str,
    out: &mut String,
) -> Result<Outcome, InspectError> {
    let id_text = id_text.trim();
    // A signed cookie is `<id>.<tag>`: the id is what addresses the session.
    let id = SessionId::parse(id_text.split('.').next().unwrap_or_default())
        .ok_or(InspectError::NotAnId)?;
    let invalid = |error: session::ConfigError| InspectError::Settings(error.to_string());
    let ring = std::sync::Arc::new(
        settings
            .session
            .encryption
            .key_ring()
            .map_err(invalid)?
            .ok_or(InspectError::NoKeys)?,
    );
    if settings.store.kind != StoreKind::Redis {
        return Err(InspectError::Settings(
            "store.kind = \"memory\": sessions live inside each app process; nothing to read"
                .into(),
        ));
    }
    let redis = RedisService::new(&settings.redis)
        .map_err(|error| InspectError::Settings(error.to_string()))?;
    let max_wait = std::time::Duration::from_millis(settings.redis.startup_wait_ms);
    redis
        .wait_until_ready(max_wait)
        .await
        .map_err(session::StoreError::from)?;
    let plain = RedisSessionStore::new(redis)
        .with_key_prefix(settings.store.key_prefix.clone())
        .map_err(invalid)?;
    let encryption = &settings.session.encryption;
    let mut stores = Vec::new();
    if settings.session.hash_ids {
        // Never the migrating store: it would move a raw key (a write).
        stores.push(plain.clone().with_hashed_ids(false).map_err(invalid)?);
    }
    if !settings.session.hash_ids || settings.session.accept_raw_keys {
        stores.push(plain);
    }
    for store in stores {
        let key = store.key(&id);
        let sealed = SealedStore::with_shared_ring(store, std::sync::Arc::clone(&ring))
            .plaintext_fields(encryption.plaintext_fields.iter().cloned())
            .accept_plaintext(encryption.accept_plaintext);
        if let Some(found) = sealed.inspect(&id).await? {
            return Ok(report(&id, &key, &found, &sealed.key_ids(), out));
        }
    }
    let _ = writeln!(
        out,
        "no live session {id}: it expired, was ended, or never existed"
    );
    Ok(Outcome::NoSession)
}

fn report(
    id: &SessionId,
    key: &str,
    found: &Inspection,
    ring: &[&str],
    out: &mut String,
) -> Outcome {
    let mut outcome = Outcome::Readable;
    let _ = writeln!(out, "session {id} at {key}");
    if let Some(ttl) = found.ttl {
        let _ = writeln!(out, "  expires in {} s", ttl.as_secs());
    }
    if let Some(created) = found
        .created
        .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
    {
        let _ = writeln!(out, "  created at {} (Unix seconds)", created.as_secs());
    }
    if let Some(handle) = &found.handle {
        let _ = writeln!(out, "  signed in, handle {handle}");
    }
    for field in &found.fields {
        // JSON quoting: a value with control characters stays one line.
        let quoted = |value: &str| serde_json::to_string(value).unwrap_or_default();
        let line = match &field.state {
            FieldState::Plain(value) => format!("{} = {}  (plain)", field.name, quoted(value)),
            FieldState::Opened { key_id, value } => {
                format!("{} = {}  (sealed, key {key_id})", field.name, quoted(value))
            }
            FieldState::Unreadable { key_id, reason } => {
                outcome = Outcome::Unreadable;
                let why = match (reason, key_id) {
                    (&"unknown_key", Some(key_id)) => format!(
                        "sealed under key {key_id:?}, which this ring ({}) does not hold",
                        ring.join(", ")
                    ),
                    (&"plaintext", _) => {
                        "plain, and session.encryption.accept_plaintext is false".to_owned()
                    }
                    (reason, _) => format!("does not decrypt ({reason})"),
                };
                format!("{} UNREADABLE: {why}", field.name)
            }
            _ => format!("{}: unknown state", field.name),
        };
        let _ = writeln!(out, "  {line}");
    }
    if outcome == Outcome::Unreadable {
        let _ = writeln!(
            out,
            "a request with this id gets a fresh session (it counts as gone)"
        );
    }
    outcome
}
