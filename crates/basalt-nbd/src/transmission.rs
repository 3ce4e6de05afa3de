//! The transmission phase: a reader task parses requests into a bounded in-flight window, workers on the
//! blocking pool carry them out against the image, and replies go out in completion order: written by the worker
//! itself when the socket is free, else handed to a writer task that sends what is ready in one batch.
//!
//! Memory is bounded four ways: at most `max_in_flight_per_connection` requests per connection, at most
//! `buffer_bytes_per_connection` payload bytes per connection, at most `buffer_bytes_per_address` for all the
//! connections of one client address, and at most `buffer_bytes_total` for the server. A client that never reads
//! its replies holds its own budgets only, and one address can never hold the whole server's.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use basalt_core::{BlockExtent, BlockState, Durability, ErrorKind, FlushDone, ImageIo, IoRequest, Result, ZeroMode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use crate::buffers::Buffers;
use crate::conn::{ConnError, Shared, shutdown_requested};
use crate::export::ImageHandle;
use crate::proto::{self, Command, Decision, Descriptor, Negotiated, Request};

/// Size of the write buffer in front of the socket: small replies are batched into one send.
const WRITE_BUFFER_BYTES: usize = 128 << 10;
/// Holes shorter than this are sent as zeros inside a data chunk: a chunk per 4 KiB hole costs more than it saves.
const MIN_HOLE_CHUNK_BYTES: u64 = 64 << 10;
/// Block status answers at most this much of a request (the spec allows a shorter answer); it bounds the work.
const BLOCK_STATUS_MAX_BYTES: u64 = 1 << 30;
/// ... and at most this many descriptors.
const MAX_DESCRIPTORS: usize = 1 << 16;

/// A reply ready to send, with the permits it holds until it is on the wire.
struct Reply {
    bytes: Vec<u8>,
    _permits: Permits,
}

/// The in-flight slot and buffer budget of one request.
struct Permits {
    _slot: OwnedSemaphorePermit,
    _connection_bytes: Option<OwnedSemaphorePermit>,
    _address_bytes: Option<OwnedSemaphorePermit>,
    _total_bytes: Option<OwnedSemaphorePermit>,
}

/// The buffer budgets a connection draws from besides its own.
pub(crate) struct Budgets {
    /// The server's state, with the total budget.
    pub shared: Arc<Shared>,
    /// The budget of the client's address, for TCP clients.
    pub address: Option<Arc<Semaphore>>,
}

/// The socket's write half, behind a lock: whoever holds it writes whole replies.
type Out = tokio::sync::Mutex<BufWriter<Box<dyn AsyncWrite + Unpin + Send>>>;

/// What workers share.
struct Export {
    io: Arc<dyn ImageIo>,
    negotiated: Negotiated,
    /// The socket's write half. A worker that finds it free writes its reply itself: handing each reply to the
    /// writer task cost a third of the thread switches of a request at queue depth 1.
    out: Arc<Out>,
    /// Closed when the connection is torn down: a worker's write to a client that stopped reading gives up then.
    torn_down: watch::Receiver<()>,
    /// Large payloads and read buffers come from here and go back once answered.
    buffers: Arc<Buffers>,
    /// Dropped after `io` (fields drop in order): once every clone of the sender is gone, so is every reference to
    /// the image but the connection's own handle.
    _released: mpsc::Sender<()>,
}

/// Serves requests until the client disconnects, breaks the protocol, or shutdown is requested; in-flight
/// requests are always completed and answered before returning.
///
/// The image is closed (and so flushed, unlocked and its watcher gone) before the socket is: a client that saw the
/// connection end can reopen the image, or have it rolled back, at once. Workers still running when the writer
/// stops are waited for, so no reference to the image outlives the connection.
pub(crate) async fn run<R, W>(
    reader: BufReader<R>,
    writer: W,
    handle: ImageHandle,
    negotiated: Negotiated,
    budgets: Budgets,
    shutdown: watch::Receiver<bool>,
    client: &str,
) -> Result<(), ConnError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let max_in_flight = budgets.shared.limits.max_in_flight_per_connection.max(1);
    let (tx, rx) = mpsc::channel::<Reply>(max_in_flight);
    let writer: Box<dyn AsyncWrite + Unpin + Send> = Box::new(writer);
    let out = Arc::new(tokio::sync::Mutex::new(BufWriter::with_capacity(WRITE_BUFFER_BYTES, writer)));
    // Aborted if this future is dropped (the server cutting connections after its drain timeout), so a writer
    // stuck on a client that stopped reading does not outlive its connection; workers writing give up as
    // `_tear_down` drops with it.
    let mut writer_task = AbortOnDrop(tokio::spawn(write_replies(out.clone(), rx, budgets.shared.buffers.clone())));
    let (_tear_down, torn_down) = watch::channel(());
    let (released_tx, mut released) = mpsc::channel::<()>(1);
    let buffers = budgets.shared.buffers.clone();
    let export =
        Arc::new(Export { io: handle.io(), negotiated, out: out.clone(), torn_down, buffers, _released: released_tx });
    let mut reader_task = Box::pin(read_requests(reader, tx, export, budgets, shutdown, client));
    let read_result = tokio::select! {
        result = &mut reader_task => result,
        written = &mut writer_task.0 => {
            // The writer only stops early when the socket failed: stop reading too.
            drop(reader_task);
            // Workers see the writer gone at their next reply and drop their references.
            let _ = released.recv().await;
            handle.close().await;
            return match written {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(err)) => Err(err.into()),
                Err(join) => Err(ConnError::Refused(format!("reply writer failed: {join}"))),
            };
        }
    };
    // Dropping the reader drops its sender; the writer ends once every worker has sent its reply.
    drop(reader_task);
    let written = (&mut writer_task.0).await;
    // A worker may still hold the image (and be writing its last reply) for a moment after the writer ends.
    let _ = released.recv().await;
    handle.close().await;
    let write_result = match written {
        Ok(Ok(())) => out.lock().await.shutdown().await.map_err(ConnError::from),
        Ok(Err(err)) => Err(err.into()),
        Err(join) => Err(ConnError::Refused(format!("reply writer failed: {join}"))),
    };
    read_result.and(write_result)
}

