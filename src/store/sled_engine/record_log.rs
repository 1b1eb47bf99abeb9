//! Item records outside sled's log: append-only segment files in `records/` beside sled's
//! files. The `items` tree keeps, per item, its content hash and where its record lies
//! ([`Locator`]); the record itself (`item_record`'s compressed bytes) is written here once.
//!
//! Why: sled logs every insert as a delta of its leaf and rewrites leaves whole, so a record
//! of 700 bytes in sled cost its size several times over in the files until sled reclaimed
//! the segments (benches/sled_layout.rs). Appended here it costs its size and a frame header.
//!
//! Each record is framed: its CRC-32 (4 bytes) and length (4), little-endian, then the
//! bytes. A segment is never appended to after the process that wrote it closed it: every
//! open starts a new one, so a locator that a crash left pointing past a segment's end (the
//! records were not on disk yet) stays past it, and reads as no record (the item is missing,
//! as an index entry without its item is). A frame whose CRC does not match reads the same,
//! with a warning.
//!
//! Writes go to the file at once (no buffer in this process); [`RecordLog::sync`] makes them
//! durable and runs before every flush of sled, so that a locator sled keeps never points to
//! a record the disk lost. Space of records that died (items pruned, rewritten or moved to
//! another story) comes back when [`super::SledEngine`]'s garbage collection removes a
//! segment without live records, or moves the live records of one a quarter dead and removes it;
//! `feedmux compact` writes a fresh log.
//!
//! This file owns the files and their framing only; which records are live is the `items`
//! tree's to say.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// The directory of the record log, inside the store's directory.
pub(super) const RECORDS_DIR: &str = "records";
/// A segment takes no more appends once it holds this many bytes (a single larger record
/// gets a segment of its own).
pub(super) const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;
/// The bytes before a record in its segment: CRC-32 and length.
pub(super) const FRAME_HEADER: u64 = 8;
const SEGMENT_SUFFIX: &str = ".rec";

/// Where a record lies: its segment, the offset of its frame and the record's length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Locator {
    pub segment: u32,
    pub offset: u32,
    pub len: u32,
}

impl Locator {
    /// The bytes its frame takes in the segment.
    pub fn frame_bytes(&self) -> u64 {
        FRAME_HEADER + u64::from(self.len)
    }
}

/// One segment file and the bytes written to it (what this process wrote, or the file's
/// length when it opened it).
struct Segment {
    file: File,
    len: AtomicU64,
}

impl Segment {
    fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }
}

/// The segment being appended to.
struct Writer {
    number: u32,
    segment: Arc<Segment>,
}

/// The open record log of one store.
pub(super) struct RecordLog {
    dir: PathBuf,
    /// [`SEGMENT_BYTES`], smaller in tests.
    segment_bytes: AtomicU64,
    /// `None` until the first append of this process (see the module's doc).
    writer: Mutex<Option<Writer>>,
    /// Every segment, open for reading.
    segments: RwLock<BTreeMap<u32, Arc<Segment>>>,
    /// Segments appended to since the last [`RecordLog::sync`], and whether a segment was
    /// created since (the directory then needs a sync too).
    unsynced: Mutex<(Vec<Arc<Segment>>, bool)>,
    /// Held through a sync, so that a sync which finds another's fsync under way returns only
    /// once that one is done too: when `sync` returns, every earlier append is durable.
    syncing: Mutex<()>,
}

impl RecordLog {
    /// Opens the log in `store`'s directory (created on the first append).
    pub fn open(store: &Path) -> std::io::Result<RecordLog> {
        let dir = store.join(RECORDS_DIR);
        let mut segments = BTreeMap::new();
        match std::fs::read_dir(&dir) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry?;
                    let name = entry.file_name();
                    let Some(segment) = segment_number(&name.to_string_lossy()) else {
                        continue; // not ours
                    };
                    let file = File::open(entry.path())?;
                    let len = AtomicU64::new(file.metadata()?.len());
                    segments.insert(segment, Arc::new(Segment { file, len }));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(RecordLog {
            dir,
            segment_bytes: AtomicU64::new(SEGMENT_BYTES),
            writer: Mutex::new(None),
            segments: RwLock::new(segments),
            unsynced: Mutex::new((Vec::new(), false)),
            syncing: Mutex::new(()),
        })
    }

