//! Wire-format tests: every worker frame round-trips and has a hex snapshot of its MessagePack bytes; REST bodies
//! have JSON snapshots. A change to any of these snapshots is a change of the wire format.

extern crate dffmpeg_protocol as protocol;

use std::collections::BTreeMap;

use serde_bytes::ByteBuf;
use time::macros::datetime;

use protocol::rest::{
    CommandResponse, EventLine, JobLine, JobRecord, JobStatus, LogEntry, Message, MessagePayload,
    OutputStream, Progress, TransportMetadata, WorkerInfo, WorkerStatus,
};
use protocol::ws::*;
use protocol::{ErrorBody, ErrorCode, EventId, JobId, SessionId, Ulid};

fn job() -> JobId {
    JobId::parse("01JDQ3V6K9Z8Y7X6W5V4T3S2R1").unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn worker_frames() -> Vec<(&'static str, WorkerMessage)> {
    vec![
        (
            "hello",
            WorkerMessage::Hello(Hello {
                worker_id: "worker01".into(),
                version: "0.1.0".into(),
                protocol_version: PROTOCOL_VERSION,
                host: Some("nas".into()),
                binaries: vec!["ffmpeg".into(), "ffprobe".into()],
                binary_versions: Some(BTreeMap::from([(
                    "ffmpeg".into(),
                    "ffmpeg version 7.0".into(),
                )])),
                paths: vec!["Media".into()],
                capabilities: vec!["vaapi".into()],
                max_concurrent_jobs: 2,
                status: "online".into(),
                jobs: vec![HeldJob {
                    job_id: job(),
                    attempt: 3,
                    state: HeldState::Finished,
                }],
            }),
        ),
        (
            "heartbeat",
            WorkerMessage::Heartbeat(Heartbeat {
                seq: 1,
                jobs: vec![],
                paths: None,
                binaries: None,
            }),
        ),
        (
            "heartbeat_with_changes",
            WorkerMessage::Heartbeat(Heartbeat {
                seq: 7,
                jobs: vec![JobRef {
                    job_id: job(),
                    attempt: 1,
                }],
                paths: Some(vec!["Media".into()]),
                binaries: Some(vec!["ffmpeg".into()]),
            }),
        ),
        (
            "job_accepted",
            WorkerMessage::JobAccepted(JobAccepted {
                job_id: job(),
                attempt: 1,
                pid: Some(4242),
                started_at_ms: 1_795_544_728_000,
            }),
        ),
        (
            "job_rejected",
            WorkerMessage::JobRejected(JobRejected {
                job_id: job(),
                attempt: 1,
                code: "no_capacity".into(),
                message: "no free slot".into(),
            }),
        ),
        (
            "job_logs",
            WorkerMessage::JobLogs(JobLogs {
                job_id: job(),
                attempt: 1,
                chunks: vec![OutputChunk {
                    seq: 0,
                    stream: OutputStream::Stderr,
                    time_ms: 1_795_544_728_100,
                    data: ByteBuf::from(b"frame=1\r".to_vec()),
                }],
                dropped_bytes: Some(10),
            }),
        ),
        (
            "job_progress",
            WorkerMessage::JobProgress(JobProgress {
                job_id: job(),
                attempt: 1,
                time_ms: 1_795_544_728_500,
                frame: Some(112),
                fps: Some(48.5),
                out_time_us: Some(4_480_000),
                speed: Some(1.5),
                bitrate_kbps: Some(812.25),
                total_size: Some(455_212),
                duration_us: Some(10_000_000),
            }),
        ),
        (
            "job_finished",
            WorkerMessage::JobFinished(JobFinished {
                job_id: job(),
                attempt: 1,
                status: FinishedStatus::Failed,
                exit_code: Some(137),
                signal: Some(9),
                error: None,
                finished_at_ms: 1_795_544_730_000,
                output_seq_end: 42,
            }),
        ),
        (
            "job_finished_error",
            WorkerMessage::JobFinished(JobFinished {
                job_id: job(),
                attempt: 1,
                status: FinishedStatus::Failed,
                exit_code: None,
                signal: None,
                error: Some(JobError {
                    code: "path_escape".into(),
                    message: "argument 2 escapes Media".into(),
                }),
                finished_at_ms: 1_795_544_730_000,
                output_seq_end: 0,
            }),
        ),
        (
            "job_abandoned",
            WorkerMessage::JobAbandoned(JobAbandoned {
                job_id: job(),
                attempt: 1,
                reason: "worker_shutdown".into(),
                message: "second SIGTERM".into(),
            }),
        ),
        (
            "stdin_written",
            WorkerMessage::StdinWritten(StdinWritten {
                job_id: job(),
                attempt: 1,
                offset: 4096,
                closed: false,
            }),
        ),
        (
            "drain",
            WorkerMessage::Drain(WorkerDrain {
                reason: Some("SIGTERM".into()),
            }),
        ),
    ]
}

fn coordinator_frames() -> Vec<(&'static str, CoordinatorMessage)> {
    vec![
        (
            "welcome",
            CoordinatorMessage::Welcome(Welcome {
                session_id: SessionId(Ulid::parse("01JDQ3V6KA0M6QW8N4C1ZV3B7E").unwrap()),
                protocol_version: PROTOCOL_VERSION,
                heartbeat_interval_ms: 5000,
                lease_ms: 22_500,
                server_time_ms: 1_795_544_728_000,
                max_frame_bytes: 1 << 20,
                binaries: vec!["ffmpeg".into()],
                status: "online".into(),
                resumed: vec![ResumedJob {
                    job_id: job(),
                    attempt: 3,
                    next_output_seq: 40,
                }],
                cancel: vec![CanceledJob {
                    job_id: job(),
                    attempt: 1,
                    reason: "stale_attempt".into(),
                }],
            }),
        ),
        (
            "heartbeat_ack",
            CoordinatorMessage::HeartbeatAck(HeartbeatAck {
                seq: 1,
                server_time_ms: 1_795_544_728_000,
            }),
        ),
        (
            "assign_job",
            CoordinatorMessage::AssignJob(AssignJob {
                job_id: job(),
                attempt: 1,
                binary: "ffmpeg".into(),
                arguments: vec!["-i".into(), "$Media/in.mp4".into(), "out.mp4".into()],
                paths: vec!["Media".into()],
                working_directory: Some("$Media".into()),
                heartbeat_interval_ms: 5000,
                stdin: false,
                priority: 0,
                requester_id: "client01".into(),
            }),
        ),
        (
            "cancel_job",
            CoordinatorMessage::CancelJob(CancelJob {
                job_id: job(),
                attempt: 1,
                reason: "requested".into(),
            }),
        ),
        (
            "job_stdin",
            CoordinatorMessage::JobStdin(JobStdin {
                job_id: job(),
                attempt: 1,
                offset: 0,
                data: ByteBuf::from(b"q".to_vec()),
                eof: false,
            }),
        ),
        (
            "ack",
            CoordinatorMessage::Ack(Ack {
                job_id: job(),
                attempt: 1,
                result: AckResult::Accepted,
            }),
        ),
        (
            "drain",
            CoordinatorMessage::Drain(DrainRequest {
                reason: "dffmpeg-admin worker drain".into(),
            }),
        ),
        (
            "shutdown",
            CoordinatorMessage::Shutdown(Shutdown {
                reason: "stopping".into(),
                reconnect_after_ms: 1000,
            }),
        ),
        (
            "error",
            CoordinatorMessage::Error(ErrorFrame {
                code: "malformed_message".into(),
                message: "unexpected end of data".into(),
                job_id: None,
                attempt: None,
                fatal: true,
            }),
        ),
    ]
}

#[test]
fn every_worker_frame_round_trips_with_a_stable_encoding() {
    let frames = worker_frames();
    let mut names: Vec<&str> = frames.iter().map(|(_, frame)| frame.type_name()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(
        names.len(),
        WorkerMessage::TYPES.len(),
        "every type is covered"
    );
    for (name, frame) in frames {
        let bytes = encode(&frame);
        assert_eq!(
            decode_worker_message(&bytes).unwrap(),
            frame,
            "{name} round-trips"
        );
        insta::assert_snapshot!(format!("worker_{name}"), hex(&bytes));
    }
}

#[test]
fn every_coordinator_frame_round_trips_with_a_stable_encoding() {
    let frames = coordinator_frames();
    assert_eq!(
        frames.len(),
        CoordinatorMessage::TYPES.len(),
        "every type is covered"
    );
    for (name, frame) in frames {
        let bytes = encode(&frame);
        assert_eq!(
            decode_coordinator_message(&bytes).unwrap(),
            frame,
            "{name} round-trips"
        );
        insta::assert_snapshot!(format!("coordinator_{name}"), hex(&bytes));
    }
}

#[test]
fn unknown_fields_are_ignored_and_the_hello_head_is_version_stable() {
    let with_extra = rmp_serde::to_vec_named(&serde_json::json!({
        "type": "drain", "reason": "x", "added_in_1_1": [1, 2, 3]
    }))
    .unwrap();
    assert_eq!(
        decode_worker_message(&with_extra).unwrap(),
        WorkerMessage::Drain(WorkerDrain {
            reason: Some("x".into())
        })
    );
    let future = rmp_serde::to_vec_named(&serde_json::json!({
        "type": "hello", "worker_id": "w1", "protocol_version": {"major": 2, "minor": 5}, "shape": "new"
    }))
    .unwrap();
    let head = decode_hello_head(&future).unwrap();
    assert_eq!(
        (head.worker_id.as_str(), head.protocol_version.major),
        ("w1", 2)
    );
    assert!(matches!(
        decode_worker_message(&future),
        Err(DecodeError::Malformed(_))
    ));
}

fn record() -> JobRecord {
    JobRecord {
        transport: "http_polling".into(),
        transport_metadata: TransportMetadata {
            path: format!("/poll/jobs/{}", job()),
        },
        job_id: job(),
        requester_id: "client01".into(),
        binary_name: "ffmpeg".into(),
        arguments: vec![
            "-y".into(),
            "-i".into(),
            "$Media/input.mp4".into(),
            "out.mp4".into(),
        ],
        paths: vec!["Media".into()],
        working_directory: Some("$Media".into()),
        status: JobStatus::Running,
        exit_code: None,
        worker_id: Some("worker01".into()),
        created_at: datetime!(2026-11-24 18:24:07.490073 UTC),
        last_update: datetime!(2026-11-24 18:24:07.611402 UTC),
        worker_last_seen: Some(datetime!(2026-11-24 18:24:09.002113 UTC)),
        client_last_seen: Some(datetime!(2026-11-24 18:24:08.998001 UTC)),
        heartbeat_interval: 5,
        monitor: true,
        priority: 0,
        idempotency_key: None,
        attempt: 1,
        runs: 1,
        stdin: false,
        started_at: Some(datetime!(2026-11-24 18:24:07.611402 UTC)),
        finished_at: None,
        progress: Some(Progress {
            frame: Some(112),
            fps: Some(48.2),
            out_time: Some("00:00:04.480000".into()),
            out_time_seconds: Some(4.48),
            duration_seconds: Some(10.0),
            percent: Some(44.8),
            speed: Some(1.93),
            bitrate_kbps: Some(812.4),
            size_bytes: Some(455_212),
            eta_seconds: Some(2.86),
            updated_at: datetime!(2026-11-24 18:24:09.002113 UTC),
        }),
        wait_reason: None,
        wait_detail: None,
        reason: None,
        reason_detail: None,
    }
}

#[test]
fn rest_bodies_have_stable_json() {
    insta::assert_snapshot!("rest_job_record", serde_json::to_string(&record()).unwrap());
    insta::assert_snapshot!(
        "rest_command_response",
        serde_json::to_string(&CommandResponse::ok()).unwrap()
    );
    insta::assert_snapshot!(
        "rest_error_body",
        serde_json::to_string(&ErrorBody::new(ErrorCode::JobNotFound, "Job not found")).unwrap()
    );
    let worker = WorkerInfo {
        worker_id: "worker01".into(),
        capabilities: vec![],
        binaries: vec!["ffmpeg".into(), "ffprobe".into()],
        paths: vec!["Media".into()],
        registration_interval: 5,
        version: Some("0.1.0".into()),
        status: WorkerStatus::Online,
        last_seen: datetime!(2026-11-24 18:24:48.143597 UTC),
        max_concurrent_jobs: 2,
        running_jobs: 1,
        connected_since: Some(datetime!(2026-11-24 18:20:01.000412 UTC)),
        host: Some("nas".into()),
        protocol_version: Some("1.0".into()),
    };
    insta::assert_snapshot!("rest_worker", serde_json::to_string(&worker).unwrap());
    let message = Message {
        message_id: EventId(Ulid::parse("01JDQ3V6KA0M6QW8N4C1ZV3B7E").unwrap()),
        sender_id: Some("worker01".into()),
        recipient_id: "client01".into(),
        job_id: job(),
        timestamp: datetime!(2026-11-24 18:24:07.498677 UTC),
        sent_at: None,
        message_type: "job_logs".into(),
        payload: MessagePayload::Logs(protocol::rest::JobLogsPayload {
            logs: vec![LogEntry {
                id: EventId(Ulid::parse("01JDQ3V6KA0M6QW8N4C1ZV3B7E").unwrap()),
                stream: OutputStream::Stderr,
                content: "frame=1".into(),
                timestamp: Some(datetime!(2026-11-24 18:24:07.498677 UTC)),
            }],
        }),
    };
    insta::assert_snapshot!(
        "rest_poll_message",
        serde_json::to_string(&message).unwrap()
    );
    let line = EventLine::Job(JobLine {
        job: Box::new(record()),
    });
    let text = serde_json::to_string(&line).unwrap();
    assert!(
        text.starts_with(r#"{"type":"job","job":{"transport":"http_polling""#),
        "{text}"
    );
}
