//! `export`, `import`, `export-diff` and `import-diff`: images and their changes as files, moved through the API's
//! rbd diff streams (`GET .../export`, `POST .../import_diff`) while they are read and written, so memory stays
//! flat whatever the image size.
//!
//! Raw files are sparse both ways: `export` to a file leaves holes where the image has none of its data, and
//! `import` sends only the blocks that are not all zeros, so the new image is thin.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use anyhow::Result;
use basalt_core::rbd_diff::{DiffReader, DiffRecord, DiffVersion, DiffWriter};
use basalt_core::units::parse_size;
use basalt_core::{ImageSpec, SnapName};
use serde_json::{Map, Value, json};

use super::api::{Api, Progress, image_path};
use super::error::Failure;
use super::http::query;
use super::image::{put_layout, put_namespace};
use super::spec::{DestArgs, ImageArgs, SnapArgs, default_location};
use super::{ExportArgs, ExportDiffArgs, ExportSource, ImportArgs, ImportDiffArgs};

/// The path that means stdin or stdout.
const STDIO: &str = "-";

/// rbd's default `--sparse-size`: runs of zeros this long (and aligned to it) are left out of an import.
const SPARSE_SIZE_DEFAULT: u64 = 4 << 10;

/// The largest `--sparse-size`: one data record's worth.
const SPARSE_SIZE_MAX: u64 = RECORD_MAX_BYTES as u64;

/// The most data one record of an import stream carries: well under the reader's bound, and the unit in which
/// the input is read, so memory stays at a few MiB.
const RECORD_MAX_BYTES: usize = 4 << 20;

/// Buffers between the connection and files: large enough that system calls do not dominate.
const IO_BUFFER_BYTES: usize = 1 << 20;

/// An import from stdin cannot know its size in advance, and a stream must state the size before any data, so
/// stdin is sent as a series of streams, each declaring a size that covers the next window of input; the last is
/// followed by one that sets the exact size. Windows double from this size ...
const STDIN_WINDOW_FIRST_BYTES: u64 = 1 << 30;

/// ... up to this one, so a long input needs few requests while the image is never much larger than its data.
const STDIN_WINDOW_MAX_BYTES: u64 = 16 << 30;

/// An I/O error as a one-line failure about `what`, exiting with its errno as rbd does.
fn io_failure(what: &str, err: &io::Error) -> Failure {
    let text = err.to_string();
    // "File exists (os error 17)": the errno is the exit code already.
    let text = match text.find(" (os error ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    };
    let code = err.raw_os_error().and_then(|n| u8::try_from(n).ok()).unwrap_or(1);
    Failure::new(code, format!("{what}: {text}"))
}

/// A diff stream that cannot be read, as a failure with the stream error's errno.
fn stream_failure(what: &str, err: &basalt_core::Error) -> Failure {
    Failure::core(err).with_message(format!("{what}: {}", err.message()))
}

fn nonempty(value: &Option<String>) -> Option<String> {
    value.as_deref().filter(|v| !v.is_empty()).map(str::to_owned)
}

/// True when every byte is zero; compares 16 bytes at a time, as this runs over every byte of an import.
fn is_zero(bytes: &[u8]) -> bool {
    let mut wide = bytes.chunks_exact(16);
    wide.all(|c| c.iter().fold(0u8, |acc, b| acc | b) == 0) && wide.remainder().iter().all(|&b| b == 0)
}

/// The runs of `buf` (which sits at image offset `base`) that hold data: blocks of `sparse` bytes, aligned to
/// image offsets, that are not all zeros, with neighbours merged.
fn data_runs(buf: &[u8], base: u64, sparse: u64) -> Vec<Range<usize>> {
    let mut runs = Vec::new();
    let mut run_start = None;
    let mut at = 0;
    while at < buf.len() {
        let absolute = base + at as u64;
        let to_boundary = sparse - absolute % sparse;
        let block_end = usize::try_from(to_boundary).map_or(buf.len(), |n| at.saturating_add(n).min(buf.len()));
        let zero = is_zero(&buf[at..block_end]);
        match (zero, run_start) {
            (false, None) => run_start = Some(at),
            (true, Some(start)) => {
                runs.push(start..at);
                run_start = None;
            }
            _ => {}
        }
        at = block_end;
    }
    if let Some(start) = run_start {
        runs.push(start..buf.len());
    }
    runs
}

impl ExportSource {
    /// The image, the snapshot and the output path, from `SPEC FILE` or the options, as rbd reads them: the spec
    /// comes first unless `--image` names the image, and the path next unless `--path` gives it.
    fn resolve(&self) -> Result<(ImageSpec, Option<SnapName>, String), Failure> {
        let mut positional = [&self.first, &self.second].into_iter().filter_map(nonempty);
        let spec = if nonempty(&self.image).is_some() { None } else { positional.next() };
        let path = match nonempty(&self.path) {
            Some(path) => path,
            None => positional.next().ok_or_else(|| Failure::invalid("path was not specified"))?,
        };
        if let Some(extra) = positional.next() {
            return Err(Failure::invalid(format!("too many arguments: '{extra}'")));
        }
        let args = SnapArgs {
            spec,
            pool: self.pool.clone(),
            namespace: self.namespace.clone(),
            image: self.image.clone(),
            snap: self.snap.clone(),
        };
        let (image, snap) = args.image_and_snap()?;
        Ok((image, snap, path))
    }
}

/// A file this command created, removed again unless the command succeeds, so a failed export leaves no
/// truncated file that looks like a good one.
#[derive(Debug)]
struct CreatedFile {
    file: File,
    path: String,
    keep: bool,
}

impl CreatedFile {
    /// Creates `path`, which must not exist (as rbd's O_EXCL: an export never overwrites anything).
    fn create(path: &str) -> Result<CreatedFile, Failure> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(path)
            .map_err(|e| io_failure(&format!("cannot create '{path}'"), &e))?;
        Ok(CreatedFile { file, path: path.to_owned(), keep: false })
    }
}

