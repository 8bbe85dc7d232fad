//! The PKCS#11 backend: keys are generated (or imported) inside an HSM as sensitive,
//! non-extractable token objects and every private operation runs there. Tested against
//! SoftHSM2; written to the standard, so a hardware HSM with the same mechanisms works.
//!
//! - Objects: the private key is a token object (`CKA_TOKEN`, `CKA_PRIVATE`, `CKA_SENSITIVE`,
//!   `!CKA_EXTRACTABLE`) labelled with the caller's label and a random 16-byte `CKA_ID`. The
//!   public half is read once at generation and then destroyed: Ciel keeps it in its records.
//! - The `KeyMaterial` blob is `material::encode(label, kind || bits || id || mac)`, the MAC an
//!   HMAC-SHA256 under the vault key over the label, kind, bits and id. The HSM holds no notion
//!   of vaults; the MAC is what stops a record of one vault (or key) from naming another's object.
//! - Vault keys are wrapped with AES-256-GCM by an AES key that never leaves the HSM
//!   (`ciel-vault-wrap`, created on first use): `iv(12) || ciphertext || tag`, the vault's
//!   resource id as associated data.
//! - Sessions: PKCS#11 sessions are not thread-safe, so each operation borrows one from a small
//!   pool (opened on demand, returned after use). The login is the application's, not the
//!   session's: one session (`anchor`) logs in and stays open for the backend's lifetime, which
//!   keeps every other session logged in.

use super::material;
use super::oaep;
use super::public::{check_digest, ec_jwk, is_rsa, rsa_public, RSA_BITS};
use super::software;
use super::{
    Curve, Custody, CustodyError, CustodyResult, EncAlg, KeyMaterial, KeySpec, PrivateKey,
    PublicKey, SignAlg,
};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use hmac::{Hmac, Mac};
use rsa::traits::PublicKeyParts;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

pub const BACKEND: &str = "pkcs11";
const MATERIAL_PURPOSE: &str = "ciel/keyvault/pkcs11-material/v1";
const VAULT_PURPOSE: &str = "ciel/keyvault/vault-key/v1";
/// The label of the AES key that wraps vault keys.
pub const WRAP_KEY_LABEL: &str = "ciel-vault-wrap";
const ID_LEN: usize = 16;
const MAC_LEN: usize = 32;
const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Sessions kept open beyond the anchor; more are opened under load and closed on return.
const POOL_MAX: usize = 8;

const KIND_RSA: u8 = 1;
const KIND_P256: u8 = 2;
const KIND_P384: u8 = 3;
const KIND_P521: u8 = 4;

/// Where the HSM is. The PIN itself is not in the configuration: it comes from an environment
/// variable or a file (mode 0600), named here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pkcs11Config {
    /// The PKCS#11 module (`/usr/lib/softhsm/libsofthsm2.so`, a vendor's `.so`).
    pub module: PathBuf,
    /// The token's label (`CKA_LABEL` of the token, as `softhsm2-util --show-slots` lists it).
    pub token_label: String,
    /// The user PIN's source.
    #[serde(flatten)]
    pub pin: PinSource,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PinSource {
    /// The name of an environment variable holding the PIN.
    #[serde(rename = "pin_env")]
    Env(String),
    /// A file holding the PIN (trailing newline ignored).
    #[serde(rename = "pin_file")]
    File(PathBuf),
}

impl PinSource {
    pub fn read(&self) -> CustodyResult<String> {
        match self {
            PinSource::Env(v) => std::env::var(v)
                .map_err(|_| CustodyError::Backend(format!("the HSM PIN variable {v} is not set"))),
            PinSource::File(p) => std::fs::read_to_string(p)
                .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
                .map_err(|e| {
                    CustodyError::Backend(format!("reading the HSM PIN file {}: {e}", p.display()))
                }),
        }
    }
}

