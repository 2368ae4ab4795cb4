//! SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802, RFC 7677), server and client.
//! With channel binding (the -PLUS variants), the client's `c=` must carry
//! the TLS connection's binding data (RFC 5929 `tls-server-end-point`,
//! RFC 9266 `tls-exporter`); the caller decides which requests it honours.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::distr::Alphanumeric;
use rand::Rng;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{SaslCondition, SaslFailure};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScramHash {
    Sha1,
    Sha256,
}

impl ScramHash {
    pub(crate) fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        macro_rules! mac {
            ($h:ty) => {{
                // HMAC takes keys of any length, so this never fails; if it
                // did, an empty MAC matches no proof: failing closed.
                let Ok(mut m) = <Hmac<$h> as Mac>::new_from_slice(key) else {
                    return Vec::new();
                };
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }};
        }
        match self {
            ScramHash::Sha1 => mac!(Sha1),
            ScramHash::Sha256 => mac!(Sha256),
        }
    }

    fn h(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => Sha1::digest(data).to_vec(),
            ScramHash::Sha256 => Sha256::digest(data).to_vec(),
        }
    }

    /// Hi() of RFC 5802: PBKDF2 with this hash's HMAC.
    pub fn salted_password(self, password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
        let password = super::saslprep(password);
        match self {
            ScramHash::Sha1 => {
                let mut out = vec![0u8; 20];
                pbkdf2::pbkdf2_hmac::<Sha1>(password.as_bytes(), salt, iterations, &mut out);
                out
            }
            ScramHash::Sha256 => {
                let mut out = vec![0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut out);
                out
            }
        }
    }
}

/// The keys stored for one hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScramCredentials {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl ScramCredentials {
    pub fn derive(hash: ScramHash, password: &str, salt: &[u8], iterations: u32) -> Self {
        Self::from_salted(
            hash,
            &hash.salted_password(password, salt, iterations),
            salt,
            iterations,
        )
    }

    fn from_salted(hash: ScramHash, salted: &[u8], salt: &[u8], iterations: u32) -> Self {
        let client_key = hash.hmac(salted, b"Client Key");
        ScramCredentials {
            salt: salt.to_vec(),
            iterations,
            stored_key: hash.h(&client_key),
            server_key: hash.hmac(salted, b"Server Key"),
        }
    }

    /// Checks a plaintext password (SASL PLAIN) against the stored keys.
    /// Costs one PBKDF2 run.
    pub fn verify_password(&self, hash: ScramHash, password: &str) -> bool {
        let salted = hash.salted_password(password, &self.salt, self.iterations);
        let stored = hash.h(&hash.hmac(&salted, b"Client Key"));
        bool::from(stored.ct_eq(&self.stored_key))
    }
}

fn malformed(text: &'static str) -> SaslFailure {
    SaslFailure::with_text(SaslCondition::MalformedRequest, text)
}

fn nonce() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(24)
        .map(char::from)
        .collect()
}

/// Decodes a SCRAM `saslname` (`=2C` is ',', `=3D` is '=').
fn decode_saslname(s: &str) -> Result<String, SaslFailure> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(malformed("bad escape in username")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

fn encode_saslname(s: &str) -> String {
    s.replace('=', "=3D").replace(',', "=2C")
}

/// The GS2 channel-binding flag of a client-first-message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChannelBindingRequest {
    /// `n`: the client does not support channel binding.
    None,
    /// `y`: the client does, but thinks the server does not.
    ClientSupports,
    /// `p=type`: the client binds to this type.
    Type(String),
}

/// The client's first message, parsed.
#[derive(Clone, Debug)]
pub struct ClientFirst {
    /// The username as sent (decoded, before SASLprep).
    pub username: String,
    pub authzid: Option<String>,
    pub channel_binding: ChannelBindingRequest,
    gs2_header: String,
    bare: String,
    nonce: String,
}

