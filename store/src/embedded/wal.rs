//! The write-ahead log of the embedded store: one file of checksummed frames in the data
//! directory, appended to by the committer, rewritten as a snapshot from time to time, and read
//! back when the store is opened.
//!
//! A frame is `[payload length: u32][payload crc32: u32][crc32 of those 8 bytes: u32]` followed
//! by the payload, a sequence of [`Record`]s. The first frame holds only a [`Record::Header`].
//! The committer writes each commit batch as one frame with one `write` and one fsync, so a
//! crash can damage at most the last frame; [`scan`] tells that torn tail (to be truncated)
//! from damage in the middle of the file (reported as corruption). A snapshot is written aside
//! and renamed over the log, so a crash leaves either the old log or the new one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;

use crate::{Error, KeyValue, LeaseId, Result, Revision};

/// The log file inside the data directory.
const LOG_FILE: &str = "store.wal";
/// Where a new log is written before it atomically replaces [`LOG_FILE`].
const TMP_FILE: &str = "store.wal.tmp";
/// Held locked while a process has the directory open.
const LOCK_FILE: &str = "LOCK";

const MAGIC: &[u8; 8] = b"STRATUS1";
const FRAME_HEADER: usize = 12;
/// No frame is ever written larger than this, so a header claiming more is damaged.
const MAX_FRAME: usize = 1 << 30;
/// Snapshots split their records into frames of about this size.
const SNAPSHOT_FRAME: usize = 1 << 20;

/// One entry of the log.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Record {
    /// Opens every log file: the store's revision before the records that follow, the
    /// compaction revision and the next lease id to hand out.
    Header {
        revision: Revision,
        compacted: Revision,
        next_lease: LeaseId,
    },
    /// A write that created or replaced a key; its `mod_revision` is the next revision.
    Put(KeyValue),
    /// A key version older than the retained history (snapshots only): no event, no revision.
    Base(KeyValue),
    /// A delete at the next revision.
    Delete {
        key: String,
        revision: Revision,
    },
    Compact {
        revision: Revision,
    },
    Grant {
        lease: LeaseId,
        ttl: Duration,
    },
    /// Written after the deletes of the lease's keys, so a crash between them leaves a lease
    /// that still exists (and expires again), never keys attached to a vanished lease.
    Revoke {
        lease: LeaseId,
    },
}

/// The log file being appended to.
pub(super) struct Log {
    dir: PathBuf,
    file: File,
    len: u64,
    /// Held (locked) for as long as the store has the directory open.
    _lock: File,
}

impl Log {
    /// Appends `frame` and fsyncs it: once this returns, the frame survives a crash. When it
    /// fails, part of the frame may be in the file: [`repair`](Self::repair) cuts it off.
    pub(super) fn append(&mut self, frame: &[u8]) -> io::Result<()> {
        self.file.write_all(frame)?;
        self.file.sync_data()?;
        self.len += frame.len() as u64;
        Ok(())
    }

    /// Makes the log what its acknowledged frames wrote, after a failed append or snapshot:
    /// reopens the file (a new descriptor, the file now at the log's path), cuts whatever a
    /// failed append left after the last good frame, and fsyncs the file and the directory.
    /// Nothing acknowledged is touched; nothing unacknowledged stays.
    pub(super) fn repair(&mut self) -> io::Result<()> {
        let file = OpenOptions::new().append(true).open(self.dir.join(LOG_FILE))?;
        file.set_len(self.len)?;
        file.sync_all()?;
        sync_dir(&self.dir)?;
        self.file = file;
        Ok(())
    }

    /// Replaces the log with one holding `records`. When it fails before the new log took the
    /// old one's place, the old log is as it was (and the file written aside is removed); when
    /// it fails after, the new one is the log and [`repair`](Self::repair) finishes the job.
    pub(super) fn rewrite(&mut self, records: &[Record]) -> io::Result<()> {
        self.len = replace_log(&self.dir, records)?;
        self.file = OpenOptions::new().append(true).open(self.dir.join(LOG_FILE))?;
        sync_dir(&self.dir)
    }

