//! The byte store under the Blob data plane: blob contents as immutable encrypted objects on the
//! local disk, written and read as streams (one chunk in memory at a time).
//!
//! Format (documented in docs/formats/blob-object.md):
//! - a 32-byte header: magic `CIELOBJ1`, chunk size (u32 BE), reserved, the 16-byte object id;
//! - then chunks: up to `chunk size` bytes of plaintext each, encrypted with AES-256-GCM, each
//!   followed by its 16-byte tag; there is always at least one chunk (an empty object has one
//!   empty chunk), and the last one is marked as last in its associated data.
//! - Each object has its own key, HKDF-SHA256(account data key, salt "ciel-blob-object-v1",
//!   info = object id); the nonce is the chunk index. Objects are never rewritten (a new write is
//!   a new object id), so no (key, nonce) pair is used twice.
//! - Associated data: object id, chunk index, last flag. Flipping, reordering, swapping chunks
//!   between objects, or truncating the file at any point fails authentication.
//!
//! Durability: an object is written to a temporary name, fsynced, renamed into place, and its
//! directory fsynced before `finish` returns.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::hkdf;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub const MAGIC: &[u8; 8] = b"CIELOBJ1";
pub const HEADER_LEN: u64 = 32;
pub const TAG_LEN: u64 = 16;
/// 1 MiB: large enough that the tag overhead is negligible (16 B per MiB), small enough that a
/// ranged read decrypts little it does not return.
pub const DEFAULT_CHUNK: u32 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("the object is corrupt or was tampered with ({0})")]
    Corrupt(String),
    #[error("the requested range is not satisfiable")]
    Range,
    #[error("the system random generator failed")]
    Rng,
}

pub type ObjectId = [u8; 16];

pub fn new_object_id() -> Result<ObjectId, ObjectError> {
    let mut id = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id)
        .map_err(|_| ObjectError::Rng)?;
    Ok(id)
}

pub fn object_id_hex(id: &ObjectId) -> String {
    ciel_core::audit::hex_lower(id)
}

struct Len32;
impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

fn object_key(data_key: &[u8; 32], id: &ObjectId) -> Result<LessSafeKey, ObjectError> {
    let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"ciel-blob-object-v1");
    let prk = salt.extract(data_key);
    let info = [&id[..]];
    let okm = prk.expand(&info, Len32).map_err(|_| ObjectError::Rng)?;
    let mut k = [0u8; 32];
    okm.fill(&mut k).map_err(|_| ObjectError::Rng)?;
    Ok(LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, &k).map_err(|_| ObjectError::Rng)?,
    ))
}

