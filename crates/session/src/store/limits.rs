//! The session size limits, as `lua/prelude.lua` applies them, for the
//! writes that are checked in Rust.

use std::collections::HashMap;

use super::{Changes, Limit, RESERVED_PREFIX, StoreError, WritePolicy};
use crate::SessionFields;

/// Metadata fields one write may carry beyond `max_fields`, as the script.
const METADATA_SLACK: usize = 16;

/// `check_limits` in `lua/prelude.lua`: whether `fields` (none: a new
/// session) stays within the limits after `changes`. The memory store runs
/// it for every write, the Redis store for a creation (`create.lua` counts
/// nothing: a new session holds exactly the fields it is sent).
pub(crate) fn check_limits(
    fields: Option<&SessionFields>,
    changes: &Changes,
    policy: &WritePolicy,
) -> Result<(), StoreError> {
    if changes.upserts.is_empty() {
        return Ok(());
    }
    // As the script: more names than the session may hold fails at once,
    // a name sent twice counting twice; metadata (`__salt`, a sign-in's
    // `__user`) counts toward no limit, but at most METADATA_SLACK of it.
    let sent = changes
        .upserts
        .iter()
        .filter(|(field, _)| !field.starts_with(RESERVED_PREFIX))
        .count();
    if sent > policy.max_fields() || changes.upserts.len() > policy.max_fields() + METADATA_SLACK {
        return Err(StoreError::LimitExceeded(Limit::Fields(
            policy.max_fields(),
        )));
    }
    let mut after: HashMap<&str, &str> = match fields {
        Some(fields) if !changes.clear => fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
        _ => HashMap::new(),
    };
    for field in &changes.removals {
        after.remove(field.as_str());
    }
    for (field, value) in &changes.upserts {
        after.insert(field, value);
    }
    let user = after
        .iter()
        .filter(|(field, _)| !field.starts_with(RESERVED_PREFIX));
    let (count, bytes) = user.fold((0, 0), |(n, b), (f, v)| (n + 1, b + f.len() + v.len()));
    if count > policy.max_fields() {
        return Err(StoreError::LimitExceeded(Limit::Fields(
            policy.max_fields(),
        )));
    }
    if bytes > policy.max_bytes() {
        return Err(StoreError::LimitExceeded(Limit::Bytes(policy.max_bytes())));
    }
    Ok(())
}
