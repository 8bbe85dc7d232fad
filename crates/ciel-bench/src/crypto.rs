//! The crypto bound: RS256 (RSA-2048, PKCS#1 v1.5, SHA-256) signing and verification rates,
//! with ring directly and through `jsonwebtoken` as Ciel's key ring uses it.

use anyhow::{anyhow, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use ciel_identity::token::AccessClaims;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::json;
use std::time::{Duration, Instant};

pub struct Row {
    pub key: &'static str,
    pub label: &'static str,
    pub threads: usize,
    pub ops: u64,
    pub rate: f64,
    /// Cores' worth of CPU that other processes used meanwhile.
    pub other_cores: Option<f64>,
}

pub struct CryptoResults {
    pub rows: Vec<Row>,
}

impl CryptoResults {
    /// The highest rate among rows with this key, and its thread count.
    pub fn best(&self, key: &str) -> (f64, usize) {
        self.rows
            .iter()
            .filter(|r| r.key == key)
            .map(|r| (r.rate, r.threads))
            .fold((0.0, 0), |a, b| if b.0 > a.0 { b } else { a })
    }
    pub fn to_json(&self) -> serde_json::Value {
        json!(self
            .rows
            .iter()
            .map(|r| json!({"key": r.key, "label": r.label, "threads": r.threads, "ops": r.ops, "ops_per_s": (r.rate * 10.0).round() / 10.0,
                "other_cores": r.other_cores.map(|x| (x * 100.0).round() / 100.0)}))
            .collect::<Vec<_>>())
    }
}

/// An access token's claims as Ciel issues them to a service principal for Resource Manager.
pub fn sample_claims(aud: &str, iss: &str, tenant: &str, client_id: &str) -> AccessClaims {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let oid = uuid::Uuid::new_v4().to_string();
    AccessClaims {
        aud: aud.to_string(),
        iss: iss.to_string(),
        iat: now,
        nbf: now,
        exp: now + 3600,
        tid: tenant.to_string(),
        oid: oid.clone(),
        sub: oid,
        appid: client_id.to_string(),
        azp: client_id.to_string(),
        idtyp: "app".into(),
        ver: "2.0".into(),
        uti: B64URL.encode(uuid::Uuid::new_v4().as_bytes()),
        upn: None,
        unique_name: None,
        name: Some("ciel-admin".into()),
        scp: None,
        amr: None,
    }
}

/// Runs `f` on `threads` threads for `secs` seconds (after a short warm-up); returns (ops, ops/s,
/// cores' worth of CPU used by other processes meanwhile).
fn rate<F: Fn() -> Result<()> + Sync>(
    threads: usize,
    secs: f64,
    f: F,
) -> Result<(u64, f64, Option<f64>)> {
    rate_cpu(threads, secs, f).map(|(ops, r, other, _)| (ops, r, other))
}

/// `rate`, plus this process's CPU seconds during the timed part (all threads): CPU time per
/// operation depends much less on other load than the wall-clock rate does.
pub(crate) fn rate_cpu<F: Fn() -> Result<()> + Sync>(
    threads: usize,
    secs: f64,
    f: F,
) -> Result<(u64, f64, Option<f64>, Option<f64>)> {
    for _ in 0..20 {
        f()?;
    }
    let dur = Duration::from_secs_f64(secs);
    let (self0, busy0) = (
        crate::stats::cpu_secs("self"),
        crate::stats::machine_busy_secs(),
    );
    let start = Instant::now();
    let results: Vec<Result<(u64, Instant)>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let deadline = Instant::now() + dur;
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        f()?;
                        n += 1;
                    }
                    Ok((n, Instant::now()))
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("benchmark thread panicked")))
            })
            .collect()
    });
    let mut total = 0;
    let mut end = start;
    for r in results {
        let (n, e) = r?;
        total += n;
        end = end.max(e);
    }
    let elapsed = (end - start).as_secs_f64();
    let ours = match (self0, crate::stats::cpu_secs("self")) {
        (Some(a), Some(b)) => b - a,
        _ => 0.0,
    };
    let other =
        crate::stats::other_cores((busy0, crate::stats::machine_busy_secs()), ours, elapsed);
    let cpu = self0.is_some().then_some(ours);
    Ok((total, total as f64 / elapsed, other, cpu))
}

