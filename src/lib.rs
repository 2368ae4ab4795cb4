//! # shoal
//!
//! The batteries-included Shoal XMPP server: TOML [`config`], the SQLite
//! [`store`], and a [`server::ServerBuilder`] that starts the actors of
//! [`shoal_actors`] inside an actix System, with its listeners; HTTP
//! file [`upload`] (XEP-0363).

pub mod config;
pub mod control;
pub mod federation;
pub mod group_commit;
pub mod http;
pub mod load;
pub mod metrics;
pub mod migrate;
pub mod portable;
pub mod reload;
pub mod rlimit;
pub mod server;
pub mod store;
pub mod tls;
pub mod upload;

pub use config::Config;
pub use server::{ServerBuilder, ServerHandle, StartError};
pub use shoal_actors as actors;
