//! The SessionManager actor: the one owner of the session table. It binds
//! and unbinds sessions and resolves resource conflicts (RFC 6120 §7.7.2.2:
//! the new session wins, the old one gets `<conflict/>`). It also knows
//! which connection holds each resumable session (XEP-0198), and hands a
//! session from one connection to the next, one resumption at a time.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;

use crate::c2s::resume::{Handoff, ResumeRefused, Resumed};
use crate::c2s::C2s;

use crate::error::{StanzaCondition, StanzaError, StreamCondition, StreamError};
use crate::jid::{BareJid, FullJid};
use crate::router::Router;
use crate::session::{Control, Session, SessionTable};
use crate::stanza::Stanza;

pub struct SessionManager {
    table: SessionTable,
    router: Router,
    max_resources: usize,
    /// Resumable sessions (XEP-0198) by id: whose, and which connection
    /// holds it.
    resumable: HashMap<String, Holder>,
}

struct Holder {
    user: BareJid,
    addr: Addr<C2s>,
    /// A resumption is being handed over: a second one is refused.
    moving: bool,
}

impl SessionManager {
    pub fn new(router: Router, max_resources: usize) -> SessionManager {
        SessionManager {
            table: router.sessions().clone(),
            router,
            max_resources,
            resumable: HashMap::new(),
        }
    }
}

impl Actor for SessionManager {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Binding is on every login's path: let it queue rather than fail.
        ctx.set_mailbox_capacity(4096);
    }
}

/// Binds a session. Fails with `<resource-constraint/>` when the account
/// has as many sessions as allowed.
#[derive(Message)]
#[rtype(result = "Result<(), StanzaError>")]
pub struct Register(pub Arc<Session>);

impl Handler<Register> for SessionManager {
    type Result = Result<(), StanzaError>;

    fn handle(&mut self, Register(session): Register, _: &mut Context<Self>) -> Self::Result {
        let replacing = self.table.get(&session.jid).is_some();
        if !replacing && self.table.count_for(&session.jid.to_bare()) >= self.max_resources {
            // The binding pinned its account's blocklist (see c2s::bind).
            self.router.blocklists().unpin(&session.jid.to_bare());
            return Err(StanzaError::with_text(
                StanzaCondition::ResourceConstraint,
                "too many sessions for this account",
            ));
        }
        let blocklists = self.router.blocklists();
        if let Some(old) = self.table.insert(session.clone()) {
            // The newcomer holds the account's blocklist now.
            blocklists.unpin(&old.jid.to_bare());
            log::info!("{}: replaced by a new session", old.jid);
            old.control(Control::Kick(StreamError::with_text(
                StreamCondition::Conflict,
                "replaced by a new session",
            )));
        }
        // After the insert: a blocklist change made meanwhile either sees
        // the session, or is seen here.
        blocklists.sync_flag(&session);
        Ok(())
    }
}

/// Unbinds session `id` (if a newer session took its JID, nothing happens).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unregister {
    pub jid: FullJid,
    pub id: u64,
    /// Its XEP-0198 resumption id, forgotten with it.
    pub resumption: Option<String>,
}

impl Handler<Unregister> for SessionManager {
    type Result = ();

    fn handle(&mut self, msg: Unregister, _: &mut Context<Self>) {
        if self.table.remove(&msg.jid, msg.id).is_some() {
            self.router.blocklists().unpin(&msg.jid.to_bare());
        }
        if let Some(id) = msg.resumption {
            self.resumable.remove(&id);
        }
    }
}

/// A session's connection enabled resumption under `id` (XEP-0198 §5).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Resumable {
    pub id: String,
    pub user: BareJid,
    pub addr: Addr<C2s>,
}

impl Handler<Resumable> for SessionManager {
    type Result = ();

    fn handle(&mut self, msg: Resumable, _: &mut Context<Self>) {
        let holder = Holder {
            user: msg.user,
            addr: msg.addr,
            moving: false,
        };
        self.resumable.insert(msg.id, holder);
    }
}

/// A new connection of `user` resumes session `id`: the connection that
/// holds it (dropped or half-open) hands it over, and answers with what
/// the new one needs.
#[derive(Message)]
#[rtype(result = "Result<Resumed, ResumeRefused>")]
pub struct Resume {
    pub id: String,
    pub user: BareJid,
    pub handoff: Handoff,
    pub addr: Addr<C2s>,
}

impl Handler<Resume> for SessionManager {
    type Result = ResponseActFuture<Self, Result<Resumed, ResumeRefused>>;

    fn handle(&mut self, msg: Resume, _: &mut Context<Self>) -> Self::Result {
        let holder = match self.resumable.get_mut(&msg.id) {
            // Someone else's id is as good as none (§5: item-not-found).
            Some(h) if h.user == msg.user && !h.moving => h,
            _ => return Box::pin(fut::ready(Err(ResumeRefused::Unknown))),
        };
        holder.moving = true;
        let (id, addr) = (msg.id, msg.addr);
        let handing = holder.addr.send(msg.handoff);
        Box::pin(handing.into_actor(self).map(move |res, act, _| {
            // A holder that stopped meanwhile (its wait ran out) has
            // unregistered: the session is gone.
            let res = res.unwrap_or(Err(ResumeRefused::Unknown));
            if let Some(holder) = act.resumable.get_mut(&id) {
                holder.moving = false;
                if res.is_ok() {
                    holder.addr = addr;
                }
            }
            res
        }))
    }
}

/// The full JIDs of all bound sessions.
#[derive(Message)]
#[rtype(result = "Vec<FullJid>")]
pub struct ListSessions;

impl Handler<ListSessions> for SessionManager {
    type Result = Vec<FullJid>;

    fn handle(&mut self, _: ListSessions, _: &mut Context<Self>) -> Vec<FullJid> {
        let mut jids: Vec<FullJid> = self.table.all().iter().map(|s| s.jid.clone()).collect();
        jids.sort();
        jids
    }
}

/// Closes every session of an account with the given stream error;
/// answers how many there were.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct KickUser {
    pub user: BareJid,
    pub error: StreamError,
}

impl Handler<KickUser> for SessionManager {
    type Result = usize;

    fn handle(&mut self, msg: KickUser, _: &mut Context<Self>) -> usize {
        self.table.kick(&msg.user, &msg.error, None)
    }
}

/// Routes a stanza on behalf of the host program (an embedder sending a
/// message to a user, say). The stanza needs a `from`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RouteStanza(pub Stanza);

impl Handler<RouteStanza> for SessionManager {
    type Result = ();

    fn handle(&mut self, RouteStanza(stanza): RouteStanza, _: &mut Context<Self>) {
        self.router.route(stanza);
    }
}
