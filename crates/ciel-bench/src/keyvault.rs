//! `ciel-bench keyvault`: the Key Vault benchmark of issue 4. In one run on one machine:
//!
//! 1. the raw crypto library's rates — RSA-2048 RS256 signing and RSA-OAEP (SHA-1) decryption of
//!    a 32-byte key with the `rsa` crate, the library the software custody backend uses, on 1 and
//!    2 threads; ring's RS256 signing for reference; and `SoftwareCustody` (unseal, parse, then
//!    operate) on one thread, to split the custody layer's share from the HTTP path's;
//! 2. the same operations through a running `ciel up`: a vault, an RSA-2048 key and a secret made
//!    through the API, then `sign` (RS256 over a 32-byte digest), `unwrapkey` (RSA-OAEP, of a
//!    ciphertext made here with the key's public part) and, for comparison, `encrypt` (a public
//!    operation: neither the private key nor an audit entry) at concurrency 1, 2 and 8, and Get
//!    Secret (audited) at 1 and 8, over keep-alive HTTPS connections for a fixed time each;
//! 3. the ratios API rate / raw rate at the same parallelism.
//!
//! It prints a Markdown table and one JSON line. `scripts/bench-keyvault` builds, starts the
//! server and runs it.

use crate::client::{Conn, Endpoint, Req};
use crate::crypto::{rate, CryptoResults, Row};
use crate::stats::{self, HttpRun, Stop};
use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD as B64URL};
use base64::Engine;
use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;

/// The data-plane api-versions today's SDKs send: keys, then secrets.
const KEYS_API: &str = "2025-07-01";
const SECRETS_API: &str = "2026-04-01";
/// Microsoft.KeyVault control plane (what the CLI and the management SDK send).
const VAULTS_API: &str = "2026-02-01";
/// Key Vault Administrator (data actions on keys, secrets and certificates).
const KV_ADMIN: &str = "00482a5a-887f-4fb3-b363-3b7fe8e74483";
/// The 32-byte data key that `unwrapkey` recovers and `encrypt` encrypts.
const CEK: [u8; 32] = *b"a data key of 32 bytes, no more!";
/// The secret's value (what Get Secret must answer).
const SECRET_VALUE: &str = "ciel-bench: a secret value of a typical size, e.g. a connection string; AccountKey=0123456789abcdef";

#[derive(clap::Args)]
pub struct KvArgs {
    /// The `ciel.env` written by `ciel up` (lines `export NAME='value'`).
    #[arg(long)]
    env: PathBuf,
    /// Process id of the server (same machine): its CPU time per request is reported.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Seconds per API measurement (each operation at each concurrency).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Seconds per raw crypto measurement.
    #[arg(long, default_value_t = 2.0)]
    raw_seconds: f64,
}

fn b64u_decode(s: &str) -> Option<Vec<u8>> {
    B64URL
        .decode(s.trim_end_matches('='))
        .or_else(|_| URL_SAFE.decode(s))
        .ok()
}

/// The `value` member of a key operation's answer, decoded.
fn value_of(body: &[u8]) -> Option<Vec<u8>> {
    let v: Value = serde_json::from_slice(body).ok()?;
    b64u_decode(v.get("value")?.as_str()?)
}

fn is_signature(s: StatusCode, body: &[u8]) -> bool {
    s == StatusCode::OK && value_of(body).is_some_and(|v| v.len() == 256)
}

fn is_cek(s: StatusCode, body: &[u8]) -> bool {
    s == StatusCode::OK && value_of(body).is_some_and(|v| v[..] == CEK[..])
}

fn is_ciphertext(s: StatusCode, body: &[u8]) -> bool {
    s == StatusCode::OK && value_of(body).is_some_and(|v| v.len() == 256)
}

fn is_secret(s: StatusCode, body: &[u8]) -> bool {
    s == StatusCode::OK
        && serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| {
                v.get("value")
                    .and_then(|x| x.as_str())
                    .map(|x| x == SECRET_VALUE)
            })
            .unwrap_or(false)
}

