//! Page blobs: Put Page (`?comp=page`, update and clear), Get Page Ranges (`?comp=pagelist`,
//! with `prevsnapshot` for a diff), resize and sequence numbers (Set Blob Properties with
//! `x-ms-blob-content-length` / `x-ms-sequence-number-action`), and the
//! `x-ms-if-sequence-number-*` conditions.
//!
//! A page blob's content is a sorted list of non-overlapping extents `{offset, len, object, at}`
//! in the record's `blocks` JSON: bytes `offset..offset+len` of the blob are bytes `at..at+len`
//! of an encrypted object; what no extent covers reads as zeros. Each Put Page writes a new
//! object and splits or replaces the extents it overlaps; a cleared range drops them; snapshots
//! keep the extents they had, sharing the objects. Objects no extent uses any more are removed
//! by the store, which checks that no snapshot or copy still refers to them.
//!
//! Keeping extents in the record's JSON suits page blobs with moderate numbers of writes (the
//! whole list is rewritten on each Put Page). VM disks, with millions of small random writes,
//! will need a dedicated engine (an extent tree in its own table and compaction of objects).

use super::blob_ops::{
    blob_type, check_conditions, check_digests, drain, h, load, load_at, parse_oid, remove_objects,
    request_crc64, request_md5, stream_to_object, Piece, READ, WRITE,
};
use super::container;
use super::error::{BlobError, BlobResult};
use super::{empty, http_date, new_etag, now_micros, Ctx};
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ciel_store::{BlobRecord, StoreError};
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use serde_json::json;

pub const PAGE: u64 = 512;
/// Azure's limits: 4 MiB per Put Page, 8 TiB per page blob.
const MAX_PAGE_WRITE: u64 = 4 * 1024 * 1024;
const MAX_SIZE: u64 = 8 * 1024 * 1024 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub len: u64,
    /// The object, as hex.
    pub object: String,
    /// Where in the object the extent's bytes start.
    pub at: u64,
}

impl Extent {
    fn end(&self) -> u64 {
        self.offset + self.len
    }
}

pub fn extents(b: &BlobRecord) -> BlobResult<Vec<Extent>> {
    let mut out = Vec::new();
    for x in b.blocks.as_array().map(|a| a.as_slice()).unwrap_or(&[]) {
        let (Some(offset), Some(len), Some(object), Some(at)) = (
            x["offset"].as_u64(),
            x["len"].as_u64(),
            x["object"].as_str(),
            x["at"].as_u64(),
        ) else {
            tracing::error!(blob = %b.name, "a page extent is malformed");
            return Err(BlobError::internal());
        };
        out.push(Extent {
            offset,
            len,
            object: object.to_string(),
            at,
        });
    }
    Ok(out)
}

pub fn to_json(exts: &[Extent]) -> serde_json::Value {
    serde_json::Value::Array(
        exts.iter()
            .map(|e| json!({"offset": e.offset, "len": e.len, "object": e.object, "at": e.at}))
            .collect(),
    )
}

/// The extents with `start..end` removed: those inside go, those across an edge are cut.
pub fn clear(exts: &[Extent], start: u64, end: u64) -> Vec<Extent> {
    let mut out = Vec::with_capacity(exts.len() + 1);
    for e in exts {
        if e.end() <= start || e.offset >= end {
            out.push(e.clone());
            continue;
        }
        if e.offset < start {
            out.push(Extent {
                len: start - e.offset,
                ..e.clone()
            });
        }
        if e.end() > end {
            out.push(Extent {
                offset: end,
                len: e.end() - end,
                object: e.object.clone(),
                at: e.at + (end - e.offset),
            });
        }
    }
    out
}

/// The extents after writing `new` over them.
pub fn write(exts: &[Extent], new: Extent) -> Vec<Extent> {
    let mut out = clear(exts, new.offset, new.end());
    let i = out.partition_point(|e| e.offset < new.offset);
    out.insert(i, new);
    out
}

/// Written ranges within `start..end`, adjacent extents merged, as inclusive `(first, last)`.
pub fn ranges(exts: &[Extent], start: u64, end: u64) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for e in exts {
        let (s, t) = (e.offset.max(start), e.end().min(end));
        if s >= t {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.1 + 1 == s => last.1 = t - 1,
            _ => out.push((s, t - 1)),
        }
    }
    out
}

