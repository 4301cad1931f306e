//! The query parameters of the call history routes (`/api/calls`, its export and
//! `/api/stats`), read by hand from the raw pairs so that every bad value is a 400
//! `invalid_parameter` naming the parameter, never a panic or a bare rejection.

use axum::http::StatusCode;

use super::api::TokenQuery;
use super::error::AppError;
use crate::protocol::ErrorCode;
use crate::store::ListQuery;

/// The longest text search, in characters.
pub const MAX_SEARCH_CHARS: usize = 200;

pub fn invalid(message: impl Into<String>) -> AppError {
    AppError::new(
        StatusCode::BAD_REQUEST,
        ErrorCode::InvalidParameter,
        message,
    )
}

/// A request's query pairs, in order, as the client sent them.
pub struct Params(pub Vec<(String, String)>);

impl Params {
    /// The value of `key`, if given; a key given twice is refused.
    pub fn one(&self, key: &str) -> Result<Option<&str>, AppError> {
        let mut found = self.0.iter().filter(|(k, _)| k == key);
        let first = found.next().map(|(_, v)| v.as_str());
        if found.next().is_some() {
            return Err(invalid(format!("`{key}` is given more than once")));
        }
        Ok(first)
    }

    pub fn token(&self) -> Result<TokenQuery, AppError> {
        Ok(TokenQuery {
            token: self.one("token")?.map(str::to_string),
        })
    }

    /// A Unix time in milliseconds, 0 or more.
    pub fn ms(&self, key: &str) -> Result<Option<i64>, AppError> {
        self.one(key)?
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.trim()
                    .parse::<i64>()
                    .ok()
                    .filter(|ms| *ms >= 0)
                    .ok_or_else(|| {
                        invalid(format!(
                            "`{key}` must be a Unix time in milliseconds, 0 or more"
                        ))
                    })
            })
            .transpose()
    }

    /// A name to match exactly (`agent`, `sub`); empty is no filter. A NUL character cannot
    /// be in any name the server stores (Postgres refuses it), so it is refused here.
    pub fn name(&self, key: &str) -> Result<Option<String>, AppError> {
        match self.one(key)? {
            None | Some("") => Ok(None),
            Some(v) if v.contains('\0') => Err(invalid(format!("`{key}` holds a NUL character"))),
            Some(v) => Ok(Some(v.to_string())),
        }
    }
}

/// The filters shared by the list, the export and (the range alone) the figures.
#[derive(Debug, Default)]
pub struct CallFilter {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub agent: Option<String>,
    /// Operators and admins only: one caller's calls.
    pub sub: Option<String>,
    pub text: Option<String>,
}

impl CallFilter {
    pub fn parse(p: &Params) -> Result<Self, AppError> {
        let (from_ms, to_ms) = (p.ms("from")?, p.ms("to")?);
        check_range(from_ms, to_ms)?;
        let text = match p.one("q")?.map(str::trim) {
            None | Some("") => None,
            Some(q) if q.chars().count() > MAX_SEARCH_CHARS => {
                return Err(invalid(format!(
                    "`q` is longer than {MAX_SEARCH_CHARS} characters"
                )))
            }
            Some(q) if q.contains('\0') => return Err(invalid("`q` holds a NUL character")),
            Some(q) => Some(q.to_string()),
        };
        Ok(Self {
            from_ms,
            to_ms,
            agent: p.name("agent")?,
            sub: p.name("sub")?,
            text,
        })
    }

    /// The store query for these filters (first page, `limit` calls).
    pub fn query(&self, limit: u32) -> ListQuery {
        ListQuery {
            limit,
            before_ms: None,
            agent: self.agent.clone(),
            from_ms: self.from_ms,
            to_ms: self.to_ms,
            text: self.text.clone(),
        }
    }
}

/// `from` (inclusive) must not be after `to` (exclusive).
pub fn check_range(from_ms: Option<i64>, to_ms: Option<i64>) -> Result<(), AppError> {
    match (from_ms, to_ms) {
        (Some(f), Some(t)) if f > t => Err(invalid(format!("`from` ({f}) is after `to` ({t})"))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn refused(pairs: &[(&str, &str)]) -> String {
        match CallFilter::parse(&params(pairs)) {
            Ok(f) => panic!("accepted {pairs:?}: {f:?}"),
            Err(e) => {
                assert_eq!(e.code, ErrorCode::InvalidParameter);
                assert_eq!(e.status, StatusCode::BAD_REQUEST);
                e.message
            }
        }
    }

    #[test]
    fn bad_values_are_refused_by_name() {
        assert!(refused(&[("from", "-1")]).contains("`from`"));
        assert!(refused(&[("to", "99999999999999999999999")]).contains("`to`"));
        assert!(refused(&[("from", "yesterday")]).contains("`from`"));
        assert!(refused(&[("from", "10"), ("to", "9")]).contains("after"));
        assert!(refused(&[("q", &"x".repeat(201))]).contains("200"));
        assert!(refused(&[("q", "a\0b")]).contains("NUL"));
        assert!(refused(&[("agent", "a\0")]).contains("`agent`"));
        assert!(refused(&[("q", "a"), ("q", "b")]).contains("more than once"));
    }

    #[test]
    fn good_values_make_the_query() {
        let ok = CallFilter::parse(&params(&[
            ("from", "5"),
            ("to", "5"),
            ("q", "  50%_off  "),
            ("agent", ""),
            ("sub", "bob"),
        ]))
        .unwrap();
        assert_eq!((ok.from_ms, ok.to_ms), (Some(5), Some(5)));
        assert_eq!(ok.text.as_deref(), Some("50%_off"));
        assert_eq!((ok.agent, ok.sub.as_deref()), (None, Some("bob")));
        // 200 characters of several bytes each are still 200 characters.
        let long = "é".repeat(MAX_SEARCH_CHARS);
        let f = CallFilter::parse(&params(&[("q", &long)])).unwrap();
        assert_eq!(f.text.unwrap().chars().count(), MAX_SEARCH_CHARS);
    }
}
