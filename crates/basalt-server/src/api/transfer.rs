//! Streaming an image out and in as an RBD diff stream (`rbd export-diff` / `import-diff` format, version 1):
//! `GET .../export` writes the changes between two points (from nothing for a full export), `POST .../import_diff`
//! applies a stream. Both stream through bounded channels, so memory stays flat whatever the image size.

use std::io::{Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body as HttpBody, Bytes};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use basalt_core::rbd_diff::{DiffReader, DiffRecord, DiffVersion, DiffWriter};
use basalt_core::{
    Backend, DiffGranularity, Durability, Error, ImageSpec, OpenTarget, ResizePolicy, SnapName, SnapSpec, ZeroMode,
};
use futures_core::Stream as _;
use serde::Deserialize;
use serde_json::json;

use super::misc::{RBD_READ, RBD_UPDATE};
use super::{Params, parse};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Chunks in flight between the disk thread and the connection.
const CHANNEL_CHUNKS: usize = 8;
/// Size of a chunk on the wire and of a data record.
const CHUNK_BYTES: usize = 1 << 20;

type Chunk = Result<Bytes, std::io::Error>;

/// The receiving end of the export channel as a body stream.
struct ChunkStream(tokio::sync::mpsc::Receiver<Chunk>);

impl futures_core::Stream for ChunkStream {
    type Item = Chunk;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Chunk>> {
        self.0.poll_recv(cx)
    }
}

/// A blocking writer that hands full chunks to the connection.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Chunk>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK_BYTES {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExportQuery {
    /// The end point: a snapshot, or the head when absent.
    snap: Option<String>,
    /// The start point; absent means from nothing (a full export).
    from_snap: Option<String>,
}

fn snap_name(name: Option<String>) -> ApiResult<Option<SnapName>> {
    name.filter(|s| !s.is_empty()).map(SnapName::new).transpose().map_err(ApiError::from)
}

/// Writes the diff stream of `spec` between `from` and `to` into `out`.
fn write_export(
    backend: &dyn Backend,
    spec: &ImageSpec,
    from: Option<&SnapName>,
    to: Option<&SnapName>,
    out: impl Write,
) -> basalt_core::Result<()> {
    let target = match to {
        Some(name) => OpenTarget::Snapshot(name.clone()),
        None => OpenTarget::HeadReadOnly,
    };
    let image = backend.open(spec, &target, "export")?;
    let extents = backend.diff(spec, from, to, DiffGranularity::Fine)?;
    let mut writer = DiffWriter::new(out, DiffVersion::V1)?;
    if let Some(from) = from {
        writer.write_record(&DiffRecord::FromSnap(from.as_str().to_owned()))?;
    }
    if let Some(to) = to {
        writer.write_record(&DiffRecord::ToSnap(to.as_str().to_owned()))?;
    }
    writer.write_record(&DiffRecord::Size(image.size_bytes()))?;
    for extent in extents {
        if !extent.exists {
            writer.write_record(&DiffRecord::Zero { offset: extent.offset, length: extent.length })?;
            continue;
        }
        let mut at = extent.offset;
        let end = extent.offset + extent.length;
        while at < end {
            let n = (end - at).min(CHUNK_BYTES as u64);
            let mut data = vec![0u8; n as usize];
            image.read(at, &mut data)?;
            writer.write_record(&DiffRecord::Data { offset: at, data })?;
            at += n;
        }
    }
    let mut out = writer.finish()?;
    out.flush()?;
    Ok(())
}

pub(crate) async fn export(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(spec): Path<String>,
    Params(query): Params<ExportQuery>,
) -> ApiResult<Response> {
    who.require(RBD_READ)?;
    let spec = parse(ImageSpec::parse(&spec))?;
    let to = snap_name(query.snap)?;
    let from = snap_name(query.from_snap)?;
    // Check what can be checked before the 200 goes out; later failures cut the stream short.
    let (check_spec, check_from, check_to) = (spec.clone(), from.clone(), to.clone());
    state
        .call(move |b| {
            b.image_info(&check_spec)?;
            let snaps = b.snap_list(&check_spec)?;
            for name in [&check_from, &check_to].into_iter().flatten() {
                if !snaps.iter().any(|s| &s.name == name) {
                    return Err(Error::not_found(format!("snapshot '{check_spec}@{name}' does not exist")));
                }
            }
            Ok(())
        })
        .await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Chunk>(CHANNEL_CHUNKS);
    let backend = state.backend.clone();
    tokio::task::spawn_blocking(move || {
        let writer = ChannelWriter { tx: tx.clone(), buf: Vec::with_capacity(CHUNK_BYTES) };
        if let Err(err) = write_export(backend.as_ref(), &spec, from.as_ref(), to.as_ref(), writer) {
            tracing::warn!(image = %spec, error = %err, "export failed part way");
            let _ = tx.blocking_send(Err(std::io::Error::other(err.to_string())));
        }
    });
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], HttpBody::from_stream(ChunkStream(rx))).into_response())
}

