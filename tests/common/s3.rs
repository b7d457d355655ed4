//! A real S3-compatible server for the attachment tests: moto's server mode
//! (`moto_server`, installed by `scripts/install-s3.sh`, or the path in
//! `TEST_S3_SERVER`) on a loopback port. One that does not start fails
//! the test with its log.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct S3Server {
    child: Child,
    pub endpoint: String,
    log: PathBuf,
    _tmp: tempfile::TempDir,
}

/// The server binary: `TEST_S3_SERVER`, or what the install script prints.
fn server_binary() -> String {
    if let Ok(bin) = std::env::var("TEST_S3_SERVER") {
        return bin;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install-s3.sh");
    let out = Command::new("bash")
        .arg(script)
        .stderr(Stdio::inherit())
        .output()
        .expect("scripts/install-s3.sh runs");
    assert!(
        out.status.success(),
        "scripts/install-s3.sh failed: the S3 tests need moto_server"
    );
    String::from_utf8(out.stdout)
        .expect("a path")
        .trim()
        .to_string()
}

impl S3Server {
    pub async fn start() -> S3Server {
        let bin = server_binary();
        let tmp = tempfile::tempdir().expect("a temp dir");
        let log = tmp.path().join("s3.log");
        let port = super::free_port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::from(std::fs::File::create(&log).expect("a log")))
            .stderr(Stdio::from(
                std::fs::File::options()
                    .append(true)
                    .open(&log)
                    .expect("the log"),
            ))
            .spawn()
            .unwrap_or_else(|e| panic!("{bin} does not start: {e}"));
        let mut server = S3Server {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            log,
            _tmp: tmp,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if reqwest::get(format!("{}/", server.endpoint)).await.is_ok() {
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("the S3 server exited with {status}:\n{}", server.log_text());
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "the S3 server did not answer within 60 s:\n{}",
                    server.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn create_bucket(&self, bucket: &str) {
        let r = reqwest::Client::new()
            .put(format!("{}/{bucket}", self.endpoint))
            .send()
            .await
            .expect("the S3 server answers");
        assert!(r.status().is_success(), "create bucket: {}", r.status());
    }

    /// The keys in `bucket` (its first 1,000).
    pub async fn keys(&self, bucket: &str) -> Vec<String> {
        let xml = self
            .get_text(&format!("{}/{bucket}?list-type=2", self.endpoint))
            .await;
        between(&xml, "<Key>", "</Key>")
    }

    /// Multipart uploads begun and neither completed nor aborted.
    pub async fn open_uploads(&self, bucket: &str) -> usize {
        let xml = self
            .get_text(&format!("{}/{bucket}?uploads", self.endpoint))
            .await;
        xml.matches("<Upload>").count()
    }

    /// An object's bytes, read straight from the server.
    pub async fn object(&self, bucket: &str, key: &str) -> Vec<u8> {
        let r = reqwest::get(format!("{}/{bucket}/{key}", self.endpoint))
            .await
            .expect("the S3 server answers");
        assert!(r.status().is_success(), "GET {key}: {}", r.status());
        r.bytes().await.expect("the object").to_vec()
    }

    async fn get_text(&self, url: &str) -> String {
        let r = reqwest::get(url).await.expect("the S3 server answers");
        assert!(r.status().is_success(), "GET {url}: {}", r.status());
        r.text().await.expect("a listing")
    }

    /// The environment of a node storing attachments in `bucket` here.
    pub fn node_env(&self, bucket: &str) -> Vec<(String, String)> {
        [
            ("TROUPE_ATTACHMENTS__STORE", "s3"),
            ("TROUPE_ATTACHMENTS__S3__ENDPOINT", &self.endpoint),
            ("TROUPE_ATTACHMENTS__S3__BUCKET", bucket),
            ("TROUPE_ATTACHMENTS__S3__ACCESS_KEY_ID", "troupe-test"),
            (
                "TROUPE_ATTACHMENTS__S3__SECRET_ACCESS_KEY",
                "troupe-test-secret",
            ),
            ("TROUPE_ATTACHMENTS__S3__ALLOW_HTTP", "true"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

fn between(text: &str, open: &str, close: &str) -> Vec<String> {
    text.split(open)
        .skip(1)
        .filter_map(|s| s.split_once(close).map(|(v, _)| v.to_string()))
        .collect()
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