fn any(_: StatusCode, _: &[u8]) -> bool {
    true
}

/// One setup call; returns the status and the parsed JSON body (Null when empty or not JSON).
async fn call(
    conn: &mut Conn,
    method: Method,
    path: String,
    bearer: Option<Arc<str>>,
    body: Option<Value>,
    content_type: &'static str,
    raw_body: Option<String>,
) -> Result<(StatusCode, Value)> {
    let b = match (body, raw_body) {
        (Some(v), _) => Bytes::from(serde_json::to_vec(&v)?),
        (None, Some(s)) => Bytes::from(s),
        (None, None) => Bytes::new(),
    };
    let r = Req {
        method,
        path,
        content_type: if b.is_empty() {
            None
        } else {
            Some(content_type)
        },
        bearer,
        body: b,
        check: any,
    };
    let (st, body) = conn.send(&r).await?;
    let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
    Ok((st, v))
}

async fn token(
    conn: &mut Conn,
    path: &str,
    client_id: &str,
    secret: &str,
    scope: &str,
) -> Result<Arc<str>> {
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "client_credentials")
        .append_pair("client_id", client_id)
        .append_pair("client_secret", secret)
        .append_pair("scope", scope)
        .finish();
    let (st, v) = call(
        conn,
        Method::POST,
        path.to_string(),
        None,
        None,
        "application/x-www-form-urlencoded",
        Some(form),
    )
    .await?;
    match v.get("access_token").and_then(Value::as_str) {
        Some(t) if st == StatusCode::OK => Ok(Arc::from(t)),
        _ => bail!("no token for {scope}: {st} {v}"),
    }
}

/// The `oid` claim of an access token (the admin service principal's object id).
fn oid_of(token: &str) -> Result<String> {
    let payload = token
        .split('.')
        .nth(1)
        .and_then(b64u_decode)
        .ok_or_else(|| anyhow!("the token is not a JWT"))?;
    let v: Value = serde_json::from_slice(&payload)?;
    v.get("oid")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| anyhow!("the token has no oid"))
}