impl Drop for CreatedFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Where an exported image goes: a file written sparsely, or a stream written in order.
trait RawSink {
    /// The image size, from the stream's size record.
    fn set_size(&mut self, size: u64) -> Result<(), Failure>;
    /// Bytes at an image offset; offsets only grow.
    fn data(&mut self, offset: u64, bytes: &[u8]) -> Result<(), Failure>;
    /// The end of the image.
    fn finish(&mut self, size: u64) -> Result<(), Failure>;
}

/// A new file: its length is set to the image size, and only blocks holding data are written, so everything else
/// stays a hole.
struct FileSink<'a> {
    file: &'a File,
    path: &'a str,
}

impl RawSink for FileSink<'_> {
    fn set_size(&mut self, size: u64) -> Result<(), Failure> {
        self.file.set_len(size).map_err(|e| io_failure(&format!("writing '{}'", self.path), &e))
    }

    fn data(&mut self, offset: u64, bytes: &[u8]) -> Result<(), Failure> {
        for run in data_runs(bytes, offset, SPARSE_SIZE_DEFAULT) {
            let at = offset + run.start as u64;
            self.file.write_all_at(&bytes[run], at).map_err(|e| io_failure(&format!("writing '{}'", self.path), &e))?;
        }
        Ok(())
    }

    fn finish(&mut self, _size: u64) -> Result<(), Failure> {
        Ok(())
    }
}

/// A stream (stdout): every byte in order, zeros written out for the ranges without data.
struct StreamSink<W: Write> {
    out: W,
    cursor: u64,
}

impl<W: Write> StreamSink<W> {
    fn zeros_to(&mut self, offset: u64) -> Result<(), Failure> {
        static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
        while self.cursor < offset {
            let n = (offset - self.cursor).min(ZEROS.len() as u64) as usize;
            self.out.write_all(&ZEROS[..n]).map_err(|e| io_failure("writing to stdout", &e))?;
            self.cursor += n as u64;
        }
        Ok(())
    }
}

impl<W: Write> RawSink for StreamSink<W> {
    fn set_size(&mut self, _size: u64) -> Result<(), Failure> {
        Ok(())
    }

    fn data(&mut self, offset: u64, bytes: &[u8]) -> Result<(), Failure> {
        if offset < self.cursor {
            return Err(Failure::new(
                1,
                format!("the server's export goes back to offset {offset} after {}", self.cursor),
            ));
        }
        self.zeros_to(offset)?;
        self.out.write_all(bytes).map_err(|e| io_failure("writing to stdout", &e))?;
        self.cursor += bytes.len() as u64;
        Ok(())
    }

    fn finish(&mut self, size: u64) -> Result<(), Failure> {
        self.zeros_to(size)?;
        self.out.flush().map_err(|e| io_failure("writing to stdout", &e))
    }
}

