//! Snapshot Blob (`PUT ?comp=snapshot`). A snapshot is a read-only row beside its blob that
//! shares the blob's encrypted objects: taking one copies no byte. Reading (`GET/HEAD
//! ?snapshot=`), deleting (`DELETE ?snapshot=`, `x-ms-delete-snapshots`) and listing
//! (`include=snapshots`) live with the blob operations; the store removes an object only when
//! neither the blob nor any snapshot refers to it.

use super::blob_ops::{check_conditions, h, load, WRITE};
use super::container::{self, metadata_from};
use super::error::{BlobError, BlobResult};
use super::{empty, http_date, now_micros, Ctx};
use axum::response::Response;
use ciel_store::StoreError;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::json;

/// Azure's snapshot form: UTC, seven fractional digits (`2026-11-28T23:53:03.1234560Z`).
pub fn format(micros: i64) -> String {
    let t = chrono::DateTime::from_timestamp_micros(micros).unwrap_or_default();
    format!(
        "{}.{:07}Z",
        t.format("%Y-%m-%dT%H:%M:%S"),
        t.timestamp_subsec_nanos() / 100
    )
}

/// A `?snapshot=` value in the stored form; 400 when it is not a time.
pub fn canonical(s: &str) -> BlobResult<String> {
    chrono::DateTime::parse_from_rfc3339(s.trim())
        .map(|d| {
            let u = d.with_timezone(&chrono::Utc);
            format!(
                "{}.{:07}Z",
                u.format("%Y-%m-%dT%H:%M:%S"),
                u.timestamp_subsec_nanos() / 100
            )
        })
        .map_err(|_| {
            BlobError::bad(
                "InvalidQueryParameterValue",
                "Value for one of the query parameters specified in the request URI is invalid: snapshot.",
            )
        })
}

pub async fn create_snapshot(
    ctx: &Ctx<'_>,
    container: &str,
    name: &str,
    headers: &HeaderMap,
) -> BlobResult<Response> {
    ctx.authorize(&ctx.container_scope(container), WRITE, true)
        .await?;
    let new_meta = metadata_from(headers)?;
    container::load(ctx, container).await?;
    let b = load(ctx, container, name)
        .await?
        .ok_or_else(BlobError::blob_not_found)?;
    check_conditions(headers, Some(&b), false)?;
    // Taking a snapshot does not need the lease, but a lease id given must be the blob's.
    if h(headers, "x-ms-lease-id").is_some() {
        super::lease::check_blob_write(headers, Some(&b))?;
    }
    let mut snap = b.clone();
    snap.lease = None;
    if new_meta.as_object().map(|m| !m.is_empty()).unwrap_or(false) {
        snap.metadata = new_meta;
    }
    // Two snapshots in the same microsecond would collide: the later one moves on by one.
    let mut at = now_micros();
    for _ in 0..8 {
        snap.snapshot = format(at);
        let draft = ctx.draft(
            WRITE,
            &format!("{}/blobs/{}", ctx.container_scope(container), name),
            "success",
            json!({"snapshot": snap.snapshot}),
        );
        let s2 = snap.clone();
        match ciel_store::run(&ctx.svc.store, move |s| s.create_snapshot(&s2, &draft)).await {
            Ok(()) => {
                let mut r = empty(StatusCode::CREATED);
                let hm = r.headers_mut();
                for (k, v) in [
                    ("x-ms-snapshot", snap.snapshot.clone()),
                    ("etag", b.etag.clone()),
                    ("last-modified", http_date(b.last_modified)),
                    ("x-ms-request-server-encrypted", "true".into()),
                ] {
                    if let Ok(v) = HeaderValue::from_str(&v) {
                        hm.insert(k, v);
                    }
                }
                return Ok(r);
            }
            Err(StoreError::Conflict(_)) => at += 1,
            Err(StoreError::NotFound) => return Err(BlobError::blob_not_found()),
            Err(e) => return Err(e.into()),
        }
    }
    Err(BlobError::internal())
}

#[cfg(test)]
mod tests {
    #[test]
    fn snapshot_times() {
        let s = super::format(1_700_000_000_123_456);
        assert_eq!(s, "2023-11-14T22:13:20.1234560Z");
        assert_eq!(super::canonical(&s).unwrap(), s);
        assert_eq!(super::canonical("2023-11-14T22:13:20.123456Z").unwrap(), s);
        assert!(super::canonical("yesterday").is_err());
    }
}
