//! One suite, run against both custody backends: the software backend and the PKCS#11 backend
//! on a SoftHSM2 token made for the run. Without SoftHSM2 the HSM tests fail with a message
//! saying how to install it, unless `CIEL_SKIP_HSM_TESTS=1`.
//!
//! Signatures are checked twice: by `custody::verify` and by an independent implementation (ring
//! for RSA and ECDSA P-256/P-384, which hashes the message itself; the `p521` crate's
//! message-hashing verifier for P-521).

use ciel_core::seal::MasterKey;
use ciel_keyvault::custody::{
    self, Curve, Custody, CustodyError, EncAlg, KeyMaterial, KeySpec, Pkcs11Custody, PrivateKey,
    PublicKey, SignAlg, SoftwareCustody,
};
use sha2::Digest;
use std::path::Path;
use std::sync::{Arc, OnceLock};

const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// Debian's path, or `CIEL_SOFTHSM_MODULE` where the distribution puts it elsewhere.
fn softhsm_module() -> String {
    std::env::var("CIEL_SOFTHSM_MODULE").unwrap_or_else(|_| SOFTHSM_MODULE.to_string())
}
const TOKEN_LABEL: &str = "ciel-test";
const USER_PIN: &str = "1234-user";
const RELOGIN_TOKEN: &str = "ciel-relogin";
const RELOGIN_PIN: &str = "9999-user";

fn master() -> Arc<MasterKey> {
    Arc::new(MasterKey::from_bytes(&MasterKey::generate_bytes().unwrap()).unwrap())
}

fn software() -> Option<Arc<dyn Custody>> {
    Some(Arc::new(SoftwareCustody::new(master())))
}

/// The PKCS#11 module is process-wide (one C_Initialize, one SOFTHSM2_CONF), so every HSM test
/// of this binary shares one token and one backend; each test uses labels of its own.
fn hsm() -> Option<Arc<dyn Custody>> {
    static HSM: OnceLock<Option<Arc<Pkcs11Custody>>> = OnceLock::new();
    HSM.get_or_init(|| {
        if std::env::var("CIEL_SKIP_HSM_TESTS").as_deref() == Ok("1") {
            eprintln!("CIEL_SKIP_HSM_TESTS=1: PKCS#11 tests skipped");
            return None;
        }
        let module = softhsm_module();
        assert!(
            Path::new(&module).exists(),
            "SoftHSM2 is not installed ({module} is missing): `apt-get install softhsm2` \
             (scripts/test does; CIEL_SOFTHSM_MODULE names another path), or set \
             CIEL_SKIP_HSM_TESTS=1 to skip the PKCS#11 tests"
        );
        // Kept for the whole run (the token's files must outlive every test), so never removed:
        // under cargo's scratch directory for integration tests (target/tmp), not /tmp.
        let dir = Box::leak(Box::new(
            tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap(),
        ));
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        // Set before the module is loaded and before any test thread could read it: this runs
        // once, under the OnceLock.
        std::env::set_var("SOFTHSM2_CONF", &conf);
        // Two tokens: the suite's, and one that `pkcs11_login_is_recovered` logs out of. Both
        // before the module is loaded: SoftHSM lists its slots once, at C_Initialize.
        for (label, pin) in [(TOKEN_LABEL, USER_PIN), (RELOGIN_TOKEN, RELOGIN_PIN)] {
            let out = std::process::Command::new("softhsm2-util")
                .args([
                    "--init-token",
                    "--free",
                    "--label",
                    label,
                    "--pin",
                    pin,
                    "--so-pin",
                    "5678-so",
                ])
                .env("SOFTHSM2_CONF", &conf)
                .output()
                .expect("running softhsm2-util");
            assert!(
                out.status.success(),
                "softhsm2-util --init-token failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Some(Arc::new(
            Pkcs11Custody::new(Path::new(&module), TOKEN_LABEL, USER_PIN)
                .expect("opening the SoftHSM2 token"),
        ))
    })
    .clone()
    .map(|c| c as Arc<dyn Custody>)
}

fn vault_key() -> Vec<u8> {
    MasterKey::generate_bytes().unwrap().to_vec()
}

fn unique(label: &str) -> String {
    format!("{label}/{}", uuid::Uuid::new_v4().simple())
}