pub struct Pkcs11Custody {
    ctx: Pkcs11,
    slot: Slot,
    /// Logged in, kept open: the login lasts as long as one session of ours is open. Replaced
    /// (and the login redone) when the HSM has forgotten it.
    anchor: Mutex<Session>,
    pin: AuthPin,
    pool: Mutex<Vec<Session>>,
    /// Serialises the first-use creation of the wrapping key within this process.
    wrap_lock: Mutex<()>,
    /// Set once the HSM has refused OAEP with SHA-1 (`[0]`) or SHA-256 (`[1]`) parameters:
    /// those decryptions then run as raw RSA in the HSM plus `oaep::decode` here.
    oaep_raw: [AtomicBool; 2],
}

fn ck(what: &str) -> impl Fn(CkError) -> CustodyError + '_ {
    move |e| CustodyError::Backend(format!("PKCS#11 {what}: {e}"))
}

fn login(s: &Session, pin: &AuthPin) -> CustodyResult<()> {
    match s.login(UserType::User, Some(pin)) {
        Ok(()) => Ok(()),
        Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(e) => Err(ck("C_Login")(e)),
    }
}

fn rand_bytes<const N: usize>() -> CustodyResult<[u8; N]> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| CustodyError::Backend("the system random generator failed".into()))?;
    Ok(b)
}

/// DER of the named curve's OID, as `CKA_EC_PARAMS` wants it.
fn ec_params(curve: Curve) -> Vec<u8> {
    match curve {
        Curve::P256 => vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
        Curve::P384 => vec![0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22],
        Curve::P521 => vec![0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23],
    }
}

fn curve_kind(curve: Curve) -> u8 {
    match curve {
        Curve::P256 => KIND_P256,
        Curve::P384 => KIND_P384,
        Curve::P521 => KIND_P521,
    }
}

fn kind_curve(kind: u8) -> Option<Curve> {
    match kind {
        KIND_P256 => Some(Curve::P256),
        KIND_P384 => Some(Curve::P384),
        KIND_P521 => Some(Curve::P521),
        _ => None,
    }
}

/// `CKA_EC_POINT` is a DER OCTET STRING around the SEC1 point (some modules give the bare
/// point; both are accepted).
fn unwrap_ec_point(curve: Curve, v: &[u8]) -> CustodyResult<Vec<u8>> {
    let n = 1 + 2 * curve.field_len();
    if v.len() == n && v[0] == 4 {
        return Ok(v.to_vec());
    }
    let bad = || CustodyError::Backend("the HSM's CKA_EC_POINT does not parse".into());
    if v.first() != Some(&0x04) {
        return Err(bad());
    }
    let (len, hdr) = match v.get(1) {
        Some(l) if *l < 0x80 => (*l as usize, 2),
        Some(0x81) => (*v.get(2).ok_or_else(bad)? as usize, 3),
        Some(0x82) => (
            ((*v.get(2).ok_or_else(bad)? as usize) << 8) | *v.get(3).ok_or_else(bad)? as usize,
            4,
        ),
        _ => return Err(bad()),
    };
    let p = v.get(hdr..hdr + len).ok_or_else(bad)?;
    if p.len() != n || p[0] != 4 {
        return Err(bad());
    }
    Ok(p.to_vec())
}

/// The DER DigestInfo prefix PKCS#1 v1.5 puts before a SHA-2 digest (RFC 8017, 9.2 note 1):
/// with `CKM_RSA_PKCS` the HSM pads what it is given, so the caller's digest is signed as
/// `RSASSA-PKCS1-v1_5` only with this prefix in front.
fn digest_info_prefix(alg: SignAlg) -> Option<&'static [u8]> {
    const SHA256: &[u8] = &[
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ];
    const SHA384: &[u8] = &[
        0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02,
        0x05, 0x00, 0x04, 0x30,
    ];
    const SHA512: &[u8] = &[
        0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03,
        0x05, 0x00, 0x04, 0x40,
    ];
    match alg {
        SignAlg::RS256 => Some(SHA256),
        SignAlg::RS384 => Some(SHA384),
        SignAlg::RS512 => Some(SHA512),
        _ => None,
    }
}

