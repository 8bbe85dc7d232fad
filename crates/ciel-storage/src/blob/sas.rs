//! Shared access signatures: service SAS (signed with an account key, optionally bound to a
//! container's stored access policy), account SAS, and user delegation SAS (signed with a key
//! derived for an Entra principal by Get User Delegation Key, whose RBAC rights still bound what
//! the SAS can do).
//!
//! The string-to-sign depends on the signed version `sv`; the layouts below follow Azure's
//! published formats for 2015-04-05 and later. Signatures are compared in constant time
//! (`ring::hmac::verify`). A SAS never carries more than its permissions, its resource, its time
//! window and its IP range allow; what a SAS cannot authorize at all (ACLs, user delegation keys)
//! is refused.

use super::error::{BlobError, BlobResult};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use http::{HeaderMap, Method, StatusCode};
use std::net::Ipv4Addr;

/// The oldest signed version accepted; older layouts signed fewer fields.
const OLDEST: &str = "2015-04-05";
/// A user delegation key lives at most seven days, as in Azure.
pub const UDK_MAX_SECONDS: i64 = 7 * 24 * 3600;

/// What kind of SAS authenticated a request.
#[derive(Debug, Clone, PartialEq)]
pub enum SasKind {
    Service,
    Account,
    /// Signed with a user delegation key of this principal.
    UserDelegation {
        oid: String,
        tid: String,
    },
}

/// A verified SAS: what the request may do.
#[derive(Debug, Clone)]
pub struct SasGrant {
    pub kind: SasKind,
    pub permissions: String,
    /// Stored access policy the SAS is bound to, if any.
    pub policy: Option<String>,
    /// Response header overrides (`rscc`, `rscd`, `rsce`, `rscl`, `rsct`).
    pub overrides: Vec<(&'static str, String)>,
    /// The first bytes of SHA-256(signature), hex: identifies the SAS in the audit log without
    /// revealing it.
    pub fingerprint: String,
    /// Holds `c` (create) but not `w` (write): may create blobs, never overwrite them.
    pub create_only: bool,
}

/// Where in the service a request acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Service,
    Container,
    Blob,
}

/// The permission an operation needs from a SAS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    pub level: Level,
    /// Any one of these letters suffices ("" = any permission at all).
    pub any_of: &'static str,
    /// Only an account SAS can authorize it (creating containers, service properties).
    pub account_only: bool,
}

/// The SAS requirement of an operation, or `None` when no SAS may perform it.
pub fn need(
    method: &Method,
    level: Level,
    restype: Option<&str>,
    comp: Option<&str>,
) -> Option<Need> {
    let n = |any_of, account_only| {
        Some(Need {
            level,
            any_of,
            account_only,
        })
    };
    let read = matches!(*method, Method::GET | Method::HEAD);
    // Get Account Information works with any SAS at every level.
    if restype == Some("account") && comp == Some("properties") {
        return n("", false);
    }
    match level {
        Level::Service => match (comp, read) {
            (Some("list"), true) => n("l", true),
            (Some("properties") | Some("stats"), true) => n("r", true),
            (Some("properties"), false) => n("w", true),
            (Some("blobs"), true) => n("f", true),
            _ => None,
        },
        Level::Container => match (comp, method) {
            (Some("acl"), _) => None,
            (None, &Method::PUT) => n("c", true),
            (None, &Method::DELETE) => n("d", false),
            (None | Some("metadata"), _) if read => n("r", false),
            (Some("metadata"), &Method::PUT) => n("w", false),
            (Some("list"), _) if read => n("l", false),
            (Some("blobs"), _) if read => n("f", false),
            (Some("lease"), &Method::PUT) => n("wd", false),
            _ => None,
        },
        Level::Blob => match (comp, method) {
            (Some("tags"), _) => n("t", false),
            (_, _) if read => n("r", false),
            (None | Some("block") | Some("blocklist") | Some("snapshot"), &Method::PUT) => {
                n("cw", false)
            }
            (Some("appendblock"), &Method::PUT) => n("aw", false),
            (_, &Method::PUT) => n("w", false),
            (_, &Method::DELETE) => n("d", false),
            _ => None,
        },
    }
}

