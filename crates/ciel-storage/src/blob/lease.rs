//! Lease Blob (`PUT ?comp=lease`) and Lease Container (`PUT ?restype=container&comp=lease`):
//! acquire, renew, change, release, break; and the lease checks every write makes.
//!
//! A lease is stored as its id, duration, expiry and break time; its state (leased, expired,
//! breaking, broken) is computed from those timestamps when it is read, so no timer runs and a
//! restart loses nothing. Changes go through the store's compare-and-swap on the stored lease, so
//! two clients racing to acquire cannot both win.

use super::blob_ops::{check_conditions, h, WRITE};
use super::container;
use super::error::{BlobError, BlobResult};
use super::{empty, http_date, now_micros, Ctx};
use axum::response::Response;
use ciel_store::{BlobRecord, Lease, StoreError};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::json;

const CONTAINER_WRITE: &str = "Microsoft.Storage/storageAccounts/blobServices/containers/write";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Available,
    Leased,
    Expired,
    Breaking,
    Broken,
}

pub fn state(l: &Option<Lease>, now: i64) -> State {
    match l {
        None => State::Available,
        Some(l) => match (l.broken_at, l.expires) {
            (Some(b), _) if now < b => State::Breaking,
            (Some(_), _) => State::Broken,
            (None, Some(e)) if now >= e => State::Expired,
            _ => State::Leased,
        },
    }
}

/// The lease holds writes back (leased, or breaking until its break time).
fn active(l: &Option<Lease>, now: i64) -> Option<&Lease> {
    match state(l, now) {
        State::Leased | State::Breaking => l.as_ref(),
        _ => None,
    }
}

fn names(l: &Option<Lease>) -> (&'static str, &'static str, Option<&'static str>) {
    let now = now_micros();
    let st = state(l, now);
    let state = match st {
        State::Available => "available",
        State::Leased => "leased",
        State::Expired => "expired",
        State::Breaking => "breaking",
        State::Broken => "broken",
    };
    let status = if matches!(st, State::Leased | State::Breaking) {
        "locked"
    } else {
        "unlocked"
    };
    let duration = match (st, l) {
        (State::Leased, Some(l)) if l.duration < 0 => Some("infinite"),
        (State::Leased, Some(_)) => Some("fixed"),
        _ => None,
    };
    (state, status, duration)
}

/// `x-ms-lease-state`, `x-ms-lease-status` and, while leased, `x-ms-lease-duration`.
pub fn headers(r: &mut Response, l: &Option<Lease>) {
    let (state, status, duration) = names(l);
    let hm = r.headers_mut();
    hm.insert("x-ms-lease-state", HeaderValue::from_static(state));
    hm.insert("x-ms-lease-status", HeaderValue::from_static(status));
    if let Some(d) = duration {
        hm.insert("x-ms-lease-duration", HeaderValue::from_static(d));
    }
}

/// The lease elements of a List Blobs / List Containers entry.
pub fn xml(l: &Option<Lease>) -> String {
    let (state, status, duration) = names(l);
    let mut s = format!("<LeaseStatus>{status}</LeaseStatus><LeaseState>{state}</LeaseState>");
    if let Some(d) = duration {
        s.push_str(&format!("<LeaseDuration>{d}</LeaseDuration>"));
    }
    s
}

