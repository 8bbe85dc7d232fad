//! Token signing keys: RSA-2048, generated here, sealed at rest under the platform master key,
//! rotatable. A retired key stops signing at once but stays in JWKS (and keeps verifying) until
//! every token it signed has expired.

use crate::{IdentityError, ACCESS_TOKEN_LIFETIME, LEEWAY_SECS};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use ciel_core::audit::AuditDraft;
use ciel_core::seal::MasterKey;
use ciel_store::{SigningKey, Store};
use jsonwebtoken::{DecodingKey, EncodingKey};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

const SEAL_PURPOSE: &str = "ciel/token-signing-key/v1";

struct Inner {
    active: Option<(String, EncodingKey)>,
    verify: HashMap<String, DecodingKey>,
    published: Vec<SigningKey>,
    loaded_at: Instant,
}

pub struct KeyRing {
    store: Store,
    master: Arc<MasterKey>,
    inner: RwLock<Inner>,
}

/// Generates an RSA-2048 key; returns (PKCS#1 DER, n, e) with n and e base64url.
fn generate_rsa() -> Result<(Vec<u8>, String, String), IdentityError> {
    let mut rng = rand::rngs::OsRng;
    let key = rsa::RsaPrivateKey::new(&mut rng, 2048)
        .map_err(|e| IdentityError::Internal(e.to_string()))?;
    let der = key
        .to_pkcs1_der()
        .map_err(|e| IdentityError::Internal(e.to_string()))?;
    Ok((
        der.as_bytes().to_vec(),
        B64URL.encode(key.n().to_bytes_be()),
        B64URL.encode(key.e().to_bytes_be()),
    ))
}

fn still_published(k: &SigningKey, now: i64) -> bool {
    match k.retired {
        None => true,
        Some(r) => r + ACCESS_TOKEN_LIFETIME + LEEWAY_SECS as i64 > now,
    }
}

impl KeyRing {
    pub fn new(store: Store, master: Arc<MasterKey>) -> Result<Arc<Self>, IdentityError> {
        let ring = Arc::new(Self {
            store,
            master,
            inner: RwLock::new(Inner {
                active: None,
                verify: HashMap::new(),
                published: vec![],
                loaded_at: Instant::now(),
            }),
        });
        ring.reload()?;
        Ok(ring)
    }

    /// Reads every key from the store (a rotation may have been done by another process).
    pub fn reload(&self) -> Result<(), IdentityError> {
        let now = ciel_core::time::now_unix();
        let keys = self.store.list_signing_keys()?;
        let mut verify = HashMap::new();
        let mut published = Vec::new();
        let mut active = None;
        for k in keys {
            if !still_published(&k, now) {
                continue;
            }
            let dk = DecodingKey::from_rsa_components(&k.n, &k.e)
                .map_err(|e| IdentityError::Internal(e.to_string()))?;
            verify.insert(k.kid.clone(), dk);
            if k.retired.is_none() {
                let der = self
                    .master
                    .open(SEAL_PURPOSE, &k.sealed_private_key)
                    .map_err(|e| {
                        IdentityError::Internal(format!("cannot unseal signing key {}: {e}", k.kid))
                    })?;
                // Keys are ordered by creation: the newest unretired one signs.
                active = Some((k.kid.clone(), EncodingKey::from_rsa_der(&der)));
            }
            published.push(k);
        }
        let mut w = self
            .inner
            .write()
            .map_err(|_| IdentityError::Internal("keyring poisoned".into()))?;
        *w = Inner {
            active,
            verify,
            published,
            loaded_at: Instant::now(),
        };
        Ok(())
    }

    /// Makes sure a signing key exists (first start).
    pub fn ensure_active(&self, actor: &str) -> Result<(), IdentityError> {
        let has = self
            .inner
            .read()
            .map(|i| i.active.is_some())
            .unwrap_or(false);
        if !has {
            self.create_key(actor)?;
        }
        Ok(())
    }

    fn create_key(&self, actor: &str) -> Result<String, IdentityError> {
        let (der, n, e) = generate_rsa()?;
        let kid = B64URL
            .encode(&ring::digest::digest(&ring::digest::SHA256, n.as_bytes()).as_ref()[..15]);
        let sealed = self
            .master
            .seal(SEAL_PURPOSE, &der)
            .map_err(|e| IdentityError::Internal(e.to_string()))?;
        let k = SigningKey {
            kid: kid.clone(),
            sealed_private_key: sealed,
            n,
            e,
            created: ciel_core::time::now_unix(),
            retired: None,
        };
        self.store.put_signing_key(
            &k,
            &AuditDraft {
                actor: actor.to_string(),
                action: "identity/signingKeys/create".into(),
                target: kid.clone(),
                outcome: "success".into(),
                ..Default::default()
            },
        )?;
        self.reload()?;
        Ok(kid)
    }

    /// Creates a new signing key and retires the current ones. Returns the new key id.
    pub fn rotate(&self, actor: &str) -> Result<String, IdentityError> {
        let old: Vec<String> = self
            .store
            .list_signing_keys()?
            .into_iter()
            .filter(|k| k.retired.is_none())
            .map(|k| k.kid)
            .collect();
        let kid = self.create_key(actor)?;
        let now = ciel_core::time::now_unix();
        for o in old {
            self.store.retire_signing_key(
                &o,
                now,
                &AuditDraft {
                    actor: actor.to_string(),
                    action: "identity/signingKeys/retire".into(),
                    target: o.clone(),
                    outcome: "success".into(),
                    ..Default::default()
                },
            )?;
        }
        self.reload()?;
        Ok(kid)
    }

    pub fn sign<T: serde::Serialize>(&self, claims: &T) -> Result<String, IdentityError> {
        let r = self
            .inner
            .read()
            .map_err(|_| IdentityError::Internal("keyring poisoned".into()))?;
        let (kid, key) = r
            .active
            .as_ref()
            .ok_or_else(|| IdentityError::Internal("no active signing key".into()))?;
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        h.kid = Some(kid.clone());
        h.typ = Some("JWT".into());
        jsonwebtoken::encode(&h, claims, key).map_err(|e| IdentityError::Internal(e.to_string()))
    }

    /// The verification key for `kid`; reloads at most once a second when the kid is unknown.
    pub fn decoding_key(&self, kid: &str) -> Option<DecodingKey> {
        if let Ok(r) = self.inner.read() {
            if let Some(k) = r.verify.get(kid) {
                return Some(k.clone());
            }
            if r.loaded_at.elapsed() < Duration::from_secs(1) {
                return None;
            }
        }
        if self.reload().is_err() {
            return None;
        }
        self.inner.read().ok()?.verify.get(kid).cloned()
    }

    /// The JWKS document.
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<serde_json::Value> = self
            .inner
            .read()
            .map(|r| {
                r.published
                    .iter()
                    .map(|k| serde_json::json!({"kty":"RSA","use":"sig","alg":"RS256","kid":k.kid,"n":k.n,"e":k.e}))
                    .collect()
            })
            .unwrap_or_default();
        serde_json::json!({ "keys": keys })
    }
}
