//! Records as the store keeps them. Plain data; the services give them meaning.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Tenant {
    pub id: String,
    pub display_name: String,
    pub default_domain: String,
    /// Unix seconds of creation.
    pub created: i64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum PrincipalKindRec {
    ServicePrincipal,
    User,
}

impl PrincipalKindRec {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::ServicePrincipal => "sp",
            Self::User => "user",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sp" => Some(Self::ServicePrincipal),
            "user" => Some(Self::User),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Principal {
    pub object_id: String,
    pub tenant_id: String,
    pub kind: PrincipalKindRec,
    /// Application (client) id; service principals only.
    pub app_id: Option<String>,
    pub display_name: String,
    /// User principal name; users only. Unique across the deployment.
    pub upn: Option<String>,
    /// Argon2id PHC string; users only.
    pub password_hash: Option<String>,
    pub failed_logins: i64,
    pub locked_until: Option<i64>,
    pub created: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClientSecret {
    pub key_id: String,
    pub object_id: String,
    /// First three characters, as Entra shows them.
    pub hint: String,
    /// SHA-256 of the secret (secrets are 256-bit random: a slow hash adds nothing).
    pub hash: String,
    pub created: i64,
    pub expires: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Subscription {
    pub id: String,
    pub tenant_id: String,
    pub display_name: String,
    pub state: String,
    pub created: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ResourceGroup {
    pub subscription_id: String,
    pub name: String,
    pub location: String,
    pub tags: serde_json::Value,
    pub managed_by: Option<String>,
    pub created: i64,
    pub changed: i64,
}

/// A provider's resource: the ARM envelope fields the router needs, plus the provider's body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Resource {
    /// Canonical id, e.g. `/subscriptions/S/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/a`.
    pub id: String,
    pub subscription_id: String,
    pub resource_group: Option<String>,
    /// `Microsoft.Storage/storageAccounts`.
    pub rtype: String,
    pub name: String,
    pub location: Option<String>,
    pub tenant_id: String,
    /// The full ARM JSON the provider returns on GET.
    pub body: serde_json::Value,
    pub created: i64,
    pub changed: i64,
    /// The provider's secret material (account keys, data keys), sealed by the provider under the
    /// master key; never part of the ARM body. `None` on an update keeps what is stored.
    #[serde(default, skip_serializing)]
    pub sealed: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RoleAssignment {
    /// The assignment's GUID name.
    pub name: String,
    pub tenant_id: String,
    /// Canonical scope id (`/subscriptions/S[/resourceGroups/rg[/providers/...]]`).
    pub scope: String,
    /// Full role definition id.
    pub role_definition_id: String,
    pub principal_id: String,
    pub principal_type: String,
    pub description: Option<String>,
    pub created_by: String,
    pub created: i64,
}

/// A custom role definition (the built-ins live in code).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RoleDefinitionRec {
    pub id: String,
    pub tenant_id: String,
    pub body: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SigningKey {
    pub kid: String,
    /// PKCS#8 private key sealed with the platform master key (AES-256-GCM, nonce prefixed).
    pub sealed_private_key: Vec<u8>,
    /// Public modulus and exponent, base64url, for JWKS.
    pub n: String,
    pub e: String,
    pub created: i64,
    /// When set, the key no longer signs; it stays published until `retired + max token lifetime`.
    pub retired: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RefreshToken {
    /// SHA-256 of the opaque token.
    pub hash: String,
    pub object_id: String,
    pub tenant_id: String,
    pub client_id: String,
    pub created: i64,
    pub expires: i64,
    /// The sign-in that started this chain of refreshes gave a second factor.
    #[serde(default)]
    pub mfa: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Operation {
    pub id: String,
    pub tenant_id: String,
    /// `InProgress`, `Succeeded`, `Failed`, `Canceled`.
    pub status: String,
    pub resource_id: String,
    /// Resource JSON to return when the operation completes (Location protocol).
    pub result: Option<serde_json::Value>,
    pub error: Option<serde_json::Value>,
    pub created: i64,
    pub finished: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Checkpoint {
    pub seq: i64,
    pub hash: String,
    pub ts: String,
    pub key_id: String,
    /// Ed25519 signature over `ciel_core::audit::checkpoint_message`, hex.
    pub signature: String,
}

/// A query of one tenant's audit entries (the activity log).
#[derive(Debug, Clone)]
pub struct AuditQuery {
    pub tenant_id: String,
    pub from: String,
    pub to: String,
    /// Lower-cased id prefix the target must start with (a subscription, group or resource).
    pub target_prefix: String,
    pub before_seq: i64,
    pub limit: usize,
}

/// A lease on a blob or a container, as stored. Its state (leased, expired, breaking, broken) is
/// derived from these timestamps when read, so that no timer is needed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Lease {
    pub id: String,
    /// Seconds (15–60), or -1 for an infinite lease.
    pub duration: i64,
    /// When a fixed lease expires (microseconds); `None` for an infinite lease.
    pub expires: Option<i64>,
    /// Set by Break Lease: the lease is breaking until then, broken after (microseconds).
    pub broken_at: Option<i64>,
}

/// A blob container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BlobContainer {
    /// Lower-cased id of the storage account.
    pub account: String,
    pub name: String,
    pub metadata: serde_json::Value,
    pub etag: String,
    /// Microseconds since the epoch.
    pub last_modified: i64,
    /// `None`, `blob` or `container`.
    pub public_access: Option<String>,
    #[serde(default)]
    pub lease: Option<Lease>,
}

/// What Set Container ACL changes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContainerAcl {
    pub account: String,
    pub container: String,
    /// `None`, `blob` or `container`.
    pub public_access: Option<String>,
    /// Stored access policies: `[{"id","start","expiry","permission"}]` (at most five).
    pub policies: serde_json::Value,
    pub etag: String,
    pub last_modified: i64,
}

/// A committed blob (or one of its snapshots): its properties and the objects holding its bytes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct BlobRecord {
    pub account: String,
    pub container: String,
    pub name: String,
    /// Id of the encrypted object in the byte store.
    pub object_id: Vec<u8>,
    pub size: i64,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub content_language: Option<String>,
    pub content_disposition: Option<String>,
    pub cache_control: Option<String>,
    pub content_md5: Option<Vec<u8>>,
    pub metadata: serde_json::Value,
    pub etag: String,
    pub last_modified: i64,
    pub created: i64,
    /// Committed blocks, for blobs built with Put Block List: `[{"id","object","size"}]`, objects
    /// as hex; empty for a blob written whole (then `object_id` holds its bytes). Append blobs
    /// keep their appended blocks here (`[{"object","size"}]`), page blobs their extents
    /// (`[{"offset","len","object","at"}]`). Every entry names its object in `"object"`.
    #[serde(default)]
    pub blocks: serde_json::Value,
    /// Empty for the blob itself; the snapshot time (`2026-01-01T00:00:00.1234560Z`) for a snapshot.
    #[serde(default)]
    pub snapshot: String,
    /// `BlockBlob`, `AppendBlob` or `PageBlob` (empty is read as `BlockBlob`).
    #[serde(default)]
    pub blob_type: String,
    #[serde(default)]
    pub lease: Option<Lease>,
    /// Blob index tags, a JSON object of strings.
    #[serde(default)]
    pub tags: serde_json::Value,
    /// Page blobs' sequence number.
    #[serde(default)]
    pub sequence_number: i64,
    /// Properties of the copy that created this blob (`{"id","source","status","progress",
    /// "completed"}`), when it was created by one.
    #[serde(default)]
    pub copy: Option<serde_json::Value>,
    /// Some object of this record may also belong to another record (a snapshot, a same-account
    /// copy). The store keeps it; it only tells the store where to look before removing an object.
    #[serde(default)]
    pub shared: bool,
}

/// The record an operation shares objects with (Copy Blob, Put Block From URL in one account),
/// as the caller read it: the store refuses the share when it changed since.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShareSource {
    pub container: String,
    pub name: String,
    pub snapshot: String,
    pub etag: String,
}

/// What Delete Blob removes.
#[derive(Debug, Clone, PartialEq)]
pub enum BlobDeletion {
    /// The blob; fails with `Conflict("snapshots")` while it has snapshots.
    Base,
    /// One snapshot.
    Snapshot(String),
    /// The blob and its snapshots (`x-ms-delete-snapshots: include`).
    BaseAndSnapshots,
    /// Its snapshots only (`x-ms-delete-snapshots: only`).
    SnapshotsOnly,
}

/// An uncommitted block (Put Block), waiting for a Put Block List.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BlockRec {
    pub account: String,
    pub container: String,
    pub blob: String,
    /// The block id as the client gave it (base64).
    pub block_id: String,
    pub object_id: Vec<u8>,
    pub size: i64,
    pub created: i64,
    /// The object also belongs to another record (Put Block From URL in one account).
    #[serde(default)]
    pub shared: bool,
}

/// One version of a Key Vault secret or key. `sealed` is the secret value sealed under the vault
/// key, or a key's custody material (itself sealed or an HSM handle); `public` is a key's public
/// JWK and operations (empty for a secret).
#[derive(Debug, Clone, PartialEq)]
pub struct KvVersion {
    /// Lower-cased vault name.
    pub vault: String,
    /// `secret` or `key`.
    pub kind: String,
    /// The name as first written (lookups ignore case).
    pub name: String,
    pub version: String,
    pub created: i64,
    pub updated: i64,
    /// `enabled`, `nbf`, `exp` (Unix seconds), and the kind's own fields.
    pub attributes: serde_json::Value,
    pub tags: serde_json::Value,
    pub content_type: Option<String>,
    pub public: serde_json::Value,
    pub sealed: Vec<u8>,
}

/// The state of a secret's or key's name: deleted (soft) or not, and a key's rotation policy.
#[derive(Debug, Clone, PartialEq)]
pub struct KvName {
    pub vault: String,
    pub kind: String,
    pub name: String,
    /// Unix seconds of the soft delete, and when it will be purged.
    pub deleted: Option<i64>,
    pub purge_at: Option<i64>,
    pub policy: Option<serde_json::Value>,
}

/// A soft-deleted vault: its ARM record (with the sealed vault key) kept until purge.
#[derive(Debug, Clone)]
pub struct DeletedVault {
    pub resource: Resource,
    pub deleted: i64,
    pub purge_at: i64,
}

/// An operator's attestation that a compliance requirement is met (`ciel compliance attest`):
/// who vouches for it, until when, and the evidence file's SHA-256 and kept copy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Attestation {
    /// A GUID.
    pub id: String,
    /// The requirement identifier (e.g. "12.5.c").
    pub requirement: String,
    /// The framework the identifier belongs to (e.g. "secnumcloud-3.2").
    pub framework: String,
    /// Who vouches (a person's name, as given by the operator).
    pub attested_by: String,
    /// Unix seconds.
    pub created: i64,
    /// Unix seconds; an attestation past this instant counts as missing.
    pub expires: i64,
    /// The evidence file's name as given (not its path on the operator's machine).
    pub evidence_name: String,
    /// SHA-256 (hex) of the evidence file.
    pub evidence_sha256: String,
    /// Where the kept copy is, relative to the data directory.
    pub evidence_copy: String,
    pub note: Option<String>,
}

