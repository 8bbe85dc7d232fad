//! Removal of what a crash leaves in the byte store.
//!
//! An object is made durable before the record that refers to it commits, and a replaced object
//! is removed only after the commit that replaced it; an interrupted write leaves its `.partial`
//! file. A crash between those steps therefore leaves files that no record refers to: never
//! visible (only records are), but holding disk space. [`sweep`] removes them from one account
//! directory, given the set of objects the metadata store refers to. It must run when no write
//! is in flight (at startup, before the server accepts requests): an object being written is
//! referenced by nothing until its record commits.
//!
//! Conservative by construction: only names that Ciel writes are removed (`{id}` and
//! `{id}.partial` under the `{first two hex digits}` directory of their id); anything else is
//! counted, logged and left in place.

use super::ObjectId;
use std::collections::HashSet;
use std::fs::File;
use std::path::Path;

/// What one sweep found and did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sweep {
    /// Object files no record refers to, removed.
    pub objects: u64,
    /// `.partial` files of interrupted writes, removed.
    pub partials: u64,
    /// Bytes the removed files held.
    pub bytes: u64,
    /// Referenced objects (kept).
    pub kept: u64,
    /// Entries whose name Ciel never writes, left in place.
    pub unknown: u64,
    /// Removals that failed (logged; the files stay and the next start tries again).
    pub failed: u64,
}

impl Sweep {
    pub fn add(&mut self, o: &Sweep) {
        self.objects += o.objects;
        self.partials += o.partials;
        self.bytes += o.bytes;
        self.kept += o.kept;
        self.unknown += o.unknown;
        self.failed += o.failed;
    }

    pub fn removed(&self) -> u64 {
        self.objects + self.partials
    }
}

/// `s` as lowercase hex of exactly `N` bytes (the only spelling `object_id_hex` produces).
pub(crate) fn parse_lower_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let b = s.as_bytes();
    if b.len() != 2 * N {
        return None;
    }
    let nib = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (nib(b[2 * i])? << 4) | nib(b[2 * i + 1])?;
    }
    Some(out)
}

enum Entry {
    Object(ObjectId),
    Partial,
    Unknown,
}

/// Classifies a file name found in the prefix directory `prefix`.
fn classify(prefix: &str, name: &str) -> Entry {
    let (stem, partial) = match name.strip_suffix(".partial") {
        Some(s) => (s, true),
        None => (name, false),
    };
    match parse_lower_hex::<16>(stem) {
        // A file in another id's directory is not where Ciel would look for it: not ours.
        Some(_) if !stem.starts_with(prefix) => Entry::Unknown,
        Some(_) if partial => Entry::Partial,
        Some(id) => Entry::Object(id),
        None => Entry::Unknown,
    }
}

fn unknown(path: &Path, s: &mut Sweep) {
    s.unknown += 1;
    tracing::warn!(path = %path.display(), "blob store: not a Ciel object, left in place");
}

/// Makes the removal of entries of `dir` durable.
pub(crate) fn sync_dir(dir: &Path) {
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(error = %e, dir = %dir.display(), "blob store: could not fsync a directory");
    }
}

/// Removes, from the account directory `dir`, every `.partial` file and every object whose id is
/// not in `referenced`; fsyncs each directory it removed something from. Errors only when `dir`
/// itself cannot be listed.
pub fn sweep(dir: &Path, referenced: &HashSet<Vec<u8>>) -> std::io::Result<Sweep> {
    let mut s = Sweep::default();
    for entry in std::fs::read_dir(dir)? {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, dir = %dir.display(), "blob store: cannot list a directory entry");
                s.failed += 1;
                continue;
            }
        };
        let path = entry.path();
        let prefix = entry.file_name();
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        let Some(prefix) = prefix
            .to_str()
            .filter(|p| parse_lower_hex::<1>(p).is_some())
        else {
            unknown(&path, &mut s);
            continue;
        };
        if !is_dir {
            unknown(&path, &mut s);
            continue;
        }
        let files = match std::fs::read_dir(&path) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, dir = %path.display(), "blob store: cannot list a directory; skipped");
                s.failed += 1;
                continue;
            }
        };
        let mut removed_here = false;
        for f in files {
            let f = match f {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(error = %e, dir = %path.display(), "blob store: cannot list a directory entry");
                    s.failed += 1;
                    continue;
                }
            };
            let fpath = f.path();
            // Objects are plain files; a directory or a link under an object's name is not ours.
            let meta = match std::fs::symlink_metadata(&fpath) {
                Ok(m) if m.file_type().is_file() => m,
                _ => {
                    unknown(&fpath, &mut s);
                    continue;
                }
            };
            let name = f.file_name();
            let Some(name) = name.to_str() else {
                unknown(&fpath, &mut s);
                continue;
            };
            let partial = match classify(prefix, name) {
                Entry::Unknown => {
                    unknown(&fpath, &mut s);
                    continue;
                }
                Entry::Object(id) if referenced.contains(&id[..]) => {
                    s.kept += 1;
                    continue;
                }
                Entry::Object(_) => false,
                Entry::Partial => true,
            };
            match std::fs::remove_file(&fpath) {
                Ok(()) => {
                    removed_here = true;
                    s.bytes += meta.len();
                    if partial {
                        s.partials += 1;
                    } else {
                        s.objects += 1;
                    }
                    tracing::debug!(path = %fpath.display(), partial, "blob store: removed an unreferenced file");
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    s.failed += 1;
                    tracing::warn!(error = %e, path = %fpath.display(), "blob store: could not remove an unreferenced file");
                }
            }
        }
        if removed_here {
            sync_dir(&path);
        }
    }
    Ok(s)
}

/// Removes `dir` (an account directory) if nothing but empty prefix directories remain in it;
/// fsyncs what changed. Returns whether it is gone.
pub fn remove_if_empty(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    let mut removed_any = false;
    for e in entries.flatten() {
        let prefix_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false)
            && e.file_name()
                .to_str()
                .and_then(parse_lower_hex::<1>)
                .is_some();
        if prefix_dir && std::fs::remove_dir(e.path()).is_ok() {
            removed_any = true;
        }
    }
    if removed_any {
        sync_dir(dir);
    }
    let gone = std::fs::remove_dir(dir).is_ok();
    if gone {
        if let Some(parent) = dir.parent() {
            sync_dir(parent);
        }
    }
    gone
}