/// The SAS fields of a request's query.
pub struct Params<'a> {
    q: &'a [(String, String)],
}

impl<'a> Params<'a> {
    pub fn new(q: &'a [(String, String)]) -> Self {
        Self { q }
    }
    fn get(&self, k: &str) -> &'a str {
        self.q
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }
    pub fn policy(&self) -> Option<&'a str> {
        Some(self.get("si")).filter(|s| !s.is_empty())
    }
}

/// Whether a query carries a SAS.
pub fn is_sas(q: &[(String, String)]) -> bool {
    q.iter().any(|(k, _)| k == "sig")
}

fn denied(detail: impl Into<String>) -> BlobError {
    BlobError::new(
        StatusCode::FORBIDDEN,
        "AuthenticationFailed",
        format!(
            "Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature.\nAuthenticationErrorDetail:{}",
            detail.into()
        ),
    )
}

fn mismatch(code: &'static str, detail: &str) -> BlobError {
    BlobError::new(StatusCode::FORBIDDEN, code, detail.to_string())
}

/// Azure's SAS time forms: `YYYY-MM-DD`, `YYYY-MM-DDThh:mmZ`, `YYYY-MM-DDThh:mm:ss[.fff]Z` (or
/// an offset).
pub fn parse_time(s: &str) -> Option<i64> {
    if let Ok(d) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(d.timestamp());
    }
    for f in ["%Y-%m-%dT%H:%MZ", "%Y-%m-%dT%H:%M:%SZ"] {
        if let Ok(d) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return Some(d.and_utc().timestamp());
        }
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc().timestamp())
}

fn ip_allowed(sip: &str, client: Option<&str>) -> bool {
    let parse = |s: &str| s.trim().parse::<Ipv4Addr>().ok();
    let (lo, hi) = match sip.split_once('-') {
        Some((a, b)) => (parse(a), parse(b)),
        None => (parse(sip), parse(sip)),
    };
    let client = client
        .and_then(|c| c.parse::<std::net::IpAddr>().ok())
        .and_then(|ip| match ip {
            std::net::IpAddr::V4(v4) => Some(v4),
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped(),
        });
    match (lo, hi, client) {
        (Some(lo), Some(hi), Some(c)) => lo <= c && c <= hi,
        _ => false,
    }
}

/// A stored access policy's fields, as kept by Set Container ACL.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub start: Option<String>,
    pub expiry: Option<String>,
    pub permission: Option<String>,
}

/// What the verifier needs to know about the request.
pub struct Request<'a> {
    pub account: &'a str,
    /// The container and blob the request addresses (decoded).
    pub container: &'a str,
    pub blob: Option<&'a str>,
    pub snapshot: Option<&'a str>,
    pub need: Need,
    pub client_ip: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub now: i64,
}

/// The keys a SAS may be signed with.
pub struct Keys<'a> {
    pub account_keys: [&'a str; 2],
    /// Derives the user delegation key for (oid, tid, start, expiry, version, delegated tid).
    pub udk: &'a dyn Fn(&UdkFields) -> [u8; 32],
}

/// The fields a user delegation key is bound to.
#[derive(Debug, Clone)]
pub struct UdkFields {
    pub oid: String,
    pub tid: String,
    pub start: String,
    pub expiry: String,
    pub service: String,
    pub version: String,
    pub delegated_tid: String,
}

fn line(s: &mut String, v: &str) {
    s.push_str(v);
    s.push('\n');
}

