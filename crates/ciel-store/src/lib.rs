//! The metadata store. Services see only the [`MetadataStore`] trait and the record types in
//! [`model`]; the SQL lives in the engine modules (today [`sqlite`]; a PostgreSQL engine can be
//! added beside it without touching a service). This is the only crate that speaks SQL.
//!
//! Every mutating method takes the audit draft(s) describing it and writes them in the same
//! transaction, chained: a change is never stored without its audit entry, nor the reverse.

pub mod model;
pub mod sqlite;

use ciel_core::audit::{AuditDraft, AuditRecord};
pub use model::*;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("already exists: {0}")]
    Conflict(String),
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("the store task failed: {0}")]
    Task(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// `NotFound` as `None`: for lookups where absence is an answer, not an error.
pub trait Found<T> {
    fn found(self) -> Result<Option<T>>;
}

impl<T> Found<T> for Result<T> {
    fn found(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(StoreError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The metadata store interface. Methods are synchronous (SQLite is in-process); async callers use
/// [`run`] so that an fsync never blocks the reactor.
pub trait MetadataStore: Send + Sync + 'static {
    // --- tenants and principals
    fn create_tenant(&self, t: &Tenant, audit: &AuditDraft) -> Result<()>;
    fn get_tenant(&self, id: &str) -> Result<Tenant>;
    fn list_tenants(&self) -> Result<Vec<Tenant>>;
    fn create_principal(&self, p: &Principal, audit: &AuditDraft) -> Result<()>;
    fn get_principal(&self, object_id: &str) -> Result<Principal>;
    fn find_principal_by_app_id(&self, app_id: &str) -> Result<Principal>;
    fn find_user_by_upn(&self, upn: &str) -> Result<Principal>;
    fn list_principals(
        &self,
        tenant_id: &str,
        kind: Option<PrincipalKindRec>,
    ) -> Result<Vec<Principal>>;
    fn delete_principal(&self, object_id: &str, audit: &AuditDraft) -> Result<()>;
    fn update_principal_login_state(
        &self,
        object_id: &str,
        failed_logins: i64,
        locked_until: Option<i64>,
    ) -> Result<()>;
    /// Replaces every secret of a service principal with `secret` (reset-secret).
    fn replace_sp_secrets(
        &self,
        object_id: &str,
        secret: &ClientSecret,
        audit: &AuditDraft,
    ) -> Result<()>;
    fn list_sp_secrets(&self, object_id: &str) -> Result<Vec<ClientSecret>>;

    // --- subscriptions
    fn create_subscription(&self, s: &Subscription, audit: &AuditDraft) -> Result<()>;
    fn get_subscription(&self, id: &str) -> Result<Subscription>;
    fn list_subscriptions(&self, tenant_id: &str) -> Result<Vec<Subscription>>;

    // --- resource groups
    /// Insert or replace. Returns true when the group was created.
    fn put_resource_group(&self, rg: &ResourceGroup, audit: &AuditDraft) -> Result<bool>;
    fn get_resource_group(&self, subscription: &str, name: &str) -> Result<ResourceGroup>;
    fn list_resource_groups(
        &self,
        subscription: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ResourceGroup>>;
    /// Deletes the group, every resource in it and every role assignment scoped within it.
    fn delete_resource_group(
        &self,
        subscription: &str,
        name: &str,
        audit: &AuditDraft,
    ) -> Result<()>;

    // --- generic resources (the providers' records)
    fn put_resource(&self, r: &Resource, audit: &AuditDraft) -> Result<bool>;
    fn get_resource(&self, id_key: &str) -> Result<Resource>;
    fn delete_resource(&self, id_key: &str, audit: &AuditDraft) -> Result<()>;
    /// Resources whose id lies below `scope_key` (a subscription or resource group key), optionally of one type.
    fn list_resources(
        &self,
        scope_key: &str,
        rtype: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Resource>>;
    /// Every resource of a type with a name, across all tenants (for names unique in the cloud,
    /// such as storage accounts, whose names are DNS labels).
    fn find_resources_by_name(&self, rtype: &str, name: &str) -> Result<Vec<Resource>>;

    // --- Blob data (containers and committed blobs; the bytes live in the byte store)
    fn put_container(&self, c: &BlobContainer, audit: &AuditDraft) -> Result<()>;
    fn get_container(&self, account: &str, name: &str) -> Result<BlobContainer>;
    /// Deletes the container and its blobs; returns the object ids to remove from the byte store.
    fn delete_container(
        &self,
        account: &str,
        name: &str,
        audit: &AuditDraft,
    ) -> Result<Vec<Vec<u8>>>;
    fn list_containers(
        &self,
        account: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<BlobContainer>>;
    /// Inserts or replaces a blob and drops its uncommitted blocks; returns the objects nothing
    /// refers to any more (the old content, unused blocks), for removal from the byte store.
    fn put_blob(&self, b: &BlobRecord, audit: &AuditDraft) -> Result<Vec<Vec<u8>>>;
    fn get_blob(&self, account: &str, container: &str, name: &str) -> Result<BlobRecord>;
    /// `put_blob` when the blob is still as the caller read it: absent when `expect` is None,
    /// else with that ETag and lease; `Conflict("changed")` otherwise (the caller decides again
    /// on what is stored, so that a lease taken meanwhile is neither bypassed nor dropped).
    fn put_blob_if(
        &self,
        b: &BlobRecord,
        expect: &Option<(String, Option<Lease>)>,
        audit: &AuditDraft,
    ) -> Result<Vec<Vec<u8>>>;
    /// Returns the objects of the deleted blob and of its uncommitted blocks that nothing else
    /// refers to. `Conflict("snapshots")` while the blob has snapshots.
    fn delete_blob(
        &self,
        account: &str,
        container: &str,
        name: &str,
        audit: &AuditDraft,
    ) -> Result<Vec<Vec<u8>>>;
    /// Updates a blob's properties and metadata (not its content nor its blocks).
    fn update_blob_properties(&self, b: &BlobRecord, audit: &AuditDraft) -> Result<()>;
    fn update_container(&self, c: &BlobContainer, audit: &AuditDraft) -> Result<()>;
    /// Stores an uncommitted block; returns the object of the block it replaced, if nothing else
    /// refers to it.
    fn put_block(&self, b: &BlockRec) -> Result<Option<Vec<u8>>>;
    fn list_blocks(&self, account: &str, container: &str, blob: &str) -> Result<Vec<BlockRec>>;
    fn list_blobs(
        &self,
        account: &str,
        container: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<BlobRecord>>;
    /// A blob (`snapshot` empty) or one of its snapshots.
    fn get_blob_at(
        &self,
        account: &str,
        container: &str,
        name: &str,
        snapshot: &str,
    ) -> Result<BlobRecord>;
    /// Replaces the blob itself (not its uncommitted blocks) when its stored ETag and lease are
    /// still `expect_etag` and `expect_lease`, else `Conflict("changed")`: the compare-and-swap
    /// under leases, appends and page writes. Returns the objects nothing refers to any more.
    fn replace_blob(
        &self,
        b: &BlobRecord,
        expect_etag: &str,
        expect_lease: &Option<Lease>,
        audit: &AuditDraft,
    ) -> Result<Vec<Vec<u8>>>;
    /// Stores a snapshot (a row with `snapshot` set) sharing the blob's objects.
    /// `NotFound` without the blob, `Conflict` when that snapshot time exists.
    fn create_snapshot(&self, snap: &BlobRecord, audit: &AuditDraft) -> Result<()>;
    /// Delete Blob with its snapshot options; returns the objects nothing refers to any more.
    /// `Conflict("snapshots")` for `Base` while snapshots exist.
    fn delete_blobs(
        &self,
        account: &str,
        container: &str,
        name: &str,
        what: &BlobDeletion,
        audit: &AuditDraft,
    ) -> Result<Vec<Vec<u8>>>;
    /// `list_blobs`, with each blob's snapshots (before it, oldest first) when `snapshots`.
    fn list_blobs_with(
        &self,
        account: &str,
        container: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        snapshots: bool,
    ) -> Result<Vec<BlobRecord>>;
    /// `put_blob` for a blob whose objects belong to `src` too (a same-account copy): both are
    /// marked shared in the same transaction; `Conflict("source changed")` when `src` no longer
    /// has the ETag the caller read.
    fn put_blob_from(
        &self,
        b: &BlobRecord,
        src: &ShareSource,
        audit: &AuditDraft,
    ) -> Result<Vec<Vec<u8>>>;
    /// `put_block` for a block whose object belongs to `src` too (Put Block From URL).
    fn put_block_from(&self, b: &BlockRec, src: &ShareSource) -> Result<Vec<Vec<u8>>>;
    /// Sets a container's lease when the stored one is still `expect` (`Conflict` otherwise).
    fn set_container_lease(
        &self,
        account: &str,
        name: &str,
        expect: &Option<Lease>,
        lease: &Option<Lease>,
        audit: &AuditDraft,
    ) -> Result<()>;
    /// Removes every container and blob of an account (with the account); returns the object ids.
    fn delete_account_data(&self, account: &str) -> Result<Vec<Vec<u8>>>;
    /// A container's public access level and stored access policies (Set Container ACL), with
    /// its new etag and modification time.
    fn set_container_acl(&self, acl: &ContainerAcl, audit: &AuditDraft) -> Result<()>;
    /// The stored access policies of a container (an empty list when none were set).
    fn get_container_policies(&self, account: &str, container: &str) -> Result<serde_json::Value>;
    /// The Blob service properties of an account (CORS, default version...), if ever set.
    fn get_blob_service_properties(&self, account: &str) -> Result<Option<serde_json::Value>>;
    fn put_blob_service_properties(
        &self,
        account: &str,
        properties: &serde_json::Value,
        audit: &AuditDraft,
    ) -> Result<()>;
    /// Every object that the account's blob records and uncommitted blocks refer to: what the
    /// byte store's startup garbage collection keeps (it removes every other object file of the
    /// account). A record whose references cannot be read whole is an error, never a smaller
    /// set. Any new table that refers to objects must be added here.
    fn referenced_objects(&self, account: &str) -> Result<std::collections::HashSet<Vec<u8>>>;
    /// The accounts (id keys) that have blob data in the store: containers, blobs, blocks.
    fn blob_accounts(&self) -> Result<Vec<String>>;

    // --- Key Vault (data of a vault is keyed by its lower-cased name)
    /// Adds a version (creating the name); `Conflict("deleted")` while the name is soft-deleted.
    fn kv_put_version(&self, v: &KvVersion, audit: &AuditDraft) -> Result<()>;
    /// Updates a version's attributes, tags and content type.
    fn kv_update_version(&self, v: &KvVersion, audit: &AuditDraft) -> Result<()>;
    fn kv_get_name(&self, vault: &str, kind: &str, name: &str) -> Result<KvName>;
    /// A version, or the latest (most recently created) when `version` is None.
    fn kv_get_version(
        &self,
        vault: &str,
        kind: &str,
        name: &str,
        version: Option<&str>,
    ) -> Result<KvVersion>;
    /// Every version of a name, oldest first.
    fn kv_list_versions(&self, vault: &str, kind: &str, name: &str) -> Result<Vec<KvVersion>>;
    /// Each name of a kind (deleted or live) with its latest version, by name.
    fn kv_list(&self, vault: &str, kind: &str, deleted: bool) -> Result<Vec<(KvName, KvVersion)>>;
    /// Soft-deletes (`Some((deleted, purge_at))`) or recovers (`None`) a name.
    fn kv_set_deleted(
        &self,
        vault: &str,
        kind: &str,
        name: &str,
        deleted: Option<(i64, i64)>,
        audit: &AuditDraft,
    ) -> Result<()>;
    /// Removes a name and all its versions; returns them (an HSM destroys their objects).
    fn kv_purge(
        &self,
        vault: &str,
        kind: &str,
        name: &str,
        audit: &AuditDraft,
    ) -> Result<Vec<KvVersion>>;
    fn kv_set_policy(
        &self,
        vault: &str,
        kind: &str,
        name: &str,
        policy: &serde_json::Value,
        audit: &AuditDraft,
    ) -> Result<()>;
    /// Recreates a name with its versions (restore from backup); `Conflict` if the name exists.
    fn kv_restore(&self, versions: &[KvVersion], audit: &AuditDraft) -> Result<()>;
    /// Deletes a vault: soft (`Some((deleted, purge_at))`: the record moves to the deleted
    /// vaults, its data stays) or for good (its data goes too, returned for HSM clean-up).
    fn delete_vault(
        &self,
        id_key: &str,
        soft: Option<(i64, i64)>,
        audit: &AuditDraft,
    ) -> Result<Vec<KvVersion>>;
    fn list_deleted_vaults(&self, subscription_id: &str) -> Result<Vec<DeletedVault>>;
    fn get_deleted_vault(&self, name: &str) -> Result<DeletedVault>;
    /// Moves a deleted vault back (recover); its data was kept.
    fn recover_vault(&self, name: &str, audit: &AuditDraft) -> Result<Resource>;
    /// Destroys a deleted vault and its data.
    fn purge_vault(&self, name: &str, audit: &AuditDraft) -> Result<Vec<KvVersion>>;
    /// Live keys that carry a rotation policy, in every vault.
    fn kv_with_policy(&self) -> Result<Vec<KvName>>;
    /// Deleted vaults and names whose purge date has passed.
    fn kv_purge_due(&self, now: i64) -> Result<Vec<KvPurgeDue>>;
    // --- RBAC
    fn put_role_assignment(&self, a: &RoleAssignment, audit: &AuditDraft) -> Result<()>;
    fn get_role_assignment(&self, name: &str) -> Result<RoleAssignment>;
    fn delete_role_assignment(&self, name: &str, audit: &AuditDraft) -> Result<()>;
    /// Every assignment in a tenant (RBAC evaluation filters by scope in memory: assignment
    /// counts per principal are small, and scopes compare case-insensitively).
    fn list_role_assignments(&self, tenant_id: &str) -> Result<Vec<RoleAssignment>>;
    fn list_role_assignments_for_principal(
        &self,
        principal_id: &str,
    ) -> Result<Vec<RoleAssignment>>;
    fn put_role_definition(&self, d: &RoleDefinitionRec, audit: &AuditDraft) -> Result<()>;
    fn list_role_definitions(&self, tenant_id: &str) -> Result<Vec<RoleDefinitionRec>>;
    fn delete_role_definition(&self, id: &str, audit: &AuditDraft) -> Result<()>;

    // --- token service
    fn put_signing_key(&self, k: &SigningKey, audit: &AuditDraft) -> Result<()>;
    fn list_signing_keys(&self) -> Result<Vec<SigningKey>>;
    fn retire_signing_key(&self, kid: &str, retired_at: i64, audit: &AuditDraft) -> Result<()>;
    fn put_refresh_token(&self, t: &RefreshToken) -> Result<()>;
    /// Consumes a refresh token (one use: the token service issues a new one each time).
    fn take_refresh_token(&self, hash: &str) -> Result<RefreshToken>;

    // --- long-running operations
    fn put_operation(&self, op: &Operation) -> Result<()>;
    fn get_operation(&self, id: &str) -> Result<Operation>;

    // --- audit
    /// Appends entries that record no stored change (reads, denials, tokens).
    fn append_audit(&self, drafts: &[AuditDraft]) -> Result<Vec<AuditRecord>>;
    /// Entries with `seq > after`, in order, at most `limit`.
    fn read_audit(&self, after: i64, limit: usize) -> Result<Vec<AuditRecord>>;
    fn audit_head(&self) -> Result<Option<(i64, String)>>;
    /// A tenant's entries, newest first: `from <= ts <= to` (RFC 3339 strings as stored), target
    /// under `target_prefix` (case-insensitive), `seq < before`, at most `limit`.
    fn query_audit(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>>;
    fn put_checkpoint(&self, c: &Checkpoint) -> Result<()>;
    fn list_checkpoints(&self) -> Result<Vec<Checkpoint>>;

    // --- compliance
    /// Records an operator's attestation (never replaced: a newer one for the same requirement
    /// supersedes it in reports, the old one stays as history).
    fn put_attestation(&self, a: &Attestation, audit: &AuditDraft) -> Result<()>;
    /// Every attestation, in the order they were recorded.
    fn list_attestations(&self) -> Result<Vec<Attestation>>;

    // --- platform settings (small key/value facts: bootstrap ids, master-key check value)
    fn get_setting(&self, key: &str) -> Result<Option<String>>;
    fn set_setting(&self, key: &str, value: &str) -> Result<()>;

    // ---- second factors (TOTP) ----
    /// Enrols (or re-enrols, replacing the old factor unconfirmed) a second factor.
    fn put_mfa_factor(&self, f: &MfaFactor, audit: &AuditDraft) -> Result<()>;
    fn get_mfa_factor(&self, subject: &str) -> Result<MfaFactor>;
    fn list_mfa_factors(&self) -> Result<Vec<MfaFactor>>;
    /// Accepts a code of time step `step` if no code of this step or a later one was accepted
    /// before (atomically: two concurrent uses of one code cannot both pass). Clears failures and
    /// confirms the factor. `Ok(false)` means a replay.
    fn mfa_accept_step(&self, subject: &str, step: i64, audit: &AuditDraft) -> Result<bool>;
    /// Records a wrong code: the failure count and, past the threshold, the lock.
    fn mfa_record_failure(
        &self,
        subject: &str,
        failed: i64,
        locked_until: Option<i64>,
        audit: &AuditDraft,
    ) -> Result<()>;
    fn delete_mfa_factor(&self, subject: &str, audit: &AuditDraft) -> Result<()>;

    // ---- audit retention ----
    /// Records that the audit log is pruned through `anchor` (a signed checkpoint), with the
    /// entry that says so. Refused if an anchor at or after it exists.
    fn set_audit_anchor(&self, anchor: &Checkpoint, audit: &AuditDraft) -> Result<()>;
    fn audit_anchor(&self) -> Result<Option<Checkpoint>>;
    /// Deletes at most `limit` entries with a sequence number up to `seq` and up to the anchor;
    /// returns how many.
    fn delete_audit_through(&self, seq: i64, limit: usize) -> Result<usize>;
    // ---- policy ----
    /// Creates or replaces a policy definition, set definition or assignment; true when created.
    fn policy_put(&self, p: &PolicyObject, audit: &AuditDraft) -> Result<bool>;
    /// By id (any casing).
    fn policy_get(&self, id: &str) -> Result<PolicyObject>;
    /// A tenant's objects of one kind (`policyDefinitions`, `policySetDefinitions`,
    /// `policyAssignments`), in id order.
    fn policy_list(&self, tenant_id: &str, kind: &str) -> Result<Vec<PolicyObject>>;
    fn policy_delete(&self, id: &str, audit: &AuditDraft) -> Result<()>;

    // ---- lockbox ----
    /// Adds an operator to the operator directory (`Conflict` when the name is taken).
    fn put_operator(&self, o: &OperatorRec, audit: &AuditDraft) -> Result<()>;
    fn get_operator(&self, name: &str) -> Result<OperatorRec>;
    fn list_operators(&self) -> Result<Vec<OperatorRec>>;
    /// Replaces an operator's mutable state (disabled, login failures, lock); the audit entry is
    /// optional because a login's own entry is written by the token path.
    fn update_operator(&self, o: &OperatorRec, audit: Option<&AuditDraft>) -> Result<()>;
    fn put_lockbox_request(&self, r: &LockboxRequestRec, audit: &AuditDraft) -> Result<()>;
    fn get_lockbox_request(&self, id: &str) -> Result<LockboxRequestRec>;
    /// Newest first; one tenant's, or all.
    fn list_lockbox_requests(&self, tenant_id: Option<&str>) -> Result<Vec<LockboxRequestRec>>;
    /// Writes a decision (approve, deny, revoke) if the stored status is still `from_status`
    /// (compare-and-swap: two administrators deciding at once cannot both win). `Ok(false)` when
    /// the status had changed.
    fn decide_lockbox_request(
        &self,
        r: &LockboxRequestRec,
        from_status: &str,
        audit: &AuditDraft,
    ) -> Result<bool>;

    // ---- mfa policy ----
    /// A tenant's MFA requirement (`off`, `admins`, `all`); `None` when never set (off).
    fn get_tenant_mfa_policy(&self, tenant_id: &str) -> Result<Option<String>>;
    fn put_tenant_mfa_policy(
        &self,
        tenant_id: &str,
        require: &str,
        updated_by: &str,
        audit: &AuditDraft,
    ) -> Result<()>;
}

pub type Store = Arc<dyn MetadataStore>;

/// Run a store call on the blocking pool.
pub async fn run<T, F>(store: &Store, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(&dyn MetadataStore) -> Result<T> + Send + 'static,
{
    let s = store.clone();
    tokio::task::spawn_blocking(move || f(s.as_ref()))
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
}