    /// The log's length in bytes.
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// Makes the next appends fail (EBADF) as a full disk would, after `junk` is left at the
    /// end of the file as a half-written frame: the descriptor is swapped for a read-only one.
    #[cfg(test)]
    pub(super) fn break_after(&mut self, junk: &[u8]) -> io::Result<()> {
        self.file.write_all(junk)?;
        self.file = File::open(self.dir.join(LOG_FILE))?;
        Ok(())
    }
}

/// Opens the log in `dir`: takes the directory's lock, creates a log holding `initial` when
/// there is none, else passes every record of the log to `replay` in order and truncates a
/// write torn by a crash. Fails with [`Error::Corrupt`] when the log is damaged other than at
/// its tail (or `replay` finds a record that contradicts the ones before), and with
/// [`Error::Io`] (kind `WouldBlock`) when another store holds the lock.
pub(super) fn recover(dir: &Path, initial: &[Record], replay: impl FnMut(Record) -> Result<()>) -> Result<Log> {
    private_dir(dir)?;
    let lock = private_file().create(true).truncate(false).write(true).open(dir.join(LOCK_FILE))?;
    take_lock(dir, &lock)?;
    // A leftover of a crash during a snapshot; the log it was to replace is intact.
    match fs::remove_file(dir.join(TMP_FILE)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    let path = dir.join(LOG_FILE);
    if !path.try_exists()? {
        let len = replace_log(dir, initial)?;
        sync_dir(dir)?;
        let file = OpenOptions::new().append(true).open(&path)?;
        return Ok(Log { dir: dir.to_owned(), file, len, _lock: lock });
    }
    let data = fs::read(&path)?;
    let valid = match scan(&data, replay)? {
        Scan::Complete(valid) => valid,
        Scan::Damaged(damage) => return Err(Error::Corrupt(format!("{}: {damage}", path.display()))),
    };
    let file = OpenOptions::new().append(true).open(&path)?;
    if valid < data.len() {
        tracing::warn!(
            path = %path.display(),
            offset = valid,
            "truncating a write torn by a crash at the end of the log"
        );
        file.set_len(valid as u64)?;
        file.sync_all()?;
    }
    Ok(Log { dir: dir.to_owned(), file, len: valid as u64, _lock: lock })
}

/// Locks the directory `dir` through its open `lock` file, failing with [`Error::Io`] (kind
/// `WouldBlock`) when another store holds it.
fn take_lock(dir: &Path, lock: &File) -> Result<()> {
    lock.try_lock().map_err(|e| match e {
        fs::TryLockError::WouldBlock => Error::Io(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!("data directory {} is in use by another store", dir.display()),
        )),
        fs::TryLockError::Error(e) => Error::Io(e),
    })
}