fn same_id(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

fn precondition(code: &'static str, msg: &str) -> BlobError {
    BlobError::new(StatusCode::PRECONDITION_FAILED, code, msg)
}

/// A write to a blob: with an active lease the request must carry its id; without one, a
/// request naming a lease fails (Azure's rules for every blob write and delete).
pub fn check_blob_write(headers: &HeaderMap, b: Option<&BlobRecord>) -> BlobResult<()> {
    let given = h(headers, "x-ms-lease-id");
    let lease = b.and_then(|b| b.lease.clone());
    match (active(&lease, now_micros()), given) {
        (Some(_), None) => Err(precondition(
            "LeaseIdMissing",
            "There is currently a lease on the blob and no lease ID was specified in the request.",
        )),
        (Some(l), Some(g)) if !same_id(&l.id, g) => Err(precondition(
            "LeaseIdMismatchWithBlobOperation",
            "The lease ID specified did not match the lease ID for the blob.",
        )),
        (None, Some(_)) => Err(precondition(
            "LeaseNotPresentWithBlobOperation",
            "There is currently no lease on the blob.",
        )),
        _ => Ok(()),
    }
}

/// A read naming a lease id must name the active one; reads without one are always allowed.
pub fn check_blob_read(headers: &HeaderMap, b: &BlobRecord) -> BlobResult<()> {
    if h(headers, "x-ms-lease-id").is_some() {
        check_blob_write(headers, Some(b))
    } else {
        Ok(())
    }
}

/// Container operations: Delete Container needs the lease id of a leased container (`required`);
/// others only check an id they are given.
pub fn check_container(
    headers: &HeaderMap,
    lease: &Option<Lease>,
    required: bool,
) -> BlobResult<()> {
    let given = h(headers, "x-ms-lease-id");
    match (active(lease, now_micros()), given) {
        (Some(_), None) if required => Err(precondition(
            "LeaseIdMissing",
            "There is currently a lease on the container and no lease ID was specified in the request.",
        )),
        (Some(l), Some(g)) if !same_id(&l.id, g) => Err(precondition(
            "LeaseIdMismatchWithContainerOperation",
            "The lease ID specified did not match the lease ID for the container.",
        )),
        (None, Some(_)) => Err(precondition(
            "LeaseNotPresentWithContainerOperation",
            "There is currently no lease on the container.",
        )),
        _ => Ok(()),
    }
}

/// The outcome of one lease action on the current lease.
struct Outcome {
    lease: Option<Lease>,
    status: StatusCode,
    /// `x-ms-lease-id` to answer (acquire, renew, change).
    id: Option<String>,
    /// `x-ms-lease-time` to answer (break): seconds until the lease is broken.
    time: Option<i64>,
}

fn conflict(code: &'static str, msg: &str) -> BlobError {
    BlobError::new(StatusCode::CONFLICT, code, msg)
}

fn guid(v: &str, header: &str) -> BlobResult<String> {
    uuid::Uuid::parse_str(v.trim())
        .map(|u| u.to_string())
        .map_err(|_| {
            BlobError::bad(
                "InvalidHeaderValue",
                format!("The value for the header {header} is not a valid GUID."),
            )
        })
}

fn need<'a>(headers: &'a HeaderMap, n: &str) -> BlobResult<&'a str> {
    h(headers, n).ok_or_else(|| {
        BlobError::bad(
            "MissingRequiredHeader",
            format!("An HTTP header that's mandatory for this request is not specified: {n}."),
        )
    })
}

