//! Blob index tags: Set Blob Tags and Get Blob Tags (`?comp=tags`), `x-ms-tags` on Put Blob and
//! Put Block List, `x-ms-if-tags`, and Find Blobs by Tags (`GET /?comp=blobs&where=` on the
//! account, `?restype=container&comp=blobs` on a container).
//!
//! Tags are kept on the blob record. Find Blobs by Tags scans the blobs in scope and evaluates
//! the expression on each: right for the moderate accounts Ciel serves today; a tag index (a
//! table of key, value, blob) is the way to scale it, behind the same functions.

use super::blob_ops::{check_conditions, h, load_at};
use super::container;
use super::error::{BlobError, BlobResult};
use super::{empty, Ctx};
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use ciel_store::StoreError;
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::BodyExt;
use quick_xml::escape::escape;
use serde_json::{json, Map, Value};

const TAGS_READ: &str = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/tags/read";
const TAGS_WRITE: &str =
    "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/tags/write";
const FILTER: &str =
    "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/filter/action";
const MAX_TAGS: usize = 10;

fn invalid(msg: impl Into<String>) -> BlobError {
    BlobError::bad("InvalidTag", msg)
}

fn tag_chars_ok(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || " +-./:=_".contains(c))
}

/// Azure's rules: at most 10 tags; keys 1–128 characters, values 0–256, both of letters, digits
/// and ` +-./:=_`.
pub fn validate(tags: &[(String, String)]) -> BlobResult<Value> {
    if tags.len() > MAX_TAGS {
        return Err(invalid("A blob can have at most 10 tags."));
    }
    let mut m = Map::new();
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > 128 || !tag_chars_ok(k) {
            return Err(invalid(format!("The tag key '{k}' is not valid.")));
        }
        if v.chars().count() > 256 || !tag_chars_ok(v) {
            return Err(invalid(format!("The value of tag '{k}' is not valid.")));
        }
        if m.insert(k.clone(), json!(v)).is_some() {
            return Err(invalid(format!("The tag key '{k}' appears twice.")));
        }
    }
    Ok(Value::Object(m))
}

/// `x-ms-tags: k1=v1&k2=v2` (URL-encoded), an empty object when absent.
pub fn from_header(headers: &HeaderMap) -> BlobResult<Value> {
    match h(headers, "x-ms-tags") {
        None => Ok(json!({})),
        Some(t) => {
            let pairs: Vec<(String, String)> =
                form_urlencoded::parse(t.as_bytes()).into_owned().collect();
            validate(&pairs)
        }
    }
}

/// `<Tags><TagSet><Tag><Key/><Value/></Tag>…</TagSet></Tags>`.
pub fn xml(tags: &Value) -> String {
    let mut s = String::from("<Tags><TagSet>");
    if let Some(m) = tags.as_object() {
        for (k, v) in m {
            s.push_str(&format!(
                "<Tag><Key>{}</Key><Value>{}</Value></Tag>",
                escape(k),
                escape(v.as_str().unwrap_or(""))
            ));
        }
    }
    s.push_str("</TagSet></Tags>");
    s
}

fn parse_xml(body: &[u8]) -> BlobResult<Vec<(String, String)>> {
    use super::xml::invalid;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(vec![]);
    }
    let doc = super::xml::parse(body)?;
    if doc.name != "Tags" {
        return Err(invalid());
    }
    let mut out = Vec::new();
    for set in &doc.children {
        if set.name != "TagSet" {
            return Err(invalid());
        }
        for tag in &set.children {
            if tag.name != "Tag"
                || tag
                    .children
                    .iter()
                    .any(|c| c.name != "Key" && c.name != "Value")
            {
                return Err(invalid());
            }
            let key = tag.text_of("Key").ok_or_else(invalid)?;
            out.push((
                key.to_string(),
                tag.text_of("Value").unwrap_or("").to_string(),
            ));
        }
    }
    Ok(out)
}