/// Inclusive byte ranges, as Get Page Ranges answers them.
pub type Ranges = Vec<(u64, u64)>;
/// A run of bytes `from..to` and where they come from (object and offset), `None` for zeros.
type Run = (u64, u64, Option<(String, u64)>);

/// Where each byte of `start..end` comes from, as runs.
fn runs(exts: &[Extent], start: u64, end: u64) -> Vec<Run> {
    let mut out = Vec::new();
    let mut pos = start;
    for e in exts {
        let (s, t) = (e.offset.max(start), e.end().min(end));
        if s >= t {
            continue;
        }
        if s > pos {
            out.push((pos, s, None));
        }
        // Identify the source by object and the object offset of the blob's byte 0 in this
        // extent: two extents with the same identity hold the same bytes.
        out.push((s, t, Some((e.object.clone(), e.at + (s - e.offset)))));
        pos = t;
    }
    if pos < end {
        out.push((pos, end, None));
    }
    out
}

/// Get Page Ranges with `prevsnapshot`: ranges written since `prev` (PageRange) and ranges that
/// held data in `prev` and are zeros now (ClearRange), inclusive, in `start..end`.
pub fn diff(cur: &[Extent], prev: &[Extent], start: u64, end: u64) -> (Ranges, Ranges) {
    let (a, b) = (runs(cur, start, end), runs(prev, start, end));
    let mut cuts: Vec<u64> = a.iter().chain(b.iter()).flat_map(|r| [r.0, r.1]).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let at = |rs: &[Run], p: u64| -> Option<(String, u64)> {
        rs.iter()
            .find(|r| r.0 <= p && p < r.1)
            .and_then(|r| r.2.as_ref().map(|(o, base)| (o.clone(), base + (p - r.0))))
    };
    let (mut changed, mut cleared): (Ranges, Ranges) = (vec![], vec![]);
    let push = |v: &mut Vec<(u64, u64)>, s: u64, t: u64| match v.last_mut() {
        Some(last) if last.1 + 1 == s => last.1 = t - 1,
        _ => v.push((s, t - 1)),
    };
    for w in cuts.windows(2) {
        let (s, t) = (w[0], w[1]);
        match (at(&a, s), at(&b, s)) {
            (Some(x), Some(y)) if x == y => {}
            (Some(_), _) => push(&mut changed, s, t),
            (None, Some(_)) => push(&mut cleared, s, t),
            (None, None) => {}
        }
    }
    (changed, cleared)
}

/// A page blob's bytes: its extents, and zeros between them up to its size.
pub(crate) fn pieces(b: &BlobRecord) -> BlobResult<Vec<Piece>> {
    let size = b.size as u64;
    let mut out = Vec::new();
    let mut pos = 0u64;
    for e in extents(b)? {
        if e.end() > size || e.offset < pos {
            tracing::error!(blob = %b.name, "page extents overlap or pass the blob's end");
            return Err(BlobError::internal());
        }
        if e.offset > pos {
            out.push(Piece::Zeros(e.offset - pos));
        }
        out.push(Piece::Object {
            oid: parse_oid(&e.object)?,
            at: e.at,
            len: e.len,
            whole: false,
        });
        pos = e.end();
    }
    if pos < size {
        out.push(Piece::Zeros(size - pos));
    }
    Ok(out)
}

fn invalid_header(msg: &str) -> BlobError {
    BlobError::bad("InvalidHeaderValue", msg)
}

fn sequence(v: &str) -> BlobResult<i64> {
    v.trim()
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| invalid_header("x-ms-blob-sequence-number must be between 0 and 2^63 - 1."))
}

fn page_size(v: &str) -> BlobResult<u64> {
    v.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| n % PAGE == 0 && *n <= MAX_SIZE)
        .ok_or_else(|| {
            invalid_header("x-ms-blob-content-length must be a multiple of 512 up to 8 TiB.")
        })
}

/// Put Blob of a page blob: its size (`x-ms-blob-content-length`) and sequence number.
pub fn create_params(headers: &HeaderMap) -> BlobResult<(i64, i64)> {
    let size = page_size(h(headers, "x-ms-blob-content-length").ok_or_else(|| {
        BlobError::bad(
            "MissingRequiredHeader",
            "An HTTP header that's mandatory for this request is not specified: x-ms-blob-content-length.",
        )
    })?)?;
    let seq = h(headers, "x-ms-blob-sequence-number")
        .map(sequence)
        .transpose()?
        .unwrap_or(0);
    Ok((size as i64, seq))
}

