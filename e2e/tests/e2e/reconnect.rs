//! Connections and processes that go away: a cut connection resumes the same attempt, a restarted worker loses
//! its attempt at `hello`, a restarted coordinator gets the held `job_finished` exactly once.

use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use protocol::rest::JobStatus;

use super::transcode::status_history;
use super::{FAST, Farm, make_clip, slow_job};

/// A TCP relay on 127.0.0.1 in front of the coordinator whose open connections a test can cut.
struct Relay {
    port: u16,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    _accept: JoinHandle<()>,
}

impl Relay {
    async fn start(target: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let list = connections.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let handle = tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
                list.lock().await.push(handle);
            }
        });
        Relay {
            port,
            connections,
            _accept: accept,
        }
    }

    /// Closes every open connection; new ones are still accepted.
    async fn cut(&self) {
        for handle in self.connections.lock().await.drain(..) {
            handle.abort();
        }
    }
}

/// The numbers after `frame=` in the stored stderr, in order (ffmpeg's stats lines).
async fn frame_counters(farm: &Farm, id: protocol::JobId) -> Vec<u64> {
    let logs = farm.api.logs(id, None, None).await.unwrap();
    logs.logs
        .iter()
        .filter_map(|entry| entry.content.trim_start().strip_prefix("frame="))
        .filter_map(|rest| rest.split_whitespace().next().and_then(|n| n.parse().ok()))
        .collect()
}

#[tokio::test]
async fn a_cut_connection_resumes_the_same_attempt_without_duplicated_output() {
    let farm = Farm::start(FAST).await;
    make_clip(&farm.media.join("long.mp4"), 4).await;
    let relay = Relay::start(farm.port).await;
    let _worker = farm
        .worker_via("worker01", &[("Media", &farm.media)], 1, relay.port, "")
        .await;
    let id = farm.submit(&slow_job("long.mp4", "cut.mp4")).await;
    farm.wait_job(id, 30, "running", |job| job.status == JobStatus::Running)
        .await;
    relay.cut().await;
    super::eventually(10, "worker01 reconnected", || async {
        farm.api
            .worker("worker01")
            .await
            .is_ok_and(|w| w.status == protocol::rest::WorkerStatus::Online)
    })
    .await;
    let done = farm.wait_terminal(id, 60).await;
    assert_eq!(
        (done.status, done.attempt, done.runs),
        (JobStatus::Completed, 1, 1),
        "{done:?}"
    );
    let logs = farm.api.logs(id, None, None).await.unwrap();
    let banners = logs
        .logs
        .iter()
        .filter(|entry| entry.content.starts_with("Input #0"))
        .count();
    assert_eq!(banners, 1, "the output was not duplicated");
    // ffmpeg repeats its last stats line in its final report; every other one must appear once, in order.
    let frames = frame_counters(&farm, id).await;
    let body = &frames[..frames.len().saturating_sub(1)];
    assert!(
        body.windows(2).all(|pair| pair[0] < pair[1]),
        "stats lines once each, in order: {frames:?}"
    );
}

#[tokio::test]
async fn a_restarted_worker_process_loses_its_attempt_which_completes_as_attempt_2() {
    let farm = Farm::start(FAST).await;
    make_clip(&farm.media.join("long.mp4"), 4).await;
    let mut worker = farm.worker("worker01", &[("Media", &farm.media)], 1).await;
    let id = farm.submit(&slow_job("long.mp4", "restart.mp4")).await;
    farm.wait_job(id, 30, "running", |job| job.status == JobStatus::Running)
        .await;
    worker.kill9().await;
    let _again = super::spawn_worker(
        "worker01",
        &farm.dir.path().join("worker01.yaml"),
        &farm.dir.path().join("worker01-2.log"),
    );
    let done = farm.wait_terminal(id, 60).await;
    assert_eq!(
        (done.status, done.attempt),
        (JobStatus::Completed, 2),
        "{done:?}"
    );
    let history = status_history(&farm, id).await;
    assert!(
        history.contains(&(JobStatus::Pending, 1)),
        "lost at hello and requeued: {history:?}"
    );
}

async fn finished_job_reaches_a_restarted_coordinator_once(kill9: bool) {
    // A lease long enough (1 s × 5 × 3 = 15 s) that the worker keeps its report while the coordinator is down.
    let settings = "worker_session:\n  heartbeat_interval: 1\n  missed_heartbeats: 5\njanitor:\n  interval: 1\n  jitter: 0\n  worker_threshold_factor: 3\n";
    let mut farm = Farm::start(settings).await;
    make_clip(&farm.media.join("long.mp4"), 2).await;
    let _worker = farm.worker("worker01", &[("Media", &farm.media)], 1).await;
    let id = farm.submit(&slow_job("long.mp4", "outbox.mp4")).await;
    farm.wait_job(id, 30, "running", |job| job.status == JobStatus::Running)
        .await;
    farm.stop_coordinator(kill9).await;
    // The job ends while the coordinator is down: its job_finished waits in the worker's outbox.
    let needle = farm.media.join("outbox.mp4").display().to_string();
    super::eventually(30, "the job's ffmpeg exits", || async {
        super::processes_with(&needle).is_empty()
    })
    .await;
    farm.start_coordinator().await;
    let done = farm.wait_terminal(id, 60).await;
    assert_eq!(
        (done.status, done.exit_code, done.attempt, done.runs),
        (JobStatus::Completed, Some(0), 1, 1),
        "{done:?}"
    );
    let history = status_history(&farm, id).await;
    let terminal = history
        .iter()
        .filter(|(status, _)| status.is_terminal())
        .count();
    assert_eq!(terminal, 1, "the result arrived exactly once: {history:?}");
    super::eventually(10, "worker01 back online", || async {
        farm.api
            .worker("worker01")
            .await
            .is_ok_and(|w| w.status == protocol::rest::WorkerStatus::Online)
    })
    .await;
}

#[tokio::test]
async fn a_held_result_reaches_a_coordinator_restarted_after_kill_9_once() {
    finished_job_reaches_a_restarted_coordinator_once(true).await;
}

#[tokio::test]
async fn a_held_result_reaches_a_coordinator_restarted_after_sigterm_once() {
    finished_job_reaches_a_restarted_coordinator_once(false).await;
}
