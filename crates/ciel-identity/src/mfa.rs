//! Second factor: TOTP (RFC 6238: HMAC-SHA1, 6 digits, 30-second steps), as every authenticator
//! app implements it. Shared by tenant users (SecNumCloud 9.6.f: administrators) and by operators.
//!
//! - The secret is 160 random bits, sealed under the master key and bound to its subject (the
//!   sealing purpose names it), so that a sealed secret copied onto another row does not open.
//! - A code is accepted for the current step and one step either side (clock drift of the phone),
//!   compared in constant time, and each step is accepted once: the store refuses a step not later
//!   than the last one accepted, atomically.
//! - Wrong codes count; at `MFA_LOCKOUT_THRESHOLD` the factor locks for `MFA_LOCKOUT_SECS`
//!   (SecNumCloud 9.5.b), during which no code is even evaluated.
//! - Every enrolment, success, failure, replay and lock is an audit entry.

use ciel_core::audit::AuditDraft;
use ciel_core::seal::MasterKey;
use ciel_store::{MfaFactor, Store, StoreError};
use rand::RngCore;
use serde_json::json;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, TOTP};

pub const TOTP_DIGITS: usize = 6;
pub const TOTP_STEP_SECS: u64 = 30;
/// Steps accepted either side of the current one.
pub const TOTP_SKEW: u8 = 1;
/// Wrong codes before the factor locks, and for how long.
pub const MFA_LOCKOUT_THRESHOLD: i64 = 5;
pub const MFA_LOCKOUT_SECS: i64 = 15 * 60;
const SECRET_BYTES: usize = 20;

/// Who is trying, for the audit entry.
pub struct MfaAttempt<'a> {
    /// The subject's display: a UPN, `operator:{name}`.
    pub actor: &'a str,
    pub request_id: Option<&'a str>,
    pub client_ip: Option<&'a str>,
}

/// What a new enrolment gives the person, once: the secret for an authenticator app.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Enrolment {
    /// Base32 (RFC 4648, no padding), as apps take it when typed.
    pub secret: String,
    /// `otpauth://totp/...`, as apps take it from a QR code.
    pub otpauth_uri: String,
    pub digits: usize,
    pub period: u64,
    pub algorithm: &'static str,
}

/// The state of a subject's factor, without its secret.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MfaStatus {
    pub enrolled: bool,
    pub confirmed: bool,
    pub locked_until: Option<i64>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MfaError {
    #[error("no second factor is enrolled")]
    NotEnrolled,
    #[error("the second factor is locked after repeated wrong codes until {0}")]
    Locked(i64),
    #[error("the code is wrong")]
    Invalid,
    #[error("the code was already used")]
    Replayed,
    #[error("internal: {0}")]
    Internal(String),
}

impl From<StoreError> for MfaError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => MfaError::NotEnrolled,
            other => MfaError::Internal(other.to_string()),
        }
    }
}

pub struct Mfa {
    store: Store,
    master: Arc<MasterKey>,
    /// Shown by authenticator apps above the code.
    issuer: String,
}

fn purpose(subject: &str) -> String {
    format!("ciel/mfa-totp/{subject}")
}

fn totp(secret: Vec<u8>) -> Result<TOTP, MfaError> {
    TOTP::new(
        Algorithm::SHA1,
        TOTP_DIGITS,
        TOTP_SKEW,
        TOTP_STEP_SECS,
        secret,
    )
    .map_err(|e| MfaError::Internal(format!("TOTP parameters: {e}")))
}

/// The time step a code matches within the skew window, comparing in constant time.
fn matching_step(t: &TOTP, code: &str, now: u64) -> Option<u64> {
    if code.len() != TOTP_DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let current = now / TOTP_STEP_SECS;
    let mut found = None;
    // Every candidate is computed and compared, so that the time taken says nothing about which.
    for step in current.saturating_sub(TOTP_SKEW as u64)..=current + TOTP_SKEW as u64 {
        let expected = t.generate(step * TOTP_STEP_SECS);
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
            found = Some(step);
        }
    }
    found
}

