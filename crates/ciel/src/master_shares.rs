//! The platform master key split with Shamir's scheme: `ciel keys split-master` writes N share
//! files of which any K rebuild the key, and `ciel up` with `CIEL_MASTER_KEY_SHARES=f1,f2,...`
//! rebuilds it in memory at start. No share, and no set of fewer than K, tells anything about
//! the key (Shamir over GF(256), byte by byte, with the `blahaj` crate).
//!
//! A share file is text, one `name: value` per line:
//!
//! ```text
//! format: ciel-master-share/1
//! set: 16 hex       random, the same for the N shares of one split
//! index: i          1..=N, also the first byte of `share`
//! threshold: K
//! shares: N
//! check: 32 hex     HMAC-SHA256(key, "ciel/master-key-check/v1"), first 16 bytes
//! share: hex        x || y (33 bytes for a 32-byte key)
//! digest: 16 hex    SHA-256 of the lines above, first 8 bytes
//! ```
//!
//! The digest names a file damaged by accident (a typo when copied by hand); the check value
//! proves the rebuilt key, so a share altered on purpose (digest recomputed) is caught too, and a
//! wrong key never reaches the data directory. The check value is a one-way function of a 256-bit
//! key: it reveals nothing usable.

use crate::platform::{self, DataDir};
use anyhow::{anyhow, bail, Context, Result};
use blahaj::{Share, Sharks};
use ciel_store::MetadataStore;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

const FORMAT: &str = "ciel-master-share/1";
/// The store setting that records a split (set, K, N, check), so that a start without the key
/// says how to give the shares.
pub const SETTING: &str = "master.shares";

/// One parsed share file.
#[derive(Clone)]
pub struct ShareFile {
    pub set: String,
    pub index: u8,
    pub threshold: u8,
    pub shares: u8,
    pub check: String,
    share: Zeroizing<Vec<u8>>,
}

fn check_value(key: &[u8]) -> Result<String> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).map_err(|_| anyhow!("bad key"))?;
    m.update(b"ciel/master-key-check/v1");
    Ok(hex::encode(&m.finalize().into_bytes()[..16]))
}

fn body(f: &ShareFile) -> String {
    format!(
        "format: {FORMAT}\nset: {}\nindex: {}\nthreshold: {}\nshares: {}\ncheck: {}\nshare: {}\n",
        f.set,
        f.index,
        f.threshold,
        f.shares,
        f.check,
        hex::encode(&*f.share)
    )
}

fn digest(body: &str) -> String {
    hex::encode(&Sha256::digest(body.as_bytes())[..8])
}

impl ShareFile {
    /// The file's text: a comment for whoever finds it, the fields, the digest.
    pub fn render(&self) -> String {
        let b = body(self);
        format!(
            "# Ciel platform master key, share {} of {} (any {} rebuild the key).\n\
             # Keep it apart from the other shares. Start Ciel with\n\
             # CIEL_MASTER_KEY_SHARES=<{} share files, comma-separated>.\n{b}digest: {}\n",
            self.index,
            self.shares,
            self.threshold,
            self.threshold,
            digest(&b)
        )
    }

    pub fn parse(text: &str) -> Result<Self> {
        let mut fields = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line
                .split_once(':')
                .ok_or_else(|| anyhow!("not a Ciel master key share (line {line:?})"))?;
            if fields
                .insert(k.trim().to_string(), v.trim().to_string())
                .is_some()
            {
                bail!("not a Ciel master key share ({} given twice)", k.trim());
            }
        }
        let get = |k: &str| {
            fields
                .get(k)
                .cloned()
                .ok_or_else(|| anyhow!("not a Ciel master key share (no {k})"))
        };
        if get("format")? != FORMAT {
            bail!("not a Ciel master key share (format is not {FORMAT})");
        }
        let num = |k: &str| -> Result<u8> {
            get(k)?
                .parse::<u8>()
                .map_err(|_| anyhow!("the share is corrupt ({k})"))
        };
        let share = Zeroizing::new(
            hex::decode(get("share")?).map_err(|_| anyhow!("the share is corrupt (share)"))?,
        );
        let f = ShareFile {
            set: get("set")?,
            index: num("index")?,
            threshold: num("threshold")?,
            shares: num("shares")?,
            check: get("check")?,
            share,
        };
        // The digest covers the fields as they are re-rendered, so any change to one is seen.
        if digest(&body(&f)) != get("digest")? {
            bail!("the share is corrupt (its digest does not match; was it copied exactly?)");
        }
        if f.share.len() < 2 || f.share[0] != f.index || f.index == 0 {
            bail!("the share is corrupt (index)");
        }
        Ok(f)
    }
}

