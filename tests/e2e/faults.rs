//! Faults around the daemon: its disk fills up or turns read-only, an upstream resets every
//! connection, a source's host does not resolve. The real binary keeps serving what it has,
//! says what is wrong (log, `/api/sources`), and recovers without a restart once the fault
//! is gone.
//!
//! The disk faults mount a small tmpfs (or an ext4 loop device) for the store, which needs root
//! (CI runs as root); where mounting is impossible the test says so and skips.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::real::{free_port, RealDaemon};
use crate::tempdir;
use crate::upstream::Upstream;

/// A tmpfs mounted at a directory, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(at.to_owned()))
    }

    fn remount(&self, options: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success(), "remount {options}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A small ext4 filesystem in an image file on a loop device, mounted with
/// `errors=remount-ro` (the usual default of Debian's root filesystem): when ext4 finds an error
/// it turns the filesystem read-only at once, open files or not, as a failing disk does.
/// Unmounted and detached on drop.
struct Ext4Disk {
    image: PathBuf,
    device: String,
    at: PathBuf,
}

impl Ext4Disk {
    /// `None` (with the reason printed) where loop devices, mkfs.ext4 or mounting are not
    /// available.
    fn mount(image: &Path, at: &Path) -> Option<Ext4Disk> {
        let run = |cmd: &mut Command| -> Option<String> {
            let out = cmd.output().ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        };
        let file = std::fs::File::create(image).ok()?;
        file.set_len(64 * 1024 * 1024).ok()?;
        drop(file);
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(image))?;
        let device = run(Command::new("losetup").args(["-f", "--show"]).arg(image))?;
        std::fs::create_dir_all(at).ok()?;
        let disk = Ext4Disk {
            image: image.to_owned(),
            device,
            at: at.to_owned(),
        };
        disk.mount_again().then_some(disk)
    }

    fn mount_again(&self) -> bool {
        Command::new("mount")
            .args(["-t", "ext4", "-o", "errors=remount-ro", &self.device])
            .arg(&self.at)
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Makes ext4 record an error (its sysfs test hook), which turns it read-only under every
    /// open file.
    fn fail(&self) {
        let name = Path::new(&self.device).file_name().unwrap();
        let hook = Path::new("/sys/fs/ext4")
            .join(name)
            .join("trigger_fs_error");
        std::fs::write(&hook, "feedmux fault test").expect("ext4's trigger_fs_error hook");
    }

    /// Whether the filesystem could be unmounted (nothing has a file on it open).
    fn unmount(&self) -> bool {
        Command::new("umount")
            .arg(&self.at)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// What an operator does: check and repair the filesystem, then mount it again.
    fn repair_and_mount(&self) {
        // e2fsck: 0 clean, 1 errors corrected; more is a failure.
        let status = Command::new("e2fsck")
            .args(["-f", "-y", &self.device])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("e2fsck");
        assert!(matches!(status.code(), Some(0 | 1)), "e2fsck: {status}");
        assert!(self.mount_again(), "mount {} again", self.device);
    }
}

impl Drop for Ext4Disk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
        let _ = std::fs::remove_file(&self.image);
    }
}

/// A feed of items `from..to` of `source`, each with about `body_bytes` of text that does not
/// compress (the store compresses items, and these fill a disk).
fn rss(source: &str, from: usize, to: usize, body_bytes: usize) -> String {
    let items: String = (from..to)
        .rev()
        .map(|n| {
            let filler = incompressible(n as u64, body_bytes);
            format!(
                "<item><guid>{source}-{n}</guid><title>{source} entry {n}</title>\
                 <link>https://{source}.example/{n}</link><description>&lt;p&gt;{n} {filler}&lt;/p&gt;</description></item>"
            )
        })
        .collect();
    format!("<rss version=\"2.0\"><channel><title>{source}</title><link>https://{source}.example/</link><description>d</description>{items}</channel></rss>")
}

/// `len` letters and digits from a generator seeded by `seed`: text zstd cannot shrink much.
fn incompressible(seed: u64, len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ALPHABET[(state % ALPHABET.len() as u64) as usize] as char
        })
        .collect()
}

