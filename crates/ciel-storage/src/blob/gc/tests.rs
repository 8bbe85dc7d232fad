use super::*;
use crate::blobstore::{object_id_hex, object_path, ObjectId, ObjectWriter, DEFAULT_CHUNK};
use ciel_store::sqlite::SqliteStore;
use ciel_store::{
    BlobContainer, BlobRecord, BlockRec, Resource, ResourceGroup, Subscription, Tenant,
};
use std::path::PathBuf;

const KEY: [u8; 32] = [9u8; 32];

fn draft() -> AuditDraft {
    AuditDraft {
        actor: "test".into(),
        action: "test".into(),
        target: "t".into(),
        outcome: "success".into(),
        ..Default::default()
    }
}

fn object(dir: &Path, bytes: &[u8]) -> ObjectId {
    let id = crate::blobstore::new_object_id().unwrap();
    let mut w = ObjectWriter::create(dir, &KEY, id, DEFAULT_CHUNK).unwrap();
    w.write(bytes).unwrap();
    w.finish().unwrap();
    id
}

/// A `.partial` file as an interrupted write leaves it.
fn partial(dir: &Path) -> PathBuf {
    let id = crate::blobstore::new_object_id().unwrap();
    let p = object_path(dir, &id).with_extension("partial");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, b"CIELOBJ1 interrupted").unwrap();
    p
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn sweep_keeps_referenced_removes_orphans_and_partials_leaves_unknown_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("acct");
    let keep: Vec<ObjectId> = (0..5).map(|i| object(&dir, &[i; 100])).collect();
    let orphans: Vec<ObjectId> = (0..3).map(|i| object(&dir, &vec![i; 2000])).collect();
    let partials: Vec<PathBuf> = (0..2).map(|_| partial(&dir)).collect();
    // Names Ciel never writes: kept, whatever they look like.
    let strangers = [
        dir.join("README"),
        dir.join("ab").join("notes.txt"),
        dir.join("ab").join("whatever.partial"),
        // An object name in another id's directory, and an upper-case spelling.
        dir.join("00").join(format!("ff{}", "0".repeat(30))),
        dir.join("ab").join(format!("AB{}", "0".repeat(30))),
    ];
    for s in &strangers {
        std::fs::create_dir_all(s.parent().unwrap()).unwrap();
        std::fs::write(s, b"not ours").unwrap();
    }
    let referenced: HashSet<Vec<u8>> = keep.iter().map(|k| k.to_vec()).collect();

    let s = sweep(&dir, &referenced).unwrap();
    assert_eq!(s.objects, 3);
    assert_eq!(s.partials, 2);
    assert_eq!(s.kept, 5);
    assert_eq!(s.unknown, strangers.len() as u64);
    assert_eq!(s.failed, 0);
    assert!(s.bytes > 3 * 2000, "bytes {}", s.bytes);
    for k in &keep {
        assert!(object_path(&dir, k).exists());
        crate::blobstore::ObjectReader::open(&dir, &KEY, *k).unwrap();
    }
    for o in &orphans {
        assert!(!object_path(&dir, o).exists());
    }
    for p in &partials {
        assert!(!p.exists());
    }
    for s in &strangers {
        assert!(s.exists(), "{} was removed", s.display());
    }

    // A second sweep finds nothing more.
    let again = sweep(&dir, &referenced).unwrap();
    assert_eq!((again.objects, again.partials, again.kept), (0, 0, 5));
}

struct Fixture {
    _tmp: tempfile::TempDir,
    store: SqliteStore,
    root: PathBuf,
}

const SUB: &str = "00000000-0000-0000-0000-000000000001";

