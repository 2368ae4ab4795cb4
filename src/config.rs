//! The TOML configuration file. Every key has a default, so an empty file
//! (or none) runs a loopback server for `localhost`. Unknown keys are
//! errors: a typo must not silently fall back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use shoal_actors::jid::BareJid;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The domain this server serves: the part after '@' in its JIDs.
    pub domain: String,
    pub storage: StorageConfig,
    pub c2s: C2sConfig,
    pub registration: RegistrationConfig,
    pub auth: AuthConfig,
    pub sessions: SessionsConfig,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Path of the SQLite database; created if missing.
    pub sqlite: PathBuf,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct C2sConfig {
    /// Addresses to accept client connections on.
    pub listen: Vec<SocketAddr>,
    /// Largest stanza a client may send, in bytes.
    pub max_stanza_bytes: usize,
    /// Bytes queued for a client that is not reading before it is disconnected.
    pub max_outbound_bytes: usize,
    /// Seconds from connecting to a bound resource.
    pub negotiation_timeout_secs: u64,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationConfig {
    /// XEP-0077 in-band registration. Unset: on only when every listener
    /// is a loopback address.
    pub enabled: Option<bool>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// PBKDF2 iterations for newly set passwords (at least 4096).
    pub scram_iterations: u32,
    /// Failed SASL attempts allowed on one stream before it is closed.
    pub max_failures: u32,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsConfig {
    /// Sessions (resources) one account may have at once.
    pub max_per_user: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            domain: "localhost".into(),
            storage: StorageConfig::default(),
            c2s: C2sConfig::default(),
            registration: RegistrationConfig::default(),
            auth: AuthConfig::default(),
            sessions: SessionsConfig::default(),
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            sqlite: PathBuf::from("./shoal.db"),
        }
    }
}

impl Default for C2sConfig {
    fn default() -> Self {
        C2sConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 5222))],
            max_stanza_bytes: 256 * 1024,
            max_outbound_bytes: 1024 * 1024,
            negotiation_timeout_secs: 30,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            scram_iterations: 4096,
            max_failures: 3,
        }
    }
}

impl Default for SessionsConfig {
    fn default() -> Self {
        SessionsConfig { max_per_user: 10 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        match BareJid::domain_jid(&self.domain) {
            Ok(d) if d.as_str() == self.domain => {}
            Ok(d) => return invalid(format!("domain {:?} should be written {:?}", self.domain, d.as_str())),
            Err(e) => return invalid(format!("domain {:?}: {e}", self.domain)),
        }
        if self.c2s.listen.is_empty() {
            return invalid("[c2s] listen needs at least one address".into());
        }
        if self.c2s.max_stanza_bytes < 10_000 {
            return invalid("[c2s] max_stanza_bytes must be at least 10000 (RFC 6120 §13.12)".into());
        }
        if self.c2s.max_outbound_bytes < self.c2s.max_stanza_bytes {
            return invalid("[c2s] max_outbound_bytes must be at least max_stanza_bytes".into());
        }
        if self.auth.scram_iterations < 4096 {
            return invalid("[auth] scram_iterations must be at least 4096 (RFC 7677)".into());
        }
        if self.auth.max_failures == 0 || self.sessions.max_per_user == 0 {
            return invalid("[auth] max_failures and [sessions] max_per_user must be at least 1".into());
        }
        Ok(())
    }

    /// The domain as a JID (validated by [`Config::validate`]).
    pub fn domain_jid(&self) -> Result<BareJid, ConfigError> {
        BareJid::domain_jid(&self.domain).map_err(|e| ConfigError::Invalid(format!("domain: {e}")))
    }

    /// Whether in-band registration is on: as configured, or by default
    /// only when no listener is reachable from another machine.
    pub fn registration_enabled(&self) -> bool {
        self.registration
            .enabled
            .unwrap_or_else(|| self.c2s.listen.iter().all(|a| a.ip().is_loopback()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_registration_rule() {
        let c = Config::default();
        c.validate().unwrap();
        assert!(c.registration_enabled());
        let public: Config = toml::from_str("[c2s]\nlisten = ['0.0.0.0:5222']").unwrap();
        assert!(!public.registration_enabled());
        let forced: Config =
            toml::from_str("[c2s]\nlisten = ['0.0.0.0:5222']\n[registration]\nenabled = true").unwrap();
        assert!(forced.registration_enabled());
    }

    #[test]
    fn the_example_file_is_valid_and_complete() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/shoal.example.toml");
        let c = Config::load(&path).unwrap();
        assert_eq!(c.domain, "localhost");
    }

    #[test]
    fn errors_name_the_problem() {
        let typo = toml::from_str::<Config>("domian = 'x'").unwrap_err().to_string();
        assert!(typo.contains("unknown field `domian`"), "{typo}");
        let bad: Config = toml::from_str("domain = 'Example.COM'").unwrap();
        assert!(bad.validate().unwrap_err().to_string().contains("example.com"));
        let small: Config = toml::from_str("[c2s]\nmax_stanza_bytes = 10").unwrap();
        assert!(small.validate().unwrap_err().to_string().contains("max_stanza_bytes"));
    }
}