/// Writes `records` as a new log: aside, fsynced, then renamed over the log. Returns its
/// length. The rename is durable only once the directory is fsynced, which is the caller's
/// step; until then a crash leaves either the old log or the new one. A failure before the
/// rename leaves the old log untouched and removes what was written aside.
fn replace_log(dir: &Path, records: &[Record]) -> io::Result<u64> {
    let tmp = dir.join(TMP_FILE);
    let written = write_aside(&tmp, records).and_then(|len| fs::rename(&tmp, dir.join(LOG_FILE)).map(|()| len));
    if written.is_err() {
        // Best effort: a leftover is removed when the store is next opened anyway.
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Writes `records` to a new file at `path` as frames, and fsyncs it. Returns its length.
fn write_aside(path: &Path, records: &[Record]) -> io::Result<u64> {
    let mut out = io::BufWriter::new(private_file().create(true).truncate(true).write(true).open(path)?);
    let mut len = 0;
    let mut frame = FrameBuf::new();
    for (i, record) in records.iter().enumerate() {
        frame.push(record);
        // The header must be alone in the first frame.
        if i == 0 || frame.payload_len() >= SNAPSHOT_FRAME {
            let bytes = std::mem::replace(&mut frame, FrameBuf::new()).finish();
            out.write_all(&bytes)?;
            len += bytes.len() as u64;
        }
    }
    let bytes = frame.finish();
    out.write_all(&bytes)?;
    len += bytes.len() as u64;
    let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
    file.sync_all()?;
    Ok(len)
}

/// Makes `dir` (and its parents) if missing, and its owner's alone (0700): the log holds every
/// object, and what it holds is nobody else's to read.
fn private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        builder.mode(0o700).create(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
    }
    #[cfg(not(unix))]
    builder.create(dir)
}

/// Options that create a file only its owner may read and write (0600).
fn private_file() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

const TAG_HEADER: u8 = 1;
const TAG_PUT: u8 = 2;
const TAG_BASE: u8 = 3;
const TAG_DELETE: u8 = 4;
const TAG_COMPACT: u8 = 5;
const TAG_GRANT: u8 = 6;
const TAG_REVOKE: u8 = 7;

impl Record {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Record::Header { revision, compacted, next_lease } => {
                out.push(TAG_HEADER);
                out.extend_from_slice(MAGIC);
                put_i64(out, *revision);
                put_i64(out, *compacted);
                put_i64(out, *next_lease);
            }
            Record::Put(kv) | Record::Base(kv) => {
                out.push(if matches!(self, Record::Put(_)) { TAG_PUT } else { TAG_BASE });
                put_bytes(out, kv.key.as_bytes());
                put_bytes(out, &kv.value);
                put_i64(out, kv.create_revision);
                put_i64(out, kv.mod_revision);
                put_i64(out, kv.lease);
            }
            Record::Delete { key, revision } => {
                out.push(TAG_DELETE);
                put_bytes(out, key.as_bytes());
                put_i64(out, *revision);
            }
            Record::Compact { revision } => {
                out.push(TAG_COMPACT);
                put_i64(out, *revision);
            }
            Record::Grant { lease, ttl } => {
                out.push(TAG_GRANT);
                put_i64(out, *lease);
                out.extend_from_slice(&u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX).to_le_bytes());
            }
            Record::Revoke { lease } => {
                out.push(TAG_REVOKE);
                put_i64(out, *lease);
            }
        }
    }

    fn decode(d: &mut Decoder<'_>) -> Result<Record> {
        Ok(match d.u8()? {
            TAG_HEADER => {
                if d.take(MAGIC.len())? != MAGIC {
                    return Err(Error::Corrupt("not a stratus store log".into()));
                }
                Record::Header { revision: d.i64()?, compacted: d.i64()?, next_lease: d.i64()? }
            }
            tag @ (TAG_PUT | TAG_BASE) => {
                let kv = KeyValue {
                    key: d.string()?,
                    value: Bytes::copy_from_slice(d.bytes()?),
                    create_revision: d.i64()?,
                    mod_revision: d.i64()?,
                    lease: d.i64()?,
                };
                if tag == TAG_PUT { Record::Put(kv) } else { Record::Base(kv) }
            }
            TAG_DELETE => Record::Delete { key: d.string()?, revision: d.i64()? },
            TAG_COMPACT => Record::Compact { revision: d.i64()? },
            TAG_GRANT => Record::Grant { lease: d.i64()?, ttl: Duration::from_nanos(u64::from_le_bytes(d.array()?)) },
            TAG_REVOKE => Record::Revoke { lease: d.i64()? },
            tag => return Err(Error::Corrupt(format!("unknown record type {tag}"))),
        })
    }
}

fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Keys and values are bounded far below 4 GiB by MAX_VALUE_SIZE and MAX_FRAME.
    out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(b);
}

struct Decoder<'a> {
    buf: &'a [u8],
}

impl<'a> Decoder<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(Error::Corrupt("record is truncated".into()));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    fn bytes(&mut self) -> Result<&'a [u8]> {
        let len = u32::from_le_bytes(self.array()?) as usize;
        self.take(len)
    }

    fn string(&mut self) -> Result<String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| Error::Corrupt("key is not utf-8".into()))
    }
}

/// Accumulates records into one frame.
pub(super) struct FrameBuf {
    buf: Vec<u8>,
}

impl FrameBuf {
    pub(super) fn new() -> Self {
        FrameBuf { buf: vec![0; FRAME_HEADER] }
    }

    pub(super) fn push(&mut self, record: &Record) {
        record.encode(&mut self.buf);
    }

    fn payload_len(&self) -> usize {
        self.buf.len() - FRAME_HEADER
    }