/// Reads a full-image diff stream and writes the image it describes into `sink`.
fn write_raw(source: impl Read, sink: &mut dyn RawSink, progress: &mut Progress, what: &str) -> Result<(), Failure> {
    let fail = |e: basalt_core::Error| stream_failure(what, &e);
    let mut reader = DiffReader::new(BufReader::with_capacity(IO_BUFFER_BYTES, source)).map_err(fail)?;
    let mut size = None;
    while let Some(record) = reader.next_record().map_err(fail)? {
        let (offset, length) = match &record {
            DiffRecord::Size(s) => {
                sink.set_size(*s)?;
                size = Some(*s);
                continue;
            }
            DiffRecord::Data { offset, data } => (*offset, data.len() as u64),
            DiffRecord::Zero { offset, length } => (*offset, *length),
            DiffRecord::FromSnap(_) | DiffRecord::ToSnap(_) | DiffRecord::SnapProtected(_) => continue,
        };
        let size = size.ok_or_else(|| Failure::new(1, format!("{what}: the stream has data before its size")))?;
        if offset.saturating_add(length) > size {
            return Err(Failure::new(
                1,
                format!("{what}: the extent {offset}~{length} lies past the image size {size}"),
            ));
        }
        // Zero extents need nothing: a new file reads zeros in its holes, and a stream fills gaps with zeros.
        if let DiffRecord::Data { offset, data } = &record {
            sink.data(*offset, data)?;
        }
        progress.update_bytes(offset + length, size);
    }
    let size = size.ok_or_else(|| Failure::new(1, format!("{what}: the stream has no size record")))?;
    sink.finish(size)
}

/// Ends a progress line the way the outcome calls for: `done.` or erased, so a failure is the only line.
fn end_progress<T>(progress: &mut Progress, outcome: &Result<T>) {
    match outcome {
        Ok(_) => progress.done(),
        Err(_) => progress.clear(),
    }
}

/// `export [--snap S] spec[@snap] FILE|-`: the raw image, sparse in a file, every byte in order on stdout.
pub fn export(api: &Api, a: &ExportArgs) -> Result<()> {
    let (spec, snap, path) = a.source.resolve()?;
    let mut pairs = Vec::new();
    if let Some(snap) = &snap {
        pairs.push(("snap", snap.as_str()));
    }
    // The request comes first: a missing image or snapshot fails before any file is created.
    let response = api.download(&format!("{}/export{}", image_path(&spec), query(&pairs)))?;
    let shown = match &snap {
        Some(snap) => format!("{spec}@{snap}"),
        None => spec.to_string(),
    };
    let what = format!("export of '{shown}' failed");
    let mut progress = api.progress("Exporting image");
    progress.update_bytes(0, 1);
    let outcome = if path == STDIO {
        let mut sink = StreamSink { out: BufWriter::with_capacity(IO_BUFFER_BYTES, io::stdout().lock()), cursor: 0 };
        write_raw(response, &mut sink, &mut progress, &what).map_err(anyhow::Error::from)
    } else {
        CreatedFile::create(&path).map_err(anyhow::Error::from).and_then(|mut created| {
            let mut sink = FileSink { file: &created.file, path: &path };
            write_raw(response, &mut sink, &mut progress, &what)?;
            created.keep = true;
            Ok(())
        })
    };
    end_progress(&mut progress, &outcome);
    outcome
}

/// Passes everything read through to `out`, remembering a failed write so it is reported as such rather than as
/// a broken stream.
struct Tee<R, W> {
    inner: R,
    out: W,
    write_error: Option<io::Error>,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Err(e) = self.out.write_all(&buf[..n]) {
            let kind = e.kind();
            self.write_error = Some(e);
            return Err(io::Error::new(kind, "the output could not be written"));
        }
        Ok(n)
    }
}

/// Copies a diff stream verbatim from `source` to `out`, reading it record by record on the way so that a stream
/// cut short (the server gave up) or followed by stray bytes is an error instead of a quietly bad file.
fn copy_verified(
    source: impl Read,
    out: impl Write,
    out_name: &str,
    progress: &mut Progress,
    what: &str,
) -> Result<(), Failure> {
    let mut tee = Tee { inner: BufReader::with_capacity(IO_BUFFER_BYTES, source), out, write_error: None };
    let read = (|| {
        let mut reader = DiffReader::new(&mut tee)?;
        let mut size = 0;
        while let Some(record) = reader.next_record()? {
            match record {
                DiffRecord::Size(s) => size = s,
                DiffRecord::Data { offset, data } => progress.update_bytes(offset + data.len() as u64, size),
                DiffRecord::Zero { offset, length } => progress.update_bytes(offset.saturating_add(length), size),
                DiffRecord::FromSnap(_) | DiffRecord::ToSnap(_) | DiffRecord::SnapProtected(_) => {}
            }
        }
        Ok::<(), basalt_core::Error>(())
    })();
    if let Some(e) = &tee.write_error {
        return Err(io_failure(&format!("writing to {out_name}"), e));
    }
    read.map_err(|e| stream_failure(what, &e))?;
    let mut extra = [0u8; 1];
    match tee.inner.read(&mut extra) {
        Ok(0) => {}
        Ok(_) => return Err(Failure::new(1, format!("{what}: the server sent bytes after the end of the stream"))),
        Err(e) => return Err(io_failure(what, &e)),
    }
    tee.out.flush().map_err(|e| io_failure(&format!("writing to {out_name}"), &e))
}

