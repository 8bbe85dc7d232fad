//! Blob names as file paths (docs/export-format.md, "Blob names").
//!
//! A blob name is any string of up to 1,024 characters; `/` usually means folders, and people
//! expect `photos/2026/a.jpg` to be a file in folders. So each `/`-separated segment becomes a
//! path segment, percent-encoded where a file system (Linux, macOS or Windows) could not hold it
//! or would give it a meaning: bytes outside letters, digits, space and `-._~!$&'()+,;=@` and
//! non-ASCII characters are kept as UTF-8 (file systems take them), `%` itself is encoded, `.`
//! and `..` become `%2E` and `%2E%2E`, and an empty segment (`a//b`, a trailing `/`) becomes
//! `%00` (a blob name cannot hold a NUL, so this cannot collide).
//!
//! Two names can still not both be files: `a` and `a/b` (a file and a folder of one name), or a
//! segment longer than a file system allows (255 bytes). Such a blob goes to
//! `conflicts/{SHA-256 of the name}` instead; the sidecar (`blobs.jsonl`) names every blob's file,
//! so nothing depends on guessing the rule.

fn keep(c: char) -> bool {
    c.is_ascii_alphanumeric() || " -._~!$&'()+,;=@".contains(c) || !c.is_ascii()
}

pub fn encode_segment(seg: &str) -> String {
    match seg {
        "" => return "%00".into(),
        "." => return "%2E".into(),
        ".." => return "%2E%2E".into(),
        _ => {}
    }
    let mut out = String::with_capacity(seg.len());
    for c in seg.chars() {
        if keep(c) {
            out.push(c);
        } else {
            let mut b = [0u8; 4];
            for byte in c.encode_utf8(&mut b).bytes() {
                out.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    out
}

/// Inverse of [`encode_segment`] (for people and tools reading an export; import uses the sidecar).
pub fn decode_segment(seg: &str) -> String {
    if seg == "%00" {
        return String::new();
    }
    let b = seg.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&seg[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The encoded relative path of a blob name, or `None` when a segment is too long for a file
/// system (the caller then uses [`conflict_path`]).
pub fn encode_name(name: &str) -> Option<String> {
    let segs: Vec<String> = name.split('/').map(encode_segment).collect();
    if segs.iter().any(|s| s.len() > 255) {
        return None;
    }
    Some(segs.join("/"))
}

pub fn conflict_path(key: &str) -> String {
    format!("conflicts/{}", crate::manifest::sha256_hex(key.as_bytes()))
}

/// A snapshot's file name component: its time with `:` encoded (Windows forbids it).
pub fn snapshot_suffix(snapshot: &str) -> String {
    encode_segment(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_stay_inside_their_folder() {
        for n in [
            "a.txt",
            "photos/2026/été.jpg",
            "x//y/",
            "../../etc/passwd",
            "50% off?:*<>|\"\\",
            ".",
            "a/./b",
            "tab\there",
        ] {
            let p = encode_name(n).unwrap();
            assert!(!p.split('/').any(|s| s.is_empty() || s == "." || s == ".."));
            assert!(!p.contains('\\') && !p.contains(':') && !p.contains('\t'));
            let back: Vec<String> = p.split('/').map(decode_segment).collect();
            assert_eq!(back.join("/"), n);
        }
        assert!(encode_name(&"x".repeat(300)).is_none());
        assert_eq!(
            encode_segment("2026-01-01T00:00:00.0000000Z"),
            "2026-01-01T00%3A00%3A00.0000000Z"
        );
    }
}