    /// The frame's bytes, or nothing when no record was pushed.
    pub(super) fn finish(mut self) -> Vec<u8> {
        if self.payload_len() == 0 {
            return Vec::new();
        }
        let len = u32::try_from(self.payload_len()).unwrap_or(u32::MAX);
        let crc = crc32fast::hash(&self.buf[FRAME_HEADER..]);
        self.buf[0..4].copy_from_slice(&len.to_le_bytes());
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        let header_crc = crc32fast::hash(&self.buf[0..8]);
        self.buf[8..12].copy_from_slice(&header_crc.to_le_bytes());
        self.buf
    }
}

enum Frame<'a> {
    Valid {
        payload: &'a [u8],
        end: usize,
    },
    /// The frame starting here is damaged.
    Bad,
}

fn frame_at(data: &[u8], off: usize) -> Frame<'_> {
    let Some(header) = data.get(off..off + FRAME_HEADER) else {
        return Frame::Bad;
    };
    let field = |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    let (len, crc, header_crc) = (field(0) as usize, field(4), field(8));
    if crc32fast::hash(&header[0..8]) != header_crc || len == 0 || len > MAX_FRAME {
        return Frame::Bad;
    }
    let end = off + FRAME_HEADER + len;
    match data.get(off + FRAME_HEADER..end) {
        Some(payload) if crc32fast::hash(payload) == crc => Frame::Valid { payload, end },
        _ => Frame::Bad,
    }
}

/// Whether the damaged frame at `off` can be the remains of the last write, cut short by a
/// crash. The last write is a single frame, so nothing valid can follow it: if its header
/// is intact, the file must end within the frame (or hold only zeros after it); if not, no
/// valid frame may start anywhere after it.
fn is_torn_tail(data: &[u8], off: usize) -> bool {
    let header = data.get(off..off + FRAME_HEADER);
    if let Some(h) = header {
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let header_crc = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
        if crc32fast::hash(&h[0..8]) == header_crc && len > 0 && len <= MAX_FRAME {
            let end = off + FRAME_HEADER + len;
            return data.get(end..).is_none_or(|rest| rest.iter().all(|b| *b == 0));
        }
    }
    (off + 1..data.len()).all(|o| !matches!(frame_at(data, o), Frame::Valid { .. }))
}

/// Damage in the middle of a log: where the first damaged frame starts, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Damage {
    pub(super) offset: usize,
    what: String,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "damaged frame at offset {}: {}", self.offset, self.what)
    }
}

/// What reading a log found.
#[derive(Debug, PartialEq, Eq)]
enum Scan {
    /// Every frame up to this length is valid; anything after it is a torn tail to truncate.
    Complete(usize),
    /// A frame is damaged and valid frames may follow it: not the remains of a crash.
    Damaged(Damage),
}

/// Decodes a log, passing the records of every valid frame to `apply` in order, up to a torn
/// tail (then [`Scan::Complete`] with the length to keep) or damage elsewhere (then
/// [`Scan::Damaged`], `apply` having seen every record before it). Fails with
/// [`Error::Corrupt`] when the header frame is damaged, and with `apply`'s error.
fn scan(data: &[u8], mut apply: impl FnMut(Record) -> Result<()>) -> Result<Scan> {
    let mut off = 0;
    while off < data.len() {
        match frame_at(data, off) {
            Frame::Valid { payload, end } => {
                let records = match decode_frame(payload, off == 0) {
                    Ok(records) => records,
                    Err(_) if off == 0 => return Err(Error::Corrupt("the log's header frame is damaged".into())),
                    Err(what) => return Ok(Scan::Damaged(Damage { offset: off, what })),
                };
                for record in records {
                    apply(record)?;
                }
                off = end;
            }
            Frame::Bad if off > 0 && is_torn_tail(data, off) => return Ok(Scan::Complete(off)),
            Frame::Bad if off > 0 => {
                return Ok(Scan::Damaged(Damage { offset: off, what: "its checksum does not match".into() }));
            }
            Frame::Bad => return Err(Error::Corrupt("the log's header frame is damaged".into())),
        }
    }
    if off == 0 {
        return Err(Error::Corrupt("log has no header".into()));
    }
    Ok(Scan::Complete(off))
}