/// `x-ms-if-sequence-number-le|lt|eq`.
pub fn check_sequence(headers: &HeaderMap, current: i64) -> BlobResult<()> {
    let fail = || {
        BlobError::new(
            StatusCode::PRECONDITION_FAILED,
            "SequenceNumberConditionNotMet",
            "The sequence number condition specified was not met.",
        )
    };
    for (n, ok) in [
        (
            "x-ms-if-sequence-number-le",
            (|c: i64, v: i64| c <= v) as fn(i64, i64) -> bool,
        ),
        ("x-ms-if-sequence-number-lt", |c, v| c < v),
        ("x-ms-if-sequence-number-eq", |c, v| c == v),
    ] {
        if let Some(v) = h(headers, n) {
            let v: i64 = v
                .trim()
                .parse()
                .map_err(|_| invalid_header("Sequence number conditions are integers."))?;
            if !ok(current, v) {
                return Err(fail());
            }
        }
    }
    Ok(())
}

fn invalid_range() -> BlobError {
    BlobError::new(
        StatusCode::RANGE_NOT_SATISFIABLE,
        "InvalidPageRange",
        "The page range specified is invalid.",
    )
}

/// `x-ms-range` / `Range: bytes=s-e` of a page operation: 512-aligned, within the blob.
fn page_range(headers: &HeaderMap, size: u64) -> BlobResult<(u64, u64)> {
    let v = h(headers, "x-ms-range")
        .or_else(|| h(headers, "range"))
        .ok_or_else(|| {
            BlobError::bad(
                "MissingRequiredHeader",
                "An HTTP header that's mandatory for this request is not specified: x-ms-range.",
            )
        })?;
    let (s, e) = v
        .trim()
        .strip_prefix("bytes=")
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, b)| Some((a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?)))
        .ok_or_else(invalid_range)?;
    if e < s || s % PAGE != 0 || (e + 1) % PAGE != 0 || e >= size {
        return Err(invalid_range());
    }
    Ok((s, e + 1))
}

fn not_page_blob() -> BlobError {
    BlobError::new(
        StatusCode::CONFLICT,
        "InvalidBlobType",
        "The blob type is invalid for this operation.",
    )
}

