//! `capture`: writes the frames passing its place in the pipeline to pcapng
//! files (Wireshark, tshark), one file per room (each link an interface)
//! or one per link, with size-based rotation and a cap on the files kept.
//! Every frame passes; capturing never changes what the room does.
//!
//! Frames are copied into shared 64 KiB chunks (no allocation per frame)
//! and handed to a writer thread through a bounded queue: a slow disk never
//! slows the room, frames it cannot keep up with are dropped and counted.
//! Placed under `ingress` it sees every frame as it entered (interface =
//! ingress link); under `egress` every frame per destination (interface =
//! destination link).

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use lanparty_core::config::{ConfigError, StageConfig};
use lanparty_core::registry::{FilterFactory, filter_factory};
use lanparty_core::stage::{Filter, FilterContext, LinkInfo, Verdict};
use lanparty_core::wire::{FrameView, pcapng};
use serde::Deserialize;

/// One file per room or per link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// One file per room; each link is an interface in it.
    #[default]
    Room,
    /// One file per link.
    Link,
}

/// Writes the frames passing this place to pcapng files (Wireshark/tshark),
/// rotated by size; every frame passes.
#[lanparty_core::stage_kind(filter(both), name = "capture", build = build,
    example = "ingress: [ { type: capture, dir: /var/lib/lanparty/captures, split: room } ]")]
#[derive(Debug, Clone)]
pub struct CaptureSettings {
    /// Folder for the files (created if missing).
    pub dir: PathBuf,
    /// One file per room (links are interfaces) or one per link.
    #[key(default = "room", ty = "room | link")]
    pub split: Split,
    /// Size in bytes at which the next file starts.
    #[key(default = 16777216)]
    pub max_file_size: u64,
    /// Files kept per room or link; the oldest is deleted.
    #[key(default = 4)]
    pub max_files: usize,
    /// Bytes kept per frame.
    #[key(default = 65535)]
    pub snaplen: u32,
    /// Frames waiting for the writer; more are dropped and counted.
    #[key(default = 4096)]
    pub queue: usize,
}

struct Record {
    at: SystemTime,
    link: Arc<str>,
    frame: Bytes,
}

/// One room's capture.
pub struct Capture {
    settings: Arc<CaptureSettings>,
    writer: Option<SyncSender<Record>>,
    chunk: BytesMut,
    dropped: Arc<AtomicU64>,
}

const CHUNK: usize = 64 * 1024;