/// Aborts a task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends the replies handed over by workers (and the reader's refusals) as they come, until every sender is gone.
async fn write_replies(out: Arc<Out>, mut rx: mpsc::Receiver<Reply>, buffers: Arc<Buffers>) -> std::io::Result<()> {
    while let Some(reply) = rx.recv().await {
        let mut out = out.lock().await;
        out.write_all(&reply.bytes).await?;
        buffers.give(reply.bytes);
        // Batch whatever else is ready into the same flush.
        while let Ok(reply) = rx.try_recv() {
            out.write_all(&reply.bytes).await?;
            buffers.give(reply.bytes);
        }
        out.flush().await?;
    }
    Ok(())
}

/// Sends a worker's reply: on the socket at once if no one else is writing, else through the writer task (which
/// also meets, and reports, a failed socket). Returns false once nobody is left to answer.
fn send_reply(export: &Export, tx: &mpsc::Sender<Reply>, reply: Reply) -> bool {
    if let Ok(mut out) = export.out.try_lock() {
        let mut torn_down = export.torn_down.clone();
        // Workers run on the blocking pool of the runtime the socket belongs to.
        let written = tokio::runtime::Handle::current().block_on(async {
            tokio::select! {
                written = async {
                    out.write_all(&reply.bytes).await?;
                    out.flush().await
                } => written,
                _ = torn_down.changed() => Err(std::io::ErrorKind::BrokenPipe.into()),
            }
        });
        if written.is_ok() {
            export.buffers.give(reply.bytes);
            return true;
        }
    }
    // An error means the writer is gone with the connection.
    tx.blocking_send(reply).is_ok()
}

/// Requests decoded but not yet handed to a worker.
struct Job {
    request: Request,
    payload: Vec<u8>,
    permits: Permits,
}

/// A structured data chunk's header and offset, in front of its data.
const DATA_CHUNK_PREFIX: usize = proto::CHUNK_HEADER_LEN + 8;

/// Writes up to this size may be answered on the reader's thread (see [`answer_now`]).
const INLINE_WRITE_MAX: usize = 64 << 10;

/// The most requests one worker takes at once.
const BATCH_MAX: usize = 16;

/// Hands the pending jobs to one blocking worker, which answers them in turn.
///
/// Requests that are already in the socket buffer go out as one batch: waking a blocking thread per 4 KiB request
/// cost more than the I/O itself (page-cache hits take microseconds), and requests in different batches still run in
/// parallel.
fn dispatch(batch: &mut Vec<Job>, export: &Arc<Export>, tx: &mpsc::Sender<Reply>) {
    if batch.is_empty() {
        return;
    }
    // A request alone in its batch had nothing behind it in the socket buffer: a flush may then be answered here.
    let alone = batch.len() == 1;
    let jobs: Vec<Job> =
        std::mem::take(batch).into_iter().filter_map(|job| answer_now(export, tx, job, alone)).collect();
    if jobs.is_empty() {
        return;
    }
    let export = export.clone();
    let tx = tx.clone();
    // The worker owns its reply channel; the join handle is not needed.
    drop(tokio::task::spawn_blocking(move || {
        // A backend that keeps requests in flight together gets the whole batch at once; one that runs them in turn
        // gets them one by one, so each reply leaves as soon as it is ready.
        let groups: Vec<Vec<Job>> =
            if export.io.batches_concurrently() { vec![jobs] } else { jobs.into_iter().map(|job| vec![job]).collect() };
        for jobs in groups {
            let replies = match std::panic::catch_unwind(AssertUnwindSafe(|| execute_batch(&export, &jobs))) {
                Ok(replies) => replies,
                Err(_) => {
                    tracing::error!(requests = jobs.len(), "a request batch panicked in the backend");
                    let structured = export.negotiated.structured;
                    jobs.iter()
                        .map(|job| error_reply(structured, job.request.cookie, proto::EIO, "internal error"))
                        .collect()
                }
            };
            for (job, bytes) in jobs.into_iter().zip(replies) {
                export.buffers.give(job.payload);
                if !send_reply(&export, &tx, Reply { bytes, _permits: job.permits }) {
                    return;
                }
            }
        }
    }));
}

