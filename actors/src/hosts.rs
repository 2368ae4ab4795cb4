//! The domains a server hosts (virtual hosts: ejabberd's `hosts`,
//! Prosody's `VirtualHost`). Each has its own accounts (storage keys them
//! by bare JID, so `alice@a.test` and `alice@b.test` are two) and its own
//! in-band registration policy. The first is the default: what the server
//! names itself where no stream or stanza says which domain is meant.

use std::collections::HashMap;
use std::sync::Arc;

use crate::current::Current;
use crate::jid::BareJid;

/// One hosted domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    /// The domain, a bare JID without node.
    pub domain: BareJid,
    /// XEP-0077 in-band registration: accounts may be created before
    /// authentication, and changed or cancelled once logged in.
    pub registration: bool,
    /// Accounts one source network may register here before each further
    /// one waits, twice as long each time, like failed logins (0: no limit).
    pub registrations_per_network: u32,
}

impl Host {
    /// A domain without in-band registration.
    pub fn new(domain: BareJid) -> Host {
        Host {
            domain,
            registration: false,
            registrations_per_network: 5,
        }
    }
}

/// Why a list of domains cannot be hosted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HostsError {
    #[error("no hosted domain")]
    Empty,
    #[error("{0} is not a domain")]
    NotADomain(String),
    #[error("{0} is hosted twice")]
    Twice(String),
    /// New policies are for the domains hosted, in the same order.
    #[error("the domains hosted cannot change while the server runs")]
    OtherDomains,
}

/// The hosted domains, the default first; never empty. Clones share the
/// policies in force ([`Hosts::set_policies`]).
#[derive(Clone, Debug)]
pub struct Hosts {
    /// Read for every stanza; replaced whole by a reload.
    list: Arc<Current<Vec<Arc<Host>>>>,
    /// Positions in `list`, looked up only past [`Hosts::SCANNED`] domains.
    index: Index,
}

type Index = HashMap<Box<str>, usize, foldhash::fast::RandomState>;

impl Hosts {
    /// Up to this many domains are compared one by one: cheaper than
    /// hashing the name of every stanza's domain, and one is the usual case.
    const SCANNED: usize = 4;

    pub fn new(hosts: impl IntoIterator<Item = Host>) -> Result<Hosts, HostsError> {
        let list: Vec<Arc<Host>> = hosts.into_iter().map(Arc::new).collect();
        if list.is_empty() {
            return Err(HostsError::Empty);
        }
        let mut index: Index = HashMap::with_capacity_and_hasher(list.len(), Default::default());
        for (i, host) in list.iter().enumerate() {
            let domain = host.domain.as_str();
            if host.domain.node().is_some() || host.domain.domain() != domain {
                return Err(HostsError::NotADomain(domain.to_owned()));
            }
            if index.insert(domain.into(), i).is_some() {
                return Err(HostsError::Twice(domain.to_owned()));
            }
        }
        Ok(Hosts {
            list: Arc::new(Current::new(list)),
            index,
        })
    }

    /// The default domain's host: the first.
    pub fn default_host(&self) -> &Arc<Host> {
        &self.list.get()[0]
    }

    /// The host of `domain`, if it is hosted here.
    pub fn get(&self, domain: &str) -> Option<&Arc<Host>> {
        let list = self.list.get();
        if list.len() <= Self::SCANNED {
            return list.iter().find(|h| h.domain.as_str() == domain);
        }
        self.index.get(domain).map(|&i| &list[i])
    }

    /// Puts `new`'s policies (in-band registration) in force, for every
    /// clone of these hosts: the streams opened from now on, and requests,
    /// see them. `new` must host the same domains in the same order.
    pub fn set_policies(&self, new: &Hosts) -> Result<(), HostsError> {
        let (ours, theirs) = (self.list.get(), new.list.get());
        if ours.len() != theirs.len() || ours.iter().zip(theirs).any(|(a, b)| a.domain != b.domain) {
            return Err(HostsError::OtherDomains);
        }
        self.list.set(theirs.clone());
        Ok(())
    }

    pub fn contains(&self, domain: &str) -> bool {
        self.get(domain).is_some()
    }

