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
//! 3. the ratios API rate / raw rate at the same parallelism, and raw CPU per operation / API CPU
//!    per request (server and client), which depends less on other load on a shared machine.
//!
//! Each raw `rsa` rate is measured just before the API runs it is compared with. It prints
//! Markdown tables and one JSON line. `scripts/bench-keyvault` builds, starts the server and runs
//! it; docs/PERFORMANCE.md (Key Vault) reads the results.

use crate::client::{Conn, Endpoint, Req};
use crate::crypto::rate_cpu;
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
/// What the 32-byte digest signed (by the API and by the raw library) is the SHA-256 of.
const DIGEST_INPUT: &[u8] = b"ciel-bench keyvault: the bytes a JWS covers";
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

/// One raw measurement.
pub struct RawRow {
    key: &'static str,
    label: &'static str,
    threads: usize,
    ops: u64,
    rate: f64,
    /// This process's CPU time per operation (all threads), µs.
    cpu_us: Option<f64>,
    /// Cores' worth of CPU that other processes used meanwhile.
    other_cores: Option<f64>,
}

impl RawRow {
    fn to_json(&self) -> Value {
        json!({"key": self.key, "label": self.label, "threads": self.threads, "ops": self.ops,
            "ops_per_s": (self.rate * 10.0).round() / 10.0,
            "cpu_us_per_op": self.cpu_us.map(f64::round),
            "other_cores": self.other_cores.map(|x| (x * 100.0).round() / 100.0)})
    }
}

/// The keys and inputs of the raw measurements: an RSA-2048 key for the `rsa` crate (the
/// software custody backend's library) and ring, and one made by `SoftwareCustody`.
struct Raw {
    key: rsa::RsaPrivateKey,
    ring: ring::signature::RsaKeyPair,
    ring_rng: ring::rand::SystemRandom,
    digest: Vec<u8>,
    ct: Vec<u8>,
    custody: ciel_keyvault::custody::SoftwareCustody,
    vault_key: Vec<u8>,
    material: ciel_keyvault::custody::KeyMaterial,
    ct_custody: Vec<u8>,
}

impl Raw {
    fn new() -> Result<Raw> {
        use ciel_keyvault::custody::{Custody, EncAlg, KeySpec, SoftwareCustody};
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::Oaep;
        use sha2::Digest;

        eprintln!("ciel-bench: generating RSA-2048 keys (raw library and custody)");
        let key =
            rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).map_err(|e| anyhow!("{e}"))?;
        let der = key.to_pkcs1_der().map_err(|e| anyhow!("{e}"))?;
        let ring = ring::signature::RsaKeyPair::from_der(der.as_bytes())
            .map_err(|e| anyhow!("ring rejected the key: {e}"))?;
        let ct = key
            .to_public_key()
            .encrypt(&mut rand::rngs::OsRng, Oaep::new::<sha1::Sha1>(), &CEK)
            .map_err(|e| anyhow!("{e}"))?;
        let master = ciel_core::seal::MasterKey::from_bytes(
            &ciel_core::seal::MasterKey::generate_bytes().map_err(|e| anyhow!("{e}"))?,
        )
        .map_err(|e| anyhow!("{e}"))?;
        let custody = SoftwareCustody::new(Arc::new(master));
        let vault_key = ciel_core::seal::MasterKey::generate_bytes()
            .map_err(|e| anyhow!("{e}"))?
            .to_vec();
        let (material, public) = custody
            .generate(&vault_key, "bench/key/1", KeySpec::Rsa { bits: 2048 })
            .map_err(|e| anyhow!("{e}"))?;
        let ct_custody = ciel_keyvault::custody::encrypt(&public, EncAlg::RsaOaep, &CEK)
            .map_err(|e| anyhow!("{e}"))?;
        Ok(Raw {
            key,
            ring,
            ring_rng: ring::rand::SystemRandom::new(),
            digest: sha2::Sha256::digest(DIGEST_INPUT).to_vec(),
            ct,
            custody,
            vault_key,
            material,
            ct_custody,
        })
    }

    /// Measures `which` (`rsa_sign`, `rsa_unwrap`, `ring_sign`, `custody_sign`, `custody_unwrap`)
    /// on `threads` threads for `secs` seconds.
    fn measure(&self, which: &'static str, threads: usize, secs: f64) -> Result<RawRow> {
        use ciel_keyvault::custody::{Custody, EncAlg, SignAlg};
        use rsa::{Oaep, Pkcs1v15Sign};
        let err = |e: &dyn std::fmt::Display| anyhow!("{which}: {e}");
        let (label, m) = match which {
            "rsa_sign" => (
                "`rsa` RS256 sign (PKCS#1 v1.5 over a SHA-256 digest, blinded; key parsed once)",
                rate_cpu(threads, secs, || {
                    self.key
                        .sign_with_rng(
                            &mut rand::rngs::OsRng,
                            Pkcs1v15Sign::new::<sha2::Sha256>(),
                            &self.digest,
                        )
                        .map(|_| ())
                        .map_err(|e| err(&e))
                })?,
            ),
            "rsa_unwrap" => (
                "`rsa` RSA-OAEP (SHA-1) decrypt of a 32-byte key, blinded",
                rate_cpu(threads, secs, || {
                    self.key
                        .decrypt_blinded(
                            &mut rand::rngs::OsRng,
                            Oaep::new::<sha1::Sha1>(),
                            &self.ct,
                        )
                        .map(|_| ())
                        .map_err(|e| err(&e))
                })?,
            ),
            "ring_sign" => (
                "ring `RsaKeyPair::sign` RS256 (reference; hashes a 32-byte message)",
                rate_cpu(threads, secs, || {
                    let mut sig = vec![0u8; self.ring.public().modulus_len()];
                    self.ring
                        .sign(
                            &ring::signature::RSA_PKCS1_SHA256,
                            &self.ring_rng,
                            &self.digest,
                            &mut sig,
                        )
                        .map_err(|e| err(&e))
                })?,
            ),
            "custody_sign" => (
                "`SoftwareCustody::sign_labelled` RS256 (open the sealed PKCS#8, parse, sign)",
                rate_cpu(threads, secs, || {
                    self.custody
                        .sign_labelled(
                            &self.vault_key,
                            "bench/key/1",
                            &self.material,
                            SignAlg::RS256,
                            &self.digest,
                        )
                        .map(|_| ())
                        .map_err(|e| err(&e))
                })?,
            ),
            "custody_unwrap" => (
                "`SoftwareCustody::decrypt_labelled` RSA-OAEP (open, parse, decrypt)",
                rate_cpu(threads, secs, || {
                    self.custody
                        .decrypt_labelled(
                            &self.vault_key,
                            "bench/key/1",
                            &self.material,
                            EncAlg::RsaOaep,
                            &self.ct_custody,
                        )
                        .map(|_| ())
                        .map_err(|e| err(&e))
                })?,
            ),
            other => bail!("unknown raw measurement {other}"),
        };
        let (ops, r, other_cores, cpu) = m;
        eprintln!("ciel-bench: raw {which}, {threads} thread(s): {r:.0}/s");
        Ok(RawRow {
            key: which,
            label,
            threads,
            ops,
            rate: r,
            cpu_us: cpu.filter(|_| ops > 0).map(|c| c * 1e6 / ops as f64),
            other_cores,
        })
    }
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

