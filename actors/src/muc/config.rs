//! A room's configuration (XEP-0045 §10.2): the `muc#roomconfig` form an
//! owner fills in and submits, the same form kept in storage, and the
//! `muc#roominfo` form and features of the room's disco#info (§6.4).

use crate::error::{StanzaCondition, StanzaError};
use crate::xep::forms::{self, Submitted};
use crate::xml::Element;

use super::Role;

pub const ROOMCONFIG: &str = "http://jabber.org/protocol/muc#roomconfig";
pub const ROOMINFO: &str = "http://jabber.org/protocol/muc#roominfo";

/// Who sees occupants' real JIDs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Whois {
    /// Semi-anonymous: moderators only.
    Moderators,
    /// Non-anonymous: everyone.
    Anyone,
}

/// What the service lets rooms be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest `maxusers`.
    pub max_users: u32,
    /// The largest `historylength`.
    pub max_history: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomConfig {
    pub name: String,
    pub description: String,
    pub persistent: bool,
    pub public: bool,
    pub members_only: bool,
    pub password_protected: bool,
    pub secret: String,
    pub moderated: bool,
    pub max_users: u32,
    pub whois: Whois,
    /// Messages kept for joiners.
    pub history_length: u32,
    /// Participants may change the subject (moderators always may).
    pub change_subject: bool,
    /// Occupants may invite (admins and owners always may).
    pub allow_invites: bool,
    /// Roles whose presence is broadcast, lowest first.
    pub presence_broadcast: Vec<Role>,
}

/// `muc#roomconfig_` and the name: the fields this service knows.
const FIELDS: &[&str] = &[
    "roomname",
    "roomdesc",
    "persistentroom",
    "publicroom",
    "membersonly",
    "passwordprotectedroom",
    "roomsecret",
    "moderatedroom",
    "maxusers",
    "whois",
    "historylength",
    "changesubject",
    "allowinvites",
    "presencebroadcast",
];

const BROADCAST_ROLES: [Role; 3] = [Role::Visitor, Role::Participant, Role::Moderator];

fn refused(var: &str, why: &str) -> StanzaError {
    StanzaError::with_text(StanzaCondition::NotAcceptable, format!("{var}: {why}"))
}

fn boolean(var: &str, values: &[String]) -> Result<Option<bool>, StanzaError> {
    match forms::single(values)? {
        None => Ok(None),
        Some("1" | "true") => Ok(Some(true)),
        Some("0" | "false") => Ok(Some(false)),
        Some(_) => Err(refused(var, "not a boolean")),
    }
}

fn number(var: &str, values: &[String], max: u32) -> Result<Option<u32>, StanzaError> {
    match forms::single(values)? {
        None => Ok(None),
        Some(v) => match v.parse::<u32>() {
            Ok(n) if n <= max => Ok(Some(n)),
            Ok(_) => Err(refused(var, &format!("at most {max}"))),
            Err(_) => Err(refused(var, "not a number")),
        },
    }
}

impl RoomConfig {
    /// A new room's: temporary, public, open, semi-anonymous, 20 messages
    /// of history and 200 occupants at most (ejabberd's and Prosody's
    /// defaults), within `limits`.
    pub fn new(limits: Limits) -> RoomConfig {
        RoomConfig {
            name: String::new(),
            description: String::new(),
            persistent: false,
            public: true,
            members_only: false,
            password_protected: false,
            secret: String::new(),
            moderated: false,
            max_users: limits.max_users.min(200),
            whois: Whois::Moderators,
            history_length: limits.max_history.min(20),
            change_subject: false,
            allow_invites: false,
            presence_broadcast: BROADCAST_ROLES.to_vec(),
        }
    }

