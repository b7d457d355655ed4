//! Attachments as a user meets them: files uploaded to a room (raw body or
//! multipart form) and downloaded back byte for byte by its members only,
//! range requests, the size limit (by header and by streamed bytes) and the
//! type allow-list, nothing left behind by an upload that does not finish,
//! a 20 MiB upload that does not grow the node's memory by its size, and
//! the S3 store against a real S3-compatible server.

mod common;

use std::path::Path;
use std::time::Duration;

use common::s3::S3Server;
use common::{account, http, Node, WAIT};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB: usize = 1024 * 1024;

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Bytes that do not compress or repeat.
fn random_bytes(n: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15 ^ n as u64;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// ann owns `room`, bob is a member, eve is not.
struct People {
    ann: String,
    bob: String,
    eve: String,
}

async fn people(node: &Node, room: &str) -> People {
    let ann = account(node, "ann").await;
    let bob = account(node, "bob").await;
    let eve = account(node, "eve").await;
    let r = http()
        .post(node.url("/api/v1/rooms"))
        .bearer_auth(&ann)
        .json(&json!({"name": room}))
        .send()
        .await
        .expect("create room");
    assert_eq!(r.status(), 201, "create {room}");
    let r = http()
        .post(node.url(&format!("/api/v1/rooms/{room}/members")))
        .bearer_auth(&ann)
        .json(&json!({"user": "bob"}))
        .send()
        .await
        .expect("invite");
    assert_eq!(r.status(), 204, "invite bob");
    People { ann, bob, eve }
}

async fn upload(
    node: &Node,
    token: &str,
    room: &str,
    content_type: &str,
    query: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    http()
        .post(node.url(&format!("/api/v1/rooms/{room}/attachments{query}")))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("the upload answers")
}

async fn uploaded(node: &Node, token: &str, room: &str, ty: &str, body: Vec<u8>) -> Value {
    let r = upload(node, token, room, ty, "", body).await;
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    assert_eq!(status, 201, "upload: {text}");
    serde_json::from_str(&text).expect("JSON")
}

async fn download(node: &Node, token: &str, url: &str) -> reqwest::Response {
    http()
        .get(node.url(url))
        .bearer_auth(token)
        .send()
        .await
        .expect("the download answers")
}

async fn error_code(r: reqwest::Response) -> String {
    let v: Value = r.json().await.expect("a JSON error");
    v["error"]["code"]
        .as_str()
        .expect("an error code")
        .to_string()
}

/// The files under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Polls `check` until it holds; panics with `what` after [`WAIT`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A raw HTTP/1.1 exchange: `head` (without the final blank line), then
/// `body` sent in 64 KiB pieces (chunked when `chunked`), while the answer
/// is read; the status and the whole response text.
async fn raw_exchange(node: &Node, head: &str, body: Vec<u8>, chunked: bool) -> (u16, String) {
    let tcp = TcpStream::connect(node.addr).await.expect("tcp connects");
    let (mut rd, mut wr) = tcp.into_split();
    let head = format!("{head}\r\n\r\n");
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        for piece in body.chunks(64 * 1024) {
            if chunked {
                wr.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                    .await?;
                wr.write_all(piece).await?;
                wr.write_all(b"\r\n").await?;
            } else {
                wr.write_all(piece).await?;
            }
        }
        if chunked {
            wr.write_all(b"0\r\n\r\n").await?;
        }
        Ok::<_, std::io::Error>(wr)
    });
    let mut got = Vec::new();
    let read = tokio::time::timeout(WAIT, async {
        let mut buf = [0u8; 8192];
        loop {
            if let Some(text) = complete_response(&got) {
                return text;
            }
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return String::from_utf8_lossy(&got).to_string(),
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("an answer in time");
    writer.abort();
    let status = read
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {read:?}"));
    (status, read)
}

/// The response, once its head and its Content-Length of body are in.
fn complete_response(got: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(got);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())
                .flatten()
        })
        .unwrap_or(0);
    (body.len() >= length).then(|| text.to_string())
}