/// Writes that need no waiting are done on the reader's own thread ([`ImageIo::try_write_now`]), and their replies
/// handed to the writer task: a short write takes microseconds, and waking a blocking thread for it cost more than
/// the write (a third of the server's CPU with sixteen clients writing and flushing). Flushes, and FUA writes done
/// here, go to the backend's group commit without a thread ([`flush_later`]), or, for a request `alone` in its
/// batch, are done here when that is one sync no other flush waits for ([`flush_here`]). Gives the job back when it
/// was not answered or handed over.
fn answer_now(export: &Export, tx: &mpsc::Sender<Reply>, job: Job, alone: bool) -> Option<Job> {
    let request = &job.request;
    if request.command == Command::Flush {
        return flush_here(export, tx, job, alone);
    }
    if request.command != Command::Write || job.payload.is_empty() || job.payload.len() > INLINE_WRITE_MAX {
        return Some(job);
    }
    let Some(result) = export.io.try_write_now(request.offset, &job.payload) else { return Some(job) };
    if request.has(proto::CMD_FLAG_FUA) && result.is_ok() {
        // Durable once answered: the reply waits for a flush that covers the write. Were the flush refused, the
        // worker writes the same bytes again and flushes, which changes nothing a client may rely on.
        return flush_here(export, tx, job, alone);
    }
    reply_now(export, tx, job, result);
    None
}

/// Hands the reply of a request answered on the reader's thread to the writer task, and its payload buffer back.
fn reply_now(export: &Export, tx: &mpsc::Sender<Reply>, job: Job, result: Result<()>) {
    let bytes = finish(&job.request, export.negotiated.structured, Vec::new(), result.map(|()| Vec::new()));
    export.buffers.give(job.payload);
    // The channel has room for every request in flight, and this one holds its slot until the reply is sent; an
    // error means the connection is going away.
    let _ = tx.try_send(Reply { bytes, _permits: job.permits });
}

/// Answers a flush (or a FUA write done already) on this thread when it is `alone` and the backend can make it
/// durable with one sync that nobody else waits for ([`ImageIo::try_flush_now`]): a client that writes and flushes
/// one request at a time then waits for the disk alone, not also for a sync thread to wake and for this runtime to
/// be woken with the reply. The thread is held for that one sync; the runtime's other workers go on meanwhile (with
/// a single worker, everything would wait, so the flush goes to [`flush_later`] there, as it does otherwise).
fn flush_here(export: &Export, tx: &mpsc::Sender<Reply>, job: Job, alone: bool) -> Option<Job> {
    let several_workers =
        || tokio::runtime::Handle::try_current().is_ok_and(|runtime| runtime.metrics().num_workers() > 1);
    let Some(result) = (alone && several_workers()).then(|| export.io.try_flush_now()).flatten() else {
        return flush_later(export, tx, job);
    };
    reply_now(export, tx, job, result);
    None
}

/// Hands a flush (or a FUA write done already) to the backend's group commit with a callback that sends its reply
/// ([`ImageIo::flush_async`]): no thread is woken for it, nor parked until the sync (with sixteen clients each
/// writing and flushing, the blocking worker of each flush cost a context switch of its own at both ends). Gives the
/// job back when the backend cannot.
fn flush_later(export: &Export, tx: &mpsc::Sender<Reply>, job: Job) -> Option<Job> {
    // Where both the callback and a refusal can take the job from.
    let slot = Arc::new(std::sync::Mutex::new(Some(job)));
    let take =
        |slot: &std::sync::Mutex<Option<Job>>| slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    let (taken, tx, structured, buffers) =
        (slot.clone(), tx.clone(), export.negotiated.structured, export.buffers.clone());
    let done: FlushDone = Box::new(move |result| {
        let Some(job) = take(&taken) else { return };
        // A FUA write's payload, kept until now for a worker to write again had the flush been refused.
        buffers.give(job.payload);
        let bytes = finish(&job.request, structured, Vec::new(), result.map(|()| Vec::new()));
        // As in `answer_now`: the reply's slot is held by the job, and an error means the connection is going
        // away. Sent from whatever thread ended the sync, which must not block.
        let _ = tx.try_send(Reply { bytes, _permits: job.permits });
    });
    match export.io.flush_async(done) {
        Ok(()) => None,
        Err(_) => take(&slot),
    }
}