/// The records of one frame; the first frame of a log holds the header and only it.
fn decode_frame(payload: &[u8], first: bool) -> Result<Vec<Record>, String> {
    let mut d = Decoder { buf: payload };
    let mut records = Vec::new();
    while !d.buf.is_empty() {
        let record = Record::decode(&mut d).map_err(|e| e.to_string())?;
        if first != matches!(record, Record::Header { .. }) {
            return Err("misplaced header".into());
        }
        records.push(record);
    }
    Ok(records)
}

/// What [`repair`] cut off a damaged log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repaired {
    /// The log file.
    pub path: PathBuf,
    /// Where the damage starts: the log now ends here.
    pub offset: u64,
    /// What is wrong with the frame there.
    pub damage: String,
    /// The bytes removed (from `offset` to the old end).
    pub dropped_bytes: u64,
    /// Frames after the damage that were still readable, and the records they held: writes
    /// that were acknowledged once and are now lost.
    pub dropped_frames: usize,
    pub dropped_records: usize,
    /// The revisions of the writes among those records, lowest and highest.
    pub dropped_revisions: Option<(Revision, Revision)>,
    /// The store's revision as the kept part of the log leaves it.
    pub kept_revision: Revision,
}

/// Cuts the log in `dir` at its first damaged frame, keeping every frame before it, and tells
/// what was cut. Returns `None` when the log has no damage but, perhaps, a torn tail (which
/// opening the store truncates by itself). Fails when the directory is in use, when there is no
/// log, and when the damage is in the header frame (nothing could be kept).
pub(super) fn repair(dir: &Path) -> Result<Option<Repaired>> {
    let lock = OpenOptions::new().create(false).write(true).open(dir.join(LOCK_FILE));
    let lock = match lock {
        Ok(lock) => lock,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Error::Io(io::Error::new(e.kind(), format!("{} holds no store", dir.display()))));
        }
        Err(e) => return Err(e.into()),
    };
    take_lock(dir, &lock)?;
    let path = dir.join(LOG_FILE);
    let data = fs::read(&path)?;
    let mut kept_revision = 0;
    let scanned = scan(&data, |record| {
        kept_revision = record_revision(&record).unwrap_or(kept_revision);
        Ok(())
    })?;
    let Scan::Damaged(damage) = scanned else { return Ok(None) };
    let (mut dropped_frames, mut dropped_records, mut dropped_revisions) = (0, 0, None);
    let mut off = damage.offset + 1;
    while off < data.len() {
        match frame_at(&data, off) {
            Frame::Valid { payload, end } => {
                dropped_frames += 1;
                for record in decode_frame(payload, false).unwrap_or_default() {
                    dropped_records += 1;
                    if let Some(rev) = record_revision(&record) {
                        let (low, high) = dropped_revisions.unwrap_or((rev, rev));
                        dropped_revisions = Some((low.min(rev), high.max(rev)));
                    }
                }
                off = end;
            }
            Frame::Bad => off += 1,
        }
    }
    let file = OpenOptions::new().write(true).open(&path)?;
    file.set_len(damage.offset as u64)?;
    file.sync_all()?;
    Ok(Some(Repaired {
        path,
        offset: damage.offset as u64,
        damage: damage.what,
        dropped_bytes: (data.len() - damage.offset) as u64,
        dropped_frames,
        dropped_records,
        dropped_revisions,
        kept_revision,
    }))
}

