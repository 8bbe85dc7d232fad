//! The manifest (`manifest.json`, format `ciel-export/1`), the journal that makes an export
//! resumable, files written while hashed, and `verify`.
//!
//! The manifest is the export's table of contents and its integrity record: every file with its
//! size and SHA-256. It is written last, atomically (temporary name, fsync, rename, directory
//! fsync), so a directory with a `manifest.json` is a finished export and one without is not.
//! Until then, `.ciel-export-journal.jsonl` records each file as it is completed (one JSON line,
//! appended after the file is renamed into place): `--resume` keeps what the journal names.

use anyhow::{anyhow, bail, Context, Result};
use ring::digest::{Context as Sha256, SHA256};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

pub const FORMAT: &str = "ciel-export/1";
pub const MANIFEST: &str = "manifest.json";
pub const JOURNAL: &str = ".ciel-export-journal.jsonl";
/// Suffix of a file being written; never part of a finished export.
pub const PARTIAL: &str = ".partial";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FileEntry {
    /// Relative to the export directory, `/`-separated.
    pub path: String,
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TenantRef {
    pub id: String,
    pub display_name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    /// `ciel` and its version.
    pub software: String,
    /// The source deployment's DNS domain (its storage endpoints were `{account}.blob.core.{domain}`).
    pub domain: String,
    /// The audit public key (hex) that verifies `audit/audit-log.jsonl`.
    pub audit_public_key: String,
}

/// The base of an incremental export.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Since {
    /// The base export's directory as given at export time (absolute).
    pub path: String,
    /// SHA-256 of the base's `manifest.json` bytes: which export this one completes.
    pub manifest_sha256: String,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format: String,
    pub tenant: TenantRef,
    pub source: Source,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Since>,
    /// Counts, for people: subscriptions, resource groups, resources, containers, blobs,
    /// snapshots, bytes of blob content written.
    #[serde(default)]
    pub summary: BTreeMap<String, u64>,
    /// Present when the export holds Key Vault material: the recipient it is encrypted to
    /// (`alg`, `enc`, `kid` = the RSA key's RFC 7638 thumbprint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyvault: Option<serde_json::Value>,
    /// Sorted by path.
    pub files: Vec<FileEntry>,
}

impl Manifest {
    pub fn read(dir: &Path) -> Result<(Manifest, Vec<u8>)> {
        let p = dir.join(MANIFEST);
        let bytes = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
        let m: Manifest = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a ciel-export manifest", p.display()))?;
        if m.format != FORMAT {
            bail!(
                "unsupported export format {:?} (this Ciel reads {FORMAT})",
                m.format
            );
        }
        Ok((m, bytes))
    }

    /// Writes `manifest.json` atomically; returns the SHA-256 of its bytes.
    pub fn write(&self, dir: &Path) -> Result<String> {
        let bytes = serde_json::to_vec_pretty(self)?;
        write_atomic(&dir.join(MANIFEST), &bytes)?;
        Ok(sha256_hex(&bytes))
    }
}

/// SHA-256 through ring: its assembly (SHA-NI where the CPU has it) runs several times faster
/// than a portable implementation, and hashing is on the critical path of export and verify.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&SHA256, bytes))
}

/// Write, fsync, rename, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = partial_path(path);
    {
        let mut f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(path)?;
    Ok(())
}

fn sync_dir(path: &Path) -> Result<()> {
    if let Some(d) = path.parent() {
        File::open(d)?.sync_all()?;
    }
    Ok(())
}

fn partial_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(PARTIAL);
    PathBuf::from(s)
}

/// One completed file as the journal records it. `tag` identifies the version of what was
/// exported (a blob's ETag), so that a resumed export rewrites a blob that changed meanwhile.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JournalLine {
    pub path: String,
    pub size: u64,
    pub sha256: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tag: String,
}

/// The export's journal and table of files so far.
pub struct Journal {
    file: File,
    /// Path → entry; the last line for a path wins (a resumed export rewrites metadata files).
    pub done: HashMap<String, JournalLine>,
}

