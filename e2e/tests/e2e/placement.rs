//! Placement with real workers: path variables decide where a job may go, and slots queue the rest.

use protocol::rest::{JobRequest, JobStatus};

use super::{FAST, Farm, transcode};

#[tokio::test]
async fn jobs_go_only_to_workers_with_their_variables_and_queue_for_slots() {
    let farm = Farm::start(FAST).await;
    let other = farm.dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::copy(farm.media.join("in.mp4"), other.join("in.mp4")).unwrap();
    let _media = farm.worker("worker01", &[("Media", &farm.media)], 1).await;
    let _other = farm.worker("worker02", &[("Other", &other)], 1).await;
    let mut media_jobs = Vec::new();
    let mut other_jobs = Vec::new();
    for n in 0..4 {
        media_jobs.push(farm.submit(&transcode(&format!("m{n}.mp4"))).await);
        let request = JobRequest {
            arguments: vec![
                "-y".into(),
                "-i".into(),
                "$Other/in.mp4".into(),
                "-c:v".into(),
                "mpeg4".into(),
                format!("$Other/o{n}.mp4"),
            ],
            paths: vec!["Other".into()],
            working_directory: Some("$Other".into()),
            ..transcode("unused")
        };
        other_jobs.push(farm.submit(&request).await);
    }
    for (jobs, worker, root, prefix) in [
        (&media_jobs, "worker01", &farm.media, "m"),
        (&other_jobs, "worker02", &other, "o"),
    ] {
        for (n, id) in jobs.iter().enumerate() {
            let done = farm.wait_terminal(*id, 120).await;
            assert_eq!(
                (done.status, done.worker_id.as_deref()),
                (JobStatus::Completed, Some(worker)),
                "{done:?}"
            );
            assert!(root.join(format!("{prefix}{n}.mp4")).is_file());
        }
    }
}
