//! The agent's jobs (cli.md §3.2, worker-protocol.md §4.3–§4.9, §5.3–§5.6): the checks of `assign_job` in their
//! order, spawning, cancels, stdin, the end of a job (`job_finished` into the outbox, or `job_abandoned`), and sending
//! progress, output and reports as the writer's queue allows.
//!
//! Not here: running the process ([`crate::process`]) and the connection ([`super::connection`]).

use super::*;

impl Agent {
    // ----- jobs --------------------------------------------------------------------------------------------

    pub(super) fn running_jobs(&self) -> usize {
        self.jobs.values().filter(|job| job.is_running()).count()
    }

    /// Kills every held job and discards its reports (lease lost, session replaced).
    pub(super) fn give_up_all_jobs(&mut self) {
        for held in std::mem::take(&mut self.jobs).into_values() {
            held.kill();
        }
    }

    pub(super) fn send_to_session(&mut self, message: WorkerMessage) {
        if let Some(connection) = self.link.session() {
            connection.send(&message);
        }
    }

    pub(super) fn reject(&mut self, job: JobRef, code: &str, message: String) {
        tracing::info!(job_id = %job.job_id, attempt = job.attempt, code, message = %message, "job rejected");
        self.send_to_session(WorkerMessage::JobRejected(JobRejected {
            job_id: job.job_id,
            attempt: job.attempt,
            code: code.to_owned(),
            message,
        }));
    }

    pub(super) async fn on_assign(&mut self, assign: AssignJob) {
        let job = JobRef {
            job_id: assign.job_id,
            attempt: assign.attempt,
        };
        if self.jobs.contains_key(&job) {
            tracing::warn!(job_id = %job.job_id, attempt = job.attempt, "duplicate assign_job ignored");
            return;
        }
        // An earlier attempt of the same job still here is stale: killed, its reports dropped.
        let stale: Vec<JobRef> = self
            .jobs
            .keys()
            .filter(|held| held.job_id == assign.job_id)
            .copied()
            .collect();
        for old in stale {
            if let Some(held) = self.jobs.remove(&old) {
                tracing::info!(job_id = %old.job_id, attempt = old.attempt, new_attempt = job.attempt,
                    "earlier attempt stopped");
                held.kill();
            }
        }
        if self.drain.is_some() || self.forced.is_some() {
            return self.reject(
                job,
                reject_code::DRAINING,
                "the worker is draining".to_owned(),
            );
        }
        let running = self.running_jobs();
        if running >= self.settings.max_concurrent_jobs as usize {
            return self.reject(
                job,
                reject_code::NO_CAPACITY,
                format!(
                    "all {} slots of this worker are busy",
                    self.settings.max_concurrent_jobs
                ),
            );
        }
        let Some(executable) = self.health.executable(&assign.binary).map(PathBuf::from) else {
            return self.reject(
                job,
                reject_code::BINARY_UNAVAILABLE,
                format!("binary {} is not available on this worker", assign.binary),
            );
        };
        if let Err(error) = check_executable(&executable) {
            return self.reject(
                job,
                reject_code::BINARY_UNAVAILABLE,
                format!(
                    "binary {} ({}): {error}",
                    assign.binary,
                    executable.display()
                ),
            );
        }
        if let Err(error) = self.path_roots.check_variables(&assign.paths) {
            return self.reject(job, error.code(), error.to_string());
        }
        let unhealthy: Vec<&str> = assign
            .paths
            .iter()
            .filter(|name| self.path_roots.root(name).is_none_or(|root| !root.is_dir()))
            .map(String::as_str)
            .collect();
        if !unhealthy.is_empty() {
            return self.reject(
                job,
                reject_code::PATH_VARIABLE_UNAVAILABLE,
                format!(
                    "path variables not available on this worker: {}",
                    unhealthy.join(", ")
                ),
            );
        }
        // Check 5, the argument policy: its switches are refused at start, so every job passes.
        let resolved = match self
            .path_roots
            .resolve_assignment(&assign, self.settings.default_working_directory.as_deref())
        {
            Ok(resolved) => resolved,
            Err(error) if error.is_rejection() => {
                return self.reject(job, error.code(), error.to_string());
            }
            Err(error) => {
                return self.fail_without_running(job, &assign, error.code(), error.to_string());
            }
        };
        if let Err(error) = check_working_directory(resolved.working_directory.as_deref()) {
            return self.reject(job, error.code(), error.to_string());
        }
        let command = JobCommand {
            binary_name: assign.binary.clone(),
            executable,
            arguments: resolved.arguments,
            working_directory: resolved.working_directory,
            stdin: assign.stdin,
        };
        let settings = JobSettings {
            progress: self.settings.progress,
            kill_grace: self.settings.kill_grace,
            output: self.settings.output.clone(),
            tasks: Some(self.tasks.clone()),
            ..JobSettings::default()
        };
        // The spawn goes through the core's spawner thread and takes a few milliseconds; frames wait meanwhile.
        self.spawn(job, assign, command, settings).await;
    }

