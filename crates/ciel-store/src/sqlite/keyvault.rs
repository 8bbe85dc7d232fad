//! Key Vault tables: deleted vaults, the names of secrets and keys, and their versions. The
//! trait methods in `sqlite.rs` call these with the transaction (writes) or a reader connection.

use super::{append_in, json_col, not_found, resource_row, RESOURCE_COLS};
use crate::model::*;
use crate::{Result, StoreError};
use ciel_core::audit::AuditDraft;
use rusqlite::{params, Connection, OptionalExtension, Row};

const VERSION_COLS: &str = "v.vault, v.kind, n.display, v.version, v.created, v.updated, v.attributes, v.tags, v.content_type, v.public, v.sealed";
const NAME_COLS: &str = "n.vault, n.kind, n.display, n.deleted, n.purge_at, n.policy";

fn version_row(r: &Row) -> rusqlite::Result<KvVersion> {
    Ok(KvVersion {
        vault: r.get(0)?,
        kind: r.get(1)?,
        name: r.get(2)?,
        version: r.get(3)?,
        created: r.get(4)?,
        updated: r.get(5)?,
        attributes: json_col(r.get(6)?)?,
        tags: json_col(r.get(7)?)?,
        content_type: r.get(8)?,
        public: json_col(r.get(9)?)?,
        sealed: r.get(10)?,
    })
}

fn name_row(r: &Row) -> rusqlite::Result<KvName> {
    let policy: Option<String> = r.get(5)?;
    Ok(KvName {
        vault: r.get(0)?,
        kind: r.get(1)?,
        name: r.get(2)?,
        deleted: r.get(3)?,
        purge_at: r.get(4)?,
        policy: policy.map(json_col).transpose()?,
    })
}

fn lc(s: &str) -> String {
    s.to_ascii_lowercase()
}

pub(super) fn put_version(tx: &Connection, v: &KvVersion, audit: &AuditDraft) -> Result<()> {
    let name = lc(&v.name);
    let deleted: Option<Option<i64>> = tx
        .query_row(
            "SELECT deleted FROM kv_names WHERE vault = ?1 AND kind = ?2 AND name = ?3",
            params![v.vault, v.kind, name],
            |r| r.get(0),
        )
        .optional()?;
    match deleted {
        Some(Some(_)) => return Err(StoreError::Conflict("deleted".into())),
        Some(None) => {}
        None => {
            tx.execute(
                "INSERT INTO kv_names (vault, kind, name, display) VALUES (?1, ?2, ?3, ?4)",
                params![v.vault, v.kind, name, v.name],
            )?;
        }
    }
    insert_version(tx, v)?;
    append_in(tx, std::slice::from_ref(audit))?;
    Ok(())
}

fn insert_version(tx: &Connection, v: &KvVersion) -> Result<()> {
    tx.execute(
        "INSERT INTO kv_versions (vault, kind, name, version, created, updated, attributes, tags, content_type, public, sealed)
         VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)",
        params![
            v.vault,
            v.kind,
            lc(&v.name),
            v.version,
            v.created,
            v.updated,
            v.attributes.to_string(),
            v.tags.to_string(),
            v.content_type,
            v.public.to_string(),
            v.sealed
        ],
    )
    .map_err(|e| super::conflict_or(e, "version"))?;
    Ok(())
}

pub(super) fn update_version(tx: &Connection, v: &KvVersion, audit: &AuditDraft) -> Result<()> {
    let n = tx.execute(
        "UPDATE kv_versions SET updated = ?5, attributes = ?6, tags = ?7, content_type = ?8
         WHERE vault = ?1 AND kind = ?2 AND name = ?3 AND version = ?4",
        params![
            v.vault,
            v.kind,
            lc(&v.name),
            v.version,
            v.updated,
            v.attributes.to_string(),
            v.tags.to_string(),
            v.content_type
        ],
    )?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    append_in(tx, std::slice::from_ref(audit))?;
    Ok(())
}

pub(super) fn get_name(c: &Connection, vault: &str, kind: &str, name: &str) -> Result<KvName> {
    not_found(c.query_row(
        &format!(
            "SELECT {NAME_COLS} FROM kv_names n WHERE n.vault = ?1 AND n.kind = ?2 AND n.name = ?3"
        ),
        params![vault, kind, lc(name)],
        name_row,
    ))
}