/// Takes a permit at once if one is free; otherwise first hands the pending jobs to a worker (they hold permits that
/// must come back), then waits.
async fn permit_or_dispatch(
    budget: &Arc<Semaphore>,
    count: u32,
    batch: &mut Vec<Job>,
    export: &Arc<Export>,
    tx: &mpsc::Sender<Reply>,
) -> Result<Option<OwnedSemaphorePermit>, ConnError> {
    if count == 0 {
        return Ok(None);
    }
    if let Ok(permit) = budget.clone().try_acquire_many_owned(count) {
        return Ok(Some(permit));
    }
    dispatch(batch, export, tx);
    acquire_bytes(budget, count).await
}

async fn read_requests<R: AsyncRead + Unpin>(
    mut reader: BufReader<R>,
    tx: mpsc::Sender<Reply>,
    export: Arc<Export>,
    budgets: Budgets,
    mut shutdown: watch::Receiver<bool>,
    client: &str,
) -> Result<(), ConnError> {
    let shared = &budgets.shared;
    let limits = &shared.limits;
    let slots = Arc::new(Semaphore::new(limits.max_in_flight_per_connection.max(1)));
    let connection_bytes =
        Arc::new(Semaphore::new(limits.buffer_bytes_per_connection.max(proto::MAX_PAYLOAD_BYTES as usize)));
    let mut batch: Vec<Job> = Vec::with_capacity(BATCH_MAX);
    loop {
        // Keep collecting while the next request header is already buffered; otherwise start the batch before
        // waiting on the socket.
        if batch.len() >= BATCH_MAX || reader.buffer().len() < proto::REQUEST_HEADER_LEN {
            dispatch(&mut batch, &export, &tx);
        }
        let mut header_bytes = [0u8; proto::REQUEST_HEADER_LEN];
        tokio::select! {
            biased;
            () = shutdown_requested(&mut shutdown) => {
                // Stop taking requests; those in flight complete and are answered before the socket closes.
                tracing::info!(client, "shutting down: closing the connection after in-flight requests");
                dispatch(&mut batch, &export, &tx);
                return Ok(());
            }
            read = reader.read_exact(&mut header_bytes) => match read {
                Ok(_) => {}
                // A client that closes without NBD_CMD_DISC has still ended the session.
                Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => {
                    dispatch(&mut batch, &export, &tx);
                    return Ok(());
                }
                Err(err) => return Err(err.into()),
            },
        }
        let header = proto::parse_request_header(&header_bytes)?;
        let decision = proto::decode_request(&header, &export.negotiated)?;
        let slot = match permit_or_dispatch(&slots, 1, &mut batch, &export, &tx).await? {
            Some(slot) => slot,
            None => return Err(ConnError::Refused("in-flight window closed".into())),
        };
        match decision {
            Decision::Disconnect => {
                dispatch(&mut batch, &export, &tx);
                return Ok(());
            }
            Decision::Reject { cookie, error, message } => {
                skip_payload(&mut reader, proto::payload_len(&header)).await?;
                tracing::debug!(client, command = header.command, error, message, "request refused");
                let bytes = error_reply(export.negotiated.structured, cookie, error, &message);
                let permits =
                    Permits { _slot: slot, _connection_bytes: None, _address_bytes: None, _total_bytes: None };
                if tx.send(Reply { bytes, _permits: permits }).await.is_err() {
                    return Ok(());
                }
            }
            Decision::Execute(request) => {
                let buffered = match request.command {
                    Command::Read | Command::Write => request.length,
                    _ => 0,
                };
                // Always in this order (connection, address, server), so no two connections wait on each other.
                let connection = permit_or_dispatch(&connection_bytes, buffered, &mut batch, &export, &tx).await?;
                let address = match &budgets.address {
                    Some(budget) => permit_or_dispatch(budget, buffered, &mut batch, &export, &tx).await?,
                    None => None,
                };
                let permits = Permits {
                    _slot: slot,
                    _connection_bytes: connection,
                    _address_bytes: address,
                    _total_bytes: permit_or_dispatch(&shared.memory, buffered, &mut batch, &export, &tx).await?,
                };
                let payload = if request.command == Command::Write {
                    if reader.buffer().len() < request.length as usize {
                        // The payload is still on its way: let the batch run meanwhile.
                        dispatch(&mut batch, &export, &tx);
                    }
                    let mut payload = export.buffers.take(request.length as usize);
                    read_payload(&mut reader, &mut payload, request.length as usize).await?;
                    payload
                } else {
                    Vec::new()
                };
                batch.push(Job { request, payload, permits });
            }
        }
    }
}

