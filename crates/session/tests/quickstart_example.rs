//! `examples/quickstart.rs`, the three-statement wiring, run as the program
//! it is against a real redis-server: it counts, and the count is in Redis.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use testkit::{RedisServer, redis};

/// The example binary `cargo test` built beside this test's.
fn example_binary(name: &str) -> PathBuf {
    let test_binary = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<test> -> target/<profile>/examples/<name>
    let examples = test_binary
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>")
        .join("examples");
    let binary = examples.join(name);
    assert!(
        binary.is_file(),
        "{} is missing: run `cargo test -p session` (it builds the examples) or `cargo build -p session --example {name}`",
        binary.display()
    );
    binary
}

/// The running example, killed by PID when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_three_statement_quickstart_counts_in_redis() {
    // Arrange: a redis-server, and the example pointed at it.
    let redis_server = RedisServer::start();
    let mut child = Command::new(example_binary("quickstart"))
        .env("REDIS_URL", redis_server.url())
        .env("BIND", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the quickstart example");
    let stdout = child.stdout.take().expect("its stdout");
    let running = Running(child);
    let mut first_line = String::new();
    BufReader::new(stdout)
        .read_line(&mut first_line)
        .expect("the example prints its address");
    let base = first_line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first_line:?}"))
        .to_owned();

    // Act: three requests with one cookie jar.
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .expect("a client");
    let mut counts = Vec::new();
    for _ in 0..3 {
        let response = client
            .get(format!("{base}/count"))
            .send()
            .await
            .expect("GET /count");
        assert_eq!(response.status(), 200);
        counts.push(response.text().await.expect("a body"));
    }

    // Assert: it counted, and the session is the Nest layout in Redis.
    assert_eq!(counts, ["1", "2", "3"]);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("sid_*")
        .query(&mut redis_server.connection())
        .expect("KEYS");
    assert_eq!(keys.len(), 1, "{keys:?}");
    let count: String = redis::cmd("HGET")
        .arg(&keys[0])
        .arg("count")
        .query(&mut redis_server.connection())
        .expect("HGET");
    assert_eq!(count, "3");
    drop(running);
}
