//! The import job: reads the uploaded file line by line (one chunk of the
//! stored file at a time) and decides the lines by the same rules as the
//! HTTP commands ([`command_service::import`] reads a line,
//! [`command_service::bulk`] decides them), `APP_JOBS__IMPORT_CHUNK_LINES`
//! lines per transaction.
//!
//! Exactly once: the transaction of a chunk holds the job's row (the lease
//! fence), appends the accepted lines' events, records the refused lines
//! and moves the checkpoint (the next line and its byte offset, and the
//! counts so far). A worker killed at any point leaves either the whole
//! chunk or none of it; the next attempt starts at the checkpoint. Each
//! line's command id is derived from the job and the line number, so the
//! events of a line can be traced to it. A dry run decides against the
//! states its earlier chunks left in memory, so it starts over after a
//! crash (its refused lines of the lost attempt are deleted first).

use chrono::SubsecRound;
use command_service::bulk::Bulk;
use command_service::execute::Request;
use command_service::import::{self, CsvHeader, LineError};
use command_service::jobs::params::{ImportFormat, ImportParams};
use command_service::store::AppendError;
use events::{Command, CommandMeta, Scope, WarehouseId};
use futures::StreamExt;
use platform::jobs::files;
use platform::jobs::lease::{self, Claimed, Report};
use platform::jobs::metrics::LINES;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::runner::{Control, Finished, JobError, Runner};

/// Namespace of the command ids of import lines: `v5(job id:line)`.
const LINE_NAMESPACE: Uuid = Uuid::from_u128(0x6f1e_2b7c_4d90_4a3e_8c51_0b9d_e2a7_3f18);

/// Where an import got to: written with every chunk.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Checkpoint {
    /// Lines read (the last line number decided).
    line: i64,
    /// Byte offset of the next line.
    offset: u64,
    accepted: i64,
    rejected: i64,
    events: i64,
    /// A CSV file's header line.
    header: Option<String>,
}

/// The command id of line `line` of job `job`.
pub fn line_command_id(job: Uuid, line: i64) -> Uuid {
    Uuid::new_v5(&LINE_NAMESPACE, format!("{job}:{line}").as_bytes())
}

struct Import<'a> {
    runner: &'a Runner,
    claimed: &'a Claimed,
    control: &'a Control,
    params: ImportParams,
    header: Option<CsvHeader>,
    bulk: Bulk,
    scope: Scope,
    done: Checkpoint,
    /// Read, not yet decided: the checkpoint after them, and the lines.
    next: Checkpoint,
    pending: Vec<(i64, Result<Command, LineError>)>,
    /// What the lines' events carry on: a span of this attempt's in the job's trace.
    traceparent: Option<String>,
}