impl Journal {
    /// Opens (resume) or starts the journal of `dir`.
    pub fn open(dir: &Path, resume: bool) -> Result<Journal> {
        let p = dir.join(JOURNAL);
        let mut done = HashMap::new();
        let mut whole = 0u64;
        if resume {
            if let Ok(f) = File::open(&p) {
                let mut r = BufReader::new(f);
                let mut line = String::new();
                loop {
                    line.clear();
                    let n = r.read_line(&mut line)?;
                    // A line cut by the interruption (no newline) is the one file not to trust;
                    // it is cut off below so that the next line starts clean.
                    if n == 0 || !line.ends_with('\n') {
                        break;
                    }
                    whole += n as u64;
                    if let Ok(j) = serde_json::from_str::<JournalLine>(line.trim_end()) {
                        done.insert(j.path.clone(), j);
                    }
                }
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .truncate(false)
            .open(&p)
            .with_context(|| format!("opening {}", p.display()))?;
        file.set_len(whole)?;
        Ok(Journal { file, done })
    }

    /// The recorded file, if it is still on disk with its recorded size and `tag`.
    pub fn kept(&self, dir: &Path, path: &str, tag: &str) -> Option<&JournalLine> {
        let j = self.done.get(path)?;
        if j.tag != tag {
            return None;
        }
        let len = std::fs::metadata(dir.join(path)).ok()?.len();
        (len == j.size).then_some(j)
    }

    pub fn record(&mut self, line: JournalLine) -> Result<()> {
        let mut s = serde_json::to_string(&line)?;
        s.push('\n');
        // One write call per line, so an interruption leaves at most one partial line (skipped
        // when resuming).
        self.file.write_all(s.as_bytes())?;
        self.done.insert(line.path.clone(), line);
        Ok(())
    }

    pub fn entries(&self) -> Vec<FileEntry> {
        let mut v: Vec<FileEntry> = self
            .done
            .values()
            .map(|j| FileEntry {
                path: j.path.clone(),
                size: j.size,
                sha256: j.sha256.clone(),
            })
            .collect();
        v.sort_by(|a, b| a.path.cmp(&b.path));
        v
    }
}

/// A file being written into the export: bytes are hashed as they are written, and the file
/// appears under its name only when complete.
pub struct HashingFile {
    file: Option<std::io::BufWriter<File>>,
    hash: Sha256,
    size: u64,
    tmp: PathBuf,
    dest: PathBuf,
}

impl HashingFile {
    pub fn create(dest: PathBuf) -> Result<HashingFile> {
        if let Some(d) = dest.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let tmp = partial_path(&dest);
        let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        Ok(HashingFile {
            file: Some(std::io::BufWriter::with_capacity(1 << 20, file)),
            hash: Sha256::new(&SHA256),
            size: 0,
            tmp,
            dest,
        })
    }

    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.hash.update(bytes);
        self.size += bytes.len() as u64;
        match &mut self.file {
            Some(f) => f.write_all(bytes),
            None => Err(std::io::Error::other("file already finished")),
        }
    }

    /// Flushes and renames into place; returns (size, sha256 hex).
    pub fn finish(mut self) -> Result<(u64, String)> {
        let w = self
            .file
            .take()
            .ok_or_else(|| anyhow!("file already finished"))?;
        let f = w.into_inner().map_err(|e| anyhow!("{}", e.error()))?;
        // Data files are not fsynced one by one (that would bound small-file throughput by the
        // disk's sync rate); the manifest is, and `ciel export verify` checks every byte.
        drop(f);
        std::fs::rename(&self.tmp, &self.dest)?;
        let hash = std::mem::replace(&mut self.hash, Sha256::new(&SHA256));
        Ok((self.size, hex::encode(hash.finish())))
    }
}

impl Drop for HashingFile {
    fn drop(&mut self) {
        // An abandoned file leaves nothing (after `finish`, `tmp` no longer exists).
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// What `verify` found wrong: the first bad file, named.
#[derive(Debug, PartialEq)]
pub enum Problem {
    Missing(String),
    Size {
        path: String,
        expected: u64,
        found: u64,
    },
    Digest(String),
    Extra(String),
    ManifestDigest,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Missing(p) => write!(f, "{p}: listed in the manifest but missing"),
            Problem::Size {
                path,
                expected,
                found,
            } => write!(
                f,
                "{path}: size {found} bytes, the manifest says {expected}"
            ),
            Problem::Digest(p) => write!(f, "{p}: SHA-256 differs from the manifest"),
            Problem::Extra(p) => write!(f, "{p}: present but not listed in the manifest"),
            Problem::ManifestDigest => write!(
                f,
                "{MANIFEST}: its SHA-256 differs from the one expected (the manifest was changed)"
            ),
        }
    }
}

#[derive(Debug, Default, PartialEq)]
pub struct Verified {
    pub files: u64,
    pub bytes: u64,
}

/// Checks an export: the manifest (against `manifest_sha256` when given), every listed file's
/// size and SHA-256, and that no other file is present. Stops at the first problem. Files are
/// read in 1 MiB pieces. `progress` is called with bytes read.
pub fn verify(
    dir: &Path,
    manifest_sha256: Option<&str>,
    mut progress: impl FnMut(u64),
) -> Result<std::result::Result<Verified, Problem>> {
    let (m, bytes) = Manifest::read(dir)?;
    if let Some(want) = manifest_sha256 {
        if !sha256_hex(&bytes).eq_ignore_ascii_case(want.trim()) {
            return Ok(Err(Problem::ManifestDigest));
        }
    }
    let mut listed = std::collections::HashSet::new();
    for f in &m.files {
        safe_join(dir, &f.path)?;
        listed.insert(f.path.as_str());
    }
    // Files are checked by a few threads (reading and hashing one file at a time each, in
    // manifest order, file i by thread i mod n): one thread leaves the disk idle while it hashes.
    // Each thread stops at its first problem; the first problem in manifest order is then the
    // smallest index among them, whatever the timing.
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4)
        .min(m.files.len().max(1));
    let done = std::sync::atomic::AtomicU64::new(0);
    let finished = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Result<Option<(usize, Problem)>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (files, done, finished) = (&m.files, &done, &finished);
                scope.spawn(move || {
                    let r = check_files(dir, files, t, threads, done);
                    finished.fetch_add(1, std::sync::atomic::Ordering::Release);
                    r
                })
            })
            .collect();
        let mut reported = 0u64;
        while finished.load(std::sync::atomic::Ordering::Acquire) < threads {
            std::thread::sleep(std::time::Duration::from_millis(100));
            let now = done.load(std::sync::atomic::Ordering::Relaxed);
            progress(now - reported);
            reported = now;
        }
        progress(done.load(std::sync::atomic::Ordering::Relaxed) - reported);
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("a verification thread panicked")))
            })
            .collect()
    });
    let mut first: Option<(usize, Problem)> = None;
    for r in results {
        if let Some((i, p)) = r? {
            if first.as_ref().map(|(j, _)| i < *j).unwrap_or(true) {
                first = Some((i, p));
            }
        }
    }
    if let Some((_, p)) = first {
        return Ok(Err(p));
    }
    let out = Verified {
        files: m.files.len() as u64,
        bytes: m.files.iter().map(|f| f.size).sum(),
    };
    // Anything else in the directory is an addition nobody vouched for.
    let mut stack = vec![dir.to_path_buf()];
    let mut extra: Option<String> = None;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let p = e.path();
            if e.file_type()?.is_dir() {
                stack.push(p);
                continue;
            }
            let rel = relative(dir, &p);
            if rel == MANIFEST || listed.contains(rel.as_str()) {
                continue;
            }
            // Report the smallest name, so that the answer does not depend on directory order.
            if extra.as_ref().map(|x| rel < *x).unwrap_or(true) {
                extra = Some(rel);
            }
        }
    }
    if let Some(x) = extra {
        return Ok(Err(Problem::Extra(x)));
    }
    Ok(Ok(out))
}

