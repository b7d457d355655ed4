//! The live admin page (`GET /admin`) in a real browser: Debian's chromium,
//! headless, against a real node with users, a room and messages. The page
//! reads `/admin/actors` with the token given in the URL fragment; the test
//! checks the DOM it renders and the pixels of a screenshot.
//!
//! Chromium is installed by scripts/install-chromium.sh (scripts/test.sh runs
//! it); without it these tests fail, they do not skip.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::browser::chromium_path;
use common::{Client, Node};

const TOKEN: &str = "admin-page-test-token-0123";
const NODE: &str = "pagenode";
const ROOM: &str = "pagetest";

/// The colours admin.html gives the node header and the room badge, used by
/// nothing else on the page (see its style sheet).
const NODE_HEADER: [u8; 3] = [0x23, 0x39, 0x5d];
const ROOM_BADGE: [u8; 3] = [0x0a, 0x7d, 0x3b];

async fn node_with_a_room() -> (Node, Vec<Client>) {
    common::admin_node_with_a_room(TOKEN, NODE, ROOM).await
}

/// Runs headless chromium on `url` with `extra` arguments (a fresh profile
/// each time) and returns its stdout. `--virtual-time-budget` lets the page
/// run its timers for 5 s of virtual time; virtual time waits for pending
/// network requests, so the fetches of `/admin/actors` complete before the
/// DOM is dumped or the screenshot taken.
async fn chromium(url: &str, extra: &[String]) -> String {
    let profile = tempfile::tempdir().expect("a temp dir");
    let mut cmd = tokio::process::Command::new(chromium_path());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        // Containers often have a small /dev/shm.
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-extensions",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--no-default-browser-check",
        "--mute-audio",
        "--force-color-profile=srgb",
        "--force-device-scale-factor=1",
        "--hide-scrollbars",
        "--virtual-time-budget=5000",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(extra)
    .arg(url)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    // Not a timing check: only a bound on a browser that hangs.
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("chromium finished within 120 s")
        .expect("chromium runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "chromium failed: {}\n{stderr}",
        out.status
    );
    String::from_utf8(out.stdout).expect("UTF-8 from chromium")
}

/// The page after its script ran (`--dump-dom`), without the `<script>` and
/// `<style>` elements, so that only rendered markup is searched.
async fn rendered(node: &Node, fragment: &str) -> String {
    let url = format!("{}#{fragment}", node.url("/admin"));
    let dom = chromium(&url, &["--dump-dom".to_string()]).await;
    assert!(
        dom.contains("<title>troupe admin</title>"),
        "not the admin page:\n{dom}"
    );
    strip_element(&strip_element(&dom, "script"), "style")
}