impl ClientFirst {
    pub fn parse(data: &[u8]) -> Result<ClientFirst, SaslFailure> {
        let s = std::str::from_utf8(data).map_err(|_| malformed("not UTF-8"))?;
        let mut parts = s.splitn(3, ',');
        let (cb, authz, bare) = match (parts.next(), parts.next(), parts.next()) {
            (Some(cb), Some(a), Some(bare)) => (cb, a, bare),
            _ => return Err(malformed("bad client-first-message")),
        };
        let channel_binding = match cb {
            "n" => ChannelBindingRequest::None,
            "y" => ChannelBindingRequest::ClientSupports,
            c => match c.strip_prefix("p=") {
                Some(kind) if !kind.is_empty() => ChannelBindingRequest::Type(kind.to_owned()),
                _ => return Err(malformed("bad gs2 header")),
            },
        };
        let authzid = match authz {
            "" => None,
            a => Some(decode_saslname(
                a.strip_prefix("a=").ok_or_else(|| malformed("bad authzid"))?,
            )?),
        };
        let mut username = None;
        let mut nonce = None;
        for attr in bare.split(',') {
            match attr.split_at_checked(2) {
                Some(("n=", v)) => username = Some(decode_saslname(v)?),
                Some(("r=", v)) => nonce = Some(v.to_owned()),
                Some(("m=", _)) => return Err(malformed("mandatory extension not supported")),
                _ => {}
            }
        }
        let (Some(username), Some(nonce)) = (username, nonce) else {
            return Err(malformed("username and nonce are required"));
        };
        if nonce.is_empty() || nonce.contains(',') {
            return Err(malformed("bad nonce"));
        }
        Ok(ClientFirst {
            username,
            authzid,
            channel_binding,
            gs2_header: format!("{cb},{authz},"),
            bare: bare.to_owned(),
            nonce,
        })
    }
}

