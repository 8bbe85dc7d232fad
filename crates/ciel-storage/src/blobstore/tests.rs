use super::*;

const KEY: [u8; 32] = [7u8; 32];

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

fn write(root: &Path, bytes: &[u8], chunk: u32, pieces: usize) -> ObjectId {
    let id = new_object_id().unwrap();
    let mut w = ObjectWriter::create(root, &KEY, id, chunk).unwrap();
    for p in bytes.chunks(pieces.max(1)) {
        w.write(p).unwrap();
    }
    assert_eq!(w.finish().unwrap(), bytes.len() as u64);
    id
}

fn read_all(root: &Path, id: ObjectId) -> Vec<u8> {
    let mut r = ObjectReader::open(root, &KEY, id).unwrap();
    let mut out = vec![];
    let n = r.len();
    r.read_range(0, n, |b| {
        out.extend_from_slice(b);
        Ok(())
    })
    .unwrap();
    out
}

#[test]
fn roundtrip_at_every_boundary() {
    let dir = tempfile::tempdir().unwrap();
    for n in [0usize, 1, 63, 64, 65, 128, 64 * 3 + 5, 1000] {
        for piece in [1usize, 7, 64, 4096] {
            let d = data(n);
            let id = write(dir.path(), &d, 64, piece);
            assert_eq!(read_all(dir.path(), id), d, "n={n} piece={piece}");
            assert_eq!(
                ObjectReader::open(dir.path(), &KEY, id).unwrap().len(),
                n as u64
            );
        }
    }
}

#[test]
fn ranges_cross_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let d = data(1000);
    let id = write(dir.path(), &d, 64, 100);
    let mut r = ObjectReader::open(dir.path(), &KEY, id).unwrap();
    for (s, e) in [
        (0u64, 1u64),
        (63, 65),
        (64, 128),
        (10, 990),
        (999, 1000),
        (500, 500),
    ] {
        let mut out = vec![];
        r.read_range(s, e, |b| {
            assert!(b.len() <= 64);
            out.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        assert_eq!(out, &d[s as usize..e as usize]);
    }
    assert!(matches!(
        r.read_range(0, 1001, |_| Ok(())),
        Err(ObjectError::Range)
    ));
}

fn corrupt(
    root: &Path,
    id: ObjectId,
    f: impl FnOnce(&mut Vec<u8>),
) -> Result<Vec<u8>, ObjectError> {
    let p = object_path(root, &id);
    let mut bytes = std::fs::read(&p).unwrap();
    f(&mut bytes);
    std::fs::write(&p, bytes).unwrap();
    let mut r = ObjectReader::open(root, &KEY, id)?;
    let mut out = vec![];
    let n = r.len();
    r.read_range(0, n, |b| {
        out.extend_from_slice(b);
        Ok(())
    })?;
    Ok(out)
}

#[test]
fn tampering_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let stride = 64 + 16;
    let d = data(300);
    // A flipped byte.
    let id = write(dir.path(), &d, 64, 300);
    assert!(corrupt(dir.path(), id, |b| b[40] ^= 1).is_err());
    // Truncation at a chunk boundary (the new last chunk was not sealed as last).
    let id = write(dir.path(), &d, 64, 300);
    assert!(corrupt(dir.path(), id, |b| b.truncate(32 + 2 * stride)).is_err());
    // Two chunks swapped.
    let id = write(dir.path(), &d, 64, 300);
    assert!(corrupt(dir.path(), id, |b| {
        let (a, c) = (32, 32 + stride);
        let first: Vec<u8> = b[a..a + stride].to_vec();
        let second: Vec<u8> = b[c..c + stride].to_vec();
        b[a..a + stride].copy_from_slice(&second);
        b[c..c + stride].copy_from_slice(&first);
    })
    .is_err());
    // An empty object emptied further.
    let id = write(dir.path(), &[], 64, 1);
    assert!(corrupt(dir.path(), id, |b| b.truncate(32)).is_err());
    // The wrong key.
    let id = write(dir.path(), &d, 64, 300);
    let mut r = ObjectReader::open(dir.path(), &[8u8; 32], id).unwrap();
    assert!(r.chunk(0).is_err());
}

#[test]
fn ciphertext_does_not_contain_plaintext_and_unfinished_writes_vanish() {
    let dir = tempfile::tempdir().unwrap();
    let d = b"CONFIDENTIEL-PATIENT-0000000001".repeat(10);
    let id = write(dir.path(), &d, 64, 1000);
    let raw = std::fs::read(object_path(dir.path(), &id)).unwrap();
    assert!(!raw.windows(12).any(|w| w == b"CONFIDENTIEL"));

    let id = new_object_id().unwrap();
    {
        let mut w = ObjectWriter::create(dir.path(), &KEY, id, 64).unwrap();
        w.write(&d).unwrap();
        // dropped without finish
    }
    assert!(!object_path(dir.path(), &id).exists());
    assert!(!object_path(dir.path(), &id)
        .with_extension("partial")
        .exists());
}