/// `PUT ?comp=page`.
pub async fn put_page(
    ctx: &Ctx<'_>,
    container: &str,
    name: &str,
    req: Request<Body>,
) -> BlobResult<Response> {
    ctx.authorize(&ctx.container_scope(container), WRITE, true)
        .await?;
    let headers = req.headers().clone();
    let clearing = match h(&headers, "x-ms-page-write")
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("update") => false,
        Some("clear") => true,
        Some(_) => return Err(invalid_header("x-ms-page-write must be update or clear.")),
        None => return Err(BlobError::bad(
            "MissingRequiredHeader",
            "An HTTP header that's mandatory for this request is not specified: x-ms-page-write.",
        )),
    };
    // Everything the request can be refused for is decided before its pages are stored.
    let early = async {
        container::load(ctx, container).await?;
        let b = load(ctx, container, name)
            .await?
            .ok_or_else(BlobError::blob_not_found)?;
        if blob_type(&b) != "PageBlob" {
            return Err(not_page_blob());
        }
        let (start, end) = page_range(&headers, b.size as u64)?;
        if end - start > MAX_PAGE_WRITE && !clearing {
            return Err(invalid_range());
        }
        let declared = h(&headers, "content-length").and_then(|l| l.parse::<u64>().ok());
        if clearing && declared.unwrap_or(0) != 0 {
            return Err(invalid_header("Clearing pages takes no content."));
        }
        if !clearing && declared != Some(end - start) {
            return Err(invalid_header(
                "Content-Length must equal the length of the page range.",
            ));
        }
        check_conditions(&headers, Some(&b), false)?;
        super::lease::check_blob_write(&headers, Some(&b))?;
        check_sequence(&headers, b.sequence_number)?;
        Ok((
            b,
            start,
            end,
            request_md5(&headers)?,
            request_crc64(&headers)?,
        ))
    }
    .await;
    let (b, start, end, want_md5, want_crc) = match early {
        Ok(v) => v,
        Err(e) => {
            drain(req.into_body(), MAX_PAGE_WRITE).await;
            return Err(e);
        }
    };
    let written = if clearing {
        None
    } else {
        let (oid, size, dg) = stream_to_object(ctx, req.into_body(), want_crc.is_some()).await?;
        let checked = if size != end - start {
            Err(invalid_header(
                "The body length differs from the page range.",
            ))
        } else {
            check_digests(want_md5.as_deref(), want_crc, &dg)
        };
        if let Err(e) = checked {
            remove_objects(ctx, vec![oid.to_vec()]);
            return Err(e);
        }
        Some((oid, dg))
    };
    // Compare-and-swap against concurrent writers; the new object stays valid across retries.
    let mut b = b;
    for attempt in 0..super::CAS_ATTEMPTS {
        if attempt > 0 {
            super::cas_pause(attempt).await;
            b = load(ctx, container, name)
                .await?
                .ok_or_else(BlobError::blob_not_found)?;
            if blob_type(&b) != "PageBlob" || end > b.size as u64 {
                break;
            }
            check_conditions(&headers, Some(&b), false)?;
            super::lease::check_blob_write(&headers, Some(&b))?;
            check_sequence(&headers, b.sequence_number)?;
        }
        let exts = extents(&b)?;
        let new = match &written {
            Some((oid, _)) => write(
                &exts,
                Extent {
                    offset: start,
                    len: end - start,
                    object: ciel_core::audit::hex_lower(oid),
                    at: 0,
                },
            ),
            None => clear(&exts, start, end),
        };
        let mut nb = b.clone();
        nb.blocks = to_json(&new);
        nb.last_modified = now_micros();
        nb.etag = new_etag(nb.last_modified);
        // The content changed: a stored whole-blob MD5 would now be wrong.
        nb.content_md5 = None;
        let draft = ctx.draft(
            WRITE,
            &format!("{}/blobs/{}", ctx.container_scope(container), name),
            "success",
            json!({"pageWrite": if clearing {"clear"} else {"update"}, "start": start, "end": end}),
        );
        let (etag, lease, n2) = (b.etag.clone(), b.lease.clone(), nb.clone());
        match ciel_store::run(&ctx.svc.store, move |s| {
            s.replace_blob(&n2, &etag, &lease, &draft)
        })
        .await
        {
            Ok(freed) => {
                remove_objects(ctx, freed);
                let mut r = empty(StatusCode::CREATED);
                let hm = r.headers_mut();
                let mut pairs = vec![
                    ("etag", nb.etag.clone()),
                    ("last-modified", http_date(nb.last_modified)),
                    ("x-ms-blob-sequence-number", nb.sequence_number.to_string()),
                    ("x-ms-request-server-encrypted", "true".into()),
                ];
                if let Some((_, dg)) = &written {
                    pairs.push(("content-md5", B64.encode(&dg.md5)));
                    if want_crc.is_some() {
                        pairs.push(("x-ms-content-crc64", B64.encode(dg.crc64.to_le_bytes())));
                    }
                }
                for (k, v) in pairs {
                    if let Ok(v) = HeaderValue::from_str(&v) {
                        hm.insert(k, v);
                    }
                }
                return Ok(r);
            }
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => {
                if let Some((oid, _)) = &written {
                    remove_objects(ctx, vec![oid.to_vec()]);
                }
                return Err(match e {
                    StoreError::NotFound => BlobError::blob_not_found(),
                    other => other.into(),
                });
            }
        }
    }
    if let Some((oid, _)) = &written {
        remove_objects(ctx, vec![oid.to_vec()]);
    }
    Err(BlobError::new(
        StatusCode::CONFLICT,
        "OperationConflict",
        "The blob changed while the pages were written; retry.",
    ))
}

