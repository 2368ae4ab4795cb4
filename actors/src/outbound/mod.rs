//! Outbound connections that come back by themselves: the
//! [`ConnectionManager`] keeps one connection to a peer up, reconnecting
//! with backoff, and tells its subscribers when it comes and goes. What it
//! connects is a [`Connector`]: the XEP-0114 component client
//! ([`crate::component::client`]) is one; an outbound server-to-server
//! link is meant to be another.

pub mod manager;

pub use manager::{
    ConnectFuture, ConnectTimedOut, Connection, ConnectionEvent, ConnectionManager, Connector, CurrentHandle,
    ManagerSettings, Shutdown, Subscribe,
};