/// Splits `key` into `n` shares of which `k` rebuild it.
pub fn split(key: &[u8], n: u8, k: u8) -> Result<Vec<ShareFile>> {
    if k < 2 {
        bail!("the threshold must be at least 2 (with 1, every share is the key)");
    }
    if k > n {
        bail!("the threshold ({k}) cannot exceed the number of shares ({n})");
    }
    let mut set = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut set)
        .map_err(|_| anyhow!("the system random generator failed"))?;
    let set = hex::encode(set);
    let check = check_value(key)?;
    // The dealer draws each polynomial's coefficients from a CSPRNG (rand's ThreadRng, seeded
    // from the OS); x runs 1, 2, ... N.
    let shares: Vec<ShareFile> = Sharks(k)
        .dealer(key)
        .take(n as usize)
        .map(|s| {
            let bytes = Zeroizing::new(Vec::from(&s));
            ShareFile {
                set: set.clone(),
                index: bytes[0],
                threshold: k,
                shares: n,
                check: check.clone(),
                share: bytes,
            }
        })
        .collect();
    if shares.len() != n as usize {
        bail!("could not make {n} shares");
    }
    Ok(shares)
}

/// Rebuilds the key from named shares (the names are the files', for the messages).
pub fn combine(shares: &[(String, ShareFile)]) -> Result<Zeroizing<Vec<u8>>> {
    let Some((first_name, first)) = shares.first() else {
        bail!("no master key share given");
    };
    let mut seen: BTreeMap<u8, &str> = BTreeMap::new();
    for (name, s) in shares {
        if s.set != first.set
            || s.threshold != first.threshold
            || s.shares != first.shares
            || s.check != first.check
        {
            bail!(
                "the master key shares {first_name} and {name} come from different splits \
                 (sets {} and {}); give shares of one split only",
                first.set,
                s.set
            );
        }
        if let Some(other) = seen.insert(s.index, name) {
            bail!(
                "the master key shares {other} and {name} are the same share (index {})",
                s.index
            );
        }
    }
    if shares.len() < first.threshold as usize {
        bail!(
            "{} master key share(s) given; {} of the {} are needed",
            shares.len(),
            first.threshold,
            first.shares
        );
    }
    let parsed: Vec<Share> = shares
        .iter()
        .map(|(_, s)| Share::try_from(s.share.as_slice()))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| anyhow!("a master key share is corrupt: {e}"))?;
    let key = Zeroizing::new(
        Sharks(first.threshold)
            .recover(parsed.iter())
            .map_err(|e| anyhow!("the master key shares do not combine: {e}"))?,
    );
    let check = check_value(&key)?;
    if !bool::from(check.as_bytes().ct_eq(first.check.as_bytes())) {
        bail!(
            "the master key shares do not rebuild the key they were split from: one of them \
             was altered"
        );
    }
    Ok(key)
}

/// Reads and combines the share files of `CIEL_MASTER_KEY_SHARES` (comma-separated paths).
pub fn combine_files(list: &str) -> Result<Zeroizing<Vec<u8>>> {
    let mut shares = Vec::new();
    for p in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let text = std::fs::read_to_string(p)
            .with_context(|| format!("reading the master key share {p}"))?;
        let s = ShareFile::parse(&text).with_context(|| format!("master key share {p}"))?;
        shares.push((p.to_string(), s));
    }
    combine(&shares).context("CIEL_MASTER_KEY_SHARES")
}

/// `ciel keys split-master`.
pub fn split_master_cli(
    dir: &DataDir,
    n: u8,
    k: u8,
    out: &Path,
    remove_key_file: bool,
) -> Result<()> {
    let store = dir.open_store()?;
    // The key as `ciel up` would open it (environment, shares or file), checked against the data
    // directory: a wrong key is never split.
    let key = platform::master_key_bytes(dir, store.as_ref(), &|v| std::env::var(v).ok())?;
    platform::check_master_key(&key, store.as_ref())?;
    let shares = split(&key, n, k)?;

    if !out.exists() {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        // Only the operator reads the directory the shares are written to.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o700))?;
    }
    let paths: Vec<PathBuf> = shares
        .iter()
        .map(|s| out.join(format!("master-share-{}-of-{}.txt", s.index, s.shares)))
        .collect();
    for p in &paths {
        if p.exists() {
            bail!("{} exists already; choose an empty directory", p.display());
        }
    }
    for (p, s) in paths.iter().zip(&shares) {
        platform::write_private(p, s.render().as_bytes())?;
    }
    // Read back what was written and rebuild from the first K and from the last K, before
    // anything is removed.
    let mut back = Vec::new();
    for p in &paths {
        let text = std::fs::read_to_string(p)?;
        back.push((p.display().to_string(), ShareFile::parse(&text)?));
    }
    for subset in [&back[..k as usize], &back[back.len() - k as usize..]] {
        let again = combine(subset)?;
        if !bool::from(again.ct_eq(&key)) {
            bail!("the written shares do not rebuild the key; nothing was removed");
        }
    }
    store.set_setting(
        SETTING,
        &serde_json::json!({
            "set": shares[0].set, "threshold": k, "shares": n, "check": shares[0].check,
        })
        .to_string(),
    )?;
    println!(
        "wrote {n} shares of the master key to {} (any {k} rebuild it):",
        out.display()
    );
    for p in &paths {
        println!("  {}", p.display());
    }
    let key_file = dir.keys().join("master.key");
    if remove_key_file {
        if key_file.exists() {
            std::fs::remove_file(&key_file)
                .with_context(|| format!("removing {}", key_file.display()))?;
            std::fs::File::open(dir.keys())?.sync_all()?;
            println!("removed {}", key_file.display());
        } else {
            println!(
                "{} does not exist (the key came from the environment); nothing removed",
                key_file.display()
            );
        }
    } else if key_file.exists() {
        println!(
            "the key file {} is still there: remove it (or run again with --remove-key-file) \
             once the shares are in their holders' hands",
            key_file.display()
        );
    }
    println!(
        "start with CIEL_MASTER_KEY_SHARES=<{k} of the share files, comma-separated> ciel up ..."
    );
    Ok(())
}

