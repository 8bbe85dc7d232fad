//! Authentication of Blob requests: SharedKey (Azure's canonicalization, host-style and
//! path-style) and OAuth bearer tokens from Ciel's identity, then RBAC on data actions. SAS lives
//! in `sas`. Every refusal is audited.

use super::error::{BlobError, BlobResult};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use http::{HeaderMap, Method, StatusCode};

/// Who is calling, once authenticated.
#[derive(Debug, Clone)]
pub enum Principal {
    /// Holder of an account key: full access to the account's data.
    AccountKey,
    /// An Entra-style principal; data access through RBAC.
    Token(ciel_core::Caller),
    /// A verified shared access signature.
    Sas(super::sas::SasGrant),
    /// No credentials, reading a public container of an account that allows it.
    Anonymous,
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// Orders x-ms-* header names. `word` follows the service's culture-invariant order, in which
/// hyphens weigh nothing at the first level; the plain order is the specification's. Clients use
/// one or the other; both are deterministic functions of the request.
fn sort_names(names: &mut [String], word: bool) {
    if word {
        names.sort_by(|a, b| {
            let ka: String = a.chars().filter(|c| *c != '-').collect();
            let kb: String = b.chars().filter(|c| *c != '-').collect();
            ka.cmp(&kb).then_with(|| a.cmp(b))
        });
    } else {
        names.sort();
    }
}

/// The SharedKey string-to-sign for a request (service version 2015-02-21 and later).
pub fn string_to_sign(
    method: &Method,
    raw_path: &str,
    raw_query: Option<&str>,
    headers: &HeaderMap,
    account: &str,
    word_sort: bool,
) -> String {
    let mut s = String::with_capacity(512);
    s.push_str(method.as_str());
    s.push('\n');
    for name in [
        "content-encoding",
        "content-language",
        "content-length",
        "content-md5",
        "content-type",
        "date",
        "if-modified-since",
        "if-match",
        "if-none-match",
        "if-unmodified-since",
        "range",
    ] {
        let v = header(headers, name);
        // A zero Content-Length is signed as empty.
        if !(name == "content-length" && v == "0") {
            s.push_str(v);
        }
        s.push('\n');
    }
    let mut names: Vec<String> = headers
        .keys()
        .map(|k| k.as_str().to_ascii_lowercase())
        .filter(|k| k.starts_with("x-ms-"))
        .collect();
    names.dedup();
    sort_names(&mut names, word_sort);
    for n in names {
        let values: Vec<&str> = headers
            .get_all(n.as_str())
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        s.push_str(&n);
        s.push(':');
        s.push_str(values.join(",").trim());
        s.push('\n');
    }
    s.push('/');
    s.push_str(account);
    s.push_str(raw_path);
    let mut q: std::collections::BTreeMap<String, Vec<String>> = std::collections::BTreeMap::new();
    if let Some(raw) = raw_query {
        for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
            q.entry(k.to_ascii_lowercase())
                .or_default()
                .push(v.into_owned());
        }
    }
    for (k, mut vs) in q {
        vs.sort();
        s.push('\n');
        s.push_str(&k);
        s.push(':');
        s.push_str(&vs.join(","));
    }
    s
}

/// Verifies `SharedKey account:signature` against the account's two keys, in constant time.
pub fn verify_shared_key(
    auth: &str,
    method: &Method,
    raw_path: &str,
    raw_query: Option<&str>,
    headers: &HeaderMap,
    account: &str,
    keys: &[&str],
) -> BlobResult<()> {
    let rest = auth
        .strip_prefix("SharedKey ")
        .ok_or_else(|| BlobError::auth_failed("The authorization scheme is not SharedKey."))?;
    let (name, sig) = rest
        .split_once(':')
        .ok_or_else(|| BlobError::auth_failed("The SharedKey header is malformed."))?;
    if name != account {
        return Err(BlobError::auth_failed(
            "The account in the SharedKey header does not match the request.",
        ));
    }
    let sig = B64
        .decode(sig.trim())
        .map_err(|_| BlobError::auth_failed("The signature is not base64."))?;
    // The signed date bounds replay: Azure accepts 15 minutes of skew either way.
    let date = if header(headers, "x-ms-date").is_empty() {
        header(headers, "date")
    } else {
        header(headers, "x-ms-date")
    };
    if date.is_empty() {
        return Err(BlobError::auth_failed("Request date header not specified."));
    }
    let when = chrono::DateTime::parse_from_rfc2822(date)
        .map_err(|_| BlobError::auth_failed("The request date header is not a valid HTTP date."))?;
    if (chrono::Utc::now().timestamp() - when.timestamp()).abs() > 15 * 60 {
        return Err(BlobError::auth_failed(
            "Request date header too old or too far in the future: the allowed skew is 15 minutes.",
        ));
    }
    for word in [true, false] {
        let sts = string_to_sign(method, raw_path, raw_query, headers, account, word);
        for k in keys {
            let Ok(kb) = B64.decode(k) else { continue };
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &kb);
            if ring::hmac::verify(&key, sts.as_bytes(), &sig).is_ok() {
                return Ok(());
            }
        }
    }
    Err(BlobError::auth_failed(
        "The MAC signature found in the HTTP request is not the same as any computed signature.",
    ))
}