fn pss_params(alg: SignAlg) -> Option<PkcsPssParams> {
    let (hash_alg, mgf, len) = match alg {
        SignAlg::PS256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256, 32u64),
        SignAlg::PS384 => (MechanismType::SHA384, PkcsMgfType::MGF1_SHA384, 48),
        SignAlg::PS512 => (MechanismType::SHA512, PkcsMgfType::MGF1_SHA512, 64),
        _ => return None,
    };
    Some(PkcsPssParams {
        hash_alg,
        mgf,
        s_len: len.into(),
    })
}

/// What a material blob says, once its MAC is checked.
struct Handle {
    label: String,
    kind: u8,
    bits: u16,
    id: [u8; ID_LEN],
}

fn mac(vault_key: &[u8], label: &str, body: &[u8]) -> CustodyResult<Hmac<sha2::Sha256>> {
    if vault_key.len() != 32 {
        return Err(CustodyError::Invalid("a vault key is 32 bytes".into()));
    }
    let mut m = <Hmac<sha2::Sha256> as Mac>::new_from_slice(vault_key)
        .map_err(|_| CustodyError::Invalid("a vault key is 32 bytes".into()))?;
    m.update(&material::binding(MATERIAL_PURPOSE, label));
    m.update(body);
    Ok(m)
}

fn encode_material(
    vault_key: &[u8],
    label: &str,
    kind: u8,
    bits: u16,
    id: &[u8; ID_LEN],
) -> CustodyResult<KeyMaterial> {
    let mut body = Vec::with_capacity(3 + ID_LEN + MAC_LEN);
    body.push(kind);
    body.extend_from_slice(&bits.to_be_bytes());
    body.extend_from_slice(id);
    let tag = mac(vault_key, label, &body)?.finalize().into_bytes();
    body.extend_from_slice(&tag);
    Ok(KeyMaterial {
        backend: BACKEND.into(),
        blob: material::encode(label, &body)?,
    })
}

fn decode_material(
    vault_key: &[u8],
    m: &KeyMaterial,
    expect: Option<&str>,
) -> CustodyResult<Handle> {
    if m.backend != BACKEND {
        return Err(CustodyError::Material);
    }
    let (label, body) = material::decode(&m.blob)?;
    if body.len() != 3 + ID_LEN + MAC_LEN {
        return Err(CustodyError::Material);
    }
    if let Some(want) = expect {
        if want != label {
            return Err(CustodyError::Material);
        }
    }
    let (data, tag) = body.split_at(3 + ID_LEN);
    // `verify_slice` compares in constant time.
    mac(vault_key, label, data)?
        .verify_slice(tag)
        .map_err(|_| CustodyError::Material)?;
    let mut id = [0u8; ID_LEN];
    id.copy_from_slice(&data[3..]);
    Ok(Handle {
        label: label.to_string(),
        kind: data[0],
        bits: u16::from_be_bytes([data[1], data[2]]),
        id,
    })
}

impl Pkcs11Custody {
    /// Opens the module, finds the token by label and logs in as the user.
    pub fn open(config: &Pkcs11Config) -> CustodyResult<Self> {
        let pin = config.pin.read()?;
        Self::new(&config.module, &config.token_label, &pin)
    }

