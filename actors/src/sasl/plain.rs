//! SASL PLAIN (RFC 4616): `authzid NUL authcid NUL password`.

use crate::error::{SaslCondition, SaslFailure};

#[derive(Debug, PartialEq, Eq)]
pub struct PlainMessage {
    pub authzid: Option<String>,
    pub username: String,
    pub password: String,
}

pub fn parse(data: &[u8]) -> Result<PlainMessage, SaslFailure> {
    let malformed = || SaslFailure::new(SaslCondition::MalformedRequest);
    let s = std::str::from_utf8(data).map_err(|_| malformed())?;
    let mut parts = s.split('\0');
    let (Some(authzid), Some(username), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    if username.is_empty() || password.is_empty() {
        return Err(malformed());
    }
    Ok(PlainMessage {
        authzid: (!authzid.is_empty()).then(|| authzid.to_owned()),
        username: username.to_owned(),
        password: password.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc4616_messages() {
        let m = parse(b"\0tim\0tanstaaftanstaaf").unwrap();
        assert_eq!(
            (m.authzid, m.username.as_str(), m.password.as_str()),
            (None, "tim", "tanstaaftanstaaf")
        );
        assert_eq!(
            parse(b"Ursel\0Kurt\0xipj3plmq").unwrap().authzid.as_deref(),
            Some("Ursel")
        );
        assert!(parse(b"\0tim").is_err());
        assert!(parse(b"\0tim\0\0").is_err());
        assert!(parse(b"a\0b\0c\0d").is_err());
    }
}