/// `export-diff [--from-snap S] spec[@snap] FILE|-`: the server's diff stream, verbatim.
pub fn export_diff(api: &Api, a: &ExportDiffArgs) -> Result<()> {
    let (spec, snap, path) = a.source.resolve()?;
    let from = nonempty(&a.from_snap).map(SnapName::new).transpose().map_err(|e| Failure::core(&e))?;
    let mut pairs = Vec::new();
    if let Some(snap) = &snap {
        pairs.push(("snap", snap.as_str()));
    }
    if let Some(from) = &from {
        pairs.push(("from_snap", from.as_str()));
    }
    let response = api.download(&format!("{}/export{}", image_path(&spec), query(&pairs)))?;
    let what = format!("export-diff of '{spec}' failed");
    let mut progress = api.progress("Exporting image");
    progress.update_bytes(0, 1);
    let outcome = if path == STDIO {
        let out = BufWriter::with_capacity(IO_BUFFER_BYTES, io::stdout().lock());
        copy_verified(response, out, "stdout", &mut progress, &what).map_err(anyhow::Error::from)
    } else {
        CreatedFile::create(&path).map_err(anyhow::Error::from).and_then(|mut created| {
            let out = BufWriter::with_capacity(IO_BUFFER_BYTES, &created.file);
            copy_verified(response, out, &format!("'{path}'"), &mut progress, &what)?;
            created.keep = true;
            Ok(())
        })
    };
    end_progress(&mut progress, &outcome);
    outcome
}

/// An input file opened for import: a regular file or a block device, with its size.
fn open_input(path: &str) -> Result<(File, u64), Failure> {
    let mut file = File::open(path).map_err(|e| io_failure(&format!("cannot open '{path}'"), &e))?;
    let metadata = file.metadata().map_err(|e| io_failure(&format!("cannot stat '{path}'"), &e))?;
    if metadata.is_dir() {
        return Err(Failure::new(21, format!("cannot import a directory: '{path}'")));
    }
    // Seeking to the end also gives the size of a block device, whose metadata says 0.
    let size = file.seek(SeekFrom::End(0)).map_err(|e| io_failure(&format!("cannot read '{path}'"), &e))?;
    file.seek(SeekFrom::Start(0)).map_err(|e| io_failure(&format!("cannot read '{path}'"), &e))?;
    Ok((file, size))
}

/// Reads until `buf` is full or the input ends; returns how much was read.
fn read_full(source: &mut dyn BufRead, buf: &mut [u8], name: &str) -> Result<usize, Failure> {
    let mut filled = 0;
    while filled < buf.len() {
        match source.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_failure(&format!("reading {name}"), &e)),
        }
    }
    Ok(filled)
}

/// The part of the input one import stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    /// The image size the stream declares (its size record).
    declared_size: u64,
    /// Where in the image the window's first input byte goes.
    start: u64,
    /// At most this many input bytes.
    limit: u64,
    /// Runs of zeros of this size (aligned to it) are left out.
    sparse: u64,
}

/// What one import stream covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Covered {
    /// Bytes of input consumed.
    consumed: u64,
    /// True when the input ended within (or right at the end of) the window.
    ended: bool,
}

/// Writes one import stream to `out`: a size record, then the blocks of the window's part of `source` that are not
/// all zeros, as data records of at most [`RECORD_MAX_BYTES`]. The image is new, so zeros need no records at all.
fn write_import_stream(
    out: &mut dyn Write,
    source: &mut dyn BufRead,
    name: &str,
    window: Window,
    progress: &mut dyn FnMut(u64),
) -> Result<Covered> {
    let mut writer = DiffWriter::new(out, DiffVersion::V1)?;
    writer.write_record(&DiffRecord::Size(window.declared_size))?;
    let mut buf = vec![0u8; RECORD_MAX_BYTES];
    let end = window.start.saturating_add(window.limit);
    let mut at = window.start;
    let mut ended = false;
    while at < end {
        let want = (end - at).min(RECORD_MAX_BYTES as u64) as usize;
        let n = read_full(source, &mut buf[..want], name)?;
        for run in data_runs(&buf[..n], at, window.sparse) {
            let offset = at + run.start as u64;
            writer.write_record(&DiffRecord::Data { offset, data: buf[run].to_vec() })?;
        }
        at += n as u64;
        progress(at);
        if n < want {
            ended = true;
            break;
        }
    }
    if !ended {
        ended = source.fill_buf().map_err(|e| io_failure(&format!("reading {name}"), &e))?.is_empty();
    }
    writer.finish()?;
    Ok(Covered { consumed: at - window.start, ended })
}