    pub fn new(module: &std::path::Path, token_label: &str, user_pin: &str) -> CustodyResult<Self> {
        let ctx = Pkcs11::new(module).map_err(|e| {
            CustodyError::Backend(format!(
                "loading the PKCS#11 module {}: {e}",
                module.display()
            ))
        })?;
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) => {}
            // Another Pkcs11Custody of this process initialised the module already.
            Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(ck("C_Initialize")(e)),
        }
        let mut slot = None;
        for s in ctx.get_slots_with_token().map_err(ck("C_GetSlotList"))? {
            let info = ctx.get_token_info(s).map_err(ck("C_GetTokenInfo"))?;
            if info.label().trim_end() == token_label {
                slot = Some(s);
                break;
            }
        }
        let slot = slot.ok_or_else(|| {
            CustodyError::Backend(format!(
                "no PKCS#11 token labelled {token_label:?} in {}",
                module.display()
            ))
        })?;
        let anchor = ctx.open_rw_session(slot).map_err(ck("C_OpenSession"))?;
        let pin = AuthPin::from(user_pin.to_string());
        login(&anchor, &pin)?;
        Ok(Self {
            ctx,
            slot,
            anchor: Mutex::new(anchor),
            pin,
            pool: Mutex::new(Vec::new()),
            wrap_lock: Mutex::new(()),
            oaep_raw: [AtomicBool::new(false), AtomicBool::new(false)],
        })
    }

    /// Runs `f` on a pooled session. A session whose call failed is closed rather than
    /// returned, in case the failure left it unusable (an operation half-initialised). When the
    /// failure is the HSM having lost our login (an HSM restart: private objects vanish from
    /// searches, operations fail), the login is redone and `f` runs once more.
    fn with_session<T>(&self, mut f: impl FnMut(&Session) -> CustodyResult<T>) -> CustodyResult<T> {
        let r = self.run_once(&mut f);
        match r {
            Err(CustodyError::Backend(_) | CustodyError::Material) if self.recover_login() => {
                self.run_once(&mut f)
            }
            r => r,
        }
    }

    fn run_once<T>(&self, f: &mut impl FnMut(&Session) -> CustodyResult<T>) -> CustodyResult<T> {
        let taken = self
            .pool
            .lock()
            .map_err(|_| CustodyError::Backend("session pool poisoned".into()))?
            .pop();
        let session = match taken {
            Some(s) => s,
            None => self
                .ctx
                .open_rw_session(self.slot)
                .map_err(ck("C_OpenSession"))?,
        };
        let r = f(&session);
        if r.is_ok() {
            if let Ok(mut pool) = self.pool.lock() {
                if pool.len() < POOL_MAX {
                    pool.push(session);
                }
            }
        }
        r
    }

    /// Re-establishes the login if the HSM no longer has it (sessions closed, token
    /// re-inserted, HSM restarted). Pooled sessions of the lost login are dropped. True when it
    /// logged in again.
    fn recover_login(&self) -> bool {
        let Ok(mut anchor) = self.anchor.lock() else {
            return false;
        };
        let logged_in = anchor
            .get_session_info()
            .map(|i| {
                matches!(
                    i.session_state(),
                    SessionState::RwUser | SessionState::RoUser
                )
            })
            .unwrap_or(false);
        if logged_in {
            return false;
        }
        if let Ok(mut pool) = self.pool.lock() {
            pool.clear();
        }
        match self.ctx.open_rw_session(self.slot) {
            Ok(s) => match login(&s, &self.pin) {
                Ok(()) => {
                    tracing::warn!("PKCS#11: the HSM had lost Ciel's login; logged in again");
                    *anchor = s;
                    true
                }
                Err(e) => {
                    tracing::error!(error = %e, "PKCS#11: logging in again failed");
                    false
                }
            },
            Err(e) => {
                tracing::error!(error = %e, "PKCS#11: reopening a session failed");
                false
            }
        }
    }

    /// Logs the application out of the token, as an HSM restart would (tests of the recovery).
    #[doc(hidden)]
    pub fn logout_for_tests(&self) -> CustodyResult<()> {
        let anchor = self
            .anchor
            .lock()
            .map_err(|_| CustodyError::Backend("anchor session poisoned".into()))?;
        anchor.logout().map_err(ck("C_Logout"))
    }

    fn find_private(&self, s: &Session, h: &Handle) -> CustodyResult<ObjectHandle> {
        let found = s
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Id(h.id.to_vec()),
                Attribute::Label(h.label.as_bytes().to_vec()),
            ])
            .map_err(ck("C_FindObjects"))?;
        match found.as_slice() {
            [one] => Ok(*one),
            // The record names an object the HSM no longer has (destroyed, another token).
            [] => Err(CustodyError::Material),
            _ => Err(CustodyError::Backend(format!(
                "the HSM holds several keys with the label {:?} and the same id",
                h.label
            ))),
        }
    }

    /// The AES key that wraps vault keys, created on first use.
    fn wrap_key(&self, s: &Session) -> CustodyResult<ObjectHandle> {
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(WRAP_KEY_LABEL.as_bytes().to_vec()),
        ];
        let found = s.find_objects(&template).map_err(ck("C_FindObjects"))?;
        if let Some(k) = found.first() {
            return Ok(*k);
        }
        let _g = self
            .wrap_lock
            .lock()
            .map_err(|_| CustodyError::Backend("wrap key lock poisoned".into()))?;
        // Another thread may have created it while we waited.
        let found = s.find_objects(&template).map_err(ck("C_FindObjects"))?;
        if let Some(k) = found.first() {
            return Ok(*k);
        }
        s.generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::ValueLen(32u64.into()),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::Label(WRAP_KEY_LABEL.as_bytes().to_vec()),
            ],
        )
        .map_err(ck("C_GenerateKey (vault wrap key)"))
    }

    fn private_template(label: &str, id: &[u8]) -> Vec<Attribute> {
        vec![
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.to_vec()),
        ]
    }
}