fn hash(alg: SignAlg, msg: &[u8]) -> Vec<u8> {
    match alg.digest_len() {
        32 => sha2::Sha256::digest(msg).to_vec(),
        48 => sha2::Sha384::digest(msg).to_vec(),
        _ => sha2::Sha512::digest(msg).to_vec(),
    }
}

/// Verifies with an implementation other than `custody::verify`.
fn independent_verify(key: &PublicKey, alg: SignAlg, msg: &[u8], sig: &[u8]) -> bool {
    use ring::signature as rs;
    match key {
        PublicKey::Rsa { n, e } => {
            let params: &rs::RsaParameters = match alg {
                SignAlg::RS256 => &rs::RSA_PKCS1_2048_8192_SHA256,
                SignAlg::RS384 => &rs::RSA_PKCS1_2048_8192_SHA384,
                SignAlg::RS512 => &rs::RSA_PKCS1_2048_8192_SHA512,
                SignAlg::PS256 => &rs::RSA_PSS_2048_8192_SHA256,
                SignAlg::PS384 => &rs::RSA_PSS_2048_8192_SHA384,
                SignAlg::PS512 => &rs::RSA_PSS_2048_8192_SHA512,
                _ => return false,
            };
            rs::RsaPublicKeyComponents { n, e }
                .verify(params, msg, sig)
                .is_ok()
        }
        PublicKey::Ec { curve, x, y } => {
            let mut point = vec![4u8];
            point.extend_from_slice(x);
            point.extend_from_slice(y);
            match curve {
                Curve::P256 => rs::UnparsedPublicKey::new(&rs::ECDSA_P256_SHA256_FIXED, &point)
                    .verify(msg, sig)
                    .is_ok(),
                Curve::P384 => rs::UnparsedPublicKey::new(&rs::ECDSA_P384_SHA384_FIXED, &point)
                    .verify(msg, sig)
                    .is_ok(),
                Curve::P521 => {
                    use p521::ecdsa::signature::Verifier;
                    let vk = p521::ecdsa::VerifyingKey::from_sec1_bytes(&point).unwrap();
                    let s = p521::ecdsa::Signature::from_slice(sig).unwrap();
                    vk.verify(msg, &s).is_ok()
                }
            }
        }
    }
}

fn algs_for(spec: KeySpec) -> Vec<SignAlg> {
    SignAlg::ALL
        .into_iter()
        .filter(|a| match spec {
            KeySpec::Rsa { .. } => a.curve().is_none(),
            KeySpec::Ec { curve } => a.curve() == Some(curve),
        })
        .collect()
}

fn check_signing(c: &dyn Custody, vk: &[u8], m: &KeyMaterial, public: &PublicKey, spec: KeySpec) {
    let msg = b"Ciel signs this for the test";
    for alg in SignAlg::ALL {
        let digest = hash(alg, msg);
        let fits = algs_for(spec).contains(&alg);
        let r = c.sign(vk, m, alg, &digest);
        if !fits {
            assert!(
                matches!(r, Err(CustodyError::AlgorithmMismatch(_))),
                "{alg:?} on {spec:?}: {r:?}"
            );
            assert!(matches!(
                custody::verify(public, alg, &digest, &[0u8; 64]),
                Err(CustodyError::AlgorithmMismatch(_))
            ));
            continue;
        }
        let sig = r.unwrap_or_else(|e| panic!("{alg:?} on {spec:?}: {e}"));
        if let KeySpec::Ec { curve } = spec {
            assert_eq!(sig.len(), 2 * curve.field_len(), "{alg:?}: r||s width");
        }
        assert!(
            custody::verify(public, alg, &digest, &sig).unwrap(),
            "{alg:?} on {spec:?}: custody::verify"
        );
        assert!(
            independent_verify(public, alg, msg, &sig),
            "{alg:?} on {spec:?}: independent verification"
        );
        // Another digest, a flipped bit: no.
        let other = hash(alg, b"something else");
        assert!(!custody::verify(public, alg, &other, &sig).unwrap());
        let mut bad = sig.clone();
        bad[sig.len() / 2] ^= 1;
        assert!(!custody::verify(public, alg, &digest, &bad).unwrap());
        // A signature of the wrong length is malformed.
        assert!(matches!(
            custody::verify(public, alg, &digest, &sig[1..]),
            Err(CustodyError::Invalid(_))
        ));
        // A digest of the wrong length: Invalid, when signing and verifying.
        for len in [0, alg.digest_len() - 1, alg.digest_len() + 1, 20] {
            let d = vec![7u8; len];
            assert!(
                matches!(c.sign(vk, m, alg, &d), Err(CustodyError::Invalid(_))),
                "{alg:?} with a {len}-byte digest"
            );
            assert!(matches!(
                custody::verify(public, alg, &d, &sig),
                Err(CustodyError::Invalid(_))
            ));
        }
    }
}