/// `PUT ?comp=tags`: replaces the blob's tags. Tags change neither its ETag nor Last-Modified.
pub async fn set_blob_tags(
    ctx: &Ctx<'_>,
    container: &str,
    name: &str,
    req: Request<Body>,
) -> BlobResult<Response> {
    ctx.authorize(&ctx.container_scope(container), TAGS_WRITE, true)
        .await?;
    let headers = req.headers().clone();
    let body = http_body_util::Limited::new(req.into_body(), 64 * 1024)
        .collect()
        .await
        .map_err(|_| {
            BlobError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestBodyTooLarge",
                "The tag document is too large.",
            )
        })?
        .to_bytes();
    let tags = validate(&parse_xml(&body)?)?;
    container::load(ctx, container).await?;
    for attempt in 0..super::CAS_ATTEMPTS {
        if attempt > 0 {
            super::cas_pause(attempt).await;
        }
        let b = load_at(ctx, container, name, None)
            .await?
            .ok_or_else(BlobError::blob_not_found)?;
        check_conditions(&headers, Some(&b), false)?;
        super::lease::check_blob_write(&headers, Some(&b))?;
        let mut nb = b.clone();
        nb.tags = tags.clone();
        let draft = ctx.draft(
            TAGS_WRITE,
            &format!("{}/blobs/{}", ctx.container_scope(container), name),
            "success",
            json!({"tagCount": tags.as_object().map(|t| t.len())}),
        );
        let (etag, lease) = (b.etag.clone(), b.lease.clone());
        match ciel_store::run(&ctx.svc.store, move |s| {
            s.replace_blob(&nb, &etag, &lease, &draft)
        })
        .await
        {
            Ok(_) => return Ok(empty(StatusCode::NO_CONTENT)),
            Err(StoreError::Conflict(_)) => continue,
            Err(StoreError::NotFound) => return Err(BlobError::blob_not_found()),
            Err(e) => return Err(e.into()),
        }
    }
    Err(BlobError::new(
        StatusCode::CONFLICT,
        "OperationConflict",
        "The blob changed while its tags were set; retry.",
    ))
}

fn xml_response(x: String) -> Response {
    let mut r = (StatusCode::OK, x).into_response();
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    r
}

/// `GET ?comp=tags` (also of a snapshot).
pub async fn get_blob_tags(
    ctx: &Ctx<'_>,
    container: &str,
    name: &str,
    headers: &HeaderMap,
    snapshot: Option<&str>,
) -> BlobResult<Response> {
    ctx.authorize(&ctx.container_scope(container), TAGS_READ, true)
        .await?;
    container::load(ctx, container).await?;
    let b = load_at(ctx, container, name, snapshot)
        .await?
        .ok_or_else(BlobError::blob_not_found)?;
    check_conditions(headers, Some(&b), true)?;
    super::lease::check_blob_read(headers, &b)?;
    Ok(xml_response(format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>{}",
        xml(&b.tags)
    )))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Gt,
    Ge,
    Lt,
    Le,
}

/// One comparison of a where-expression: `"key" op 'value'`; `@container` names the container.
#[derive(Debug, Clone, PartialEq)]
pub struct Clause {
    pub key: String,
    pub op: Op,
    pub value: String,
}

fn where_error(msg: &str) -> BlobError {
    BlobError::bad(
        "InvalidQueryParameterValue",
        format!("The where expression is not valid: {msg}."),
    )
}

/// Parses Azure's tag filter grammar: comparisons joined by `AND` (case-insensitive), each
/// `key op 'value'` with the key bare or in double quotes, `op` one of `= > >= < <=`, values in
/// single quotes (`''` escapes a quote). At most 10 comparisons; `@container` only with `=`.
pub fn parse_where(s: &str) -> BlobResult<Vec<Clause>> {
    let c: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < c.len() && c[*i].is_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        // The key.
        let key = if i < c.len() && c[i] == '"' {
            i += 1;
            let start = i;
            while i < c.len() && c[i] != '"' {
                i += 1;
            }
            if i >= c.len() {
                return Err(where_error("a key's quote is not closed"));
            }
            let k: String = c[start..i].iter().collect();
            i += 1;
            k
        } else {
            let start = i;
            while i < c.len() && (c[i].is_ascii_alphanumeric() || "@+-./:_".contains(c[i])) {
                i += 1;
            }
            c[start..i].iter().collect()
        };
        if key.is_empty() || key.chars().count() > 128 {
            return Err(where_error("a key is missing or too long"));
        }
        if key.starts_with('@') && key != "@container" {
            return Err(where_error("the only @ name is @container"));
        }
        skip_ws(&mut i);
        let op = match (c.get(i), c.get(i + 1)) {
            (Some('>'), Some('=')) => {
                i += 2;
                Op::Ge
            }
            (Some('<'), Some('=')) => {
                i += 2;
                Op::Le
            }
            (Some('>'), _) => {
                i += 1;
                Op::Gt
            }
            (Some('<'), _) => {
                i += 1;
                Op::Lt
            }
            (Some('='), _) => {
                i += 1;
                Op::Eq
            }
            _ => return Err(where_error("an operator is missing")),
        };
        if key == "@container" && op != Op::Eq {
            return Err(where_error("@container only takes ="));
        }
        skip_ws(&mut i);
        if c.get(i) != Some(&'\'') {
            return Err(where_error("values are in single quotes"));
        }
        i += 1;
        let mut value = String::new();
        loop {
            match (c.get(i), c.get(i + 1)) {
                (Some('\''), Some('\'')) => {
                    value.push('\'');
                    i += 2;
                }
                (Some('\''), _) => {
                    i += 1;
                    break;
                }
                (Some(ch), _) => {
                    value.push(*ch);
                    i += 1;
                }
                (None, _) => return Err(where_error("a value's quote is not closed")),
            }
        }
        if value.chars().count() > 256 {
            return Err(where_error("a value is too long"));
        }
        out.push(Clause { key, op, value });
        if out.len() > MAX_TAGS {
            return Err(where_error("at most 10 comparisons"));
        }
        skip_ws(&mut i);
        if i >= c.len() {
            break;
        }
        let word: String = c[i..(i + 3).min(c.len())].iter().collect();
        if !word.eq_ignore_ascii_case("and")
            || c.get(i + 3).map(|ch| !ch.is_whitespace()).unwrap_or(true)
        {
            return Err(where_error("comparisons are joined by AND"));
        }
        i += 3;
    }
    Ok(out)
}