impl Custody for Pkcs11Custody {
    fn backend(&self) -> &'static str {
        BACKEND
    }
    fn is_hsm(&self) -> bool {
        true
    }

    fn seal_vault_key(&self, context: &str, vault_key: &[u8]) -> CustodyResult<Vec<u8>> {
        if vault_key.len() != 32 {
            return Err(CustodyError::Invalid("a vault key is 32 bytes".into()));
        }
        let mut iv = rand_bytes::<IV_LEN>()?;
        let aad = material::binding(VAULT_PURPOSE, context);
        let ct = self.with_session(|s| {
            let k = self.wrap_key(s)?;
            let params = GcmParams::new(&mut iv, &aad, ((TAG_LEN * 8) as u64).into())
                .map_err(ck("GCM parameters"))?;
            s.encrypt(&Mechanism::AesGcm(params), k, vault_key)
                .map_err(ck("C_Encrypt (AES-GCM)"))
        })?;
        let mut out = iv.to_vec();
        out.extend_from_slice(&ct);
        Ok(out)
    }

    fn open_vault_key(&self, context: &str, sealed: &[u8]) -> CustodyResult<Vec<u8>> {
        if sealed.len() < IV_LEN + TAG_LEN {
            return Err(CustodyError::Material);
        }
        let (iv, ct) = sealed.split_at(IV_LEN);
        let mut iv = iv.to_vec();
        let aad = material::binding(VAULT_PURPOSE, context);
        self.with_session(|s| {
            let k = self.wrap_key(s)?;
            let params = GcmParams::new(&mut iv, &aad, ((TAG_LEN * 8) as u64).into())
                .map_err(ck("GCM parameters"))?;
            s.decrypt(&Mechanism::AesGcm(params), k, ct)
                .map_err(|_| CustodyError::Material)
        })
    }

    fn generate(
        &self,
        vault_key: &[u8],
        label: &str,
        spec: KeySpec,
    ) -> CustodyResult<(KeyMaterial, PublicKey)> {
        // Fail on a bad vault key before creating anything in the HSM.
        mac(vault_key, label, &[])?;
        let id = rand_bytes::<ID_LEN>()?;
        let mut private = Self::private_template(label, &id);
        let (mech, public_t, kind, bits) = match spec {
            KeySpec::Rsa { bits } => {
                if !RSA_BITS.contains(&(bits as usize)) {
                    return Err(CustodyError::Unsupported(format!("RSA {bits}")));
                }
                private.push(Attribute::Sign(true));
                private.push(Attribute::Decrypt(true));
                (
                    Mechanism::RsaPkcsKeyPairGen,
                    vec![
                        Attribute::Token(false),
                        Attribute::ModulusBits((bits as u64).into()),
                        Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
                        Attribute::Verify(true),
                        Attribute::Encrypt(true),
                    ],
                    KIND_RSA,
                    bits as u16,
                )
            }
            KeySpec::Ec { curve } => {
                private.push(Attribute::Sign(true));
                (
                    Mechanism::EccKeyPairGen,
                    vec![
                        Attribute::Token(false),
                        Attribute::EcParams(ec_params(curve)),
                        Attribute::Verify(true),
                    ],
                    curve_kind(curve),
                    0,
                )
            }
        };
        let public = self.with_session(|s| {
            let (pubh, privh) = s
                .generate_key_pair(&mech, &public_t, &private)
                .map_err(ck("C_GenerateKeyPair"))?;
            let read = match spec {
                KeySpec::Rsa { .. } => s.get_attributes(
                    pubh,
                    &[AttributeType::Modulus, AttributeType::PublicExponent],
                ),
                KeySpec::Ec { .. } => s.get_attributes(pubh, &[AttributeType::EcPoint]),
            };
            // The public key object was a session object; destroy it now rather than let it
            // live as long as the pooled session.
            let _ = s.destroy_object(pubh);
            let attrs = match read {
                Ok(a) => a,
                Err(e) => {
                    let _ = s.destroy_object(privh);
                    return Err(ck("C_GetAttributeValue")(e));
                }
            };
            let mut n = None;
            let mut e = None;
            let mut point = None;
            for a in attrs {
                match a {
                    Attribute::Modulus(v) => n = Some(v),
                    Attribute::PublicExponent(v) => e = Some(v),
                    Attribute::EcPoint(v) => point = Some(v),
                    _ => {}
                }
            }
            let public = match (spec, n, e, point) {
                (KeySpec::Rsa { .. }, Some(n), Some(e), _) => {
                    let k = rsa_public(&n, &e)?;
                    Ok(super::public::rsa_jwk(&k))
                }
                (KeySpec::Ec { curve }, _, _, Some(p)) => {
                    unwrap_ec_point(curve, &p).and_then(|p| ec_jwk(curve, &p))
                }
                _ => Err(CustodyError::Backend(
                    "the HSM did not return the public key".into(),
                )),
            };
            if public.is_err() {
                let _ = s.destroy_object(privh);
            }
            public
        })?;
        Ok((encode_material(vault_key, label, kind, bits, &id)?, public))
    }

    fn import(
        &self,
        vault_key: &[u8],
        label: &str,
        key: &PrivateKey,
    ) -> CustodyResult<(KeyMaterial, PublicKey)> {
        mac(vault_key, label, &[])?;
        // Validate (consistent components, supported size, d matches x/y) and normalise (the CRT
        // values) with the software code, then hand the components to the HSM.
        let (public, parts) = software::import_parts(key)?;
        let id = rand_bytes::<ID_LEN>()?;
        let mut t = Self::private_template(label, &id);
        t.push(Attribute::Class(ObjectClass::PRIVATE_KEY));
        t.push(Attribute::Sign(true));
        let (kind, bits) = match &parts {
            software::ImportParts::Rsa {
                n,
                e,
                d,
                p,
                q,
                dp,
                dq,
                qi,
            } => {
                t.push(Attribute::KeyType(KeyType::RSA));
                t.push(Attribute::Decrypt(true));
                t.push(Attribute::Modulus(n.to_vec()));
                t.push(Attribute::PublicExponent(e.to_vec()));
                t.push(Attribute::PrivateExponent(d.to_vec()));
                t.push(Attribute::Prime1(p.to_vec()));
                t.push(Attribute::Prime2(q.to_vec()));
                t.push(Attribute::Exponent1(dp.to_vec()));
                t.push(Attribute::Exponent2(dq.to_vec()));
                t.push(Attribute::Coefficient(qi.to_vec()));
                let bits = rsa_public(n, e)?.size() * 8;
                (KIND_RSA, bits as u16)
            }
            software::ImportParts::Ec { curve, d } => {
                t.push(Attribute::KeyType(KeyType::EC));
                t.push(Attribute::EcParams(ec_params(*curve)));
                t.push(Attribute::Value(d.to_vec()));
                (curve_kind(*curve), 0)
            }
        };
        self.with_session(|s| s.create_object(&t).map_err(ck("C_CreateObject")))?;
        Ok((encode_material(vault_key, label, kind, bits, &id)?, public))
    }

    fn sign(
        &self,
        vault_key: &[u8],
        m: &KeyMaterial,
        alg: SignAlg,
        digest: &[u8],
    ) -> CustodyResult<Vec<u8>> {
        let h = decode_material(vault_key, m, None)?;
        self.sign_handle(&h, alg, digest)
    }

    fn decrypt(
        &self,
        vault_key: &[u8],
        m: &KeyMaterial,
        alg: EncAlg,
        ciphertext: &[u8],
    ) -> CustodyResult<Vec<u8>> {
        let h = decode_material(vault_key, m, None)?;
        self.decrypt_handle(&h, alg, ciphertext)
    }

    fn destroy(&self, m: &KeyMaterial) -> CustodyResult<()> {
        // No vault key here: destroy by the id and label the blob names (the MAC cannot be
        // checked, and need not be: purge is authorised by the data plane, and an object whose
        // id and label both match is the one that record created).
        if m.backend != BACKEND {
            return Err(CustodyError::Material);
        }
        let (label, body) = material::decode(&m.blob)?;
        if body.len() != 3 + ID_LEN + MAC_LEN {
            return Err(CustodyError::Material);
        }
        let mut id = [0u8; ID_LEN];
        id.copy_from_slice(&body[3..3 + ID_LEN]);
        let h = Handle {
            label: label.to_string(),
            kind: body[0],
            bits: 0,
            id,
        };
        self.with_session(|s| match self.find_private(s, &h) {
            Ok(o) => s.destroy_object(o).map_err(ck("C_DestroyObject")),
            // Already gone: purge is idempotent.
            Err(CustodyError::Material) => Ok(()),
            Err(e) => Err(e),
        })
    }

    fn check_label(&self, vault_key: &[u8], label: &str, m: &KeyMaterial) -> CustodyResult<()> {
        decode_material(vault_key, m, Some(label)).map(|_| ())
    }

    fn sign_labelled(
        &self,
        vault_key: &[u8],
        label: &str,
        m: &KeyMaterial,
        alg: SignAlg,
        digest: &[u8],
    ) -> CustodyResult<Vec<u8>> {
        let h = decode_material(vault_key, m, Some(label))?;
        self.sign_handle(&h, alg, digest)
    }

    fn decrypt_labelled(
        &self,
        vault_key: &[u8],
        label: &str,
        m: &KeyMaterial,
        alg: EncAlg,
        ciphertext: &[u8],
    ) -> CustodyResult<Vec<u8>> {
        let h = decode_material(vault_key, m, Some(label))?;
        self.decrypt_handle(&h, alg, ciphertext)
    }
}