pub fn no_auth() -> BlobError {
    BlobError::new(
        StatusCode::UNAUTHORIZED,
        "NoAuthenticationInformation",
        "Server failed to authenticate the request. Please refer to the information in the www-authenticate header.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn sign(sts: &str, key_b64: &str) -> String {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &B64.decode(key_b64).unwrap());
        B64.encode(ring::hmac::sign(&key, sts.as_bytes()).as_ref())
    }

    #[test]
    fn canonical_form() {
        let mut h = HeaderMap::new();
        h.insert("x-ms-version", HeaderValue::from_static("2026-04-06"));
        h.insert(
            "x-ms-date",
            HeaderValue::from_static("Sat, 28 Nov 2026 22:00:00 GMT"),
        );
        h.insert("x-ms-blob-type", HeaderValue::from_static("BlockBlob"));
        h.insert("content-length", HeaderValue::from_static("0"));
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        let sts = string_to_sign(
            &Method::PUT,
            "/c/dir%20x/b.txt",
            Some("timeout=30&restype=container"),
            &h,
            "acct",
            false,
        );
        let want = "PUT\n\n\n\n\ntext/plain\n\n\n\n\n\n\nx-ms-blob-type:BlockBlob\nx-ms-date:Sat, 28 Nov 2026 22:00:00 GMT\nx-ms-version:2026-04-06\n/acct/c/dir%20x/b.txt\nrestype:container\ntimeout:30";
        assert_eq!(sts, want);
    }

    fn now_date() -> HeaderValue {
        HeaderValue::from_str(
            &chrono::Utc::now()
                .format("%a, %d %b %Y %H:%M:%S GMT")
                .to_string(),
        )
        .unwrap()
    }

    #[test]
    fn stale_dates_are_refused() {
        let key = B64.encode([3u8; 64]);
        let mut h = HeaderMap::new();
        h.insert(
            "x-ms-date",
            HeaderValue::from_static("Sat, 28 Nov 2020 22:00:00 GMT"),
        );
        let sig = sign(
            &string_to_sign(&Method::GET, "/acct/c", None, &h, "acct", false),
            &key,
        );
        let auth = format!("SharedKey acct:{sig}");
        assert!(
            verify_shared_key(&auth, &Method::GET, "/acct/c", None, &h, "acct", &[&key]).is_err()
        );
        h.insert("x-ms-date", now_date());
        let sig = sign(
            &string_to_sign(&Method::GET, "/acct/c", None, &h, "acct", false),
            &key,
        );
        let auth = format!("SharedKey acct:{sig}");
        assert!(
            verify_shared_key(&auth, &Method::GET, "/acct/c", None, &h, "acct", &[&key]).is_ok()
        );
    }

    #[test]
    fn verifies_and_rejects() {
        let key = B64.encode([3u8; 64]);
        let other = B64.encode([4u8; 64]);
        let mut h = HeaderMap::new();
        h.insert("x-ms-date", now_date());
        h.insert("x-ms-meta-a-z", HeaderValue::from_static("1"));
        h.insert("x-ms-meta-ab", HeaderValue::from_static("2"));
        for word in [true, false] {
            let sig = sign(
                &string_to_sign(&Method::GET, "/acct/c", None, &h, "acct", word),
                &key,
            );
            let auth = format!("SharedKey acct:{sig}");
            assert!(verify_shared_key(
                &auth,
                &Method::GET,
                "/acct/c",
                None,
                &h,
                "acct",
                &[&other, &key]
            )
            .is_ok());
            assert!(
                verify_shared_key(&auth, &Method::GET, "/acct/c", None, &h, "acct", &[&other])
                    .is_err()
            );
            assert!(
                verify_shared_key(&auth, &Method::PUT, "/acct/c", None, &h, "acct", &[&key])
                    .is_err()
            );
            assert!(
                verify_shared_key(&auth, &Method::GET, "/acct/d", None, &h, "acct", &[&key])
                    .is_err()
            );
            assert!(
                verify_shared_key(&auth, &Method::GET, "/acct/c", None, &h, "other", &[&key])
                    .is_err()
            );
        }
    }
}