/// Whether a blob's tags (and container) satisfy every clause. Comparisons are on strings.
pub fn matches(clauses: &[Clause], tags: &Value, container: &str) -> bool {
    clauses.iter().all(|cl| {
        let v = if cl.key == "@container" {
            Some(container)
        } else {
            tags.get(&cl.key).and_then(|v| v.as_str())
        };
        let Some(v) = v else { return false };
        let o = v.cmp(cl.value.as_str());
        match cl.op {
            Op::Eq => o.is_eq(),
            Op::Gt => o.is_gt(),
            Op::Ge => o.is_ge(),
            Op::Lt => o.is_lt(),
            Op::Le => o.is_le(),
        }
    })
}

/// `x-ms-if-tags`: the write or read proceeds only when the blob's tags match.
pub fn check_if_tags(headers: &HeaderMap, tags: &Value) -> BlobResult<()> {
    if let Some(expr) = h(headers, "x-ms-if-tags") {
        let clauses = parse_where(expr)?;
        if clauses.iter().any(|c| c.key == "@container") || !matches(&clauses, tags, "") {
            return Err(BlobError::new(
                StatusCode::PRECONDITION_FAILED,
                "ConditionNotMet",
                "The condition specified using HTTP conditional header(s) is not met.",
            ));
        }
    }
    Ok(())
}