/// Azure's lease state machine ("Outcomes of lease operations" in the Lease Blob reference).
fn transition(headers: &HeaderMap, cur: &Option<Lease>, now: i64) -> BlobResult<Outcome> {
    let action = need(headers, "x-ms-lease-action")?.to_ascii_lowercase();
    let st = state(cur, now);
    let not_present = || {
        conflict(
            "LeaseNotPresentWithLeaseOperation",
            "There is currently no lease.",
        )
    };
    let mismatch = || {
        conflict(
            "LeaseIdMismatchWithLeaseOperation",
            "The lease ID specified did not match the lease ID.",
        )
    };
    let cur_id = cur.as_ref().map(|l| l.id.clone()).unwrap_or_default();
    match action.as_str() {
        "acquire" => {
            let d: i64 = need(headers, "x-ms-lease-duration")?
                .trim()
                .parse()
                .ok()
                .filter(|d| *d == -1 || (15..=60).contains(d))
                .ok_or_else(|| {
                    BlobError::bad(
                        "InvalidHeaderValue",
                        "x-ms-lease-duration must be -1 or between 15 and 60 seconds.",
                    )
                })?;
            let id = match h(headers, "x-ms-proposed-lease-id") {
                Some(p) => guid(p, "x-ms-proposed-lease-id")?,
                None => uuid::Uuid::new_v4().to_string(),
            };
            match st {
                State::Breaking => {
                    return Err(conflict(
                        "LeaseIsBreakingAndCannotBeAcquired",
                        "There is currently a lease and it is breaking; it cannot be acquired.",
                    ))
                }
                State::Leased if !same_id(&cur_id, &id) => {
                    return Err(conflict(
                        "LeaseAlreadyPresent",
                        "There is already a lease present.",
                    ))
                }
                _ => {}
            }
            let lease = Lease {
                id: id.clone(),
                duration: d,
                expires: (d > 0).then(|| now + d * 1_000_000),
                broken_at: None,
            };
            Ok(Outcome {
                lease: Some(lease),
                status: StatusCode::CREATED,
                id: Some(id),
                time: None,
            })
        }
        "renew" => {
            let id = need(headers, "x-ms-lease-id")?;
            match st {
                State::Available => Err(not_present()),
                _ if !same_id(&cur_id, id) => Err(mismatch()),
                State::Breaking | State::Broken => Err(conflict(
                    "LeaseIsBrokenAndCannotBeRenewed",
                    "The lease has been broken and cannot be renewed.",
                )),
                _ => {
                    let mut l = cur.clone().unwrap_or_default();
                    l.expires = (l.duration > 0).then(|| now + l.duration * 1_000_000);
                    Ok(Outcome {
                        lease: Some(l),
                        status: StatusCode::OK,
                        id: Some(cur_id),
                        time: None,
                    })
                }
            }
        }
        "change" => {
            let id = need(headers, "x-ms-lease-id")?;
            let proposed = guid(
                need(headers, "x-ms-proposed-lease-id")?,
                "x-ms-proposed-lease-id",
            )?;
            match st {
                State::Available | State::Expired | State::Broken => Err(not_present()),
                State::Breaking => Err(conflict(
                    "LeaseIsBreakingAndCannotBeChanged",
                    "There is currently a lease and it is breaking; it cannot be changed.",
                )),
                // Changing to the id already held succeeds too (a retried change).
                _ if !same_id(&cur_id, id) && !same_id(&cur_id, &proposed) => Err(mismatch()),
                _ => {
                    let mut l = cur.clone().unwrap_or_default();
                    l.id = proposed.clone();
                    Ok(Outcome {
                        lease: Some(l),
                        status: StatusCode::OK,
                        id: Some(proposed),
                        time: None,
                    })
                }
            }
        }
        "release" => {
            let id = need(headers, "x-ms-lease-id")?;
            match st {
                State::Available => Err(not_present()),
                _ if !same_id(&cur_id, id) => Err(mismatch()),
                _ => Ok(Outcome {
                    lease: None,
                    status: StatusCode::OK,
                    id: None,
                    time: None,
                }),
            }
        }
        "break" => {
            let period: Option<i64> = match h(headers, "x-ms-lease-break-period") {
                Some(p) => Some(
                    p.trim()
                        .parse()
                        .ok()
                        .filter(|p| (0..=60).contains(p))
                        .ok_or_else(|| {
                            BlobError::bad(
                                "InvalidHeaderValue",
                                "x-ms-lease-break-period must be between 0 and 60 seconds.",
                            )
                        })?,
                ),
                None => None,
            };
            let mut l = cur.clone().ok_or_else(not_present)?;
            let at = match st {
                State::Available => return Err(not_present()),
                State::Leased => {
                    // A fixed lease breaks at the latest when it would have expired.
                    let remaining = l.expires.map(|e| e - now);
                    let wanted = period.map(|p| p * 1_000_000);
                    let delay = match (wanted, remaining) {
                        (Some(w), Some(r)) => w.min(r),
                        (Some(w), None) => w,
                        (None, Some(r)) => r,
                        (None, None) => 0,
                    };
                    now + delay.max(0)
                }
                State::Breaking => {
                    let b = l.broken_at.unwrap_or(now);
                    match period {
                        Some(p) => b.min(now + p * 1_000_000),
                        None => b,
                    }
                }
                State::Expired | State::Broken => l.broken_at.unwrap_or(now).min(now),
            };
            l.broken_at = Some(at);
            let secs = (at - now + 999_999) / 1_000_000;
            Ok(Outcome {
                lease: Some(l),
                status: StatusCode::ACCEPTED,
                id: None,
                time: Some(secs.max(0)),
            })
        }
        _ => Err(BlobError::bad(
            "InvalidHeaderValue",
            "x-ms-lease-action must be acquire, renew, change, release or break.",
        )),
    }
}

fn answer(o: &Outcome, etag: &str, last_modified: i64) -> Response {
    let mut r = empty(o.status);
    let hm = r.headers_mut();
    let mut set = |k: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            hm.insert(k, v);
        }
    };
    set("etag", etag.to_string());
    set("last-modified", http_date(last_modified));
    if let Some(id) = &o.id {
        set("x-ms-lease-id", id.clone());
    }
    if let Some(t) = o.time {
        set("x-ms-lease-time", t.to_string());
    }
    r
}

