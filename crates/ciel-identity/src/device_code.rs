//! The device authorization grant (RFC 8628), as Entra runs it for `az login --use-device-code`:
//! the client gets a `device_code` (its secret, for polling the token endpoint) and a short
//! `user_code` the person types on the device-login page of the login host, where they sign in
//! with their password and, when they have or must have one, their second factor.
//!
//! Pending sign-ins live in memory only: a device code lives 15 minutes, and a restart cancels the
//! sign-ins in progress (the client's next poll gets `expired_token` and the person starts again).
//! Device codes and page tokens are 256-bit random values kept as their SHA-256; user codes are
//! 9 characters of a 31-letter alphabet (44 bits) and wrong ones count per client address, so that
//! guessing one in its 15 minutes is out of reach.

use rand::{Rng, RngCore};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

/// How long a device code is valid, seconds (Entra: 15 minutes).
pub const DEVICE_CODE_LIFETIME: i64 = 900;
/// Seconds the client waits between polls.
pub const POLL_INTERVAL: i64 = 5;
/// Wrong user codes from one address within `USER_CODE_WINDOW` before that address is refused.
pub const USER_CODE_ATTEMPTS: u32 = 10;
pub const USER_CODE_WINDOW: i64 = 15 * 60;
/// How long one step of the device-login page may wait for the person.
const PAGE_STEP_LIFETIME: i64 = 10 * 60;
/// No vowels (no words), no 0/O, 1/I/L.
const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKMNPQRSTVWXZ23456789";
const USER_CODE_LEN: usize = 9;

type Hash = [u8; 32];

fn hash(s: &str) -> Hash {
    Sha256::digest(s.as_bytes()).into()
}

fn random_token(prefix: &str) -> String {
    use base64::Engine;
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    )
}

/// What the client asked for, kept until the token is issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRequest {
    /// The tenant segment of the request: a GUID or an alias (`organizations`, `common`).
    pub tenant: String,
    pub client_id: String,
    pub scope: Option<String>,
    pub resource: Option<String>,
}

/// The answer of the device authorization endpoint.
#[derive(Debug, Clone)]
pub struct DeviceStart {
    pub device_code: String,
    pub user_code: String,
    pub expires_in: i64,
    pub interval: i64,
}

/// A sign-in the person approved on the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    pub object_id: String,
    /// A second factor was verified.
    pub mfa: bool,
}

/// Why a poll gives no token (each is an OAuth2 error of the token endpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollError {
    Pending,
    SlowDown,
    Expired,
    Declined,
    /// Unknown device code, or one issued to another client.
    BadCode,
}

/// Where the person stands on the device-login page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageStep {
    /// Username and password.
    Credentials,
    /// A code of the user's confirmed factor.
    Totp { object_id: String },
    /// The first code of a factor enrolled on this page.
    Enrol { object_id: String },
}

/// Why the page refuses a user code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserCodeError {
    /// Unknown or expired: counts against the address.
    Wrong,
    /// Too many wrong codes from this address: wait.
    Throttled,
}

#[derive(Debug)]
enum State {
    Pending,
    Approved(Approval),
    Declined,
}

#[derive(Debug)]
struct Flow {
    request: DeviceRequest,
    user_code: String,
    expires: i64,
    /// Milliseconds, for `slow_down`.
    last_poll_ms: Option<i64>,
    state: State,
}

#[derive(Debug)]
struct Page {
    device: Hash,
    step: PageStep,
    expires: i64,
}

#[derive(Default)]
struct Inner {
    flows: HashMap<Hash, Flow>,
    by_user_code: HashMap<String, Hash>,
    pages: HashMap<Hash, Page>,
    /// Per client address: wrong user codes and the start of their window.
    wrong: HashMap<String, (u32, i64)>,
}

pub struct DeviceFlows {
    inner: Mutex<Inner>,
    lifetime: AtomicI64,
}

impl Default for DeviceFlows {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            lifetime: AtomicI64::new(DEVICE_CODE_LIFETIME),
        }
    }
}

/// Upper case, without the separators people type (`ABC-DEF GHI`).
pub fn normalize_user_code(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .take(32)
        .collect()
}

impl DeviceFlows {
    pub fn new() -> Self {
        Self::default()
    }

