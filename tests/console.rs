//! The administrator's console in a real headless Chromium, driven through WebDriver
//! (Debian's `chromium` and `chromium-driver`, which `scripts/test` installs): sign in;
//! a device that just synced appears with its figures and health; a conflict resolved
//! by clicking; a setting out of range refused beside its field; a device enrolled
//! (secret and QR code) and revoked; sign out and be refused. Device-supplied markup
//! shows as text. Without Chromium the test is skipped with a note, except in CI.
//!
//! Every page is photographed on the way; with `CONSOLE_SCREENSHOTS_DIR` set the
//! pictures are written there (`docs/console/` is made that way, see README.md).

mod support;

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use otg_schema::wire::{self, Batch, Record};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::{eventually, now_ms, record, Gateway, ADMIN_TOKEN, HOUR_MS, MINUTE_MS};

/// chromedriver, stopped when the test ends.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn executable(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// chromedriver on a free port, once it answers; `None` (with a note) when Chromium
/// or its driver is missing outside CI.
fn start_driver() -> Option<(Driver, PathBuf)> {
    let (Some(chromium), Some(chromedriver)) = (executable("chromium"), executable("chromedriver")) else {
        assert!(std::env::var_os("CI").is_none(), "chromium or chromedriver is missing: scripts/test installs them");
        eprintln!("chromium or chromedriver is missing: skipped (scripts/test installs Debian's chromium and chromium-driver)");
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let url = format!("http://127.0.0.1:{port}");
    assert!(
        eventually(Duration::from_secs(10), || ureq::get(&format!("{url}/status")).call().is_ok()),
        "chromedriver answers"
    );
    Some((Driver { child, url }, chromium))
}

async fn browser(driver: &Driver, chromium: &Path) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1360,1000"],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

/// Takes a picture of the page; keeps it where `CONSOLE_SCREENSHOTS_DIR` says.
async fn photograph(browser: &Client, name: &str) {
    let png = browser.screenshot().await.expect("a screenshot");
    assert!(png.len() > 1000, "{name}: an empty screenshot");
    if let Some(dir) = std::env::var_os("CONSOLE_SCREENSHOTS_DIR") {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(Path::new(&dir).join(format!("{name}.png")), png).unwrap();
    }
}

async fn find(browser: &Client, css: &str) -> Element {
    browser
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|error| panic!("{css}: {error}"))
}

/// The text of the element at `css`, found again when the page replaced it between
/// finding and reading it: a click's navigation can land in between (seen once in CI).
async fn text(browser: &Client, css: &str) -> String {
    for _ in 0..50 {
        match find(browser, css).await.text().await {
            Ok(text) => return text,
            Err(error) if error.is_stale_element_reference() => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(error) => panic!("{css}: {error}"),
        }
    }
    panic!("{css}: replaced by every page for 5 s")
}

async fn path_of(browser: &Client) -> String {
    let url = browser.current_url().await.unwrap();
    format!("{}{}", url.path(), url.query().map(|query| format!("?{query}")).unwrap_or_default())
}

/// A kiosk's batch with its health: two check-ins of one employee a minute apart (a
/// `duplicate_event` conflict) and a break, three records still queued on the device.
fn kiosk_batch(employee: &str) -> Vec<u8> {
    let start = now_ms() - 2 * HOUR_MS;
    let at = |seq: i64, kind: &str, offset: i64| Record {
        qr: Some("<img src=x onerror=alert(1)>".into()),
        ..Record::new(seq, uuid::Uuid::new_v4().to_string(), kind, employee, start + offset)
    };
    let records = vec![at(1, "check_in", 0), at(2, "check_in", MINUTE_MS), at(3, "break_start", 30 * MINUTE_MS)];
    wire::encode(&Batch {
        pending: Some(3),
        queue_bytes: Some(90 * 1024 * 1024),
        app_version: Some("2.4.1 <b>beta</b>".into()),
        oldest_pending_at: Some(start + 40 * MINUTE_MS),
        ..Batch::new("kiosk-1", "b-<script>1</script>", now_ms(), records)
    })
}