fn write_config(dir: &Path, port: u16, store: &Path, sources: &[(&str, String)]) {
    let tables: String = sources
        .iter()
        .map(|(name, url)| format!("[[source]]\nname = \"{name}\"\nurl = \"{url}\"\n\n"))
        .collect();
    std::fs::write(
        dir.join("feedmux.toml"),
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[storage]\npath = {:?}\n\
             [poll]\nschedule = \"* * * * * *\"\nper_host_interval = \"0s\"\nbackoff_base = \"1s\"\nbackoff_max = \"2s\"\nconnect_timeout = \"2s\"\ntimeout = \"5s\"\n\
             {tables}[[feed]]\nname = \"all\"\nlimit = 10000\ngroup_stories = false\n",
            store.display().to_string()
        ),
    )
    .unwrap();
}

/// Titles served in `/feeds/all.json`, or `None` when it does not answer 200.
async fn titles(http: &reqwest::Client, base: &str) -> Option<Vec<String>> {
    let r = http
        .get(format!("{base}/feeds/all.json"))
        .send()
        .await
        .ok()?;
    if r.status() != 200 {
        return None;
    }
    let doc: serde_json::Value = serde_json::from_slice(&r.bytes().await.ok()?).ok()?;
    Some(
        doc["items"]
            .as_array()?
            .iter()
            .map(|i| i["title"].as_str().unwrap_or_default().to_owned())
            .collect(),
    )
}