    /// A stored configuration read back: anything that no longer reads
    /// (limits lowered since) is brought within `limits`.
    pub fn from_stored(xml: &str, limits: Limits) -> RoomConfig {
        let defaults = RoomConfig::new(limits);
        let loose = Limits {
            max_users: u32::MAX,
            max_history: u32::MAX,
        };
        let parse = || {
            let el = crate::xml::parse_element(
                xml.as_bytes(),
                &crate::xml::NsBindings::empty(),
                &crate::xml::ParseLimits::default(),
            )
            .ok()?;
            let form = Submitted::parse(&el).ok()?;
            defaults.apply(&form, loose).ok()
        };
        match parse() {
            Some(mut config) => {
                config.max_users = config.max_users.clamp(1, limits.max_users);
                config.history_length = config.history_length.min(limits.max_history);
                config
            }
            None => {
                log::error!("a stored room configuration does not read: {xml}");
                defaults
            }
        }
    }

    /// The password a joiner must give, if any.
    pub fn password(&self) -> Option<&str> {
        (self.password_protected && !self.secret.is_empty()).then_some(self.secret.as_str())
    }

    /// True when `role`'s presence is broadcast to the other occupants.
    pub fn broadcasts(&self, role: Role) -> bool {
        role == Role::None || self.presence_broadcast.contains(&role)
    }

    /// This configuration with `form` (a submitted `muc#roomconfig`
    /// form, its FORM_TYPE checked) applied: fields left out keep their
    /// value. A value out of range, or a `muc#roomconfig_` field this
    /// service does not know, is refused (`<not-acceptable/>`, naming it);
    /// other fields are not this form's and are ignored.
    pub fn apply(&self, form: &Submitted, limits: Limits) -> Result<RoomConfig, StanzaError> {
        let mut c = self.clone();
        for (var, values) in form.fields() {
            let Some(field) = var.strip_prefix("muc#roomconfig_") else {
                continue;
            };
            let text = || forms::single(values).map(|v| v.unwrap_or_default().to_owned());
            match field {
                "roomname" => c.name = text()?,
                "roomdesc" => c.description = text()?,
                "roomsecret" => c.secret = text()?,
                "persistentroom" => set(&mut c.persistent, boolean(var, values)?),
                "publicroom" => set(&mut c.public, boolean(var, values)?),
                "membersonly" => set(&mut c.members_only, boolean(var, values)?),
                "passwordprotectedroom" => set(&mut c.password_protected, boolean(var, values)?),
                "moderatedroom" => set(&mut c.moderated, boolean(var, values)?),
                "changesubject" => set(&mut c.change_subject, boolean(var, values)?),
                "allowinvites" => set(&mut c.allow_invites, boolean(var, values)?),
                "maxusers" => match forms::single(values)? {
                    // "none" (XEP-0045 §15.5.3): as many as the service allows.
                    Some("none") => c.max_users = limits.max_users,
                    _ => match number(var, values, limits.max_users)? {
                        Some(0) => return Err(refused(var, "at least 1")),
                        n => set(&mut c.max_users, n),
                    },
                },
                "historylength" => set(&mut c.history_length, number(var, values, limits.max_history)?),
                "whois" => match forms::single(values)? {
                    None => {}
                    Some("moderators") => c.whois = Whois::Moderators,
                    Some("anyone") => c.whois = Whois::Anyone,
                    Some(_) => return Err(refused(var, "moderators or anyone")),
                },
                "presencebroadcast" => {
                    let mut roles = Vec::new();
                    for v in values {
                        match Role::parse(v) {
                            Some(r) if r != Role::None => roles.push(r),
                            _ => return Err(refused(var, "moderator, participant or visitor")),
                        }
                    }
                    roles.sort_unstable();
                    roles.dedup();
                    c.presence_broadcast = roles;
                }
                _ => return Err(refused(var, "not a setting of this service")),
            }
        }
        Ok(c)
    }

    /// The status codes occupants are told when this configuration
    /// becomes `after` (XEP-0045 §10.2.1): 104, and 172 or 173 when the
    /// room's anonymity changed; none when nothing changed.
    pub fn changes(&self, after: &RoomConfig) -> Vec<u16> {
        if self == after {
            return Vec::new();
        }
        let mut codes = vec![104];
        if self.whois != after.whois {
            codes.push(if after.whois == Whois::Anyone { 172 } else { 173 });
        }
        codes
    }