    /// A shorter lifetime, for tests of expiry (`CIEL_DEVICE_CODE_LIFETIME_SECS`).
    pub fn set_lifetime(&self, secs: i64) {
        self.lifetime
            .store(secs.clamp(1, DEVICE_CODE_LIFETIME), Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent maps (every change is one insert or
        // remove), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn purge(inner: &mut Inner, now: i64) {
        // Expired flows are kept one lifetime longer so that their client hears `expired_token`
        // rather than `bad_verification_code`.
        let grace = DEVICE_CODE_LIFETIME;
        let gone: Vec<Hash> = inner
            .flows
            .iter()
            .filter(|(_, f)| f.expires + grace < now)
            .map(|(h, _)| *h)
            .collect();
        for h in gone {
            if let Some(f) = inner.flows.remove(&h) {
                inner.by_user_code.remove(&f.user_code);
            }
        }
        inner.pages.retain(|_, p| p.expires >= now);
        inner
            .wrong
            .retain(|_, (_, start)| *start + USER_CODE_WINDOW >= now);
    }

    pub fn start(&self, request: DeviceRequest, now: i64) -> DeviceStart {
        let lifetime = self.lifetime.load(Ordering::Relaxed);
        let device_code = random_token("ciel.dc.");
        let mut inner = self.lock();
        Self::purge(&mut inner, now);
        let user_code = loop {
            let mut rng = rand::rngs::OsRng;
            let c: String = (0..USER_CODE_LEN)
                .map(|_| USER_CODE_ALPHABET[rng.gen_range(0..USER_CODE_ALPHABET.len())] as char)
                .collect();
            if !inner.by_user_code.contains_key(&c) {
                break c;
            }
        };
        let h = hash(&device_code);
        inner.by_user_code.insert(user_code.clone(), h);
        inner.flows.insert(
            h,
            Flow {
                request,
                user_code: user_code.clone(),
                expires: now + lifetime,
                last_poll_ms: None,
                state: State::Pending,
            },
        );
        DeviceStart {
            device_code,
            user_code,
            expires_in: lifetime,
            interval: POLL_INTERVAL,
        }
    }

    /// The token endpoint's poll. An approved or declined flow is answered once, then forgotten.
    pub fn poll(
        &self,
        device_code: &str,
        client_id: &str,
        now_ms: i64,
    ) -> Result<(DeviceRequest, Approval), PollError> {
        let now = now_ms / 1000;
        let h = hash(device_code);
        let mut inner = self.lock();
        Self::purge(&mut inner, now);
        let Some(f) = inner.flows.get_mut(&h) else {
            return Err(PollError::BadCode);
        };
        if f.request.client_id != client_id {
            return Err(PollError::BadCode);
        }
        if f.expires < now {
            let uc = f.user_code.clone();
            inner.flows.remove(&h);
            inner.by_user_code.remove(&uc);
            inner.pages.retain(|_, p| p.device != h);
            return Err(PollError::Expired);
        }
        match &f.state {
            State::Pending => {
                // One second of slack, as MSAL allows itself.
                let too_soon = f
                    .last_poll_ms
                    .map(|t| now_ms - t < (POLL_INTERVAL - 1) * 1000)
                    .unwrap_or(false);
                f.last_poll_ms = Some(now_ms);
                Err(if too_soon {
                    PollError::SlowDown
                } else {
                    PollError::Pending
                })
            }
            State::Approved(_) | State::Declined => {
                let Some(f) = inner.flows.remove(&h) else {
                    return Err(PollError::BadCode);
                };
                inner.by_user_code.remove(&f.user_code);
                match f.state {
                    State::Approved(a) => Ok((f.request, a)),
                    _ => Err(PollError::Declined),
                }
            }
        }
    }

    /// The page's first step: a user code from `client` (an address). Returns the token of the
    /// credentials step.
    pub fn enter_user_code(
        &self,
        user_code: &str,
        client: &str,
        now: i64,
    ) -> Result<String, UserCodeError> {
        let mut inner = self.lock();
        Self::purge(&mut inner, now);
        if let Some((n, _)) = inner.wrong.get(client) {
            if *n >= USER_CODE_ATTEMPTS {
                return Err(UserCodeError::Throttled);
            }
        }
        let code = normalize_user_code(user_code);
        let found = inner.by_user_code.get(&code).copied().filter(|h| {
            inner
                .flows
                .get(h)
                .map(|f| f.expires >= now && matches!(f.state, State::Pending))
                .unwrap_or(false)
        });
        let Some(device) = found else {
            let e = inner.wrong.entry(client.to_string()).or_insert((0, now));
            e.0 += 1;
            return Err(UserCodeError::Wrong);
        };
        Ok(Self::new_page(
            &mut inner,
            device,
            PageStep::Credentials,
            now,
        ))
    }

    fn new_page(inner: &mut Inner, device: Hash, step: PageStep, now: i64) -> String {
        let token = random_token("");
        inner.pages.insert(
            hash(&token),
            Page {
                device,
                step,
                expires: now + PAGE_STEP_LIFETIME,
            },
        );
        token
    }

    /// Takes a page token (each is good for one submission) and returns its step and the
    /// request of its flow, if the flow is still waiting.
    pub fn take_page(
        &self,
        token: &str,
        now: i64,
    ) -> Option<(PageHandle, PageStep, DeviceRequest)> {
        let mut inner = self.lock();
        Self::purge(&mut inner, now);
        let p = inner.pages.remove(&hash(token))?;
        let f = inner.flows.get(&p.device)?;
        if f.expires < now || !matches!(f.state, State::Pending) {
            return None;
        }
        Some((PageHandle(p.device), p.step, f.request.clone()))
    }

    /// The next step of the page for the same flow; `None` when the flow is gone.
    pub fn next_page(&self, h: &PageHandle, step: PageStep, now: i64) -> Option<String> {
        let mut inner = self.lock();
        if !inner.flows.contains_key(&h.0) {
            return None;
        }
        Some(Self::new_page(&mut inner, h.0, step, now))
    }

    /// The person signed in: the next poll gets the tokens.
    pub fn approve(&self, h: &PageHandle, approval: Approval) -> bool {
        self.settle(h, State::Approved(approval))
    }

    /// The person refused (or the sign-in cannot succeed): the next poll gets
    /// `authorization_declined`.
    pub fn decline(&self, h: &PageHandle) -> bool {
        self.settle(h, State::Declined)
    }

    fn settle(&self, h: &PageHandle, state: State) -> bool {
        let mut inner = self.lock();
        inner.pages.retain(|_, p| p.device != h.0);
        match inner.flows.get_mut(&h.0) {
            Some(f) if matches!(f.state, State::Pending) => {
                f.state = state;
                true
            }
            _ => false,
        }
    }
}

/// A flow the page is working on (opaque outside this module).
#[derive(Debug, Clone)]
pub struct PageHandle(Hash);

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> DeviceRequest {
        DeviceRequest {
            tenant: "organizations".into(),
            client_id: "cli".into(),
            scope: None,
            resource: None,
        }
    }

    #[test]
    fn pending_slow_down_approve_once() {
        let d = DeviceFlows::new();
        let s = d.start(req(), 1000);
        assert_eq!(s.user_code.len(), USER_CODE_LEN);
        assert_eq!(s.expires_in, DEVICE_CODE_LIFETIME);
        let ms = 1000 * 1000;
        assert_eq!(d.poll(&s.device_code, "cli", ms), Err(PollError::Pending));
        assert_eq!(
            d.poll(&s.device_code, "cli", ms + 1000),
            Err(PollError::SlowDown)
        );
        assert_eq!(
            d.poll(&s.device_code, "cli", ms + 6000),
            Err(PollError::Pending)
        );
        // Another client cannot redeem it.
        assert_eq!(
            d.poll(&s.device_code, "other", ms + 12000),
            Err(PollError::BadCode)
        );
        let t = d
            .enter_user_code(&format!(" {}-", s.user_code.to_lowercase()), "ip", 1001)
            .unwrap();
        let (h, step, _) = d.take_page(&t, 1002).unwrap();
        assert_eq!(step, PageStep::Credentials);
        // A page token is good once.
        assert!(d.take_page(&t, 1002).is_none());
        let t2 = d
            .next_page(
                &h,
                PageStep::Totp {
                    object_id: "u".into(),
                },
                1003,
            )
            .unwrap();
        assert!(d.approve(
            &h,
            Approval {
                object_id: "u".into(),
                mfa: true
            }
        ));
        // Approved: the page's tokens are void, the code no longer enters.
        assert!(d.take_page(&t2, 1004).is_none());
        assert_eq!(
            d.enter_user_code(&s.user_code, "ip", 1004),
            Err(UserCodeError::Wrong)
        );
        let (_, a) = d.poll(&s.device_code, "cli", ms + 20000).unwrap();
        assert!(a.mfa);
        // Single use.
        assert_eq!(
            d.poll(&s.device_code, "cli", ms + 30000),
            Err(PollError::BadCode)
        );
    }

    #[test]
    fn expiry_decline_and_throttle() {
        let d = DeviceFlows::new();
        d.set_lifetime(10);
        let s = d.start(req(), 0);
        assert_eq!(s.expires_in, 10);
        assert_eq!(
            d.enter_user_code(&s.user_code, "ip", 11),
            Err(UserCodeError::Wrong)
        );
        assert_eq!(
            d.poll(&s.device_code, "cli", 11_000),
            Err(PollError::Expired)
        );
        assert_eq!(
            d.poll(&s.device_code, "cli", 17_000),
            Err(PollError::BadCode)
        );

        let s = d.start(req(), 100);
        let t = d.enter_user_code(&s.user_code, "ip2", 100).unwrap();
        let (h, _, _) = d.take_page(&t, 100).unwrap();
        assert!(d.decline(&h));
        assert_eq!(
            d.poll(&s.device_code, "cli", 101_000),
            Err(PollError::Declined)
        );

        let s = d.start(req(), 200);
        for _ in 0..USER_CODE_ATTEMPTS - 1 {
            assert_eq!(
                d.enter_user_code("BBBBBBBBB", "ip3", 200),
                Err(UserCodeError::Wrong)
            );
        }
        // The first wrong code of the window counted too: the tenth is the last.
        assert_eq!(
            d.enter_user_code("BBBBBBBBB", "ip3", 200),
            Err(UserCodeError::Wrong)
        );
        assert_eq!(
            d.enter_user_code(&s.user_code, "ip3", 201),
            Err(UserCodeError::Throttled)
        );
        // Another address is not affected; the window passes.
        assert!(d.enter_user_code(&s.user_code, "ip4", 201).is_ok());
        assert_eq!(
            d.enter_user_code("BBBBBBBBB", "ip3", 200 + USER_CODE_WINDOW + 1),
            Err(UserCodeError::Wrong)
        );
    }
}
