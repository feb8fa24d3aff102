//! Handing work between the async threads and a thread of its own: rows
//! read from a database stream are decoded, hashed or built into batches on
//! a blocking thread while the stream goes on being read.

use super::BackendError;

/// Sends the items of a stream to the thread that consumes them,
/// `per_batch` at a time; an item's error becomes `fail`'s. Stops early,
/// without error, when the consumer has stopped (on an error of its own).
pub async fn send_batches<T, E, F>(
    stream: impl futures::Stream<Item = Result<T, E>>,
    tx: tokio::sync::mpsc::Sender<Vec<T>>,
    per_batch: usize,
    fail: impl Fn(E) -> F,
) -> Result<(), F> {
    use futures::StreamExt as _;
    futures::pin_mut!(stream);
    let mut batch = Vec::with_capacity(per_batch);
    while let Some(item) = stream.next().await {
        batch.push(item.map_err(&fail)?);
        if batch.len() == per_batch {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(per_batch));
            if tx.send(full).await.is_err() {
                return Ok(());
            }
        }
    }
    let _ = tx.send(batch).await;
    Ok(())
}

/// Runs blocking reconcile work (a scan of the stage or of an in-process
/// table, hashing rows pulled out of a server) off the async threads; a
/// panic in it is an error naming `what`.
pub async fn run_blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> Result<T, BackendError> + Send + 'static,
) -> Result<T, BackendError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| BackendError::Read {
        model: what.to_owned(),
        message: format!("the reconcile scan stopped: {e}"),
    })?
}