/// `PUT {container}/{blob}?comp=lease`. A lease changes neither the ETag nor Last-Modified.
pub async fn lease_blob(
    ctx: &Ctx<'_>,
    container: &str,
    name: &str,
    headers: &HeaderMap,
) -> BlobResult<Response> {
    ctx.authorize(&ctx.container_scope(container), WRITE, true)
        .await?;
    container::load(ctx, container).await?;
    for attempt in 0..super::CAS_ATTEMPTS {
        if attempt > 0 {
            super::cas_pause(attempt).await;
        }
        let b = super::blob_ops::load(ctx, container, name)
            .await?
            .ok_or_else(BlobError::blob_not_found)?;
        check_conditions(headers, Some(&b), false)?;
        let o = transition(headers, &b.lease, now_micros())?;
        let mut nb = b.clone();
        nb.lease = o.lease.clone();
        let draft = ctx.draft(
            "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/lease/action",
            &format!("{}/blobs/{}", ctx.container_scope(container), name),
            "success",
            json!({"leaseAction": h(headers, "x-ms-lease-action")}),
        );
        let (etag, lease) = (b.etag.clone(), b.lease.clone());
        match ciel_store::run(&ctx.svc.store, move |s| {
            s.replace_blob(&nb, &etag, &lease, &draft)
        })
        .await
        {
            Ok(_) => return Ok(answer(&o, &b.etag, b.last_modified)),
            // Someone changed the blob or its lease meanwhile: decide again on what is stored.
            Err(StoreError::Conflict(_)) | Err(StoreError::NotFound) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(BlobError::new(
        StatusCode::CONFLICT,
        "LeaseOperationFailed",
        "The lease operation conflicted with concurrent changes; retry.",
    ))
}

/// `PUT {container}?restype=container&comp=lease`.
pub async fn lease_container(
    ctx: &Ctx<'_>,
    name: &str,
    headers: &HeaderMap,
) -> BlobResult<Response> {
    ctx.authorize(&ctx.container_scope(name), CONTAINER_WRITE, false)
        .await?;
    for attempt in 0..super::CAS_ATTEMPTS {
        if attempt > 0 {
            super::cas_pause(attempt).await;
        }
        let c = container::load(ctx, name).await?;
        let o = transition(headers, &c.lease, now_micros())?;
        let draft = ctx.draft(
            "Microsoft.Storage/storageAccounts/blobServices/containers/lease/action",
            &ctx.container_scope(name).to_string(),
            "success",
            json!({"leaseAction": h(headers, "x-ms-lease-action")}),
        );
        let (a, n, expect, new) = (
            ctx.account.id.key(),
            name.to_string(),
            c.lease.clone(),
            o.lease.clone(),
        );
        match ciel_store::run(&ctx.svc.store, move |s| {
            s.set_container_lease(&a, &n, &expect, &new, &draft)
        })
        .await
        {
            Ok(()) => return Ok(answer(&o, &c.etag, c.last_modified)),
            Err(StoreError::Conflict(_)) => continue,
            Err(StoreError::NotFound) => return Err(BlobError::container_not_found()),
            Err(e) => return Err(e.into()),
        }
    }
    Err(BlobError::new(
        StatusCode::CONFLICT,
        "LeaseOperationFailed",
        "The lease operation conflicted with concurrent changes; retry.",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hm(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        m
    }
    const A: &str = "11111111-1111-1111-1111-111111111111";
    const B: &str = "22222222-2222-2222-2222-222222222222";

    #[test]
    fn lease_state_machine() {
        let now = 1_000_000_000;
        let acq = |id: &str, d: &str| {
            hm(&[
                ("x-ms-lease-action", "acquire"),
                ("x-ms-lease-duration", d),
                ("x-ms-proposed-lease-id", id),
            ])
        };
        let o = transition(&acq(A, "15"), &None, now).unwrap();
        let l = o.lease.clone();
        assert_eq!(state(&l, now), State::Leased);
        assert_eq!(state(&l, now + 15_000_000), State::Expired);
        // Another id cannot take a held lease; the holder can re-acquire.
        assert_eq!(
            transition(&acq(B, "15"), &l, now).err().unwrap().code,
            "LeaseAlreadyPresent"
        );
        assert!(transition(&acq(A, "-1"), &l, now).is_ok());
        // An expired lease is anyone's.
        assert!(transition(&acq(B, "20"), &l, now + 16_000_000).is_ok());
        assert!(transition(&acq(A, "61"), &None, now).is_err());
        // Break with a period: breaking, then broken; cannot be renewed.
        let br = hm(&[
            ("x-ms-lease-action", "break"),
            ("x-ms-lease-break-period", "5"),
        ]);
        let o = transition(&br, &l, now).unwrap();
        assert_eq!(o.time, Some(5));
        assert_eq!(state(&o.lease, now + 1), State::Breaking);
        assert_eq!(state(&o.lease, now + 5_000_000), State::Broken);
        let renew = hm(&[("x-ms-lease-action", "renew"), ("x-ms-lease-id", A)]);
        assert_eq!(
            transition(&renew, &o.lease, now + 1).err().unwrap().code,
            "LeaseIsBrokenAndCannotBeRenewed"
        );
        // Change needs the current id.
        let ch = hm(&[
            ("x-ms-lease-action", "change"),
            ("x-ms-lease-id", B),
            (
                "x-ms-proposed-lease-id",
                "33333333-3333-3333-3333-333333333333",
            ),
        ]);
        assert_eq!(
            transition(&ch, &l, now).err().unwrap().code,
            "LeaseIdMismatchWithLeaseOperation"
        );
        // Release of nothing.
        let rel = hm(&[("x-ms-lease-action", "release"), ("x-ms-lease-id", A)]);
        assert_eq!(
            transition(&rel, &None, now).err().unwrap().code,
            "LeaseNotPresentWithLeaseOperation"
        );
        assert!(transition(&rel, &l, now).unwrap().lease.is_none());
    }
}