/// A stream that only sets the image size (the last step of an import from stdin).
fn write_size_stream(out: &mut dyn Write, size: u64) -> Result<()> {
    let mut writer = DiffWriter::new(out, DiffVersion::V1)?;
    writer.write_record(&DiffRecord::Size(size))?;
    writer.finish()?;
    Ok(())
}

fn size_option(text: &Option<String>, what: &str) -> Result<Option<u64>, Failure> {
    nonempty(text)
        .map(|t| {
            parse_size(&t, 1).map_err(|e| Failure::core(&e).with_message(format!("invalid {what}: {}", e.message())))
        })
        .transpose()
}

/// The input path and the new image of `import`: `FILE [DEST]`, with `--path`, `--dest`, `--dest-pool` (or the
/// older `-p`) and `--dest-namespace`; without a destination the image is named after the file, as in rbd.
fn import_target(a: &ImportArgs) -> Result<(String, ImageSpec), Failure> {
    let mut positional = [&a.first, &a.second].into_iter().filter_map(nonempty);
    let path = match nonempty(&a.path) {
        Some(path) => path,
        None => positional.next().ok_or_else(|| Failure::invalid("path was not specified"))?,
    };
    let mut dest_spec = positional.next();
    if let Some(extra) = positional.next() {
        return Err(Failure::invalid(format!("too many arguments: '{extra}'")));
    }
    if dest_spec.is_none() && nonempty(&a.dest).is_none() {
        let base = Path::new(&path).file_name().and_then(|n| n.to_str()).filter(|_| path != STDIO);
        let base = base.ok_or_else(|| Failure::invalid("destination image name was not specified"))?;
        dest_spec = Some(base.to_owned());
    }
    let dest_pool = match (nonempty(&a.dest_pool), nonempty(&a.pool)) {
        (Some(d), Some(p)) if d != p => {
            return Err(Failure::invalid(format!("the pool is given twice: --dest-pool '{d}' and --pool '{p}'")));
        }
        (d, p) => d.or(p),
    };
    let dest = DestArgs { dest_spec, dest: a.dest.clone(), dest_pool, dest_namespace: a.dest_namespace.clone() };
    Ok((path, dest.dest_spec(&default_location()?)?))
}

/// `import [layout] FILE|- [spec]`: a new image with the file's size, and only its non-zero blocks written. If
/// anything fails after the image was created, the image is removed again.
pub fn import(api: &Api, a: &ImportArgs) -> Result<()> {
    let (path, spec) = import_target(a)?;
    let sparse = size_option(&a.sparse_size, "sparse size")?.unwrap_or(SPARSE_SIZE_DEFAULT);
    if !sparse.is_power_of_two() || !(SPARSE_SIZE_DEFAULT..=SPARSE_SIZE_MAX).contains(&sparse) {
        return Err(Failure::invalid("sparse size must be a power of two from 4K to 4M").into());
    }
    let estimated = size_option(&a.estimated_size, "estimated size")?;
    if estimated.is_some() && path != STDIO {
        return Err(Failure::invalid("--estimated-size can be specified only for import from stdin").into());
    }
    let mut body = Map::new();
    body.insert("name".into(), json!(spec.image.as_str()));
    body.insert("pool_name".into(), json!(spec.pool().as_str()));
    put_namespace(&mut body, "namespace", &spec.location);
    put_layout(&mut body, &a.layout)?;
    if let Some(pool) = nonempty(&a.data_pool) {
        body.insert("data_pool".into(), json!(pool));
    }
    let url = format!("{}/import_diff", image_path(&spec));
    let mut progress = api.progress("Importing image");
    let outcome = if path == STDIO {
        let first = estimated.filter(|&n| n > 0).unwrap_or(STDIN_WINDOW_FIRST_BYTES);
        body.insert("size".into(), json!(first));
        api.call("POST", "/api/block/image", Some(&Value::Object(body)))?;
        let mut stdin = io::stdin().lock();
        import_stdin(api, &url, &mut stdin, first, sparse, estimated, &mut progress)
    } else {
        let (file, size) = open_input(&path)?;
        body.insert("size".into(), json!(size));
        api.call("POST", "/api/block/image", Some(&Value::Object(body)))?;
        let mut source = BufReader::with_capacity(IO_BUFFER_BYTES, file);
        let name = format!("'{path}'");
        progress.update_bytes(0, size);
        api.upload(&url, None, |out| {
            let mut show = |at: u64| progress.update_bytes(at, size);
            let window = Window { declared_size: size, start: 0, limit: size, sparse };
            write_import_stream(out, &mut source, &name, window, &mut show).map(|_| ())
        })
        .map(|_| ())
    };
    end_progress(&mut progress, &outcome);
    let Err(err) = outcome else { return Ok(()) };
    // Leave nothing half-imported behind, as rbd removes the image it created.
    match api.call("DELETE", &image_path(&spec), None) {
        Ok(_) => Err(err),
        Err(cleanup) => {
            let mut failure = match err.downcast::<Failure>() {
                Ok(failure) => failure,
                Err(other) => Failure::new(1, format!("{other:#}")),
            };
            failure.message =
                format!("{}; removing the partly imported image '{spec}' failed too: {cleanup:#}", failure.message);
            Err(failure.into())
        }
    }
}