    /// Starts the process; reports `job_accepted` or `job_rejected {spawn_failed}`.
    pub(super) async fn spawn(
        &mut self,
        job: JobRef,
        assign: AssignJob,
        command: JobCommand,
        settings: JobSettings,
    ) {
        let mut running = match crate::process::spawn_job(command, &settings).await {
            Ok(running) => running,
            Err(error) => {
                return self.reject(job, error.code(), error.os_error().to_string());
            }
        };
        let pid = running.pid();
        let started_at_ms = running.started_at_ms();
        let stdin = running.take_stdin().map(|pipe| {
            let (sender, receiver) = stdin::channel();
            self.tasks.spawn(stdin::write_stdin(
                job,
                pipe,
                receiver,
                self.job_events_tx.clone(),
            ));
            sender
        });
        let held = HeldJob {
            heartbeat_interval: Duration::from_millis(u64::from(assign.heartbeat_interval_ms)),
            output: running.output().clone(),
            phase: JobPhase::Running {
                control: running.control(),
                abandon: false,
                stdin,
            },
            progress: None,
            stdin_written: None,
        };
        let job_heartbeat = held.heartbeat_interval.max(MIN_JOB_HEARTBEAT);
        self.jobs.insert(job, held);
        self.tasks
            .spawn(drive_job(job, running, self.job_events_tx.clone()));
        // A job with a shorter heartbeat interval brings the next heartbeat forward.
        if let Some(session) = self
            .link
            .session()
            .and_then(|connection| connection.session.as_mut())
        {
            let due = Instant::now() + session::jittered(job_heartbeat, 0.1);
            session.next_heartbeat = session.next_heartbeat.min(due);
        }
        tracing::info!(job_id = %job.job_id, attempt = job.attempt, pid, binary = %assign.binary,
            requester_id = %assign.requester_id, "job started");
        self.send_to_session(WorkerMessage::JobAccepted(JobAccepted {
            job_id: job.job_id,
            attempt: job.attempt,
            pid: Some(pid),
            started_at_ms,
        }));
    }

    /// `job_finished {failed, exit_code nil, error}` without `job_accepted` (path escape), kept in the outbox.
    pub(super) fn fail_without_running(
        &mut self,
        job: JobRef,
        assign: &AssignJob,
        code: &str,
        message: String,
    ) {
        tracing::info!(job_id = %job.job_id, attempt = job.attempt, code, message = %message, "job failed before running");
        let report = JobFinished {
            job_id: job.job_id,
            attempt: job.attempt,
            status: FinishedStatus::Failed,
            exit_code: None,
            signal: None,
            error: Some(JobError {
                code: code.to_owned(),
                message,
            }),
            finished_at_ms: crate::now_ms(),
            output_seq_end: 0,
        };
        self.jobs.insert(
            job,
            HeldJob {
                heartbeat_interval: Duration::from_millis(u64::from(assign.heartbeat_interval_ms)),
                output: JobOutput::new(&self.settings.output),
                phase: JobPhase::Finished {
                    report,
                    sent: false,
                },
                progress: None,
                stdin_written: None,
            },
        );
        self.flush();
    }

    pub(super) fn on_cancel(&mut self, cancel: CancelJob) {
        let job = JobRef {
            job_id: cancel.job_id,
            attempt: cancel.attempt,
        };
        let Some(held) = self.jobs.get(&job) else {
            tracing::debug!(job_id = %job.job_id, attempt = job.attempt, reason = %cancel.reason,
                "cancel_job for a job not held here ignored");
            return;
        };
        if cancel_reason::reports_nothing(&cancel.reason) {
            tracing::info!(job_id = %job.job_id, attempt = job.attempt, reason = %cancel.reason, "job given up");
            held.kill();
            self.jobs.remove(&job);
        } else if let JobPhase::Running { control, .. } = &held.phase {
            tracing::info!(job_id = %job.job_id, attempt = job.attempt, reason = %cancel.reason, "canceling job");
            control.cancel();
        }
    }

    pub(super) fn on_stdin(&mut self, frame: JobStdin) {
        let job = JobRef {
            job_id: frame.job_id,
            attempt: frame.attempt,
        };
        match self.jobs.get(&job).map(|held| &held.phase) {
            Some(JobPhase::Running {
                stdin: Some(stdin), ..
            }) => stdin.send(frame),
            Some(_) => {
                tracing::debug!(job_id = %job.job_id, attempt = job.attempt, "job_stdin for a job without stdin dropped")
            }
            None => {}
        }
    }

