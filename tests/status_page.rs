//! The status page in a real browser: headless Chromium (Debian's `chromium`, installed by
//! `.ci/run`) loads `GET /` from the admin listener after half an hour of traffic on the test
//! clock; its DOM has the charts with one point per minute and the figures, and its screenshot
//! is a picture. `EDGECACHE_SCREENSHOT=path` keeps the screenshot (the README's is made so).

pub mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use edgecache::clock::Clock;
use edgecache::metrics::history::MINUTE_MS;
use edgecache::status::Outcome;

/// How long Chromium may take to start and load the page.
const BROWSER: Duration = Duration::from_secs(60);

/// Runs headless Chromium with `args` and a profile of its own under `dir`; its stdout.
async fn chromium(dir: &Path, args: &[String]) -> String {
    let profile = dir.join("profile");
    let mut cmd = tokio::process::Command::new("chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .kill_on_drop(true)
    .stdin(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    let out = match tokio::time::timeout(BROWSER, cmd.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!("cannot run chromium (Debian package chromium; .ci/run installs it): {e}"),
        Err(_) => panic!("chromium did not finish within {BROWSER:?}"),
    };
    assert!(out.status.success(), "chromium failed: {:?}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `<svg class="chart NAME" ...>...</svg>` element of `dom`.
fn chart<'a>(dom: &'a str, name: &str) -> &'a str {
    let at = dom.find(&format!("class=\"chart {name}\"")).unwrap_or_else(|| panic!("chart {name} missing"));
    &dom[at..at + dom[at..].find("</svg>").expect("svg closed")]
}

/// The points of the chart's path: `M x,y L x,y ...`.
fn path_points(svg: &str) -> Vec<(f64, f64)> {
    let d = svg.split(" d=\"").nth(1).expect("a path").split('"').next().unwrap();
    d.split(['M', 'L'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (x, y) = p.split_once(',').expect("x,y");
            (x.parse().expect("x"), y.parse().expect("y"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_renders_the_status_pages_charts_and_figures() {
    const MINUTES: u64 = 30;
    let clock = clock();
    let (_origin, p, c) = serve_with(
        &clock,
        |cfg| cfg.admin = Some(edgecache::config::AdminConfig { listen: "127.0.0.1:0".parse().unwrap(), token: None }),
        |req, _| match req.path() {
            p if p.starts_with("/private") => Reply::ok("mine").cc("private"),
            _ => Reply::ok("x".repeat(2000)).cc("max-age=36000"),
        },
    )
    .await;
    let m = p.proxy().metrics().clone();
    let start = clock.now_millis() / MINUTE_MS * MINUTE_MS;
    // Half an hour of traffic: the same 12 articles (more of them hits as the minutes go), a
    // few new ones, and one response that may not be shared.
    let mut total = 0u64;
    for minute in 1..=MINUTES {
        let requests = 10 + minute % 7;
        for i in 0..requests {
            let path = match i {
                0 => format!("/private/{minute}"),
                1 => format!("/new/{minute}"),
                _ => format!("/article/{}", (i + minute) % 12),
            };
            assert_eq!(c.get(&path).await.status, 200);
        }
        total += requests;
        eventually("the minute's requests recorded", async || {
            Outcome::ALL.iter().map(|o| m.requests(*o)).sum::<u64>() == total
        })
        .await;
        advance(&clock, 60);
        m.history.sample(&m, start + minute * MINUTE_MS);
    }
    // One refused reload (started without a file) for the reload table.
    assert!(p.live().reload("SIGHUP").is_err());

    let dir = std::env::temp_dir().join(format!("edgecache-status-page-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("http://{}/", p.admin_addr().expect("admin listener"));
    let dom = chromium(&dir, &["--dump-dom".into(), url.clone()]).await;

    assert!(dom.contains("<title>edgecache status</title>"), "{dom}");
    for name in ["hit-ratio", "rate", "origin-latency"] {
        let points = path_points(chart(&dom, name));
        assert_eq!(points.len(), MINUTES as usize, "{name}: one point per minute");
        assert!(points.windows(2).all(|w| w[0].0 < w[1].0), "{name}: points in time order");
        assert!(points.iter().all(|&(x, y)| (0.0..=600.0).contains(&x) && (5.0..=145.0).contains(&y)), "{name}");
    }
    // The last minute: 10 + 30 % 7 = 12 requests; /private and /new missed, 10 articles hit.
    assert!(dom.contains("<b id=\"hit-ratio\">83.3 %</b>"), "{dom}");
    assert!(dom.contains("<b id=\"rate\">0.2</b>"), "{dom}");
    assert!(dom.contains("<b id=\"objects\">42</b>"), "12 articles and 30 new ones: {dom}");
    assert!(dom.contains("<td>private</td><td>30</td>"), "{dom}");
    assert!(dom.contains("<span class=\"bad\">invalid</span>"), "{dom}");
    assert!(dom.contains("id=\"breaker\">not configured"), "{dom}");

    let shot: PathBuf = std::env::var_os("EDGECACHE_SCREENSHOT").map(PathBuf::from).unwrap_or(dir.join("page.png"));
    chromium(&dir, &[format!("--screenshot={}", shot.display()), "--window-size=1000,1750".into(), url]).await;
    let png = std::fs::read(&shot).expect("a screenshot");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    // A page of text and charts, not a blank one (a blank 1000x1750 PNG is a few KiB).
    assert!(png.len() > 40_000, "{} bytes", png.len());
    let _ = std::fs::remove_dir_all(&dir);
}