/// The service and user delegation SAS string-to-sign.
fn blob_sts(p: &Params, canonical: &str, sv: &str, ud: bool, r: &Request) -> String {
    let mut s = String::with_capacity(256);
    for k in ["sp", "st", "se"] {
        line(&mut s, p.get(k));
    }
    line(&mut s, canonical);
    if ud {
        for k in ["skoid", "sktid", "skt", "ske", "sks", "skv"] {
            line(&mut s, p.get(k));
        }
        if sv >= "2020-02-10" {
            for k in ["saoid", "suoid", "scid"] {
                line(&mut s, p.get(k));
            }
        }
        if sv >= "2025-07-05" {
            for k in ["skdutid", "sduoid"] {
                line(&mut s, p.get(k));
            }
        }
    } else {
        line(&mut s, p.get("si"));
    }
    for k in ["sip", "spr", "sv"] {
        line(&mut s, p.get(k));
    }
    if sv >= "2018-11-09" {
        line(&mut s, p.get("sr"));
        // The signed snapshot time is the `snapshot` the request names, for a snapshot SAS.
        line(
            &mut s,
            if p.get("sr") == "bs" {
                p.get("snapshot")
            } else {
                ""
            },
        );
    }
    if sv >= "2020-12-06" {
        line(&mut s, p.get("ses"));
    }
    if ud && sv >= "2026-04-06" {
        // Signed request headers and query parameters: the names are in the SAS, the values
        // come from the request itself.
        for k in p.get("srh").split(',').filter(|k| !k.is_empty()) {
            let v = r.headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("");
            s.push_str(&format!("{k}:{v}\n"));
        }
        s.push('\n');
        for k in p.get("srq").split(',').filter(|k| !k.is_empty()) {
            s.push_str(&format!("\n{k}:{}", p.get(k)));
        }
        s.push('\n');
    }
    for k in ["rscc", "rscd", "rsce", "rscl", "rsct"] {
        line(&mut s, p.get(k));
    }
    s.pop();
    s
}

fn account_sts(p: &Params, account: &str, sv: &str) -> String {
    let mut s = String::with_capacity(256);
    line(&mut s, account);
    for k in ["sp", "ss", "srt", "st", "se", "sip", "spr", "sv"] {
        line(&mut s, p.get(k));
    }
    if sv >= "2020-12-06" {
        line(&mut s, p.get("ses"));
    }
    s
}

fn hmac_ok(key: &[u8], sts: &str, sig: &[u8]) -> bool {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    ring::hmac::verify(&k, sts.as_bytes(), sig).is_ok()
}