#[test]
fn an_administrator_works_through_the_console_in_chromium() {
    let Some((driver, chromium)) = start_driver() else { return };
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(dir.path(), &[]);
    let kiosk = gateway.enrol("kiosk-1", "acme", None);
    let employee = "emp-<i>9</i>";
    let acks = gateway.upload_ok(&kiosk, &kiosk_batch(employee)).acks;
    assert!(acks.iter().any(|ack| ack.conflict_id.is_some()), "the second check-in is a conflict: {acks:?}");
    let phone = gateway.enrol("phone-2", "acme", Some("emp-2"));
    gateway.upload_ok(&phone, &support::batch(&phone.id, "b-1", vec![record(1, "emp-2"), record(2, "emp-2")]));

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let browser = browser(&driver, &chromium).await;
        let base = &gateway.base_url;

        // Sign in.
        browser.goto(&format!("{base}/admin/")).await.unwrap();
        assert_eq!(path_of(&browser).await, "/admin/sign-in", "a page needs a session");
        photograph(&browser, "sign-in").await;
        find(&browser, "#token").await.send_keys("not-the-token-0123").await.unwrap();
        find(&browser, "form.sign-in button").await.click().await.unwrap();
        assert!(text(&browser, ".field-error").await.contains("not this gateway's admin token"));
        find(&browser, "#token").await.send_keys(ADMIN_TOKEN).await.unwrap();
        find(&browser, "form.sign-in button").await.click().await.unwrap();
        find(&browser, "nav").await;
        assert_eq!(path_of(&browser).await, "/admin/");

        // The device that just synced, with its figures and its health.
        browser.goto(&format!("{base}/admin/?org_id=acme&refresh=off")).await.unwrap();
        let row = text(&browser, "tr[data-device='kiosk-1']").await;
        for figure in ["shared kiosk", "90.0 MiB of 100.0 MiB (90%)", "nearly full", "2.4.1 <b>beta</b>"] {
            assert!(row.contains(figure), "{figure:?} in the kiosk's row: {row}");
        }
        let cells: Vec<String> = {
            let row = find(&browser, "tr[data-device='kiosk-1']").await;
            let mut cells = Vec::new();
            for cell in row.find_all(Locator::Css("td.number")).await.unwrap() {
                cells.push(cell.text().await.unwrap());
            }
            cells
        };
        assert_eq!(cells, ["3", "4", "1", "0", "1"], "pending, next_seq, batches, failures, open conflicts");
        assert!(browser.find(Locator::Css("b")).await.is_err(), "device text is never markup");
        photograph(&browser, "sync-status").await;
        browser.goto(&format!("{base}/admin/?org_id=acme&show=conflicts&refresh=off")).await.unwrap();
        assert!(browser.find(Locator::Css("tr[data-device='phone-2']")).await.is_err(), "filtered on the server");
        find(&browser, "tr[data-device='kiosk-1']").await;

        // Sync rates.
        browser.goto(&format!("{base}/admin/rates?org_id=acme")).await.unwrap();
        assert_eq!(text(&browser, "section[data-window='1h'] dd.succeeded").await, "2");
        find(&browser, "svg rect").await;
        photograph(&browser, "sync-rates").await;

        // Resolve the conflict by clicking: choose, confirm.
        browser.goto(&format!("{base}/admin/conflicts?org_id=acme")).await.unwrap();
        let card = text(&browser, "section.conflict").await;
        assert!(card.contains("duplicate_event") && card.contains(employee), "{card}");
        assert!(card.contains("<img src=x onerror=alert(1)>"), "the QR payload shows as text: {card}");
        photograph(&browser, "conflicts").await;
        find(&browser, "section.conflict select[name='resolution'] option[value='keep_both']")
            .await
            .click()
            .await
            .unwrap();
        find(&browser, "section.conflict input[name='note']").await.send_keys("both were real <ok>").await.unwrap();
        find(&browser, "section.conflict button").await.click().await.unwrap();
        find(&browser, "#confirm").await;
        photograph(&browser, "conflict-confirm").await;
        find(&browser, "#confirm").await.click().await.unwrap();
        assert!(text(&browser, "p.notice").await.contains("is resolved"));
        assert!(text(&browser, "section.conflict").await.contains("both were real <ok>"));
        let open = gateway.admin("GET", "/v1/admin/conflicts?org_id=acme&status=open", None).json();
        assert_eq!(open["conflicts"].as_array().unwrap().len(), 0, "resolved through the console");

        // The audit trail and the attendance timeline.
        browser.goto(&format!("{base}/admin/audit?org_id=acme")).await.unwrap();
        let trail = text(&browser, "#audit").await;
        assert!(trail.contains("conflict resolved") && trail.contains("b-<script>1</script>"), "{trail}");
        photograph(&browser, "audit").await;
        let day = chrono::DateTime::from_timestamp_millis(now_ms() - 2 * HOUR_MS).unwrap().format("%Y-%m-%d");
        browser
            .goto(&format!("{base}/admin/attendance?org_id=acme&employee_id=emp-%3Ci%3E9%3C%2Fi%3E&day={day}"))
            .await
            .unwrap();
        assert!(text(&browser, "#records").await.contains("break_start"));
        photograph(&browser, "attendance").await;

        // A setting out of range: the server's rule beside the field.
        browser.goto(&format!("{base}/admin/settings?org_id=acme")).await.unwrap();
        let days = find(&browser, "#max_offline_days").await;
        days.clear().await.unwrap();
        days.send_keys("0").await.unwrap();
        find(&browser, "#save").await.click().await.unwrap();
        assert_eq!(text(&browser, "#max_offline_days-error").await, "must be 1 to 365");
        photograph(&browser, "settings").await;
        let days = find(&browser, "#max_offline_days").await;
        days.clear().await.unwrap();
        days.send_keys("14").await.unwrap();
        find(&browser, "#save").await.click().await.unwrap();
        assert!(text(&browser, "p.notice").await.starts_with("Saved"));
        let settings = gateway.admin("GET", "/v1/admin/orgs/acme/settings", None).json();
        assert_eq!(settings["max_offline_days"], 14);

        // Enrol a device (secret and QR code once), then revoke it after a confirmation.
        browser.goto(&format!("{base}/admin/devices?org_id=acme")).await.unwrap();
        find(&browser, "#device_id").await.send_keys("phone-7").await.unwrap();
        find(&browser, "#employee_id").await.send_keys("emp-7").await.unwrap();
        find(&browser, "#enrol-submit").await.click().await.unwrap();
        let secret = text(&browser, "#secret").await;
        assert!(otg_schema::DeviceSecret::from_base64(&secret).is_some(), "a 32-byte secret: {secret}");
        find(&browser, ".qr svg").await;
        photograph(&browser, "device-enrolled").await;
        find(&browser, "#enrolled a").await.click().await.unwrap();
        assert_eq!(text(&browser, "#device-status").await, "active");
        find(&browser, "a[href$='/revoke']").await.click().await.unwrap();
        photograph(&browser, "device-revoke").await;
        find(&browser, "#confirm").await.click().await.unwrap();
        assert_eq!(text(&browser, "#device-status").await, "revoked");
        photograph(&browser, "device").await;
        assert_eq!(gateway.admin("GET", "/v1/admin/devices/phone-7", None).json()["status"], "revoked");

        // Sign out, and be refused.
        find(&browser, "form.sign-out button").await.click().await.unwrap();
        find(&browser, "form.sign-in").await; // the click returns before the next page loads
        assert_eq!(path_of(&browser).await, "/admin/sign-in");
        browser.goto(&format!("{base}/admin/?org_id=acme")).await.unwrap();
        assert_eq!(path_of(&browser).await, "/admin/sign-in", "signed out: refused");
        browser.close().await.unwrap();
    });

    // Without the session's CSRF token a change is refused, even with a valid cookie.
    let signed_in = ureq::AgentBuilder::new().redirects(0).build();
    let reply = signed_in.post(&gateway.url("/admin/sign-in")).send_form(&[("token", ADMIN_TOKEN)]).unwrap();
    let cookie = reply.header("set-cookie").unwrap().split(';').next().unwrap().to_owned();
    assert!(reply.header("set-cookie").unwrap().contains("HttpOnly; SameSite=Strict"));
    let refused = signed_in
        .post(&gateway.url("/admin/devices/kiosk-1/revoke"))
        .set("Cookie", &cookie)
        .send_form(&[("csrf", "forged")])
        .unwrap_err();
    assert!(matches!(refused, ureq::Error::Status(403, _)), "{refused:?}");
    let from_elsewhere = signed_in
        .post(&gateway.url("/admin/devices/kiosk-1/revoke"))
        .set("Cookie", &cookie)
        .set("Origin", "https://attacker.example")
        .send_form(&[("csrf", "forged")])
        .unwrap_err();
    assert!(matches!(from_elsewhere, ureq::Error::Status(403, _)));
    let page = signed_in.get(&gateway.url("/admin/?org_id=acme")).set("Cookie", &cookie).call().unwrap();
    assert!(page.header("content-security-policy").unwrap().contains("frame-ancestors 'none'"));
    assert_eq!(gateway.admin("GET", "/v1/admin/devices/kiosk-1", None).json()["status"], "active");
}