fn check_decryption(c: &dyn Custody, vk: &[u8], m: &KeyMaterial, public: &PublicKey) {
    let PublicKey::Rsa { n, .. } = public else {
        panic!("not RSA")
    };
    let k = n.len();
    for alg in EncAlg::ALL {
        for pt in [&b""[..], b"a 32-byte content encryption key"] {
            let ct = custody::encrypt(public, alg, pt).unwrap();
            assert_eq!(ct.len(), k);
            assert_eq!(c.decrypt(vk, m, alg, &ct).unwrap(), pt, "{alg:?}");
            // Tampered, truncated, extended: one error.
            let mut bad = ct.clone();
            bad[k / 2] ^= 0x40;
            let r = c.decrypt(vk, m, alg, &bad);
            assert!(matches!(r, Err(CustodyError::Decrypt)), "{alg:?}: {r:?}");
            assert!(matches!(
                c.decrypt(vk, m, alg, &ct[1..]),
                Err(CustodyError::Decrypt)
            ));
            let mut long = ct.clone();
            long.push(0);
            assert!(matches!(
                c.decrypt(vk, m, alg, &long),
                Err(CustodyError::Decrypt)
            ));
            // Ciphertext of another padding mode.
            let other = if alg == EncAlg::Rsa15 {
                EncAlg::RsaOaep
            } else {
                EncAlg::Rsa15
            };
            let ct2 = custody::encrypt(public, other, b"0123456789abcdef0123").unwrap();
            assert!(matches!(
                c.decrypt(vk, m, alg, &ct2),
                Err(CustodyError::Decrypt)
            ));
        }
        // The plaintext limits.
        let max = match alg {
            EncAlg::Rsa15 => k - 11,
            EncAlg::RsaOaep => k - 42,
            EncAlg::RsaOaep256 => k - 66,
        };
        let full = vec![0x5a; max];
        let ct = custody::encrypt(public, alg, &full).unwrap();
        assert_eq!(c.decrypt(vk, m, alg, &ct).unwrap(), full);
        assert!(matches!(
            custody::encrypt(public, alg, &vec![0x5a; max + 1]),
            Err(CustodyError::Invalid(_))
        ));
    }
}

fn ec_private(curve: Curve) -> PrivateKey {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    let (d, point) = match curve {
        Curve::P256 => {
            let k = p256::SecretKey::random(&mut rand_core::OsRng);
            (
                k.to_bytes().to_vec(),
                k.public_key().to_encoded_point(false).as_bytes().to_vec(),
            )
        }
        Curve::P384 => {
            let k = p384::SecretKey::random(&mut rand_core::OsRng);
            (
                k.to_bytes().to_vec(),
                k.public_key().to_encoded_point(false).as_bytes().to_vec(),
            )
        }
        Curve::P521 => {
            let k = p521::SecretKey::random(&mut rand_core::OsRng);
            (
                k.to_bytes().to_vec(),
                k.public_key().to_encoded_point(false).as_bytes().to_vec(),
            )
        }
    };
    let n = curve.field_len();
    PrivateKey::Ec {
        curve,
        x: point[1..1 + n].to_vec(),
        y: point[1 + n..].to_vec(),
        d,
    }
}

fn rsa_private(bits: usize, with_crt: bool) -> PrivateKey {
    use rsa::traits::{PrivateKeyParts, PublicKeyParts};
    let k = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, bits).unwrap();
    let p = &k.primes()[0];
    let q = &k.primes()[1];
    let crt = |v: Option<Vec<u8>>| if with_crt { v.unwrap() } else { Vec::new() };
    PrivateKey::Rsa {
        n: k.n().to_bytes_be(),
        e: k.e().to_bytes_be(),
        d: k.d().to_bytes_be(),
        p: p.to_bytes_be(),
        q: q.to_bytes_be(),
        dp: crt(k.dp().map(|v| v.to_bytes_be())),
        dq: crt(k.dq().map(|v| v.to_bytes_be())),
        qi: crt(k.crt_coefficient().map(|v| v.to_bytes_be())),
    }
}