/// Sends stdin as a series of import streams (see [`STDIN_WINDOW_FIRST_BYTES`]), then sets the exact size.
fn import_stdin(
    api: &Api,
    url: &str,
    stdin: &mut dyn BufRead,
    first_window: u64,
    sparse: u64,
    estimated: Option<u64>,
    progress: &mut Progress,
) -> Result<()> {
    let mut at = 0u64;
    let mut window = first_window;
    loop {
        let declared = at.saturating_add(window);
        let mut covered = None;
        api.upload(url, None, |out| {
            let mut show = |done: u64| {
                if let Some(total) = estimated {
                    progress.update_bytes(done.min(total), total);
                }
            };
            let part = Window { declared_size: declared, start: at, limit: window, sparse };
            covered = Some(write_import_stream(out, stdin, "stdin", part, &mut show)?);
            Ok(())
        })?;
        let covered = covered.ok_or_else(|| Failure::new(1, "the import stream was not written"))?;
        at += covered.consumed;
        if covered.ended {
            if at != declared {
                api.upload(url, None, |out| write_size_stream(out, at))?;
            }
            return Ok(());
        }
        window = window.saturating_mul(2).min(STDIN_WINDOW_MAX_BYTES).max(first_window);
    }
}

/// Copies `source` into `out`, calling `progress` with the bytes copied so far.
fn copy_input(source: &mut dyn Read, out: &mut dyn Write, name: &str, progress: &mut dyn FnMut(u64)) -> Result<()> {
    let mut buf = vec![0u8; IO_BUFFER_BYTES];
    let mut done = 0u64;
    loop {
        let n = match source.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_failure(&format!("reading {name}"), &e).into()),
        };
        out.write_all(&buf[..n])?;
        done += n as u64;
        progress(done);
    }
}

