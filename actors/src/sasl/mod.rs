//! SASL (RFC 6120 §6): the mechanisms Shoal offers and the credentials they
//! verify against. Accounts store only SCRAM keys (RFC 5802): salt,
//! iteration count, StoredKey and ServerKey per hash; never the password.

pub mod plain;
pub mod scram;

pub use scram::{ScramClient, ScramCredentials, ScramHash, ScramServer};

/// 32 random bytes from the OS-seeded generator: server secrets.
pub fn random_secret() -> [u8; 32] {
    use rand::RngCore;
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    secret
}

/// The mechanisms, in order of preference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    ScramSha256Plus,
    ScramSha1Plus,
    ScramSha256,
    ScramSha1,
    Plain,
}

impl Mechanism {
    pub const ALL: [Mechanism; 5] = [
        Mechanism::ScramSha256Plus,
        Mechanism::ScramSha1Plus,
        Mechanism::ScramSha256,
        Mechanism::ScramSha1,
        Mechanism::Plain,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha256Plus => "SCRAM-SHA-256-PLUS",
            Mechanism::ScramSha1Plus => "SCRAM-SHA-1-PLUS",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::Plain => "PLAIN",
        }
    }

    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    /// With channel binding (RFC 5802 §6): needs TLS.
    pub fn is_plus(self) -> bool {
        matches!(self, Mechanism::ScramSha256Plus | Mechanism::ScramSha1Plus)
    }

    /// The SCRAM hash, or `None` for PLAIN.
    pub fn scram_hash(self) -> Option<ScramHash> {
        match self {
            Mechanism::ScramSha256Plus | Mechanism::ScramSha256 => Some(ScramHash::Sha256),
            Mechanism::ScramSha1Plus | Mechanism::ScramSha1 => Some(ScramHash::Sha1),
            Mechanism::Plain => None,
        }
    }
}

/// What an account stores: SCRAM keys for each supported hash. An account
/// made here has both; one imported from another server may have keys for
/// one hash only (ejabberd and Prosody keep SCRAM-SHA-1 keys by default),
/// until a password (a PLAIN login, a password change) gives it both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub sha1: Option<ScramCredentials>,
    pub sha256: Option<ScramCredentials>,
}

/// RFC 7677 asks for at least 4096 iterations.
pub const MIN_ITERATIONS: u32 = 4096;

impl Credentials {
    /// Derives fresh keys, with new random salts, from a password. Costs two
    /// PBKDF2 runs: call it off any event loop.
    pub fn derive(password: &str, iterations: u32) -> Credentials {
        let iterations = iterations.max(MIN_ITERATIONS);
        Credentials {
            sha1: Some(ScramCredentials::derive(
                ScramHash::Sha1,
                password,
                &random_salt(),
                iterations,
            )),
            sha256: Some(ScramCredentials::derive(
                ScramHash::Sha256,
                password,
                &random_salt(),
                iterations,
            )),
        }
    }

    /// The keys for `hash`, if the account has them.
    pub fn for_hash(&self, hash: ScramHash) -> Option<&ScramCredentials> {
        match hash {
            ScramHash::Sha1 => self.sha1.as_ref(),
            ScramHash::Sha256 => self.sha256.as_ref(),
        }
    }

    /// Keys for every hash Shoal offers.
    pub fn is_complete(&self) -> bool {
        self.sha1.is_some() && self.sha256.is_some()
    }

    /// Checks a plaintext password (SASL PLAIN) against the strongest keys
    /// the account has. Costs one PBKDF2 run.
    pub fn verify_password(&self, password: &str) -> bool {
        match (&self.sha256, &self.sha1) {
            (Some(keys), _) => keys.verify_password(ScramHash::Sha256, password),
            (None, Some(keys)) => keys.verify_password(ScramHash::Sha1, password),
            (None, None) => false,
        }
    }
}

fn random_salt() -> Vec<u8> {
    use rand::RngCore;
    let mut salt = vec![0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    salt
}

/// Runs a key derivation (PBKDF2) off the event loops, at most one per
/// core at a time. Unbounded, a burst of logins would put hundreds of
/// threads on the CPU and starve everything else, the accept loop first.
pub async fn derive_off_loop<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    static PERMITS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    let permits = PERMITS
        .get_or_init(|| tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(1, |n| n.get())));
    let _permit = permits.acquire().await.ok()?;
    actix_rt::task::spawn_blocking(f).await.ok()
}

/// SASLprep (RFC 4013) where it applies, the string as is where it does not
/// (a password that SASLprep rejects still has to match itself).
pub(crate) fn saslprep(s: &str) -> std::borrow::Cow<'_, str> {
    stringprep::saslprep(s).unwrap_or(std::borrow::Cow::Borrowed(s))
}