/// The four requests driven, checked once before any run.
struct Requests {
    sign: Req,
    unwrap: Req,
    encrypt: Req,
    secret: Req,
}

async fn requests(s: &Setup, tls: &tokio_rustls::TlsConnector) -> Result<Requests> {
    use rsa::{Oaep, Pkcs1v15Sign};
    use sha2::Digest;

    let digest = sha2::Sha256::digest(DIGEST_INPUT).to_vec();
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
    let r = Requests {
        sign: post(
            "sign",
            json!({"alg": "RS256", "value": B64URL.encode(&digest)}),
            is_signature,
        ),
        unwrap: post(
            "unwrapkey",
            json!({"alg": "RSA-OAEP", "value": B64URL.encode(&ct)}),
            is_cek,
        ),
        encrypt: post(
            "encrypt",
            json!({"alg": "RSA-OAEP", "value": B64URL.encode(CEK)}),
            is_ciphertext,
        ),
        secret: Req {
            method: Method::GET,
            path: s.secret_path.clone(),
            content_type: None,
            bearer: Some(s.bearer.clone()),
            body: Bytes::new(),
            check: is_secret,
        },
    };

    // The API's signature verifies with the key's public part; unwrap gives the key back.
    let mut c = Conn::open(&s.vault, tls).await?;
    let (st, body) = c.send(&r.sign).await?;
    let sig = value_of(&body)
        .filter(|_| st == StatusCode::OK)
        .ok_or_else(|| anyhow!("sign: {st} {}", String::from_utf8_lossy(&body)))?;
    s.public
        .verify(Pkcs1v15Sign::new::<sha2::Sha256>(), &digest, &sig)
        .map_err(|e| anyhow!("the API's RS256 signature does not verify: {e}"))?;
    for (what, req) in [
        ("unwrapkey", &r.unwrap),
        ("encrypt", &r.encrypt),
        ("get secret", &r.secret),
    ] {
        let (st, body) = c.send(req).await?;
        if !(req.check)(st, &body) {
            bail!("{what}: {st} {}", String::from_utf8_lossy(&body));
        }
    }
    Ok(r)
}