/// Reads a write's `len` bytes into the empty `payload`, straight into its spare capacity (no zeroing first).
async fn read_payload<R: AsyncRead + Unpin>(reader: &mut R, payload: &mut Vec<u8>, len: usize) -> std::io::Result<()> {
    payload.reserve_exact(len);
    while payload.len() < len {
        let want = (len - payload.len()) as u64;
        if (&mut *reader).take(want).read_buf(payload).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(())
}

async fn acquire_bytes(budget: &Arc<Semaphore>, bytes: u32) -> Result<Option<OwnedSemaphorePermit>, ConnError> {
    if bytes == 0 {
        return Ok(None);
    }
    match budget.clone().acquire_many_owned(bytes).await {
        Ok(permit) => Ok(Some(permit)),
        Err(_) => Err(ConnError::Refused("buffer budget closed".into())),
    }
}

/// Reads and discards a refused write's payload, so the next request header is found where it should be.
async fn skip_payload<R: AsyncRead + Unpin>(reader: &mut R, length: u32) -> Result<(), ConnError> {
    let mut remaining = u64::from(length);
    let mut scratch = [0u8; 8192];
    while remaining > 0 {
        let n = remaining.min(scratch.len() as u64) as usize;
        reader.read_exact(&mut scratch[..n]).await?;
        remaining -= n as u64;
    }
    Ok(())
}

// --- workers (blocking) --------------------------------------------------------------------------------------------

/// Maps a backend error kind to an NBD error value.
pub(crate) fn nbd_error(kind: ErrorKind) -> u32 {
    match kind {
        ErrorKind::NotPermitted | ErrorKind::ReadOnly => proto::EPERM,
        ErrorKind::NoSpace | ErrorKind::QuotaExceeded => proto::ENOSPC,
        ErrorKind::InvalidArgument | ErrorKind::OutOfRange | ErrorKind::OutOfDomain => proto::EINVAL,
        ErrorKind::NotSupported | ErrorKind::NotImplemented => proto::ENOTSUP,
        _ => proto::EIO,
    }
}

/// An error reply: a structured error chunk with a message when allowed, else a simple reply.
fn error_reply(structured: bool, cookie: u64, error: u32, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(proto::CHUNK_HEADER_LEN + 6 + message.len());
    if structured {
        proto::error_chunk(&mut out, cookie, error, message);
    } else {
        proto::simple_reply(&mut out, cookie, error);
    }
    out
}

fn backend_error_reply(structured: bool, cookie: u64, err: &basalt_core::Error) -> Vec<u8> {
    error_reply(structured, cookie, nbd_error(err.kind()), err.message())
}

/// Carries out one request and returns the encoded reply.
/// Answers a batch: requests that need no I/O (errors, block status, empty requests) at once, the others in one
/// [`ImageIo::run_batch`] call, so a backend with network latency keeps them in flight together.
fn execute_batch(export: &Export, jobs: &[Job]) -> Vec<Vec<u8>> {
    let io = &*export.io;
    let structured = export.negotiated.structured;
    let mut replies: Vec<Option<Vec<u8>>> = Vec::with_capacity(jobs.len());
    let mut buffers: Vec<Vec<u8>> = Vec::with_capacity(jobs.len());
    // One size for the batch: every request is checked against it.
    let size = io.size_bytes();
    for job in jobs {
        let (reply, buffer) = prepare(io, size, &job.request, structured, &export.buffers);
        replies.push(reply);
        buffers.push(buffer);
    }
    let mut requests = Vec::with_capacity(jobs.len());
    let mut owners = Vec::with_capacity(jobs.len());
    for (index, ((job, buffer), reply)) in jobs.iter().zip(buffers.iter_mut()).zip(&replies).enumerate() {
        if reply.is_some() {
            continue;
        }
        let request = &job.request;
        let durability =
            if request.has(proto::CMD_FLAG_FUA) { Durability::ForceUnitAccess } else { Durability::Buffered };
        let (offset, length) = (request.offset, u64::from(request.length));
        requests.push(match request.command {
            Command::Read => {
                let start = if structured { DATA_CHUNK_PREFIX } else { proto::SIMPLE_REPLY_LEN };
                IoRequest::Read { offset, buf: &mut buffer[start..] }
            }
            Command::Write => IoRequest::Write { offset, data: &job.payload, durability },
            Command::Trim => IoRequest::Discard { offset, length, durability },
            Command::WriteZeroes => {
                let mode =
                    if request.has(proto::CMD_FLAG_NO_HOLE) { ZeroMode::KeepAllocated } else { ZeroMode::MayUnmap };
                IoRequest::WriteZeroes { offset, length, mode, durability }
            }
            Command::Flush => IoRequest::Flush,
            // Answered by `prepare`.
            Command::Cache | Command::BlockStatus => continue,
        });
        owners.push(index);
    }
    let results = if requests.is_empty() { Vec::new() } else { io.run_batch(&mut requests) };
    drop(requests);
    for (index, result) in owners.into_iter().zip(results) {
        let buffer = std::mem::take(&mut buffers[index]);
        replies[index] = Some(finish(&jobs[index].request, structured, buffer, result));
    }
    replies
        .into_iter()
        .zip(jobs)
        .map(|(reply, job)| {
            reply.unwrap_or_else(|| {
                error_reply(structured, job.request.cookie, proto::EIO, "the backend gave no result")
            })
        })
        .collect()
}

/// Either the reply of a request that needs no I/O, or the buffer its read goes into (empty for other requests).
fn prepare(
    io: &dyn ImageIo,
    size: u64,
    request: &Request,
    structured: bool,
    buffers: &Buffers,
) -> (Option<Vec<u8>>, Vec<u8>) {
    let cookie = request.cookie;
    let length = u64::from(request.length);
    let ok = || {
        let mut out = Vec::with_capacity(proto::SIMPLE_REPLY_LEN);
        proto::simple_reply(&mut out, cookie, 0);
        out
    };
    if request.command != Command::Flush && request.offset.checked_add(length).is_none_or(|end| end > size) {
        // The spec asks for ENOSPC on writes past the end and EINVAL on other out-of-range requests.
        let error = match request.command {
            Command::Write | Command::Trim | Command::WriteZeroes => proto::ENOSPC,
            _ => proto::EINVAL,
        };
        let message = format!(
            "request at offset {} length {} is beyond the end of the export ({size} bytes)",
            request.offset, request.length
        );
        return (Some(error_reply(structured, cookie, error, &message)), Vec::new());
    }
    match request.command {
        Command::BlockStatus => (Some(block_status_reply(io, request)), Vec::new()),
        // Reads are served from the backend's own cache; there is nothing useful to prefetch.
        Command::Cache => (Some(ok()), Vec::new()),
        Command::Write | Command::Trim | Command::WriteZeroes if length == 0 => (Some(ok()), Vec::new()),
        Command::WriteZeroes if request.has(proto::CMD_FLAG_NO_HOLE) && request.has(proto::CMD_FLAG_FAST_ZERO) => {
            // Keeping the range allocated means writing zeros block by block: not fast.
            let message = "zeroing without punching holes writes every byte and is not fast";
            (Some(error_reply(structured, cookie, proto::ENOTSUP, message)), Vec::new())
        }
        Command::Read if structured && length == 0 => {
            let mut out = Vec::with_capacity(proto::CHUNK_HEADER_LEN);
            proto::none_chunk(&mut out, cookie);
            (Some(out), Vec::new())
        }
        // A simple reply is built in place: header, then the data read straight into the reply buffer.
        Command::Read if !structured => (None, buffers.take_zeroed(proto::SIMPLE_REPLY_LEN + length as usize)),
        // Room for a data chunk's header in front, so a read that is all data is answered in place.
        Command::Read => (None, buffers.take_zeroed(DATA_CHUNK_PREFIX + length as usize)),
        _ => (None, Vec::new()),
    }
}

/// The reply of a request that ran, from its result (and, for reads, the data).
fn finish(request: &Request, structured: bool, buffer: Vec<u8>, result: Result<Vec<BlockExtent>>) -> Vec<u8> {
    let cookie = request.cookie;
    match (request.command, result) {
        (_, Err(err)) => backend_error_reply(structured, cookie, &err),
        (Command::Read, Ok(_)) if !structured => {
            let mut out = buffer;
            proto::put_simple_reply(&mut out, cookie, 0);
            out
        }
        (Command::Read, Ok(extents)) => {
            let chunks =
                plan_read(request.offset, u64::from(request.length), &extents, request.has(proto::CMD_FLAG_DF));
            if let [chunk] = chunks.as_slice()
                && !chunk.hole
            {
                // One data chunk: the header goes in front of the data already in the buffer, no copy.
                let mut out = buffer;
                let length = request.length;
                proto::put_chunk_header(
                    &mut out,
                    proto::REPLY_FLAG_DONE,
                    proto::REPLY_TYPE_OFFSET_DATA,
                    cookie,
                    8 + length,
                );
                out[proto::CHUNK_HEADER_LEN..DATA_CHUNK_PREFIX].copy_from_slice(&request.offset.to_be_bytes());
                out
            } else {
                structured_read_reply(request, &buffer[DATA_CHUNK_PREFIX..], &extents)
            }
        }
        (_, Ok(_)) => {
            let mut out = Vec::with_capacity(proto::SIMPLE_REPLY_LEN);
            proto::simple_reply(&mut out, cookie, 0);
            out
        }
    }
}

/// A piece of a structured read reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReadChunk {
    /// Image offset.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
    /// True for an `OFFSET_HOLE` chunk, false for `OFFSET_DATA`.
    pub hole: bool,
}

