//! The agent's side of the connection (worker-protocol.md §1, §3–§7): connecting, `hello`, reading frames in
//! order, `welcome` (resume, cancel, resend), close codes, disconnects and the reconnect schedule.
//!
//! Not here: the transport itself ([`crate::session`]) and what job frames do ([`super::jobs`]).

use super::*;

impl Agent {
    // ----- connection --------------------------------------------------------------------------------------

    pub(super) fn start_connecting(&mut self) {
        let url = self.settings.url.clone();
        let identity = self.identity.clone();
        let max_frame_bytes = self.max_frame_bytes;
        self.link = Link::Connecting {
            task: tokio::spawn(
                async move { session::connect(&url, &identity, max_frame_bytes).await },
            ),
        };
    }

    pub(super) async fn on_link_event(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Connected(Ok(stream)) => self.on_connected(stream),
            LinkEvent::Connected(Err(error)) => {
                match &error {
                    ConnectError::Refused { status, detail } => {
                        tracing::error!(status, detail = %detail, "coordinator refused the worker")
                    }
                    other => tracing::warn!(error = %other, "connecting to the coordinator failed"),
                }
                self.schedule_reconnect(Retry::Backoff, None);
            }
            LinkEvent::Message(message) => self.on_message(message).await,
            LinkEvent::WriterEnded => self.disconnect(
                "sending to the coordinator failed".to_owned(),
                None,
                Retry::Backoff,
            ),
        }
    }

    pub(super) fn on_connected(&mut self, stream: Box<WsStream>) {
        let (sink, stream) = (*stream).split();
        let (outbound, queue) = mpsc::channel(OUTBOUND_CAPACITY);
        let writer = self.tasks.spawn(session::write_loop(sink, queue));
        let now = Instant::now();
        let hello = self.hello();
        let mut connection = Connection {
            stream,
            outbound,
            writer,
            opened_at: now,
            last_frame: now,
            hello_paths: hello.paths.clone(),
            hello_binaries: hello.binaries.clone(),
            session: None,
            overloaded: false,
            writer_done: false,
        };
        tracing::debug!(url = %self.settings.url, held_jobs = hello.jobs.len(), "sending hello");
        connection.send(&WorkerMessage::Hello(hello));
        self.reconnect_after = None;
        self.link = Link::Up(Box::new(connection));
    }

    pub(super) fn hello(&self) -> Hello {
        let jobs = self
            .jobs
            .iter()
            .map(|(job, held)| HeldJobEntry {
                job_id: job.job_id,
                attempt: job.attempt,
                state: if held.is_running() {
                    HeldState::Running
                } else {
                    HeldState::Finished
                },
            })
            .collect();
        Hello {
            worker_id: self.identity.client_id.clone(),
            version: protocol::VERSION.to_owned(),
            protocol_version: PROTOCOL_VERSION,
            host: self.settings.host.clone(),
            binaries: self.health.usable_binaries(),
            binary_versions: self.health.binary_versions(),
            paths: self.health.healthy_paths(),
            capabilities: self.settings.capabilities.clone(),
            max_concurrent_jobs: self.settings.max_concurrent_jobs,
            status: if self.drain.is_some() {
                "draining"
            } else {
                "online"
            }
            .to_owned(),
            jobs,
        }
    }

    /// Drops the current connection, logs `disconnected`, and schedules the reconnect.
    pub(super) fn disconnect(&mut self, error: String, close_code: Option<u16>, retry: Retry) {
        let session = match &self.link {
            Link::Up(connection) => connection
                .session
                .as_ref()
                .map(|session| (session.id, session.established_at.elapsed())),
            _ => None,
        };
        let session_id = session.map(|(id, _)| id.to_string()).unwrap_or_default();
        match close_code {
            Some(code) => {
                tracing::warn!(close_code = code, reason = %error, session_id = %session_id, "disconnected")
            }
            None => tracing::warn!(error = %error, session_id = %session_id, "disconnected"),
        }
        let session_lasted = session.map(|(_, lasted)| lasted);
        if let Link::Up(connection) = std::mem::replace(
            &mut self.link,
            Link::Down {
                retry_at: Instant::now(),
            },
        ) {
            let Connection {
                outbound,
                mut writer,
                writer_done,
                ..
            } = *connection;
            drop(outbound);
            // The writer sends what is queued (an error frame, a Close) and ends; a stuck one is stopped.
            if !writer_done {
                self.tasks.spawn(async move {
                    if tokio::time::timeout(WRITER_FINISH_WAIT, &mut writer)
                        .await
                        .is_err()
                    {
                        writer.abort();
                    }
                });
            }
        }
        self.schedule_reconnect(retry, session_lasted);
    }

    pub(super) fn schedule_reconnect(&mut self, retry: Retry, session_lasted: Option<Duration>) {
        if session_lasted.is_some_and(|lasted| lasted >= BACKOFF_RESET_AFTER) {
            self.backoff.reset();
        }
        let delay = match (self.reconnect_after.take(), retry) {
            (Some(after), _) => after,
            (None, Retry::Now) => Duration::ZERO,
            (None, Retry::Backoff) => self.backoff.next_delay(),
        };
        tracing::info!(
            delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "reconnecting"
        );
        self.link = Link::Down {
            retry_at: Instant::now() + delay,
        };
    }

    pub(super) async fn on_message(
        &mut self,
        message: Option<Result<Message, tungstenite::Error>>,
    ) {
        let message = match message {
            None => {
                return self.disconnect("the connection ended".to_owned(), None, Retry::Backoff);
            }
            Some(Err(error)) => return self.disconnect(error.to_string(), None, Retry::Backoff),
            Some(Ok(message)) => message,
        };
        let now = Instant::now();
        self.last_contact = Some(now);
        if let Link::Up(connection) = &mut self.link {
            connection.last_frame = now;
        }
        match message {
            Message::Binary(bytes) => match decode_coordinator_message(&bytes) {
                Ok(frame) => self.on_frame(frame).await,
                Err(DecodeError::UnknownType(kind)) => {
                    tracing::warn!(code = protocol::ws::error_code::UNKNOWN_MESSAGE, message_type = %kind,
                        "unknown message type from the coordinator")
                }
                Err(DecodeError::Malformed(detail)) => {
                    if let Link::Up(connection) = &mut self.link {
                        let _ = connection.outbound.try_send(error_frame(
                            protocol::ws::error_code::MALFORMED_MESSAGE,
                            &detail,
                        ));
                        let _ = connection.outbound.try_send(Outbound::Close {
                            code: close::INVALID_PAYLOAD,
                            reason: "malformed message".to_owned(),
                        });
                    }
                    self.disconnect(
                        format!("malformed message from the coordinator: {detail}"),
                        None,
                        Retry::Backoff,
                    );
                }
            },
            Message::Text(_) => {
                if let Link::Up(connection) = &mut self.link {
                    let _ = connection.outbound.try_send(Outbound::Close {
                        code: close::UNSUPPORTED_DATA,
                        reason: "text frame".to_owned(),
                    });
                }
                self.disconnect(
                    "the coordinator sent a text frame".to_owned(),
                    None,
                    Retry::Backoff,
                );
            }
            // tungstenite answers a Ping with a Pong on its own; both count as signs of life.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            Message::Close(frame) => self.on_close(frame),
        }
    }

    pub(super) fn on_close(&mut self, frame: Option<tungstenite::protocol::CloseFrame>) {
        let (code, reason) = match &frame {
            Some(frame) => (u16::from(frame.code), frame.reason.to_string()),
            None => (1005, String::new()),
        };
        let explained = || {
            self.last_error
                .as_ref()
                .map_or_else(|| reason.clone(), |error| error.message.clone())
        };
        match code {
            close::VERSION_UNSUPPORTED => {
                let message = explained();
                tracing::error!(close_code = code, message = %message, "the coordinator does not support this protocol version");
                self.exit = Some(Err(RunError::VersionUnsupported { message }));
            }
            close::INVALID_HELLO => {
                let message = explained();
                tracing::error!(close_code = code, message = %message, "the coordinator refused the hello");
                self.exit = Some(Err(RunError::InvalidHello { message }));
            }
            close::REPLACED => {
                let error = RunError::Replaced {
                    worker_id: self.identity.client_id.clone(),
                };
                tracing::error!(close_code = code, "{error}");
                self.give_up_all_jobs();
                self.exit = Some(Err(error));
            }
            close::HEARTBEAT_TIMEOUT => self.disconnect(reason, Some(code), Retry::Now),
            close::IDENTITY_REVOKED => {
                tracing::error!(
                    close_code = code,
                    worker_id = %self.identity.client_id,
                    "the coordinator deleted this identity or rotated its key"
                );
                self.disconnect(reason, Some(code), Retry::Backoff);
            }
            _ => self.disconnect(reason, Some(code), Retry::Backoff),
        }
    }

    // ----- frames ------------------------------------------------------------------------------------------

    pub(super) async fn on_frame(&mut self, frame: CoordinatorMessage) {
        let established = self.link.session().is_some();
        match frame {
            CoordinatorMessage::Welcome(welcome) if !established => self.on_welcome(welcome),
            CoordinatorMessage::Error(error) => {
                if error.fatal {
                    tracing::error!(code = %error.code, message = %error.message, "error from the coordinator");
                } else {
                    tracing::warn!(code = %error.code, message = %error.message, "error from the coordinator");
                }
                self.last_error = Some(error);
            }
            CoordinatorMessage::Shutdown(shutdown) => {
                tracing::info!(reason = %shutdown.reason, reconnect_after_ms = shutdown.reconnect_after_ms,
                    "the coordinator is shutting down");
                self.reconnect_after = Some(Duration::from_millis(u64::from(
                    shutdown.reconnect_after_ms,
                )));
            }
            other if !established => {
                tracing::warn!(
                    message_type = other.type_name(),
                    "frame before welcome ignored"
                );
            }
            CoordinatorMessage::Welcome(_) => tracing::warn!("second welcome ignored"),
            CoordinatorMessage::HeartbeatAck(_) => {}
            CoordinatorMessage::AssignJob(assign) => self.on_assign(assign).await,
            CoordinatorMessage::CancelJob(cancel) => self.on_cancel(cancel),
            CoordinatorMessage::JobStdin(frame) => self.on_stdin(frame),
            CoordinatorMessage::Ack(ack) => {
                let job = JobRef {
                    job_id: ack.job_id,
                    attempt: ack.attempt,
                };
                match self.jobs.get(&job) {
                    Some(held) if !held.is_running() => {
                        tracing::debug!(job_id = %job.job_id, attempt = job.attempt, result = ?ack.result, "report acknowledged");
                        self.jobs.remove(&job);
                    }
                    Some(_) => {
                        tracing::warn!(job_id = %job.job_id, attempt = job.attempt, "ack for a running job ignored")
                    }
                    None => {}
                }
            }
            CoordinatorMessage::Drain(drain) => {
                if self.drain.is_none() {
                    tracing::info!(reason = %drain.reason, "the coordinator asked this worker to drain");
                    self.start_drain(&drain.reason, false);
                }
            }
        }
    }

    pub(super) fn on_welcome(&mut self, welcome: Welcome) {
        if welcome.protocol_version.major != PROTOCOL_VERSION.major {
            tracing::warn!(protocol_version = %welcome.protocol_version, "welcome with another major version");
        }
        let skew = welcome.server_time_ms - crate::now_ms();
        if skew.abs() > CLOCK_SKEW_WARNING_MS {
            tracing::warn!(
                difference_ms = skew,
                "this worker's clock differs from the coordinator's"
            );
        }
        let heartbeat_interval =
            Duration::from_millis(u64::from(welcome.heartbeat_interval_ms.max(1)));
        self.lease = Some(LeaseTerms {
            heartbeat_interval,
            lease: Duration::from_millis(u64::from(welcome.lease_ms)),
        });
        if welcome.max_frame_bytes > 0 {
            self.max_frame_bytes = welcome.max_frame_bytes as usize;
        }
        tracing::info!(
            url = %self.settings.url,
            session_id = %welcome.session_id,
            protocol_version = %welcome.protocol_version,
            lease_ms = welcome.lease_ms,
            "connected"
        );
        let offered = self.health.usable_binaries();
        let refused: Vec<&String> = offered
            .iter()
            .filter(|name| !welcome.binaries.contains(name))
            .collect();
        if !refused.is_empty() {
            tracing::info!(binaries = ?refused, "binaries not in the coordinator's allowed_binaries");
        }
        for canceled in &welcome.cancel {
            let job = JobRef {
                job_id: canceled.job_id,
                attempt: canceled.attempt,
            };
            if let Some(held) = self.jobs.remove(&job) {
                tracing::info!(job_id = %job.job_id, attempt = job.attempt, reason = %canceled.reason,
                    "held job given up at the coordinator's request");
                held.kill();
            }
        }
        for resumed in &welcome.resumed {
            let job = JobRef {
                job_id: resumed.job_id,
                attempt: resumed.attempt,
            };
            if let Some(held) = self.jobs.get(&job) {
                let first = held.output.resend_from(resumed.next_output_seq);
                tracing::debug!(job_id = %job.job_id, attempt = job.attempt,
                    next_output_seq = resumed.next_output_seq, first_resent = first, "job resumed");
            }
        }
        for (job, held) in self.jobs.iter_mut() {
            if !welcome
                .resumed
                .iter()
                .any(|resumed| resumed.job_id == job.job_id && resumed.attempt == job.attempt)
            {
                // Kept: the coordinator's fencing answers any frame about it (`cancel_job`, `ack {stale}`).
                tracing::warn!(job_id = %job.job_id, attempt = job.attempt, "held job neither resumed nor canceled");
            }
            if let JobPhase::Finished { sent, .. } = &mut held.phase {
                *sent = false;
            }
        }
        let now = Instant::now();
        let interval = self.heartbeat_interval(heartbeat_interval);
        if let Link::Up(connection) = &mut self.link {
            connection.session = Some(Session {
                id: welcome.session_id,
                heartbeat_interval,
                established_at: now,
                heartbeat_seq: 0,
                next_heartbeat: now + session::jittered(interval, 0.1),
                reported_paths: std::mem::take(&mut connection.hello_paths),
                reported_binaries: std::mem::take(&mut connection.hello_binaries),
            });
            tracing::debug!(session_id = %welcome.session_id, opened_ms = connection.opened_at.elapsed().as_millis() as u64, "session established");
        }
        // Resent output, then the outbox, right after welcome.
        self.flush();
        self.next_flush = now + self.settings.flush_interval;
    }
}

/// An `error` frame from the worker (only `malformed_message`, before a close 1007). `WorkerMessage` has no
/// `error` variant; the message has the same shape in both directions (worker-protocol.md §5.9), so the
/// coordinator's type encodes it.
fn error_frame(code: &str, message: &str) -> Outbound {
    Outbound::Frame(protocol::ws::encode(&CoordinatorMessage::Error(
        ErrorFrame {
            code: code.to_owned(),
            message: message.to_owned(),
            job_id: None,
            attempt: None,
            fatal: true,
        },
    )))
}
