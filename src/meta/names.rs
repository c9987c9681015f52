//! Rules for the names of users, topics, queues and subscriptions.

/// Maximum length of a resource or user name, in bytes.
pub const MAX_NAME_LEN: usize = 200;

/// Checks a resource or user name: 1 to 200 characters from
/// `[A-Za-z0-9._-]`, and not `.` or `..` (names become directory names).
/// Names starting with `__` are reserved for internal partitions unless
/// `allow_internal` is set.
///
/// Returns a message that says what is wrong with the name.
pub fn validate_name(name: &str, allow_internal: bool) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "is {} characters long, the maximum is {MAX_NAME_LEN}",
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "contains {bad:?}; allowed are A-Z, a-z, 0-9, '.', '_' and '-'"
        ));
    }
    if name == "." || name == ".." {
        return Err("must not be '.' or '..'".into());
    }
    if name.starts_with("__") && !allow_internal {
        return Err("names starting with '__' are reserved for internal use".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names_accepted() {
        for name in ["a", "orders.eu-1", "A_b.C-9", &"x".repeat(200)] {
            assert_eq!(validate_name(name, false), Ok(()), "{name}");
        }
    }

    #[test]
    fn invalid_names_rejected() {
        for name in [
            "",
            ".",
            "..",
            "a b",
            "a/b",
            "ü",
            "__meta",
            &"x".repeat(201),
            "a\0",
        ] {
            assert!(validate_name(name, false).is_err(), "{name:?}");
        }
        assert!(validate_name("__meta", true).is_ok());
    }
}