/// Splits the read of `[offset, offset + length)` into data and hole chunks from the block status `extents`.
///
/// Ranges the extents do not cover are read as data. Short holes are folded into data; with `dont_fragment`
/// there is exactly one chunk, a hole only if the whole range is one.
pub(crate) fn plan_read(offset: u64, length: u64, extents: &[BlockExtent], dont_fragment: bool) -> Vec<ReadChunk> {
    let end = offset + length;
    let mut spans: Vec<ReadChunk> = Vec::new();
    let push = |spans: &mut Vec<ReadChunk>, chunk: ReadChunk| match spans.last_mut() {
        Some(last) if last.hole == chunk.hole && last.offset + last.length == chunk.offset => {
            last.length += chunk.length;
        }
        _ => spans.push(chunk),
    };
    let mut at = offset;
    for extent in extents {
        let start = extent.offset.max(at);
        let stop = extent.offset.saturating_add(extent.length).min(end);
        if stop <= start {
            continue;
        }
        if start > at {
            push(&mut spans, ReadChunk { offset: at, length: start - at, hole: false });
        }
        push(&mut spans, ReadChunk { offset: start, length: stop - start, hole: extent.state == BlockState::Hole });
        at = stop;
    }
    if at < end {
        push(&mut spans, ReadChunk { offset: at, length: end - at, hole: false });
    }
    if spans.len() == 1 || spans.iter().all(|s| s.hole) {
        return vec![ReadChunk { offset, length, hole: spans.first().is_some_and(|s| s.hole) }];
    }
    if dont_fragment {
        return vec![ReadChunk { offset, length, hole: false }];
    }
    let mut chunks = Vec::with_capacity(spans.len());
    for span in spans {
        let hole = span.hole && span.length >= MIN_HOLE_CHUNK_BYTES;
        push(&mut chunks, ReadChunk { hole, ..span });
    }
    chunks
}

