//! Browser origins: which web pages may send events (`AllowedOrigins`, `ALLOWED_ORIGINS`).
//!
//! One list, read with API Gateway HTTP API's own matching rules ("Configuring CORS for an HTTP
//! API": an origin, `*`, `https://*` or `http://*`), serves two places that must agree:
//!
//! - the HTTP API's CORS configuration, which answers preflight `OPTIONS` requests and adds
//!   `Access-Control-Allow-Origin` to responses (the local stack emulates it with this module);
//! - the ingest function, which **refuses** (403) a request whose `Origin` is not allowed. API
//!   Gateway's CORS only tells the browser not to show the response to the page; a request a
//!   browser sends without a preflight (`fetch` with `text/plain`, `navigator.sendBeacon`) still
//!   reaches the function, and without this check its events would be ingested from any page.
//!
//! A request without an `Origin` header is not a browser's cross-origin request (server SDKs,
//! `curl`, the operator CLI) and is not affected.

use std::fmt;

/// One allowed-origin entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// `*`: every origin.
    Any,
    /// `https://*` or `http://*`: every origin of that scheme.
    Scheme(&'static str),
    /// One origin, `scheme://host[:port]`, lower-cased.
    Exact(String),
}

/// The allowed browser origins. Empty means no web page may send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedOrigins {
    entries: Vec<Entry>,
}

/// Why an `AllowedOrigins` entry is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("origin {entry:?} {reason}")]
pub struct OriginListError {
    /// The entry as written.
    pub entry: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl AllowedOrigins {
    /// Parse a comma-separated list (`https://shop.example.com,https://*`); blanks around
    /// entries are ignored and an empty list allows no origin.
    pub fn parse(list: &str) -> Result<Self, OriginListError> {
        let mut entries = Vec::new();
        for raw in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let err = |reason| OriginListError {
                entry: raw.to_owned(),
                reason,
            };
            let lower = raw.to_ascii_lowercase();
            let entry = match lower.as_str() {
                "*" => Entry::Any,
                "https://*" => Entry::Scheme("https://"),
                "http://*" => Entry::Scheme("http://"),
                _ => {
                    let host = lower
                        .strip_prefix("https://")
                        .or_else(|| lower.strip_prefix("http://"))
                        .ok_or_else(|| err("must start with https:// or http:// (or be *)"))?;
                    if host.is_empty() {
                        return Err(err("has no host"));
                    }
                    if host.contains('*') {
                        return Err(err(
                            "may use * only as the whole entry, https://* or http://*",
                        ));
                    }
                    if host.contains(['/', '?', '#', '@']) || host.chars().any(char::is_whitespace)
                    {
                        return Err(err(
                            "must be scheme://host[:port] only: an origin has no path, query or user",
                        ));
                    }
                    Entry::Exact(lower)
                }
            };
            if !entries.contains(&entry) {
                entries.push(entry);
            }
        }
        Ok(Self { entries })
    }

    /// Whether no origin is allowed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether a request with this `Origin` header may be served. Origins are compared
    /// case-insensitively (browsers send them lower-case); `null` (sandboxed frames, `file:`
    /// pages) matches only `*`.
    pub fn allows(&self, origin: &str) -> bool {
        self.entries.iter().any(|e| match e {
            Entry::Any => true,
            Entry::Scheme(scheme) => {
                origin.len() > scheme.len()
                    && origin
                        .get(..scheme.len())
                        .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
            }
            Entry::Exact(o) => o.eq_ignore_ascii_case(origin),
        })
    }

    /// The `Access-Control-Allow-Origin` value for an allowed `origin`: `*` when every origin
    /// is allowed, else the origin itself (so caches must vary on `Origin`).
    pub fn allow_origin_header<'o>(&self, origin: &'o str) -> Option<&'o str> {
        if self.entries.contains(&Entry::Any) {
            Some("*")
        } else {
            self.allows(origin).then_some(origin)
        }
    }
}

impl fmt::Display for AllowedOrigins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match e {
                Entry::Any => f.write_str("*")?,
                Entry::Scheme(s) => write!(f, "{s}*")?,
                Entry::Exact(o) => f.write_str(o)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_match_the_way_api_gateway_matches_them() {
        let l =
            AllowedOrigins::parse(" https://Shop.example.com , http://localhost:8080,").unwrap();
        assert!(l.allows("https://shop.example.com"));
        assert!(l.allows("HTTPS://SHOP.EXAMPLE.COM"));
        assert!(l.allows("http://localhost:8080"));
        assert!(
            !l.allows("http://shop.example.com"),
            "scheme is part of the origin"
        );
        assert!(!l.allows("https://shop.example.com:8443"), "so is the port");
        assert!(!l.allows("https://evil.shop.example.com"));
        assert!(!l.allows("https://shop.example.com.evil.net"));
        assert!(!l.allows("null"));
        assert!(!l.allows(""));
        assert_eq!(
            l.to_string(),
            "https://shop.example.com,http://localhost:8080"
        );

        let https = AllowedOrigins::parse("https://*").unwrap();
        assert!(https.allows("https://a.example"));
        assert!(!https.allows("http://a.example"));
        assert!(!https.allows("https://"), "a scheme alone is no origin");
        assert!(!https.allows("null"));
        let http = AllowedOrigins::parse("http://*").unwrap();
        assert!(http.allows("http://a.example") && !http.allows("https://a.example"));

        let any = AllowedOrigins::parse("*").unwrap();
        assert!(any.allows("null") && any.allows("https://x.example"));
        assert_eq!(any.allow_origin_header("https://x.example"), Some("*"));
    }

    #[test]
    fn the_allow_origin_header_echoes_a_listed_origin_only() {
        let l = AllowedOrigins::parse("https://a.example,https://b.example").unwrap();
        assert_eq!(
            l.allow_origin_header("https://b.example"),
            Some("https://b.example")
        );
        assert_eq!(l.allow_origin_header("https://c.example"), None);
        let none = AllowedOrigins::parse("").unwrap();
        assert!(none.is_empty());
        assert!(!none.allows("https://a.example"));
        assert_eq!(none.allow_origin_header("https://a.example"), None);
        assert!(!l.is_empty());
    }

    #[test]
    fn entries_that_are_not_origins_are_refused_with_a_reason() {
        for (bad, why) in [
            ("shop.example.com", "must start with"),
            ("ftp://shop.example.com", "must start with"),
            ("https://", "has no host"),
            ("https://*.example.com", "may use * only"),
            ("https://shop.example.com/", "no path"),
            ("https://shop.example.com/page", "no path"),
            ("https://user@shop.example.com", "no path"),
            ("https://shop.example.com?x", "no path"),
            ("https://shop .example.com", "no path"),
        ] {
            let e = AllowedOrigins::parse(&format!("https://ok.example,{bad}")).unwrap_err();
            assert_eq!(e.entry, bad);
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
        // Repeats collapse.
        let l = AllowedOrigins::parse("https://a.example,HTTPS://A.EXAMPLE,*,*").unwrap();
        assert_eq!(l.to_string(), "https://a.example,*");
    }
}
