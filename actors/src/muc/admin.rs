//! A room's administration (XEP-0045 §§8–10): roles and affiliations
//! changed and listed (`muc#admin`), the configuration and the room's
//! destruction (`muc#owner`). Who may do what is decided by plain
//! functions ([`may_set_role`], [`may_set_affiliation`]), tested here.

use actix::prelude::*;

use super::config::{RoomConfig, Whois, ROOMCONFIG};
use super::room::Room;
use super::{stanzas, Affiliation, Role};
use crate::error::{StanzaCondition, StanzaError};
use crate::jid::{BareJid, Jid};
use crate::ns;
use crate::stanza::{IqType, Kind, MessageType, Stanza};
use crate::storage::StorageError;
use crate::xep::forms::{self, Submitted};
use crate::xml::Element;

fn error(condition: StanzaCondition, text: &'static str) -> StanzaError {
    StanzaError::with_text(condition, text)
}

/// May an occupant (`actor`: its affiliation and role) give another
/// (`target`: its affiliation and role now) the role `role` (`none`:
/// kick)? XEP-0045 §8.2–§8.5, §9.6, §9.7.
pub(crate) fn may_set_role(
    actor: (Affiliation, Role),
    target: (Affiliation, Role),
    role: Role,
) -> Result<(), StanzaError> {
    use StanzaCondition::*;
    if actor.1 != Role::Moderator {
        return Err(error(Forbidden, "only moderators change roles"));
    }
    if target.0 >= Affiliation::Admin && role < Role::Moderator {
        return Err(error(NotAllowed, "admins and owners keep their role"));
    }
    if target.0 > actor.0 {
        return Err(error(NotAllowed, "not over a higher affiliation"));
    }
    if (role == Role::Moderator || target.1 == Role::Moderator) && role != target.1 && actor.0 < Affiliation::Admin {
        return Err(error(NotAllowed, "only admins and owners make or unmake moderators"));
    }
    Ok(())
}

/// May `actor` change an affiliation from `now` to `new`, the room having
/// `owners` owners? §9, §10.3–§10.8; the last owner stays one.
pub(crate) fn may_set_affiliation(
    actor: Affiliation,
    now: Affiliation,
    new: Affiliation,
    owners: usize,
) -> Result<(), StanzaError> {
    use StanzaCondition::*;
    if actor < Affiliation::Admin {
        return Err(error(Forbidden, "only admins and owners change affiliations"));
    }
    if actor < Affiliation::Owner && (now >= Affiliation::Admin || new >= Affiliation::Admin) {
        return Err(error(NotAllowed, "only owners change admins and owners"));
    }
    if now == Affiliation::Owner && new != Affiliation::Owner && owners <= 1 {
        return Err(error(Conflict, "a room keeps at least one owner"));
    }
    Ok(())
}

/// One change a `muc#admin` set asks for.
enum Change {
    Role {
        nick: String,
        role: Role,
        reason: Option<String>,
    },
    Affiliation {
        jid: BareJid,
        affiliation: Affiliation,
        reason: Option<String>,
    },
}