/// A structured read reply: data chunks, and hole chunks where the extents say the range reads as zeros.
fn structured_read_reply(request: &Request, data: &[u8], extents: &[BlockExtent]) -> Vec<u8> {
    let cookie = request.cookie;
    let chunks = plan_read(request.offset, u64::from(request.length), extents, request.has(proto::CMD_FLAG_DF));
    let total: usize =
        chunks.iter().map(|c| proto::CHUNK_HEADER_LEN + if c.hole { 12 } else { 8 + c.length as usize }).sum();
    let mut out = vec![0u8; total];
    let mut at = 0usize;
    let last = chunks.len() - 1;
    for (index, chunk) in chunks.iter().enumerate() {
        let flags = if index == last { proto::REPLY_FLAG_DONE } else { 0 };
        let body = at + proto::CHUNK_HEADER_LEN;
        // Chunk lengths fit: a read is at most MAX_PAYLOAD_BYTES.
        let chunk_len = chunk.length as u32;
        if chunk.hole {
            proto::put_chunk_header(&mut out[at..], flags, proto::REPLY_TYPE_OFFSET_HOLE, cookie, 12);
            out[body..body + 8].copy_from_slice(&chunk.offset.to_be_bytes());
            out[body + 8..body + 12].copy_from_slice(&chunk_len.to_be_bytes());
            at = body + 12;
        } else {
            proto::put_chunk_header(&mut out[at..], flags, proto::REPLY_TYPE_OFFSET_DATA, cookie, 8 + chunk_len);
            out[body..body + 8].copy_from_slice(&chunk.offset.to_be_bytes());
            let target = body + 8..body + 8 + chunk.length as usize;
            let from = (chunk.offset - request.offset) as usize;
            out[target.clone()].copy_from_slice(&data[from..from + chunk.length as usize]);
            at = target.end;
        }
    }
    debug_assert_eq!(at, total);
    out
}

/// Turns block status extents into `base:allocation` descriptors covering at most `[offset, offset + length)`.
pub(crate) fn descriptors(offset: u64, length: u64, extents: &[BlockExtent], req_one: bool) -> Vec<Descriptor> {
    let end = offset + length;
    let mut out: Vec<Descriptor> = Vec::new();
    let mut at = offset;
    let push = |out: &mut Vec<Descriptor>, len: u64, flags: u32| {
        // Lengths fit in u32: the range is at most a request's u32 length.
        let len = len as u32;
        match out.last_mut() {
            Some(last) if last.flags == flags => last.length += len,
            _ => out.push(Descriptor { length: len, flags }),
        }
    };
    for extent in extents {
        if out.len() >= MAX_DESCRIPTORS {
            break;
        }
        let start = extent.offset.max(at);
        let stop = extent.offset.saturating_add(extent.length).min(end);
        if stop <= start {
            continue;
        }
        if start > at {
            // Status unknown: zero flags claim nothing.
            push(&mut out, start - at, 0);
        }
        let flags = match extent.state {
            BlockState::Hole => proto::STATE_HOLE | proto::STATE_ZERO,
            BlockState::Data => 0,
        };
        push(&mut out, stop - start, flags);
        at = stop;
    }
    if out.is_empty() {
        out.push(Descriptor { length: length as u32, flags: 0 });
    }
    if req_one {
        out.truncate(1);
    }
    out
}