/// The server half of one SCRAM exchange, between the challenge and the
/// client's proof.
pub struct ScramServer {
    hash: ScramHash,
    creds: ScramCredentials,
    /// False when the user does not exist: the exchange runs on made-up
    /// keys so that an unknown user looks exactly like a wrong password.
    known: bool,
    /// What `c=` must decode to: the GS2 header and any binding data.
    cbind: Vec<u8>,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl ScramServer {
    /// Starts the exchange; returns the server-first-message. `creds` is
    /// `None` for an unknown user, and `fake_salt` with `fake_iterations`
    /// (the count new accounts get) then stand in.
    /// `binding` is the channel-binding data the client asked for, if any.
    pub fn start(
        hash: ScramHash,
        first: ClientFirst,
        creds: Option<ScramCredentials>,
        fake_salt: &[u8],
        fake_iterations: u32,
        binding: Option<&[u8]>,
    ) -> (ScramServer, Vec<u8>) {
        let known = creds.is_some();
        let creds = creds.unwrap_or_else(|| ScramCredentials {
            salt: fake_salt.to_vec(),
            iterations: fake_iterations,
            stored_key: hash.h(fake_salt),
            server_key: hash.h(fake_salt),
        });
        let nonce = format!("{}{}", first.nonce, nonce());
        let server_first = format!("r={nonce},s={},i={}", B64.encode(&creds.salt), creds.iterations);
        let out = server_first.clone().into_bytes();
        let mut cbind = first.gs2_header.into_bytes();
        cbind.extend_from_slice(binding.unwrap_or_default());
        let server = ScramServer {
            hash,
            creds,
            known,
            cbind,
            client_first_bare: first.bare,
            server_first,
            nonce,
        };
        (server, out)
    }

    /// Checks the client's proof; returns the server-final-message.
    pub fn finish(self, data: &[u8]) -> Result<Vec<u8>, SaslFailure> {
        let s = std::str::from_utf8(data).map_err(|_| malformed("not UTF-8"))?;
        let (without_proof, proof) = s.rsplit_once(",p=").ok_or_else(|| malformed("no proof"))?;
        let mut cbind = None;
        let mut nonce = None;
        for attr in without_proof.split(',') {
            match attr.split_at_checked(2) {
                Some(("c=", v)) => cbind = Some(v),
                Some(("r=", v)) => nonce = Some(v),
                _ => {}
            }
        }
        let not_authorized = || SaslFailure::new(SaslCondition::NotAuthorized);
        let cbind = B64
            .decode(cbind.ok_or_else(|| malformed("no channel binding"))?)
            .map_err(|_| SaslFailure::new(SaslCondition::IncorrectEncoding))?;
        if cbind != self.cbind || nonce != Some(self.nonce.as_str()) {
            return Err(not_authorized());
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| SaslFailure::new(SaslCondition::IncorrectEncoding))?;
        let auth_message = format!("{},{},{}", self.client_first_bare, self.server_first, without_proof);
        let signature = self.hash.hmac(&self.creds.stored_key, auth_message.as_bytes());
        if proof.len() != signature.len() {
            return Err(not_authorized());
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        let valid = bool::from(self.hash.h(&client_key).ct_eq(&self.creds.stored_key));
        if !(valid && self.known) {
            return Err(not_authorized());
        }
        let server_signature = self.hash.hmac(&self.creds.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }
}

/// The client half, for tests and the load driver.
pub struct ScramClient {
    hash: ScramHash,
    /// GS2 header, and the binding data sent in `c=`.
    gs2_header: String,
    binding: Vec<u8>,
    password: String,
    salted: Option<Vec<u8>>,
    client_first_bare: String,
    nonce: String,
    server_signature: Option<Vec<u8>>,
}

impl ScramClient {
    pub fn new(hash: ScramHash, username: &str, password: &str) -> ScramClient {
        let nonce = nonce();
        ScramClient {
            hash,
            gs2_header: "n,,".to_owned(),
            binding: Vec::new(),
            password: password.to_owned(),
            salted: None,
            client_first_bare: format!("n={},r={nonce}", encode_saslname(username)),
            nonce,
            server_signature: None,
        }
    }

    /// Reuses a SaltedPassword computed before (a load driver caches it so
    /// that its own PBKDF2 never limits the login rate).
    pub fn with_salted_password(mut self, salted: Vec<u8>) -> ScramClient {
        self.salted = Some(salted);
        self
    }

    /// Binds to the TLS channel (for the -PLUS mechanisms): `kind` is
    /// `tls-exporter` or `tls-server-end-point`, `data` its value.
    pub fn with_channel_binding(mut self, kind: &str, data: Vec<u8>) -> ScramClient {
        self.gs2_header = format!("p={kind},,");
        self.binding = data;
        self
    }

    /// Says the client supports channel binding but thinks the server does
    /// not (`y`): a server that offers it must refuse (downgrade check).
    pub fn claiming_binding_support(mut self) -> ScramClient {
        self.gs2_header = "y,,".to_owned();
        self
    }

    pub fn client_first(&self) -> String {
        format!("{}{}", self.gs2_header, self.client_first_bare)
    }

    /// Answers the server-first-message; also returns the SaltedPassword
    /// used, for caching.
    pub fn client_final(&mut self, server_first: &str) -> Result<(String, Vec<u8>), SaslFailure> {
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for attr in server_first.split(',') {
            match attr.split_at_checked(2) {
                Some(("r=", v)) => nonce = Some(v),
                Some(("s=", v)) => salt = B64.decode(v).ok(),
                Some(("i=", v)) => iterations = v.parse::<u32>().ok(),
                _ => {}
            }
        }
        let (Some(nonce), Some(salt), Some(iterations)) = (nonce, salt, iterations) else {
            return Err(malformed("bad server-first-message"));
        };
        if !nonce.starts_with(&self.nonce) {
            return Err(malformed("server nonce does not extend ours"));
        }
        let salted = match self.salted.take() {
            Some(s) => s,
            None => self.hash.salted_password(&self.password, &salt, iterations),
        };
        let mut cbind = self.gs2_header.clone().into_bytes();
        cbind.extend_from_slice(&self.binding);
        let without_proof = format!("c={},r={nonce}", B64.encode(cbind));
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let client_key = self.hash.hmac(&salted, b"Client Key");
        let signature = self.hash.hmac(&self.hash.h(&client_key), auth_message.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        let server_key = self.hash.hmac(&salted, b"Server Key");
        self.server_signature = Some(self.hash.hmac(&server_key, auth_message.as_bytes()));
        Ok((format!("{without_proof},p={}", B64.encode(proof)), salted))
    }

    /// True when the server proved it knows our keys.
    pub fn verify_server_final(&self, server_final: &str) -> bool {
        let Some(v) = server_final.strip_prefix("v=") else {
            return false;
        };
        match (B64.decode(v), &self.server_signature) {
            (Ok(sig), Some(expected)) => bool::from(sig.ct_eq(expected)),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 §3: the SCRAM-SHA-256 example exchange.
    #[test]
    fn rfc7677_example() {
        let creds = ScramCredentials::derive(
            ScramHash::Sha256,
            "pencil",
            &B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap(),
            4096,
        );
        let first = ClientFirst::parse(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        let (mut server, _) = ScramServer::start(ScramHash::Sha256, first, Some(creds), b"", 4096, None);
        // Pin the server nonce to the RFC's to reproduce its messages.
        server.nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into();
        server.server_first = format!("r={},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", server.nonce);
        let final_msg = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        let out = server.finish(final_msg).unwrap();
        assert_eq!(out, b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    }

    /// RFC 5802 §5: the SCRAM-SHA-1 example.
    #[test]
    fn rfc5802_example() {
        let creds = ScramCredentials::derive(
            ScramHash::Sha1,
            "pencil",
            &B64.decode("QSXCR+Q6sek8bf92").unwrap(),
            4096,
        );
        let first = ClientFirst::parse(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL").unwrap();
        let (mut server, _) = ScramServer::start(ScramHash::Sha1, first, Some(creds), b"", 4096, None);
        server.nonce = "fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j".into();
        server.server_first = format!("r={},s=QSXCR+Q6sek8bf92,i=4096", server.nonce);
        let out = server
            .finish(b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=")
            .unwrap();
        assert_eq!(out, b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=");
    }

    fn run(hash: ScramHash, stored_pw: &str, client_pw: &str, known: bool) -> Result<(), SaslFailure> {
        let creds = ScramCredentials::derive(hash, stored_pw, b"0123456789abcdef", 4096);
        let mut client = ScramClient::new(hash, "juliet", client_pw);
        let first = ClientFirst::parse(client.client_first().as_bytes())?;
        assert_eq!(first.username, "juliet");
        let (server, server_first) = ScramServer::start(hash, first, known.then_some(creds), b"fake-salt", 4096, None);
        let (client_final, _) = client.client_final(std::str::from_utf8(&server_first).unwrap())?;
        let server_final = server.finish(client_final.as_bytes())?;
        assert!(client.verify_server_final(std::str::from_utf8(&server_final).unwrap()));
        Ok(())
    }

    #[test]
    fn client_and_server_agree() {
        for hash in [ScramHash::Sha1, ScramHash::Sha256] {
            run(hash, "secret", "secret", true).unwrap();
            assert_eq!(
                run(hash, "secret", "wrong", true).unwrap_err().condition,
                SaslCondition::NotAuthorized
            );
            assert_eq!(
                run(hash, "secret", "secret", false).unwrap_err().condition,
                SaslCondition::NotAuthorized
            );
        }
    }

    #[test]
    fn malformed_messages() {
        assert!(ClientFirst::parse(b"x,,n=a,r=b").is_err());
        assert!(ClientFirst::parse(b"n,,r=b").is_err());
        assert_eq!(
            ClientFirst::parse(b"p=tls-exporter,,n=a,r=b").unwrap().channel_binding,
            ChannelBindingRequest::Type("tls-exporter".into())
        );
        assert!(ClientFirst::parse(b"p=,,n=a,r=b").is_err());
        assert_eq!(ClientFirst::parse(b"n,,n=a=2Cb=3D,r=x").unwrap().username, "a,b=");
        assert!(ClientFirst::parse(b"n,,n=a=zz,r=x").is_err());
    }

    #[test]
    fn plain_password_check() {
        let creds = ScramCredentials::derive(ScramHash::Sha256, "pässword", b"salt", 4096);
        assert!(creds.verify_password(ScramHash::Sha256, "pässword"));
        assert!(!creds.verify_password(ScramHash::Sha256, "password"));
    }
}
