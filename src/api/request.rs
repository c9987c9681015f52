//! Request parsing: JSON bodies that name the failing field, and query
//! strings with typed parameters and no unknown names.

use std::collections::HashMap;
use std::str::FromStr;

use bytes::Bytes;
use serde::Deserialize;

use crate::api::error::ApiError;

/// Parses a JSON body into `T`. Errors name the JSON path of the field
/// (for example `messages[2].key`) and what was wrong with it.
///
/// The body is parsed once without path tracking, which is the fast path
/// every valid request takes; only a failed parse runs again with
/// `serde_path_to_error` to find the path for the message.
pub fn parse_json<'de, T: Deserialize<'de>>(body: &'de Bytes) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::invalid(
            "body",
            "request body is empty; expected a JSON object",
        ));
    }
    // serde accepts an array for a struct (its fields in order), which the
    // API does not: every body is an object.
    let first = body.iter().find(|byte| !byte.is_ascii_whitespace());
    if first.is_some_and(|byte| *byte != b'{') {
        return Err(ApiError::invalid(
            "body",
            "expected a JSON object, like {\"name\": ...}",
        ));
    }
    match serde_json::from_slice(body) {
        Ok(value) => Ok(value),
        Err(err) => Err(describe_parse_error::<T>(body, err)),
    }
}

fn describe_parse_error<'de, T: Deserialize<'de>>(
    body: &'de Bytes,
    plain: serde_json::Error,
) -> ApiError {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    match serde_path_to_error::deserialize::<_, T>(&mut deserializer) {
        Err(err) => {
            let path = err.path().to_string();
            let field = if path == "." {
                "body".to_string()
            } else {
                path
            };
            ApiError::invalid(&field, err.into_inner())
        }
        // Only trailing data after a valid value fails the plain parse but
        // not this one.
        Ok(_) => ApiError::invalid("body", plain),
    }
}

/// A parsed query string; each getter checks one parameter, and
/// [`Query::finish`] rejects the ones nobody asked for.
pub struct Query {
    params: HashMap<String, String>,
    known: Vec<&'static str>,
}

impl Query {
    /// Parses `raw` (without the `?`).
    pub fn parse(raw: &str) -> Result<Query, ApiError> {
        let mut params = HashMap::new();
        for (name, value) in form_urlencoded_pairs(raw) {
            if params.insert(name.clone(), value).is_some() {
                return Err(ApiError::invalid(
                    &name,
                    "query parameter given more than once",
                ));
            }
        }
        Ok(Query {
            params,
            known: Vec::new(),
        })
    }

    /// The parameter `name` parsed as `T`, if present.
    pub fn get<T: FromStr>(
        &mut self,
        name: &'static str,
        expected: &str,
    ) -> Result<Option<T>, ApiError> {
        self.known.push(name);
        match self.params.get(name) {
            None => Ok(None),
            Some(text) => text
                .parse()
                .map(Some)
                .map_err(|_| ApiError::invalid(name, format!("`{text}` is not {expected}"))),
        }
    }

    /// Rejects parameters that no getter asked for.
    pub fn finish(self) -> Result<(), ApiError> {
        let mut unknown: Vec<&String> = self
            .params
            .keys()
            .filter(|name| !self.known.contains(&name.as_str()))
            .collect();
        unknown.sort();
        match unknown.first() {
            None => Ok(()),
            Some(name) => Err(ApiError::invalid(
                "query",
                format!(
                    "unknown parameter `{name}`; expected one of: {}",
                    self.known.join(", ")
                ),
            )),
        }
    }
}

/// Splits `a=1&b=x%20y` into decoded pairs.
fn form_urlencoded_pairs(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'+' => out.push(b' '),
            b'%' if index + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).ok();
                match hex.and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        index += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_typed_and_unknown() {
        let mut query = Query::parse("offset=5&wait_ms=x&extra=1").unwrap();
        assert_eq!(query.get::<u64>("offset", "a number").unwrap(), Some(5));
        let err = query.get::<u64>("wait_ms", "a number").unwrap_err();
        assert!(err.message.contains("wait_ms"), "{}", err.message);
        let err = query.finish().unwrap_err();
        assert!(err.message.contains("extra"), "{}", err.message);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn json_error_names_path() {
        #[derive(Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Inner {
            n: u32,
        }
        #[derive(Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Outer {
            items: Vec<Inner>,
        }
        let body = Bytes::from_static(br#"{"items":[{"n":1},{"n":"x"}]}"#);
        let err = parse_json::<Outer>(&body).unwrap_err();
        assert!(err.message.contains("items[1].n"), "{}", err.message);
        let body = Bytes::from_static(br#"{"items":[],"bogus":1}"#);
        let err = parse_json::<Outer>(&body).unwrap_err();
        assert!(err.message.contains("bogus"), "{}", err.message);
    }
}