fn post_head(node: &Node, token: &str, room: &str, ty: &str, extra: &str) -> String {
    format!(
        "POST /api/v1/rooms/{room}/attachments HTTP/1.1\r\nHost: {}\r\n\
         Authorization: Bearer {token}\r\nContent-Type: {ty}{extra}",
        node.addr
    )
}

/// A multipart/form-data body: a text field, then the file part.
fn multipart_body(boundary: &str, filename: &str, ty: &str, file: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"comment\"\r\n\r\nhello\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n\
             Content-Type: {ty}\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

#[tokio::test]
async fn a_raw_upload_downloads_as_the_same_bytes_for_members() {
    let node = Node::start().await;
    let p = people(&node, "files").await;
    let file = random_bytes(300_000);
    let r = upload(
        &node,
        &p.ann,
        "files",
        "image/png",
        "?filename=..%2F..%2Fcat%20%22pic%22.png",
        file.clone(),
    )
    .await;
    assert_eq!(r.status(), 201);
    let meta: Value = r.json().await.expect("JSON");
    let id = meta["id"].as_str().expect("an id");
    assert_eq!(meta["url"], format!("/api/v1/attachments/{id}"));
    assert_eq!(meta["size"], file.len());
    assert_eq!(meta["content_type"], "image/png");
    assert_eq!(meta["sha256"], hex_sha256(&file));
    assert_eq!(meta["filename"], "cat pic.png");

    for token in [&p.ann, &p.bob] {
        let r = download(&node, token, meta["url"].as_str().unwrap()).await;
        assert_eq!(r.status(), 200);
        let h = r.headers().clone();
        assert_eq!(h["content-type"], "image/png");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["accept-ranges"], "bytes");
        let disposition = h["content-disposition"].to_str().unwrap();
        assert!(
            disposition.contains("filename=\"cat pic.png\""),
            "{disposition}"
        );
        let got = r.bytes().await.expect("the file");
        assert_eq!(got.len(), file.len());
        assert_eq!(hex_sha256(&got), hex_sha256(&file));
    }
    // On disk once, under its id, and nothing half-written beside it.
    let files = files_under(&node.data_dir.join("attachments"));
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].ends_with(id), "{files:?}");
}

#[tokio::test]
async fn a_multipart_upload_takes_the_file_part_and_its_name() {
    let node = Node::start().await;
    let p = people(&node, "files").await;
    let file = b"line one\nline two\n".repeat(1000);
    let boundary = "xYzZY-troupe-boundary";
    let body = multipart_body(boundary, "notes.txt", "text/plain; charset=UTF-8", &file);
    let r = upload(
        &node,
        &p.bob,
        "files",
        &format!("multipart/form-data; boundary={boundary}"),
        "",
        body,
    )
    .await;
    assert_eq!(r.status(), 201);
    let meta: Value = r.json().await.expect("JSON");
    assert_eq!(meta["size"], file.len());
    assert_eq!(meta["content_type"], "text/plain; charset=utf-8");
    assert_eq!(meta["filename"], "notes.txt");
    assert_eq!(meta["sha256"], hex_sha256(&file));
    let r = download(&node, &p.ann, meta["url"].as_str().unwrap()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
    assert!(r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment; filename=\"notes.txt\""));
    assert_eq!(r.bytes().await.unwrap().as_ref(), &file[..]);

    // A form without a file part uploads nothing.
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"comment\"\r\n\r\nhi\r\n--{boundary}--\r\n"
    );
    let r = upload(
        &node,
        &p.bob,
        "files",
        &format!("multipart/form-data; boundary={boundary}"),
        "",
        body.into_bytes(),
    )
    .await;
    assert_eq!(r.status(), 400);
    assert_eq!(files_under(&node.data_dir.join("attachments")).len(), 1);
}

