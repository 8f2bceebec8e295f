//! Certificates for TLS tests, made by `openssl` when a test asks.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use crate::redis::{ClientTlsConfig, TlsCertificates};

/// A throw-away certificate authority and the certificates it signed, as PEM
/// files in a temp dir (removed when the last clone is dropped): a server
/// certificate for `127.0.0.1` and `localhost`, and a client certificate.
/// Keys are ECDSA P-256, which take milliseconds to make.
///
/// Every call makes a new CA, so two `TlsFiles` do not trust each other.
#[derive(Clone)]
pub struct TlsFiles {
    dir: Arc<TempDir>,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl TlsFiles {
    /// Makes the CA, the server and the client certificates.
    ///
    /// # Panics
    ///
    /// If `openssl` is missing or fails, with the command that installs it.
    pub fn generate() -> Self {
        static SEQUENCE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("testkit-tls-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir for certificates");
        let files = Self {
            dir: Arc::new(TempDir(dir)),
        };
        files.openssl(&format!(
            "req -x509 -new -nodes {EC_KEY} -keyout ca.key -out ca.pem -days 2 -subj /CN=testkit-CA-{}-{n} \
             -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign",
            std::process::id()
        ));
        files.sign(
            "server",
            "localhost",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
        );
        files.sign("client", "testkit-client", "extendedKeyUsage=clientAuth\n");
        files
    }

    /// The CA certificate, for `redis.tls.ca_file`.
    pub fn ca_file(&self) -> PathBuf {
        self.path("ca.pem")
    }

    /// The server certificate (also valid as a client one, for replication
    /// and the cluster bus).
    pub fn server_cert_file(&self) -> PathBuf {
        self.path("server.pem")
    }

    /// The server's private key.
    pub fn server_key_file(&self) -> PathBuf {
        self.path("server.key")
    }

    /// The client certificate, for `redis.tls.cert_file`.
    pub fn client_cert_file(&self) -> PathBuf {
        self.path("client.pem")
    }

    /// The client's private key, for `redis.tls.key_file`.
    pub fn client_key_file(&self) -> PathBuf {
        self.path("client.key")
    }

    /// The CA and the client certificate, for a redis-rs TLS client.
    pub fn client_certificates(&self) -> TlsCertificates {
        let read = |path: PathBuf| std::fs::read(&path).expect("read a generated certificate");
        TlsCertificates {
            client_tls: Some(ClientTlsConfig {
                client_cert: read(self.client_cert_file()),
                client_key: read(self.client_key_file()),
            }),
            root_cert: Some(read(self.ca_file())),
        }
    }

    /// `redis-server` arguments serving TLS with these files, clients'
    /// certificates checked when they send one.
    pub(crate) fn server_args(&self) -> Vec<String> {
        let path = |p: PathBuf| p.to_string_lossy().into_owned();
        vec![
            "--tls-cert-file".into(),
            path(self.server_cert_file()),
            "--tls-key-file".into(),
            path(self.server_key_file()),
            "--tls-ca-cert-file".into(),
            path(self.ca_file()),
            "--tls-auth-clients".into(),
            "optional".into(),
        ]
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.0.join(name)
    }

    /// A key and a certificate signed by the CA, with `extensions`.
    fn sign(&self, name: &str, common_name: &str, extensions: &str) {
        let (key, csr, cert, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        std::fs::write(self.path(&ext), extensions).expect("write the extensions file");
        self.openssl(&format!(
            "req -new -nodes {EC_KEY} -keyout {key} -out {csr} -subj /CN={common_name}"
        ));
        self.openssl(&format!(
            "x509 -req -in {csr} -CA ca.pem -CAkey ca.key -CAcreateserial -out {cert} -days 2 -extfile {ext}"
        ));
    }

    /// Runs `openssl` with `command`'s words as arguments (none has a space).
    fn openssl(&self, command: &str) {
        let args: Vec<&str> = command.split_whitespace().collect();
        let output = Command::new("openssl")
            .args(&args)
            .current_dir(self.dir())
            .output()
            .unwrap_or_else(|error| {
                panic!("openssl is needed for TLS tests: apt-get install -y openssl ({error})")
            });
        assert!(
            output.status.success(),
            "openssl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn dir(&self) -> &Path {
        &self.dir.0
    }
}

/// A new ECDSA P-256 key: milliseconds, where RSA takes a while.
const EC_KEY: &str = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1";

/// rustls needs a process-wide crypto provider; redis-rs picks none.
pub(crate) fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