/// Checks files `t`, `t + n`, `t + 2n`... of the manifest; returns the first bad one.
fn check_files(
    dir: &Path,
    files: &[FileEntry],
    t: usize,
    n: usize,
    done: &std::sync::atomic::AtomicU64,
) -> Result<Option<(usize, Problem)>> {
    let mut buf = vec![0u8; 1 << 20];
    for (i, f) in files.iter().enumerate().skip(t).step_by(n) {
        let p = safe_join(dir, &f.path)?;
        let mut file = match File::open(&p) {
            Ok(x) => x,
            Err(_) => return Ok(Some((i, Problem::Missing(f.path.clone())))),
        };
        let len = file.metadata()?.len();
        if len != f.size {
            return Ok(Some((
                i,
                Problem::Size {
                    path: f.path.clone(),
                    expected: f.size,
                    found: len,
                },
            )));
        }
        let mut h = Sha256::new(&SHA256);
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            done.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        }
        if hex::encode(h.finish()) != f.sha256.to_ascii_lowercase() {
            return Ok(Some((i, Problem::Digest(f.path.clone()))));
        }
    }
    Ok(None)
}

/// `dir/rel`, refusing absolute paths and `..` (a manifest must not point outside its export).
pub fn safe_join(dir: &Path, rel: &str) -> Result<PathBuf> {
    if rel.is_empty()
        || rel.starts_with('/')
        || rel
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
    {
        bail!("the manifest names an unsafe path: {rel:?}");
    }
    Ok(dir.join(rel))
}

