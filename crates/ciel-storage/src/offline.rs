//! Access to an account's blobs without the HTTP data plane, for the operator tools that work on a
//! data directory (`ciel export`, `ciel import`, `ciel tenant erase` in `ciel-export`): where an
//! account's objects live, its unsealed data key, a blob's plaintext as a stream, and new objects.
//! Everything here is what the data plane itself uses; nothing bypasses the format or its keys.

use crate::account::Secrets;
use crate::blob::blob_ops::{pieces, read_pieces};
use crate::blobstore::{self, ObjectError, ObjectWriter, DEFAULT_CHUNK};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ciel_core::seal::MasterKey;
use ciel_core::ResourceId;
use ciel_store::{BlobRecord, Resource};
use std::path::{Path, PathBuf};

/// The directory of an account's objects under the byte store's root.
pub fn account_dir(root: &Path, id: &ResourceId) -> PathBuf {
    crate::blob::account_dir(root, id)
}

/// The account's secrets (keys and data key), unsealed with the platform master key.
pub fn account_secrets(master: &MasterKey, r: &Resource) -> Result<Secrets, String> {
    let id = ResourceId::parse(&r.id).ok_or_else(|| format!("bad account id {}", r.id))?;
    let sealed = r
        .sealed
        .as_deref()
        .ok_or_else(|| format!("account {} has no sealed secrets", r.name))?;
    Secrets::open(master, &id, sealed).map_err(|e| format!("unsealing account {}: {e}", r.name))
}

/// The 256-bit data key of unsealed secrets.
pub fn data_key(s: &Secrets) -> Result<[u8; 32], String> {
    if let Some(c) = &s.cmk {
        // Only the customer's key can unwrap it, and that takes Key Vault's authorization.
        return Err(format!(
            "the account's data key is wrapped by a customer-managed key ({}): switch the account's key source back to Microsoft.Storage to export it offline",
            c.kid
        ));
    }
    B64.decode(&s.data_key)
        .ok()
        .and_then(|k| <[u8; 32]>::try_from(k.as_slice()).ok())
        .ok_or_else(|| "the account's data key is malformed".to_string())
}

/// Feeds a blob's (or snapshot's) plaintext to `sink`, one decrypted chunk at a time; page blobs'
/// unwritten pages as zeros. Memory: one chunk, whatever the blob's size.
pub fn read_blob(
    dir: &Path,
    key: &[u8; 32],
    b: &BlobRecord,
    sink: impl FnMut(&[u8]) -> Result<(), ObjectError>,
) -> Result<(), ObjectError> {
    let segs = pieces(b).map_err(|_| ObjectError::Corrupt("unreadable block list".into()))?;
    read_pieces(dir, key, segs, 0, b.size as u64, sink)
}

/// A new encrypted object in an account's directory, written as a stream; `finish` makes it
/// durable (before any record names it, as the data plane does).
pub fn new_object(dir: &Path, key: &[u8; 32]) -> Result<ObjectWriter, ObjectError> {
    ObjectWriter::create(dir, key, blobstore::new_object_id()?, DEFAULT_CHUNK)
}

/// A fresh ETag, as the data plane makes them.
pub fn new_etag(micros: i64) -> String {
    crate::blob::new_etag(micros)
}

/// Removes an account's object files (after its records and sealed keys are gone).
pub fn destroy_account_files(root: &Path, id: &ResourceId) {
    crate::blob::BlobService::destroy_account_files(root, id)
}