#[tokio::test]
async fn range_requests_get_206_and_416() {
    let node = Node::start().await;
    let p = people(&node, "files").await;
    let file = random_bytes(100_000);
    let meta = uploaded(&node, &p.ann, "files", "application/pdf", file.clone()).await;
    let url = node.url(meta["url"].as_str().unwrap());
    let get = |range: &'static str| {
        http()
            .get(&url)
            .bearer_auth(&p.bob)
            .header("range", range)
            .send()
    };
    let r = get("bytes=10-19").await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 10-19/100000");
    assert_eq!(r.headers()["content-length"], "10");
    assert_eq!(r.bytes().await.unwrap().as_ref(), &file[10..20]);

    let r = get("bytes=99990-").await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 99990-99999/100000");
    assert_eq!(r.bytes().await.unwrap().as_ref(), &file[99_990..]);

    let r = get("bytes=-5").await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &file[99_995..]);

    let r = get("bytes=100000-").await.unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(r.headers()["content-range"], "bytes */100000");

    // Several ranges: the whole file, as RFC 9110 allows.
    let r = get("bytes=0-1,5-6").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), file.len());
}

#[tokio::test]
async fn over_the_size_limit_is_413_by_header_and_by_streamed_bytes() {
    let node = Node::start_with(&[("TROUPE_ATTACHMENTS__MAX_BYTES", "1048576")]).await;
    let p = people(&node, "files").await;
    let dir = node.data_dir.join("attachments");

    // Declared too large: refused before a byte of the body.
    let head = post_head(
        &node,
        &p.ann,
        "files",
        "image/png",
        "\r\nContent-Length: 2097152",
    );
    let (status, text) = raw_exchange(&node, &head, Vec::new(), false).await;
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("too_large"), "{text}");

    // No Content-Length: refused once the bytes pass the limit.
    let head = post_head(
        &node,
        &p.ann,
        "files",
        "image/png",
        "\r\nTransfer-Encoding: chunked",
    );
    let (status, text) = raw_exchange(&node, &head, random_bytes(MIB + MIB / 2), true).await;
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("too_large"), "{text}");

    // The same through a multipart form.
    let boundary = "b0und4ry";
    let body = multipart_body(boundary, "big.png", "image/png", &random_bytes(MIB + 1));
    let ty = format!("multipart/form-data; boundary={boundary}");
    let head = post_head(
        &node,
        &p.ann,
        "files",
        &ty,
        "\r\nTransfer-Encoding: chunked",
    );
    let (status, text) = raw_exchange(&node, &head, body, true).await;
    assert_eq!(status, 413, "{text}");

    eventually("the refused uploads leave no file", || async {
        files_under(&dir).is_empty()
    })
    .await;

    // Exactly the limit is fine.
    let meta = uploaded(&node, &p.ann, "files", "image/png", random_bytes(MIB)).await;
    assert_eq!(meta["size"], MIB);
    assert_eq!(files_under(&dir).len(), 1);
}

