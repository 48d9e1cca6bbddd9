//! `[gc] schedule` and `[gc] window` with the real registry's GC.

use crate::common;

use std::time::{Duration, Instant};

use common::gc::{gc_section, get_json};
use common::{Image, Regate, Registry};

fn hhmm(minutes: u32) -> String {
    let m = minutes % (24 * 60);
    format!("{:02}:{:02}", m / 60, m % 60)
}

fn utc_minute_now() -> u32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    ((secs / 60) % (24 * 60)) as u32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedule_starts_runs_and_the_window_keeps_them_out_of_hours() {
    let registry = Registry::start();
    // Every second, inside a window around now.
    let now = utc_minute_now();
    let inside = format!("{}-{}", hhmm(now + 24 * 60 - 5), hhmm(now + 10));
    let regate = Regate::start_with(
        &registry.url,
        &gc_section(
            &registry,
            &format!("schedule = \"* * * * * *\"\nwindow = \"{inside}\""),
        ),
    )
    .await;
    Image::oci("scheduled", 1_000)
        .push(&regate.client(), &regate.url, "s/app", "v1")
        .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let run = loop {
        let gc = get_json(&format!("{}/admin/gc", regate.admin_url)).await;
        let done = gc["history"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["trigger"] == "schedule" && r["status"] != "running")
            .cloned();
        if let Some(r) = done {
            break r;
        }
        assert!(Instant::now() < deadline, "no scheduled run: {gc}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(run["status"], "succeeded", "{run}");
    let status = get_json(&format!("{}/admin/status", regate.admin_url)).await;
    assert_eq!(status["gc"]["schedule"], "* * * * * *");
    regate.stop().await;

    // A window that excludes now: the schedule fires, no run starts.
    let outside = format!("{}-{}", hhmm(now + 120), hhmm(now + 180));
    let regate = Regate::start_with(
        &registry.url,
        &gc_section(
            &registry,
            &format!("schedule = \"* * * * * *\"\nwindow = \"{outside}\""),
        ),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let gc = get_json(&format!("{}/admin/gc", regate.admin_url)).await;
    assert_eq!(gc["history"], serde_json::json!([]), "{gc}");
    regate.stop().await;
}
