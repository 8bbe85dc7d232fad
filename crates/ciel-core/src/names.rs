//! Azure's naming rules, checked before anything is stored.

/// Resource group names: 1-90 characters, alphanumerics, underscores, parentheses, hyphens,
/// periods and Unicode letters/digits; cannot end in a period.
pub fn valid_resource_group_name(name: &str) -> bool {
    let n = name.chars().count();
    (1..=90).contains(&n)
        && !name.ends_with('.')
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '(' | ')' | '-' | '.'))
}

/// Generic ARM resource names: no control characters nor `<>%&:\?/#`, at most 260 characters.
pub fn valid_resource_name(name: &str) -> bool {
    let n = name.chars().count();
    (1..=260).contains(&n)
        && !name.ends_with('.')
        && !name
            .chars()
            .any(|c| c.is_control() || "<>%&:\\?/#*".contains(c))
}

/// Tags: at most 50, names up to 512 characters without `<>%&\?/`, values up to 256.
pub fn validate_tags(tags: &serde_json::Map<String, serde_json::Value>) -> Result<(), String> {
    if tags.len() > 50 {
        return Err("A resource may carry at most 50 tags.".into());
    }
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > 512 || k.chars().any(|c| "<>%&\\?/".contains(c)) {
            return Err(format!("The tag name '{k}' is invalid."));
        }
        match v {
            serde_json::Value::String(s) if s.chars().count() <= 256 => {}
            serde_json::Value::String(_) => {
                return Err(format!(
                    "The value of tag '{k}' is longer than 256 characters."
                ))
            }
            _ => return Err(format!("The value of tag '{k}' must be a string.")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn resource_group_rules() {
        assert!(valid_resource_group_name("rg-1_(a).b"));
        assert!(valid_resource_group_name("é"));
        assert!(!valid_resource_group_name(""));
        assert!(!valid_resource_group_name("rg."));
        assert!(!valid_resource_group_name("a/b"));
        assert!(!valid_resource_group_name("a b"));
        assert!(!valid_resource_group_name(&"a".repeat(91)));
        assert!(valid_resource_group_name(&"a".repeat(90)));
    }
}