impl Capture {
    fn record(&mut self, room: &str, link: &Arc<str>, frame: &[u8]) {
        let writer = self
            .writer
            .get_or_insert_with(|| spawn_writer(room, self.settings.clone(), self.dropped.clone()));
        if self.chunk.capacity() - self.chunk.len() < frame.len() {
            self.chunk = BytesMut::with_capacity(CHUNK.max(frame.len()));
        }
        self.chunk.extend_from_slice(frame);
        let record = Record {
            at: SystemTime::now(),
            link: link.clone(),
            frame: self.chunk.split().freeze(),
        };
        match writer.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Filter for Capture {
    fn ingress(&mut self, ctx: &FilterContext<'_>, frame: &FrameView<'_>) -> Verdict {
        self.record(ctx.room, &ctx.ingress.name, frame.bytes());
        Verdict::Pass
    }

    fn egress(
        &mut self,
        ctx: &FilterContext<'_>,
        frame: &FrameView<'_>,
        dst: &LinkInfo,
    ) -> Verdict {
        self.record(ctx.room, &dst.name, frame.bytes());
        Verdict::Pass
    }
}

/// Makes a string safe as part of a file name.
fn file_part(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn spawn_writer(
    room: &str,
    settings: Arc<CaptureSettings>,
    dropped: Arc<AtomicU64>,
) -> SyncSender<Record> {
    let (tx, rx) = sync_channel(settings.queue.max(1));
    let room = room.to_string();
    let spawned = std::thread::Builder::new()
        .name(format!("capture-{room}"))
        .spawn(move || Writer::new(room, settings, dropped).run(rx));
    if let Err(e) = spawned {
        tracing::error!("capture: cannot start the writer thread: {e}");
    }
    tx
}

/// One rotating file.
struct Output {
    stem: String,
    seq: u32,
    file: Option<(BufWriter<File>, u64)>,
    interfaces: HashMap<Arc<str>, u32>,
    kept: VecDeque<PathBuf>,
}

struct Writer {
    room: String,
    settings: Arc<CaptureSettings>,
    dropped: Arc<AtomicU64>,
    outputs: HashMap<String, Output>,
    started: u64,
    written: u64,
    failed: bool,
    block: Vec<u8>,
}

impl Writer {
    fn new(room: String, settings: Arc<CaptureSettings>, dropped: Arc<AtomicU64>) -> Writer {
        Writer {
            room,
            settings,
            dropped,
            outputs: HashMap::new(),
            started: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            written: 0,
            failed: false,
            block: Vec::with_capacity(CHUNK),
        }
    }

    fn run(mut self, rx: Receiver<Record>) {
        if let Err(e) = std::fs::create_dir_all(&self.settings.dir) {
            tracing::error!(room = %self.room, dir = %self.settings.dir.display(), "capture: cannot create the folder, nothing is written: {e}");
            self.failed = true;
        }
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(record) => self.write(&record),
                Err(RecvTimeoutError::Timeout) => self.flush(),
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.flush();
        tracing::info!(room = %self.room, frames = self.written, dropped = self.dropped.load(Ordering::Relaxed), "capture closed");
    }

    fn flush(&mut self) {
        for output in self.outputs.values_mut() {
            if let Some((file, _)) = &mut output.file {
                let _ = file.flush();
            }
        }
    }

    fn write(&mut self, record: &Record) {
        if self.failed {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let key = match self.settings.split {
            Split::Room => file_part(&self.room),
            Split::Link => format!("{}-{}", file_part(&self.room), file_part(&record.link)),
        };
        let started = self.started;
        let output = self.outputs.entry(key.clone()).or_insert_with(|| Output {
            stem: format!("{key}-{started}"),
            seq: 0,
            file: None,
            interfaces: HashMap::new(),
            kept: VecDeque::new(),
        });
        self.block.clear();
        let result = write_record(output, &self.settings, record, &mut self.block);
        match result {
            Ok(()) => self.written += 1,
            Err(e) => {
                tracing::error!(room = %self.room, dir = %self.settings.dir.display(), "capture: write failed, capture stopped: {e}");
                self.failed = true;
            }
        }
    }
}

fn open(output: &mut Output, dir: &Path, max_files: usize) -> std::io::Result<()> {
    output.seq += 1;
    let path = dir.join(format!("{}-{:04}.pcapng", output.stem, output.seq));
    let mut file = BufWriter::with_capacity(CHUNK, File::create(&path)?);
    let mut header = Vec::new();
    pcapng::section_header(&mut header);
    file.write_all(&header)?;
    output.file = Some((file, header.len() as u64));
    output.interfaces.clear();
    output.kept.push_back(path);
    while output.kept.len() > max_files.max(1) {
        if let Some(old) = output.kept.pop_front() {
            let _ = std::fs::remove_file(old);
        }
    }
    Ok(())
}

fn write_record(
    output: &mut Output,
    settings: &CaptureSettings,
    record: &Record,
    block: &mut Vec<u8>,
) -> std::io::Result<()> {
    let full = output
        .file
        .as_ref()
        .is_none_or(|(_, size)| *size + record.frame.len() as u64 + 64 > settings.max_file_size);
    if full {
        if let Some((mut file, _)) = output.file.take() {
            file.flush()?;
        }
        open(output, &settings.dir, settings.max_files)?;
    }
    let next = output.interfaces.len() as u32;
    let interface = match output.interfaces.get(&record.link) {
        Some(i) => *i,
        None => {
            pcapng::interface(block, &record.link, settings.snaplen);
            output.interfaces.insert(record.link.clone(), next);
            next
        }
    };
    pcapng::packet(block, interface, record.at, &record.frame, settings.snaplen);
    if let Some((file, size)) = &mut output.file {
        file.write_all(block)?;
        *size += block.len() as u64;
    }
    Ok(())
}

fn build(config: &StageConfig) -> Result<FilterFactory, Vec<ConfigError>> {
    let settings: CaptureSettings = config.parse()?;
    let mut errors = Vec::new();
    if settings.max_file_size < 4096 {
        errors.push(config.error("max_file_size", "must be at least 4096 bytes"));
    }
    if settings.max_files == 0 {
        errors.push(config.error("max_files", "must be at least 1"));
    }
    if !(64..=262_144).contains(&settings.snaplen) {
        errors.push(config.error("snaplen", "must be 64..=262144"));
    }
    if settings.queue == 0 || settings.queue > 1 << 20 {
        errors.push(config.error("queue", "must be 1..=1048576"));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(filter_factory(Arc::new(settings), |s| Capture {
        settings: s.clone(),
        writer: None,
        chunk: BytesMut::new(),
        dropped: Arc::new(AtomicU64::new(0)),
    }))
}