fn account_id(name: &str) -> ResourceId {
    ResourceId::parse(&format!(
        "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/{name}"
    ))
    .unwrap()
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&tmp.path().join("ciel.db")).unwrap();
    store
        .create_tenant(
            &Tenant {
                id: "t".into(),
                display_name: "T".into(),
                default_domain: "t.example".into(),
                created: 1,
            },
            &draft(),
        )
        .unwrap();
    store
        .create_subscription(
            &Subscription {
                id: SUB.into(),
                tenant_id: "t".into(),
                display_name: "s".into(),
                state: "Enabled".into(),
                created: 1,
            },
            &draft(),
        )
        .unwrap();
    store
        .put_resource_group(
            &ResourceGroup {
                subscription_id: SUB.into(),
                name: "rg".into(),
                location: "francecentral".into(),
                tags: serde_json::json!({}),
                managed_by: None,
                created: 1,
                changed: 1,
            },
            &draft(),
        )
        .unwrap();
    let root = tmp.path().join("blobs");
    Fixture {
        _tmp: tmp,
        store,
        root,
    }
}

fn put_account(f: &Fixture, name: &str) -> (ResourceId, PathBuf) {
    let id = account_id(name);
    f.store
        .put_resource(
            &Resource {
                id: id.to_string(),
                subscription_id: SUB.into(),
                resource_group: Some("rg".into()),
                rtype: TYPE.into(),
                name: name.into(),
                location: Some("francecentral".into()),
                tenant_id: "t".into(),
                body: serde_json::json!({}),
                created: 1,
                changed: 1,
                sealed: None,
            },
            &draft(),
        )
        .unwrap();
    let dir = account_dir(&f.root, &id);
    f.store
        .put_container(
            &BlobContainer {
                account: id.key(),
                name: "c".into(),
                metadata: serde_json::json!({}),
                etag: "e".into(),
                last_modified: 1,
                public_access: None,
                lease: None,
            },
            &draft(),
        )
        .unwrap();
    (id, dir)
}

fn blob(
    account: &ResourceId,
    name: &str,
    object: Option<ObjectId>,
    blocks: &[ObjectId],
) -> BlobRecord {
    BlobRecord {
        account: account.key(),
        container: "c".into(),
        name: name.into(),
        object_id: object.map(|o| o.to_vec()).unwrap_or_default(),
        size: 1,
        content_type: None,
        content_encoding: None,
        content_language: None,
        content_disposition: None,
        cache_control: None,
        content_md5: None,
        metadata: serde_json::json!({}),
        etag: "e".into(),
        last_modified: 1,
        created: 1,
        blocks: serde_json::Value::Array(
            blocks
                .iter()
                .enumerate()
                .map(|(i, b)| serde_json::json!({"id": format!("b{i}"), "object": object_id_hex(b), "size": 1}))
                .collect(),
        ),
        ..Default::default()
    }
}

/// The garbage collection's audit records: (actor, details).
fn gc_audits(store: &SqliteStore) -> Vec<(String, serde_json::Value)> {
    store
        .read_audit(0, 10_000)
        .unwrap()
        .into_iter()
        .filter(|a| a.action == GC_ACTION)
        .map(|a| (a.actor, serde_json::from_str(&a.details).unwrap()))
        .collect()
}

#[test]
fn collect_keeps_every_referenced_object_and_removes_the_rest() {
    let f = fixture();
    let (a, dir) = put_account(&f, "alive");
    // A blob in one piece, a blob of committed blocks, an uncommitted block.
    let whole = object(&dir, b"whole");
    let b1 = object(&dir, b"block one");
    let b2 = object(&dir, b"block two");
    let pending = object(&dir, b"uncommitted");
    f.store
        .put_blob(&blob(&a, "whole", Some(whole), &[]), &draft())
        .unwrap();
    f.store
        .put_blob(&blob(&a, "blocks", None, &[b1, b2]), &draft())
        .unwrap();
    f.store
        .put_block(&BlockRec {
            account: a.key(),
            container: "c".into(),
            blob: "next".into(),
            block_id: "x".into(),
            object_id: pending.to_vec(),
            size: 1,
            created: 1,
            shared: false,
        })
        .unwrap();
    // What a crash leaves: objects written but never committed (or replaced but not yet removed),
    // and an interrupted write.
    let orphan1 = object(&dir, b"orphan one");
    let orphan2 = object(&dir, b"orphan two");
    let part = partial(&dir);
    let stranger = dir.join("lost+found");
    std::fs::write(&stranger, b"x").unwrap();

    let r = collect_garbage(&f.store, &f.root);
    assert_eq!(r.files.objects, 2);
    assert_eq!(r.files.partials, 1);
    assert_eq!(r.files.kept, 4);
    assert_eq!(r.files.unknown, 1);
    assert_eq!((r.accounts, r.deleted_account_dirs, r.skipped), (1, 0, 0));
    for o in [whole, b1, b2, pending] {
        assert!(object_path(&dir, &o).exists());
    }
    for o in [orphan1, orphan2] {
        assert!(!object_path(&dir, &o).exists());
    }
    assert!(!part.exists());
    assert!(stranger.exists());
    let audits = gc_audits(&f.store);
    assert_eq!(audits.len(), 1);
    assert_eq!(audits[0].1["removedObjects"], 2);
    assert_eq!(audits[0].1["removedPartials"], 1);
    assert_eq!(audits[0].0, "system");

    // Nothing left to do: no removal, no new audit record.
    let again = collect_garbage(&f.store, &f.root);
    assert!(!again.removed_anything());
    assert_eq!(again.files.kept, 4);
    assert_eq!(gc_audits(&f.store).len(), 1);
}