    /// What disco#items of the service names this room (`name` is its
    /// localpart), if it is listed there (public).
    pub fn listed_as(&self, name: &str) -> Option<String> {
        self.public.then(|| self.title(name).to_owned())
    }

    /// The room's natural-language name.
    pub fn title<'a>(&'a self, name: &'a str) -> &'a str {
        if self.name.is_empty() {
            name
        } else {
            &self.name
        }
    }

    fn values(&self) -> Vec<(&'static str, Vec<String>)> {
        let b = |v: bool| vec![if v { "1" } else { "0" }.to_owned()];
        let s = |v: &str| vec![v.to_owned()];
        FIELDS
            .iter()
            .map(|f| {
                let values = match *f {
                    "roomname" => s(&self.name),
                    "roomdesc" => s(&self.description),
                    "persistentroom" => b(self.persistent),
                    "publicroom" => b(self.public),
                    "membersonly" => b(self.members_only),
                    "passwordprotectedroom" => b(self.password_protected),
                    "roomsecret" => s(&self.secret),
                    "moderatedroom" => b(self.moderated),
                    "maxusers" => vec![self.max_users.to_string()],
                    "whois" => s(match self.whois {
                        Whois::Moderators => "moderators",
                        Whois::Anyone => "anyone",
                    }),
                    "historylength" => vec![self.history_length.to_string()],
                    "changesubject" => b(self.change_subject),
                    "allowinvites" => b(self.allow_invites),
                    _ => self.presence_broadcast.iter().map(|r| r.as_str().to_owned()).collect(),
                };
                (*f, values)
            })
            .collect()
    }

    /// The form an owner fills in (§10.2), with the current values.
    pub fn form(&self, limits: Limits) -> Element {
        let fields = self.values().into_iter().map(|(f, values)| {
            let (kind, label) = match f {
                "roomname" => ("text-single", "Name"),
                "roomdesc" => ("text-single", "Description"),
                "persistentroom" => ("boolean", "Kept when empty"),
                "publicroom" => ("boolean", "Listed in the directory"),
                "membersonly" => ("boolean", "Only members may join"),
                "passwordprotectedroom" => ("boolean", "A password is needed to join"),
                "roomsecret" => ("text-private", "Password"),
                "moderatedroom" => ("boolean", "Only participants may speak"),
                "maxusers" => ("text-single", "Most occupants"),
                "whois" => ("list-single", "Who sees real JIDs"),
                "historylength" => ("text-single", "Messages kept for those who join"),
                "changesubject" => ("boolean", "Participants may change the subject"),
                "allowinvites" => ("boolean", "Occupants may invite"),
                _ => ("list-multi", "Roles whose presence is broadcast"),
            };
            let mut field = forms::field(&format!("muc#roomconfig_{f}"), kind).with_attr("label", label);
            let options: &[&str] = match f {
                "whois" => &["moderators", "anyone"],
                "presencebroadcast" => &["moderator", "participant", "visitor"],
                _ => &[],
            };
            for o in options {
                let value = Element::new("value", forms::NS).with_text(*o);
                field.push_child(
                    Element::new("option", forms::NS)
                        .with_attr("label", *o)
                        .with_child(value),
                );
            }
            if f == "maxusers" || f == "historylength" {
                let max = if f == "maxusers" {
                    limits.max_users
                } else {
                    limits.max_history
                };
                let desc = format!("At most {max}");
                field.push_child(Element::new("desc", forms::NS).with_text(desc));
            }
            for v in values {
                field.push_child(Element::new("value", forms::NS).with_text(v));
            }
            field
        });
        forms::form(ROOMCONFIG, fields)
    }