/// `GET ?comp=pagelist` (of the blob or a snapshot), with `prevsnapshot` for a diff.
pub async fn get_page_ranges(
    ctx: &Ctx<'_>,
    container: &str,
    name: &str,
    headers: &HeaderMap,
    snapshot: Option<&str>,
    prev: Option<&str>,
) -> BlobResult<Response> {
    ctx.authorize(&ctx.container_scope(container), READ, true)
        .await?;
    if h(headers, "x-ms-previous-snapshot-url").is_some() {
        return Err(BlobError::not_supported(
            "Page range diffs against another blob (managed disks)",
        ));
    }
    container::load(ctx, container).await?;
    let b = load_at(ctx, container, name, snapshot)
        .await?
        .ok_or_else(BlobError::blob_not_found)?;
    if blob_type(&b) != "PageBlob" {
        return Err(not_page_blob());
    }
    check_conditions(headers, Some(&b), true)?;
    super::lease::check_blob_read(headers, &b)?;
    let size = b.size as u64;
    let (start, end) = match h(headers, "x-ms-range").or_else(|| h(headers, "range")) {
        Some(_) => page_range(headers, u64::MAX).map(|(s, e)| (s.min(size), e.min(size)))?,
        None => (0, size),
    };
    let exts = extents(&b)?;
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?><PageList>");
    let item = |tag: &str, r: &(u64, u64)| {
        format!("<{tag}><Start>{}</Start><End>{}</End></{tag}>", r.0, r.1)
    };
    match prev {
        None => {
            for r in ranges(&exts, start, end) {
                x.push_str(&item("PageRange", &r));
            }
        }
        Some(p) => {
            let old = load_at(ctx, container, name, Some(p))
                .await?
                .ok_or_else(|| {
                    BlobError::new(
                        StatusCode::NOT_FOUND,
                        "PreviousSnapshotNotFound",
                        "The previous snapshot is not found.",
                    )
                })?;
            let (changed, cleared) = diff(&exts, &extents(&old)?, start, end);
            let mut all: Vec<(bool, (u64, u64))> = changed
                .into_iter()
                .map(|r| (true, r))
                .chain(cleared.into_iter().map(|r| (false, r)))
                .collect();
            all.sort_by_key(|r| r.1 .0);
            for (page, r) in all {
                x.push_str(&item(if page { "PageRange" } else { "ClearRange" }, &r));
            }
        }
    }
    x.push_str("<NextMarker /></PageList>");
    let mut r = (StatusCode::OK, x).into_response();
    let hm = r.headers_mut();
    hm.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    for (k, v) in [
        ("etag", b.etag.clone()),
        ("last-modified", http_date(b.last_modified)),
        ("x-ms-blob-content-length", b.size.to_string()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&v) {
            hm.insert(k, v);
        }
    }
    Ok(r)
}