    /// Appends `records` (with one write per segment they go to) and says where each lies.
    /// On an error nothing written counts: the next append writes over it.
    pub fn append(&self, records: &[&[u8]]) -> std::io::Result<Vec<Locator>> {
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut locators = Vec::with_capacity(records.len());
        let mut buffer = Vec::new();
        for record in records {
            let len = u32::try_from(record.len()).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "a record over 4 GiB")
            })?;
            let frame = FRAME_HEADER + u64::from(len);
            let needs_segment = writer.as_ref().is_none_or(|w| {
                let used = w.segment.len() + buffer.len() as u64;
                used > 0 && used + frame > self.segment_bytes()
            });
            if needs_segment {
                self.write_buffer(writer.as_mut(), &mut buffer)?;
                *writer = Some(self.new_segment()?);
            }
            let w = writer
                .as_ref()
                .ok_or_else(|| std::io::Error::other("no segment to append to"))?;
            let offset = w.segment.len() + buffer.len() as u64;
            locators.push(Locator {
                segment: w.number,
                offset: u32::try_from(offset).map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, "a segment over 4 GiB")
                })?,
                len,
            });
            buffer.extend_from_slice(&crc32fast::hash(record).to_le_bytes());
            buffer.extend_from_slice(&len.to_le_bytes());
            buffer.extend_from_slice(record);
        }
        self.write_buffer(writer.as_mut(), &mut buffer)?;
        Ok(locators)
    }

    /// Writes `buffer` at the end of the writer's segment and empties it.
    fn write_buffer(
        &self,
        writer: Option<&mut Writer>,
        buffer: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        let Some(writer) = writer else {
            return Ok(());
        };
        if buffer.is_empty() {
            return Ok(());
        }
        let segment = &writer.segment;
        segment.file.write_all_at(buffer, segment.len())?;
        segment.len.fetch_add(buffer.len() as u64, Ordering::AcqRel);
        buffer.clear();
        let mut unsynced = self.unsynced.lock().unwrap_or_else(|p| p.into_inner());
        if !unsynced.0.iter().any(|s| Arc::ptr_eq(s, segment)) {
            unsynced.0.push(Arc::clone(segment));
        }
        Ok(())
    }

    /// Creates the segment after the last (callers hold the writer's lock). A number may
    /// come back after its segment was removed: no live record points there any more.
    fn new_segment(&self) -> std::io::Result<Writer> {
        std::fs::create_dir_all(&self.dir)?;
        let number = self
            .segments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .next_back()
            .map_or(1, |last| last + 1);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(self.segment_path(number))?;
        let segment = Arc::new(Segment {
            file,
            len: AtomicU64::new(0),
        });
        self.segments
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(number, Arc::clone(&segment));
        self.unsynced.lock().unwrap_or_else(|p| p.into_inner()).1 = true;
        Ok(Writer { number, segment })
    }

    /// The record at `at`; `None` when its segment is gone, it lies past the segment's end, or
    /// its frame does not match (see the module's doc).
    pub fn read(&self, at: Locator) -> std::io::Result<Option<Vec<u8>>> {
        let Some(segment) = self.segment(at.segment) else {
            return Ok(None);
        };
        if !Self::lies_within(&segment, at) {
            return Ok(None);
        }
        let mut frame = vec![0u8; at.frame_bytes() as usize];
        match segment.file.read_exact_at(&mut frame, u64::from(at.offset)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let crc = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]);
        let len = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
        let record = frame.split_off(FRAME_HEADER as usize);
        if len != at.len || crc32fast::hash(&record) != crc {
            tracing::warn!(
                segment = at.segment,
                offset = at.offset,
                "an item record in the store's record log is damaged; the item is skipped"
            );
            return Ok(None);
        }
        Ok(Some(record))
    }

    /// Whether a record may lie at `at`: its segment is there and long enough (no read; a
    /// frame that does not match is found only by [`RecordLog::read`]).
    pub fn holds(&self, at: Locator) -> bool {
        self.segment(at.segment)
            .is_some_and(|segment| Self::lies_within(&segment, at))
    }

    fn lies_within(segment: &Segment, at: Locator) -> bool {
        u64::from(at.offset) + at.frame_bytes() <= segment.len()
    }

    fn segment(&self, number: u32) -> Option<Arc<Segment>> {
        self.segments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&number)
            .cloned()
    }

    /// Makes every append so far durable (before sled's flush, see the module's doc).
    pub fn sync(&self) -> std::io::Result<()> {
        let _syncing = self.syncing.lock().unwrap_or_else(|p| p.into_inner());
        let (segments, new_segment) = {
            let mut unsynced = self.unsynced.lock().unwrap_or_else(|p| p.into_inner());
            (
                std::mem::take(&mut unsynced.0),
                std::mem::take(&mut unsynced.1),
            )
        };
        let synced = (|| {
            for segment in &segments {
                segment.file.sync_data()?;
            }
            if new_segment {
                File::open(&self.dir)?.sync_all()?;
            }
            Ok(())
        })();
        if synced.is_err() {
            // Tried again at the next sync.
            let mut unsynced = self.unsynced.lock().unwrap_or_else(|p| p.into_inner());
            unsynced.0.extend(segments);
            unsynced.1 |= new_segment;
        }
        synced
    }

    /// Every segment but the one being appended to, with its size in bytes.
    pub fn sealed_segments(&self) -> Vec<(u32, u64)> {
        let current = self
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|w| w.number);
        let segments = self.segments.read().unwrap_or_else(|p| p.into_inner());
        segments
            .iter()
            .filter(|(number, _)| Some(**number) != current)
            .map(|(number, segment)| (*number, segment.len()))
            .collect()
    }

    /// Deletes a segment (no live record may lie in it).
    pub fn remove_segment(&self, segment: u32) -> std::io::Result<()> {
        self.segments
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&segment);
        match std::fs::remove_file(self.segment_path(segment)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The bytes of every segment.
    pub fn size_on_disk(&self) -> u64 {
        let segments = self.segments.read().unwrap_or_else(|p| p.into_inner());
        segments.values().map(|s| s.len()).sum()
    }

    /// How large a segment grows.
    pub fn segment_bytes(&self) -> u64 {
        self.segment_bytes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Segments of `bytes` from now on (tests: garbage collection without 16 MiB of records).
    #[cfg(test)]
    pub fn set_segment_bytes(&self, bytes: u64) {
        self.segment_bytes
            .store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// The directory the segments are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn segment_path(&self, segment: u32) -> PathBuf {
        self.dir.join(format!("{segment:08}{SEGMENT_SUFFIX}"))
    }
}

/// The number of a segment's file name (`00000042.rec`).
fn segment_number(name: &str) -> Option<u32> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_and_a_reopened_log_appends_to_a_new_segment() {
        let dir = tempfile::tempdir().unwrap();
        let log = RecordLog::open(dir.path()).unwrap();
        let at = log.append(&[b"one", b"two two"]).unwrap();
        assert_eq!(log.read(at[1]).unwrap().as_deref(), Some(&b"two two"[..]));
        log.sync().unwrap();
        drop(log);
        let log = RecordLog::open(dir.path()).unwrap();
        assert_eq!(log.read(at[0]).unwrap().as_deref(), Some(&b"one"[..]));
        let later = log.append(&[b"three"]).unwrap();
        assert_ne!(later[0].segment, at[0].segment);
        assert_eq!(log.sealed_segments(), vec![(at[0].segment, 8 * 2 + 3 + 7)]);
    }

    #[test]
    fn a_record_past_the_end_or_with_a_wrong_checksum_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let log = RecordLog::open(dir.path()).unwrap();
        let at = log.append(&[b"first", b"second"]).unwrap();
        log.sync().unwrap();
        drop(log);
        let path = dir.path().join(RECORDS_DIR).join("00000001.rec");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[FRAME_HEADER as usize] ^= 0xff; // a flipped byte in "first"
        bytes.truncate(bytes.len() - 2); // "second" cut short
        std::fs::write(&path, bytes).unwrap();
        let log = RecordLog::open(dir.path()).unwrap();
        assert_eq!(log.read(at[0]).unwrap(), None);
        assert_eq!(log.read(at[1]).unwrap(), None);
        assert!(log.holds(at[0]) && !log.holds(at[1]));
    }

    #[test]
    fn a_full_segment_is_sealed_and_a_removed_one_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let log = RecordLog::open(dir.path()).unwrap();
        let big = vec![7u8; (SEGMENT_BYTES / 2) as usize];
        let at = log.append(&[&big, &big, b"small"]).unwrap();
        assert_eq!(at[0].segment, at[1].segment - 1);
        assert_eq!(at[1].segment, at[2].segment);
        assert_eq!(log.sealed_segments().len(), 1);
        log.remove_segment(at[0].segment).unwrap();
        assert_eq!(log.read(at[0]).unwrap(), None);
        assert_eq!(log.read(at[2]).unwrap().as_deref(), Some(&b"small"[..]));
        assert!(!log.dir().join("00000001.rec").exists());
    }
}
