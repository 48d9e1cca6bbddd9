//! The gate's rules with a hand-driven clock of requests: no registry, no HTTP.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Response, StatusCode};

use super::*;
use crate::body::ProxyBody;
use crate::error::RegistryError;
use crate::route::Route;

fn gate(mode: ClosedWrites, hold: Duration) -> Arc<WriteGate> {
    WriteGate::new(
        GatePolicy {
            closed_writes: mode,
            hold_timeout: hold,
            retry_after: Duration::from_secs(7),
            push_window: Duration::from_secs(60),
        },
        Arc::new(Metrics::new()),
    )
}

fn route(path: &str) -> Route {
    Route::parse(path).unwrap()
}

fn upload_started(session: &str) -> Response<ProxyBody> {
    Response::builder()
        .status(StatusCode::ACCEPTED)
        .header(
            "location",
            format!("https://r.example/v2/a/blobs/uploads/{session}?_state=x"),
        )
        .body(crate::body::empty())
        .unwrap()
}

fn status(s: StatusCode) -> Response<ProxyBody> {
    Response::builder()
        .status(s)
        .body(crate::body::empty())
        .unwrap()
}

#[tokio::test]
async fn reads_pass_a_closed_gate() {
    let g = gate(ClosedWrites::Reject, Duration::from_secs(1));
    g.close_now("test");
    for m in [Method::GET, Method::HEAD] {
        assert!(g
            .admit(&m, &route("/v2/a/manifests/latest"))
            .await
            .unwrap()
            .is_none());
    }
}

#[tokio::test]
async fn reject_mode_refuses_every_write_with_retry_after() {
    let g = gate(ClosedWrites::Reject, Duration::from_secs(1));
    g.close_now("backup");
    for (m, p) in [
        (Method::POST, "/v2/a/blobs/uploads/"),
        (Method::PUT, "/v2/a/manifests/v1"),
        (Method::PATCH, "/v2/a/blobs/uploads/abc"),
        (Method::DELETE, "/v2/a/manifests/v1"),
    ] {
        let err = match g.admit(&m, &route(p)).await {
            Err(e) => e,
            Ok(_) => panic!("{m} {p} passed a closed gate"),
        };
        let resp = RegistryError::from(err).into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()["retry-after"], "7");
    }
}