/// Drives `req` at each concurrency for `secs` seconds.
async fn api_runs(
    s: &Setup,
    tls: &tokio_rustls::TlsConnector,
    label: &str,
    key: &'static str,
    req: &Req,
    concs: &[usize],
    secs: f64,
) -> Result<Vec<HttpRun>> {
    let mut runs = Vec::new();
    for &c in concs {
        eprintln!("ciel-bench: {label}, {c} connection(s), {secs} s");
        let r = req.clone();
        let run = stats::drive(
            label,
            key,
            &s.vault,
            tls,
            c,
            Stop::Secs(secs),
            true,
            move |_| r.clone(),
        )
        .await?;
        eprintln!("ciel-bench:   {:.0}/s", run.rate);
        runs.push(run);
    }
    Ok(runs)
}

/// One comparison of an API run with a raw run.
struct Ratio {
    op: &'static str,
    api: &'static str,
    concurrency: usize,
    raw: &'static str,
    threads: usize,
    api_rate: f64,
    raw_rate: f64,
    /// Server + client CPU µs per API request.
    api_cpu_us: Option<f64>,
    raw_cpu_us: Option<f64>,
}

impl Ratio {
    fn rate_ratio(&self) -> f64 {
        self.api_rate / self.raw_rate.max(1e-9)
    }
    /// Raw CPU per operation over the API's CPU per request (server and client): the rate ratio
    /// on a machine that does nothing else, when both are CPU-bound.
    fn cpu_ratio(&self) -> Option<f64> {
        match (self.raw_cpu_us, self.api_cpu_us) {
            (Some(r), Some(a)) if a > 0.0 => Some(r / a),
            _ => None,
        }
    }
}

fn ratios(raw: &[RawRow], runs: &[HttpRun]) -> Vec<Ratio> {
    let mut out = Vec::new();
    for (op, api, rawk, pairs) in [
        (
            "sign",
            "kv_sign",
            "rsa_sign",
            &[(1usize, 1usize), (2, 2), (8, 2)][..],
        ),
        (
            "unwrapKey",
            "kv_unwrap",
            "rsa_unwrap",
            &[(1, 1), (2, 2), (8, 2)][..],
        ),
        ("sign vs ring", "kv_sign", "ring_sign", &[(2, 2)][..]),
    ] {
        for &(c, t) in pairs {
            let a = runs.iter().find(|r| r.key == api && r.concurrency == c);
            let r = raw.iter().find(|r| r.key == rawk && r.threads == t);
            if let (Some(a), Some(r)) = (a, r) {
                out.push(Ratio {
                    op,
                    api,
                    concurrency: c,
                    raw: rawk,
                    threads: t,
                    api_rate: a.rate,
                    raw_rate: r.rate,
                    api_cpu_us: match (a.server_cpu_us, a.client_cpu_us) {
                        (Some(x), Some(y)) => Some(x + y),
                        _ => None,
                    },
                    raw_cpu_us: r.cpu_us,
                });
            }
        }
    }
    out
}