/// Percent-encodes everything but unreserved characters (RFC 3986), for the otpauth label.
fn percent(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'@') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Mfa {
    pub fn new(store: Store, master: Arc<MasterKey>, issuer: impl Into<String>) -> Arc<Self> {
        Arc::new(Self {
            store,
            master,
            issuer: issuer.into(),
        })
    }

    fn draft(
        &self,
        a: &MfaAttempt,
        tenant: Option<&str>,
        subject: &str,
        action: &str,
        outcome: &str,
        details: serde_json::Value,
    ) -> AuditDraft {
        AuditDraft {
            tenant_id: tenant.map(str::to_string),
            actor: a.actor.to_string(),
            action: format!("identity/mfa/{action}"),
            target: subject.to_string(),
            outcome: outcome.into(),
            details,
            request_id: a.request_id.map(str::to_string),
            client_ip: a.client_ip.map(str::to_string),
        }
    }

    /// Creates a new, unconfirmed factor for `subject` (replacing any previous one) and returns its
    /// secret, which is shown once. The factor protects nothing until a first code confirms it.
    pub fn enroll(
        &self,
        subject: &str,
        tenant: Option<&str>,
        account: &str,
        a: &MfaAttempt,
    ) -> Result<Enrolment, MfaError> {
        let mut secret = vec![0u8; SECRET_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let t = totp(secret.clone())?;
        let sealed = self
            .master
            .seal(&purpose(subject), &secret)
            .map_err(|e| MfaError::Internal(e.to_string()))?;
        let f = MfaFactor {
            subject: subject.to_string(),
            tenant_id: tenant.map(str::to_string),
            kind: "totp".into(),
            sealed_secret: sealed,
            confirmed: false,
            last_step: 0,
            failed: 0,
            locked_until: None,
            created: ciel_core::time::now_unix(),
        };
        let d = self.draft(
            a,
            tenant,
            subject,
            "enroll",
            "success",
            json!({"kind": "totp"}),
        );
        self.store.put_mfa_factor(&f, &d)?;
        let b32 = t.get_secret_base32();
        let uri = format!(
            "otpauth://totp/{}:{}?secret={b32}&issuer={}&algorithm=SHA1&digits={TOTP_DIGITS}&period={TOTP_STEP_SECS}",
            percent(&self.issuer),
            percent(account),
            percent(&self.issuer)
        );
        Ok(Enrolment {
            secret: b32,
            otpauth_uri: uri,
            digits: TOTP_DIGITS,
            period: TOTP_STEP_SECS,
            algorithm: "SHA1",
        })
    }

    pub fn status(&self, subject: &str) -> Result<MfaStatus, MfaError> {
        match self.store.get_mfa_factor(subject) {
            Ok(f) => Ok(MfaStatus {
                enrolled: true,
                confirmed: f.confirmed,
                locked_until: f.locked_until,
            }),
            Err(StoreError::NotFound) => Ok(MfaStatus {
                enrolled: false,
                confirmed: false,
                locked_until: None,
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// True when `subject` has a confirmed factor (and so must give a code to sign in).
    pub fn is_required(&self, subject: &str) -> Result<bool, MfaError> {
        Ok(self.status(subject)?.confirmed)
    }

    /// Checks a code at the current time. The first good code also confirms a new enrolment.
    pub fn verify(&self, subject: &str, code: &str, a: &MfaAttempt) -> Result<(), MfaError> {
        self.verify_at(subject, code, a, ciel_core::time::now_unix())
    }

    pub fn verify_at(
        &self,
        subject: &str,
        code: &str,
        a: &MfaAttempt,
        now: i64,
    ) -> Result<(), MfaError> {
        let f = self.store.get_mfa_factor(subject)?;
        let tenant = f.tenant_id.as_deref();
        if let Some(until) = f.locked_until.filter(|u| *u > now) {
            let d = self.draft(
                a,
                tenant,
                subject,
                "verify",
                "denied",
                json!({"reason": "locked"}),
            );
            self.store.append_audit(std::slice::from_ref(&d))?;
            return Err(MfaError::Locked(until));
        }
        let secret = self
            .master
            .open(&purpose(subject), &f.sealed_secret)
            .map_err(|e| MfaError::Internal(format!("cannot unseal the second factor: {e}")))?;
        let t = totp(secret)?;
        let code = code.trim();
        match matching_step(&t, code, now.max(0) as u64) {
            Some(step) if (step as i64) > f.last_step => {
                let d = self.draft(a, tenant, subject, "verify", "success", json!({}));
                if self.store.mfa_accept_step(subject, step as i64, &d)? {
                    Ok(())
                } else {
                    self.fail(&f, a, now, "replayed")?;
                    Err(MfaError::Replayed)
                }
            }
            Some(_) => {
                self.fail(&f, a, now, "replayed")?;
                Err(MfaError::Replayed)
            }
            None => {
                self.fail(&f, a, now, "wrong code")?;
                Err(MfaError::Invalid)
            }
        }
    }

    fn fail(&self, f: &MfaFactor, a: &MfaAttempt, now: i64, reason: &str) -> Result<(), MfaError> {
        let failed = f.failed + 1;
        let (failed, lock) = if failed >= MFA_LOCKOUT_THRESHOLD {
            (0, Some(now + MFA_LOCKOUT_SECS))
        } else {
            (failed, None)
        };
        let d = self.draft(
            a,
            f.tenant_id.as_deref(),
            &f.subject,
            "verify",
            "denied",
            json!({"reason": reason, "locked_until": lock}),
        );
        self.store
            .mfa_record_failure(&f.subject, failed, lock, &d)?;
        Ok(())
    }

    /// Removes a subject's factor (an administrator's reset, or the subject's own removal).
    pub fn reset(&self, subject: &str, a: &MfaAttempt) -> Result<(), MfaError> {
        let tenant = self.store.get_mfa_factor(subject)?.tenant_id;
        let d = self.draft(a, tenant.as_deref(), subject, "reset", "success", json!({}));
        self.store.delete_mfa_factor(subject, &d)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, Arc<Mfa>) {
        let dir = tempfile::tempdir().unwrap();
        let store: Store =
            Arc::new(ciel_store::sqlite::SqliteStore::open(&dir.path().join("t.db")).unwrap());
        let master = Arc::new(MasterKey::from_bytes(&[7u8; 32]).unwrap());
        (dir, Mfa::new(store, master, "Ciel test"))
    }

    fn who() -> MfaAttempt<'static> {
        MfaAttempt {
            actor: "alice@example",
            request_id: None,
            client_ip: None,
        }
    }

    fn code_for(e: &Enrolment, at: i64) -> String {
        let secret = totp_rs::Secret::Encoded(e.secret.clone())
            .to_bytes()
            .unwrap();
        totp(secret).unwrap().generate(at as u64)
    }

    #[test]
    fn rfc6238_sha1_vector() {
        // RFC 6238 appendix B, SHA-1 seed, T = 59 s: 94287082 (8 digits); the 6-digit code is its tail.
        let t = totp(b"12345678901234567890".to_vec()).unwrap();
        assert_eq!(t.generate(59), "287082");
        assert_eq!(matching_step(&t, "287082", 59), Some(1));
        assert_eq!(matching_step(&t, "287082", 59 + 30), Some(1));
        assert_eq!(matching_step(&t, "287082", 59 + 90), None);
        assert_eq!(matching_step(&t, "28708", 59), None);
        assert_eq!(matching_step(&t, "28708x", 59), None);
    }

    #[test]
    fn enrol_confirm_replay_and_lockout() {
        let (_d, m) = setup();
        assert_eq!(m.verify("u", "000000", &who()), Err(MfaError::NotEnrolled));
        let e = m.enroll("u", Some("t"), "alice@example", &who()).unwrap();
        assert!(e
            .otpauth_uri
            .starts_with("otpauth://totp/Ciel%20test:alice@example?secret="));
        assert!(!m.is_required("u").unwrap());
        let now = 1_800_000_000;
        let c = code_for(&e, now);
        m.verify_at("u", &c, &who(), now).unwrap();
        assert!(m.is_required("u").unwrap());
        // The same code again, even a few seconds later in the same step: a replay.
        assert_eq!(
            m.verify_at("u", &c, &who(), now + 5),
            Err(MfaError::Replayed)
        );
        // The previous step's code, still inside the skew window, is older than the accepted one.
        let prev = code_for(&e, now - 30);
        assert_eq!(
            m.verify_at("u", &prev, &who(), now),
            Err(MfaError::Replayed)
        );
        // The next step is fine.
        m.verify_at("u", &code_for(&e, now + 30), &who(), now + 30)
            .unwrap();
        // Wrong codes lock the factor; while locked even the right code is refused.
        let later = now + 300;
        for _ in 0..MFA_LOCKOUT_THRESHOLD {
            let bad = if code_for(&e, later) == "123456" {
                "654321"
            } else {
                "123456"
            };
            assert_eq!(m.verify_at("u", bad, &who(), later), Err(MfaError::Invalid));
        }
        let good = code_for(&e, later);
        assert!(matches!(
            m.verify_at("u", &good, &who(), later),
            Err(MfaError::Locked(_))
        ));
        let after = later + MFA_LOCKOUT_SECS + 60;
        m.verify_at("u", &code_for(&e, after), &who(), after)
            .unwrap();
        m.reset("u", &who()).unwrap();
        assert!(!m.status("u").unwrap().enrolled);
    }

    #[test]
    fn a_sealed_secret_does_not_open_for_another_subject() {
        let (_d, m) = setup();
        let e = m.enroll("u1", None, "a", &who()).unwrap();
        m.enroll("u2", None, "b", &who()).unwrap();
        let mut f1 = m.store.get_mfa_factor("u1").unwrap();
        f1.subject = "u2".into();
        m.store
            .put_mfa_factor(&f1, &m.draft(&who(), None, "u2", "t", "success", json!({})))
            .unwrap();
        let now = 1_800_000_000;
        assert!(matches!(
            m.verify_at("u2", &code_for(&e, now), &who(), now),
            Err(MfaError::Internal(_))
        ));
    }
}
