//! [`ScriptCall`]: one `EVALSHA`, written straight into one command buffer.

use std::fmt;

use deadpool_redis::redis::{Cmd, Script, ToRedisArgs};

/// One call of a Lua script by `EVALSHA`: the script's SHA1, its keys
/// (`KEYS`) and its arguments (`ARGV`), written straight into the command
/// that goes on the wire. Run it with
/// [`RedisService::run_script`](crate::RedisService::run_script).
///
/// redis-rs's `ScriptInvocation` keeps every key and argument in a
/// `Vec<u8>` of its own and copies them into a command at send time: an
/// allocation per argument, then a copy of all of them. This writes each
/// once.
///
/// ```
/// use redis_client::ScriptCall;
/// use redis_client::redis::Script;
///
/// let add = Script::new("return redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])");
/// let mut call = ScriptCall::new(&add, &["sid_example"]);
/// call.arg("count").arg(1);
/// ```
pub struct ScriptCall<'a> {
    script: &'a Script,
    command: Cmd,
}

impl<'a> ScriptCall<'a> {
    /// A call of `script` with `keys` as `KEYS[1]`, `KEYS[2]`, ... On Redis
    /// Cluster every key must hash to the same slot.
    pub fn new(script: &'a Script, keys: &[&str]) -> Self {
        // EVALSHA, the SHA1, the key count, the keys; then room for a
        // session write's usual arguments, so the buffers rarely grow.
        let mut command = Cmd::with_capacity(3 + keys.len() + 8, 128);
        command
            .arg("EVALSHA")
            .arg(script.get_hash())
            .arg(keys.len());
        for key in keys {
            command.arg(*key);
        }
        Self { script, command }
    }

    /// Appends the next argument: `ARGV[1]`, then `ARGV[2]`, ...
    pub fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        self.command.arg(arg);
        self
    }

    /// The script, to load it when the server does not know it.
    pub(crate) fn script(&self) -> &Script {
        self.script
    }

    /// The `EVALSHA` command.
    pub(crate) fn command(&self) -> &Cmd {
        &self.command
    }
}

impl fmt::Debug for ScriptCall<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keys and arguments may carry session ids and user data: only the
        // script's hash and how many there are.
        f.debug_struct("ScriptCall")
            .field("sha1", &self.script.get_hash())
            .field(
                "keys_and_args",
                &self.command.args_iter().count().saturating_sub(3),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::ScriptCall;
    use deadpool_redis::redis::Script;

    #[test]
    fn the_command_is_evalsha_sha_keycount_keys_then_args() {
        let script = Script::new("return 1");
        let mut call = ScriptCall::new(&script, &["k1", "k2"]);
        call.arg("a").arg(7_i64);
        let packed = call.command().get_packed_command();
        let sha = script.get_hash();
        let expected = format!(
            "*7\r\n$7\r\nEVALSHA\r\n${}\r\n{sha}\r\n$1\r\n2\r\n$2\r\nk1\r\n$2\r\nk2\r\n$1\r\na\r\n$1\r\n7\r\n",
            sha.len()
        );
        assert_eq!(String::from_utf8(packed).expect("ASCII"), expected);
    }

    #[test]
    fn debug_shows_no_key_or_argument() {
        let script = Script::new("return 1");
        let mut call = ScriptCall::new(&script, &["sid_secret-id"]);
        call.arg("secret-value");
        let shown = format!("{call:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("keys_and_args: 2"), "{shown}");
    }
}