/// Find Blobs by Tags, on the account (`container` None) or one container.
pub async fn find_blobs_by_tags(
    ctx: &Ctx<'_>,
    container: Option<&str>,
    q: &[(String, String)],
) -> BlobResult<Response> {
    let scope = match container {
        Some(c) => ctx.container_scope(c),
        None => ctx.account.id.clone(),
    };
    ctx.authorize(&scope, FILTER, true).await?;
    let get = |k: &str| {
        q.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    let expr = get("where").ok_or_else(|| {
        BlobError::bad(
            "MissingRequiredQueryParameter",
            "A query parameter that's mandatory for this request is not specified: where.",
        )
    })?;
    let clauses = parse_where(&expr)?;
    let max = super::max_results(get("maxresults").as_deref())?;
    // The marker is `container/name` of the last blob answered (container names have no '/').
    let marker = get("marker").filter(|m| !m.is_empty());
    let (mut after_c, mut after_n) = match marker.as_deref().and_then(|m| m.split_once('/')) {
        Some((c, n)) => (Some(c.to_string()), Some(n.to_string())),
        None => (None, None),
    };
    let containers: Vec<String> = match container {
        Some(c) => {
            container::load(ctx, c).await?;
            vec![c.to_string()]
        }
        None => {
            // Only the containers a clause on @container allows, else all of them.
            let mut all = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let (a, m) = (ctx.account.id.key(), cursor.clone());
                let batch = ciel_store::run(&ctx.svc.store, move |s| {
                    s.list_containers(&a, "", m.as_deref(), 1000)
                })
                .await?;
                let done = batch.len() < 1000;
                for c in batch {
                    cursor = Some(c.name.clone());
                    all.push(c.name);
                }
                if done {
                    break;
                }
            }
            all
        }
    };
    let mut found: Vec<(String, String, Value)> = Vec::new();
    let mut next: Option<String> = None;
    'outer: for c in containers {
        if let Some(ac) = &after_c {
            if c.as_str() < ac.as_str() {
                continue;
            }
            if c.as_str() > ac.as_str() {
                after_c = None;
                after_n = None;
            }
        }
        if !clauses
            .iter()
            .filter(|cl| cl.key == "@container")
            .all(|cl| cl.value == c)
        {
            continue;
        }
        let mut cursor = after_n.take();
        after_c = None;
        loop {
            let (a, cn, m) = (ctx.account.id.key(), c.clone(), cursor.clone());
            let batch = ciel_store::run(&ctx.svc.store, move |s| {
                s.list_blobs(&a, &cn, "", m.as_deref(), 1000)
            })
            .await?;
            let done = batch.len() < 1000;
            for b in batch {
                cursor = Some(b.name.clone());
                if matches(&clauses, &b.tags, &c) {
                    if found.len() == max {
                        if let Some((lc, ln, _)) = found.last() {
                            next = Some(format!("{lc}/{ln}"));
                        }
                        break 'outer;
                    }
                    // Answer the tags the expression named.
                    let mut shown = Map::new();
                    for cl in &clauses {
                        if let Some(v) = b.tags.get(&cl.key) {
                            shown.insert(cl.key.clone(), v.clone());
                        }
                    }
                    found.push((c.clone(), b.name.clone(), Value::Object(shown)));
                }
            }
            if done {
                break;
            }
        }
    }
    let mut x = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><EnumerationResults ServiceEndpoint=\"{}\"><Where>{}</Where><Blobs>",
        escape(&ctx.service_endpoint),
        escape(&expr)
    );
    for (c, n, t) in &found {
        x.push_str(&format!(
            "<Blob><Name>{}</Name><ContainerName>{}</ContainerName>{}</Blob>",
            escape(n),
            escape(c),
            xml(t)
        ));
    }
    x.push_str(&format!(
        "</Blobs><NextMarker>{}</NextMarker></EnumerationResults>",
        escape(next.as_deref().unwrap_or(""))
    ));
    Ok(xml_response(x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn where_grammar() {
        let c =
            parse_where("\"Project\" = 'Contoso' AND Status >= '2' and @container = 'c1'").unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c[0].key, "Project");
        assert_eq!(c[0].op, Op::Eq);
        assert_eq!(c[1].op, Op::Ge);
        assert_eq!(c[2].key, "@container");
        let v = parse_where("k='it''s'").unwrap();
        assert_eq!(v[0].value, "it's");
        for bad in [
            "",
            "k = v",
            "k 'v'",
            "k = 'v' OR j = 'w'",
            "k = 'v' AND",
            "\"k = 'v'",
            "@other = 'x'",
            "@container > 'x'",
            "k = 'unclosed",
        ] {
            assert!(parse_where(bad).is_err(), "{bad}");
        }
        let tags = json!({"Project": "Contoso", "Status": "3"});
        assert!(matches(&c, &tags, "c1"));
        assert!(!matches(&c, &tags, "c2"));
        assert!(!matches(&parse_where("Status < '3'").unwrap(), &tags, "c1"));
        assert!(!matches(&parse_where("Missing = ''").unwrap(), &tags, "c1"));
    }

    #[test]
    fn tag_rules() {
        let ok = vec![("a-b.c/d:e=f_g h+".to_string(), "".to_string())];
        assert!(validate(&ok).is_ok());
        assert!(validate(&[("".into(), "v".into())]).is_err());
        assert!(validate(&[("k".into(), "a&b".into())]).is_err());
        assert!(validate(&[("k".repeat(129), "v".into())]).is_err());
        let many: Vec<(String, String)> = (0..11).map(|i| (format!("k{i}"), "v".into())).collect();
        assert!(validate(&many).is_err());
        let t = parse_xml(b"<?xml version=\"1.0\"?><Tags><TagSet><Tag><Key>a</Key><Value>1</Value></Tag><Tag><Key>b</Key><Value></Value></Tag></TagSet></Tags>").unwrap();
        assert_eq!(t, vec![("a".into(), "1".into()), ("b".into(), "".into())]);
        assert!(parse_xml(b"<Tags><Evil/></Tags>").is_err());
    }
}