/// A blocking reader over chunks arriving from the connection.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Chunk>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(err)) => return Err(err),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len());
        out[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

/// Applies a diff stream to `spec`, as `rbd import-diff` does: the from-snapshot must exist and the to-snapshot must
/// not; the image is resized to the stream's size; at the end the to-snapshot is created.
fn apply_diff(backend: &dyn Backend, spec: &ImageSpec, input: impl Read) -> basalt_core::Result<serde_json::Value> {
    let mut reader = DiffReader::new(input)?;
    let snaps = backend.snap_list(spec)?;
    let (mut to_snap, mut protect, mut size) = (None, false, None);
    let mut image: Option<Box<dyn basalt_core::ImageIo>> = None;
    let (mut data_bytes, mut zero_bytes) = (0u64, 0u64);
    while let Some(record) = reader.next_record()? {
        match record {
            DiffRecord::FromSnap(name) => {
                if !snaps.iter().any(|s| s.name.as_str() == name) {
                    // EINVAL, as the reference's import-diff answers.
                    return Err(Error::invalid(format!(
                        "start snapshot '{name}' does not exist in image '{spec}', aborting: import the earlier diff first"
                    )));
                }
            }
            DiffRecord::ToSnap(name) => {
                if snaps.iter().any(|s| s.name.as_str() == name) {
                    return Err(Error::exists(format!("snapshot '{spec}@{name}' already exists")));
                }
                to_snap = Some(SnapName::new(name)?);
            }
            DiffRecord::SnapProtected(p) => protect = p,
            DiffRecord::Size(s) => size = Some(s),
            DiffRecord::Data { offset, data } => {
                let io = open_for_import(backend, spec, &mut image, size)?;
                io.write(offset, &data, Durability::Buffered)?;
                data_bytes += data.len() as u64;
            }
            DiffRecord::Zero { offset, length } => {
                let io = open_for_import(backend, spec, &mut image, size)?;
                io.write_zeroes(offset, length, ZeroMode::MayUnmap, Durability::Buffered)?;
                zero_bytes += length;
            }
        }
    }
    if image.is_none() {
        open_for_import(backend, spec, &mut image, size)?;
    }
    if let Some(io) = image.take() {
        io.flush()?;
    }
    if let Some(name) = to_snap {
        let snap = SnapSpec { image: spec.clone(), snap: name };
        backend.snap_create(&snap)?;
        if protect {
            backend.snap_protect(&snap)?;
        }
    }
    Ok(json!({"data_bytes": data_bytes, "zero_bytes": zero_bytes}))
}

/// Opens the image on first use, after resizing it to the stream's size.
fn open_for_import<'a>(
    backend: &dyn Backend,
    spec: &ImageSpec,
    image: &'a mut Option<Box<dyn basalt_core::ImageIo>>,
    size: Option<u64>,
) -> basalt_core::Result<&'a dyn basalt_core::ImageIo> {
    if image.is_none() {
        if let Some(size) = size {
            backend.image_resize(spec, size, ResizePolicy::AllowShrink)?;
        }
        *image = Some(backend.open(spec, &OpenTarget::Head, "import")?);
    }
    image.as_deref().ok_or_else(|| Error::io("the image could not be opened for import"))
}

pub(crate) async fn import_diff(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(spec): Path<String>,
    body: HttpBody,
) -> ApiResult<Response> {
    who.require(RBD_UPDATE)?;
    let spec = parse(ImageSpec::parse(&spec))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Chunk>(CHANNEL_CHUNKS);
    let backend = state.backend.clone();
    let worker = tokio::task::spawn_blocking(move || {
        apply_diff(backend.as_ref(), &spec, ChannelReader { rx, current: Bytes::new() })
    });
    let mut stream = body.into_data_stream();
    loop {
        let next = std::future::poll_fn(|cx| Pin::new(&mut stream).poll_next(cx)).await;
        match next {
            Some(Ok(chunk)) => {
                if tx.send(Ok(chunk)).await.is_err() {
                    break; // The worker stopped early (bad stream); its error is the answer.
                }
            }
            Some(Err(err)) => {
                let _ = tx.send(Err(std::io::Error::other(err.to_string()))).await;
                break;
            }
            None => break,
        }
    }
    drop(tx);
    let result = worker.await.map_err(|e| ApiError::internal(e.to_string()))?;
    Ok((StatusCode::OK, axum::Json(result.map_err(ApiError::from)?)).into_response())
}