    /// The whole configuration as a submitted form: what storage keeps.
    pub fn submitted(&self) -> Element {
        let mut x = Element::new("x", forms::NS).with_attr("type", "submit");
        let value = |v: &str| Element::new("value", forms::NS).with_text(v);
        x.push_child(
            Element::new("field", forms::NS)
                .with_attr("var", "FORM_TYPE")
                .with_child(value(ROOMCONFIG)),
        );
        for (f, values) in self.values() {
            let mut field = Element::new("field", forms::NS).with_attr("var", format!("muc#roomconfig_{f}"));
            for v in values {
                field.push_child(value(&v));
            }
            x.push_child(field);
        }
        x
    }

    /// The room's disco#info features (§6.4), after `muc`.
    pub fn features(&self) -> [&'static str; 6] {
        let pick = |on: bool, yes: &'static str, no: &'static str| if on { yes } else { no };
        [
            pick(self.public, "muc_public", "muc_hidden"),
            pick(self.members_only, "muc_membersonly", "muc_open"),
            pick(self.moderated, "muc_moderated", "muc_unmoderated"),
            pick(self.whois == Whois::Anyone, "muc_nonanonymous", "muc_semianonymous"),
            pick(self.password().is_some(), "muc_passwordprotected", "muc_unsecured"),
            pick(self.persistent, "muc_persistent", "muc_temporary"),
        ]
    }

