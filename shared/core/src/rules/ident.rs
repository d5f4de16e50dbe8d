//! Validated SQL identifiers: the only way a name from the rules file reaches SQL text.

use std::fmt;

/// Longest identifier Redshift accepts, in bytes.
pub const MAX_IDENT_BYTES: usize = 127;

/// A validated identifier matching `^[a-z_][a-z0-9_]{0,126}$`.
///
/// Everything else is refused — upper case (Redshift folds it, so two spellings would name one
/// column), quotes, spaces, dots, semicolons — so a name can never change the shape of a
/// statement it is put into, quoted or not.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ident(String);

/// Why a string is not an [`Ident`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a valid identifier (must match ^[a-z_][a-z0-9_]{{0,126}}$): {reason}")]
pub struct IdentError {
    /// The refused text.
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Ident {
    /// Validate `s` as an identifier.
    pub fn parse(s: &str) -> Result<Ident, IdentError> {
        let err = |reason| IdentError {
            value: s.to_owned(),
            reason,
        };
        let bytes = s.as_bytes();
        let Some(first) = bytes.first() else {
            return Err(err("empty"));
        };
        if bytes.len() > MAX_IDENT_BYTES {
            return Err(err("longer than 127 bytes"));
        }
        if !(first.is_ascii_lowercase() || *first == b'_') {
            return Err(err("must start with a lower-case letter or underscore"));
        }
        if !bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
        {
            return Err(err(
                "only lower-case ASCII letters, digits and underscores are allowed",
            ));
        }
        Ok(Ident(s.to_owned()))
    }

    /// The bare name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as a quoted SQL identifier, `"name"`. Validation guarantees there is no quote to
    /// escape.
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Ident {
    type Err = IdentError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ident::parse(s)
    }
}

impl AsRef<str> for Ident {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names_and_quotes_them() {
        let id = Ident::parse("page_views_2").unwrap();
        assert_eq!(id.as_str(), "page_views_2");
        assert_eq!(id.quoted(), "\"page_views_2\"");
        assert!(Ident::parse("_x").is_ok());
        assert!(Ident::parse(&"a".repeat(127)).is_ok());
    }

    #[test]
    fn refuses_injection_and_odd_names() {
        for bad in [
            "users; drop table x",
            "a\"b",
            "Users",
            "1abc",
            "",
            "a b",
            "a.b",
            "a-b",
            "é",
            "x--",
            &"a".repeat(128),
        ] {
            let e = Ident::parse(bad).unwrap_err();
            assert_eq!(e.value, bad);
            assert!(e.to_string().contains("not a valid identifier"), "{e}");
        }
    }
}