pub async fn run(runner: &Runner, claimed: &Claimed, control: &Control) -> Result<Finished, JobError> {
    let params: ImportParams = serde_json::from_value(claimed.job.params.clone())
        .map_err(|e| JobError::Input(format!("bad parameters: {e}")))?;
    let id = claimed.job.id;
    let mut done: Checkpoint = match &claimed.checkpoint {
        Some(c) => serde_json::from_value(c.clone()).map_err(|e| JobError::Input(format!("bad checkpoint: {e}")))?,
        None => Checkpoint::default(),
    };
    if params.dry_run && done.line > 0 {
        // The overlay of the lost attempt is gone: start over.
        let mut tx = runner.pool.begin().await?;
        if !lease::fence(&mut tx, claimed, Some(&serde_json::to_value(Checkpoint::default()).expect("serialises")), &Report::default()).await? {
            return Err(JobError::Stopped);
        }
        sqlx::query("delete from job_rejections where job_id = $1").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        done = Checkpoint::default();
    }
    let file = files::meta(&runner.pool, id, "input").await?.ok_or_else(|| JobError::Input("the job has no uploaded file".into()))?;
    let header = match &done.header {
        Some(h) => Some(import::csv_header(h.as_bytes()).map_err(|e| JobError::Input(e.detail))?),
        None => None,
    };
    let scope = match &claimed.rights.warehouses {
        None => Scope::Everywhere,
        Some(ws) => Scope::Only(ws.iter().filter_map(|w| WarehouseId::parse(w).ok()).collect()),
    };
    if done.line > 0 {
        tracing::info!(job = %id, line = done.line, "resuming the import after its last committed chunk");
    }
    let mut import = Import {
        runner,
        claimed,
        control,
        bulk: Bulk::new(runner.policy.clone(), params.dry_run),
        params,
        header,
        scope,
        next: done.clone(),
        done,
        pending: Vec::new(),
        traceparent: platform::trace::TraceParent::child_of(claimed.job.traceparent.as_deref()),
    };
    control.progress(import.done.line, Some(import.params.lines), "importing");

    let mut stream = files::read(runner.pool.clone(), id, file, import.done.offset).boxed();
    let mut buffer: Vec<u8> = Vec::new();
    let mut eof = false;
    while !eof {
        match stream.next().await {
            Some(chunk) => buffer.extend_from_slice(&chunk?),
            None => eof = true,
        }
        let mut start = 0;
        while let Some(end) = buffer[start..].iter().position(|b| *b == b'\n') {
            import.line(&buffer[start..start + end], end as u64 + 1)?;
            start += end + 1;
            if import.pending.len() >= runner.settings.import_chunk_lines {
                import.commit().await?;
            }
        }
        if eof && start < buffer.len() {
            let rest = buffer.len() - start;
            import.line(&buffer[start..], rest as u64)?;
            start = buffer.len();
        }
        buffer.drain(..start);
    }
    import.commit().await?;
    let d = &import.done;
    let result = serde_json::json!({
        "lines": d.line,
        "accepted": d.accepted,
        "rejected": d.rejected,
        "events": d.events,
        "dry_run": import.params.dry_run,
        "rejections": format!("/jobs/{id}/rejections"),
    });
    Ok(Finished { result, file: None })
}