    /// The `muc#roominfo` form of the room's disco#info (§15.5.4).
    pub fn info_form(&self, occupants: usize, subject: &str) -> Element {
        let mut x = Element::new("x", forms::NS).with_attr("type", "result");
        let value = |v: &str| Element::new("value", forms::NS).with_text(v);
        let field = |var: &str, v: &str| {
            Element::new("field", forms::NS)
                .with_attr("var", var)
                .with_child(value(v))
        };
        x.push_child(forms::field("FORM_TYPE", "hidden").with_child(value(ROOMINFO)));
        x.push_child(field("muc#roomconfig_roomname", &self.name));
        x.push_child(field("muc#roominfo_description", &self.description));
        x.push_child(field("muc#roominfo_occupants", &occupants.to_string()));
        x.push_child(field("muc#roominfo_subject", subject));
        let change = if self.change_subject { "1" } else { "0" };
        x.push_child(field("muc#roominfo_changesubject", change));
        x.push_child(field("muc#maxhistoryfetch", &self.history_length.to_string()));
        x
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::client_element;

    const LIMITS: Limits = Limits {
        max_users: 500,
        max_history: 50,
    };

    fn form(fields: &str) -> Submitted {
        let xml = format!(
            "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>{ROOMCONFIG}</value></field>{fields}</x>"
        );
        Submitted::parse(&client_element(&xml)).unwrap()
    }

    fn refusal(fields: &str) -> String {
        let e = RoomConfig::new(LIMITS).apply(&form(fields), LIMITS).unwrap_err();
        assert_eq!(e.condition, StanzaCondition::NotAcceptable);
        e.text.unwrap().into_owned()
    }

    #[test]
    fn new_rooms_have_the_peers_defaults_within_the_limits() {
        let c = RoomConfig::new(LIMITS);
        assert_eq!((c.max_users, c.history_length), (200, 20));
        assert!(c.public && !c.persistent && !c.members_only && !c.change_subject);
        assert_eq!(c.whois, Whois::Moderators);
        assert_eq!(c.password(), None);
        let small = RoomConfig::new(Limits {
            max_users: 10,
            max_history: 5,
        });
        assert_eq!((small.max_users, small.history_length), (10, 5));
    }

    #[test]
    fn a_submitted_form_changes_what_it_names() {
        let before = RoomConfig::new(LIMITS);
        let after = before
            .apply(
                &form(
                    "<field var='muc#roomconfig_roomname'><value>Balcony</value></field>\
                     <field var='muc#roomconfig_persistentroom'><value>true</value></field>\
                     <field var='muc#roomconfig_membersonly'><value>1</value></field>\
                     <field var='muc#roomconfig_passwordprotectedroom'><value>1</value></field>\
                     <field var='muc#roomconfig_roomsecret'><value>cauldron</value></field>\
                     <field var='muc#roomconfig_maxusers'><value>30</value></field>\
                     <field var='muc#roomconfig_whois'><value>anyone</value></field>\
                     <field var='muc#roomconfig_presencebroadcast'><value>moderator</value><value>participant</value></field>\
                     <field var='other#field'><value>ignored</value></field>",
                ),
                LIMITS,
            )
            .unwrap();
        assert_eq!(after.name, "Balcony");
        assert!(after.persistent && after.members_only);
        assert_eq!(after.password(), Some("cauldron"));
        assert_eq!(after.max_users, 30);
        assert_eq!(after.whois, Whois::Anyone);
        assert_eq!(after.presence_broadcast, [Role::Participant, Role::Moderator]);
        assert!(!after.broadcasts(Role::Visitor) && after.broadcasts(Role::None));
        // Left out: unchanged.
        assert_eq!(after.history_length, 20);
        assert_eq!(before.changes(&after), [104, 172]);
        assert_eq!(after.changes(&after.clone()), Vec::<u16>::new());
        // The empty form (an instant room) changes nothing.
        assert_eq!(before.apply(&Submitted::default(), LIMITS).unwrap(), before);
    }

    #[test]
    fn bad_values_and_unknown_settings_are_refused_by_name() {
        assert!(refusal("<field var='muc#roomconfig_maxusers'><value>501</value></field>").contains("maxusers"));
        assert!(refusal("<field var='muc#roomconfig_maxusers'><value>0</value></field>").contains("at least 1"));
        assert!(refusal("<field var='muc#roomconfig_historylength'><value>x</value></field>").contains("number"));
        assert!(refusal("<field var='muc#roomconfig_publicroom'><value>yes</value></field>").contains("boolean"));
        assert!(refusal("<field var='muc#roomconfig_whois'><value>all</value></field>").contains("whois"));
        assert!(refusal("<field var='muc#roomconfig_frobnicate'><value>1</value></field>").contains("frobnicate"));
        let none = RoomConfig::new(LIMITS)
            .apply(
                &form("<field var='muc#roomconfig_maxusers'><value>none</value></field>"),
                LIMITS,
            )
            .unwrap();
        assert_eq!(none.max_users, 500);
    }

    #[test]
    fn the_stored_form_reads_back_and_follows_lowered_limits() {
        let mut c = RoomConfig::new(LIMITS);
        c.name = "It's <here>".into();
        c.persistent = true;
        c.max_users = 400;
        c.history_length = 50;
        c.presence_broadcast = vec![Role::Moderator];
        let xml = c.submitted().to_string();
        assert_eq!(RoomConfig::from_stored(&xml, LIMITS), c);
        let lowered = RoomConfig::from_stored(
            &xml,
            Limits {
                max_users: 100,
                max_history: 10,
            },
        );
        assert_eq!((lowered.max_users, lowered.history_length), (100, 10));
        assert_eq!(RoomConfig::from_stored("not xml", LIMITS), RoomConfig::new(LIMITS));
    }

    #[test]
    fn the_owners_form_lists_every_setting_with_its_value() {
        let form = RoomConfig::new(LIMITS).form(LIMITS);
        assert_eq!(form.attr("type"), Some("form"));
        let vars: Vec<&str> = form.children().filter_map(|f| f.attr("var")).collect();
        assert_eq!(vars.len(), FIELDS.len() + 1);
        assert_eq!(vars[0], "FORM_TYPE");
        let maxusers = form
            .children()
            .find(|f| f.attr("var") == Some("muc#roomconfig_maxusers"))
            .unwrap();
        assert_eq!(
            maxusers.get_child("value", forms::NS).map(Element::text).as_deref(),
            Some("200")
        );
    }
}