/// The store revision a record leaves behind, for those that set one.
fn record_revision(record: &Record) -> Option<Revision> {
    match record {
        Record::Header { revision, .. } | Record::Delete { revision, .. } => Some(*revision),
        Record::Put(kv) => Some(kv.mod_revision),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, rev: Revision) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Bytes::from(vec![7; 100]),
            create_revision: rev,
            mod_revision: rev,
            lease: 0,
        }
    }

    fn log(frames: usize) -> Vec<u8> {
        let mut f = FrameBuf::new();
        f.push(&Record::Header { revision: 1, compacted: 0, next_lease: 1 });
        let mut data = f.finish();
        for i in 0..frames {
            let mut f = FrameBuf::new();
            f.push(&Record::Put(kv(&format!("k{i}"), i as i64 + 2)));
            f.push(&Record::Grant { lease: 3, ttl: Duration::from_millis(1500) });
            data.extend(f.finish());
        }
        data
    }

    fn records(data: &[u8]) -> Result<(Vec<Record>, usize)> {
        let mut out = Vec::new();
        let scanned = scan(data, |r| {
            out.push(r);
            Ok(())
        })?;
        match scanned {
            Scan::Complete(len) => Ok((out, len)),
            Scan::Damaged(damage) => Err(Error::Corrupt(damage.to_string())),
        }
    }

    #[cfg(unix)]
    #[test]
    fn the_directory_and_its_files_are_the_owners_alone() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().expect("temporary directory");
        let dir = root.path().join("data");
        // A directory others could read is made private too.
        fs::create_dir(&dir).expect("mkdir");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
        let _log = recover(&dir, &[Record::Header { revision: 1, compacted: 0, next_lease: 1 }], |_| Ok(()))
            .expect("a new log");
        let mode = |p: &Path| fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        for entry in fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }

    #[test]
    fn round_trip() {
        let data = log(3);
        let (recs, len) = records(&data).expect("parse");
        assert_eq!(len, data.len());
        assert_eq!(recs.len(), 7);
        assert_eq!(recs[1], Record::Put(kv("k0", 2)));
        assert_eq!(recs[2], Record::Grant { lease: 3, ttl: Duration::from_millis(1500) });
    }

    #[test]
    fn torn_tails_are_cut_and_middle_damage_is_reported() {
        let data = log(3);
        let full = records(&data).expect("parse").1;
        let last_start = log(2).len();
        // Cut anywhere inside the last frame.
        for cut in last_start + 1..data.len() {
            assert_eq!(records(&data[..cut]).expect("torn").1, last_start, "cut at {cut}");
        }
        // The last frame's bytes partly unwritten (zeros), as after a crash.
        let mut zeroed = data.clone();
        zeroed[last_start..last_start + 20].fill(0);
        assert_eq!(records(&zeroed).expect("torn").1, last_start);
        let mut zeroed = data.clone();
        zeroed[full - 10..].fill(0);
        assert_eq!(records(&zeroed).expect("torn").1, last_start);
        // A flipped bit in an earlier frame, in its payload or its header.
        for pos in [log(1).len() + 30, log(1).len() + 1] {
            let mut bad = data.clone();
            bad[pos] ^= 1;
            assert!(matches!(records(&bad), Err(Error::Corrupt(_))), "flip at {pos}");
        }
        // The damage is named by its offset.
        let mut bad = data.clone();
        bad[log(1).len() + 30] ^= 1;
        let err = records(&bad).unwrap_err().to_string();
        assert!(err.contains(&format!("damaged frame at offset {}", log(1).len())), "{err}");
        // A damaged header frame is never taken for a torn tail.
        let mut bad = data.clone();
        bad[20] ^= 1;
        assert!(matches!(records(&bad), Err(Error::Corrupt(_))));
    }

    #[test]
    fn repair_cuts_the_log_at_the_damage_and_tells_what_was_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = log(4);
        let damaged_at = log(1).len();
        data[damaged_at + 30] ^= 1;
        fs::write(dir.path().join(LOG_FILE), &data).unwrap();
        fs::write(dir.path().join(LOCK_FILE), b"").unwrap();

        let repaired = repair(dir.path()).unwrap().expect("damage found");
        assert_eq!(repaired.offset, damaged_at as u64);
        assert_eq!(repaired.dropped_bytes, (data.len() - damaged_at) as u64);
        // Frames 2 and 3 (revisions 4 and 5) were readable after the damaged frame 1.
        assert_eq!((repaired.dropped_frames, repaired.dropped_records), (2, 4));
        assert_eq!(repaired.dropped_revisions, Some((4, 5)));
        assert_eq!(repaired.kept_revision, 2);
        let kept = fs::read(dir.path().join(LOG_FILE)).unwrap();
        assert_eq!(kept, log(1), "everything before the damage is kept, byte for byte");
        assert_eq!(records(&kept).unwrap().0.len(), 3);

        // A log with no damage (a torn tail at most) is left alone.
        assert_eq!(repair(dir.path()).unwrap(), None);
        let torn = log(2);
        fs::write(dir.path().join(LOG_FILE), &torn[..torn.len() - 3]).unwrap();
        assert_eq!(repair(dir.path()).unwrap(), None);
        assert_eq!(fs::read(dir.path().join(LOG_FILE)).unwrap().len(), torn.len() - 3);
    }
}