/// Something whose soft-delete retention has ended: a whole vault, or one secret or key.
#[derive(Debug, Clone, PartialEq)]
pub enum KvPurgeDue {
    Vault(String),
    Object {
        vault: String,
        kind: String,
        name: String,
    },
}

/// A second factor (TOTP, RFC 6238) of a user or an operator.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MfaFactor {
    /// A principal's object id, or `operator:{name}`.
    pub subject: String,
    /// The tenant of a user; `None` for operators.
    pub tenant_id: Option<String>,
    /// `totp`.
    pub kind: String,
    /// The shared secret, sealed under the master key.
    pub sealed_secret: Vec<u8>,
    /// Set once a first code has been verified; an unconfirmed factor is not yet a second factor.
    pub confirmed: bool,
    /// The last time step accepted: a code of that step or an earlier one is a replay.
    pub last_step: i64,
    pub failed: i64,
    pub locked_until: Option<i64>,
    pub created: i64,
}

/// A Microsoft.Authorization policy object: a custom definition, a set definition or an
/// assignment, kept as its ARM body (the policy engine in ciel-arm reads the body).
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyObject {
    /// Canonical ARM id, e.g. `/subscriptions/S/providers/Microsoft.Authorization/policyAssignments/a`.
    pub id: String,
    pub tenant_id: String,
    /// `policyDefinitions`, `policySetDefinitions` or `policyAssignments`.
    pub kind: String,
    /// The scope it is defined or assigned at (canonical id).
    pub scope: String,
    pub name: String,
    pub body: serde_json::Value,
    pub created: i64,
    pub changed: i64,
}