pub(super) fn get_version(
    c: &Connection,
    vault: &str,
    kind: &str,
    name: &str,
    version: Option<&str>,
) -> Result<KvVersion> {
    let base = format!(
        "SELECT {VERSION_COLS} FROM kv_versions v JOIN kv_names n
           ON n.vault = v.vault AND n.kind = v.kind AND n.name = v.name
         WHERE v.vault = ?1 AND v.kind = ?2 AND v.name = ?3"
    );
    match version {
        Some(ver) => not_found(c.query_row(
            &format!("{base} AND v.version = ?4"),
            params![vault, kind, lc(name), ver],
            version_row,
        )),
        None => not_found(c.query_row(
            &format!("{base} ORDER BY v.seq DESC LIMIT 1"),
            params![vault, kind, lc(name)],
            version_row,
        )),
    }
}

pub(super) fn list_versions(
    c: &Connection,
    vault: &str,
    kind: &str,
    name: &str,
) -> Result<Vec<KvVersion>> {
    let mut st = c.prepare(&format!(
        "SELECT {VERSION_COLS} FROM kv_versions v JOIN kv_names n
           ON n.vault = v.vault AND n.kind = v.kind AND n.name = v.name
         WHERE v.vault = ?1 AND v.kind = ?2 AND v.name = ?3 ORDER BY v.seq"
    ))?;
    let rows = st.query_map(params![vault, kind, lc(name)], version_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(super) fn list(
    c: &Connection,
    vault: &str,
    kind: &str,
    deleted: bool,
) -> Result<Vec<(KvName, KvVersion)>> {
    let cond = if deleted {
        "n.deleted IS NOT NULL"
    } else {
        "n.deleted IS NULL"
    };
    let mut st = c.prepare(&format!(
        "SELECT {NAME_COLS}, {VERSION_COLS} FROM kv_names n JOIN kv_versions v
           ON v.seq = (SELECT MAX(seq) FROM kv_versions w WHERE w.vault = n.vault AND w.kind = n.kind AND w.name = n.name)
         WHERE n.vault = ?1 AND n.kind = ?2 AND {cond} ORDER BY n.name"
    ))?;
    let rows = st.query_map(params![vault, kind], |r| {
        let n = name_row(r)?;
        let v = KvVersion {
            vault: r.get(6)?,
            kind: r.get(7)?,
            name: r.get(8)?,
            version: r.get(9)?,
            created: r.get(10)?,
            updated: r.get(11)?,
            attributes: json_col(r.get(12)?)?,
            tags: json_col(r.get(13)?)?,
            content_type: r.get(14)?,
            public: json_col(r.get(15)?)?,
            sealed: r.get(16)?,
        };
        Ok((n, v))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(super) fn set_deleted(
    tx: &Connection,
    vault: &str,
    kind: &str,
    name: &str,
    deleted: Option<(i64, i64)>,
    audit: &AuditDraft,
) -> Result<()> {
    let n = tx.execute(
        "UPDATE kv_names SET deleted = ?4, purge_at = ?5 WHERE vault = ?1 AND kind = ?2 AND name = ?3",
        params![
            vault,
            kind,
            lc(name),
            deleted.map(|d| d.0),
            deleted.map(|d| d.1)
        ],
    )?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    append_in(tx, std::slice::from_ref(audit))?;
    Ok(())
}

pub(super) fn purge(
    tx: &Connection,
    vault: &str,
    kind: &str,
    name: &str,
    audit: &AuditDraft,
) -> Result<Vec<KvVersion>> {
    let gone = list_versions(tx, vault, kind, name)?;
    let n = tx.execute(
        "DELETE FROM kv_names WHERE vault = ?1 AND kind = ?2 AND name = ?3",
        params![vault, kind, lc(name)],
    )?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    tx.execute(
        "DELETE FROM kv_versions WHERE vault = ?1 AND kind = ?2 AND name = ?3",
        params![vault, kind, lc(name)],
    )?;
    append_in(tx, std::slice::from_ref(audit))?;
    Ok(gone)
}

pub(super) fn set_policy(
    tx: &Connection,
    vault: &str,
    kind: &str,
    name: &str,
    policy: &serde_json::Value,
    audit: &AuditDraft,
) -> Result<()> {
    let n = tx.execute(
        "UPDATE kv_names SET policy = ?4 WHERE vault = ?1 AND kind = ?2 AND name = ?3",
        params![vault, kind, lc(name), policy.to_string()],
    )?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    append_in(tx, std::slice::from_ref(audit))?;
    Ok(())
}

pub(super) fn restore(tx: &Connection, versions: &[KvVersion], audit: &AuditDraft) -> Result<()> {
    let Some(first) = versions.first() else {
        return Err(StoreError::Corrupt("a backup without versions".into()));
    };
    let exists = tx
        .query_row(
            "SELECT 1 FROM kv_names WHERE vault = ?1 AND kind = ?2 AND name = ?3",
            params![first.vault, first.kind, lc(&first.name)],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if exists {
        return Err(StoreError::Conflict("name".into()));
    }
    tx.execute(
        "INSERT INTO kv_names (vault, kind, name, display) VALUES (?1, ?2, ?3, ?4)",
        params![first.vault, first.kind, lc(&first.name), first.name],
    )?;
    for v in versions {
        insert_version(tx, v)?;
    }
    append_in(tx, std::slice::from_ref(audit))?;
    Ok(())
}

fn vault_data(tx: &Connection, vault: &str) -> Result<Vec<KvVersion>> {
    let mut st = tx.prepare(&format!(
        "SELECT {VERSION_COLS} FROM kv_versions v JOIN kv_names n
           ON n.vault = v.vault AND n.kind = v.kind AND n.name = v.name
         WHERE v.vault = ?1 ORDER BY v.seq"
    ))?;
    let rows = st.query_map(params![vault], version_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn drop_vault_data(tx: &Connection, vault: &str) -> Result<Vec<KvVersion>> {
    let gone = vault_data(tx, vault)?;
    tx.execute("DELETE FROM kv_versions WHERE vault = ?1", [vault])?;
    tx.execute("DELETE FROM kv_names WHERE vault = ?1", [vault])?;
    Ok(gone)
}

pub(super) fn delete_vault(
    tx: &Connection,
    id_key: &str,
    soft: Option<(i64, i64)>,
    audit: &AuditDraft,
) -> Result<Vec<KvVersion>> {
    let key = id_key.to_ascii_lowercase();
    let r = not_found(tx.query_row(
        &format!("SELECT {RESOURCE_COLS} FROM resources WHERE id_key = ?1"),
        [&key],
        resource_row,
    ))?;
    let name = lc(&r.name);
    tx.execute("DELETE FROM resources WHERE id_key = ?1", [&key])?;
    let gone = match soft {
        Some((deleted, purge_at)) => {
            tx.execute(
                "INSERT INTO kv_deleted_vaults (name, id, subscription_id, resource_group, location, tenant_id, body, sealed, created, deleted, purge_at)
                 VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)",
                params![
                    name,
                    r.id,
                    r.subscription_id,
                    r.resource_group,
                    r.location.clone().unwrap_or_default(),
                    r.tenant_id,
                    r.body.to_string(),
                    r.sealed,
                    r.created,
                    deleted,
                    purge_at
                ],
            )
            .map_err(|e| super::conflict_or(e, "deleted vault"))?;
            Vec::new()
        }
        None => drop_vault_data(tx, &name)?,
    };
    append_in(tx, std::slice::from_ref(audit))?;
    Ok(gone)
}

const DELETED_COLS: &str = "id, subscription_id, resource_group, location, tenant_id, body, sealed, created, deleted, purge_at, name";

fn deleted_row(r: &Row) -> rusqlite::Result<DeletedVault> {
    let id: String = r.get(0)?;
    let name: String = r.get(10)?;
    let body = json_col(r.get(5)?)?;
    // The stored name is lower-cased; the ARM body keeps the vault's own spelling.
    let display = body["name"].as_str().unwrap_or(&name).to_string();
    Ok(DeletedVault {
        resource: Resource {
            id,
            subscription_id: r.get(1)?,
            resource_group: r.get(2)?,
            rtype: "Microsoft.KeyVault/vaults".into(),
            name: display,
            location: Some(r.get(3)?),
            tenant_id: r.get(4)?,
            body,
            created: r.get(7)?,
            changed: r.get(8)?,
            sealed: r.get(6)?,
        },
        deleted: r.get(8)?,
        purge_at: r.get(9)?,
    })
}

pub(super) fn list_deleted_vaults(c: &Connection, sub: &str) -> Result<Vec<DeletedVault>> {
    let mut st = c.prepare(&format!(
        "SELECT {DELETED_COLS} FROM kv_deleted_vaults WHERE subscription_id = ?1 ORDER BY name"
    ))?;
    let rows = st.query_map([sub], deleted_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(super) fn get_deleted_vault(c: &Connection, name: &str) -> Result<DeletedVault> {
    not_found(c.query_row(
        &format!("SELECT {DELETED_COLS} FROM kv_deleted_vaults WHERE name = ?1"),
        [lc(name)],
        deleted_row,
    ))
}

pub(super) fn recover_vault(tx: &Connection, name: &str, audit: &AuditDraft) -> Result<Resource> {
    let d = get_deleted_vault(tx, name)?;
    let mut r = d.resource;
    r.changed = ciel_core::time::now_unix();
    tx.execute(
        &format!("INSERT INTO resources (id_key, {RESOURCE_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12)"),
        params![
            r.id.to_ascii_lowercase(),
            r.id,
            r.subscription_id,
            r.resource_group,
            r.rtype,
            r.name,
            r.location,
            r.tenant_id,
            r.body.to_string(),
            r.created,
            r.changed,
            r.sealed
        ],
    )
    .map_err(|e| super::conflict_or(e, "vault"))?;
    tx.execute("DELETE FROM kv_deleted_vaults WHERE name = ?1", [lc(name)])?;
    append_in(tx, std::slice::from_ref(audit))?;
    Ok(r)
}

pub(super) fn purge_vault(
    tx: &Connection,
    name: &str,
    audit: &AuditDraft,
) -> Result<Vec<KvVersion>> {
    let n = tx.execute("DELETE FROM kv_deleted_vaults WHERE name = ?1", [lc(name)])?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    let gone = drop_vault_data(tx, &lc(name))?;
    append_in(tx, std::slice::from_ref(audit))?;
    Ok(gone)
}

pub(super) fn with_policy(c: &Connection) -> Result<Vec<KvName>> {
    let mut st = c.prepare(&format!(
        "SELECT {NAME_COLS} FROM kv_names n WHERE n.kind = 'key' AND n.policy IS NOT NULL AND n.deleted IS NULL
           AND n.vault NOT IN (SELECT name FROM kv_deleted_vaults) ORDER BY n.vault, n.name"
    ))?;
    let rows = st.query_map([], name_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(super) fn purge_due(c: &Connection, now: i64) -> Result<Vec<KvPurgeDue>> {
    let mut out = Vec::new();
    let mut st = c.prepare("SELECT name FROM kv_deleted_vaults WHERE purge_at <= ?1")?;
    for r in st.query_map([now], |r| r.get::<_, String>(0))? {
        out.push(KvPurgeDue::Vault(r?));
    }
    let mut st = c.prepare(
        "SELECT vault, kind, name FROM kv_names WHERE deleted IS NOT NULL AND purge_at <= ?1
           AND vault NOT IN (SELECT name FROM kv_deleted_vaults)",
    )?;
    for r in st.query_map([now], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })? {
        let (vault, kind, name) = r?;
        out.push(KvPurgeDue::Object { vault, kind, name });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::model::*;
    use crate::sqlite::SqliteStore;
    use crate::{MetadataStore, StoreError};
    use ciel_core::audit::AuditDraft;
    use serde_json::json;

    fn d(action: &str) -> AuditDraft {
        AuditDraft {
            actor: "test".into(),
            action: action.into(),
            target: "t".into(),
            outcome: "success".into(),
            ..Default::default()
        }
    }

    fn version(name: &str, v: &str) -> KvVersion {
        KvVersion {
            vault: "v1".into(),
            kind: "secret".into(),
            name: name.into(),
            version: v.into(),
            created: 1,
            updated: 1,
            attributes: json!({"enabled": true}),
            tags: json!({}),
            content_type: None,
            public: json!({}),
            sealed: vec![1, 2, 3],
        }
    }

    fn vault(s: &SqliteStore, name: &str) -> Resource {
        if s.get_subscription("s").is_err() {
            s.create_tenant(
                &Tenant {
                    id: "t".into(),
                    display_name: "t".into(),
                    default_domain: "t.example".into(),
                    created: 1,
                },
                &d("tenant"),
            )
            .unwrap();
            s.create_subscription(
                &Subscription {
                    id: "s".into(),
                    tenant_id: "t".into(),
                    display_name: "s".into(),
                    state: "Enabled".into(),
                    created: 1,
                },
                &d("subscription"),
            )
            .unwrap();
        }
        let r = Resource {
            id: format!(
                "/subscriptions/s/resourceGroups/g/providers/Microsoft.KeyVault/vaults/{name}"
            ),
            subscription_id: "s".into(),
            resource_group: Some("g".into()),
            rtype: "Microsoft.KeyVault/vaults".into(),
            name: name.into(),
            location: Some("francecentral".into()),
            tenant_id: "t".into(),
            body: json!({"name": name}),
            created: 1,
            changed: 1,
            sealed: Some(vec![9; 40]),
        };
        s.put_resource(&r, &d("vault/write")).unwrap();
        r
    }

    #[test]
    fn names_versions_soft_delete_and_purge() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        s.kv_put_version(&version("Db-Pass", "a"), &d("set"))
            .unwrap();
        s.kv_put_version(&version("db-pass", "b"), &d("set"))
            .unwrap();
        // Case-insensitive names keep their first spelling; latest is the last created.
        let latest = s.kv_get_version("v1", "secret", "DB-PASS", None).unwrap();
        assert_eq!(
            (latest.name.as_str(), latest.version.as_str()),
            ("Db-Pass", "b")
        );
        assert_eq!(
            s.kv_list_versions("v1", "secret", "db-pass").unwrap().len(),
            2
        );
        assert_eq!(s.kv_list("v1", "secret", false).unwrap().len(), 1);
        s.kv_set_deleted("v1", "secret", "db-pass", Some((10, 20)), &d("delete"))
            .unwrap();
        assert!(s.kv_list("v1", "secret", false).unwrap().is_empty());
        assert_eq!(s.kv_list("v1", "secret", true).unwrap().len(), 1);
        assert!(matches!(
            s.kv_put_version(&version("db-pass", "c"), &d("set")),
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(
            s.kv_purge_due(19).unwrap(),
            vec![],
            "not due before its purge date"
        );
        assert_eq!(
            s.kv_purge_due(20).unwrap(),
            vec![KvPurgeDue::Object {
                vault: "v1".into(),
                kind: "secret".into(),
                name: "db-pass".into()
            }]
        );
        s.kv_set_deleted("v1", "secret", "db-pass", None, &d("recover"))
            .unwrap();
        assert_eq!(s.kv_list("v1", "secret", false).unwrap().len(), 1);
        let gone = s.kv_purge("v1", "secret", "db-pass", &d("purge")).unwrap();
        assert_eq!(gone.len(), 2);
        assert!(matches!(
            s.kv_get_name("v1", "secret", "db-pass"),
            Err(StoreError::NotFound)
        ));
        // Restore recreates every version; a second restore conflicts.
        s.kv_restore(&gone, &d("restore")).unwrap();
        assert!(matches!(
            s.kv_restore(&gone, &d("restore")),
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(
            s.read_audit(0, 100).unwrap().len(),
            6,
            "one entry per change, none for the refused ones"
        );
    }

    #[test]
    fn vaults_soft_delete_recover_and_purge_with_their_data() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        let r = vault(&s, "v1");
        s.kv_put_version(&version("x", "a"), &d("set")).unwrap();
        s.delete_vault(&r.id, Some((100, 200)), &d("delete"))
            .unwrap();
        assert!(matches!(
            s.get_resource(&r.id.to_ascii_lowercase()),
            Err(StoreError::NotFound)
        ));
        let dv = s.get_deleted_vault("V1").unwrap();
        assert_eq!((dv.deleted, dv.purge_at), (100, 200));
        assert_eq!(dv.resource.sealed, r.sealed, "the sealed vault key is kept");
        assert_eq!(s.list_deleted_vaults("s").unwrap().len(), 1);
        assert_eq!(
            s.kv_purge_due(200).unwrap(),
            vec![KvPurgeDue::Vault("v1".into())]
        );
        let back = s.recover_vault("v1", &d("recover")).unwrap();
        assert_eq!(back.id, r.id);
        assert!(
            s.kv_get_version("v1", "secret", "x", None).is_ok(),
            "data survives the soft delete"
        );
        s.delete_vault(&r.id, Some((100, 200)), &d("delete"))
            .unwrap();
        let gone = s.purge_vault("v1", &d("purge")).unwrap();
        assert_eq!(gone.len(), 1);
        assert!(matches!(
            s.get_deleted_vault("v1"),
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            s.kv_get_version("v1", "secret", "x", None),
            Err(StoreError::NotFound)
        ));
        // A hard delete takes the data at once.
        let r2 = vault(&s, "v2");
        let mut v = version("y", "a");
        v.vault = "v2".into();
        s.kv_put_version(&v, &d("set")).unwrap();
        assert_eq!(s.delete_vault(&r2.id, None, &d("delete")).unwrap().len(), 1);
        assert!(s.kv_list("v2", "secret", false).unwrap().is_empty());
    }
}
