//! Startup garbage collection of the byte store: after a crash, removes the object files no
//! record refers to, the `.partial` files of interrupted writes, and what remains of deleted
//! accounts (their directories; their blob records, if the crash came between the account's
//! deletion and its data's). `ciel up` runs it before it accepts any request, so that no write is
//! in flight (see `blobstore::gc` for why that matters).
//!
//! What is kept comes from one store method, `MetadataStore::referenced_objects`; nothing is
//! removed from an account whose references cannot be read, nor from a directory that cannot be
//! mapped to an account with certainty.

use super::account_dir;
use crate::account::TYPE;
use crate::blobstore::gc::{parse_lower_hex, remove_if_empty, sweep, sync_dir, Sweep};
use ciel_core::audit::AuditDraft;
use ciel_core::ResourceId;
use ciel_store::MetadataStore;
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// The audit action of the summary record written when something was removed.
pub const GC_ACTION: &str = "Ciel/blobstore/garbageCollect";

/// What one collection found and did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GcReport {
    /// Files removed and kept, over every account directory.
    pub files: Sweep,
    /// Directories of existing accounts swept.
    pub accounts: u64,
    /// Directories of deleted accounts removed.
    pub deleted_account_dirs: u64,
    /// Deleted accounts whose leftover blob records were removed.
    pub deleted_account_records: u64,
    /// Account directories left untouched because of an error (logged).
    pub skipped: u64,
}

impl GcReport {
    pub fn removed_anything(&self) -> bool {
        self.files.removed() + self.deleted_account_dirs + self.deleted_account_records > 0
    }
}

/// Directory name → account id key, for every storage account.
fn live_accounts(
    store: &dyn MetadataStore,
    root: &Path,
) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    let mut after: Option<String> = None;
    loop {
        // The empty scope lists every resource (every id starts with `/`).
        let page = store
            .list_resources("", Some(TYPE), after.as_deref(), 1000)
            .map_err(|e| e.to_string())?;
        let Some(last) = page.last() else {
            return Ok(out);
        };
        after = Some(last.id.clone());
        for r in &page {
            // An account that cannot be mapped to its directory would make that directory look
            // like a deleted account's: stop rather than remove it.
            let id = ResourceId::parse(&r.id)
                .ok_or_else(|| format!("storage account id {:?} does not parse", r.id))?;
            let dir = account_dir(root, &id);
            let name = dir
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| "account directory without a name".to_string())?
                .to_string();
            out.insert(name, id.key());
        }
    }
}

/// Runs the collection over `root` (the byte store) and returns what it did. Never fails: errors
/// are logged and leave files in place. Writes one audit record when something was removed.
pub fn collect_garbage(store: &dyn MetadataStore, root: &Path) -> GcReport {
    let started = std::time::Instant::now();
    let mut r = GcReport::default();
    let live = match live_accounts(store, root) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "blob store garbage collection skipped: the storage accounts cannot be listed");
            return r;
        }
    };

    // Blob records of accounts that no longer exist: a crash between the account's deletion and
    // its data's. Their key is destroyed; the records could never be read again.
    let live_keys: HashSet<&String> = live.values().collect();
    match store.blob_accounts() {
        Ok(accounts) => {
            for a in accounts.iter().filter(|a| !live_keys.contains(a)) {
                match store.delete_account_data(a) {
                    Ok(_) => {
                        r.deleted_account_records += 1;
                        tracing::info!(account = %a, "blob store: removed the blob records of a deleted account");
                    }
                    Err(e) => {
                        tracing::error!(error = %e, account = %a, "blob store: could not remove a deleted account's blob records")
                    }
                }
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "blob store: could not list the accounts with blob records")
        }
    }

    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            finish(store, root, &r, started);
            return r;
        }
        Err(e) => {
            tracing::error!(error = %e, root = %root.display(), "blob store garbage collection skipped: the store cannot be listed");
            finish(store, root, &r, started);
            return r;
        }
    };
    let mut removed_dirs = false;
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "blob store: cannot list the store");
                r.skipped += 1;
                continue;
            }
        };
        let dir = entry.path();
        let name = entry.file_name();
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        let Some(name) = name
            .to_str()
            .filter(|n| is_dir && parse_lower_hex::<16>(n).is_some())
        else {
            r.files.unknown += 1;
            tracing::warn!(path = %dir.display(), "blob store: not an account directory, left in place");
            continue;
        };
        match live.get(name) {
            Some(account) => {
                let referenced = match store.referenced_objects(account) {
                    Ok(s) => s,
                    Err(e) => {
                        r.skipped += 1;
                        tracing::error!(error = %e, %account, "blob store: the account's references cannot be read; its files are left in place");
                        continue;
                    }
                };
                match sweep(&dir, &referenced) {
                    Ok(s) => {
                        r.accounts += 1;
                        if s.removed() > 0 {
                            tracing::info!(%account, removed_objects = s.objects, removed_partials = s.partials,
                                reclaimed_bytes = s.bytes, "blob store: removed unreferenced files");
                        }
                        r.files.add(&s);
                    }
                    Err(e) => {
                        r.skipped += 1;
                        tracing::error!(error = %e, %account, "blob store: cannot sweep the account directory");
                    }
                }
            }
            None => {
                // A deleted account: its data key is destroyed, nothing here can be read.
                match sweep(&dir, &HashSet::new()) {
                    Ok(s) => {
                        r.files.add(&s);
                        if remove_if_empty(&dir) {
                            removed_dirs = true;
                            r.deleted_account_dirs += 1;
                            tracing::info!(dir = %dir.display(), removed_objects = s.objects, removed_partials = s.partials,
                                reclaimed_bytes = s.bytes, "blob store: removed the directory of a deleted account");
                        } else {
                            tracing::warn!(dir = %dir.display(), "blob store: a deleted account's directory holds other files; left in place");
                        }
                    }
                    Err(e) => {
                        r.skipped += 1;
                        tracing::error!(error = %e, dir = %dir.display(), "blob store: cannot sweep a deleted account's directory");
                    }
                }
            }
        }
    }
    if removed_dirs {
        sync_dir(root);
    }
    finish(store, root, &r, started);
    r
}

/// The summary: one log line always (operators see 0 after a clean stop), one audit record when
/// something was removed.
fn finish(store: &dyn MetadataStore, root: &Path, r: &GcReport, started: std::time::Instant) {
    let f = &r.files;
    tracing::info!(
        removed_objects = f.objects,
        removed_partials = f.partials,
        removed_account_dirs = r.deleted_account_dirs,
        removed_account_records = r.deleted_account_records,
        reclaimed_bytes = f.bytes,
        kept_objects = f.kept,
        unknown_files = f.unknown,
        failed = f.failed + r.skipped,
        millis = started.elapsed().as_millis() as u64,
        "blob store garbage collection done"
    );
    if !r.removed_anything() {
        return;
    }
    let draft = AuditDraft {
        actor: "system".into(),
        action: GC_ACTION.into(),
        target: root.display().to_string(),
        outcome: "success".into(),
        details: serde_json::json!({
            "removedObjects": f.objects,
            "removedPartials": f.partials,
            "removedAccountDirectories": r.deleted_account_dirs,
            "removedAccountRecords": r.deleted_account_records,
            "reclaimedBytes": f.bytes,
            "keptObjects": f.kept,
            "unknownFiles": f.unknown,
            "failed": f.failed + r.skipped,
        }),
        ..Default::default()
    };
    if let Err(e) = store.append_audit(std::slice::from_ref(&draft)) {
        tracing::error!(error = %e, "blob store: could not audit the garbage collection");
    }
}

#[cfg(test)]
mod tests;