impl Import<'_> {
    /// Reads one line (without its `\n`; `bytes` with it).
    fn line(&mut self, raw: &[u8], bytes: u64) -> Result<(), JobError> {
        self.next.line += 1;
        self.next.offset += bytes;
        let n = self.next.line;
        let mut text = raw.strip_suffix(b"\r").unwrap_or(raw);
        if n == 1 {
            text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
        }
        if n == 1 && self.params.format == ImportFormat::Csv {
            let header = import::csv_header(text).map_err(|e| {
                JobError::Input(format!("line 1 is not a valid header: {} ({})", e.detail, e.field.unwrap_or_default()))
            })?;
            self.header = Some(header);
            self.next.header = Some(String::from_utf8_lossy(text).into_owned());
            return Ok(());
        }
        if text.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let roles = &self.claimed.rights.roles;
        let parsed = match self.params.format {
            ImportFormat::Csv => import::csv_line(self.header.as_ref().expect("read on line 1"), text, roles),
            ImportFormat::Ndjson => import::ndjson_line(text, roles),
        };
        self.pending.push((n, parsed));
        Ok(())
    }

    /// Decides the pending lines and commits them with the checkpoint.
    async fn commit(&mut self) -> Result<(), JobError> {
        if self.control.stopped().is_some() {
            return Err(JobError::Stopped);
        }
        if self.pending.is_empty() && self.next.offset == self.done.offset {
            return Ok(());
        }
        let job = self.claimed.job.id;
        let recorded_at = chrono::Utc::now().trunc_subsecs(6);
        let mut lines = Vec::new();
        let mut requests = Vec::new();
        let mut refused: Vec<(i64, LineError)> = Vec::new();
        for (n, parsed) in &self.pending {
            match parsed {
                Ok(command) => {
                    let meta = CommandMeta {
                        command_id: line_command_id(job, *n),
                        correlation_id: format!("job:{job}"),
                        actor: self.claimed.job.submitter.clone(),
                        recorded_at,
                        traceparent: self.traceparent.clone(),
                    };
                    lines.push(*n);
                    requests.push(Request::new(command.clone(), meta, self.scope.clone()));
                }
                Err(e) => refused.push((*n, e.clone())),
            }
        }
        let mut attempt = 0;
        let (accepted, events, refused) = loop {
            attempt += 1;
            match self.try_commit(&lines, &requests, refused.clone()).await {
                Ok(counts) => break counts,
                Err(CommitError::Conflict) if attempt < command_service::execute::MAX_ATTEMPTS => {
                    self.bulk.forget();
                }
                Err(CommitError::Conflict) => {
                    self.bulk.forget();
                    return Err(JobError::Transient(anyhow::anyhow!("streams kept changing concurrently")));
                }
                Err(CommitError::Lost) => return Err(JobError::Stopped),
                Err(CommitError::Database(e)) => {
                    self.bulk.forget();
                    return Err(JobError::Transient(e.into()));
                }
            }
        };
        self.next.accepted += accepted;
        self.next.rejected += refused;
        self.next.events += events;
        self.done = self.next.clone();
        self.pending.clear();
        LINES.with_label_values(&["accepted"]).inc_by(accepted as u64);
        LINES.with_label_values(&["rejected"]).inc_by(refused as u64);
        self.control.progress(self.done.line, None, "importing");
        Ok(())
    }

    /// One transaction: fence, decide, refused lines, checkpoint. Counts
    /// of accepted lines, events and refused lines.
    async fn try_commit(&mut self, lines: &[i64], requests: &[Request], mut refused: Vec<(i64, LineError)>) -> Result<(i64, i64, i64), CommitError> {
        let mut tx = self.runner.pool.begin().await?;
        if !lease::fence(&mut tx, self.claimed, None, &Report::default()).await? {
            return Err(CommitError::Lost);
        }
        let outcomes = match self.bulk.decide(&mut tx, requests).await {
            Ok(o) => o,
            Err(AppendError::Conflict) => return Err(CommitError::Conflict),
            Err(AppendError::Database(e)) => return Err(CommitError::Database(e)),
            Err(AppendError::Corrupt(e)) => return Err(CommitError::Database(sqlx::Error::Protocol(e.to_string()))),
        };
        let (mut accepted, mut events) = (0, 0);
        for (n, outcome) in lines.iter().zip(outcomes) {
            match outcome {
                Ok(appended) => {
                    accepted += 1;
                    events += appended as i64;
                }
                Err(rule) => refused.push((*n, LineError { problem: rule.code().to_owned(), field: None, detail: rule.to_string() })),
            }
        }
        if !refused.is_empty() {
            sqlx::query(
                "insert into job_rejections (job_id, line, problem, field, detail)
                 select $1, * from unnest($2::int8[], $3::text[], $4::text[], $5::text[])",
            )
            .bind(self.claimed.job.id)
            .bind(refused.iter().map(|(n, _)| *n).collect::<Vec<_>>())
            .bind(refused.iter().map(|(_, e)| e.problem.as_str()).collect::<Vec<_>>())
            .bind(refused.iter().map(|(_, e)| e.field.as_deref()).collect::<Vec<_>>())
            .bind(refused.iter().map(|(_, e)| e.detail.as_str()).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        let mut checkpoint = self.next.clone();
        checkpoint.accepted += accepted;
        checkpoint.rejected += refused.len() as i64;
        checkpoint.events += events;
        let report = Report { done: Some(checkpoint.line), phase: Some("importing".into()), ..Report::default() };
        let checkpoint = serde_json::to_value(&checkpoint).expect("serialises");
        if !lease::fence(&mut tx, self.claimed, Some(&checkpoint), &report).await? {
            return Err(CommitError::Lost);
        }
        tx.commit().await?;
        Ok((accepted, events, refused.len() as i64))
    }
}

enum CommitError {
    Conflict,
    Lost,
    Database(sqlx::Error),
}

impl From<sqlx::Error> for CommitError {
    fn from(e: sqlx::Error) -> Self {
        CommitError::Database(e)
    }
}