impl Pkcs11Custody {
    fn sign_handle(&self, h: &Handle, alg: SignAlg, digest: &[u8]) -> CustodyResult<Vec<u8>> {
        let mismatch = || CustodyError::AlgorithmMismatch(alg.name().into());
        match (h.kind, kind_curve(h.kind)) {
            (KIND_RSA, _) if is_rsa(alg) => {}
            (_, Some(c)) if alg.curve() == Some(c) => {}
            (KIND_RSA, _) | (_, Some(_)) => return Err(mismatch()),
            _ => return Err(CustodyError::Material),
        }
        check_digest(alg, digest)?;
        self.with_session(|s| {
            let key = self.find_private(s, h)?;
            if let Some(prefix) = digest_info_prefix(alg) {
                let mut data = prefix.to_vec();
                data.extend_from_slice(digest);
                s.sign(&Mechanism::RsaPkcs, key, &data)
                    .map_err(ck("C_Sign (RSA PKCS#1)"))
            } else if let Some(p) = pss_params(alg) {
                s.sign(&Mechanism::RsaPkcsPss(p), key, digest)
                    .map_err(ck("C_Sign (RSA PSS)"))
            } else {
                // CKM_ECDSA signs the digest and returns r||s, each the order's length.
                let sig = s
                    .sign(&Mechanism::Ecdsa, key, digest)
                    .map_err(ck("C_Sign (ECDSA)"))?;
                let want = 2 * alg.curve().map(Curve::field_len).unwrap_or(0);
                if sig.len() != want {
                    return Err(CustodyError::Backend(format!(
                        "the HSM returned a {}-byte ECDSA signature, not {want}",
                        sig.len()
                    )));
                }
                Ok(sig)
            }
        })
    }