/// `import-diff FILE|- spec`: the stream posted verbatim; the server applies it as `rbd import-diff` does.
pub fn import_diff(api: &Api, a: &ImportDiffArgs) -> Result<()> {
    let mut positional = [&a.first, &a.second].into_iter().filter_map(nonempty);
    let path = match nonempty(&a.path) {
        Some(path) => path,
        None => positional.next().ok_or_else(|| Failure::invalid("path was not specified"))?,
    };
    let spec_text = if nonempty(&a.image).is_some() { None } else { positional.next() };
    if let Some(extra) = positional.next() {
        return Err(Failure::invalid(format!("too many arguments: '{extra}'")).into());
    }
    let image =
        ImageArgs { spec: spec_text, pool: a.pool.clone(), namespace: a.namespace.clone(), image: a.image.clone() };
    let spec = image.image_spec()?;
    let url = format!("{}/import_diff", image_path(&spec));
    let mut progress = api.progress("Importing image diff");
    let outcome = if path == STDIO {
        let mut stdin = io::stdin().lock();
        // Chunked: the length of stdin is not known.
        api.upload(&url, None, |out| copy_input(&mut stdin, out, "stdin", &mut |_| {}))
    } else {
        let (mut file, size) = open_input(&path)?;
        progress.update_bytes(0, size);
        let name = format!("'{path}'");
        // The file's size is the body's length; should the file shrink meanwhile, the request fails.
        api.upload(&url, Some(size), |out| {
            copy_input(&mut (&mut file).take(size), out, &name, &mut |done| progress.update_bytes(done, size))
        })
    };
    end_progress(&mut progress, &outcome);
    outcome.map(|_| ())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn decode(bytes: &[u8]) -> Vec<DiffRecord> {
        let mut reader = DiffReader::new(bytes).expect("banner");
        let mut records = Vec::new();
        while let Some(record) = reader.next_record().expect("record") {
            records.push(record);
        }
        records
    }

    fn encode(records: &[DiffRecord]) -> Vec<u8> {
        let mut writer = DiffWriter::new(Vec::new(), DiffVersion::V1).expect("banner");
        for record in records {
            writer.write_record(record).expect("record");
        }
        writer.finish().expect("end")
    }

    #[test]
    fn zero_detection_covers_every_byte() {
        assert!(is_zero(&[]));
        assert!(is_zero(&[0; 100]));
        for at in [0, 15, 16, 31, 99] {
            let mut block = [0u8; 100];
            block[at] = 1;
            assert!(!is_zero(&block), "{at}");
        }
    }

    #[test]
    fn data_runs_follow_aligned_blocks_and_merge() {
        let mut buf = vec![0u8; 5 * 4096];
        buf[10] = 1;
        buf[4096] = 2; // blocks 0 and 1 merge
        buf[4 * 4096 + 5] = 3;
        assert_eq!(data_runs(&buf, 0, 4096), vec![0..2 * 4096, 4 * 4096..5 * 4096]);
        // At an unaligned base the first and last blocks are partial.
        let buf = [1u8; 100];
        assert_eq!(data_runs(&buf, 4096 - 10, 4096), vec![0..100]);
        let mut buf = vec![0u8; 8192];
        buf[8191] = 1;
        assert_eq!(data_runs(&buf, 100, 4096), vec![8092..8192]);
        assert!(data_runs(&[0u8; 9000], 7, 4096).is_empty());
    }

    #[test]
    fn an_import_stream_holds_only_non_zero_blocks() {
        let mut input = vec![0u8; RECORD_MAX_BYTES + 3 * 4096 + 100];
        input[5] = 7;
        input[RECORD_MAX_BYTES - 1] = 8; // the last block of the first record ...
        input[RECORD_MAX_BYTES] = 9; // ... and the first of the second: records split at the read size
        input[RECORD_MAX_BYTES + 3 * 4096 + 99] = 10; // the partial tail block
        let mut out = Vec::new();
        let mut seen = Vec::new();
        let size = input.len() as u64;
        let window = Window { declared_size: size, start: 0, limit: size, sparse: 4096 };
        let covered =
            write_import_stream(&mut out, &mut &input[..], "input", window, &mut |at| seen.push(at)).expect("stream");
        assert_eq!(covered, Covered { consumed: size, ended: true });
        assert_eq!(seen.last(), Some(&size));
        let records = decode(&out);
        let extents: Vec<(u64, usize)> = records
            .iter()
            .filter_map(|r| match r {
                DiffRecord::Data { offset, data } => Some((*offset, data.len())),
                _ => None,
            })
            .collect();
        let first = RECORD_MAX_BYTES as u64;
        assert_eq!(records[0], DiffRecord::Size(size));
        assert_eq!(extents, vec![(0, 4096), (first - 4096, 4096), (first, 4096), (first + 3 * 4096, 100)]);
    }

    #[test]
    fn an_import_window_stops_at_its_limit_and_sees_the_end() {
        let input = vec![1u8; 10_000];
        let mut source = &input[..];
        let window = |declared_size, start| Window { declared_size, start, limit: 8192, sparse: 4096 };
        let mut out = Vec::new();
        let covered = write_import_stream(&mut out, &mut source, "stdin", window(8192, 0), &mut |_| {}).expect("first");
        assert_eq!(covered, Covered { consumed: 8192, ended: false });
        let mut out = Vec::new();
        let covered =
            write_import_stream(&mut out, &mut source, "stdin", window(16384, 8192), &mut |_| {}).expect("second");
        assert_eq!(covered, Covered { consumed: 10_000 - 8192, ended: true });
        assert_eq!(decode(&out)[0], DiffRecord::Size(16384));
        assert_eq!(decode(&out)[1], DiffRecord::Data { offset: 8192, data: vec![1; 10_000 - 8192] });
        // Input that ends exactly at the window's end is seen to have ended.
        let mut exact = &input[..8192];
        let covered =
            write_import_stream(&mut Vec::new(), &mut exact, "stdin", window(8192, 0), &mut |_| {}).expect("exact");
        assert!(covered.ended);
    }

    fn export_stream() -> Vec<u8> {
        encode(&[
            DiffRecord::Size(3 * 4096 + 10),
            DiffRecord::Data { offset: 100, data: vec![5; 50] },
            DiffRecord::Zero { offset: 4096, length: 4096 },
            DiffRecord::Data { offset: 2 * 4096, data: vec![0; 4096] },
            DiffRecord::Data { offset: 3 * 4096, data: vec![6; 10] },
        ])
    }

    fn expected_image() -> Vec<u8> {
        let mut image = vec![0u8; 3 * 4096 + 10];
        image[100..150].fill(5);
        image[3 * 4096..].fill(6);
        image
    }

    #[test]
    fn a_stream_export_writes_every_byte_in_order() {
        let mut out = Vec::new();
        let mut sink = StreamSink { out: &mut out, cursor: 0 };
        let mut progress = Progress::new("test", false);
        write_raw(&export_stream()[..], &mut sink, &mut progress, "export").expect("export");
        assert_eq!(out, expected_image());
    }

    #[test]
    fn a_file_export_leaves_holes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("image");
        let path = path.to_str().expect("utf-8");
        let mut created = CreatedFile::create(path).expect("create");
        let mut progress = Progress::new("test", false);
        let mut sink = FileSink { file: &created.file, path };
        write_raw(&export_stream()[..], &mut sink, &mut progress, "export").expect("export");
        created.keep = true;
        drop(created);
        assert_eq!(std::fs::read(path).expect("read"), expected_image());
        // The all-zero data record was not written: at most the first and last blocks are allocated.
        let blocks = std::fs::metadata(path).expect("stat").blocks();
        assert!(blocks * 512 <= 2 * 4096, "{blocks} blocks");
        assert_eq!(CreatedFile::create(path).expect_err("exists").exit_code, 17);
    }

    #[test]
    fn bad_export_streams_fail_and_remove_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("image");
        let path = path.to_str().expect("utf-8");
        let stream = export_stream();
        let cases: [(&[u8], &str); 3] = [
            (&stream[..stream.len() - 1], "without an end record"),
            (&encode(&[DiffRecord::Data { offset: 0, data: vec![1] }]), "data before its size"),
            (&encode(&[DiffRecord::Size(10), DiffRecord::Zero { offset: 5, length: 6 }]), "past the image size"),
        ];
        for (input, needle) in cases {
            let created = CreatedFile::create(path).expect("create");
            let mut progress = Progress::new("test", false);
            let mut sink = FileSink { file: &created.file, path };
            let err = write_raw(input, &mut sink, &mut progress, "export").expect_err(needle);
            assert!(err.message.contains(needle), "{}", err.message);
            drop(created);
            assert!(!Path::new(path).exists(), "the failed export's file stays");
        }
        let mut sink = StreamSink { out: Vec::new(), cursor: 0 };
        let backwards = encode(&[
            DiffRecord::Size(100),
            DiffRecord::Data { offset: 50, data: vec![1] },
            DiffRecord::Data { offset: 10, data: vec![1] },
        ]);
        let err = write_raw(&backwards[..], &mut sink, &mut Progress::new("t", false), "export").expect_err("order");
        assert!(err.message.contains("goes back"), "{}", err.message);
    }

    #[test]
    fn a_verified_copy_is_verbatim_and_complete() {
        let stream = encode(&[
            DiffRecord::FromSnap("a".into()),
            DiffRecord::ToSnap("b".into()),
            DiffRecord::Size(8192),
            DiffRecord::Data { offset: 0, data: vec![1; 10] },
        ]);
        let mut out = Vec::new();
        copy_verified(&stream[..], &mut out, "out", &mut Progress::new("t", false), "x").expect("copy");
        assert_eq!(out, stream);
        let err = copy_verified(&stream[..stream.len() - 3], Vec::new(), "out", &mut Progress::new("t", false), "x")
            .expect_err("truncated");
        assert!(err.message.starts_with("x: rbd diff stream"), "{}", err.message);
        let mut extra = stream.clone();
        extra.push(b'!');
        let err =
            copy_verified(&extra[..], Vec::new(), "out", &mut Progress::new("t", false), "x").expect_err("trailing");
        assert!(err.message.contains("after the end"), "{}", err.message);
    }

    #[test]
    fn import_names_the_image_after_the_file() {
        let args = |first: &str, second: Option<&str>| ImportArgs {
            first: Some(first.into()),
            second: second.map(Into::into),
            path: None,
            dest: None,
            dest_pool: None,
            dest_namespace: None,
            pool: None,
            layout: Default::default(),
            data_pool: None,
            sparse_size: None,
            estimated_size: None,
        };
        let (path, spec) = import_target(&args("/tmp/x/disk.img", None)).expect("target");
        assert_eq!((path.as_str(), spec.to_string().as_str()), ("/tmp/x/disk.img", "rbd/disk.img"));
        let (_, spec) = import_target(&args("-", Some("p/ns/vm"))).expect("target");
        assert_eq!(spec.to_string(), "p/ns/vm");
        assert_eq!(import_target(&args("-", None)).expect_err("no name").exit_code, 22);
        let mut pooled = args("f", Some("vm"));
        pooled.pool = Some("p".into());
        assert_eq!(import_target(&pooled).expect("target").1.to_string(), "p/vm");
        pooled.dest_pool = Some("q".into());
        assert!(import_target(&pooled).is_err());
    }
}
