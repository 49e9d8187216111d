//! Coalescing concurrent lookups into one round trip.
//!
//! Requests that miss memory at the same moment each want one document from
//! Redis or PostgreSQL. Sent one by one they cost a round trip, a command to
//! parse and a reply to frame each, on both sides; gathered, they cost one
//! `MGET` or one `where key = any($1)` for all of them. A [`Coalescer`] has a
//! few workers; each takes every lookup waiting (up to a batch limit), runs
//! them as one call, and hands each caller its answer. Under light load a
//! batch is one lookup and nothing waits longer than before; under load the
//! batches grow with the number of requests in flight.

use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};

/// Answers to a batch, in the order of its lookups; or why none could be had.
pub type BatchResult<T> = Result<Vec<T>, Arc<anyhow::Error>>;

type Job<K, T> = (K, oneshot::Sender<Result<T, Arc<anyhow::Error>>>);

/// Gathers lookups of type `K` into batches answered by one call each.
#[derive(Debug)]
pub struct Coalescer<K, T> {
    sender: mpsc::Sender<Job<K, T>>,
}

impl<K: Send + 'static, T: Send + 'static> Coalescer<K, T> {
    /// Starts `workers` tasks on the current runtime, each running `batch`
    /// on up to `max_batch` waiting lookups at a time.
    pub fn new<F, Fut>(workers: usize, max_batch: usize, batch: F) -> Self
    where
        F: Fn(Vec<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = BatchResult<T>> + Send + 'static,
    {
        Self::with_state(workers, max_batch, || (), move |(), keys| {
            let answers = batch(keys);
            async move { ((), answers.await) }
        })
    }

    /// As [`Self::new`], each worker with its own state (say, a connection)
    /// made by `state`, handed to every batch it runs and back.
    pub fn with_state<S, M, F, Fut>(workers: usize, max_batch: usize, state: M, batch: F) -> Self
    where
        S: Send + 'static,
        M: Fn() -> S,
        F: Fn(S, Vec<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = (S, BatchResult<T>)> + Send + 'static,
    {
        let (sender, receiver) = mpsc::channel(max_batch * workers.max(1) * 4);
        let receiver = Arc::new(Mutex::new(receiver));
        let batch = Arc::new(batch);
        for _ in 0..workers.max(1) {
            tokio::spawn(work(receiver.clone(), state(), batch.clone(), max_batch.max(1)));
        }
        Self { sender }
    }

    /// The answer to one lookup, from the batch it joins.
    pub async fn get(&self, key: K) -> Result<T, Arc<anyhow::Error>> {
        let (reply, answer) = oneshot::channel();
        let stopped = || Arc::new(anyhow::anyhow!("the lookup workers stopped"));
        self.sender.send((key, reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn work<K, T, S, F, Fut>(receiver: Arc<Mutex<mpsc::Receiver<Job<K, T>>>>, mut state: S, batch: Arc<F>, max_batch: usize)
where
    F: Fn(S, Vec<K>) -> Fut,
    Fut: Future<Output = (S, BatchResult<T>)>,
{
    loop {
        let mut jobs = Vec::new();
        {
            // One worker gathers at a time; the others run their batches meanwhile.
            let mut receiver = receiver.lock().await;
            let Some(first) = receiver.recv().await else { return };
            jobs.push(first);
            while jobs.len() < max_batch {
                match receiver.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
        }
        // Callers that gave up (their deadline passed) need no answer.
        jobs.retain(|(_, reply)| !reply.is_closed());
        if jobs.is_empty() {
            continue;
        }
        let (keys, replies): (Vec<K>, Vec<_>) = jobs.into_iter().unzip();
        let expected = keys.len();
        let (returned, answers) = batch(state, keys).await;
        state = returned;
        match answers {
            Ok(answers) if answers.len() == expected => {
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _ = reply.send(Ok(answer));
                }
            }
            Ok(answers) => {
                let error = Arc::new(anyhow::anyhow!("a batch of {expected} lookups got {} answers", answers.len()));
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
            Err(error) => {
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn concurrent_lookups_share_a_batch_and_each_gets_its_own_answer() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let coalescer = Arc::new(Coalescer::new(1, 64, move |keys: Vec<u32>| {
            counted.fetch_add(1, Ordering::Relaxed);
            async move {
                // Long enough for the other lookups to queue behind the first.
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                Ok(keys.into_iter().map(|k| k * 10).collect())
            }
        }));
        let lookups = (0..20u32).map(|k| {
            let coalescer = coalescer.clone();
            tokio::spawn(async move { coalescer.get(k).await.unwrap() })
        });
        let answers: Vec<u32> = futures::future::join_all(lookups).await.into_iter().map(Result::unwrap).collect();
        assert_eq!(answers, (0..20).map(|k| k * 10).collect::<Vec<_>>());
        assert!(calls.load(Ordering::Relaxed) < 20, "{} calls for 20 lookups", calls.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn a_failed_batch_fails_every_lookup_in_it() {
        let coalescer = Coalescer::new(2, 8, |_: Vec<u32>| async { Err::<Vec<u32>, _>(Arc::new(anyhow::anyhow!("down"))) });
        assert_eq!(coalescer.get(1).await.unwrap_err().to_string(), "down");
    }

    #[tokio::test]
    async fn a_batch_with_the_wrong_number_of_answers_is_an_error_not_a_mix_up() {
        let coalescer = Coalescer::new(1, 8, |_: Vec<u32>| async { Ok(vec![1, 2, 3]) });
        assert!(coalescer.get(1).await.is_err());
    }
}