fn strip_element(html: &str, tag: &str) -> String {
    let (open, close) = (format!("<{tag}"), format!("</{tag}>"));
    let mut out = String::new();
    let mut rest = html;
    while let Some(start) = rest.find(&open) {
        out.push_str(&rest[..start]);
        match rest[start..].find(&close) {
            Some(end) => rest = &rest[start + end + close.len()..],
            None => {
                rest = "";
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The rendered section of a node (`<section class="node" data-node=...>`).
fn node_section<'a>(dom: &'a str, node: &str) -> Option<&'a str> {
    let start = dom.find(&format!("<section class=\"node\" data-node=\"{node}\""))?;
    let len = dom[start..].find("</section>")?;
    Some(&dom[start..start + len])
}

/// The text inside the element with this id.
fn text_of<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in\n{dom}"));
    let open_end = at + dom[at..].find('>').expect("a closing >") + 1;
    let close = open_end + dom[open_end..].find('<').expect("an end tag");
    &dom[open_end..close]
}

#[tokio::test]
async fn the_page_shows_the_node_and_its_room_actor() {
    let (node, _clients) = node_with_a_room().await;
    let dom = rendered(&node, &format!("token={TOKEN}")).await;

    let section = node_section(&dom, NODE).unwrap_or_else(|| {
        panic!(
            "no section of node {NODE} in the rendered page:\n{dom}\n--- node log:\n{}",
            node.log_text()
        )
    });
    assert!(
        section.contains(&format!("<span class=\"node-name\">{NODE}</span>")),
        "{section}"
    );
    // The room actor, with its badge, inside the node's section and under
    // the rooms supervisor.
    let room = format!("data-actor=\"room:{ROOM}\" data-kind=\"room\"");
    let at = section
        .find(&room)
        .unwrap_or_else(|| panic!("no actor room:{ROOM} under {NODE}:\n{section}"));
    let rooms_sup = section
        .find("data-actor=\"rooms\" data-kind=\"supervisor\"")
        .unwrap_or_else(|| panic!("no rooms supervisor:\n{section}"));
    assert!(rooms_sup < at, "room:{ROOM} is not under rooms:\n{section}");
    assert!(
        section[at..].contains("<span class=\"badge kind-room\">room</span>"),
        "{section}"
    );
    // Its summary shows the three messages and the two members.
    let row_end = at + section[at..].find("</li>").expect("the row ends");
    let row = &section[at..row_end];
    assert!(row.contains("members 2") && row.contains("seq 3"), "{row}");
    // ann's session is listed, with her user.
    assert!(
        section.contains("data-kind=\"session\"") && section.contains("user ann"),
        "{section}"
    );
    // The status line says it is live, not an error.
    let status = text_of(&dom, "status");
    assert!(status.starts_with("updated "), "status: {status:?}");
    // The token was taken from the fragment: the form is hidden.
    assert!(dom.contains("<form id=\"login\" hidden=\"\">"), "{dom}");

    // The filter (here from the fragment) keeps the matching actors and
    // their supervisors: bob's session, not ann's, and no room.
    let dom = rendered(&node, &format!("token={TOKEN}&filter=bob")).await;
    let section = node_section(&dom, NODE).unwrap_or_else(|| panic!("{dom}"));
    assert!(section.contains("user bob"), "{section}");
    assert!(!section.contains("user ann"), "{section}");
    assert!(section.contains("data-actor=\"sessions\""), "{section}");
    assert!(!section.contains("data-kind=\"room\""), "{section}");

    // An actor's detail (what a click opens; here from the fragment): its
    // state from `/admin/actors?name=...&node=...`, one row per field.
    let dom = rendered(
        &node,
        &format!("token={TOKEN}&actor=room:{ROOM}&node={NODE}"),
    )
    .await;
    let at = dom
        .find("<aside id=\"detail\">")
        .unwrap_or_else(|| panic!("the detail is not shown:\n{dom}"));
    let detail = &dom[at..at + dom[at..].find("</aside>").expect("</aside>")];
    assert!(
        detail.contains(&format!("<h2>room:{ROOM} on {NODE}</h2>")),
        "{detail}"
    );
    for row in [
        "<td class=\"key\">kind</td><td>room</td>",
        "<td class=\"key\">last_seq</td><td>3</td>",
        "<td class=\"key\">members</td><td>2</td>",
    ] {
        assert!(detail.contains(row), "no {row} in the detail:\n{detail}");
    }
    // And the row of that actor in the tree is marked.
    assert!(
        dom.contains(&format!(
            "<li class=\"actor selected\" data-actor=\"room:{ROOM}\""
        )),
        "{dom}"
    );
}

#[tokio::test]
async fn a_wrong_token_shows_wrong_token_and_no_actors() {
    let (node, _clients) = node_with_a_room().await;
    let dom = rendered(&node, "token=not-the-admin-token-at-all").await;
    let status = text_of(&dom, "status");
    assert!(status.contains("wrong token"), "status: {status:?}\n{dom}");
    assert!(dom.contains("id=\"status\" class=\"error\""), "{dom}");
    assert!(!dom.contains("data-actor="), "actors shown:\n{dom}");
    assert!(!dom.contains("data-node="), "nodes shown:\n{dom}");
    // And it asks again: the token form is visible.
    assert!(dom.contains("<form id=\"login\">"), "{dom}");
}

struct Screenshot {
    width: usize,
    height: usize,
    rgb: Vec<[u8; 3]>,
}

impl Screenshot {
    fn read(path: &PathBuf) -> Screenshot {
        let bytes = std::fs::read(path).expect("chromium wrote the screenshot");
        let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        decoder.set_transformations(png::Transformations::normalize_to_color8());
        let mut reader = decoder.read_info().expect("a PNG");
        let mut buf = vec![0; reader.output_buffer_size().expect("a sane PNG size")];
        let info = reader.next_frame(&mut buf).expect("a PNG frame");
        let channels = match info.color_type {
            png::ColorType::Rgb => 3,
            png::ColorType::Rgba => 4,
            other => panic!("unexpected PNG colour type {other:?}"),
        };
        let rgb = buf[..info.buffer_size()]
            .chunks_exact(channels)
            .map(|p| [p[0], p[1], p[2]])
            .collect();
        Screenshot {
            width: info.width as usize,
            height: info.height as usize,
            rgb,
        }
    }

    /// How many separate horizontal bands hold pixels of this colour (rows
    /// of the tree showing it).
    fn bands(&self, colour: [u8; 3]) -> usize {
        let mut bands = 0;
        let mut previous = false;
        for row in self.rgb.chunks_exact(self.width) {
            let has = row.contains(&colour);
            if has && !previous {
                bands += 1;
            }
            previous = has;
        }
        bands
    }

    /// The bounding box (x0, y0, x1, y1) of the pixels of exactly this colour,
    /// and how many there are.
    fn find(&self, colour: [u8; 3]) -> Option<((usize, usize, usize, usize), usize)> {
        let mut found: Option<(usize, usize, usize, usize)> = None;
        let mut count = 0;
        for (i, _) in self.rgb.iter().enumerate().filter(|(_, p)| **p == colour) {
            let (x, y) = (i % self.width, i / self.width);
            count += 1;
            found = Some(match found {
                None => (x, y, x, y),
                Some((x0, y0, x1, y1)) => (x0.min(x), y0.min(y), x1.max(x), y1.max(y)),
            });
        }
        found.map(|b| (b, count))
    }
}

/// A screenshot of the page with the filter box set to `filter`.
async fn screenshot(node: &Node, token: &str, filter: &str, dir: &Path) -> Screenshot {
    let path = dir.join("admin.png");
    let url = format!("{}#token={token}&filter={filter}", node.url("/admin"));
    chromium(
        &url,
        &[
            format!("--screenshot={}", path.display()),
            "--window-size=1280,900".to_string(),
        ],
    )
    .await;
    let shot = Screenshot::read(&path);
    assert_eq!((shot.width, shot.height), (1280, 900));
    shot
}

#[tokio::test]
async fn a_screenshot_shows_the_room_badge_under_its_node_header() {
    let (node, _clients) = node_with_a_room().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    // Filtered on the room: its row is the only one with a room badge
    // (`!broadcast` is a room too).
    let shot = screenshot(&node, TOKEN, ROOM, dir.path()).await;
    // Only evaluated when an assertion fails: keeps the screenshot to look at.
    let keep = || {
        let kept =
            std::env::temp_dir().join(format!("troupe-admin-page-{}.png", std::process::id()));
        let _ = std::fs::copy(dir.path().join("admin.png"), &kept);
        kept.display().to_string()
    };

    let ((hx0, hy0, hx1, _), header_pixels) = shot
        .find(NODE_HEADER)
        .unwrap_or_else(|| panic!("no node header in the screenshot (kept at {})", keep()));
    let ((rx0, ry0, rx1, ry1), room_pixels) = shot
        .find(ROOM_BADGE)
        .unwrap_or_else(|| panic!("no room badge in the screenshot (kept at {})", keep()));
    // A header bar across the section and a badge-sized block, not a stray pixel.
    assert!(
        hx1 - hx0 >= 300 && header_pixels >= 5_000,
        "node header: {header_pixels} pixels from x {hx0} to {hx1} ({})",
        keep()
    );
    assert!(
        rx1 - rx0 >= 30 && ry1 - ry0 >= 8 && room_pixels >= 200,
        "room badge: {room_pixels} pixels in ({rx0},{ry0})-({rx1},{ry1}) ({})",
        keep()
    );
    assert_eq!(
        shot.bands(ROOM_BADGE),
        1,
        "one room row expected with the filter {ROOM:?} ({})",
        keep()
    );
    // The room's badge is below its node's header and within its width.
    assert!(
        ry0 > hy0,
        "room badge at y {ry0}, node header at y {hy0} ({})",
        keep()
    );
    assert!(
        rx0 > hx0 && rx1 < hx1,
        "room badge x {rx0}-{rx1} outside the node's x {hx0}-{hx1} ({})",
        keep()
    );

    // With a wrong token neither is drawn: the colours come from the data.
    let wrong = screenshot(&node, "not-the-admin-token-at-all", "", dir.path()).await;
    assert!(
        wrong.find(NODE_HEADER).is_none(),
        "a node header with a wrong token"
    );
    assert!(
        wrong.find(ROOM_BADGE).is_none(),
        "a room badge with a wrong token"
    );
}