/// The hint `ciel up` gives when the key file is gone and no shares are given.
pub fn missing_key_hint(store: &dyn MetadataStore) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(&store.get_setting(SETTING).ok()??).ok()?;
    Some(format!(
        "the master key of this data directory was split into {} shares ({} rebuild it): start \
         with CIEL_MASTER_KEY_SHARES=<{} share files, comma-separated>",
        v["shares"], v["threshold"], v["threshold"]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(v: &[ShareFile], idx: &[usize]) -> Vec<(String, ShareFile)> {
        idx.iter()
            .map(|i| (format!("s{i}"), v[*i].clone()))
            .collect()
    }

    #[test]
    fn any_k_of_n_rebuild_the_key() {
        let key = [0x42u8; 32];
        let shares = split(&key, 5, 3).unwrap();
        assert_eq!(shares.len(), 5);
        // Files round-trip.
        let shares: Vec<ShareFile> = shares
            .iter()
            .map(|s| ShareFile::parse(&s.render()).unwrap())
            .collect();
        for idx in [[0, 1, 2], [0, 2, 4], [4, 3, 1], [1, 2, 3]] {
            assert_eq!(&*combine(&named(&shares, &idx)).unwrap(), &key);
        }
        assert_eq!(&*combine(&named(&shares, &[0, 1, 2, 3, 4])).unwrap(), &key);
        // A share alone is not the key.
        assert_ne!(&shares[0].share[1..], &key[..]);
    }

    #[test]
    fn refusals_are_clear() {
        let key = MasterKeyBytes::random();
        let a = split(&key.0, 5, 3).unwrap();
        let b = split(&key.0, 5, 3).unwrap();
        let err = |r: Result<Zeroizing<Vec<u8>>>| format!("{:#}", r.err().unwrap());
        // Fewer than K.
        assert!(err(combine(&named(&a, &[0, 1]))).contains("3 of the 5 are needed"));
        assert!(err(combine(&[])).contains("no master key share"));
        // The same share twice does not count twice.
        assert!(err(combine(&named(&a, &[0, 1, 1]))).contains("same share"));
        // Shares of two splits of the same key.
        let mixed = vec![
            ("a0".to_string(), a[0].clone()),
            ("a1".to_string(), a[1].clone()),
            ("b2".to_string(), b[2].clone()),
        ];
        assert!(err(combine(&mixed)).contains("different splits"));
        // A share altered with its digest recomputed: the check value catches it.
        let mut t = a[2].clone();
        t.share[5] ^= 1;
        let t = ShareFile::parse(&t.render()).unwrap();
        let bad = vec![
            ("a0".to_string(), a[0].clone()),
            ("a1".to_string(), a[1].clone()),
            ("t".to_string(), t),
        ];
        assert!(err(combine(&bad)).contains("was altered"));
        // A share altered in its file: the digest catches it.
        let text = a[0].render();
        let pos = text.find("share: ").unwrap() + 10;
        let mut bytes = text.into_bytes();
        bytes[pos] = if bytes[pos] == b'0' { b'1' } else { b'0' };
        let e = ShareFile::parse(&String::from_utf8(bytes).unwrap())
            .err()
            .unwrap();
        assert!(e.to_string().contains("digest"), "{e}");
        assert!(ShareFile::parse("hello").is_err());
        // Bad parameters.
        assert!(split(&key.0, 5, 1).is_err());
        assert!(split(&key.0, 2, 3).is_err());
    }

    struct MasterKeyBytes([u8; 32]);
    impl MasterKeyBytes {
        fn random() -> Self {
            Self(ciel_core::seal::MasterKey::generate_bytes().unwrap())
        }
    }
}