#[test]
fn collect_removes_deleted_accounts_and_leaves_what_it_cannot_place() {
    let f = fixture();
    let (alive, alive_dir) = put_account(&f, "alive");
    let kept = object(&alive_dir, b"kept");
    f.store
        .put_blob(&blob(&alive, "k", Some(kept), &[]), &draft())
        .unwrap();

    // A deleted account whose data deletion the crash interrupted: records and files remain.
    let (gone, gone_dir) = put_account(&f, "gone");
    let g = object(&gone_dir, b"unreadable now");
    f.store
        .put_blob(&blob(&gone, "g", Some(g), &[]), &draft())
        .unwrap();
    partial(&gone_dir);
    f.store.delete_resource(&gone.key(), &draft()).unwrap();

    // A deleted account's directory with a file that is not Ciel's: emptied of objects, kept.
    let odd_dir = account_dir(&f.root, &account_id("odd"));
    object(&odd_dir, b"odd");
    std::fs::write(odd_dir.join("keep-me"), b"x").unwrap();
    // Not an account directory at all.
    std::fs::create_dir_all(f.root.join("scratch")).unwrap();
    std::fs::write(f.root.join("scratch").join("a"), b"x").unwrap();

    let r = collect_garbage(&f.store, &f.root);
    assert_eq!(r.deleted_account_records, 1);
    assert_eq!(r.deleted_account_dirs, 1);
    assert_eq!(r.files.objects, 2);
    assert_eq!(r.files.partials, 1);
    assert_eq!(r.files.kept, 1);
    assert_eq!(r.files.unknown, 2);
    assert!(!gone_dir.exists());
    assert!(object_path(&alive_dir, &kept).exists());
    assert_eq!(files_under(&odd_dir), vec![odd_dir.join("keep-me")]);
    assert!(f.root.join("scratch").join("a").exists());
    assert!(f.store.blob_accounts().unwrap() == vec![alive.key()]);
    assert_eq!(gc_audits(&f.store)[0].1["removedAccountDirectories"], 1);
}

#[test]
fn collect_leaves_an_account_alone_when_its_references_cannot_be_read() {
    let f = fixture();
    let (a, dir) = put_account(&f, "alive");
    let o = object(&dir, b"referenced by a damaged record");
    let mut b = blob(&a, "b", None, &[]);
    b.blocks = serde_json::json!([{"id": "x", "object": "not hex", "size": 1}]);
    f.store.put_blob(&b, &draft()).unwrap();
    let r = collect_garbage(&f.store, &f.root);
    assert_eq!(r.skipped, 1);
    assert!(!r.removed_anything());
    assert!(object_path(&dir, &o).exists());
}

#[test]
fn collect_on_a_missing_store_does_nothing() {
    let f = fixture();
    let r = collect_garbage(&f.store, &f.root);
    assert_eq!(r, GcReport::default());
}