/// Set Blob Properties that resizes a page blob or changes its sequence number (Azure's
/// PageBlob Resize and Update Sequence Number): the content headers are left as they are.
pub async fn resize_or_sequence(
    ctx: &Ctx<'_>,
    container: &str,
    name: &str,
    headers: &HeaderMap,
) -> BlobResult<Response> {
    ctx.authorize(&ctx.container_scope(container), WRITE, true)
        .await?;
    let new_size = h(headers, "x-ms-blob-content-length")
        .map(page_size)
        .transpose()?;
    let action = h(headers, "x-ms-sequence-number-action").map(str::to_ascii_lowercase);
    let given = h(headers, "x-ms-blob-sequence-number")
        .map(sequence)
        .transpose()?;
    match (action.as_deref(), given) {
        (None, _) | (Some("increment"), None) | (Some("max" | "update"), Some(_)) => {}
        (Some("increment"), Some(_)) => {
            return Err(invalid_header(
                "x-ms-blob-sequence-number is not allowed with increment.",
            ))
        }
        (Some("max" | "update"), None) => {
            return Err(BlobError::bad(
                "MissingRequiredHeader",
                "x-ms-blob-sequence-number is required with max and update.",
            ))
        }
        _ => {
            return Err(invalid_header(
                "x-ms-sequence-number-action must be max, update or increment.",
            ))
        }
    }
    container::load(ctx, container).await?;
    for attempt in 0..super::CAS_ATTEMPTS {
        if attempt > 0 {
            super::cas_pause(attempt).await;
        }
        let b = load(ctx, container, name)
            .await?
            .ok_or_else(BlobError::blob_not_found)?;
        if blob_type(&b) != "PageBlob" {
            return Err(not_page_blob());
        }
        check_conditions(headers, Some(&b), false)?;
        super::lease::check_blob_write(headers, Some(&b))?;
        let mut nb = b.clone();
        if let Some(s) = new_size {
            // Shrinking drops the pages past the new end.
            nb.blocks = to_json(&clear(&extents(&b)?, s, u64::MAX));
            nb.size = s as i64;
            nb.content_md5 = None;
        }
        nb.sequence_number = match (action.as_deref(), given) {
            (Some("max"), Some(v)) => b.sequence_number.max(v),
            (Some("update"), Some(v)) => v,
            (Some("increment"), _) => b.sequence_number.checked_add(1).ok_or_else(|| {
                BlobError::new(
                    StatusCode::CONFLICT,
                    "SequenceNumberIncrementTooLarge",
                    "The sequence number cannot be incremented further.",
                )
            })?,
            _ => b.sequence_number,
        };
        nb.last_modified = now_micros();
        nb.etag = new_etag(nb.last_modified);
        let draft = ctx.draft(
            WRITE,
            &format!("{}/blobs/{}", ctx.container_scope(container), name),
            "success",
            json!({"size": nb.size, "sequenceNumber": nb.sequence_number}),
        );
        let (etag, lease, n2) = (b.etag.clone(), b.lease.clone(), nb.clone());
        match ciel_store::run(&ctx.svc.store, move |s| {
            s.replace_blob(&n2, &etag, &lease, &draft)
        })
        .await
        {
            Ok(freed) => {
                remove_objects(ctx, freed);
                let mut r = empty(StatusCode::OK);
                for (k, v) in [
                    ("etag", nb.etag.clone()),
                    ("last-modified", http_date(nb.last_modified)),
                    ("x-ms-blob-sequence-number", nb.sequence_number.to_string()),
                ] {
                    if let Ok(v) = HeaderValue::from_str(&v) {
                        r.headers_mut().insert(k, v);
                    }
                }
                return Ok(r);
            }
            Err(StoreError::Conflict(_)) => continue,
            Err(StoreError::NotFound) => return Err(BlobError::blob_not_found()),
            Err(e) => return Err(e.into()),
        }
    }
    Err(BlobError::new(
        StatusCode::CONFLICT,
        "OperationConflict",
        "The blob changed meanwhile; retry.",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(offset: u64, len: u64, object: &str, at: u64) -> Extent {
        Extent {
            offset,
            len,
            object: object.into(),
            at,
        }
    }

    #[test]
    fn writes_split_and_override() {
        let a = write(&[], ext(0, 4096, "a", 0));
        // A write in the middle splits the older extent in two.
        let b = write(&a, ext(1024, 512, "b", 0));
        assert_eq!(
            b,
            vec![
                ext(0, 1024, "a", 0),
                ext(1024, 512, "b", 0),
                ext(1536, 2560, "a", 1536)
            ]
        );
        // A write covering several extents replaces them.
        let c = write(&b, ext(512, 2048, "c", 0));
        assert_eq!(
            c,
            vec![
                ext(0, 512, "a", 0),
                ext(512, 2048, "c", 0),
                ext(2560, 1536, "a", 2560)
            ]
        );
        // Clearing cuts.
        let d = clear(&c, 0, 1024);
        assert_eq!(
            d,
            vec![ext(1024, 1536, "c", 512), ext(2560, 1536, "a", 2560)]
        );
        assert_eq!(ranges(&d, 0, 8192), vec![(1024, 4095)]);
        assert_eq!(ranges(&d, 2048, 3072), vec![(2048, 3071)]);
        assert!(clear(&d, 0, u64::MAX).is_empty());
        // Disjoint writes stay sorted.
        let e = write(&write(&[], ext(4096, 512, "x", 0)), ext(0, 512, "y", 0));
        assert_eq!(e[0].offset, 0);
        assert_eq!(ranges(&e, 0, 8192), vec![(0, 511), (4096, 4607)]);
    }

    #[test]
    fn diff_against_a_snapshot() {
        let prev = write(&[], ext(0, 2048, "a", 0));
        // Unchanged: nothing.
        assert_eq!(diff(&prev, &prev, 0, 4096), (vec![], vec![]));
        let cur = clear(&write(&prev, ext(512, 512, "b", 0)), 1536, 2048);
        let cur = write(&cur, ext(3072, 512, "c", 0));
        let (changed, cleared) = diff(&cur, &prev, 0, 4096);
        assert_eq!(changed, vec![(512, 1023), (3072, 3583)]);
        assert_eq!(cleared, vec![(1536, 2047)]);
    }

    #[test]
    fn pieces_fill_gaps_with_zeros() {
        let b = BlobRecord {
            blob_type: "PageBlob".into(),
            size: 2048,
            blocks: to_json(&[ext(512, 512, &"ab".repeat(16), 0)]),
            ..Default::default()
        };
        let p = pieces(&b).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[0], Piece::Zeros(512));
        assert_eq!(p[2], Piece::Zeros(1024));
    }
}