/// Raw rates: `rsa` (the software backend's library) sign and OAEP decrypt on 1 and 2 threads,
/// ring's RS256 for reference, and `SoftwareCustody` on one thread.
fn raw_rates(secs: f64) -> Result<CryptoResults> {
    use ciel_keyvault::custody::{Custody, EncAlg, KeySpec, SignAlg, SoftwareCustody};
    use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::{Oaep, Pkcs1v15Sign};
    use sha2::Digest;

    eprintln!("ciel-bench: generating RSA-2048 keys (raw library and custody)");
    let raw = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).map_err(|e| anyhow!("{e}"))?;
    let raw_pub = raw.to_public_key();
    let der = raw.to_pkcs1_der().map_err(|e| anyhow!("{e}"))?;
    let pair =
        RsaKeyPair::from_der(der.as_bytes()).map_err(|e| anyhow!("ring rejected the key: {e}"))?;
    let ring_rng = ring::rand::SystemRandom::new();
    let digest = sha2::Sha256::digest(b"ciel-bench keyvault: the bytes a JWS covers").to_vec();
    let ct = raw_pub
        .encrypt(&mut rand::rngs::OsRng, Oaep::new::<sha1::Sha1>(), &CEK)
        .map_err(|e| anyhow!("{e}"))?;

    let master = ciel_core::seal::MasterKey::from_bytes(
        &ciel_core::seal::MasterKey::generate_bytes().map_err(|e| anyhow!("{e}"))?,
    )
    .map_err(|e| anyhow!("{e}"))?;
    let custody = SoftwareCustody::new(Arc::new(master));
    let vault_key = ciel_core::seal::MasterKey::generate_bytes().map_err(|e| anyhow!("{e}"))?;
    let (material, public) = custody
        .generate(&vault_key, "bench/key/1", KeySpec::Rsa { bits: 2048 })
        .map_err(|e| anyhow!("{e}"))?;
    let ct_custody = ciel_keyvault::custody::encrypt(&public, EncAlg::RsaOaep, &CEK)
        .map_err(|e| anyhow!("{e}"))?;

    let mut rows = Vec::new();
    let mut push = |key, label, threads, (ops, r, other): (u64, f64, Option<f64>)| {
        rows.push(Row {
            key,
            label,
            threads,
            ops,
            rate: r,
            other_cores: other,
        })
    };
    for t in [1usize, 2] {
        eprintln!("ciel-bench: rsa RS256 sign, {t} thread(s), {secs} s");
        push(
            "rsa_sign",
            "`rsa` RS256 sign (PKCS#1 v1.5 over a SHA-256 digest, blinded; key parsed once)",
            t,
            rate(t, secs, || {
                raw.sign_with_rng(
                    &mut rand::rngs::OsRng,
                    Pkcs1v15Sign::new::<sha2::Sha256>(),
                    &digest,
                )
                .map(|_| ())
                .map_err(|e| anyhow!("{e}"))
            })?,
        );
    }
    for t in [1usize, 2] {
        eprintln!("ciel-bench: rsa RSA-OAEP decrypt, {t} thread(s), {secs} s");
        push(
            "rsa_unwrap",
            "`rsa` RSA-OAEP (SHA-1) decrypt of a 32-byte key, blinded",
            t,
            rate(t, secs, || {
                raw.decrypt_blinded(&mut rand::rngs::OsRng, Oaep::new::<sha1::Sha1>(), &ct)
                    .map(|_| ())
                    .map_err(|e| anyhow!("{e}"))
            })?,
        );
    }
    for t in [1usize, 2] {
        eprintln!("ciel-bench: ring RS256 sign, {t} thread(s), {secs} s");
        push(
            "ring_sign",
            "ring `RsaKeyPair::sign` RS256 (reference; hashes a 32-byte message)",
            t,
            rate(t, secs, || {
                let mut sig = vec![0u8; pair.public().modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &ring_rng, &digest, &mut sig)
                    .map_err(|_| anyhow!("ring sign failed"))
            })?,
        );
    }
    eprintln!("ciel-bench: SoftwareCustody::sign_labelled RS256, 1 thread, {secs} s");
    push(
        "custody_sign",
        "`SoftwareCustody::sign_labelled` RS256 (open sealed PKCS#8, parse, sign)",
        1,
        rate(1, secs, || {
            custody
                .sign_labelled(
                    &vault_key,
                    "bench/key/1",
                    &material,
                    SignAlg::RS256,
                    &digest,
                )
                .map(|_| ())
                .map_err(|e| anyhow!("{e}"))
        })?,
    );
    eprintln!("ciel-bench: SoftwareCustody::decrypt_labelled RSA-OAEP, 1 thread, {secs} s");
    push(
        "custody_unwrap",
        "`SoftwareCustody::decrypt_labelled` RSA-OAEP (open, parse, decrypt)",
        1,
        rate(1, secs, || {
            custody
                .decrypt_labelled(
                    &vault_key,
                    "bench/key/1",
                    &material,
                    EncAlg::RsaOaep,
                    &ct_custody,
                )
                .map(|_| ())
                .map_err(|e| anyhow!("{e}"))
        })?,
    );
    Ok(CryptoResults { rows })
}

/// What the API runs need: the vault endpoint, its token, the key's versioned path and its
/// public part, the secret's path.
struct Setup {
    vault: Endpoint,
    vault_uri: String,
    bearer: Arc<str>,
    key_path: String,
    secret_path: String,
    public: rsa::RsaPublicKey,
}