#[tokio::test]
async fn hold_mode_waits_for_the_gate_to_open() {
    let g = gate(ClosedWrites::Hold, Duration::from_secs(5));
    g.close_now("gc");
    let g2 = Arc::clone(&g);
    let waiter = tokio::spawn(async move {
        g2.admit(&Method::PUT, &route("/v2/a/manifests/v1"))
            .await
            .map(|p| p.is_some())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiter.is_finished());
    assert_eq!(g.status().writes_held, 1);
    g.open();
    assert!(waiter.await.unwrap().unwrap());
    assert_eq!(g.status().writes_held, 0);
}

#[tokio::test]
async fn hold_mode_gives_up_after_hold_timeout() {
    let g = gate(ClosedWrites::Hold, Duration::from_millis(100));
    g.close_now("gc");
    let r = g.admit(&Method::PUT, &route("/v2/a/manifests/v1")).await;
    assert!(matches!(r, Err(GateError::HoldTimeout { .. })));
}

#[tokio::test]
async fn drain_waits_for_writes_in_flight() {
    let g = gate(ClosedWrites::Reject, Duration::from_secs(1));
    let pass = g
        .admit(&Method::DELETE, &route("/v2/a/manifests/v1"))
        .await
        .unwrap()
        .unwrap();
    let g2 = Arc::clone(&g);
    let drain = tokio::spawn(async move { g2.drain_and_close("gc", Duration::from_secs(5)).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(g.state(), GateState::Draining);
    drop(pass);
    let report = drain.await.unwrap();
    assert!(!report.timed_out);
    assert!(report.waited_ms >= 100);
    assert_eq!(g.state(), GateState::Closed);
}

#[tokio::test]
async fn background_writes_enter_only_an_open_gate_and_are_drained() {
    let g = gate(ClosedWrites::Reject, Duration::from_secs(1));
    let guard = g.enter_if_open().expect("an open gate lets it in");
    let g2 = Arc::clone(&g);
    let drain = tokio::spawn(async move { g2.drain_and_close("gc", Duration::from_secs(5)).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(g.state(), GateState::Draining);
    assert!(g.enter_if_open().is_none(), "a draining gate does not");
    drop(guard);
    let report = drain.await.unwrap();
    assert!(!report.timed_out);
    assert!(g.enter_if_open().is_none(), "a closed gate does not");
    g.open();
    assert!(g.enter_if_open().is_some());
}

#[tokio::test]
async fn draining_lets_pushes_under_way_finish_and_stops_new_ones() {
    let g = gate(ClosedWrites::Reject, Duration::from_secs(1));
    // A push in repository `a` has started a session.
    let pass = g
        .admit(&Method::POST, &route("/v2/a/blobs/uploads/"))
        .await
        .unwrap()
        .unwrap();
    drop(pass.finish(upload_started("s1")));
    let g2 = Arc::clone(&g);
    let drain = tokio::spawn(async move { g2.drain_and_close("gc", Duration::from_secs(5)).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(g.state(), GateState::Draining);
    assert_eq!(g.status().pushes_under_way, ["a"]);

    // A new push elsewhere is stopped at its first request.
    assert!(g
        .admit(&Method::POST, &route("/v2/b/blobs/uploads/"))
        .await
        .is_err());
    // The push under way completes its blob, starts another, writes its manifest.
    let p = g
        .admit(&Method::PUT, &route("/v2/a/blobs/uploads/s1"))
        .await
        .unwrap()
        .unwrap();
    drop(p.finish(status(StatusCode::CREATED)));
    let p = g
        .admit(&Method::POST, &route("/v2/a/blobs/uploads/"))
        .await
        .unwrap()
        .unwrap();
    drop(p.finish(upload_started("s2")));
    let p = g
        .admit(&Method::PUT, &route("/v2/a/blobs/uploads/s2"))
        .await
        .unwrap()
        .unwrap();
    drop(p.finish(status(StatusCode::CREATED)));
    assert!(
        !drain.is_finished(),
        "blobs without a manifest: still a push"
    );
    let p = g
        .admit(&Method::PUT, &route("/v2/a/manifests/v1"))
        .await
        .unwrap()
        .unwrap();
    drop(p.finish(status(StatusCode::CREATED)));
    let report = drain.await.unwrap();
    assert!(!report.timed_out, "{report:?}");
    assert_eq!(g.state(), GateState::Closed);
    // Unknown sessions and deletes do not pass a draining or closed gate.
    assert!(g
        .admit(&Method::PATCH, &route("/v2/a/blobs/uploads/other"))
        .await
        .is_err());
}

#[tokio::test]
async fn drain_timeout_closes_with_pushes_left() {
    let g = gate(ClosedWrites::Reject, Duration::from_secs(1));
    let pass = g
        .admit(&Method::POST, &route("/v2/a/blobs/uploads/"))
        .await
        .unwrap()
        .unwrap();
    drop(pass.finish(upload_started("s1")));
    let report = g.drain_and_close("gc", Duration::from_millis(100)).await;
    assert!(report.timed_out);
    assert_eq!(report.pushes_left, ["a"]);
    assert_eq!(g.state(), GateState::Closed);
}

#[tokio::test]
async fn a_held_write_released_by_an_open_is_not_starved_by_the_next_drain() {
    let g = gate(ClosedWrites::Hold, Duration::from_secs(5));
    g.close_now("gc 1");
    let g2 = Arc::clone(&g);
    let waiter = tokio::spawn(async move {
        g2.admit(&Method::DELETE, &route("/v2/a/manifests/v1"))
            .await
            .map(|p| p.is_some())
            .map_err(|e| e.to_string())
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The gate opens and, before the held write runs, the next GC drains.
    assert_eq!(g.status().writes_held, 1);
    g.open();
    let report = g.drain_and_close("gc 2", Duration::from_secs(5)).await;
    assert!(!report.timed_out && !report.cancelled, "{report:?}");
    assert_eq!(g.state(), GateState::Closed);
    // The released write ran during that drain instead of waiting for the
    // next opening (or its hold_timeout).
    let r = tokio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .expect("the released write is not held again");
    assert_eq!(r.unwrap(), Ok(true));
}

#[tokio::test]
async fn opening_during_a_drain_cancels_it_and_leaves_the_gate_open() {
    let g = gate(ClosedWrites::Reject, Duration::from_secs(1));
    let pass = g
        .admit(&Method::DELETE, &route("/v2/a/manifests/v1"))
        .await
        .unwrap()
        .unwrap();
    let g2 = Arc::clone(&g);
    let drain =
        tokio::spawn(async move { g2.drain_and_close("backup", Duration::from_secs(5)).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    g.open();
    let report = drain.await.unwrap();
    assert!(report.cancelled, "{report:?}");
    assert_eq!(g.state(), GateState::Open);
    drop(pass);
}