/// A platform operator: a member of the operator directory, separate from every tenant.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OperatorRec {
    pub id: String,
    /// Unique, case-insensitive.
    pub name: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    pub disabled: bool,
    pub failed_logins: i64,
    pub locked_until: Option<i64>,
    pub created: i64,
}

/// An operator's request for access to a tenant's data (Customer Lockbox), and once approved the
/// grant it becomes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LockboxRequestRec {
    pub id: String,
    pub tenant_id: String,
    pub subscription_id: String,
    /// The operator's name.
    pub operator: String,
    /// The resource id the access is limited to (a subscription, group, account, container, vault).
    pub scope: String,
    /// Access kinds asked for (`blob.read`, `secret.read`, `key.operations`).
    pub access: Vec<String>,
    pub justification: String,
    pub duration_secs: i64,
    /// `Pending`, `Approved`, `Denied`, `Revoked` as stored; `Expired` is derived at read time.
    pub status: String,
    pub created: i64,
    pub decided: Option<i64>,
    pub decided_by: Option<String>,
    pub decision_reason: Option<String>,
    /// Pending: the deadline to decide; approved: the end of the access.
    pub expires: i64,
    pub break_glass: bool,
    /// Break-glass: the incident reference and the second operator who confirmed.
    pub incident: Option<String>,
}