async fn setup(
    env: &std::collections::HashMap<String, String>,
    tls: &tokio_rustls::TlsConnector,
) -> Result<Setup> {
    let get = |k: &str| -> Result<String> {
        env.get(k)
            .cloned()
            .with_context(|| format!("{k} missing from the env file"))
    };
    let (tenant, sub) = (get("AZURE_TENANT_ID")?, get("AZURE_SUBSCRIPTION_ID")?);
    let (client_id, secret) = (get("AZURE_CLIENT_ID")?, get("AZURE_CLIENT_SECRET")?);
    let (login, login_base) = Endpoint::parse(&get("AZURE_AUTHORITY_HOST")?).await?;
    let arm_url = get("CIEL_ARM_ENDPOINT")?;
    let (arm, arm_base) = Endpoint::parse(&arm_url).await?;
    let arm_base = format!("{}/", arm_base.trim_end_matches('/'));
    let token_path = format!(
        "{}/{tenant}/oauth2/v2.0/token",
        login_base.trim_end_matches('/')
    );
    let mut lc = Conn::open(&login, tls).await?;
    let arm_token = token(
        &mut lc,
        &token_path,
        &client_id,
        &secret,
        &format!("{}/.default", arm_url.trim_end_matches('/')),
    )
    .await?;

    let mut ac = Conn::open(&arm, tls).await?;
    let rg = format!(
        "kvbench-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let (st, v) = call(
        &mut ac,
        Method::PUT,
        format!("{arm_base}subscriptions/{sub}/resourcegroups/{rg}?api-version=2024-11-01"),
        Some(arm_token.clone()),
        Some(json!({"location": "francecentral"})),
        "application/json",
        None,
    )
    .await?;
    if !st.is_success() {
        bail!("resource group {rg}: {st} {v}");
    }
    let name = format!("kvb{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    eprintln!("ciel-bench: creating vault {name} in {rg}");
    let (st, v) = call(
        &mut ac,
        Method::PUT,
        format!(
            "{arm_base}subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/{name}?api-version={VAULTS_API}"
        ),
        Some(arm_token.clone()),
        Some(json!({"location": "francecentral", "properties": {
            "tenantId": tenant, "sku": {"family": "A", "name": "standard"}}})),
        "application/json",
        None,
    )
    .await?;
    if !st.is_success() {
        bail!("vault {name}: {st} {v}");
    }
    let vault_id = v["id"]
        .as_str()
        .ok_or_else(|| anyhow!("the vault has no id: {v}"))?
        .to_string();
    let vault_uri = v["properties"]["vaultUri"]
        .as_str()
        .ok_or_else(|| anyhow!("the vault has no vaultUri: {v}"))?
        .to_string();

    let oid = oid_of(&arm_token)?;
    let (st, v) = call(
        &mut ac,
        Method::PUT,
        format!(
            "{vault_id}/providers/Microsoft.Authorization/roleAssignments/{}?api-version=2022-04-01",
            uuid::Uuid::new_v4()
        ),
        Some(arm_token.clone()),
        Some(json!({"properties": {
            "roleDefinitionId": format!("/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{KV_ADMIN}"),
            "principalId": oid, "principalType": "ServicePrincipal"}})),
        "application/json",
        None,
    )
    .await?;
    if !st.is_success() {
        bail!("role assignment: {st} {v}");
    }

    // The vault audience: the bare vault domain, with its port unless 443.
    let suffix = get("CIEL_KEYVAULT_SUFFIX")?;
    let bearer = token(
        &mut lc,
        &token_path,
        &client_id,
        &secret,
        &format!("https://{suffix}/.default"),
    )
    .await?;

    let (vault, base) = Endpoint::parse(&vault_uri).await?;
    let base = base.trim_end_matches('/').to_string();
    let mut vc = Conn::open(&vault, tls).await?;
    eprintln!("ciel-bench: creating an RSA-2048 key and a secret in {vault_uri}");
    let (st, v) = call(
        &mut vc,
        Method::POST,
        format!("{base}/keys/bench-rsa/create?api-version={KEYS_API}"),
        Some(bearer.clone()),
        Some(json!({"kty": "RSA", "key_size": 2048})),
        "application/json",
        None,
    )
    .await?;
    if st != StatusCode::OK {
        bail!("create key: {st} {v}");
    }
    let kid = v["key"]["kid"]
        .as_str()
        .ok_or_else(|| anyhow!("no kid: {v}"))?;
    let version = kid
        .rsplit('/')
        .next()
        .ok_or_else(|| anyhow!("bad kid {kid}"))?
        .to_string();
    let part = |k: &str| -> Result<rsa::BigUint> {
        let b = v["key"][k]
            .as_str()
            .and_then(b64u_decode)
            .ok_or_else(|| anyhow!("no {k} in the key"))?;
        Ok(rsa::BigUint::from_bytes_be(&b))
    };
    let public = rsa::RsaPublicKey::new(part("n")?, part("e")?).map_err(|e| anyhow!("{e}"))?;
    let (st, v) = call(
        &mut vc,
        Method::PUT,
        format!("{base}/secrets/bench-secret?api-version={SECRETS_API}"),
        Some(bearer.clone()),
        Some(json!({"value": SECRET_VALUE})),
        "application/json",
        None,
    )
    .await?;
    if st != StatusCode::OK {
        bail!("set secret: {st} {v}");
    }
    Ok(Setup {
        vault,
        vault_uri,
        bearer,
        key_path: format!("{base}/keys/bench-rsa/{version}"),
        secret_path: format!("{base}/secrets/bench-secret?api-version={SECRETS_API}"),
        public,
    })
}

async fn api_runs(s: &Setup, tls: &tokio_rustls::TlsConnector, secs: f64) -> Result<Vec<HttpRun>> {
    use rsa::{Oaep, Pkcs1v15Sign};
    use sha2::Digest;

    let digest = sha2::Sha256::digest(b"ciel-bench keyvault: the bytes a JWS covers").to_vec();
    let ct = s
        .public
        .encrypt(&mut rand::rngs::OsRng, Oaep::new::<sha1::Sha1>(), &CEK)
        .map_err(|e| anyhow!("{e}"))?;
    let post = |op: &str, body: Value, check: fn(StatusCode, &[u8]) -> bool| Req {
        method: Method::POST,
        path: format!("{}/{op}?api-version={KEYS_API}", s.key_path),
        content_type: Some("application/json"),
        bearer: Some(s.bearer.clone()),
        body: Bytes::from(body.to_string()),
        check,
    };
    let sign = post(
        "sign",
        json!({"alg": "RS256", "value": B64URL.encode(&digest)}),
        is_signature,
    );
    let unwrap = post(
        "unwrapkey",
        json!({"alg": "RSA-OAEP", "value": B64URL.encode(&ct)}),
        is_cek,
    );
    let encrypt = post(
        "encrypt",
        json!({"alg": "RSA-OAEP", "value": B64URL.encode(CEK)}),
        is_ciphertext,
    );
    let secret = Req {
        method: Method::GET,
        path: s.secret_path.clone(),
        content_type: None,
        bearer: Some(s.bearer.clone()),
        body: Bytes::new(),
        check: is_secret,
    };

    // Sanity: the API's signature verifies with the key's public part; unwrap gives the key back.
    let mut c = Conn::open(&s.vault, tls).await?;
    let (st, body) = c.send(&sign).await?;
    let sig = value_of(&body)
        .filter(|_| st == StatusCode::OK)
        .ok_or_else(|| anyhow!("sign: {st} {}", String::from_utf8_lossy(&body)))?;
    s.public
        .verify(Pkcs1v15Sign::new::<sha2::Sha256>(), &digest, &sig)
        .map_err(|e| anyhow!("the API's RS256 signature does not verify: {e}"))?;
    let (st, body) = c.send(&unwrap).await?;
    if !is_cek(st, &body) {
        bail!(
            "unwrapkey did not give the key back: {st} {}",
            String::from_utf8_lossy(&body)
        );
    }
    let (st, body) = c.send(&secret).await?;
    if !is_secret(st, &body) {
        bail!("get secret: {st} {}", String::from_utf8_lossy(&body));
    }
    drop(c);

    let mut runs = Vec::new();
    let plan: [(&str, &'static str, &Req, &[usize]); 4] = [
        ("key sign RS256 (audited)", "kv_sign", &sign, &[1, 2, 8]),
        (
            "key unwrapKey RSA-OAEP (audited)",
            "kv_unwrap",
            &unwrap,
            &[1, 2, 8],
        ),
        (
            "key encrypt RSA-OAEP (public; not audited)",
            "kv_encrypt",
            &encrypt,
            &[1, 2, 8],
        ),
        ("secret get (audited)", "kv_secret_get", &secret, &[1, 8]),
    ];
    for (label, key, req, concs) in plan {
        for &c in concs {
            eprintln!("ciel-bench: {label}, {c} connection(s), {secs} s");
            let r = req.clone();
            runs.push(
                stats::drive(
                    label,
                    key,
                    &s.vault,
                    tls,
                    c,
                    Stop::Secs(secs),
                    true,
                    move |_| r.clone(),
                )
                .await?,
            );
        }
    }
    Ok(runs)
}

/// API rate at concurrency `c` for `key`.
fn api_rate(runs: &[HttpRun], key: &str, c: usize) -> Option<f64> {
    runs.iter()
        .find(|r| r.key == key && r.concurrency == c)
        .map(|r| r.rate)
}

/// Raw rate of `key` on `threads` threads.
fn raw_rate(raw: &CryptoResults, key: &str, threads: usize) -> Option<f64> {
    raw.rows
        .iter()
        .find(|r| r.key == key && r.threads == threads)
        .map(|r| r.rate)
}

/// (operation, API key, API concurrency, raw key, raw threads, API rate, raw rate, ratio)
type Ratio = (
    &'static str,
    &'static str,
    usize,
    &'static str,
    usize,
    f64,
    f64,
    f64,
);

fn ratios(raw: &CryptoResults, runs: &[HttpRun]) -> Vec<Ratio> {
    let mut out = Vec::new();
    for (op, api, rawk) in [
        ("sign", "kv_sign", "rsa_sign"),
        ("unwrapKey", "kv_unwrap", "rsa_unwrap"),
        ("sign vs ring", "kv_sign", "ring_sign"),
    ] {
        for (c, t) in [(1usize, 1usize), (2, 2), (8, 2)] {
            if rawk == "ring_sign" && c != 2 {
                continue;
            }
            if let (Some(a), Some(r)) = (api_rate(runs, api, c), raw_rate(raw, rawk, t)) {
                out.push((op, api, c, rawk, t, a, r, a / r.max(1e-9)));
            }
        }
    }
    out
}

fn render(raw: &CryptoResults, runs: &[HttpRun], ratios: &[Ratio], args: &KvArgs) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let other = |x: Option<f64>| x.map(|v| format!("{v:.2}")).unwrap_or_else(|| "–".into());
    let ms = |us: f64| format!("{:.2}", us / 1000.0);
    let cpu = |x: Option<f64>| x.map(|v| format!("{v:.0}")).unwrap_or_else(|| "–".into());
    let _ = writeln!(s, "\n## ciel-bench keyvault results\n");
    let _ = writeln!(
        s,
        "Raw runs {} s each, API runs {} s each.\n",
        args.raw_seconds, args.seconds
    );
    let _ = writeln!(s, "### RSA-2048 in process (no server)\n");
    let _ = writeln!(
        s,
        "| Operation | Threads | Ops/s | µs/op per thread | Other load (cores) |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|");
    for r in &raw.rows {
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} | {:.0} | {} |",
            r.label,
            r.threads,
            r.rate,
            r.threads as f64 * 1e6 / r.rate.max(1e-9),
            other(r.other_cores)
        );
    }
    let _ = writeln!(
        s,
        "\n### Through the data plane (HTTPS, HTTP/1.1 keep-alive, client on the same machine)\n"
    );
    let _ = writeln!(s, "| Measurement | Conc. | Requests | Rate (/s) | p50 ms | p99 ms | max ms | Errors | Server CPU µs/req | Client CPU µs/req | Other load (cores) |");
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in runs {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} |",
            r.label,
            r.concurrency,
            r.ok + r.errors,
            r.rate,
            ms(r.p50_us),
            ms(r.p99_us),
            ms(r.max_us),
            r.errors,
            cpu(r.server_cpu_us),
            cpu(r.client_cpu_us),
            other(r.other_cores)
        );
    }
    let _ = writeln!(s, "\n### API rate / raw library rate\n");
    let _ = writeln!(
        s,
        "| Operation | API conc. | API /s | Raw | Raw threads | Raw /s | API ÷ raw |"
    );
    let _ = writeln!(s, "|---|---:|---:|---|---:|---:|---:|");
    for (op, _, c, rawk, t, a, r, q) in ratios {
        let _ = writeln!(
            s,
            "| {op} | {c} | {a:.0} | `{rawk}` | {t} | {r:.0} | {:.0}% |",
            q * 100.0
        );
    }
    let disturbed = raw
        .rows
        .iter()
        .map(|r| r.other_cores)
        .chain(runs.iter().map(|r| r.other_cores))
        .flatten()
        .fold(0.0, f64::max);
    let _ = writeln!(
        s,
        "\n\"Other load\" is the CPU (in cores) that other processes used during a run; {}",
        if disturbed > 0.15 {
            format!("up to {disturbed:.2} here, so some figures are low: rerun on a quiet machine.")
        } else {
            "near 0 here: the run had the machine to itself.".to_string()
        }
    );
    let fair = ratios
        .iter()
        .find(|r| r.1 == "kv_sign" && r.2 == 2 && r.3 == "rsa_sign");
    if let Some((_, _, _, _, _, a, r, q)) = fair {
        let _ = writeln!(
            s,
            "\nTarget (issue 4): API sign rate >= 70% of the raw library's. At C=2 against 2 threads: {a:.0}/s against {r:.0}/s = {:.0}% ({}).",
            q * 100.0,
            if *q >= 0.7 { "met" } else { "missed" }
        );
    }
    s
}