fn public_of(k: &PrivateKey) -> PublicKey {
    match k.clone() {
        PrivateKey::Rsa { n, e, .. } => PublicKey::Rsa { n, e },
        PrivateKey::Ec { curve, x, y, .. } => PublicKey::Ec { curve, x, y },
    }
}

// ---- The suite, one function per behaviour, each taking a backend. ----

fn generate_and_sign_each_kind(c: &dyn Custody) {
    let vk = vault_key();
    for spec in [
        KeySpec::Rsa { bits: 2048 },
        KeySpec::Ec { curve: Curve::P256 },
        KeySpec::Ec { curve: Curve::P384 },
        KeySpec::Ec { curve: Curve::P521 },
    ] {
        let label = unique("vault1/key");
        let (m, public) = c.generate(&vk, &label, spec).unwrap();
        assert_eq!(m.backend, c.backend());
        match (spec, &public) {
            (KeySpec::Rsa { bits }, PublicKey::Rsa { n, e }) => {
                assert_eq!(n.len() * 8, bits as usize);
                assert_eq!(e, &[1, 0, 1]);
            }
            (KeySpec::Ec { curve }, PublicKey::Ec { curve: c2, x, y }) => {
                assert_eq!(curve, *c2);
                assert_eq!(x.len(), curve.field_len());
                assert_eq!(y.len(), curve.field_len());
            }
            _ => panic!("{spec:?} gave {public:?}"),
        }
        check_signing(c, &vk, &m, &public, spec);
        // The labelled forms accept the right label.
        let alg = algs_for(spec)[0];
        let d = hash(alg, b"x");
        let sig = c.sign_labelled(&vk, &label, &m, alg, &d).unwrap();
        assert!(custody::verify(&public, alg, &d, &sig).unwrap());
        c.check_label(&vk, &label, &m).unwrap();
        if let KeySpec::Rsa { .. } = spec {
            check_decryption(c, &vk, &m, &public);
            let ct = custody::encrypt(&public, EncAlg::RsaOaep256, b"k").unwrap();
            assert_eq!(
                c.decrypt_labelled(&vk, &label, &m, EncAlg::RsaOaep256, &ct)
                    .unwrap(),
                b"k"
            );
        } else {
            // No encryption with EC keys.
            assert!(matches!(
                c.decrypt(&vk, &m, EncAlg::RsaOaep, &[0u8; 256]),
                Err(CustodyError::AlgorithmMismatch(_))
            ));
            assert!(matches!(
                custody::encrypt(&public, EncAlg::RsaOaep, b"k"),
                Err(CustodyError::AlgorithmMismatch(_))
            ));
        }
        c.destroy(&m).unwrap();
    }
}

fn rsa_3072_and_4096(c: &dyn Custody) {
    let vk = vault_key();
    for bits in [3072, 4096] {
        let spec = KeySpec::Rsa { bits };
        let (m, public) = c.generate(&vk, &unique("vault1/big"), spec).unwrap();
        let PublicKey::Rsa { n, .. } = &public else {
            panic!()
        };
        assert_eq!(n.len() * 8, bits as usize);
        for alg in [SignAlg::RS512, SignAlg::PS256] {
            let d = hash(alg, b"big");
            let sig = c.sign(&vk, &m, alg, &d).unwrap();
            assert!(custody::verify(&public, alg, &d, &sig).unwrap());
            assert!(independent_verify(&public, alg, b"big", &sig));
        }
        let ct = custody::encrypt(&public, EncAlg::RsaOaep256, b"cek").unwrap();
        assert_eq!(c.decrypt(&vk, &m, EncAlg::RsaOaep256, &ct).unwrap(), b"cek");
        c.destroy(&m).unwrap();
    }
}

fn unsupported_sizes(c: &dyn Custody) {
    let vk = vault_key();
    for bits in [1024, 2047, 8192] {
        assert!(matches!(
            c.generate(&vk, &unique("v/k"), KeySpec::Rsa { bits }),
            Err(CustodyError::Unsupported(_))
        ));
    }
    // A vault key that is not 32 bytes is refused before anything is made.
    assert!(matches!(
        c.generate(
            &[0u8; 16],
            &unique("v/k"),
            KeySpec::Ec { curve: Curve::P256 }
        ),
        Err(CustodyError::Invalid(_))
    ));
}