impl Room {
    /// `muc#admin` (§§8–9): a get lists, a set changes.
    pub(super) fn on_admin(&mut self, stanza: &Stanza, query: &Element, ctx: &mut Context<Self>) {
        let Some(from) = stanza.from() else { return };
        let actor_affiliation = self.affiliation(&from.to_bare());
        let actor = self.sender(stanza);
        let actor_role = actor.map_or(Role::None, |i| self.occupants[i].role);
        let items: Vec<&Element> = query.children().filter(|c| c.is("item", ns::MUC_ADMIN)).collect();
        let Some(first) = items.first() else {
            return self.refuse(stanza, error(StanzaCondition::BadRequest, "no item"));
        };
        if stanza.kind == Kind::Iq(IqType::Get) {
            return match self.list(first, actor_affiliation, actor_role) {
                Ok(list) => self.send(stanza.iq_result(Some(list))),
                Err(e) => self.refuse(stanza, e),
            };
        }
        let changes = match self.changes(&items, actor_affiliation, actor_role) {
            Ok(changes) => changes,
            Err(e) => return self.refuse(stanza, e),
        };
        // Affiliations are stored first (a ban holds before the banned are
        // out), then the changes are shown, then the request is answered
        // (§8.2's order).
        let stored: Vec<_> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Affiliation {
                    jid,
                    affiliation,
                    reason,
                } => Some((
                    jid.clone(),
                    (*affiliation != Affiliation::None).then(|| (*affiliation, reason.clone())),
                )),
                Change::Role { .. } => None,
            })
            .collect();
        let actor_nick = actor.map(|i| self.occupants[i].nick.clone());
        let request = stanza.clone();
        let apply = move |act: &mut Room, stored: Result<(), StorageError>, _: &mut Context<Room>| {
            if stored.is_err() {
                return act.refuse(&request, StanzaError::new(StanzaCondition::InternalServerError));
            }
            for change in changes {
                act.apply(change, actor_nick.as_deref());
            }
            act.send(request.iq_result(None));
        };
        if stored.is_empty() || !self.config.persistent {
            return apply(self, Ok(()), ctx);
        }
        let storage = self.shared.router.storage().clone();
        let (domain, name) = (self.shared.domain.to_string(), self.name.clone());
        let work = async move {
            for (jid, affiliation) in stored {
                storage.muc_set_affiliation(&domain, &name, &jid, affiliation).await?;
            }
            Ok::<(), StorageError>(())
        };
        self.after(ctx, work, apply);
    }

    /// The changes a set asks for, each allowed, or why not.
    fn changes(&self, items: &[&Element], actor: Affiliation, actor_role: Role) -> Result<Vec<Change>, StanzaError> {
        use StanzaCondition::*;
        let mut owners = self
            .affiliations
            .values()
            .filter(|(a, _)| *a == Affiliation::Owner)
            .count();
        let mut changes = Vec::new();
        for item in items {
            let reason = item.get_child("reason", ns::MUC_ADMIN).map(Element::text);
            match (item.attr("role"), item.attr("affiliation")) {
                (Some(role), None) => {
                    let role = Role::parse(role).ok_or_else(|| error(BadRequest, "no such role"))?;
                    let nick = item
                        .attr("nick")
                        .ok_or_else(|| error(BadRequest, "a role goes with a nick"))?;
                    let t = self.by_nick(nick).ok_or_else(|| StanzaError::new(ItemNotFound))?;
                    let target = &self.occupants[t];
                    let target = (self.affiliation(&target.bare), target.role);
                    may_set_role((actor, actor_role), target, role)?;
                    changes.push(Change::Role {
                        nick: nick.to_owned(),
                        role,
                        reason,
                    });
                }
                (None, Some(affiliation)) => {
                    let new =
                        Affiliation::parse(affiliation).ok_or_else(|| error(BadRequest, "no such affiliation"))?;
                    let jid = match (item.attr("jid"), item.attr("nick")) {
                        (Some(j), _) => Jid::parse(j)?.to_bare(),
                        (None, Some(n)) => {
                            let i = self.by_nick(n).ok_or_else(|| StanzaError::new(ItemNotFound))?;
                            self.occupants[i].bare.clone()
                        }
                        (None, None) => return Err(error(BadRequest, "an affiliation goes with a jid")),
                    };
                    let now = self.affiliation(&jid);
                    may_set_affiliation(actor, now, new, owners)?;
                    if now == Affiliation::Owner && new != Affiliation::Owner {
                        owners -= 1;
                    } else if new == Affiliation::Owner && now != Affiliation::Owner {
                        owners += 1;
                    }
                    changes.push(Change::Affiliation {
                        jid,
                        affiliation: new,
                        reason,
                    });
                }
                _ => return Err(error(BadRequest, "an item has a role or an affiliation")),
            }
        }
        Ok(changes)
    }

    /// One allowed change, shown: a kick (307), a ban (301), membership
    /// lost in a members-only room (321), or new presence.
    fn apply(&mut self, change: Change, actor: Option<&str>) {
        match change {
            Change::Role { nick, role, reason } => {
                let Some(i) = self.by_nick(&nick) else { return };
                if role == Role::None {
                    return self.expel(i, 307, actor, reason.as_deref());
                }
                self.occupants[i].role = role;
                self.announce(i, &[]);
            }
            Change::Affiliation {
                jid,
                affiliation,
                reason,
            } => {
                let before = self.affiliation(&jid);
                if affiliation == Affiliation::None {
                    self.affiliations.remove(&jid);
                } else {
                    self.affiliations.insert(jid.clone(), (affiliation, reason.clone()));
                }
                if (before == Affiliation::Owner) != (affiliation == Affiliation::Owner) {
                    self.owners_changed();
                }
                let nicks: Vec<String> = self
                    .occupants
                    .iter()
                    .filter(|o| o.bare == jid)
                    .map(|o| o.nick.clone())
                    .collect();
                for nick in nicks {
                    let Some(i) = self.by_nick(&nick) else { continue };
                    if affiliation == Affiliation::Outcast {
                        self.expel(i, 301, actor, reason.as_deref());
                    } else if self.config.members_only && affiliation < Affiliation::Member {
                        self.expel(i, 321, actor, reason.as_deref());
                    } else {
                        self.occupants[i].role = self.default_role(affiliation);
                        self.announce(i, &[]);
                    }
                }
            }
        }
    }

    /// §8.5, §9.5, §10.5: occupants by role (for moderators), users by
    /// affiliation (for admins and owners).
    fn list(&self, item: &Element, actor: Affiliation, actor_role: Role) -> Result<Element, StanzaError> {
        use StanzaCondition::*;
        let mut query = Element::new("query", ns::MUC_ADMIN);
        match (item.attr("role"), item.attr("affiliation")) {
            (Some(role), None) => {
                let role = Role::parse(role)
                    .filter(|r| *r != Role::None)
                    .ok_or_else(|| error(BadRequest, "no such role"))?;
                if actor_role != Role::Moderator {
                    return Err(error(Forbidden, "only moderators list roles"));
                }
                for occ in self.occupants.iter().filter(|o| o.role == role) {
                    let mut el = Element::new("item", ns::MUC_ADMIN)
                        .with_attr("nick", occ.nick.as_str())
                        .with_attr("role", role.as_str())
                        .with_attr("affiliation", self.affiliation(&occ.bare).as_str());
                    if let Some(s) = occ.sessions.last() {
                        el.set_attr("jid", s.jid.as_str());
                    }
                    query.push_child(el);
                }
            }
            (None, Some(affiliation)) => {
                let wanted = Affiliation::parse(affiliation)
                    .filter(|a| *a != Affiliation::None)
                    .ok_or_else(|| error(BadRequest, "no such affiliation"))?;
                // Members of a members-only room that shows real JIDs see
                // who else is a member (Prosody does the same): OMEMO
                // clients encrypt to members not present.
                let open_to_members = self.config.members_only
                    && self.config.whois == Whois::Anyone
                    && actor == Affiliation::Member
                    && wanted != Affiliation::Outcast;
                if actor < Affiliation::Admin && !open_to_members {
                    return Err(error(Forbidden, "only admins and owners list affiliations"));
                }
                let mut users: Vec<(&BareJid, &Option<String>)> = self
                    .affiliations
                    .iter()
                    .filter(|(_, (a, _))| *a == wanted)
                    .map(|(j, (_, r))| (j, r))
                    .collect();
                users.sort();
                for (jid, reason) in users {
                    let mut el = Element::new("item", ns::MUC_ADMIN)
                        .with_attr("affiliation", wanted.as_str())
                        .with_attr("jid", jid.as_str());
                    if let Some(reason) = reason {
                        el.push_child(Element::new("reason", ns::MUC_ADMIN).with_text(reason.as_str()));
                    }
                    query.push_child(el);
                }
            }
            _ => return Err(error(BadRequest, "an item has a role or an affiliation")),
        }
        Ok(query)
    }

    /// `muc#owner` (§10): the configuration form, its submission (an
    /// empty one makes an instant room), its cancellation, destruction.
    pub(super) fn on_owner(&mut self, stanza: &Stanza, query: &Element, ctx: &mut Context<Self>) {
        let owner = stanza
            .from()
            .is_some_and(|f| self.affiliation(&f.to_bare()) == Affiliation::Owner);
        if !owner {
            return self.refuse(
                stanza,
                error(StanzaCondition::Forbidden, "only owners configure a room"),
            );
        }
        let limits = self.shared.settings.limits();
        if stanza.kind == Kind::Iq(IqType::Get) {
            let form = Element::new("query", ns::MUC_OWNER).with_child(self.config.form(limits));
            return self.send(stanza.iq_result(Some(form)));
        }
        if let Some(destroy) = query.get_child("destroy", ns::MUC_OWNER) {
            let reason = destroy.get_child("reason", ns::MUC_OWNER).map(Element::text);
            let alternate = destroy.attr("jid").map(str::to_owned);
            return self.destroy(reason, alternate, Some(stanza.clone()), ctx);
        }
        let Some(x) = query.get_child("x", forms::NS) else {
            return self.refuse(stanza, error(StanzaCondition::BadRequest, "neither a form nor destroy"));
        };
        if x.attr("type") == Some("cancel") {
            // §10.1.3: cancelling a new room's first configuration destroys it.
            if self.locked {
                return self.destroy(None, None, Some(stanza.clone()), ctx);
            }
            return self.send(stanza.iq_result(None));
        }
        let form = Submitted::parse(x).and_then(|f| f.check_type(ROOMCONFIG).map(|()| f));
        let config = form.and_then(|f| self.config.apply(&f, limits));
        match config {
            Ok(config) => self.configure(stanza.clone(), config, ctx),
            Err(e) => self.refuse(stanza, e),
        }
    }

    /// A new configuration: stored (or forgotten, no longer persistent),
    /// then in force.
    fn configure(&mut self, request: Stanza, config: RoomConfig, ctx: &mut Context<Self>) {
        let before = std::mem::replace(&mut self.config, config);
        let storage = self.shared.router.storage().clone();
        let domain = self.shared.domain.as_str();
        let work = match (before.persistent, self.config.persistent) {
            // Made persistent: stored with every affiliation it has.
            (was, true) => Some(storage.muc_save_room(domain, self.stored(!was))),
            (true, false) => Some(storage.muc_delete_room(domain, &self.name)),
            (false, false) => None,
        };
        let then = move |act: &mut Room, stored: Result<(), StorageError>, _: &mut Context<Room>| {
            if stored.is_err() {
                act.config = before;
                return act.refuse(&request, StanzaError::new(StanzaCondition::InternalServerError));
            }
            act.configured(&before, &request);
        };
        match work {
            Some(work) => self.after(ctx, work, then),
            None => then(self, Ok(()), ctx),
        }
    }

    /// Prosody's order: non-members removed (322) if the room became
    /// members-only, the answer, then 104 to those left.
    fn configured(&mut self, before: &RoomConfig, request: &Stanza) {
        self.locked = false;
        self.relist();
        if self.config.members_only && !before.members_only {
            let out: Vec<String> = self
                .occupants
                .iter()
                .filter(|o| self.affiliation(&o.bare) < Affiliation::Member)
                .map(|o| o.nick.clone())
                .collect();
            for nick in out {
                if let Some(i) = self.by_nick(&nick) {
                    self.expel(i, 322, None, None);
                }
            }
        }
        self.send(request.iq_result(None));
        let codes = before.changes(&self.config);
        if codes.is_empty() {
            return;
        }
        let room = self.jid.as_jid().clone();
        let message = stanzas::status_message(&self.jid, &codes);
        if let Some(b) = self.broadcast(message, Kind::Message(MessageType::Groupchat), &room) {
            self.to_all(&b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Affiliation as A;
    use Role as R;

    fn refused(r: Result<(), StanzaError>) -> StanzaCondition {
        r.unwrap_err().condition
    }

    #[test]
    fn moderators_kick_and_give_voice_within_their_rank() {
        let owner = (A::Owner, R::Moderator);
        // Kick and voice.
        may_set_role(owner, (A::None, R::Participant), R::None).unwrap();
        may_set_role(owner, (A::None, R::Visitor), R::Participant).unwrap();
        assert_eq!(
            refused(may_set_role(
                (A::None, R::Participant),
                (A::None, R::Participant),
                R::None
            )),
            StanzaCondition::Forbidden
        );
        // Admins and owners cannot be kicked or silenced.
        assert_eq!(
            refused(may_set_role(owner, (A::Admin, R::Moderator), R::None)),
            StanzaCondition::NotAllowed
        );
        // Making or unmaking a moderator takes an admin.
        let moderator = (A::Member, R::Moderator);
        may_set_role(moderator, (A::None, R::Participant), R::Visitor).unwrap();
        assert_eq!(
            refused(may_set_role(moderator, (A::None, R::Participant), R::Moderator)),
            StanzaCondition::NotAllowed
        );
        assert_eq!(
            refused(may_set_role(moderator, (A::None, R::Moderator), R::None)),
            StanzaCondition::NotAllowed
        );
        may_set_role((A::Admin, R::Moderator), (A::None, R::Participant), R::Moderator).unwrap();
    }

    #[test]
    fn admins_ban_and_grant_membership_owners_the_rest_and_one_owner_stays() {
        may_set_affiliation(A::Admin, A::None, A::Outcast, 1).unwrap();
        may_set_affiliation(A::Admin, A::None, A::Member, 1).unwrap();
        assert_eq!(
            refused(may_set_affiliation(A::Member, A::None, A::Member, 1)),
            StanzaCondition::Forbidden
        );
        assert_eq!(
            refused(may_set_affiliation(A::Admin, A::Admin, A::None, 1)),
            StanzaCondition::NotAllowed
        );
        assert_eq!(
            refused(may_set_affiliation(A::Admin, A::None, A::Admin, 1)),
            StanzaCondition::NotAllowed
        );
        may_set_affiliation(A::Owner, A::None, A::Admin, 1).unwrap();
        assert_eq!(
            refused(may_set_affiliation(A::Owner, A::Owner, A::Admin, 1)),
            StanzaCondition::Conflict
        );
        may_set_affiliation(A::Owner, A::Owner, A::Admin, 2).unwrap();
    }
}