fn render(raw: &[RawRow], runs: &[HttpRun], ratios: &[Ratio], args: &KvArgs) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let other = |x: Option<f64>| x.map(|v| format!("{v:.2}")).unwrap_or_else(|| "–".into());
    let ms = |us: f64| format!("{:.2}", us / 1000.0);
    let us = |x: Option<f64>| x.map(|v| format!("{v:.0}")).unwrap_or_else(|| "–".into());
    let pc = |x: Option<f64>| {
        x.map(|v| format!("{:.0}%", v * 100.0))
            .unwrap_or_else(|| "–".into())
    };
    let _ = writeln!(s, "\n## ciel-bench keyvault results\n");
    let _ = writeln!(
        s,
        "Raw runs {} s each, API runs {} s each. Order: reference rows, then raw `rsa` sign, API sign, raw `rsa` unwrap, API unwrapKey, encrypt, Get Secret.\n",
        args.raw_seconds, args.seconds
    );
    let _ = writeln!(s, "### RSA-2048 in process (no server)\n");
    let _ = writeln!(
        s,
        "| Operation | Threads | Ops/s | CPU µs/op | Other load (cores) |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|");
    for r in raw {
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} | {} | {} |",
            r.label,
            r.threads,
            r.rate,
            us(r.cpu_us),
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
            us(r.server_cpu_us),
            us(r.client_cpu_us),
            other(r.other_cores)
        );
    }
    let _ = writeln!(s, "\n### API against the raw library\n");
    let _ = writeln!(
        s,
        "| Operation | API conc. | API /s | Raw | Raw threads | Raw /s | API ÷ raw (rates) | API CPU µs/req (server + client) | Raw CPU µs/op | Raw ÷ API (CPU per op) |"
    );
    let _ = writeln!(s, "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|");
    for q in ratios {
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} | `{}` | {} | {:.0} | {:.0}% | {} | {} | {} |",
            q.op,
            q.concurrency,
            q.api_rate,
            q.raw,
            q.threads,
            q.raw_rate,
            q.rate_ratio() * 100.0,
            us(q.api_cpu_us),
            us(q.raw_cpu_us),
            pc(q.cpu_ratio())
        );
    }
    let disturbed = raw
        .iter()
        .map(|r| r.other_cores)
        .chain(runs.iter().map(|r| r.other_cores))
        .flatten()
        .fold(0.0, f64::max);
    let _ = writeln!(
        s,
        "\n\"Other load\" is the CPU (in cores) that other processes used during a run; {}",
        if disturbed > 0.15 {
            format!("up to {disturbed:.2} here, so some rates are low and the rate ratios noisy; the CPU-per-op ratio depends less on it.")
        } else {
            "near 0 here: the run had the machine to itself.".to_string()
        }
    );
    if let Some(q) = ratios
        .iter()
        .find(|q| q.api == "kv_sign" && q.concurrency == 2 && q.raw == "rsa_sign")
    {
        let _ = writeln!(
            s,
            "\nTarget (issue 4): API sign rate >= 70% of the raw library's. API at C=2 against `rsa` on 2 threads: {:.0}/s against {:.0}/s = {:.0}% ({}); CPU per operation: {}.",
            q.api_rate,
            q.raw_rate,
            q.rate_ratio() * 100.0,
            if q.rate_ratio() >= 0.7 { "met" } else { "missed" },
            pc(q.cpu_ratio())
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
    // Setup first (the server's key generation is not measured). Each raw rate is measured just
    // before the API runs it is compared with, so that drift in the machine's other load
    // affects both alike.
    let s = rt.block_on(setup(&env, &tls))?;
    let reqs = rt.block_on(requests(&s, &tls))?;
    let r = Raw::new()?;
    let (rs, secs) = (args.raw_seconds, args.seconds);
    let mut raw = vec![
        r.measure("ring_sign", 1, rs)?,
        r.measure("ring_sign", 2, rs)?,
        r.measure("custody_sign", 1, rs)?,
        r.measure("custody_unwrap", 1, rs)?,
        r.measure("rsa_sign", 1, rs)?,
        r.measure("rsa_sign", 2, rs)?,
    ];
    let mut runs = Vec::new();
    runs.extend(rt.block_on(api_runs(
        &s,
        &tls,
        "key sign RS256 (audited)",
        "kv_sign",
        &reqs.sign,
        &[1, 2, 8],
        secs,
    ))?);
    raw.push(r.measure("rsa_unwrap", 1, rs)?);
    raw.push(r.measure("rsa_unwrap", 2, rs)?);
    runs.extend(rt.block_on(api_runs(
        &s,
        &tls,
        "key unwrapKey RSA-OAEP (audited)",
        "kv_unwrap",
        &reqs.unwrap,
        &[1, 2, 8],
        secs,
    ))?);
    runs.extend(rt.block_on(api_runs(
        &s,
        &tls,
        "key encrypt RSA-OAEP (public key; not audited)",
        "kv_encrypt",
        &reqs.encrypt,
        &[1, 2, 8],
        secs,
    ))?);
    runs.extend(rt.block_on(api_runs(
        &s,
        &tls,
        "secret get (audited)",
        "kv_secret_get",
        &reqs.secret,
        &[1, 8],
        secs,
    ))?);
    let q = ratios(&raw, &runs);
    println!("{}", render(&raw, &runs, &q, &args));
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let j = json!({
        "bench": "keyvault",
        "machine": {"nproc": nproc, "cpu": crate::cpu_model()},
        "params": {"seconds": args.seconds, "raw_seconds": args.raw_seconds, "vault": s.vault_uri},
        "raw": raw.iter().map(RawRow::to_json).collect::<Vec<_>>(),
        "http": runs.iter().map(HttpRun::to_json).collect::<Vec<_>>(),
        "ratios": q.iter().map(|q| json!({
            "op": q.op, "api": q.api, "concurrency": q.concurrency, "raw": q.raw, "threads": q.threads,
            "api_per_s": (q.api_rate * 10.0).round() / 10.0, "raw_per_s": (q.raw_rate * 10.0).round() / 10.0,
            "rate_ratio": (q.rate_ratio() * 1000.0).round() / 1000.0,
            "api_cpu_us": q.api_cpu_us.map(f64::round), "raw_cpu_us": q.raw_cpu_us.map(f64::round),
            "cpu_ratio": q.cpu_ratio().map(|x| (x * 1000.0).round() / 1000.0)})).collect::<Vec<_>>(),
    });
    println!("{}", serde_json::to_string(&j)?);
    Ok(runs.iter().map(|r| r.errors).sum())
}