/// The last error of each source, from `/api/sources`.
async fn last_errors(http: &reqwest::Client, base: &str) -> Vec<(String, Option<String>)> {
    crate::api_sources(http, base)
        .await
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or_default().to_owned(),
                s["state"]["last_error"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

/// Waits (at most `limit`) until `check` holds for the served titles.
async fn wait_for(
    http: &reqwest::Client,
    base: &str,
    limit: Duration,
    what: &str,
    check: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let started = Instant::now();
    loop {
        if let Some(t) = titles(http, base).await {
            if check(&t) {
                return t;
            }
            if started.elapsed() > limit {
                panic!("{what}: not within {limit:?}; serving {} entries", t.len());
            }
        } else if started.elapsed() > limit {
            panic!("{what}: the feed is not served");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// Which disk fault to cause. (A store turning read-only under a running daemon is caused with
/// ext4's error handling instead, see `Ext4Disk`: the kernel refuses to remount a tmpfs
/// read-only while files on it are open for writing.)
#[derive(Clone, Copy, Debug)]
enum DiskFault {
    Full,
}

/// Runs the daemon with its store on a 4 MiB tmpfs, serves 5 entries, causes `fault` while
/// 200 more arrive, and checks that the 5 are still served and the fault is logged. Returns
/// the daemon, the disk and the upstream with the fault still in place; `None` when no tmpfs
/// can be mounted here.
async fn with_disk_fault(
    dir: &Path,
    fault: DiskFault,
    http: &reqwest::Client,
) -> Option<(RealDaemon, Tmpfs, Upstream)> {
    let Some(disk) = Tmpfs::mount(&dir.join("disk"), "4m") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root and mount permission)");
        return None;
    };
    let upstream = Upstream::start().await;
    upstream.put(
        "/big.xml",
        &[("content-type", "application/rss+xml")],
        rss("big", 0, 5, 100),
    );
    let port = free_port();
    write_config(
        dir,
        port,
        &disk.0.join("store"),
        &[("big", upstream.url("/big.xml"))],
    );
    let mut daemon = RealDaemon::start(dir, port);
    daemon.wait_ready(http, Duration::from_secs(30)).await;
    let base = daemon.base();
    wait_for(http, &base, Duration::from_secs(10), "first entries", |t| {
        t.len() == 5
    })
    .await;
    // 200 entries of 40 KB (8 MB, which does not compress) do not fit in what is left of 4 MB.
    upstream.put(
        "/big.xml",
        &[("content-type", "application/rss+xml")],
        rss("big", 0, 200, 40_000),
    );
    let expected = match fault {
        DiskFault::Full => "No space left on device",
    };
    // sled's own writer may log the error first; wait for the daemon's line naming the poll
    // that failed and why.
    let reported = |log: &str| {
        log.lines()
            .any(|line| line.contains("poll failed") && line.contains(expected))
    };
    let started = Instant::now();
    while !reported(&daemon.log_text()) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{fault:?}: no poll failure naming {expected:?} logged:\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Readers are still served everything they had.
    for _ in 0..10 {
        let served = titles(http, &base).await.expect("served during the fault");
        assert_eq!(served.len(), 5, "{fault:?}: {served:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Some((daemon, disk, upstream))
}

/// Starts an upstream serving 5 entries of source `f` and the daemon with its store at
/// `store`, and waits until the 5 are served.
async fn serving_five(dir: &Path, store: &Path, http: &reqwest::Client) -> (RealDaemon, Upstream) {
    let upstream = Upstream::start().await;
    upstream.put(
        "/f.xml",
        &[("content-type", "application/rss+xml")],
        rss("f", 0, 5, 100),
    );
    let port = free_port();
    write_config(dir, port, store, &[("f", upstream.url("/f.xml"))]);
    let mut daemon = RealDaemon::start(dir, port);
    daemon.wait_ready(http, Duration::from_secs(30)).await;
    wait_for(
        http,
        &daemon.base(),
        Duration::from_secs(10),
        "entries",
        |t| t.len() == 5,
    )
    .await;
    (daemon, upstream)
}

/// Waits (at most `limit`) until `n` entries are served, failing if the daemon exits
/// meanwhile (it must recover without a restart); checks that none is shown twice.
async fn recovered_without_restart(
    daemon: &mut RealDaemon,
    http: &reqwest::Client,
    n: usize,
    limit: Duration,
) -> Vec<String> {
    let started = Instant::now();
    let titles = loop {
        if let Some(status) = daemon.child.try_wait().unwrap() {
            panic!(
                "the daemon exited ({status}) instead of recovering:\n{}",
                daemon.log_text()
            );
        }
        match titles(http, &daemon.base()).await {
            Some(t) if t.len() == n => break t,
            _ => {}
        }
        assert!(
            started.elapsed() < limit,
            "not recovered within {limit:?}:\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for title in &titles {
        let shown = titles.iter().filter(|t| *t == title).count();
        assert_eq!(shown, 1, "{title} shown {shown} times");
    }
    titles
}

/// Waits (at most 60 s) until `/readyz` answers 200 again after a store fault, and checks
/// that the log says the store recovered.
async fn ready_again(daemon: &RealDaemon, http: &reqwest::Client) {
    let started = Instant::now();
    loop {
        let readyz = http
            .get(format!("{}/readyz", daemon.base()))
            .send()
            .await
            .unwrap();
        if readyz.status() == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not ready again after recovery:\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = daemon.log_text();
    assert!(log.contains("store recovered"), "{log}");
}

/// A full disk: the daemon keeps serving what it has and logs the fault; when space returns,
/// a restart (what `Restart=on-failure` or an operator does) finds every entry served before,
/// shown once, and polling brings the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mount (root): run by .ci/run, or cargo test -- --include-ignored"]
async fn a_full_disk_keeps_serving_and_loses_nothing() {
    for fault in [DiskFault::Full] {
        let dir = tempdir();
        let http = http();
        let Some((mut daemon, disk, _upstream)) = with_disk_fault(dir.path(), fault, &http).await
        else {
            return;
        };
        disk.remount("rw,size=256m");
        daemon.kill();
        let mut daemon = RealDaemon::start(dir.path(), daemon.port);
        daemon.wait_ready(&http, Duration::from_secs(30)).await;
        let started = Instant::now();
        let titles = wait_for(
            &http,
            &daemon.base(),
            // One poll stores them in about a second; rendering 8 MB of text that does not
            // compress (brotli and gzip of three formats) takes longer, most of all in a
            // debug build on a busy machine: about 20 s alone, over 60 s beside other
            // builds. What is tested is that nothing is lost, not how fast.
            Duration::from_secs(180),
            "recovery after a restart",
            |t| t.len() == 200,
        )
        .await;
        println!(
            "{fault:?}: served throughout; all 200 entries {:?} after the restart",
            started.elapsed()
        );
        for n in 0..5 {
            assert!(
                titles.contains(&format!("big entry {n}")),
                "{fault:?}: lost {n}"
            );
        }
        daemon.kill();
    }
}

/// A store on a read-only filesystem: the daemon says so and exits non-zero (nothing to serve
/// from, and a supervisor should see it); once writable, it starts with everything it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mount (root): run by .ci/run, or cargo test -- --include-ignored"]
async fn a_read_only_store_is_refused_clearly_and_loses_nothing() {
    let dir = tempdir();
    let http = http();
    let Some(disk) = Tmpfs::mount(&dir.path().join("disk"), "64m") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root and mount permission)");
        return;
    };
    let (mut daemon, _upstream) = serving_five(dir.path(), &disk.0.join("store"), &http).await;
    let port = daemon.port;
    daemon.kill();
    disk.remount("ro");
    let mut daemon = RealDaemon::start(dir.path(), port);
    let status = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(status) = daemon.child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the daemon exits on a read-only store");
    assert!(!status.success());
    let log = daemon.log_text();
    assert!(log.contains("Read-only file system"), "{log}");
    println!(
        "read-only store: refused with {status}: {}",
        log.lines().last().unwrap_or_default()
    );
    disk.remount("rw");
    let mut daemon = RealDaemon::start(dir.path(), port);
    daemon.wait_ready(&http, Duration::from_secs(30)).await;
    assert_eq!(titles(&http, &daemon.base()).await.unwrap().len(), 5);
    daemon.kill();
}

/// The store's filesystem turns read-only under the running daemon (ext4 found an error and
/// remounted itself read-only; the files stay open): the daemon keeps serving its 5 entries,
/// reports `Read-only file system` (log, `/readyz` 503, status page) and lets go of every file
/// of the store, so that the operator can unmount, repair (`e2fsck`) and mount it again; then
/// it reopens the store by itself and the 5 new entries arrive, with no restart, nothing lost
/// and nothing shown twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mount (root): run by .ci/run, or cargo test -- --include-ignored"]
async fn a_store_turned_read_only_under_the_daemon_recovers_once_remounted() {
    let dir = tempdir();
    let http = http();
    let Some(disk) = Ext4Disk::mount(&dir.path().join("disk.img"), &dir.path().join("disk")) else {
        eprintln!("SKIPPED: cannot make and mount an ext4 loop device here (needs root, loop devices, mkfs.ext4)");
        return;
    };
    let (mut daemon, upstream) = serving_five(dir.path(), &disk.at.join("store"), &http).await;
    let base = daemon.base();

    disk.fail();
    upstream.put(
        "/f.xml",
        &[("content-type", "application/rss+xml")],
        rss("f", 0, 10, 100),
    );
    let started = Instant::now();
    while !daemon
        .log_text()
        .lines()
        .any(|l| l.contains("poll failed") && l.contains("Read-only file system"))
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no poll failure naming the read-only store:\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let readyz = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(readyz.status(), 503, "{}", daemon.log_text());
    let page = http.get(format!("{base}/")).send().await.unwrap();
    let page = page.text().await.unwrap();
    assert!(
        page.contains("id=\"store-error\"") && page.contains("Read-only file system"),
        "the status page shows the store fault:\n{page}"
    );
    assert_eq!(titles(&http, &base).await.unwrap().len(), 5);

    // The daemon has closed the store: the filesystem can be unmounted while it runs.
    let started = Instant::now();
    while !disk.unmount() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the daemon keeps files of the failed store open:\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        titles(&http, &base).await.unwrap().len(),
        5,
        "served while the disk is away"
    );
    disk.repair_and_mount();
    let repaired = Instant::now();
    recovered_without_restart(&mut daemon, &http, 10, Duration::from_secs(90)).await;
    let recovered_after = repaired.elapsed();
    ready_again(&daemon, &http).await;
    println!(
        "read-only under the daemon: served throughout, files let go, all 10 entries {recovered_after:?} after the disk was mounted again, without a restart"
    );
    daemon.kill();
}

/// A full disk recovers once space returns, without a restart: while it lasts `/readyz`
/// answers 503 naming the store, the status page shows the fault and readers keep the 5
/// entries; then the daemon reopens its store by itself (1, 2, 4, then every 5 s) and the other
/// 195 arrive, the 5 kept and no entry shown twice, `store recovered` is logged and `/readyz`
/// answers 200 again. (Before the vendored sled's fix the failed database could keep its lock
/// and the daemon had to exit for a restart; it must not now.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mount (root): run by .ci/run, or cargo test -- --include-ignored"]
async fn a_full_disk_recovers_without_restart() {
    let dir = tempdir();
    let http = http();
    let Some((mut daemon, disk, _upstream)) =
        with_disk_fault(dir.path(), DiskFault::Full, &http).await
    else {
        return;
    };
    let base = daemon.base();
    let readyz = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(readyz.status(), 503);
    assert!(readyz.text().await.unwrap().contains("store"));
    let page = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(
        page.contains("id=\"store-error\"") && page.contains("No space left on device"),
        "the status page shows the store fault:\n{page}"
    );
    disk.remount("size=256m");
    let healed = Instant::now();
    // Generous: the reopen waits grow while the disk stays full, and the machine may be
    // loaded.
    let titles = recovered_without_restart(&mut daemon, &http, 200, Duration::from_secs(90)).await;
    println!(
        "full disk: served throughout; all 200 entries {:?} after space returned, without a restart",
        healed.elapsed()
    );
    for n in 0..5 {
        assert!(titles.contains(&format!("big entry {n}")), "lost {n}");
    }
    // The entries can show before the next poll's write proves the store healthy (rendering
    // after the reopen shows what the failed poll had written).
    ready_again(&daemon, &http).await;
    let log = daemon.log_text();
    assert!(log.contains("reopening it in"), "{log}");
    assert!(!log.contains("cannot be released"), "{log}");
    let page = http.get(format!("{base}/")).send().await.unwrap();
    assert!(!page.text().await.unwrap().contains("id=\"store-error\""));
    daemon.kill();
}

/// Fills the filesystem at `at` with a file of zeros (`filler`) until a write fails: the disk
/// is full while it stays.
fn fill_disk(at: &Path) -> PathBuf {
    use std::io::Write;
    let filler = at.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    // The last bytes a chunk did not fit in.
    while file.write_all(&[0u8; 512]).is_ok() {}
    filler
}

/// A full disk is the store's fault, not the source's. With `backoff_base = "10m"`: the poll
/// fails naming the full disk, the source is not asked again while the disk stays full, and
/// once space returns the daemon reopens the store within seconds (1, 2, 4, then every 5 s)
/// and the source, which waited for the store instead of backing off, is polled at once: its
/// new entries are stored and served, and its state shows no failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mount (root): run by .ci/run, or cargo test -- --include-ignored"]
async fn a_full_disk_does_not_back_the_source_off_and_polling_resumes_once_space_returns() {
    let dir = tempdir();
    let http = http();
    let Some(disk) = Tmpfs::mount(&dir.path().join("disk"), "16m") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root and mount permission)");
        return;
    };
    let (mut daemon, upstream) = serving_five(dir.path(), &disk.0.join("store"), &http).await;
    let base = daemon.base();
    // The same daemon, backing failing sources off for 10 minutes.
    let config = dir.path().join("feedmux.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let slow = "backoff_base = \"10m\"\nbackoff_max = \"1h\"";
    let text = text.replace("backoff_base = \"1s\"\nbackoff_max = \"2s\"", slow);
    assert!(text.contains(slow), "{text}");
    std::fs::write(&config, text).unwrap();
    let port = daemon.port;
    daemon.kill();
    let mut daemon = RealDaemon::start(dir.path(), port);
    daemon.wait_ready(&http, Duration::from_secs(30)).await;

    let filler = fill_disk(&disk.0);
    upstream.put(
        "/f.xml",
        &[("content-type", "application/rss+xml")],
        // 2 MB that does not compress: more than sled's files have room for already.
        rss("f", 0, 200, 10_000),
    );
    let started = Instant::now();
    let failed = |log: &str| {
        log.lines()
            .any(|line| line.contains("poll failed") && line.contains("No space left on device"))
    };
    while !failed(&daemon.log_text()) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no poll failure naming the full disk:\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let asked_at_failure = upstream.requests("/f.xml").len();
    // Polled every second by its schedule: ten seconds of a full disk.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let asked_while_full = upstream.requests("/f.xml").len() - asked_at_failure;
    assert!(
        asked_while_full <= 1,
        "the source was asked {asked_while_full} times in 10 s of a full disk:\n{}",
        daemon.log_text()
    );
    assert_eq!(titles(&http, &base).await.unwrap().len(), 5);

    std::fs::remove_file(&filler).unwrap();
    let freed = Instant::now();
    let titles = recovered_without_restart(&mut daemon, &http, 200, Duration::from_secs(60)).await;
    let polled_after = freed.elapsed();
    for n in 0..200 {
        assert!(titles.contains(&format!("f entry {n}")), "missing {n}");
    }
    let sources = crate::api_sources(&http, &base).await;
    let state = &sources[0]["state"];
    assert_eq!(state["consecutive_failures"], 0, "{state}");
    assert!(state["last_error"].is_null(), "{state}");
    println!(
        "full disk with backoff_base 10m: the source asked {asked_while_full} times in 10 s of it; \
         its 195 new entries served {polled_after:?} after space returned"
    );
    daemon.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_and_unresolvable_hosts_fail_one_source_and_the_rest_goes_on() {
    // An upstream that accepts and resets every connection, until it is told to serve.
    let resetter = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let reset_addr = resetter.local_addr().unwrap();
    let healthy = Upstream::start().await;
    healthy.put(
        "/ok.xml",
        &[("content-type", "application/rss+xml")],
        rss("ok", 0, 3, 10),
    );
    let stop_resetting = Arc::new(AtomicBool::new(false));
    let resets = Arc::new(AtomicUsize::new(0));
    {
        let stop = stop_resetting.clone();
        let resets = resets.clone();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            loop {
                let Ok((mut stream, _)) = resetter.accept().await else {
                    continue;
                };
                if stop.load(Ordering::SeqCst) {
                    let mut buf = [0u8; 4096];
                    let _ = stream.read(&mut buf).await;
                    let body = rss("flaky", 0, 2, 10);
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(body.as_bytes()).await;
                } else {
                    // Linger 0: closing sends RST instead of FIN.
                    #[allow(deprecated)]
                    let _ = stream.set_linger(Some(Duration::ZERO));
                    resets.fetch_add(1, Ordering::SeqCst);
                    drop(stream);
                }
            }
        });
    }
    let dir = tempdir();
    let port = free_port();
    write_config(
        dir.path(),
        port,
        &dir.path().join("store"),
        &[
            ("ok", healthy.url("/ok.xml")),
            ("flaky", format!("http://{reset_addr}/flaky.xml")),
            ("nowhere", "http://nonexistent.invalid/feed.xml".to_owned()),
        ],
    );
    let mut daemon = RealDaemon::start(dir.path(), port);
    let http = http();
    daemon.wait_ready(&http, Duration::from_secs(30)).await;
    let base = daemon.base();
    wait_for(
        &http,
        &base,
        Duration::from_secs(10),
        "the healthy source",
        |t| t.len() == 3,
    )
    .await;
    let started = Instant::now();
    let errors = loop {
        let errors = last_errors(&http, &base).await;
        let failing = errors.iter().filter(|(_, e)| e.is_some()).count();
        if failing == 2 || started.elapsed() > Duration::from_secs(10) {
            break errors;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("faults reported: {errors:?}");
    let error_of = |name: &str| {
        errors
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, e)| e.clone())
            .unwrap_or_else(|| panic!("{name}: no error reported: {errors:?}"))
    };
    let flaky = error_of("flaky");
    let nowhere = error_of("nowhere");
    assert!(resets.load(Ordering::SeqCst) >= 1);
    assert!(
        errors.iter().any(|(n, e)| n == "ok" && e.is_none()),
        "the healthy source is unaffected: {errors:?}"
    );
    assert!(!flaky.is_empty() && !nowhere.is_empty());
    let log = daemon.log_text();
    assert!(log.contains("flaky") && log.contains("nowhere"), "{log}");
    // `/readyz` names them and stays 200: the other sources are served and polled.
    let readyz = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(readyz.status(), 200);
    let readyz = readyz.text().await.unwrap();
    assert!(readyz.starts_with("ready\n"), "{readyz}");
    for name in ["flaky", "nowhere"] {
        assert!(
            readyz.contains(&format!("warning: source {name} failing since ")),
            "{readyz}"
        );
    }
    assert!(!readyz.contains("source ok "), "{readyz}");

    // The upstream comes back: its entries arrive without a restart (backoff is 1–2 s here).
    stop_resetting.store(true, Ordering::SeqCst);
    let recovered = Instant::now();
    wait_for(
        &http,
        &base,
        Duration::from_secs(15),
        "the flaky source after it healed",
        |t| t.len() == 5,
    )
    .await;
    println!(
        "connection resets: recovered {:?} after the upstream healed",
        recovered.elapsed()
    );
    let errors = last_errors(&http, &base).await;
    assert!(
        errors.iter().any(|(n, e)| n == "flaky" && e.is_none()),
        "the error is cleared once polls succeed: {errors:?}"
    );
    let readyz = http.get(format!("{base}/readyz")).send().await.unwrap();
    let readyz = readyz.text().await.unwrap();
    assert!(
        !readyz.contains("source flaky") && readyz.contains("source nowhere"),
        "{readyz}"
    );
    daemon.kill();
}
