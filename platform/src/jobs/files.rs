//! Files of jobs (an import's upload, a report's result) in PostgreSQL,
//! in chunks of [`CHUNK`] bytes: every worker and every command-service
//! instance reaches them without a shared disk, and neither side ever holds
//! a whole file. A file is complete once its `job_files` row exists; the
//! writer inserts it with the last chunk, in the writer's transaction.

use axum::body::Bytes;
use futures::Stream;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::metrics::timed;

/// Size of every chunk but a file's last.
pub const CHUNK: usize = 1 << 20;

/// A complete file.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FileMeta {
    pub name: String,
    pub content_type: String,
    pub bytes: i64,
    pub chunks: i32,
}

/// Writes a file chunk by chunk into the caller's transaction.
#[derive(Debug)]
pub struct Writer {
    job: Uuid,
    name: String,
    content_type: String,
    buffer: Vec<u8>,
    chunks: i32,
    bytes: i64,
}

impl Writer {
    pub fn new(job: Uuid, name: &str, content_type: &str) -> Self {
        Self { job, name: name.to_owned(), content_type: content_type.to_owned(), buffer: Vec::with_capacity(CHUNK), chunks: 0, bytes: 0 }
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> i64 {
        self.bytes + self.buffer.len() as i64
    }

    /// Appends `data`, storing every full chunk.
    pub async fn write(&mut self, tx: &mut PgConnection, mut data: &[u8]) -> Result<(), sqlx::Error> {
        while !data.is_empty() {
            let take = (CHUNK - self.buffer.len()).min(data.len());
            self.buffer.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buffer.len() == CHUNK {
                self.flush(tx).await?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self, tx: &mut PgConnection) -> Result<(), sqlx::Error> {
        timed(
            "job_file_chunk",
            sqlx::query("insert into job_file_chunks (job_id, name, seq, data) values ($1, $2, $3, $4)")
                .bind(self.job)
                .bind(&self.name)
                .bind(self.chunks)
                .bind(&self.buffer)
                .execute(&mut *tx),
        )
        .await?;
        self.chunks += 1;
        self.bytes += self.buffer.len() as i64;
        self.buffer.clear();
        Ok(())
    }

    /// Stores the last chunk and marks the file complete (on commit).
    pub async fn finish(mut self, tx: &mut PgConnection) -> Result<FileMeta, sqlx::Error> {
        if !self.buffer.is_empty() {
            self.flush(tx).await?;
        }
        sqlx::query("insert into job_files (job_id, name, content_type, bytes, chunks) values ($1, $2, $3, $4, $5)")
            .bind(self.job)
            .bind(&self.name)
            .bind(&self.content_type)
            .bind(self.bytes)
            .bind(self.chunks)
            .execute(&mut *tx)
            .await?;
        Ok(FileMeta { name: self.name, content_type: self.content_type, bytes: self.bytes, chunks: self.chunks })
    }
}

/// The complete file `name` of `job`.
pub async fn meta(pool: &PgPool, job: Uuid, name: &str) -> Result<Option<FileMeta>, sqlx::Error> {
    sqlx::query_as("select name, content_type, bytes, chunks from job_files where job_id = $1 and name = $2")
        .bind(job)
        .bind(name)
        .fetch_optional(pool)
        .await
}

/// The bytes of a complete file from byte `offset` on, one chunk per
/// statement (a reader holds one chunk at a time).
pub fn read(pool: PgPool, job: Uuid, file: FileMeta, offset: u64) -> impl Stream<Item = Result<Bytes, sqlx::Error>> + Send + 'static {
    let first = (offset / CHUNK as u64) as i32;
    let skip = (offset % CHUNK as u64) as usize;
    futures::stream::unfold((pool, first, skip), move |(pool, seq, skip)| {
        let name = file.name.clone();
        let chunks = file.chunks;
        async move {
            if seq >= chunks {
                return None;
            }
            let data: Result<Vec<u8>, sqlx::Error> = timed(
                "job_file_read",
                sqlx::query_scalar("select data from job_file_chunks where job_id = $1 and name = $2 and seq = $3")
                    .bind(job)
                    .bind(&name)
                    .bind(seq)
                    .fetch_one(&pool),
            )
            .await;
            let item = data.map(|d| {
                let skip = skip.min(d.len());
                Bytes::from(d).slice(skip..)
            });
            Some((item, (pool, seq + 1, 0)))
        }
    })
}