    /// The host a domain of ours goes under: itself if hosted; for a
    /// published service's (`conference.a.test`), the nearest hosted
    /// domain it is under (`a.test`), else the default one. Its
    /// certificate is the service's, as Prosody gives a component its
    /// parent host's.
    pub fn owner_of(&self, domain: &str) -> &Arc<Host> {
        and_parents(domain)
            .find_map(|d| self.get(d))
            .unwrap_or_else(|| self.default_host())
    }

    /// Every hosted domain, the default first.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Host>> {
        self.list.get().iter()
    }

    pub fn len(&self) -> usize {
        self.list.get().len()
    }

    /// Never true: there is always a default domain.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// `domain`, then each domain it is under: `conference.a.test`, `a.test`,
/// `test`.
pub fn and_parents(domain: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(domain), |&d| d.split_once('.').map(|(_, parent)| parent))
}

/// One domain, without in-band registration.
impl From<BareJid> for Hosts {
    fn from(domain: BareJid) -> Hosts {
        Hosts::from(Host::new(domain))
    }
}

impl From<Host> for Hosts {
    fn from(host: Host) -> Hosts {
        let mut index: Index = HashMap::with_capacity_and_hasher(1, Default::default());
        index.insert(host.domain.as_str().into(), 0);
        Hosts {
            list: Arc::new(Current::new(vec![Arc::new(host)])),
            index,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(d: &str) -> Host {
        Host::new(BareJid::domain_jid(d).unwrap())
    }

    #[test]
    fn domains_are_found_by_name_however_many() {
        for n in [1, 4, 5, 40] {
            let names: Vec<String> = (0..n).map(|i| format!("d{i}.test")).collect();
            let hosts = Hosts::new(names.iter().map(|d| host(d))).unwrap();
            assert_eq!(hosts.default_host().domain.as_str(), "d0.test");
            for d in &names {
                assert_eq!(hosts.get(d).map(|h| h.domain.as_str()), Some(d.as_str()));
            }
            assert!(!hosts.contains("other.test"));
            assert!(!hosts.contains("alice@d0.test"));
        }
    }

    #[test]
    fn new_policies_reach_every_clone_and_keep_the_domains() {
        let hosts = Hosts::new([host("a.test"), host("b.test")]).unwrap();
        let shared = hosts.clone();
        let open = |d: &str| Host {
            registration: true,
            ..host(d)
        };
        hosts
            .set_policies(&Hosts::new([host("a.test"), open("b.test")]).unwrap())
            .unwrap();
        assert!(!shared.get("a.test").unwrap().registration);
        assert!(shared.get("b.test").unwrap().registration);
        for other in [vec![host("b.test"), host("a.test")], vec![host("a.test")]] {
            let err = hosts.set_policies(&Hosts::new(other).unwrap());
            assert_eq!(err, Err(HostsError::OtherDomains));
        }
    }

    #[test]
    fn a_service_domain_goes_under_its_nearest_hosted_parent() {
        let hosts = Hosts::new([host("x.test"), host("a.test"), host("chat.a.test")]).unwrap();
        let owner = |d: &str| hosts.owner_of(d).domain.as_str().to_owned();
        assert_eq!(owner("a.test"), "a.test");
        assert_eq!(owner("conference.a.test"), "a.test");
        assert_eq!(owner("rooms.chat.a.test"), "chat.a.test");
        assert_eq!(owner("conference.elsewhere.test"), "x.test");
        assert_eq!(
            and_parents("conference.a.test").collect::<Vec<_>>(),
            ["conference.a.test", "a.test", "test"]
        );
    }

    #[test]
    fn bad_lists_are_refused() {
        assert_eq!(Hosts::new(Vec::new()).err(), Some(HostsError::Empty));
        assert_eq!(
            Hosts::new([host("a.test"), host("a.test")]).err(),
            Some(HostsError::Twice("a.test".into()))
        );
        let user = Host::new(BareJid::parse("alice@a.test").unwrap());
        assert_eq!(
            Hosts::new([user]).err(),
            Some(HostsError::NotADomain("alice@a.test".into()))
        );
    }
}