    fn decrypt_handle(&self, h: &Handle, alg: EncAlg, ciphertext: &[u8]) -> CustodyResult<Vec<u8>> {
        if h.kind != KIND_RSA {
            return Err(CustodyError::AlgorithmMismatch(alg.name().into()));
        }
        let k = h.bits as usize / 8;
        if ciphertext.len() != k {
            return Err(CustodyError::Decrypt);
        }
        let oaep = |hash, mgf| {
            Mechanism::RsaPkcsOaep(PkcsOaepParams::new(hash, mgf, PkcsOaepSource::empty()))
        };
        let (mech, raw_flag) = match alg {
            EncAlg::RsaOaep => (
                oaep(MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
                Some(&self.oaep_raw[0]),
            ),
            EncAlg::RsaOaep256 => (
                oaep(MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
                Some(&self.oaep_raw[1]),
            ),
            EncAlg::Rsa15 => (Mechanism::RsaPkcs, None),
        };
        self.with_session(|s| {
            let key = self.find_private(s, h)?;
            let raw = raw_flag.is_some_and(|f| f.load(Ordering::Relaxed));
            if !raw {
                match s.decrypt(&mech, key, ciphertext) {
                    Ok(pt) => return Ok(pt),
                    // Whatever C_Decrypt itself answers depends on the ciphertext (SoftHSM
                    // answers CKR_GENERAL_ERROR for bad OAEP padding): one `Decrypt` for all.
                    Err(CkError::Pkcs11(_, Function::Decrypt)) => {
                        return Err(CustodyError::Decrypt)
                    }
                    // The HSM refuses the OAEP parameters (SoftHSM 2.6: SHA-1 only): decided at
                    // C_DecryptInit, before the ciphertext is seen. Fall back to a raw RSA
                    // decryption in the HSM and the OAEP decoding here, from now on.
                    Err(CkError::Pkcs11(
                        RvError::ArgumentsBad
                        | RvError::MechanismInvalid
                        | RvError::MechanismParamInvalid,
                        Function::DecryptInit,
                    )) if raw_flag.is_some() => {
                        if let Some(f) = raw_flag {
                            f.store(true, Ordering::Relaxed);
                        }
                    }
                    Err(e) => return Err(ck("C_Decrypt")(e)),
                }
            }
            let em = match s.decrypt(&Mechanism::RsaX509, key, ciphertext) {
                Ok(em) => zeroize::Zeroizing::new(em),
                Err(CkError::Pkcs11(_, Function::Decrypt)) => return Err(CustodyError::Decrypt),
                Err(e) => return Err(ck("C_Decrypt (raw RSA)")(e)),
            };
            if em.len() > k {
                return Err(CustodyError::Decrypt);
            }
            let mut padded = zeroize::Zeroizing::new(vec![0u8; k - em.len()]);
            padded.extend_from_slice(&em);
            let pt = match alg {
                EncAlg::RsaOaep => oaep::decode::<sha1::Sha1>(&padded, k),
                _ => oaep::decode::<sha2::Sha256>(&padded, k),
            };
            pt.ok_or(CustodyError::Decrypt)
        })
    }
}