pub fn run_all(claims: &AccessClaims, aud: &str, secs: f64) -> Result<CryptoResults> {
    eprintln!("ciel-bench: generating an RSA-2048 key");
    let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).map_err(|e| anyhow!("{e}"))?;
    let der = key
        .to_pkcs1_der()
        .map_err(|e| anyhow!("{e}"))?
        .as_bytes()
        .to_vec();
    let n_b64 = B64URL.encode(key.n().to_bytes_be());
    let e_b64 = B64URL.encode(key.e().to_bytes_be());
    let pair = RsaKeyPair::from_der(&der).map_err(|e| anyhow!("ring rejected the key: {e}"))?;
    let rng = ring::rand::SystemRandom::new();

    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("bench-kid".into());
    header.typ = Some("JWT".into());
    let enc = EncodingKey::from_rsa_der(&der);
    let token = jsonwebtoken::encode(&header, claims, &enc)?;
    // The bytes a JWT signature covers: base64url(header) "." base64url(claims).
    let signing_input = token
        .rsplit_once('.')
        .map(|(a, _)| a.as_bytes().to_vec())
        .unwrap_or_default();

    let mut rows = Vec::new();
    let threads = [1usize, 2];

    for t in threads {
        eprintln!("ciel-bench: ring RsaKeyPair::sign, {t} thread(s), {secs} s");
        let (ops, r, other) = rate(t, secs, || {
            let mut sig = vec![0u8; pair.public().modulus_len()];
            pair.sign(&RSA_PKCS1_SHA256, &rng, &signing_input, &mut sig)
                .map_err(|_| anyhow!("sign failed"))
        })?;
        rows.push(Row {
            key: "ring_sign",
            label: "ring `RsaKeyPair::sign` (key parsed once)",
            threads: t,
            ops,
            rate: r,
            other_cores: other,
        });
    }
    eprintln!("ciel-bench: ring RsaKeyPair::from_der + sign, 1 thread, {secs} s");
    let (ops, r, other) = rate(1, secs, || {
        let p = RsaKeyPair::from_der(&der).map_err(|_| anyhow!("from_der failed"))?;
        let mut sig = vec![0u8; p.public().modulus_len()];
        p.sign(&RSA_PKCS1_SHA256, &rng, &signing_input, &mut sig)
            .map_err(|_| anyhow!("sign failed"))
    })?;
    rows.push(Row {
        key: "ring_parse_sign",
        label: "ring `from_der` + `sign` (key parsed every time)",
        threads: 1,
        ops,
        rate: r,
        other_cores: other,
    });
    for t in threads {
        eprintln!("ciel-bench: jsonwebtoken::encode, {t} thread(s), {secs} s");
        let (ops, r, other) = rate(t, secs, || {
            jsonwebtoken::encode(&header, claims, &enc)
                .map(|_| ())
                .map_err(Into::into)
        })?;
        rows.push(Row {
            key: "jwt_encode",
            label: "`jsonwebtoken::encode` (Ciel's path)",
            threads: t,
            ops,
            rate: r,
            other_cores: other,
        });
    }

    let dec = DecodingKey::from_rsa_components(&n_b64, &e_b64)?;
    let mut v = Validation::new(Algorithm::RS256);
    v.leeway = 300;
    v.validate_nbf = true;
    v.set_required_spec_claims(&["exp", "nbf", "aud", "iss"]);
    v.set_audience(&[aud.trim_end_matches('/').to_string(), aud.to_string()]);
    jsonwebtoken::decode::<AccessClaims>(&token, &dec, &v)?;
    eprintln!("ciel-bench: jsonwebtoken::decode (verify), 1 thread, {secs} s");
    let (ops, r, other) = rate(1, secs, || {
        jsonwebtoken::decode::<AccessClaims>(&token, &dec, &v)
            .map(|_| ())
            .map_err(Into::into)
    })?;
    rows.push(Row {
        key: "jwt_verify",
        label: "`jsonwebtoken::decode` verify (public n, e)",
        threads: 1,
        ops,
        rate: r,
        other_cores: other,
    });
    Ok(CryptoResults { rows })
}