pub fn run(args: KvArgs) -> Result<u64> {
    if args.seconds <= 0.0 || args.raw_seconds <= 0.0 {
        bail!("--seconds and --raw-seconds must be positive");
    }
    if let Some(p) = args.server_pid {
        let _ = stats::SERVER_PID.set(p);
    }
    let env = crate::read_env(&args.env)?;
    let tls = crate::client::tls_connector(std::path::Path::new(
        env.get("SSL_CERT_FILE")
            .context("SSL_CERT_FILE missing from the env file")?,
    ))?;
    let rt = crate::runtime()?;
    // Setup first (key generation on the server is not measured), then the raw rates while the
    // server idles, then the API.
    let s = rt.block_on(setup(&env, &tls))?;
    let raw = raw_rates(args.raw_seconds)?;
    let runs = rt.block_on(api_runs(&s, &tls, args.seconds))?;
    let q = ratios(&raw, &runs);
    println!("{}", render(&raw, &runs, &q, &args));
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let j = json!({
        "bench": "keyvault",
        "machine": {"nproc": nproc, "cpu": crate::cpu_model()},
        "params": {"seconds": args.seconds, "raw_seconds": args.raw_seconds, "vault": s.vault_uri},
        "raw": raw.to_json(),
        "http": runs.iter().map(HttpRun::to_json).collect::<Vec<_>>(),
        "ratios": q.iter().map(|(op, api, c, rawk, t, a, r, x)| json!({
            "op": op, "api": api, "concurrency": c, "raw": rawk, "threads": t,
            "api_per_s": (a * 10.0).round() / 10.0, "raw_per_s": (r * 10.0).round() / 10.0,
            "ratio": (x * 1000.0).round() / 1000.0})).collect::<Vec<_>>(),
    });
    println!("{}", serde_json::to_string(&j)?);
    Ok(runs.iter().map(|r| r.errors).sum())
}