fn import_then_sign(c: &dyn Custody) {
    let vk = vault_key();
    let keys = [
        (rsa_private(2048, true), KeySpec::Rsa { bits: 2048 }),
        // JWKs may leave the CRT values out.
        (rsa_private(2048, false), KeySpec::Rsa { bits: 2048 }),
        (ec_private(Curve::P256), KeySpec::Ec { curve: Curve::P256 }),
        (ec_private(Curve::P384), KeySpec::Ec { curve: Curve::P384 }),
        (ec_private(Curve::P521), KeySpec::Ec { curve: Curve::P521 }),
    ];
    for (k, spec) in keys {
        let label = unique("vault1/imported");
        let (m, public) = c.import(&vk, &label, &k).unwrap();
        assert_eq!(
            public,
            public_of(&k),
            "{spec:?}: the public key is the imported one"
        );
        check_signing(c, &vk, &m, &public, spec);
        if let KeySpec::Rsa { .. } = spec {
            let ct = custody::encrypt(&public, EncAlg::Rsa15, b"imported").unwrap();
            assert_eq!(c.decrypt(&vk, &m, EncAlg::Rsa15, &ct).unwrap(), b"imported");
        }
        c.destroy(&m).unwrap();
    }
    // Inconsistent keys are refused.
    let PrivateKey::Ec { curve, x, y, .. } = ec_private(Curve::P256) else {
        panic!()
    };
    let PrivateKey::Ec { d, .. } = ec_private(Curve::P256) else {
        panic!()
    };
    assert!(matches!(
        c.import(&vk, &unique("v/bad"), &PrivateKey::Ec { curve, x, y, d }),
        Err(CustodyError::Invalid(_))
    ));
    let PrivateKey::Rsa {
        n,
        e,
        d,
        p,
        q,
        dp,
        dq,
        ..
    } = rsa_private(2048, true)
    else {
        panic!()
    };
    assert!(matches!(
        c.import(
            &vk,
            &unique("v/bad"),
            &PrivateKey::Rsa {
                n,
                e,
                d,
                p,
                q,
                dp,
                dq,
                qi: vec![3]
            }
        ),
        Err(CustodyError::Invalid(_))
    ));
}

fn material_is_bound(c: &dyn Custody, other: &dyn Custody) {
    let vk1 = vault_key();
    let vk2 = vault_key();
    let (la, lb) = (unique("vault1/a"), unique("vault1/b"));
    let (ma, pa) = c
        .generate(&vk1, &la, KeySpec::Ec { curve: Curve::P256 })
        .unwrap();
    let (mb, _) = c
        .generate(&vk1, &lb, KeySpec::Ec { curve: Curve::P256 })
        .unwrap();
    let d = hash(SignAlg::ES256, b"bound");
    // A's material under B's name (a swapped record): refused.
    assert!(matches!(
        c.sign_labelled(&vk1, &lb, &ma, SignAlg::ES256, &d),
        Err(CustodyError::Material)
    ));
    assert!(matches!(
        c.check_label(&vk1, &lb, &ma),
        Err(CustodyError::Material)
    ));
    assert!(matches!(
        c.decrypt_labelled(&vk1, &la, &mb, EncAlg::RsaOaep, &[0u8; 256]),
        Err(CustodyError::Material)
    ));
    // The label rewritten in clear inside the blob: the authentication fails.
    let mut forged = ma.clone();
    let pos = forged
        .blob
        .windows(la.len())
        .position(|w| w == la.as_bytes())
        .unwrap();
    let lb_bytes = lb.as_bytes();
    assert_eq!(la.len(), lb.len());
    forged.blob[pos..pos + lb.len()].copy_from_slice(lb_bytes);
    assert!(matches!(
        c.sign_labelled(&vk1, &lb, &forged, SignAlg::ES256, &d),
        Err(CustodyError::Material)
    ));
    assert!(matches!(
        c.sign(&vk1, &forged, SignAlg::ES256, &d),
        Err(CustodyError::Material)
    ));
    // Another vault's key: refused.
    assert!(matches!(
        c.sign(&vk2, &ma, SignAlg::ES256, &d),
        Err(CustodyError::Material)
    ));
    assert!(matches!(
        c.sign_labelled(&vk2, &la, &ma, SignAlg::ES256, &d),
        Err(CustodyError::Material)
    ));
    // Any flipped byte: refused.
    for i in [0, 3, ma.blob.len() / 2, ma.blob.len() - 1] {
        let mut t = ma.clone();
        t.blob[i] ^= 1;
        assert!(
            matches!(
                c.sign(&vk1, &t, SignAlg::ES256, &d),
                Err(CustodyError::Material)
            ),
            "byte {i}"
        );
    }
    assert!(matches!(
        c.sign(
            &vk1,
            &KeyMaterial {
                backend: c.backend().into(),
                blob: vec![]
            },
            SignAlg::ES256,
            &d
        ),
        Err(CustodyError::Material)
    ));
    // Another backend's material: refused by both.
    let (mo, _) = other
        .generate(&vk1, &la, KeySpec::Ec { curve: Curve::P256 })
        .unwrap();
    assert!(matches!(
        c.sign(&vk1, &mo, SignAlg::ES256, &d),
        Err(CustodyError::Material)
    ));
    assert!(matches!(
        other.sign(&vk1, &ma, SignAlg::ES256, &d),
        Err(CustodyError::Material)
    ));
    // The right ones still work.
    let sig = c.sign_labelled(&vk1, &la, &ma, SignAlg::ES256, &d).unwrap();
    assert!(custody::verify(&pa, SignAlg::ES256, &d, &sig).unwrap());
    for m in [&ma, &mb] {
        c.destroy(m).unwrap();
    }
    other.destroy(&mo).unwrap();
}