pub fn relative(dir: &Path, p: &Path) -> String {
    p.strip_prefix(dir)
        .unwrap_or(p)
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dir: &Path) -> Manifest {
        let mut j = Journal::open(dir, false).unwrap();
        for (p, data) in [("a.json", &b"{}"[..]), ("blobs/x/c/data/f", b"hello")] {
            let mut f = HashingFile::create(dir.join(p)).unwrap();
            f.write(data).unwrap();
            let (size, sha256) = f.finish().unwrap();
            j.record(JournalLine {
                path: p.into(),
                size,
                sha256,
                tag: String::new(),
            })
            .unwrap();
        }
        std::fs::remove_file(dir.join(JOURNAL)).unwrap();
        Manifest {
            format: FORMAT.into(),
            tenant: TenantRef {
                id: "t".into(),
                display_name: "T".into(),
            },
            source: Source {
                software: "ciel test".into(),
                domain: "d".into(),
                audit_public_key: String::new(),
            },
            created_at: "now".into(),
            since: None,
            summary: BTreeMap::new(),
            keyvault: None,
            files: j.entries(),
        }
    }

    #[test]
    fn verify_accepts_an_intact_export_and_names_each_kind_of_damage() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        let m = sample(d);
        let digest = m.write(d).unwrap();
        assert_eq!(
            verify(d, Some(&digest), |_| {}).unwrap(),
            Ok(Verified { files: 2, bytes: 7 })
        );
        // Same size, different bytes.
        std::fs::write(d.join("blobs/x/c/data/f"), b"hellO").unwrap();
        assert_eq!(
            verify(d, None, |_| {}).unwrap(),
            Err(Problem::Digest("blobs/x/c/data/f".into()))
        );
        std::fs::write(d.join("blobs/x/c/data/f"), b"hello!").unwrap();
        assert!(matches!(
            verify(d, None, |_| {}).unwrap(),
            Err(Problem::Size { .. })
        ));
        std::fs::write(d.join("blobs/x/c/data/f"), b"hello").unwrap();
        std::fs::write(d.join("blobs/x/c/data/g"), b"new").unwrap();
        assert_eq!(
            verify(d, None, |_| {}).unwrap(),
            Err(Problem::Extra("blobs/x/c/data/g".into()))
        );
        std::fs::remove_file(d.join("blobs/x/c/data/g")).unwrap();
        std::fs::remove_file(d.join("a.json")).unwrap();
        assert_eq!(
            verify(d, None, |_| {}).unwrap(),
            Err(Problem::Missing("a.json".into()))
        );
        std::fs::write(d.join("a.json"), b"{}").unwrap();
        // A manifest edited to match a changed file: caught by the digest given out of band.
        let mut m2 = m.clone();
        m2.files[0].size = 3;
        m2.write(d).unwrap();
        assert_eq!(
            verify(d, Some(&digest), |_| {}).unwrap(),
            Err(Problem::ManifestDigest)
        );
    }

    #[test]
    fn the_journal_keeps_completed_files_and_skips_a_torn_line() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        let mut j = Journal::open(d, false).unwrap();
        let mut f = HashingFile::create(d.join("x")).unwrap();
        f.write(b"abc").unwrap();
        let (size, sha256) = f.finish().unwrap();
        j.record(JournalLine {
            path: "x".into(),
            size,
            sha256: sha256.clone(),
            tag: "e1".into(),
        })
        .unwrap();
        drop(j);
        let mut raw = OpenOptions::new()
            .append(true)
            .open(d.join(JOURNAL))
            .unwrap();
        raw.write_all(b"{\"path\":\"y\",\"si").unwrap();
        let j = Journal::open(d, true).unwrap();
        assert_eq!(j.done.len(), 1);
        assert!(j.kept(d, "x", "e1").is_some());
        // Another version of the blob: rewrite.
        assert!(j.kept(d, "x", "e2").is_none());
        assert_eq!(sha256, sha256_hex(b"abc"));
        // An abandoned file leaves nothing behind.
        let mut g = HashingFile::create(d.join("z")).unwrap();
        g.write(b"1").unwrap();
        drop(g);
        assert!(!d.join("z").exists() && !d.join("z.partial").exists());
    }

    #[test]
    fn verify_names_the_first_bad_file_in_manifest_order_whatever_the_threads() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        let mut j = Journal::open(d, false).unwrap();
        for i in 0..20 {
            let p = format!("f{i:02}");
            let mut f = HashingFile::create(d.join(&p)).unwrap();
            f.write(format!("content {i}").as_bytes()).unwrap();
            let (size, sha256) = f.finish().unwrap();
            j.record(JournalLine {
                path: p,
                size,
                sha256,
                tag: String::new(),
            })
            .unwrap();
        }
        std::fs::remove_file(d.join(JOURNAL)).unwrap();
        let other = tempfile::tempdir().unwrap();
        let mut m = sample(other.path());
        m.files = j.entries();
        m.write(d).unwrap();
        std::fs::write(d.join("f13"), b"content XX").unwrap();
        std::fs::write(d.join("f06"), b"content X").unwrap();
        for _ in 0..5 {
            assert_eq!(
                verify(d, None, |_| {}).unwrap(),
                Err(Problem::Digest("f06".into()))
            );
        }
    }

    #[test]
    fn unsafe_paths_are_refused() {
        let d = Path::new("/x");
        for p in ["", "/etc/passwd", "a/../../b", "a//b", "./a"] {
            assert!(safe_join(d, p).is_err(), "{p}");
        }
        assert!(safe_join(d, "blobs/a/b").is_ok());
    }
}