fn block_status_reply(io: &dyn ImageIo, request: &Request) -> Vec<u8> {
    let length = u64::from(request.length).min(BLOCK_STATUS_MAX_BYTES);
    match io.block_status(request.offset, length) {
        Ok(extents) => {
            let descriptors = descriptors(request.offset, length, &extents, request.has(proto::CMD_FLAG_REQ_ONE));
            let mut out = Vec::with_capacity(proto::CHUNK_HEADER_LEN + 4 + 8 * descriptors.len());
            proto::block_status_chunk(&mut out, request.cookie, crate::handshake::BASE_ALLOCATION_ID, &descriptors);
            out
        }
        Err(err) => backend_error_reply(true, request.cookie, &err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extent(offset: u64, length: u64, hole: bool) -> BlockExtent {
        BlockExtent { offset, length, state: if hole { BlockState::Hole } else { BlockState::Data } }
    }

    fn chunk(offset: u64, length: u64, hole: bool) -> ReadChunk {
        ReadChunk { offset, length, hole }
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn reads_of_holes_are_one_hole_chunk() {
        assert_eq!(plan_read(4096, 4096, &[extent(4096, 4096, true)], false), [chunk(4096, 4096, true)]);
        assert_eq!(plan_read(0, MIB, &[extent(0, MIB, true)], true), [chunk(0, MIB, true)]);
    }

    #[test]
    fn large_holes_become_hole_chunks_and_small_ones_data() {
        let extents = [
            extent(0, 4096, false),
            extent(4096, 4096, true),
            extent(8192, MIB, true),
            extent(8192 + MIB, 4096, false),
        ];
        // Both hole extents merge into one span longer than the minimum.
        assert_eq!(
            plan_read(0, 2 * 4096 + MIB + 4096, &extents, false),
            [chunk(0, 4096, false), chunk(4096, 4096 + MIB, true), chunk(8192 + MIB, 4096, false)]
        );
        let extents = [extent(0, 4096, false), extent(4096, 4096, true), extent(8192, 4096, false)];
        assert_eq!(plan_read(0, 3 * 4096, &extents, false), [chunk(0, 3 * 4096, false)]);
    }

    #[test]
    fn dont_fragment_sends_one_data_chunk_for_mixed_ranges() {
        let extents = [extent(0, MIB, true), extent(MIB, 4096, false)];
        assert_eq!(plan_read(0, MIB + 4096, &extents, true), [chunk(0, MIB + 4096, false)]);
    }

    #[test]
    fn uncovered_ranges_are_read_as_data_and_extents_are_clipped() {
        // The extents start before and end after the request, and leave a gap.
        let extents = [extent(0, 2 * MIB, true), extent(3 * MIB, 4 * MIB, true)];
        assert_eq!(
            plan_read(MIB, 3 * MIB, &extents, false),
            [chunk(MIB, MIB, true), chunk(2 * MIB, MIB, false), chunk(3 * MIB, MIB, true)]
        );
        assert_eq!(plan_read(100, 50, &[], false), [chunk(100, 50, false)]);
    }

    #[test]
    fn descriptors_mark_holes_as_zero_and_honour_req_one() {
        let extents = [extent(0, 4096, false), extent(4096, 8192, true), extent(12288, 4096, true)];
        let all = descriptors(0, 16384, &extents, false);
        assert_eq!(
            all,
            [
                Descriptor { length: 4096, flags: 0 },
                Descriptor { length: 12288, flags: proto::STATE_HOLE | proto::STATE_ZERO }
            ]
        );
        assert_eq!(descriptors(0, 16384, &extents, true), [Descriptor { length: 4096, flags: 0 }]);
        assert_eq!(descriptors(0, 100, &[], false), [Descriptor { length: 100, flags: 0 }]);
        // Clipped to the request.
        assert_eq!(descriptors(4096, 100, &extents, false), [Descriptor { length: 100, flags: 3 }]);
    }

    #[test]
    fn backend_errors_map_to_nbd_errors() {
        assert_eq!(nbd_error(ErrorKind::ReadOnly), proto::EPERM);
        assert_eq!(nbd_error(ErrorKind::NotPermitted), proto::EPERM);
        assert_eq!(nbd_error(ErrorKind::NoSpace), proto::ENOSPC);
        assert_eq!(nbd_error(ErrorKind::QuotaExceeded), proto::ENOSPC);
        assert_eq!(nbd_error(ErrorKind::InvalidArgument), proto::EINVAL);
        assert_eq!(nbd_error(ErrorKind::NotSupported), proto::ENOTSUP);
        assert_eq!(nbd_error(ErrorKind::Io), proto::EIO);
        assert_eq!(nbd_error(ErrorKind::Busy), proto::EIO);
    }
}