    pub(super) fn on_job_message(&mut self, message: JobMessage) {
        match message {
            JobMessage::Progress(job, snapshot) => {
                if let Some(held) = self.jobs.get_mut(&job)
                    && held.is_running()
                {
                    held.progress =
                        Some(snapshot.to_message(job.job_id, job.attempt, crate::now_ms()));
                }
            }
            JobMessage::StdinWritten {
                job,
                offset,
                closed,
            } => {
                if let Some(held) = self.jobs.get_mut(&job) {
                    held.stdin_written = Some(StdinWritten {
                        job_id: job.job_id,
                        attempt: job.attempt,
                        offset,
                        closed,
                    });
                }
            }
            JobMessage::Exited(job, exit) => self.on_exited(job, exit),
        }
    }

    pub(super) fn on_exited(&mut self, job: JobRef, exit: ExitInfo) {
        let Some(held) = self.jobs.get_mut(&job) else {
            return;
        };
        let JobPhase::Running { abandon, .. } = &held.phase else {
            return;
        };
        if *abandon {
            tracing::info!(job_id = %job.job_id, attempt = job.attempt, exit_code = exit.exit_code, "job abandoned");
            // Its last output first (kept in the job's history at the coordinator), then the give-back.
            self.flush_job(job);
            self.jobs.remove(&job);
            self.send_to_session(WorkerMessage::JobAbandoned(JobAbandoned {
                job_id: job.job_id,
                attempt: job.attempt,
                reason: "worker_shutdown".to_owned(),
                message: "the worker is shutting down".to_owned(),
            }));
            return;
        }
        let report = exit.to_finished(
            job.job_id,
            job.attempt,
            crate::now_ms(),
            held.output.next_seq(),
        );
        tracing::info!(job_id = %job.job_id, attempt = job.attempt, status = ?report.status,
            exit_code = exit.exit_code, output_seq_end = report.output_seq_end, "job finished");
        held.phase = JobPhase::Finished {
            report,
            sent: false,
        };
        self.flush_job(job);
    }

    // ----- sending -----------------------------------------------------------------------------------------

    /// Sends what every held job has waiting: progress, output (round-robin, while the queue has room),
    /// `stdin_written`, and outbox reports whose output is all out.
    pub(super) fn flush(&mut self) {
        let Some(connection) = self.link.session() else {
            return;
        };
        for held in self.jobs.values_mut() {
            send_job_extras(connection, held);
        }
        loop {
            let mut sent_any = false;
            for (job, held) in self.jobs.iter_mut() {
                if !connection.has_output_room() {
                    break;
                }
                if let Some(batch) = held.output.take_batch() {
                    connection.send(&WorkerMessage::JobLogs(
                        batch.into_message(job.job_id, job.attempt),
                    ));
                    sent_any = true;
                }
            }
            if !sent_any || !connection.has_output_room() {
                break;
            }
        }
        for held in self.jobs.values_mut() {
            send_report_if_ready(connection, held);
        }
    }

    /// [`Agent::flush`] for one job.
    pub(super) fn flush_job(&mut self, job: JobRef) {
        let Some(connection) = self.link.session() else {
            return;
        };
        let Some(held) = self.jobs.get_mut(&job) else {
            return;
        };
        send_job_extras(connection, held);
        while connection.has_output_room() {
            let Some(batch) = held.output.take_batch() else {
                break;
            };
            connection.send(&WorkerMessage::JobLogs(
                batch.into_message(job.job_id, job.attempt),
            ));
        }
        send_report_if_ready(connection, held);
    }
}

/// Progress and `stdin_written` waiting for one job.
fn send_job_extras(connection: &mut Connection, held: &mut HeldJob) {
    if let Some(progress) = held.progress.take()
        && !connection.send(&WorkerMessage::JobProgress(progress.clone()))
    {
        held.progress = Some(progress);
    }
    if let Some(written) = held.stdin_written.take()
        && !connection.send(&WorkerMessage::StdinWritten(written.clone()))
    {
        held.stdin_written = Some(written);
    }
}

/// The outbox report, once per connection, after the job's last output.
fn send_report_if_ready(connection: &mut Connection, held: &mut HeldJob) {
    if let JobPhase::Finished { report, sent } = &mut held.phase
        && !*sent
        && !held.output.has_unsent()
        && held.progress.is_none()
        && connection.send(&WorkerMessage::JobFinished(report.clone()))
    {
        *sent = true;
    }
}

/// Forwards a job's events to the agent until the process has ended.
async fn drive_job(job: JobRef, mut running: RunningJob, events: mpsc::Sender<JobMessage>) {
    while let Some(event) = running.next_event().await {
        let message = match event {
            JobEvent::Progress(snapshot) => JobMessage::Progress(job, snapshot),
            JobEvent::Exited(exit) => JobMessage::Exited(job, exit),
        };
        if events.send(message).await.is_err() {
            break;
        }
    }
}