/// Verifies the SAS of a request. `policy` is the stored access policy named by `si`, looked
/// up by the caller (None when the SAS names none or the container has no such policy).
pub fn verify(
    q: &[(String, String)],
    r: &Request,
    keys: &Keys,
    policy: Option<&Policy>,
) -> BlobResult<SasGrant> {
    let p = Params::new(q);
    let sv = p.get("sv");
    if sv.len() != 10 || sv < OLDEST {
        return Err(denied(format!(
            "The signed version '{sv}' is missing or older than {OLDEST}."
        )));
    }
    let sig = B64
        .decode(p.get("sig"))
        .map_err(|_| denied("The signature is not base64."))?;
    let ud = !p.get("skoid").is_empty();
    let account_sas = !ud && (!p.get("ss").is_empty() || !p.get("srt").is_empty());
    if !p.get("ses").is_empty() {
        return Err(BlobError::not_supported("Encryption scopes"));
    }

    // Effective permissions and time window: from the SAS, or from its stored access policy
    // (a field may be in one or the other, never both).
    let si = p.policy();
    if si.is_some() && (ud || account_sas) {
        return Err(denied(
            "Only a service SAS can refer to a stored access policy.",
        ));
    }
    let pick = |field: &'static str, from_policy: Option<&Option<String>>| -> BlobResult<String> {
        let own = p.get(field);
        match from_policy.and_then(|v| v.as_deref()) {
            Some(_) if !own.is_empty() => Err(denied(format!(
                "The field '{field}' is given both by the SAS and by its stored access policy."
            ))),
            Some(pv) => Ok(pv.to_string()),
            None => Ok(own.to_string()),
        }
    };
    if si.is_some() && policy.is_none() {
        return Err(denied(
            "The stored access policy named by the SAS does not exist.",
        ));
    }
    let sp = pick("sp", policy.map(|x| &x.permission))?;
    let st = pick("st", policy.map(|x| &x.start))?;
    let se = pick("se", policy.map(|x| &x.expiry))?;
    let expiry = parse_time(&se)
        .ok_or_else(|| denied("The signed expiry (se) is missing or not a valid time."))?;
    if !st.is_empty() {
        let start =
            parse_time(&st).ok_or_else(|| denied("The signed start (st) is not a valid time."))?;
        if r.now < start {
            return Err(denied(
                "Signed start time is in the future: the SAS is not valid yet.",
            ));
        }
    }
    if r.now >= expiry {
        return Err(denied(
            "Signed expiry time has passed: the SAS has expired.",
        ));
    }
    match p.get("spr") {
        "" | "https" | "https,http" => {}
        other => {
            return Err(denied(format!(
                "The signed protocol '{other}' is not valid."
            )))
        }
    }
    let sip = p.get("sip");
    if !sip.is_empty() && !ip_allowed(sip, r.client_ip) {
        return Err(mismatch(
            "AuthorizationSourceIPMismatch",
            "This request is not authorized to perform this operation using this source IP.",
        ));
    }

    // The signature.
    let kind = if account_sas {
        if !p.get("ss").contains('b') {
            return Err(mismatch(
                "AuthorizationServiceMismatch",
                "This request is not authorized to perform this operation using this service: the account SAS does not include the Blob service (ss).",
            ));
        }
        let srt = p.get("srt");
        if srt.is_empty() || !srt.chars().all(|c| "sco".contains(c)) {
            return Err(denied("The signed resource types (srt) are not valid."));
        }
        let want = match r.need.level {
            Level::Service => 's',
            Level::Container => 'c',
            Level::Blob => 'o',
        };
        if !srt.contains(want) {
            return Err(mismatch(
                "AuthorizationResourceTypeMismatch",
                "This request is not authorized to perform this operation using this resource type.",
            ));
        }
        if !sp.chars().all(|c| "rwdxylacuptfi".contains(c)) {
            return Err(denied("The signed permissions (sp) are not valid."));
        }
        let sts = account_sts(&p, r.account, sv);
        if !keys.account_keys.iter().any(|k| {
            B64.decode(k)
                .map(|k| hmac_ok(&k, &sts, &sig))
                .unwrap_or(false)
        }) {
            return Err(denied("Signature did not match."));
        }
        SasKind::Account
    } else {
        if r.need.account_only || r.need.level == Level::Service {
            return Err(mismatch(
                "AuthorizationResourceTypeMismatch",
                "This request is not authorized to perform this operation using this resource type: only an account SAS can.",
            ));
        }
        let sr = p.get("sr");
        let canonical = match (sr, r.blob) {
            ("c", _) => format!("/blob/{}/{}", r.account, r.container),
            ("b", Some(b)) => format!("/blob/{}/{}/{}", r.account, r.container, b),
            ("bs", Some(b)) if !p.get("snapshot").is_empty() && Some(p.get("snapshot")) == r.snapshot => {
                format!("/blob/{}/{}/{}", r.account, r.container, b)
            }
            ("b" | "bs", _) => {
                return Err(mismatch(
                    "AuthorizationResourceTypeMismatch",
                    "This request is not authorized to perform this operation using this resource type: the SAS is for one blob.",
                ))
            }
            ("bv", _) => return Err(BlobError::not_supported("SAS for blob versions")),
            ("d", _) => return Err(BlobError::not_supported("Directory-scoped SAS (hierarchical namespace)")),
            _ => return Err(denied("The signed resource (sr) is missing or not valid.")),
        };
        if !sp.chars().all(|c| "racwdxyltfmeopi".contains(c)) {
            return Err(denied("The signed permissions (sp) are not valid."));
        }
        // The canonical resource names the container (and blob); a SAS for another resource
        // fails here, as its signature covers a different path.
        if ud {
            if p.get("sks") != "b" {
                return Err(denied("The signed key service (sks) must be 'b'."));
            }
            let (kst, kse) = (
                parse_time(p.get("skt"))
                    .ok_or_else(|| denied("The signed key start (skt) is not valid."))?,
                parse_time(p.get("ske"))
                    .ok_or_else(|| denied("The signed key expiry (ske) is not valid."))?,
            );
            if r.now < kst || r.now >= kse || kse - kst > UDK_MAX_SECONDS {
                return Err(denied("The user delegation key is not valid at this time."));
            }
            if expiry > kse {
                return Err(denied("The SAS expires after its user delegation key."));
            }
            let f = UdkFields {
                oid: p.get("skoid").into(),
                tid: p.get("sktid").into(),
                start: p.get("skt").into(),
                expiry: p.get("ske").into(),
                service: p.get("sks").into(),
                version: p.get("skv").into(),
                delegated_tid: p.get("skdutid").into(),
            };
            let key = (keys.udk)(&f);
            if !hmac_ok(&key, &blob_sts(&p, &canonical, sv, true, r), &sig) {
                return Err(denied("Signature did not match."));
            }
            SasKind::UserDelegation {
                oid: f.oid,
                tid: f.tid,
            }
        } else {
            let sts = blob_sts(&p, &canonical, sv, false, r);
            if !keys.account_keys.iter().any(|k| {
                B64.decode(k)
                    .map(|k| hmac_ok(&k, &sts, &sig))
                    .unwrap_or(false)
            }) {
                return Err(denied("Signature did not match."));
            }
            SasKind::Service
        }
    };

    // Permissions.
    if !r.need.any_of.is_empty() && !r.need.any_of.chars().any(|c| sp.contains(c)) {
        return Err(mismatch(
            "AuthorizationPermissionMismatch",
            "This request is not authorized to perform this operation using this permission.",
        ));
    }
    let overrides = [
        ("rscc", "cache-control"),
        ("rscd", "content-disposition"),
        ("rsce", "content-encoding"),
        ("rscl", "content-language"),
        ("rsct", "content-type"),
    ]
    .iter()
    .filter(|(k, _)| !p.get(k).is_empty())
    .map(|(k, h)| (*h, p.get(k).to_string()))
    .collect();
    let digest = ring::digest::digest(&ring::digest::SHA256, &sig);
    Ok(SasGrant {
        kind,
        create_only: sp.contains('c') && !sp.contains('w'),
        permissions: sp,
        policy: si.map(str::to_string),
        overrides,
        fingerprint: ciel_core::audit::hex_lower(&digest.as_ref()[..6]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(key: &[u8], sts: &str) -> String {
        let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
        B64.encode(ring::hmac::sign(&k, sts.as_bytes()).as_ref())
    }

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    const NOW: i64 = 1_795_000_000; // 2026-11-18T11:06:40Z

    fn req<'a>(h: &'a HeaderMap, blob: Option<&'a str>, need: Need) -> Request<'a> {
        Request {
            account: "acct",
            container: "c1",
            blob,
            snapshot: None,
            need,
            client_ip: Some("127.0.0.1"),
            headers: h,
            now: NOW,
        }
    }

    fn no_udk(_: &UdkFields) -> [u8; 32] {
        [0; 32]
    }

    #[test]
    fn service_sas_for_a_blob() {
        let key = [7u8; 64];
        let kb = B64.encode(key);
        let h = HeaderMap::new();
        let need_r = need(&Method::GET, Level::Blob, None, None).unwrap();
        let mut fields = vec![
            ("sp", "r"),
            ("st", "2026-11-17T00:00:00Z"),
            ("se", "2026-11-19T00:00:00Z"),
            ("sv", "2026-04-06"),
            ("sr", "b"),
        ];
        let p = q(&fields);
        let r = req(&h, Some("dir/x.txt"), need_r);
        let sts = blob_sts(
            &Params::new(&p),
            "/blob/acct/c1/dir/x.txt",
            "2026-04-06",
            false,
            &r,
        );
        assert_eq!(
            sts,
            "r\n2026-11-17T00:00:00Z\n2026-11-19T00:00:00Z\n/blob/acct/c1/dir/x.txt\n\n\n\n2026-04-06\nb\n\n\n\n\n\n\n"
        );
        let sig = sign(&key, &sts);
        fields.push(("sig", &sig));
        let p = q(&fields);
        let keys = Keys {
            account_keys: [&kb, &kb],
            udk: &no_udk,
        };
        let g = verify(&p, &r, &keys, None).unwrap();
        assert_eq!(g.kind, SasKind::Service);
        // Another blob, a write, an expired window: refused.
        assert!(verify(&p, &req(&h, Some("other"), need_r), &keys, None).is_err());
        let need_w = need(&Method::PUT, Level::Blob, None, None).unwrap();
        let e = verify(&p, &req(&h, Some("dir/x.txt"), need_w), &keys, None).unwrap_err();
        assert_eq!(e.code, "AuthorizationPermissionMismatch");
        let mut late = req(&h, Some("dir/x.txt"), need_r);
        late.now = NOW + 2 * 86400;
        assert_eq!(
            verify(&p, &late, &keys, None).unwrap_err().code,
            "AuthenticationFailed"
        );
        // A tampered permission breaks the signature.
        let mut t = p.clone();
        t[0].1 = "rw".into();
        assert!(verify(&t, &req(&h, Some("dir/x.txt"), need_w), &keys, None).is_err());
    }

    #[test]
    fn account_sas_and_ip_ranges() {
        let key = [9u8; 64];
        let kb = B64.encode(key);
        let h = HeaderMap::new();
        let mut fields = vec![
            ("sv", "2026-04-06"),
            ("ss", "b"),
            ("srt", "sco"),
            ("sp", "rl"),
            ("se", "2026-11-19"),
            ("sip", "127.0.0.1-127.0.0.9"),
        ];
        let sts = account_sts(&Params::new(&q(&fields)), "acct", "2026-04-06");
        assert_eq!(
            sts,
            "acct\nrl\nb\nsco\n\n2026-11-19\n127.0.0.1-127.0.0.9\n\n2026-04-06\n\n"
        );
        let sig = sign(&key, &sts);
        fields.push(("sig", &sig));
        let p = q(&fields);
        let keys = Keys {
            account_keys: [&kb, &kb],
            udk: &no_udk,
        };
        let list = need(&Method::GET, Level::Service, None, Some("list")).unwrap();
        assert!(verify(&p, &req(&h, None, list), &keys, None).is_ok());
        let mut far = req(&h, None, list);
        far.client_ip = Some("10.0.0.1");
        assert_eq!(
            verify(&p, &far, &keys, None).unwrap_err().code,
            "AuthorizationSourceIPMismatch"
        );
    }

    #[test]
    fn times_and_ranges() {
        assert_eq!(parse_time("2026-11-18"), Some(1_794_960_000));
        assert_eq!(parse_time("2026-11-18T00:00Z"), Some(1_794_960_000));
        assert_eq!(parse_time("2026-11-18T00:00:00.5Z"), Some(1_794_960_000));
        assert_eq!(parse_time("yesterday"), None);
        assert!(ip_allowed("10.0.0.5", Some("10.0.0.5")));
        assert!(!ip_allowed("10.0.0.5", Some("::1")));
        assert!(ip_allowed("10.0.0.1-10.0.0.9", Some("::ffff:10.0.0.3")));
    }
}