/// `ciel-bench custody`: the target is an API sign rate of at least 70% of the raw
/// library's. This measures the custody layer's share of it: the raw `rsa` crate (the library
/// the software backend uses; blinded, as the backend signs) against `SoftwareCustody`, which
/// also opens the sealed PKCS#8 (AES-256-GCM) and parses it on every call.
pub fn custody_bench(secs: f64) -> Result<()> {
    use ciel_keyvault::custody::{Custody, EncAlg, KeySpec, SignAlg, SoftwareCustody};
    use rsa::{Oaep, Pkcs1v15Sign};
    use sha2::Digest;
    use std::sync::Arc;

    let master = ciel_core::seal::MasterKey::from_bytes(
        &ciel_core::seal::MasterKey::generate_bytes().map_err(|e| anyhow!("{e}"))?,
    )
    .map_err(|e| anyhow!("{e}"))?;
    let custody = SoftwareCustody::new(Arc::new(master));
    let vault_key = ciel_core::seal::MasterKey::generate_bytes().map_err(|e| anyhow!("{e}"))?;
    eprintln!("ciel-bench: generating an RSA-2048 key in custody");
    let (m, public) = custody
        .generate(&vault_key, "bench/key/1", KeySpec::Rsa { bits: 2048 })
        .map_err(|e| anyhow!("{e}"))?;
    // The same key for the raw library: imported from custody's own generation would need the
    // private parts, so generate a raw key of the same size (RSA cost depends on size only).
    let raw = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).map_err(|e| anyhow!("{e}"))?;
    let raw_pub = raw.to_public_key();
    let digest = sha2::Sha256::digest(b"the bytes a JWS covers").to_vec();
    let cek = [0x5au8; 32];
    let ct_raw = raw_pub
        .encrypt(&mut rand::rngs::OsRng, Oaep::new::<sha1::Sha1>(), &cek)
        .map_err(|e| anyhow!("{e}"))?;
    let ct_custody = ciel_keyvault::custody::encrypt(&public, EncAlg::RsaOaep, &cek)
        .map_err(|e| anyhow!("{e}"))?;

    let mut rows = Vec::new();
    let mut push = |key, label, (ops, r, other): (u64, f64, Option<f64>)| {
        rows.push(Row {
            key,
            label,
            threads: 1,
            ops,
            rate: r,
            other_cores: other,
        })
    };
    eprintln!("ciel-bench: rsa RS256 sign, {secs} s");
    push(
        "rsa_sign",
        "`rsa` RS256 sign (PKCS#1 v1.5, blinded; key parsed once)",
        rate(1, secs, || {
            raw.sign_with_rng(
                &mut rand::rngs::OsRng,
                Pkcs1v15Sign::new::<sha2::Sha256>(),
                &digest,
            )
            .map(|_| ())
            .map_err(|e| anyhow!("{e}"))
        })?,
    );
    eprintln!("ciel-bench: SoftwareCustody::sign RS256, {secs} s");
    push(
        "custody_sign",
        "`SoftwareCustody::sign` RS256 (unseal + parse + sign)",
        rate(1, secs, || {
            custody
                .sign(&vault_key, &m, SignAlg::RS256, &digest)
                .map(|_| ())
                .map_err(|e| anyhow!("{e}"))
        })?,
    );
    eprintln!("ciel-bench: rsa RSA-OAEP decrypt, {secs} s");
    push(
        "rsa_unwrap",
        "`rsa` RSA-OAEP (SHA-1) decrypt, blinded",
        rate(1, secs, || {
            raw.decrypt_blinded(&mut rand::rngs::OsRng, Oaep::new::<sha1::Sha1>(), &ct_raw)
                .map(|_| ())
                .map_err(|e| anyhow!("{e}"))
        })?,
    );
    eprintln!("ciel-bench: SoftwareCustody::decrypt RSA-OAEP, {secs} s");
    push(
        "custody_unwrap",
        "`SoftwareCustody::decrypt` RSA-OAEP (unseal + parse + decrypt)",
        rate(1, secs, || {
            custody
                .decrypt(&vault_key, &m, EncAlg::RsaOaep, &ct_custody)
                .map(|_| ())
                .map_err(|e| anyhow!("{e}"))
        })?,
    );
    let results = CryptoResults { rows };
    println!("| operation | ops/s (1 thread) |\n|---|---:|");
    for r in &results.rows {
        println!("| {} | {:.0} |", r.label, r.rate);
    }
    let ratio = |a: &str, b: &str| results.best(a).0 / results.best(b).0.max(1e-9);
    let (sign_ratio, unwrap_ratio) = (
        ratio("custody_sign", "rsa_sign"),
        ratio("custody_unwrap", "rsa_unwrap"),
    );
    println!(
        "\ncustody/raw: sign {:.0}%, unwrap {:.0}% (target: API sign rate >= 70% of the raw library's)",
        sign_ratio * 100.0,
        unwrap_ratio * 100.0
    );
    println!(
        "{}",
        json!({"bench": "custody", "seconds": secs, "rows": results.to_json(),
               "custody_over_raw": {"sign": sign_ratio, "unwrap": unwrap_ratio}})
    );
    Ok(())
}