fn nonce(index: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&index.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

fn aad(id: &ObjectId, index: u64, last: bool) -> [u8; 25] {
    let mut a = [0u8; 25];
    a[..16].copy_from_slice(id);
    a[16..24].copy_from_slice(&index.to_be_bytes());
    a[24] = last as u8;
    a
}

/// Where an object lives: `root/{first two hex}/{id hex}`.
pub fn object_path(root: &Path, id: &ObjectId) -> PathBuf {
    let h = object_id_hex(id);
    root.join(&h[..2]).join(h)
}

/// Writes one object as a stream. Holds at most one chunk of plaintext.
pub struct ObjectWriter {
    key: LessSafeKey,
    id: ObjectId,
    chunk: usize,
    buf: Vec<u8>,
    index: u64,
    len: u64,
    file: File,
    tmp: PathBuf,
    dest: PathBuf,
}

impl ObjectWriter {
    pub fn create(
        root: &Path,
        data_key: &[u8; 32],
        id: ObjectId,
        chunk: u32,
    ) -> Result<Self, ObjectError> {
        let dest = object_path(root, &id);
        let dir = dest
            .parent()
            .ok_or_else(|| ObjectError::Corrupt("bad path".into()))?;
        std::fs::create_dir_all(dir)?;
        let tmp = dest.with_extension("partial");
        let mut file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        let mut header = [0u8; HEADER_LEN as usize];
        header[..8].copy_from_slice(MAGIC);
        header[8..12].copy_from_slice(&chunk.to_be_bytes());
        header[16..32].copy_from_slice(&id);
        file.write_all(&header)?;
        Ok(Self {
            key: object_key(data_key, &id)?,
            id,
            chunk: chunk as usize,
            buf: Vec::with_capacity(chunk as usize),
            index: 0,
            len: 0,
            file,
            tmp,
            dest,
        })
    }

    pub fn id(&self) -> ObjectId {
        self.id
    }

    fn seal_chunk(&mut self, last: bool) -> Result<(), ObjectError> {
        let mut data = std::mem::take(&mut self.buf);
        self.key
            .seal_in_place_append_tag(
                nonce(self.index),
                Aad::from(aad(&self.id, self.index, last)),
                &mut data,
            )
            .map_err(|_| ObjectError::Rng)?;
        self.file.write_all(&data)?;
        data.clear();
        self.buf = data;
        self.index += 1;
        Ok(())
    }

    pub fn write(&mut self, mut bytes: &[u8]) -> Result<(), ObjectError> {
        while !bytes.is_empty() {
            // A full chunk is sealed only when more bytes follow, so the last chunk is known.
            if self.buf.len() == self.chunk {
                self.seal_chunk(false)?;
            }
            let take = (self.chunk - self.buf.len()).min(bytes.len());
            self.buf.extend_from_slice(&bytes[..take]);
            self.len += take as u64;
            bytes = &bytes[take..];
        }
        Ok(())
    }

    /// Seals the last chunk, makes the object durable and visible; returns its length.
    pub fn finish(mut self) -> Result<u64, ObjectError> {
        self.seal_chunk(true)?;
        self.file.sync_all()?;
        std::fs::rename(&self.tmp, &self.dest)?;
        if let Some(dir) = self.dest.parent() {
            File::open(dir)?.sync_all()?;
        }
        self.tmp = PathBuf::new();
        Ok(self.len)
    }
}

impl Drop for ObjectWriter {
    /// An unfinished write leaves nothing behind.
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Reads an object, whole or by range, one chunk at a time.
pub struct ObjectReader {
    key: LessSafeKey,
    id: ObjectId,
    chunk: u64,
    file: File,
    chunks: u64,
    len: u64,
}

impl ObjectReader {
    pub fn open(root: &Path, data_key: &[u8; 32], id: ObjectId) -> Result<Self, ObjectError> {
        let mut file = File::open(object_path(root, &id))?;
        let mut header = [0u8; HEADER_LEN as usize];
        file.read_exact(&mut header)
            .map_err(|_| ObjectError::Corrupt("short header".into()))?;
        if &header[..8] != MAGIC || header[16..32] != id {
            return Err(ObjectError::Corrupt("bad header".into()));
        }
        let chunk = u32::from_be_bytes([header[8], header[9], header[10], header[11]]) as u64;
        if chunk == 0 {
            return Err(ObjectError::Corrupt("zero chunk size".into()));
        }
        let body = file
            .metadata()?
            .len()
            .checked_sub(HEADER_LEN)
            .ok_or_else(|| ObjectError::Corrupt("short".into()))?;
        let stride = chunk + TAG_LEN;
        let chunks = body.div_ceil(stride).max(1);
        let last_ct = body - (chunks - 1) * stride;
        if last_ct < TAG_LEN {
            return Err(ObjectError::Corrupt("truncated chunk".into()));
        }
        let len = (chunks - 1) * chunk + (last_ct - TAG_LEN);
        Ok(Self {
            key: object_key(data_key, &id)?,
            id,
            chunk,
            file,
            chunks,
            len,
        })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Decrypts chunk `index`.
    pub fn chunk(&mut self, index: u64) -> Result<Vec<u8>, ObjectError> {
        if index >= self.chunks {
            return Err(ObjectError::Range);
        }
        let stride = self.chunk + TAG_LEN;
        let start = HEADER_LEN + index * stride;
        let ct_len = if index + 1 == self.chunks {
            self.len - index * self.chunk + TAG_LEN
        } else {
            stride
        };
        let mut buf = vec![0u8; ct_len as usize];
        self.file.seek(SeekFrom::Start(start))?;
        self.file.read_exact(&mut buf)?;
        let last = index + 1 == self.chunks;
        let plain = self
            .key
            .open_in_place(
                nonce(index),
                Aad::from(aad(&self.id, index, last)),
                &mut buf,
            )
            .map_err(|_| ObjectError::Corrupt(format!("chunk {index} fails authentication")))?;
        let n = plain.len();
        buf.truncate(n);
        Ok(buf)
    }

    /// Calls `sink` with the plaintext of `[start, end)` piece by piece (at most one chunk each).
    pub fn read_range(
        &mut self,
        start: u64,
        end: u64,
        mut sink: impl FnMut(&[u8]) -> Result<(), ObjectError>,
    ) -> Result<(), ObjectError> {
        if start > end || end > self.len {
            return Err(ObjectError::Range);
        }
        if start == end {
            // Even an empty read authenticates the object.
            if self.len == 0 {
                self.chunk(0)?;
            }
            return Ok(());
        }
        let first = start / self.chunk;
        let last = (end - 1) / self.chunk;
        for i in first..=last {
            let data = self.chunk(i)?;
            let base = i * self.chunk;
            let from = start.saturating_sub(base) as usize;
            let to = ((end - base) as usize).min(data.len());
            sink(&data[from..to])?;
        }
        Ok(())
    }
}

pub fn delete(root: &Path, id: &ObjectId) -> Result<(), ObjectError> {
    match std::fs::remove_file(object_path(root, id)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

pub mod gc;

#[cfg(test)]
mod tests;