fn vault_key_seal(c: &dyn Custody) {
    let vk = vault_key();
    let ctx = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/v1";
    let sealed = c.seal_vault_key(ctx, &vk).unwrap();
    assert!(!sealed.windows(8).any(|w| w == &vk[..8]), "not in clear");
    assert_eq!(c.open_vault_key(ctx, &sealed).unwrap(), vk);
    // Sealing twice gives two blobs (fresh nonce), both open.
    let again = c.seal_vault_key(ctx, &vk).unwrap();
    assert_ne!(sealed, again);
    assert_eq!(c.open_vault_key(ctx, &again).unwrap(), vk);
    // Bound to the vault it was sealed for.
    assert!(c.open_vault_key(&format!("{ctx}2"), &sealed).is_err());
    let mut t = sealed.clone();
    let last = t.len() - 1;
    t[last] ^= 1;
    assert!(c.open_vault_key(ctx, &t).is_err());
    assert!(c.open_vault_key(ctx, &sealed[..10]).is_err());
    assert!(matches!(
        c.seal_vault_key(ctx, &[1u8; 31]),
        Err(CustodyError::Invalid(_))
    ));
}

fn concurrent_use(c: Arc<dyn Custody>) {
    let vk = vault_key();
    let (m, public) = c
        .generate(&vk, &unique("vault1/busy"), KeySpec::Rsa { bits: 2048 })
        .unwrap();
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let (c, vk, m, public) = (c.clone(), vk.clone(), m.clone(), public.clone());
            std::thread::spawn(move || {
                for j in 0..5 {
                    let d = hash(SignAlg::PS256, format!("{i}/{j}").as_bytes());
                    let sig = c.sign(&vk, &m, SignAlg::PS256, &d).unwrap();
                    assert!(custody::verify(&public, SignAlg::PS256, &d, &sig).unwrap());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    c.destroy(&m).unwrap();
}

macro_rules! suite {
    ($name:ident, $make:expr, $other:expr) => {
        mod $name {
            use super::*;
            fn backend() -> Option<Arc<dyn Custody>> {
                $make
            }
            #[test]
            fn generate_and_sign_each_kind() {
                let Some(c) = backend() else { return };
                super::generate_and_sign_each_kind(&*c);
            }
            #[test]
            fn rsa_3072_and_4096() {
                let Some(c) = backend() else { return };
                super::rsa_3072_and_4096(&*c);
            }
            #[test]
            fn unsupported_sizes() {
                let Some(c) = backend() else { return };
                super::unsupported_sizes(&*c);
            }
            #[test]
            fn import_then_sign() {
                let Some(c) = backend() else { return };
                super::import_then_sign(&*c);
            }
            #[test]
            fn material_is_bound() {
                let Some(c) = backend() else { return };
                let other: Arc<dyn Custody> = match $other {
                    Some(o) => o,
                    None => return,
                };
                super::material_is_bound(&*c, &*other);
            }
            #[test]
            fn vault_key_seal() {
                let Some(c) = backend() else { return };
                super::vault_key_seal(&*c);
            }
            #[test]
            fn concurrent_use() {
                let Some(c) = backend() else { return };
                super::concurrent_use(c);
            }
        }
    };
}

suite!(software_backend, software(), hsm());
suite!(pkcs11_backend, hsm(), software());

#[test]
fn pkcs11_destroy_removes_the_object() {
    let Some(c) = hsm() else { return };
    let vk = vault_key();
    let (m, _) = c
        .generate(
            &vk,
            &unique("vault1/gone"),
            KeySpec::Ec { curve: Curve::P256 },
        )
        .unwrap();
    let d = hash(SignAlg::ES256, b"x");
    c.sign(&vk, &m, SignAlg::ES256, &d).unwrap();
    c.destroy(&m).unwrap();
    assert!(matches!(
        c.sign(&vk, &m, SignAlg::ES256, &d),
        Err(CustodyError::Material)
    ));
    // Purge is idempotent.
    c.destroy(&m).unwrap();
}

#[test]
fn backends_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<SoftwareCustody>();
    check::<Pkcs11Custody>();
}

#[test]
fn config_opens_software() {
    let c = custody::open(&custody::CustodyConfig::default(), master()).unwrap();
    assert_eq!(c.backend(), "software");
    assert!(!c.is_hsm());
}

/// A lost login (an HSM restart logs every application out) is noticed by the call that meets
/// it, which logs in again and retries. Uses a token of its own so as not to disturb the other HSM tests
/// running in the same process.
#[test]
fn pkcs11_login_is_recovered() {
    let Some(_) = hsm() else { return };
    let c = Pkcs11Custody::new(Path::new(&softhsm_module()), RELOGIN_TOKEN, RELOGIN_PIN).unwrap();
    let vk = vault_key();
    let (m, public) = c
        .generate(
            &vk,
            &unique("vault1/relogin"),
            KeySpec::Ec { curve: Curve::P256 },
        )
        .unwrap();
    let d = hash(SignAlg::ES256, b"x");
    for _ in 0..2 {
        c.logout_for_tests().unwrap();
        // The call that finds the login gone logs in again and retries.
        let sig = c.sign(&vk, &m, SignAlg::ES256, &d).unwrap();
        assert!(custody::verify(&public, SignAlg::ES256, &d, &sig).unwrap());
    }
    c.logout_for_tests().unwrap();
    let sealed = c.seal_vault_key("v", &vk).unwrap();
    assert_eq!(c.open_vault_key("v", &sealed).unwrap(), vk);
    c.destroy(&m).unwrap();
}

/// The same RSA key imported into both backends signs RS256 byte for byte alike (PKCS#1 v1.5 is
/// deterministic: the HSM's DigestInfo is the one the software backend uses), and each decrypts
/// what the other's public key encrypted.
#[test]
fn both_backends_agree() {
    let Some(h) = hsm() else { return };
    let s = software().unwrap();
    let vk = vault_key();
    let k = rsa_private(2048, true);
    let (ms, ps) = s.import(&vk, &unique("v/same"), &k).unwrap();
    let (mh, ph) = h.import(&vk, &unique("v/same"), &k).unwrap();
    assert_eq!(ps, ph);
    for alg in [SignAlg::RS256, SignAlg::RS384, SignAlg::RS512] {
        let d = hash(alg, b"same");
        assert_eq!(
            s.sign(&vk, &ms, alg, &d).unwrap(),
            h.sign(&vk, &mh, alg, &d).unwrap(),
            "{alg:?}"
        );
    }
    for alg in EncAlg::ALL {
        let ct = custody::encrypt(&ps, alg, b"shared").unwrap();
        assert_eq!(s.decrypt(&vk, &ms, alg, &ct).unwrap(), b"shared");
        assert_eq!(h.decrypt(&vk, &mh, alg, &ct).unwrap(), b"shared");
    }
    h.destroy(&mh).unwrap();
}