#[tokio::test]
async fn types_outside_the_allow_list_are_415() {
    let node = Node::start().await;
    let p = people(&node, "files").await;
    let r = upload(
        &node,
        &p.ann,
        "files",
        "text/html",
        "",
        b"<script>".to_vec(),
    )
    .await;
    assert_eq!(r.status(), 415);
    assert_eq!(error_code(r).await, "unsupported_type");
    let r = http()
        .post(node.url("/api/v1/rooms/files/attachments"))
        .bearer_auth(&p.ann)
        .body(b"no type".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let boundary = "b0und4ry";
    let body = multipart_body(boundary, "x.exe", "application/x-msdownload", b"MZ");
    let ty = format!("multipart/form-data; boundary={boundary}");
    let r = upload(&node, &p.ann, "files", &ty, "", body).await;
    assert_eq!(r.status(), 415);
    assert!(files_under(&node.data_dir.join("attachments")).is_empty());

    // The allow-list is the operator's: wildcards too.
    let node = Node::start_with(&[("TROUPE_ATTACHMENTS__ALLOWED_TYPES", "text/*")]).await;
    let p = people(&node, "files").await;
    let r = upload(&node, &p.ann, "files", "text/html", "", b"<p>".to_vec()).await;
    assert_eq!(r.status(), 201);
    let r = upload(&node, &p.ann, "files", "image/png", "", b"png".to_vec()).await;
    assert_eq!(r.status(), 415);
}

#[tokio::test]
async fn only_members_upload_and_download_and_everything_needs_a_token() {
    let node = Node::start().await;
    let p = people(&node, "files").await;
    let meta = uploaded(&node, &p.ann, "files", "image/gif", b"GIF89a".to_vec()).await;
    let url = meta["url"].as_str().unwrap();

    let r = upload(&node, &p.eve, "files", "image/gif", "", b"GIF89a".to_vec()).await;
    assert_eq!(r.status(), 403);
    assert_eq!(error_code(r).await, "forbidden");
    let r = download(&node, &p.eve, url).await;
    assert_eq!(r.status(), 403);

    let r = download(
        &node,
        &p.bob,
        "/api/v1/attachments/0123456789abcdef0123456789abcdef",
    )
    .await;
    assert_eq!(r.status(), 404);
    let r = download(&node, &p.bob, "/api/v1/attachments/..%2F..%2Ftroupe.db").await;
    assert_eq!(r.status(), 404);
    let r = upload(
        &node,
        &p.ann,
        "nowhere",
        "image/gif",
        "",
        b"GIF89a".to_vec(),
    )
    .await;
    assert_eq!(r.status(), 404);

    let r = http().get(node.url(url)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http()
        .post(node.url("/api/v1/rooms/files/attachments"))
        .header("content-type", "image/gif")
        .body(b"GIF89a".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(files_under(&node.data_dir.join("attachments")).len(), 1);

    // Its uploader may take it back; nobody else.
    let delete = |token: &str| http().delete(node.url(url)).bearer_auth(token).send();
    assert_eq!(delete(&p.bob).await.unwrap().status(), 403);
    assert_eq!(delete(&p.ann).await.unwrap().status(), 204);
    assert_eq!(download(&node, &p.ann, url).await.status(), 404);
    assert!(files_under(&node.data_dir.join("attachments")).is_empty());
}

#[tokio::test]
async fn an_upload_cut_off_midway_leaves_nothing() {
    let node = Node::start().await;
    let p = people(&node, "files").await;
    let tmp = node.data_dir.join("attachments/tmp");
    let mut tcp = TcpStream::connect(node.addr).await.unwrap();
    let head = post_head(
        &node,
        &p.ann,
        "files",
        "video/mp4",
        "\r\nContent-Length: 8388608",
    );
    tcp.write_all(format!("{head}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    tcp.write_all(&random_bytes(2 * MIB)).await.unwrap();
    eventually("the upload is being written", || async {
        !files_under(&tmp).is_empty()
    })
    .await;
    drop(tcp);
    eventually("the half-written file is removed", || async {
        files_under(&node.data_dir.join("attachments")).is_empty()
    })
    .await;
    // And nothing was recorded: a full upload is the only attachment.
    uploaded(&node, &p.ann, "files", "video/mp4", random_bytes(1000)).await;
    assert_eq!(files_under(&node.data_dir.join("attachments")).len(), 1);
}

/// Uploads `file` while sampling the node's RSS; the upload's answer and
/// the largest growth over the RSS before it.
async fn upload_measuring_rss(node: &Node, token: &str, file: Vec<u8>) -> (Value, u64) {
    let pid = node.pid();
    let before = common::rss_bytes_of(pid);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(common::rss_bytes_of(pid));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            peak.max(common::rss_bytes_of(pid))
        })
    };
    let started = std::time::Instant::now();
    let meta = uploaded(node, token, "files", "video/mp4", file).await;
    let took = started.elapsed();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.await.unwrap();
    eprintln!(
        "upload of {} bytes: {:?} ({:.1} MiB/s); RSS before {:.1} MiB, peak {:.1} MiB",
        meta["size"],
        took,
        meta["size"].as_f64().unwrap() / MIB as f64 / took.as_secs_f64(),
        before as f64 / MIB as f64,
        peak as f64 / MIB as f64
    );
    (meta, peak.saturating_sub(before))
}

#[tokio::test]
async fn a_20_mib_upload_does_not_grow_the_node_by_its_size() {
    let node = Node::start().await;
    let p = people(&node, "files").await;
    // Warm up the paths (allocator arenas, the database, the room).
    uploaded(&node, &p.ann, "files", "video/mp4", random_bytes(MIB)).await;
    let file = random_bytes(20 * MIB);
    let (meta, growth) = upload_measuring_rss(&node, &p.ann, file.clone()).await;
    assert!(
        growth < 8 * MIB as u64,
        "the node grew by {:.1} MiB during a 20 MiB upload",
        growth as f64 / MIB as f64
    );
    let r = download(&node, &p.bob, meta["url"].as_str().unwrap()).await;
    assert_eq!(r.status(), 200);
    let got = r.bytes().await.unwrap();
    assert_eq!(hex_sha256(&got), hex_sha256(&file));
}

#[tokio::test]
async fn the_s3_store_keeps_files_in_the_bucket() {
    let s3 = S3Server::start().await;
    s3.create_bucket("troupe-files").await;
    let env = s3.node_env("troupe-files");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let node = Node::start_with(&env).await;
    let p = people(&node, "files").await;

    // Three parts of a multipart upload.
    let file = random_bytes(12 * MIB + 12345);
    let (meta, growth) = upload_measuring_rss(&node, &p.ann, file.clone()).await;
    assert!(
        growth < 16 * MIB as u64,
        "the node grew by {:.1} MiB during a 12 MiB upload to S3",
        growth as f64 / MIB as f64
    );
    let id = meta["id"].as_str().unwrap();
    let key = format!("attachments/{id}");
    assert_eq!(s3.keys("troupe-files").await, vec![key.clone()]);
    assert_eq!(
        hex_sha256(&s3.object("troupe-files", &key).await),
        hex_sha256(&file)
    );
    // Nothing on the node's disk.
    assert!(files_under(&node.data_dir.join("attachments")).is_empty());

    let r = download(&node, &p.bob, meta["url"].as_str().unwrap()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(hex_sha256(&r.bytes().await.unwrap()), hex_sha256(&file));
    let r = http()
        .get(node.url(meta["url"].as_str().unwrap()))
        .bearer_auth(&p.bob)
        .header("range", "bytes=5242870-5242889")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.bytes().await.unwrap().as_ref(),
        &file[5_242_870..5_242_890]
    );

    // A small file, a multipart form.
    let body = multipart_body("bnd", "a.txt", "text/plain", b"hello s3");
    let r = upload(
        &node,
        &p.bob,
        "files",
        "multipart/form-data; boundary=bnd",
        "",
        body,
    )
    .await;
    assert_eq!(r.status(), 201);
    assert_eq!(s3.keys("troupe-files").await.len(), 2);

    // Over the limit midway and cut off midway: no object, no open upload.
    let head = post_head(
        &node,
        &p.ann,
        "files",
        "image/png",
        "\r\nTransfer-Encoding: chunked",
    );
    let (status, _) = raw_exchange(&node, &head, random_bytes(26 * MIB), true).await;
    assert_eq!(status, 413);
    let mut tcp = TcpStream::connect(node.addr).await.unwrap();
    let head = post_head(
        &node,
        &p.ann,
        "files",
        "video/mp4",
        "\r\nContent-Length: 20971520",
    );
    tcp.write_all(format!("{head}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    tcp.write_all(&random_bytes(7 * MIB)).await.unwrap();
    eventually("the cut-off upload has begun in the bucket", || async {
        s3.open_uploads("troupe-files").await > 0
    })
    .await;
    drop(tcp);
    eventually("the refused uploads are aborted in the bucket", || async {
        s3.open_uploads("troupe-files").await == 0
    })
    .await;
    assert_eq!(s3.keys("troupe-files").await.len(), 2);

    // Deleted by its uploader: gone from the bucket.
    let r = http()
        .delete(node.url(meta["url"].as_str().unwrap()))
        .bearer_auth(&p.ann)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(!s3.keys("troupe-files").await.contains(&key));
}
